"""Streaming WSOL localization metrics: PxAP, MaxBoxAcc and MaxBoxAccV2.

The definitions follow Choe et al., "Evaluating Weakly Supervised Object Localization Methods
Right" (CVPR 2020) and the evaluation protocol of their ``wsolevaluation`` code, re-implemented
from the definitions so that the numbers are comparable with the WSOL literature:

* **PxAP** — pixel-wise average precision. Foreground and background pixel scores are
  accumulated in fixed histograms whose bin edges are the CAM thresholds
  ``0, 1/T, ..., (T-1)/T`` (plus edges 1, 2, 3); per threshold, TP/FP are the reversed cumulative
  sums, and ``AP = sum_i precision_i * (recall_i - recall_{i-1})``.
* **MaxBoxAcc** (v1) — for each CAM threshold, the map is binarised, the box of the largest
  connected component is compared with the ground-truth boxes; an image counts as correct when
  the IoU with *any* GT box is >= 0.5. The metric is the best accuracy over the thresholds.
* **MaxBoxAccV2** — boxes of *all* connected components are considered (best IoU over component
  boxes x GT boxes), at IoU thresholds 0.3, 0.5 and 0.7, each maxed over the CAM thresholds; the
  metric is their mean.

All metrics are returned as fractions in [0, 1] (the literature reports them x 100).

Conventions shared with ``wsolevaluation`` (deliberately reproduced):

* **Maps** are score maps in [0, 1], one per image, already resized to the image/mask size
  (``(B, H, W)`` or ``(H, W)``; numpy arrays or torch tensors). Min-max normalised maps (what
  pytorch-grad-cam, torchcam with ``normalized=True`` and F-CAM return) are what the protocol
  expects. Values outside [0, 1] raise a ``ValueError``.
* **Binarisation for boxes** is done on the 8-bit quantised map, as ``wsolevaluation`` does
  with OpenCV: ``q = uint8(map * 255)`` and a pixel is foreground at threshold ``t`` when
  ``q > int(t * max(q))``. For min-max normalised maps ``max(q) == 255``, so this is simply
  "score above ``t``" up to 1/255 quantisation.
* **Boxes** are integer pixel corners ``(x0, y0, x1, y1)`` and IoU uses the *inclusive* area
  ``(x1 - x0 + 1) * (y1 - y0 + 1)``. A predicted box is built like ``cv2.boundingRect`` in
  ``wsolevaluation``: for a component spanning columns ``a..b`` and rows ``c..d`` the box is
  ``(a, c, min(b + 1, W - 1), min(d + 1, H - 1))``. :func:`boxes_from_mask` uses the same rule,
  so a perfect map reaches IoU 1 against boxes derived from its own mask. An empty binary map
  gives the box ``(0, 0, 0, 0)``.
* **Connected components** are 8-connected (``scipy.ndimage.label``) instead of
  ``cv2.findContours``. Differences with OpenCV are tiny: the "largest" component is chosen by
  pixel count rather than by polygon area (``cv2.contourArea``), and the contours of holes
  (returned by OpenCV's ``RETR_TREE``) are not treated as extra candidate boxes in V2.

Memory does not grow with the dataset: PxAP keeps two histograms of ``T + 2`` bins and the box
metrics keep one counter per (IoU threshold, CAM threshold).

Example:
    >>> import numpy as np
    >>> from fcam_plugin.metrics import LocalizationEvaluator
    >>> ev = LocalizationEvaluator()
    >>> mask = np.zeros((1, 32, 32), np.float32); mask[0, 8:20, 10:24] = 1
    >>> ev.update(mask, masks=mask)          # boxes derived from the masks
    >>> round(ev.summary()["pxap"], 3), ev.summary()["maxboxacc"]
    (1.0, 1.0)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from scipy import ndimage

from ._checks import describe

__all__ = [
    "LocalizationEvaluator",
    "MaxBoxAcc",
    "MaxBoxAccV2",
    "PxAP",
    "box_iou",
    "boxes_from_mask",
    "cam_thresholds",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_PLANAR_EIGHT_CONNECTED = np.pad(_EIGHT_CONNECTED[None], ((1, 1), (0, 0), (0, 0)))


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def cam_thresholds(num_thresholds: int = 1000) -> np.ndarray:
    """CAM thresholds ``[0, 1/T, ..., (T-1)/T]`` (identical to ``np.arange(0, 1, 1/T)``).

    Args:
        num_thresholds: number ``T`` of thresholds (``wsolevaluation`` uses 1000).

    Returns:
        float64 array of shape ``(T,)``.

    Raises:
        ValueError: ``num_thresholds`` is not an integer >= 1.
    """
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or (
        num_thresholds < 1
    ):
        raise ValueError(
            f"`num_thresholds` must be an integer >= 1 (e.g. 1000), got {num_thresholds!r}."
        )
    return np.arange(int(num_thresholds), dtype=np.float64) * (1.0 / int(num_thresholds))


def _to_numpy(name: str, value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"`{name}` must be a numpy array or a torch.Tensor, got {describe(value)}.")


def _check_maps(maps: object) -> np.ndarray:
    """Return maps as a float32 array ``(B, H, W)`` after validation."""
    arr = _to_numpy("maps", maps)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(
            f"`maps` must have shape (B, H, W) or (H, W), got shape {list(arr.shape)}; squeeze a "
            "channel dimension (B, 1, H, W) with maps[:, 0]."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ValueError(f"`maps` is empty: shape {list(arr.shape)}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"`maps` must be a floating array with values in [0, 1], got dtype {arr.dtype}"
            + (" (divide uint8 maps by 255)" if arr.dtype == np.uint8 else "")
            + "."
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise ValueError("`maps` contains NaN or Inf values.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"`maps` values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; min-max normalise "
            "each map first (the WSOL protocol evaluates normalised score maps)."
        )
    return arr


def _check_masks(masks: object, shape: tuple[int, ...], ignore_index: int | None) -> np.ndarray:
    """Return masks as uint8 ``(B, H, W)`` with values 0, 1 and (optionally) 255 for ignored."""
    arr = _to_numpy("masks", masks)
    if arr.ndim == 2:
        arr = arr[None]
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(
            f"`masks` must have the same shape as `maps` {list(shape)} (maps must be resized to "
            f"the mask size), got shape {list(arr.shape)}."
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"`masks` must be a bool, integer or float array, got dtype {arr.dtype}.")
    out = np.zeros(arr.shape, dtype=np.uint8)
    fg = arr == 1
    out[fg] = 1
    valid = fg | (arr == 0)
    if ignore_index is not None:
        ign = arr == ignore_index
        out[ign] = 255
        valid |= ign
    if not valid.all():
        bad = np.unique(arr[~valid])[:5]
        accepted = "{0, 1}" + (f" or {ignore_index} (ignored)" if ignore_index is not None else "")
        raise ValueError(f"`masks` values must be in {accepted}, got values such as {bad.tolist()}.")
    return out


def _check_boxes(boxes: object, batch: int, single_map: bool) -> list[np.ndarray]:
    """Return a list of ``batch`` int64 arrays of shape ``(N_i, 4)``."""
    if single_map and isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 2:
        boxes = [boxes]
    if isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 3:
        boxes = list(boxes)
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(
            "`boxes` must be a list with one (N, 4) array of (x0, y0, x1, y1) boxes per map, got "
            f"{describe(boxes)}."
        )
    if len(boxes) != batch:
        raise ValueError(
            f"`boxes` must hold one (N, 4) array per map ({batch} maps), got {len(boxes)} entries."
        )
    out = []
    for i, b in enumerate(boxes):
        if isinstance(b, (list, tuple)):
            b = np.asarray(b, dtype=np.float64).reshape(-1, 4) if len(b) else np.zeros((0, 4))
        arr = _to_numpy(f"boxes[{i}]", b)
        if arr.ndim == 1 and arr.shape[0] == 4:
            arr = arr[None]
        if arr.ndim != 2 or arr.shape[1] != 4:
            raise ValueError(
                f"`boxes[{i}]` must have shape (N, 4) with (x0, y0, x1, y1) rows, got shape "
                f"{list(arr.shape)}."
            )
        if arr.shape[0] == 0:
            raise ValueError(
                f"`boxes[{i}]` is empty: every image needs at least one ground-truth box."
            )
        if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
            raise ValueError(f"`boxes[{i}]` must hold finite numbers, got {describe(arr)}.")
        if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
            raise ValueError(
                f"`boxes[{i}]` must satisfy x1 >= x0 and y1 >= y0 (x0, y0, x1, y1 order), got "
                f"{arr[:3].tolist()}."
            )
        out.append(arr.astype(np.int64))
    return out


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between integer boxes with inclusive corners (``wsolevaluation`` convention).

    Args:
        boxes_a: ``(N, 4)`` boxes ``(x0, y0, x1, y1)``.
        boxes_b: ``(M, 4)`` boxes.

    Returns:
        float64 array ``(N, M)``; area of a box is ``(x1 - x0 + 1) * (y1 - y0 + 1)``.

    Example:
        >>> box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9]]))
        array([[0.5]])
    """
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _slices_to_boxes(slices: Sequence[tuple[slice, slice] | None], h: int, w: int) -> np.ndarray:
    boxes = [
        (s[1].start, s[0].start, min(s[1].stop, w - 1), min(s[0].stop, h - 1))
        for s in slices
        if s is not None
    ]
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def boxes_from_mask(mask: object, per_component: bool = True) -> np.ndarray:
    """Boxes of a binary mask, in the same convention as the boxes predicted by the metrics.

    Args:
        mask: ``(H, W)`` array/tensor; pixels ``== 1`` (or ``True``) are foreground, anything
            else (0, or an ignore value such as 255) is background.
        per_component: one box per 8-connected component (default), or a single box around all
            foreground pixels.

    Returns:
        int64 array ``(N, 4)`` of ``(x0, y0, x1, y1)`` boxes, ``x1 = min(last column + 1, W - 1)``
        (see the module docstring); ``(0, 4)`` when the mask is empty.

    Raises:
        TypeError: ``mask`` is not an array/tensor.
        ValueError: ``mask`` is not 2-D.

    Example:
        >>> m = np.zeros((10, 10)); m[2:5, 3:7] = 1
        >>> boxes_from_mask(m)
        array([[3, 2, 7, 5]])
    """
    arr = _to_numpy("mask", mask)
    if arr.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W), got shape {list(arr.shape)}.")
    fg = arr == 1
    h, w = fg.shape
    if not fg.any():
        return np.zeros((0, 4), dtype=np.int64)
    if per_component:
        labels, _ = ndimage.label(fg, structure=_EIGHT_CONNECTED)
        return _slices_to_boxes(ndimage.find_objects(labels), h, w)
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    return np.array(
        [[cols[0], rows[0], min(cols[-1] + 1, w - 1), min(rows[-1] + 1, h - 1)]], dtype=np.int64
    )


