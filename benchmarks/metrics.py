"""Localization metrics: speed side by side with the reference, and conformance to it.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/metrics.py [--maps 300] [--size 224] [--thresholds 1000]
        [--check-maps 40] [--skip-speed] [--skip-check]

Speed: ``--maps`` CAM-like score maps (7x7 random maps resized bicubically to ``--size`` and
min-max normalised as the reference's inference does, 10 % of them rings), with masks for PxAP
and their boxes, evaluated at ``--thresholds`` CAM thresholds. CPU seconds (``process_time``) and
wall seconds of ``fcam_plugin.metrics`` with both conventions, and of the reference's three
evaluators when it is available.

Reference: the ``wsolevaluation`` code of Choe et al. (https://github.com/clovaai/wsolevaluation)
is **not** part of this project. Point ``WSOLEVAL_PATH`` at a local checkout to add its column
and the conformance table; without it both are skipped. It is imported as is: only its file
loading is bypassed (evaluators built without metadata, ``get_mask`` answering from memory), a
stub ``munch`` module is provided when that package is missing, and ``np.float`` (removed from
NumPy 2) is aliased to ``float``.

Conformance (``WSOLEVAL_PATH`` set): every metric with the default convention against the
reference on independent inputs of each family (CAM-like, rings with the ground truth in the
hole, exact size ties, 1-px lines, values exactly on thresholds, 1xN and Nx1 maps, several
ground-truth boxes, ignore regions, non-normalised maps): largest absolute difference over
PxAP, MaxBoxAcc and the three MaxBoxAccV2 accuracies, and over the per-threshold accuracy curves.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
import types
from collections.abc import Iterable
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fcam_plugin.metrics import (  # noqa: E402
    LocalizationEvaluator,
    MaxBoxAcc,
    MaxBoxAccV2,
    PxAP,
    boxes_from_mask,
    cam_thresholds,
    resize_like_wsolevaluation,
)

Sample = tuple[np.ndarray, np.ndarray, list[np.ndarray]]  # maps (B, H, W) float64, masks, boxes


# ------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------
def cam_like(rng: np.random.Generator, n: int, size: tuple[int, int], grid: int = 7) -> np.ndarray:
    """``grid x grid`` random maps resized bicubically and min-max normalised (reference inference)."""
    return resize_like_wsolevaluation(rng.random((n, grid, grid)), size)


def _mask_boxes(masks: np.ndarray) -> list[np.ndarray]:
    out = []
    for mask in masks:
        boxes = boxes_from_mask(mask)
        out.append(boxes if len(boxes) else np.array([[0, 0, mask.shape[1] // 2, mask.shape[0] // 2]]))
    return out


def family_cam_like(rng: np.random.Generator, n: int, size: int = 224) -> Sample:
    """CAMs that half-follow an object mask (an independent smooth map above 0.55)."""
    objects = cam_like(rng, n, (size, size), grid=5)
    masks = (objects > 0.55).astype(np.uint8)
    maps = resize_like_wsolevaluation(0.6 * objects + 0.4 * cam_like(rng, n, (size, size)), (size, size))
    return maps, masks, _mask_boxes(masks)


def _ring(size: int, cy: float, cx: float, r_in: float, r_out: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx)
    return (d >= r_in) & (d <= r_out)


def family_rings(rng: np.random.Generator, n: int, size: int = 224) -> Sample:
    """Ring-shaped maps (smooth profile plus noise); ground truth = the hole."""
    maps, masks, boxes = [], [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.35, 0.65, 2) * size
        r_in = rng.uniform(0.08, 0.2) * size
        r_out = r_in + rng.uniform(0.04, 0.12) * size
        yy, xx = np.mgrid[:size, :size]
        d = np.hypot(yy - cy, xx - cx)
        score = np.exp(-(((d - (r_in + r_out) / 2) / (r_out - r_in)) ** 2) * 3) + 0.15 * rng.random((size, size))
        hole = d < r_in
        maps.append(score)
        masks.append(hole.astype(np.uint8))
        boxes.append(boxes_from_mask(hole, per_component=False))
    norm = resize_like_wsolevaluation(np.stack(maps), (size, size))
    return norm, np.stack(masks), boxes


def family_ties(rng: np.random.Generator, n: int, size: int = 64) -> Sample:
    """Two or three identical squares (exact contour-area and pixel-count ties); GT on one."""
    maps = np.zeros((n, size, size))
    masks = np.zeros((n, size, size), np.uint8)
    boxes = []
    for i in range(n):
        side = int(rng.integers(4, 12))
        k = int(rng.integers(2, 4))
        corners = []
        while len(corners) < k:  # non-touching squares
            y, x = rng.integers(0, size - side, 2)
            if all(abs(y - a) > side + 1 or abs(x - b) > side + 1 for a, b in corners):
                corners.append((y, x))
        for y, x in corners:
            maps[i, y : y + side, x : x + side] = rng.choice([1.0, 0.7])
        y, x = corners[int(rng.integers(k))]
        masks[i, y : y + side, x : x + side] = 1
        boxes.append(boxes_from_mask(masks[i]))
        maps[i] = maps[i] / maps[i].max()
    return maps, masks, boxes


def family_lines(rng: np.random.Generator, n: int, size: int = 64) -> Sample:
    """1-px lines (contour area 0, many pixels) next to small blobs; GT on a line or a blob."""
    maps = np.zeros((n, size, size))
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(int(rng.integers(1, 4))):
            a, b = sorted(rng.integers(0, size, 2))
            c = int(rng.integers(0, size))
            value = rng.uniform(0.3, 1.0)
            kind = rng.integers(3)
            if kind == 0:
                maps[i, c, a : b + 1] = value
            elif kind == 1:
                maps[i, a : b + 1, c] = value
            else:
                idx = np.arange(a, b + 1)
                maps[i, idx, np.clip(idx + c - a, 0, size - 1)] = value
        y, x = rng.integers(0, size - 4, 2)
        maps[i, y : y + 3, x : x + 3] = np.maximum(maps[i, y : y + 3, x : x + 3], rng.uniform(0.3, 1.0))
        masks[i, max(y - 1, 0) : y + 4, max(x - 1, 0) : x + 4] = 1  # the blob, one pixel wider
        if rng.random() < 0.5:
            masks[i] |= maps[i] > rng.uniform(0.2, 0.6)  # or the blob and the strong lines
        maps[i] /= maps[i].max()
    return maps, masks, _mask_boxes(masks)


def family_on_thresholds(rng: np.random.Generator, n: int, size: int = 64) -> Sample:
    """Maps whose values are exactly CAM thresholds: the edges ``k * (1/1000)``, ``k/1000`` and ``k/255``."""
    smooth = cam_like(rng, n, (size, size))
    third = n // 3
    maps = cam_thresholds(1000)[np.minimum((smooth * 1000).astype(np.int64), 999)]  # the edges themselves
    maps[third : 2 * third] = np.floor(smooth[third : 2 * third] * 1000) / 1000
    maps[2 * third :] = np.floor(smooth[2 * third :] * 255) / 255
    maps[:, 0, 0] = 1.0
    masks = (cam_like(rng, n, (size, size), grid=4) > 0.5).astype(np.uint8)
    return maps, masks, _mask_boxes(masks)


def thin_samples(rng: np.random.Generator, n: int, length: int = 64) -> list[Sample]:
    """1 x N and N x 1 maps (two batches), smooth or piecewise constant, with masks and boxes."""
    out = []
    for shape in ((1, length), (length, 1)):
        maps = resize_like_wsolevaluation(rng.random((n, 1, 9)), (1, length)).reshape(n, *shape)
        maps[: n // 2] = np.round(maps[: n // 2] * 4) / 4  # plateaus: ties between segments
        masks = (resize_like_wsolevaluation(rng.random((n, 1, 5)), (1, length)).reshape(n, *shape) > 0.5)
        masks = masks.astype(np.uint8)
        out.append((maps, masks, _mask_boxes(masks)))
    return out


def family_multi_box(rng: np.random.Generator, n: int, size: int = 96) -> Sample:
    """Several ground-truth boxes per image: the object components' and 2-4 random boxes."""
    objects = cam_like(rng, n, (size, size), grid=6)
    masks = (objects > 0.6).astype(np.uint8)  # several components
    maps = resize_like_wsolevaluation(0.6 * objects + 0.4 * cam_like(rng, n, (size, size)), (size, size))
    boxes = []
    for mask in masks:
        k = int(rng.integers(2, 5))  # and 2-4 random boxes
        x0, y0 = rng.integers(0, size - 8, (2, k))
        w, h = rng.integers(4, size // 2, (2, k))
        extra = np.stack([x0, y0, np.minimum(x0 + w, size - 1), np.minimum(y0 + h, size - 1)], 1)
        boxes.append(np.concatenate([boxes_from_mask(mask).reshape(-1, 4), extra]))
    return maps, masks, boxes


def family_ignore(rng: np.random.Generator, n: int, size: int = 96) -> Sample:
    """Masks with ignored (255) boxes around part of the background, as OpenImages."""
    maps, masks, boxes = family_cam_like(rng, n, size)
    for i in range(n):
        y, x = rng.integers(0, size // 2, 2)
        region = masks[i, y : y + size // 3, x : x + size // 3]
        region[region == 0] = 255
    return maps, masks, boxes


def family_unnormalised(rng: np.random.Generator, n: int, size: int = 80) -> Sample:
    """Maps whose maximum is below 1 (thresholds relative to the 8-bit maximum)."""
    maps, masks, boxes = family_cam_like(rng, n, size)
    return maps * rng.uniform(0.2, 0.95, (n, 1, 1)), masks, boxes


FAMILIES: dict[str, Callable[[np.random.Generator, int], Any]] = {
    "CAM-like 7x7 -> 224 bicubic": family_cam_like,
    "rings, GT = hole": family_rings,
    "exact size ties": family_ties,
    "1-px lines": family_lines,
    "values on thresholds (k/1000, k/255)": family_on_thresholds,
    "1xN and Nx1": thin_samples,
    "multiple GT boxes": family_multi_box,
    "ignore regions (255)": family_ignore,
    "non-normalised (max < 1)": family_unnormalised,
}


def samples_of(name: str, rng: np.random.Generator, n: int) -> list[Sample]:
    out = FAMILIES[name](rng, n)
    return out if isinstance(out, list) else [out]


# ------------------------------------------------------------------------------------------
# reference (optional)
# ------------------------------------------------------------------------------------------
def load_reference(path: str) -> types.ModuleType:
    """Import ``evaluation`` from a local wsolevaluation checkout (see the module docstring)."""
    if not hasattr(np, "float"):
        np.float = float  # type: ignore[attr-defined]  # removed from NumPy 2, used by the reference
    try:
        import munch  # noqa: F401
    except ImportError:
        sys.modules["munch"] = types.ModuleType("munch")  # only used by its metadata loaders
    sys.path.insert(0, path)
    import evaluation  # type: ignore[import-not-found]

    return evaluation


class Reference:
    """The reference's three evaluators fed from memory."""

    def __init__(self, module: types.ModuleType, num_thresholds: int) -> None:
        self.module = module
        self.thresholds = list(np.arange(0, 1, 1 / num_thresholds))

    def _box(self, multi: bool, ious: list[int], boxes: list[np.ndarray]) -> Any:
        ev = self.module.BoxEvaluator.__new__(self.module.BoxEvaluator)
        ev.cam_threshold_list, ev.iou_threshold_list, ev.multi_contour_eval = self.thresholds, ious, multi
        ev.cnt = 0
        ev.num_correct = {iou: np.zeros(len(self.thresholds)) for iou in ious}
        ev.gt_bboxes = {str(i): [tuple(int(v) for v in b) for b in bs] for i, bs in enumerate(boxes)}
        return ev

    def maxboxacc(self, maps: Iterable[np.ndarray], boxes: list[np.ndarray]) -> Any:
        ev = self._box(False, [50], boxes)
        for i, m in enumerate(maps):
            ev.accumulate(m, str(i))
        return ev

    def maxboxaccv2(self, maps: Iterable[np.ndarray], boxes: list[np.ndarray]) -> Any:
        ev = self._box(True, [30, 50, 70], boxes)
        for i, m in enumerate(maps):
            ev.accumulate(m, str(i))
        return ev

    def pxap(self, maps: Iterable[np.ndarray], masks: np.ndarray) -> float:
        mod = self.module
        ev = mod.MaskEvaluator.__new__(mod.MaskEvaluator)
        ev.cam_threshold_list = self.thresholds
        ev.num_bins = len(self.thresholds) + 2
        ev.threshold_list_right_edge = np.append(self.thresholds, [1.0, 2.0, 3.0])
        ev.gt_true_score_hist = np.zeros(ev.num_bins)
        ev.gt_false_score_hist = np.zeros(ev.num_bins)
        ev.split, ev.mask_root = "test", None
        ev.mask_paths = ev.ignore_paths = {str(i): str(i) for i in range(len(masks))}
        original = mod.get_mask
        mod.get_mask = lambda root, paths, ignore: masks[int(paths)]
        try:
            for i, m in enumerate(maps):
                ev.accumulate(m, str(i))
        finally:
            mod.get_mask = original
        with contextlib.redirect_stdout(io.StringIO()), np.errstate(invalid="ignore"):  # it prints; 0/0 -> nan
            return float(ev.compute()) / 100


# ------------------------------------------------------------------------------------------
# conformance
# ------------------------------------------------------------------------------------------
def compare(ref: Reference, samples: list[Sample], num_thresholds: int) -> dict[str, float]:
    """Largest absolute differences between ours (default convention) and the reference."""
    ev = LocalizationEvaluator(num_thresholds)
    values: dict[str, list[float]] = {"pxap": [], "maxboxacc": [], "v2": [], "curve": []}
    for maps, masks, boxes in samples:
        ev.reset()
        ev.update(maps, masks=masks, boxes=boxes)
        ours = ev.summary()
        r1 = ref.maxboxacc(maps, boxes)
        r2 = ref.maxboxaccv2(maps, boxes)
        ref_v1 = np.asarray(r1.compute()) / 100
        ref_v2 = np.asarray(r2.compute()) / 100
        values["pxap"].append(abs(ours["pxap"] - ref.pxap(maps, masks)))
        values["maxboxacc"].append(abs(ours["maxboxacc"] - ref_v1[0]))
        ours_v2 = [ours[f"maxboxaccv2_iou{k}"] for k in (30, 50, 70)]
        values["v2"].append(float(np.abs(np.asarray(ours_v2) - ref_v2).max()))
        curves = np.concatenate([ev.maxboxacc.accuracies(), ev.maxboxaccv2.accuracies()])
        ref_curves = np.stack([r1.num_correct[50]] + [r2.num_correct[k] for k in (30, 50, 70)]) / r1.cnt
        values["curve"].append(float(np.abs(curves - ref_curves).max()))
        values.setdefault("ours", []).append(ours)  # type: ignore[arg-type]
    return {k: max(v) for k, v in values.items() if k != "ours"} | {"summary": values["ours"][0]}


def conformance(ref: Reference, n: int, num_thresholds: int, seed: int) -> None:
    print(f"\n### Conformance with the reference ({num_thresholds} thresholds, default convention)\n")
    print(
        "| family | maps | max abs. diff PxAP | MaxBoxAcc | MaxBoxAccV2 (any IoU) | per-threshold curves "
        "| ours: PxAP / MaxBoxAcc / V2 |"
    )
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for k, name in enumerate(FAMILIES):
        samples = samples_of(name, np.random.default_rng(seed + 1000 + k), n)
        d = compare(ref, samples, num_thresholds)
        s = d.pop("summary")
        worst = max(worst, *d.values())
        count = sum(len(m) for m, _, _ in samples)
        print(
            f"| {name} | {count} | {d['pxap']:.1e} | {d['maxboxacc']:.1e} | {d['v2']:.1e} | {d['curve']:.1e} | "
            f"{s['pxap']:.4f} / {s['maxboxacc']:.4f} / {s['maxboxaccv2']:.4f} |"
        )
    print(f"\nLargest difference over all families: {worst:.1e} ({'PASS' if worst <= 1e-6 else 'FAIL'} at 1e-6)")


# ------------------------------------------------------------------------------------------
# speed
# ------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def speed_inputs(n: int, size: int, seed: int) -> Sample:
    rng = np.random.default_rng(seed)
    rings = max(1, n // 10)
    a = family_cam_like(rng, n - rings, size)
    b = family_rings(rng, rings, size)
    return np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]]), a[2] + b[2]


def ours_runs(convention: str, maps: np.ndarray, masks: np.ndarray, boxes: list[np.ndarray], t: int) -> dict:
    def one(metric: Any, *args: Any) -> Callable[[], Any]:
        def run() -> Any:
            for i in range(len(maps)):
                metric.update(maps[i], *(a[i] for a in args))
            return metric.summary()

        return run

    def evaluator() -> Any:
        ev = LocalizationEvaluator(t, convention=convention)
        for i in range(len(maps)):
            ev.update(maps[i], masks=masks[i], boxes=[boxes[i]])
        return ev.summary()

    return {
        "PxAP": one(PxAP(t), masks),
        "MaxBoxAcc": one(MaxBoxAcc(t, convention=convention), boxes),
        "MaxBoxAccV2": one(MaxBoxAccV2(t, convention=convention), boxes),
        "all three (LocalizationEvaluator)": evaluator,
    }


def speed(args: argparse.Namespace, ref: Reference | None) -> None:
    maps, masks, boxes = speed_inputs(args.maps, args.size, args.seed)
    t = args.thresholds
    rows: dict[str, dict[str, float]] = {}
    for convention in ("wsolevaluation", "components"):
        for name, fn in ours_runs(convention, maps, masks, boxes, t).items():
            if name == "PxAP" and convention == "components":
                continue  # PxAP has no convention
            cpu, wall, _ = timed(fn)
            rows.setdefault(name, {})[convention] = cpu
            rows[name][convention + " wall"] = wall
    if ref is not None:
        parts = {
            "PxAP": lambda: ref.pxap(maps, masks),
            "MaxBoxAcc": lambda: ref.maxboxacc(maps, boxes).compute(),
            "MaxBoxAccV2": lambda: ref.maxboxaccv2(maps, boxes).compute(),
        }
        for name, fn in parts.items():
            cpu, wall, _ = timed(fn)
            rows[name]["reference"], rows[name]["reference wall"] = cpu, wall
        total = "all three (LocalizationEvaluator)"
        rows[total]["reference"] = sum(rows[k]["reference"] for k in parts)
        rows[total]["reference wall"] = sum(rows[k]["reference wall"] for k in parts)
    print(f"\n### Speed: {len(maps)} maps of {args.size}x{args.size} ({len(maps) // 10 or 1} rings), {t} thresholds\n")
    print("CPU seconds (process_time); wall seconds in parentheses. Reference: its three evaluators.\n")
    head = "| metric | ours, wsolevaluation | ours, components |"
    sep = "|---|---|---|"
    if ref is not None:
        head += " reference | reference / ours (wsolevaluation) |"
        sep += "---|---|"
    print(head)
    print(sep)
    for name, r in rows.items():
        cells = [f"{r['wsolevaluation']:.2f} ({r['wsolevaluation wall']:.2f})"]
        components = f"{r['components']:.2f} ({r['components wall']:.2f})" if "components" in r else "(no convention)"
        cells.append(components)
        if ref is not None:
            ratio = r["reference"] / r["wsolevaluation"]
            cells += [f"{r['reference']:.2f} ({r['reference wall']:.2f})", f"**{ratio:.1f}x**"]
        print(f"| {name} | " + " | ".join(cells) + " |")


def environment() -> None:
    import cv2
    import torch

    load = os.getloadavg()
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}; "
        f"{os.cpu_count()} CPUs; threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"torch {torch.get_num_threads()}, cv2 {cv2.getNumThreads()}; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--maps", type=int, default=300, help="maps in the speed run")
    p.add_argument("--size", type=int, default=224, help="side of the speed-run maps")
    p.add_argument("--thresholds", type=int, default=1000, help="CAM thresholds")
    p.add_argument("--check-maps", type=int, default=40, help="maps per conformance family")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-check", action="store_true")
    args = p.parse_args(argv)
    import cv2

    cv2.setNumThreads(1)  # single-threaded like numpy here (findContours is serial anyway)
    path = os.environ.get("WSOLEVAL_PATH")
    ref = Reference(load_reference(path), args.thresholds) if path else None
    environment()
    if ref is None:
        print("WSOLEVAL_PATH not set: reference column and conformance table skipped.")
    if not args.skip_speed:
        speed(args, ref)
    if ref is not None and not args.skip_check:
        conformance(ref, args.check_maps, args.thresholds, args.seed)
    print()
    environment()


if __name__ == "__main__":
    main()
