"""Tests of fcam_plugin.metrics against brute-force implementations of the definitions.

The ``"components"`` convention is checked here against a flood-fill brute force; the default
``"wsolevaluation"`` convention in ``test_metrics_conformance.py``.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from fcam_plugin.metrics import (
    CONVENTIONS,
    LocalizationEvaluator,
    MaxBoxAcc,
    MaxBoxAccV2,
    PxAP,
    _cv2,
    box_iou,
    boxes_from_mask,
    cam_thresholds,
    normalize_scoremap,
    resize_like_wsolevaluation,
)


# ------------------------------------------------------------------------------------------
# brute-force references (plain loops, written from the protocol's definitions)
# ------------------------------------------------------------------------------------------
def _components(fg: np.ndarray) -> list[list[tuple[int, int]]]:
    """8-connected components by flood fill."""
    h, w = fg.shape
    seen = np.zeros_like(fg, dtype=bool)
    comps = []
    for y in range(h):
        for x in range(w):
            if fg[y, x] and not seen[y, x]:
                stack, comp = [(y, x)], []
                seen[y, x] = True
                while stack:
                    cy, cx = stack.pop()
                    comp.append((cy, cx))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            ny, nx = cy + dy, cx + dx
                            if 0 <= ny < h and 0 <= nx < w and fg[ny, nx] and not seen[ny, nx]:
                                seen[ny, nx] = True
                                stack.append((ny, nx))
                comps.append(comp)
    return comps


def _comp_box(comp, h, w):
    ys = [p[0] for p in comp]
    xs = [p[1] for p in comp]
    return (min(xs), min(ys), min(max(xs) + 1, w - 1), min(max(ys) + 1, h - 1))


def _iou(a, b):
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _brute_box_acc(maps, boxes, num_thresholds, iou_thr, all_components):
    thresholds = [i / num_thresholds for i in range(num_thresholds)]
    correct = np.zeros((len(iou_thr), num_thresholds))
    for m, gts in zip(maps, boxes):
        h, w = m.shape
        q = (m * np.float32(255)).astype(np.uint8)
        for ti, t in enumerate(thresholds):
            fg = q > int(t * int(q.max()))
            comps = _components(fg)
            if not comps:
                cand = [(0, 0, 0, 0)]
            elif all_components:
                cand = [_comp_box(c, h, w) for c in comps]
            else:
                cand = [_comp_box(max(comps, key=len), h, w)]
            best = max(_iou(c, tuple(g)) for c in cand for g in gts)
            for k, thr in enumerate(iou_thr):
                correct[k, ti] += best >= thr
    return correct / len(maps)


def _brute_pxap(maps, masks, num_thresholds):
    taus = [2.0, 1.0] + [i / num_thresholds for i in range(num_thresholds - 1, -1, -1)]
    fg = np.concatenate([m[k == 1] for m, k in zip(maps, masks)])
    bg = np.concatenate([m[k == 0] for m, k in zip(maps, masks)])
    prec, rec = [], []
    for tau in taus:
        tp, fp = (fg >= tau).sum(), (bg >= tau).sum()
        prec.append(tp / (tp + fp) if tp + fp else 0.0)
        rec.append(tp / len(fg))
    return sum(prec[i] * (rec[i] - rec[i - 1]) for i in range(1, len(taus)))


def _smooth_maps(n, size, seed, sigma=1.5):
    rng = np.random.default_rng(seed)
    maps = np.stack([ndimage.gaussian_filter(rng.random((size, size)), sigma) for _ in range(n)])
    maps -= maps.min(axis=(1, 2), keepdims=True)
    maps /= maps.max(axis=(1, 2), keepdims=True)
    return maps.astype(np.float32)


def _random_boxes(n, size, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = rng.integers(1, 3)
        x0, y0 = rng.integers(0, size // 2, (2, k))
        x1, y1 = x0 + rng.integers(2, size // 2, k), y0 + rng.integers(2, size // 2, k)
        out.append(np.stack([x0, y0, x1, y1], 1))
    return out


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def test_cam_thresholds_match_wsolevaluation():
    np.testing.assert_array_equal(cam_thresholds(1000), np.arange(0, 1, 0.001))


def test_box_iou_hand_computed():
    iou = box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 5, 10], [20, 20, 25, 25]]))
    # inclusive areas: 100 and 6 * 11 = 66, intersection 6 * 10 = 60 -> 60 / 106
    np.testing.assert_allclose(iou, [[60 / 106, 0.0]])


def test_boxes_from_mask():
    m = np.zeros((12, 12))
    m[1:4, 2:5] = 1
    m[8:12, 9:12] = 1  # touches the border: clipped like cv2.boundingRect + wsolevaluation
    m[0, 11] = 255  # ignored value is background
    np.testing.assert_array_equal(boxes_from_mask(m), [[2, 1, 5, 4], [9, 8, 11, 11]])
    np.testing.assert_array_equal(boxes_from_mask(m, per_component=False), [[2, 1, 11, 11]])
    assert boxes_from_mask(np.zeros((4, 4))).shape == (0, 4)


# ------------------------------------------------------------------------------------------
# PxAP
# ------------------------------------------------------------------------------------------
def test_pxap_perfect_map_is_one():
    mask = np.zeros((2, 16, 16), np.float32)
    mask[0, 3:9, 4:12] = 1
    mask[1, 10:, :5] = 1
    m = PxAP()
    m.update(mask, mask)
    assert m.summary()["pxap"] == pytest.approx(1.0)


def test_pxap_constant_map_is_foreground_ratio():
    mask = np.zeros((16, 16))
    mask[:4, :10] = 1
    m = PxAP()
    m.update(np.full((16, 16), 0.37, np.float32), mask)
    assert m.summary()["pxap"] == pytest.approx(40 / 256)


def test_pxap_matches_brute_force_and_ignores():
    maps = _smooth_maps(4, 12, seed=0)
    rng = np.random.default_rng(1)
    masks = (rng.random((4, 12, 12)) < 0.3).astype(np.uint8)
    masks[0, :2] = 255  # ignored region
    m = PxAP(num_thresholds=50)
    m.update(maps, masks)
    assert m.summary()["pxap"] == pytest.approx(_brute_pxap(maps, masks, 50), abs=1e-12)


# ------------------------------------------------------------------------------------------
# box accuracies
# ------------------------------------------------------------------------------------------
def test_components_convention_matches_brute_force():
    maps = _smooth_maps(5, 12, seed=2)
    maps[4] *= 0.5  # not normalised: thresholds are relative to the 8-bit max, as wsolevaluation
    boxes = _random_boxes(5, 12, seed=3)
    v1 = MaxBoxAcc(num_thresholds=40, convention="components")
    v2 = MaxBoxAccV2(num_thresholds=40, convention="components")
    v1.update(maps, boxes)
    v2.update(maps, boxes)
    np.testing.assert_allclose(v1.accuracies(), _brute_box_acc(maps, boxes, 40, [0.5], False))
    np.testing.assert_allclose(
        v2.accuracies(), _brute_box_acc(maps, boxes, 40, [0.3, 0.5, 0.7], True)
    )


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_perfect_map_gives_maxboxacc_one(convention):
    masks = np.zeros((3, 20, 20), np.float32)
    masks[0, 2:9, 3:15] = 1
    masks[1, 10:19, 0:6] = 1
    masks[2, 5:15, 5:15] = 1
    boxes = [boxes_from_mask(m) for m in masks]
    v1, v2 = MaxBoxAcc(convention=convention), MaxBoxAccV2(convention=convention)
    v1.update(masks, boxes)
    v2.update(masks, boxes)
    assert v1.summary()["maxboxacc"] == 1.0
    assert v2.summary()["maxboxaccv2"] == 1.0


def test_known_box_case():
    cam = np.zeros((32, 32), np.float32)
    cam[0:10, 0:5] = 1.0  # predicted box (0, 0, 5, 10) -> IoU 60 / 106 = 0.566 with GT
    gt = np.array([[0, 0, 9, 9]])
    v1, v2 = MaxBoxAcc(), MaxBoxAccV2()
    v1.update(cam, gt)
    v2.update(cam, gt)
    assert v1.summary()["maxboxacc"] == 1.0
    s = v2.summary()
    assert (s["maxboxaccv2_iou30"], s["maxboxaccv2_iou50"], s["maxboxaccv2_iou70"]) == (1, 1, 0)
    assert s["maxboxaccv2"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("convention", CONVENTIONS)
def test_v1_uses_largest_component_v2_all_components(convention):
    cam = np.zeros((32, 32), np.float32)
    cam[0:20, 0:20] = 1.0  # largest component, far from the GT
    cam[25:30, 25:30] = 1.0  # small component that matches a GT box
    gt = [np.array([[25, 25, 30, 30]])]
    v1, v2 = MaxBoxAcc(convention=convention), MaxBoxAccV2(convention=convention)
    v1.update(cam[None], gt)
    v2.update(cam[None], gt)
    assert v1.summary()["maxboxacc"] == 0.0
    assert v2.summary()["maxboxaccv2_iou50"] == 1.0


def test_any_gt_box_counts():
    cam = np.zeros((32, 32), np.float32)
    cam[10:20, 10:20] = 1.0
    v1 = MaxBoxAcc()
    v1.update(cam, np.array([[0, 0, 3, 3], [10, 10, 20, 20]]))
    assert v1.summary()["maxboxacc"] == 1.0


def test_empty_map_and_best_threshold():
    v1 = MaxBoxAcc(num_thresholds=10)
    v1.update(np.zeros((8, 8), np.float32), np.array([[2, 2, 5, 5]]))
    assert v1.summary() == {"maxboxacc": 0.0, "maxboxacc_threshold": 0.0}


# ------------------------------------------------------------------------------------------
# streaming, torch inputs, evaluator
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_streaming_equals_one_shot_and_torch_equals_numpy(convention):
    maps = _smooth_maps(7, 24, seed=4)
    masks = (maps > 0.6).astype(np.float32)
    boxes = _random_boxes(7, 24, seed=5)
    one = LocalizationEvaluator(num_thresholds=100, convention=convention)
    one.update(maps, masks, boxes)
    chunked = LocalizationEvaluator(num_thresholds=100, convention=convention)
    for s in range(0, 7, 3):
        chunked.update(torch.from_numpy(maps[s : s + 3]), torch.from_numpy(masks[s : s + 3]),
                       [torch.from_numpy(b) for b in boxes[s : s + 3]])
    assert one.summary() == chunked.summary()
    chunked.reset()
    with pytest.raises(RuntimeError, match="update"):
        chunked.summary()


def test_evaluator_keys_and_boxes_from_masks():
    masks = np.zeros((2, 16, 16), np.float32)
    masks[0, 2:9, 3:12] = 1
    masks[1, 8:, 8:] = 1
    ev = LocalizationEvaluator()
    ev.update(masks, masks=masks)
    s = ev.summary()
    assert set(s) == {
        "pxap", "maxboxacc", "maxboxacc_threshold", "maxboxaccv2",
        "maxboxaccv2_iou30", "maxboxaccv2_iou50", "maxboxaccv2_iou70",
        "maxboxaccv2_iou30_threshold", "maxboxaccv2_iou50_threshold",
        "maxboxaccv2_iou70_threshold",
    }  # fmt: skip
    assert s["pxap"] == pytest.approx(1.0) and s["maxboxacc"] == 1.0 and s["maxboxaccv2"] == 1.0
    boxes_only = LocalizationEvaluator()
    boxes_only.update(masks, boxes=[boxes_from_mask(m) for m in masks])
    assert np.isnan(boxes_only.summary()["pxap"])


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
_OK_MAP = np.zeros((2, 8, 8), np.float32)
_OK_BOXES = [np.array([[0, 0, 3, 3]])] * 2


@pytest.mark.parametrize(
    ("call", "exc", "pattern"),
    [
        (lambda: PxAP().update([[0.0]], np.zeros((1, 1))), TypeError, "`maps`"),
        (lambda: PxAP().update(np.zeros((1, 1, 8, 8), np.float32), np.zeros((1, 1, 8, 8))),
         ValueError, r"`maps`.*\(B, H, W\)"),
        (lambda: PxAP().update(np.zeros((8, 8), np.uint8), np.zeros((8, 8))), TypeError, "255"),
        (lambda: PxAP().update(np.full((8, 8), 1.5, np.float32), np.zeros((8, 8))),
         ValueError, r"\[0, 1\]"),
        (lambda: PxAP().update(np.full((8, 8), np.nan, np.float32), np.zeros((8, 8))),
         ValueError, "NaN"),
        (lambda: PxAP().update(_OK_MAP, np.zeros((2, 4, 4))), ValueError, "`masks`.*resized"),
        (lambda: PxAP().update(_OK_MAP, np.full((2, 8, 8), 3)), ValueError, "`masks`.*3"),
        (lambda: MaxBoxAcc().update(_OK_MAP, _OK_BOXES[:1]), ValueError, "`boxes`.*2 maps"),
        (lambda: MaxBoxAcc().update(_OK_MAP, "boxes"), TypeError, "`boxes`"),
        (lambda: MaxBoxAcc().update(_OK_MAP, [np.zeros((1, 3))] * 2), ValueError, r"`boxes\[0\]`"),
        (lambda: MaxBoxAcc().update(_OK_MAP, [np.zeros((0, 4))] * 2), ValueError, "at least one"),
        (lambda: MaxBoxAcc().update(_OK_MAP, [np.array([[5, 0, 1, 3]])] * 2), ValueError, "x1 >= x0"),
        (lambda: MaxBoxAcc(num_thresholds=0), ValueError, "`num_thresholds`"),
        (lambda: MaxBoxAccV2(iou_thresholds=(0.5, 1.5)), ValueError, "`iou_thresholds`"),
        (lambda: LocalizationEvaluator().update(_OK_MAP), ValueError, "`masks`.*`boxes`"),
        (lambda: MaxBoxAcc().summary(), RuntimeError, "update"),
        (lambda: PxAP().summary(), RuntimeError, "foreground"),
        (lambda: boxes_from_mask(np.zeros((1, 4, 4))), ValueError, "`mask`"),
        (lambda: MaxBoxAcc(convention="opencv"), ValueError, r"`convention`.*'wsolevaluation'.*'opencv'"),
        (lambda: LocalizationEvaluator(convention=None), ValueError, "`convention`"),
        (lambda: normalize_scoremap(np.array([[0.0, np.inf]])), ValueError, "`maps`.*Inf"),
        (lambda: normalize_scoremap(np.zeros((1, 1, 2, 2))), ValueError, r"`maps`.*\(B, H, W\)"),
        (lambda: normalize_scoremap("map"), TypeError, "`maps`"),
        (lambda: resize_like_wsolevaluation(np.zeros((2, 3, 4, 4)), 8), ValueError,
         r"`cams`.*\(B, 1, H, W\).*\[2, 3, 4, 4\]"),
        (lambda: resize_like_wsolevaluation(np.zeros((4, 4)), (8, 0)), ValueError, "`size`.*0"),
        (lambda: resize_like_wsolevaluation(np.zeros((4, 4)), 2.5), ValueError, "`size`"),
    ],
)  # fmt: skip
def test_invalid_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ------------------------------------------------------------------------------------------
# conventions, OpenCV-free path, score-map helpers
# ------------------------------------------------------------------------------------------
def test_components_convention_works_without_opencv(monkeypatch):
    monkeypatch.setattr(_cv2, "cv2", None)
    with pytest.raises(ImportError, match="convention='components'"):
        MaxBoxAccV2()
    with pytest.raises(ImportError, match="opencv"):
        LocalizationEvaluator()
    ev = LocalizationEvaluator(num_thresholds=20, convention="components")
    cam = np.zeros((16, 16))
    cam[2:6, 3:9] = 1.0
    ev.update(cam[None], masks=cam[None])
    assert ev.summary()["maxboxacc"] == 1.0 and ev.summary()["pxap"] == pytest.approx(1.0)


def test_normalize_scoremap_like_the_reference():
    cam = np.array([[[1.0, 3.0], [2.0, 5.0]], [[2.0, 2.0], [2.0, 2.0]], [[0.0, np.nan], [1.0, 2.0]]])
    original = cam.copy()
    out = normalize_scoremap(cam)
    np.testing.assert_array_equal(out[0], [[0.0, 0.5], [0.25, 1.0]])
    np.testing.assert_array_equal(out[1:], 0.0)  # constant map, and a map with a NaN -> zeros
    np.testing.assert_array_equal(np.isnan(cam), np.isnan(original))  # input untouched
    assert out.dtype == np.float64
    single = normalize_scoremap(torch.tensor([[1.0, 2.0], [3.0, 9.0]]))
    assert single.shape == (2, 2) and single.max() == 1.0 and single.min() == 0.0


def _square_reference(cam: np.ndarray) -> np.ndarray:
    resized = cv2.resize(cam.astype(np.float64), (24, 24), interpolation=cv2.INTER_CUBIC)
    return normalize_scoremap(resized)


def test_resize_like_wsolevaluation_is_opencv_bicubic_then_min_max():
    rng = np.random.default_rng(0)
    cams = rng.random((3, 1, 7, 5)).astype(np.float32)
    out = resize_like_wsolevaluation(cams, (24, 16))
    assert out.shape == (3, 24, 16) and out.dtype == np.float64
    for cam, got in zip(cams[:, 0].astype(np.float64), out):
        expected = cv2.resize(cam, (16, 24), interpolation=cv2.INTER_CUBIC)
        expected -= expected.min()
        expected /= expected.max()
        np.testing.assert_array_equal(got, expected)
    square = resize_like_wsolevaluation(torch.from_numpy(cams[0, 0]), 24)
    np.testing.assert_array_equal(square, _square_reference(cams[0, 0]))
    ev = LocalizationEvaluator(num_thresholds=50)
    ev.update(out, masks=(out > 0.5).astype(np.uint8))  # what the evaluators accept as is
    assert ev.summary()["pxap"] == pytest.approx(1.0)