def _best_iou_per_threshold(
    score_map: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Best IoU with the GT boxes per CAM threshold, ``(2, T)``: row 0 uses the box of the
    largest component (MaxBoxAcc), row 1 the boxes of all components (MaxBoxAccV2).

    Thresholds that give the same binary map share one labelling: with ``q = uint8(map * 255)``
    the binary map at integer level ``k`` is ``q > k`` and only changes when ``k`` crosses one of
    the (at most 256) distinct values of ``q``. The distinct binary maps are stacked into a
    ``(L, H, W)`` volume and labelled in one call (components never cross planes).
    """
    h, w = score_map.shape
    q = (score_map * np.float32(255)).astype(np.uint8)
    levels = (thresholds * int(q.max())).astype(np.int64)  # int() truncation, as wsolevaluation
    uniq = np.unique(q)
    # index of the binary map = number of distinct q-values <= level (same index => same map)
    groups, inverse = np.unique(np.searchsorted(uniq, levels, side="right"), return_inverse=True)
    best = np.empty((2, len(groups)), dtype=np.float64)
    empty = groups >= len(uniq)  # nothing above the level: empty map, box (0, 0, 0, 0)
    best[:, empty] = box_iou(np.zeros((1, 4)), gt_boxes).max()
    todo = np.flatnonzero(~empty)
    # cut-offs: q > uniq[g - 1] (g == 0 -> every pixel); -1 keeps all uint8 values
    cuts = np.where(groups[todo] > 0, uniq[np.maximum(groups[todo] - 1, 0)].astype(np.int16), -1)
    chunk = max(1, 2**22 // (h * w))  # bound the memory of the stacked volume
    for lo in range(0, len(todo), chunk):
        idx, cut = todo[lo : lo + chunk], cuts[lo : lo + chunk]
        volume = q[None].astype(np.int16) > cut[:, None, None]
        labels, n = ndimage.label(volume, structure=_PLANAR_EIGHT_CONNECTED)
        slices = ndimage.find_objects(labels)
        coords = np.array(
            [(s[0].start, s[2].start, s[1].start, s[2].stop, s[1].stop) for s in slices],
            dtype=np.int64,
        ).reshape(-1, 5)
        plane, boxes = coords[:, 0], coords[:, 1:]
        boxes[:, 2] = np.minimum(boxes[:, 2], w - 1)  # cv2.boundingRect x + w, clipped
        boxes[:, 3] = np.minimum(boxes[:, 3], h - 1)
        iou = box_iou(boxes, gt_boxes).max(1)
        starts = np.flatnonzero(np.r_[True, plane[1:] != plane[:-1]])  # labels follow plane order
        best[1, idx] = np.maximum.reduceat(iou, starts)
        # largest component of each plane (first in raster order on ties, like max())
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        order = np.lexsort((np.arange(n), -sizes, plane))
        best[0, idx] = iou[order[starts]]  # planes keep their order after the lexsort
    return best[:, inverse.reshape(-1)]


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------
class PxAP:
    """Pixel-wise average precision of score maps against binary masks (streaming).

    Args:
        num_thresholds: number of CAM thresholds / histogram bins over [0, 1) (default 1000).
        ignore_index: mask value excluded from the evaluation (OpenImages "ignore" regions), or
            ``None``.

    Example:
        >>> m = PxAP()
        >>> m.update(np.full((1, 4, 4), 0.5, np.float32), np.eye(4)[None])
        >>> m.summary()["pxap"]
        0.25
    """

    def __init__(self, num_thresholds: int = 1000, ignore_index: int | None = 255) -> None:
        self.thresholds = cam_thresholds(num_thresholds)
        self.ignore_index = ignore_index
        self._edges = np.append(self.thresholds, [1.0, 2.0, 3.0])
        self.reset()

    def reset(self) -> None:
        """Clear the accumulated histograms."""
        self._fg_hist = np.zeros(len(self._edges) - 1, dtype=np.int64)
        self._bg_hist = np.zeros(len(self._edges) - 1, dtype=np.int64)

    def update(self, maps: object, masks: object) -> None:
        """Accumulate a batch.

        Args:
            maps: score maps ``(B, H, W)`` or ``(H, W)`` in [0, 1], at mask resolution.
            masks: ground-truth masks, same shape, values 0/1 (``ignore_index`` = ignored).

        Raises:
            TypeError: wrong type or dtype.
            ValueError: wrong shape, values outside [0, 1] or invalid mask values.
        """
        arr = _check_maps(maps)
        gt = _check_masks(masks, arr.shape, self.ignore_index)
        self._fg_hist += np.histogram(arr[gt == 1], bins=self._edges)[0]
        self._bg_hist += np.histogram(arr[gt == 0], bins=self._edges)[0]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Precision and recall per histogram edge, highest threshold first.

        Returns:
            ``(precision, recall)``, two float64 arrays of shape ``(T + 2,)``.

        Raises:
            RuntimeError: no foreground pixel has been seen yet.
        """
        tp = self._fg_hist[::-1].cumsum().astype(np.float64)
        fp = self._bg_hist[::-1].cumsum().astype(np.float64)
        num_fg = self._fg_hist.sum()
        if num_fg == 0:
            raise RuntimeError("PxAP: no foreground pixel accumulated; call update() with masks.")
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        recall = tp / num_fg
        return precision, recall

    def summary(self) -> dict[str, float]:
        """Return ``{"pxap": AP}`` with AP in [0, 1].

        Raises:
            RuntimeError: no foreground pixel has been seen yet.
        """
        precision, recall = self.curve()
        return {"pxap": float((precision[1:] * np.diff(recall)).sum())}


class _BoxAccuracy:
    """Shared machinery of MaxBoxAcc and MaxBoxAccV2 (per-threshold correct counters)."""

    _all_components: bool = False

    def __init__(self, num_thresholds: int, iou_thresholds: Sequence[float]) -> None:
        self.thresholds = cam_thresholds(num_thresholds)
        ious = tuple(iou_thresholds)
        if not ious or any(
            not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 1 for t in ious
        ):
            raise ValueError(
                f"`iou_thresholds` must be a non-empty sequence of numbers in (0, 1], got {ious!r}."
            )
        self.iou_thresholds = ious
        self.reset()

    def reset(self) -> None:
        """Clear the counters."""
        self._correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)), dtype=np.int64)
        self._count = 0

    def update(self, maps: object, boxes: object) -> None:
        """Accumulate a batch.

        Args:
            maps: score maps ``(B, H, W)`` or ``(H, W)`` in [0, 1], at image resolution.
            boxes: list of ``B`` ground-truth box arrays ``(N_i, 4)`` with integer
                ``(x0, y0, x1, y1)`` pixel corners (inclusive IoU convention); for a single
                ``(H, W)`` map a bare ``(N, 4)`` array is accepted.

        Raises:
            TypeError: wrong type or dtype.
            ValueError: wrong shape, values outside [0, 1], or an image without boxes.
        """
        single = isinstance(maps, (np.ndarray, torch.Tensor)) and maps.ndim == 2
        arr = _check_maps(maps)
        gt = _check_boxes(boxes, arr.shape[0], single)
        for score_map, gt_boxes in zip(arr, gt):
            self._accumulate(_best_iou_per_threshold(score_map, gt_boxes, self.thresholds))

    def _accumulate(self, best: np.ndarray) -> None:
        """Count one image from its ``(2, T)`` best IoUs (see ``_best_iou_per_threshold``)."""
        row = best[1 if self._all_components else 0]
        self._correct += row[None, :] >= np.asarray(self.iou_thresholds)[:, None]
        self._count += 1

    def accuracies(self) -> np.ndarray:
        """Box accuracy per (IoU threshold, CAM threshold), shape ``(len(iou_thresholds), T)``.

        Raises:
            RuntimeError: nothing accumulated yet.
        """
        if self._count == 0:
            raise RuntimeError(f"{type(self).__name__}: call update() before summary().")
        return self._correct / self._count


