"""Per-threshold best IoU of one map, computed once per distinct binary map.

``wsolevaluation`` binarises the 8-bit map ``q = uint8(map * 255)`` at every CAM threshold ``t``
as ``q > int(t * max(q))``. Only the (at most 256) distinct values of ``q`` can change that
binary map, so 1,000 thresholds give at most 256 distinct maps: the box candidates are computed
once per distinct map (one "level") and the best IoUs are spread back to the thresholds.
"""

from __future__ import annotations

import numpy as np

from . import _components, _contours
from .boxes import box_iou

__all__ = ["best_ious", "binary_levels", "quantise"]


def quantise(score_map: np.ndarray) -> np.ndarray:
    """``uint8(map * 255)`` computed in the map's own dtype, as ``wsolevaluation`` does."""
    return (score_map * 255).astype(np.uint8)


def binary_levels(q: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct non-empty binary maps of ``q`` over the thresholds.

    Args:
        q: ``(H, W)`` uint8 map.
        thresholds: ``(T,)`` CAM thresholds in [0, 1).

    Returns:
        ``(lows, index)``: ``lows`` ``(L,)`` uint8, increasing — level ``l`` is the binary map
        ``q >= lows[l]``; ``index`` ``(T,)`` — the level of each threshold, ``L`` for an empty map.
    """
    cut = (thresholds * int(q.max())).astype(np.int64)  # int() truncation of wsolevaluation
    values = np.flatnonzero(np.bincount(q.ravel(), minlength=256))
    # q > cut  <=>  q >= values[k] with k = number of distinct values <= cut (k == len: empty)
    k = np.searchsorted(values, cut, side="right")
    distinct, index = np.unique(k, return_inverse=True)
    lows = values[distinct[distinct < len(values)]].astype(np.uint8)
    return lows, index.reshape(-1)  # an empty map, if any, is the last distinct k: index == len(lows)


def best_ious(score_map: np.ndarray, gt_boxes: np.ndarray, thresholds: np.ndarray, convention: str) -> np.ndarray:
    """Best IoU with the ground-truth boxes per CAM threshold.

    Args:
        score_map: ``(H, W)`` floating map in [0, 1].
        gt_boxes: ``(N, 4)`` int64 ground-truth boxes.
        thresholds: ``(T,)`` CAM thresholds.
        convention: ``"wsolevaluation"`` (OpenCV contours) or ``"components"`` (8-connected
            components).

    Returns:
        float64 ``(2, T)``: row 0 the IoU of the single "largest" candidate (MaxBoxAcc), row 1 the
        best IoU over all candidates (MaxBoxAccV2). An empty binary map gives the box (0, 0, 0, 0).
    """
    q = quantise(score_map)
    lows, index = binary_levels(q, thresholds)
    best = np.empty((2, len(lows) + 1), dtype=np.float64)
    best[:, -1] = box_iou(np.zeros((1, 4)), gt_boxes).max()
    if len(lows):
        level_best = _contours.level_best if convention == "wsolevaluation" else _components.level_best
        best[:, :-1] = level_best(q, lows, gt_boxes)
    return best[:, index]
