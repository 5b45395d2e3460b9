"""Conformance of ``convention="wsolevaluation"`` with the protocol's definitions.

Written from the definitions of Choe et al. (CVPR 2020) and the conventions of their
``wsolevaluation`` code as stated in issue 15 (not from that code):

* a pixel is foreground at threshold ``t`` when ``q > int(t * max(q))``, ``q = uint8(map * 255)``
  computed in the map's dtype;
* box candidates are the contours of ``cv2.findContours(binary, RETR_TREE, CHAIN_APPROX_SIMPLE)``,
  holes included: the outer contour of an 8-connected component has the component's box, the
  contour of a hole (a 4-connected background region enclosed by foreground) has the hole's box
  grown by one pixel;
* boxes are ``cv2.boundingRect`` ``(x, y, w, h)`` turned into ``(x, y, min(x + w, W - 1),
  min(y + h, H - 1))``; IoU uses inclusive areas; an empty map gives the box ``(0, 0, 0, 0)``;
* MaxBoxAcc keeps the contour of largest ``cv2.contourArea`` (polygon through the border pixels'
  centres: a filled w x h rectangle has area (w - 1)(h - 1), a 1-px line 0, an outer contour
  includes its holes), the first in OpenCV's order on ties; MaxBoxAccV2 all contours;
* PxAP bins the scores, compared in float64, at the edges ``k / T`` plus 1, 2 and 3.

Hand-built cases check each rule; brute-force oracles (a plain per-threshold loop, and a
cv2-free construction of the candidate boxes) check random maps of every family.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage

from fcam_plugin.metrics import (
    LocalizationEvaluator,
    MaxBoxAcc,
    MaxBoxAccV2,
    PxAP,
    _contours,
    box_iou,
    boxes_from_mask,
    cam_thresholds,
)


# ------------------------------------------------------------------------------------------
# oracles
# ------------------------------------------------------------------------------------------
def _rect(x: int, y: int, w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    return (x, y, min(x + w, width - 1), min(y + h, height - 1))


def _oracle_candidates(binary: np.ndarray) -> tuple[list[tuple[int, ...]], int]:
    """Contour boxes of one binary map (OpenCV's order) and the index of the largest area."""
    h, w = binary.shape
    contours = cv2.findContours(binary.astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
    boxes = [_rect(*cv2.boundingRect(c), w, h) for c in contours]
    areas = [cv2.contourArea(c) for c in contours]
    return boxes, (areas.index(max(areas)) if areas else -1)


def _oracle_curves(maps: np.ndarray, gts: list[np.ndarray], num_thresholds: int) -> np.ndarray:
    """Per-threshold correct fractions ``(4, T)``: MaxBoxAcc@0.5, MaxBoxAccV2@0.3/0.5/0.7."""
    correct = np.zeros((4, num_thresholds))
    for m, gt in zip(maps, gts):
        q = (m * 255).astype(np.uint8)
        for i in range(num_thresholds):
            t = i / num_thresholds
            boxes, largest = _oracle_candidates(q > int(t * int(q.max())))
            if not boxes:
                boxes, largest = [(0, 0, 0, 0)], 0
            ious = box_iou(np.array(boxes), gt).max(1)
            correct[0, i] += ious[largest] >= 0.5
            correct[1:, i] += ious.max() >= np.array([0.3, 0.5, 0.7])
    return correct / len(maps)


def _cv2_free_candidates(binary: np.ndarray) -> set[tuple[int, ...]]:
    """Boxes of the 8-connected components plus, for each hole, its box grown by one pixel."""
    h, w = binary.shape
    out = {tuple(b) for b in boxes_from_mask(binary.astype(np.uint8))}
    four = ndimage.generate_binary_structure(2, 1)
    background, _ = ndimage.label(np.pad(~binary, 1, constant_values=True), structure=four)
    for sl in ndimage.find_objects(background):
        (r, c) = sl
        if r.start == 0 or c.start == 0 or r.stop == h + 2 or c.stop == w + 2:
            continue  # touches the padding: outside, not a hole
        y0, y1, x0, x1 = r.start - 1, r.stop - 2, c.start - 1, c.stop - 2  # unpadded, inclusive
        out.add((x0 - 1, y0 - 1, min(x1 + 2, w - 1), min(y1 + 2, h - 1)))
    return out


def _brute_pxap(maps: np.ndarray, masks: np.ndarray, num_thresholds: int) -> float:
    """AP from the definition: TP/FP of ``score >= tau`` (float64) for tau = 2, 1, (T-1)/T ... 0."""
    taus = [2.0, 1.0] + list(cam_thresholds(num_thresholds)[::-1])
    fg = maps[masks == 1].astype(np.float64)
    bg = maps[masks == 0].astype(np.float64)
    ap, last_recall = 0.0, 0.0
    for tau in taus:
        tp, fp = int((fg >= tau).sum()), int((bg >= tau).sum())
        recall = tp / len(fg)
        if tp + fp:
            ap += tp / (tp + fp) * (recall - last_recall)
        last_recall = recall
    return ap


def _curves(maps: np.ndarray, gts: list[np.ndarray], num_thresholds: int, convention: str = "wsolevaluation"):
    ev = LocalizationEvaluator(num_thresholds, convention=convention)
    ev.update(maps, boxes=gts)
    return np.concatenate([ev.maxboxacc.accuracies(), ev.maxboxaccv2.accuracies()])


def _v1_v2(cam: np.ndarray, gt: np.ndarray, convention: str, num_thresholds: int = 20) -> tuple[float, float]:
    v1 = MaxBoxAcc(num_thresholds, convention=convention)
    v2 = MaxBoxAccV2(num_thresholds, convention=convention)
    v1.update(cam, gt)
    v2.update(cam, gt)
    return v1.summary()["maxboxacc"], v2.summary()["maxboxaccv2"]


# ------------------------------------------------------------------------------------------
# hand-built cases
# ------------------------------------------------------------------------------------------
def _square_ring(size: int, outer: tuple[int, int], inner: tuple[int, int]) -> np.ndarray:
    cam = np.zeros((size, size))
    cam[outer[0] : outer[1] + 1, outer[0] : outer[1] + 1] = 1.0
    cam[inner[0] : inner[1] + 1, inner[0] : inner[1] + 1] = 0.0
    return cam


def test_ring_with_ground_truth_in_the_hole():
    cam = _square_ring(24, (4, 19), (8, 15))  # hole pixels 8..15, its contour runs on 7..16
    hole_box = np.array([[7, 7, 17, 17]])  # boundingRect (7, 7, 10, 10): x1 = 7 + 10
    # wsolevaluation: the hole's contour is a candidate with IoU 1; the outer contour is larger
    assert _v1_v2(cam, hole_box, "wsolevaluation") == (0.0, 1.0)
    # components: only the outer box (4, 4, 20, 20): IoU 121 / 289 = 0.42 passes 0.3 only
    assert _v1_v2(cam, hole_box, "components") == (0.0, pytest.approx(1 / 3))
    # GT drawn from the hole mask, (8, 8, 16, 16): IoU 81 / 121 = 0.67 with the hole contour
    hole = np.zeros((24, 24))
    hole[8:16, 8:16] = 1
    assert _v1_v2(cam, boxes_from_mask(hole), "wsolevaluation") == (0.0, pytest.approx(2 / 3))
    assert _v1_v2(cam, boxes_from_mask(hole), "components") == (0.0, 0.0)  # 81 / 289


def test_largest_is_polygon_area_not_pixel_count():
    cam = np.zeros((40, 60))
    cam[2:22, 2:22] = 1.0
    cam[3:21, 3:21] = 0.0  # 1-px ring: 76 pixels, contour area 19 * 19 = 361 (hole included)
    cam[25:35, 40:50] = 1.0  # filled 10 x 10 square: 100 pixels, contour area 9 * 9 = 81
    blob = np.array([[40, 25, 50, 35]])
    assert _v1_v2(cam, blob, "wsolevaluation")[0] == 0.0
    assert _v1_v2(cam, blob, "components")[0] == 1.0


def test_one_pixel_line_has_zero_area():
    cam = np.zeros((20, 40))
    cam[3, 2:32] = 1.0  # 30 pixels, contour area 0
    cam[10:13, 10:13] = 1.0  # 9 pixels, contour area 4
    square = np.array([[10, 10, 13, 13]])
    assert _v1_v2(cam, square, "wsolevaluation")[0] == 1.0
    assert _v1_v2(cam, square, "components")[0] == 0.0
    line = np.array([[2, 3, 32, 4]])  # the line's box (x1 = 31 + 1, y1 = 3 + 1)
    assert _v1_v2(cam, line, "wsolevaluation") == (0.0, 1.0)


def test_exact_ties_go_to_the_first_contour_in_opencv_order():
    cam = np.zeros((30, 30))
    cam[2:7, 3:8] = 1.0  # two 5 x 5 squares: same pixel count, same contour area (16)
    cam[20:25, 18:23] = 1.0
    top, bottom = np.array([[3, 2, 8, 7]]), np.array([[18, 20, 23, 25]])
    boxes, first = _oracle_candidates(cam > 0)
    opencv_first = top if boxes[first] == tuple(top[0]) else bottom
    other = bottom if opencv_first is top else top
    assert _v1_v2(cam, opencv_first, "wsolevaluation")[0] == 1.0
    assert _v1_v2(cam, other, "wsolevaluation")[0] == 0.0
    # components: ties go to the first component in raster order, the top square
    assert _v1_v2(cam, top, "components")[0] == 1.0
    assert _v1_v2(cam, bottom, "components")[0] == 0.0


@pytest.mark.parametrize("shape", [(1, 24), (24, 1)])
def test_one_by_n_maps(shape):
    line = np.zeros(24)
    line[2:6] = 1.0  # two segments: contour areas both 0, the second has more pixels
    line[10:18] = 1.0
    cam = line.reshape(shape)
    boxes, first = _oracle_candidates(cam > 0)
    gt_first = np.array([boxes[first]])
    assert _v1_v2(cam, gt_first, "wsolevaluation") == (1.0, 1.0)
    # the box clips to the map: the thin side spans 0..0
    assert all((b[1], b[3]) == (0, 0) if shape[0] == 1 else (b[0], b[2]) == (0, 0) for b in boxes)
    longer = np.array([[10, 0, 18, 0]] if shape[0] == 1 else [[0, 10, 0, 18]])
    assert _v1_v2(cam, longer, "components")[0] == 1.0


def test_values_exactly_on_box_thresholds():
    cam = np.zeros((16, 16))
    cam[2:6, 2:6] = 0.5  # q = 127: foreground while int(t * 255) < 127, i.e. t < 0.499 (T = 1000)
    cam[10, 10] = 1.0  # q = 255
    block = np.array([[2, 2, 6, 6]])
    acc = _curves(cam[None], [block], 1000)[2]  # MaxBoxAccV2 @ 0.5
    t = cam_thresholds(1000)
    assert acc[t < 0.4985].all() and not acc[t > 0.4985].any()
    assert acc[498] == 1.0 and acc[499] == 0.0  # int(0.498 * 255) = 126 < 127 <= int(0.499 * 255)


def _float32_sensitive_level() -> int:
    """A level ``k`` whose float64 value just below ``k / 255`` quantises to ``k - 1``, but to ``k`` in float32."""
    for k in range(1, 256):
        v = np.nextafter(k / 255, 0)
        if int(v * 255) != int(np.float32(v) * np.float32(255)):
            return k
    raise AssertionError("no such level")


def test_maps_are_quantised_in_their_own_dtype():
    k = _float32_sensitive_level()
    cam = np.zeros((8, 8))
    cam[0, 0] = 1.0
    cam[2:5, 2:5] = np.nextafter(k / 255, 0)  # float64: q = k - 1; as float32: q = k
    gt = [np.array([[2, 2, 5, 5]])]
    level = (cam_thresholds(1000) * 255).astype(int)
    np.testing.assert_array_equal(_curves(cam[None], gt, 1000)[2], (level < k - 1).astype(float))
    as32 = _curves(cam[None].astype(np.float32), gt, 1000)[2]  # float32 maps: float32 arithmetic
    np.testing.assert_array_equal(as32, (level < k).astype(float))


def test_multiple_ground_truth_boxes():
    cam = np.zeros((32, 32))
    cam[2:12, 2:12] = 1.0  # largest
    cam[20:26, 20:26] = 0.6
    gts = np.array([[20, 20, 26, 26], [0, 25, 5, 30], [2, 2, 12, 12]])
    assert _v1_v2(cam, gts, "wsolevaluation") == (1.0, 1.0)
    assert _v1_v2(cam, gts[:2], "wsolevaluation") == (0.0, 1.0)  # the largest box matches no GT


def test_empty_map_box_and_non_normalised_maps():
    cam = np.zeros((10, 10))
    acc = _curves(cam[None], [np.array([[0, 0, 1, 1]])], 10)  # box (0, 0, 0, 0): IoU 1 / 4
    np.testing.assert_array_equal(acc, [[0] * 10, [0] * 10, [0] * 10, [0] * 10])
    np.testing.assert_array_equal(_curves(cam[None], [np.array([[0, 0, 0, 1]])], 10)[1], [1] * 10)
    cam[3:6, 3:6] = 0.4  # max < 1: thresholds are relative to max(q) = 102
    np.testing.assert_array_equal(_curves(cam[None], [np.array([[3, 3, 6, 6]])], 10)[0], [1] * 10)


def test_pxap_values_exactly_on_edges_and_ignore_regions():
    rng = np.random.default_rng(0)
    edges = cam_thresholds(1000)
    maps = edges[rng.integers(0, 1000, (3, 20, 20))]  # every score sits exactly on an edge
    maps[1] = np.round(maps[1] * 1000) / 1000  # k / 1000 (not always bit-equal to k * 0.001)
    maps[2, :5] = 1.0
    masks = (rng.random((3, 20, 20)) < 0.4).astype(np.uint8)
    masks[0, 5:9] = 255  # ignored rows
    m = PxAP()
    m.update(maps, masks)
    expected = _brute_pxap(maps, masks, 1000)
    assert m.summary()["pxap"] == pytest.approx(expected, abs=1e-12)
    assert m.summary()["pxap"] != pytest.approx(_brute_pxap(maps.astype(np.float32), masks, 1000), abs=1e-9)
    kept = masks != 255  # ignoring = evaluating only the other pixels
    flat = PxAP()
    flat.update(maps[kept][None, None], masks[kept][None, None])
    assert flat.summary()["pxap"] == m.summary()["pxap"]


def test_pxap_bins_float32_and_float16_maps_in_float64():
    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float16):
        maps = cam_thresholds(1000)[rng.integers(0, 1000, (2, 16, 16))].astype(dtype)
        masks = rng.random((2, 16, 16)) < 0.5
        m = PxAP()
        m.update(maps, masks)
        assert m.summary()["pxap"] == pytest.approx(_brute_pxap(maps, masks, 1000), abs=1e-12)


# ------------------------------------------------------------------------------------------
# random maps against the oracles
# ------------------------------------------------------------------------------------------
def _families(rng: np.random.Generator) -> dict[str, np.ndarray]:
    smooth = np.stack([ndimage.zoom(rng.random((5, 5)), 24 / 5, order=3) for _ in range(3)])
    yy, xx = np.mgrid[:24, :24]
    d = np.hypot(yy - 11.5, xx - 11.5)
    rings = np.stack([np.exp(-((d - r) ** 2) / 4) + 0.1 * rng.random((24, 24)) for r in (5, 7, 9)])
    lines = np.zeros((3, 24, 24))
    lines[:, 5, 2:20] = 0.8
    lines[:, 2:22, 15] = rng.random((3, 20))
    lines[:, 18:21, 3:6] = 1.0
    noisy = rng.random((3, 24, 24)) ** 3
    ties = np.zeros((3, 24, 24))
    ties[:, 2:6, 2:6] = ties[:, 12:16, 14:18] = ties[:, 18:22, 3:7] = 1.0
    return {"smooth": smooth, "rings": rings, "lines": lines, "noisy": noisy, "ties": ties}


def _normalise(maps: np.ndarray) -> np.ndarray:
    maps = maps - maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def test_random_families_match_the_per_threshold_oracle():
    rng = np.random.default_rng(2)
    for name, maps in _families(rng).items():
        maps = _normalise(maps)
        maps[-1] *= 0.7  # one non-normalised map per family
        gts = [np.array([[3, 3, 12, 12], [10, 8, 20, 18]])[: 1 + i % 2] for i in range(len(maps))]
        np.testing.assert_array_equal(_curves(maps, gts, 60), _oracle_curves(maps, gts, 60), err_msg=name)


@pytest.mark.parametrize("shape", [(1, 48), (48, 1), (2, 30), (5, 7)])
def test_thin_maps_match_the_per_threshold_oracle(shape):
    rng = np.random.default_rng(3)
    maps = _normalise(np.round(rng.random((4, *shape)) * 5))  # plateaus: many ties
    h, w = shape
    gts = [np.array([[0, 0, w // 3, h - 1]]), np.array([[w // 2, 0, w - 1, h - 1]])] * 2
    np.testing.assert_array_equal(_curves(maps, gts, 50), _oracle_curves(maps, gts, 50))


def test_contour_boxes_are_components_plus_grown_holes():
    rng = np.random.default_rng(4)
    for trial in range(40):
        shape = (int(rng.integers(1, 30)), int(rng.integers(1, 30)))
        binary = rng.random(shape) < rng.uniform(0.3, 0.8)
        if not binary.any():
            continue
        boxes, _, counts = _contours.level_contours(binary.astype(np.uint8), np.array([1], np.uint8))
        assert counts.sum() == len(boxes)
        found = [tuple(b) for b in boxes.tolist()]
        assert set(found) == _cv2_free_candidates(binary), trial
        assert sorted(found) == sorted(_oracle_candidates(binary)[0])  # the crop changes nothing


def test_contour_areas_of_rectangles_rings_and_lines():
    binary = np.zeros((30, 40), np.uint8)
    binary[2:8, 3:12] = 1  # 9 x 6 rectangle: (9 - 1)(6 - 1) = 40
    binary[12, 2:20] = 1  # 1-px line: 0
    binary[15:27, 20:36] = 1  # 16 x 12 ring: outer 15 * 11 = 165 ...
    binary[18:24, 24:32] = 0  # ... hole of 8 x 6 pixels: (8 + 1)(6 + 1) - 2 = 61
    boxes, area2, _ = _contours.level_contours(binary, np.array([1], np.uint8))
    assert sorted((area2 / 2).tolist()) == [0.0, 40.0, 61.0, 165.0]


def test_torch_and_numpy_inputs_agree_with_default_convention():
    rng = np.random.default_rng(5)
    maps = _normalise(rng.random((3, 20, 20)) ** 2).astype(np.float32)
    masks = (rng.random((3, 20, 20)) < 0.3).astype(np.uint8)
    a, b = LocalizationEvaluator(100), LocalizationEvaluator(100)
    a.update(maps, masks=masks)
    b.update(torch.from_numpy(maps), masks=torch.from_numpy(masks))
    assert a.summary() == b.summary()
    assert a.convention == "wsolevaluation"