class MaxBoxAcc(_BoxAccuracy):
    """MaxBoxAcc (v1): box of the largest component, IoU >= ``iou_threshold``, best threshold.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_threshold: IoU needed for a correct box (default 0.5).

    Example:
        >>> m = MaxBoxAcc()
        >>> cam = np.zeros((16, 16), np.float32); cam[2:6, 3:9] = 1
        >>> m.update(cam, np.array([[3, 2, 9, 6]]))
        >>> m.summary()["maxboxacc"]
        1.0
    """

    _all_components = False

    def __init__(self, num_thresholds: int = 1000, iou_threshold: float = 0.5) -> None:
        super().__init__(num_thresholds, (iou_threshold,))

    def summary(self) -> dict[str, float]:
        """Return ``{"maxboxacc": acc, "maxboxacc_threshold": best CAM threshold}``.

        Raises:
            RuntimeError: nothing accumulated yet.
        """
        acc = self.accuracies()[0]
        best = int(np.argmax(acc))
        return {"maxboxacc": float(acc[best]), "maxboxacc_threshold": float(self.thresholds[best])}


class MaxBoxAccV2(_BoxAccuracy):
    """MaxBoxAccV2: boxes of all components, mean over IoU thresholds of the best accuracy.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_thresholds: IoU thresholds (default 0.3, 0.5, 0.7).

    Example:
        >>> m = MaxBoxAccV2()
        >>> cam = np.zeros((16, 16), np.float32); cam[2:6, 3:9] = 1
        >>> m.update(cam, np.array([[3, 2, 9, 6]]))
        >>> m.summary()["maxboxaccv2"]
        1.0
    """

    _all_components = True

    def __init__(
        self, num_thresholds: int = 1000, iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7)
    ) -> None:
        super().__init__(num_thresholds, iou_thresholds)

    def summary(self) -> dict[str, float]:
        """Return the mean, and per IoU threshold the best accuracy and its CAM threshold.

        Keys: ``maxboxaccv2``, ``maxboxaccv2_iou30`` (…50, …70) and
        ``maxboxaccv2_iou30_threshold`` (…).

        Raises:
            RuntimeError: nothing accumulated yet.
        """
        acc = self.accuracies()
        out: dict[str, float] = {"maxboxaccv2": float(acc.max(1).mean())}
        for iou, row in zip(self.iou_thresholds, acc):
            key = f"maxboxaccv2_iou{round(100 * iou)}"
            best = int(np.argmax(row))
            out[key] = float(row[best])
            out[f"{key}_threshold"] = float(self.thresholds[best])
        return out


class LocalizationEvaluator:
    """PxAP, MaxBoxAcc and MaxBoxAccV2 updated together.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_thresholds: IoU thresholds of MaxBoxAccV2.
        ignore_index: mask value excluded from PxAP and from mask-derived boxes.

    Example:
        >>> ev = LocalizationEvaluator()
        >>> cam = np.zeros((1, 16, 16), np.float32); cam[0, 2:6, 3:9] = 1
        >>> ev.update(cam, masks=cam)
        >>> ev.summary()["maxboxaccv2"]
        1.0
    """

    def __init__(
        self,
        num_thresholds: int = 1000,
        iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
        ignore_index: int | None = 255,
    ) -> None:
        self.pxap = PxAP(num_thresholds, ignore_index=ignore_index)  # validates num_thresholds
        self.maxboxacc = MaxBoxAcc(num_thresholds)
        self.maxboxaccv2 = MaxBoxAccV2(num_thresholds, iou_thresholds)
        self.ignore_index = ignore_index
        self._seen_masks = False

    def reset(self) -> None:
        """Clear all metrics."""
        self.pxap.reset()
        self.maxboxacc.reset()
        self.maxboxaccv2.reset()
        self._seen_masks = False

    def update(self, maps: object, masks: object | None = None, boxes: object | None = None) -> None:
        """Accumulate a batch.

        Args:
            maps: score maps ``(B, H, W)`` or ``(H, W)`` in [0, 1], at image resolution.
            masks: optional masks of the same shape (values 0/1, ``ignore_index`` ignored); used
                by PxAP, and for the box metrics when ``boxes`` is ``None`` (one box per
                connected component, see :func:`boxes_from_mask`).
            boxes: optional list of ``B`` arrays ``(N_i, 4)`` of GT boxes.

        Raises:
            ValueError: neither ``masks`` nor ``boxes`` given, or invalid inputs.
            TypeError: invalid input types.
        """
        if masks is None and boxes is None:
            raise ValueError("`masks` and `boxes` are both None: give at least one of them.")
        arr = _check_maps(maps)
        if masks is not None:
            gt = _check_masks(masks, arr.shape, self.ignore_index)
            self.pxap.update(arr, gt)
            self._seen_masks = True
            if boxes is None:
                boxes = [boxes_from_mask(m) for m in gt]
        elif isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 2 and (
            getattr(maps, "ndim", 3) == 2
        ):
            boxes = [boxes]
        gt_boxes = _check_boxes(boxes, arr.shape[0], single_map=False)
        for score_map, gtb in zip(arr, gt_boxes):  # one labelling pass feeds both box metrics
            best = _best_iou_per_threshold(score_map, gtb, self.maxboxacc.thresholds)
            self.maxboxacc._accumulate(best)
            self.maxboxaccv2._accumulate(best)

    def summary(self) -> dict[str, Any]:
        """Flat dict of all metrics (fractions in [0, 1]).

        Keys: ``pxap`` (``nan`` when no masks were given), ``maxboxacc``,
        ``maxboxacc_threshold``, ``maxboxaccv2``, ``maxboxaccv2_iou30/50/70`` and their
        ``_threshold`` entries.

        Raises:
            RuntimeError: nothing accumulated yet.
        """
        out: dict[str, Any] = {"pxap": float("nan")}
        if self._seen_masks:
            try:
                out.update(self.pxap.summary())
            except RuntimeError:
                pass
        out.update(self.maxboxacc.summary())
        out.update(self.maxboxaccv2.summary())
        return out
