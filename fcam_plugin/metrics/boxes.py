"""Box helpers shared by the metrics: CAM thresholds, inclusive IoU and boxes of masks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ._inputs import to_numpy

__all__ = ["EIGHT_CONNECTED", "box_iou", "boxes_from_mask", "cam_thresholds"]

#: 8-connectivity structuring element of ``scipy.ndimage.label``.
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def cam_thresholds(num_thresholds: int = 1000) -> np.ndarray:
    """CAM thresholds ``[0, 1/T, ..., (T-1)/T]`` (identical to ``np.arange(0, 1, 1/T)``).

    Args:
        num_thresholds: number ``T`` of thresholds (``wsolevaluation`` uses 1000).

    Returns:
        float64 array of shape ``(T,)``.

    Raises:
        ValueError: ``num_thresholds`` is not an integer >= 1.

    Example:
        >>> cam_thresholds(4)
        array([0.  , 0.25, 0.5 , 0.75])
    """
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)) or num_thresholds < 1:
        raise ValueError(f"`num_thresholds` must be an integer >= 1 (e.g. 1000), got {num_thresholds!r}.")
    return np.arange(int(num_thresholds), dtype=np.float64) * (1.0 / int(num_thresholds))


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU between integer boxes with inclusive corners (``wsolevaluation`` convention).

    Args:
        boxes_a: ``(N, 4)`` boxes ``(x0, y0, x1, y1)``.
        boxes_b: ``(M, 4)`` boxes.

    Returns:
        float64 array ``(N, M)``; the area of a box is ``(x1 - x0 + 1) * (y1 - y0 + 1)``.

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


def slices_to_boxes(slices: Sequence[tuple[slice, slice] | None], h: int, w: int) -> np.ndarray:
    """Boxes ``(x0, y0, min(x_last + 1, W - 1), min(y_last + 1, H - 1))`` of ``find_objects`` slices."""
    boxes = [
        (s[1].start, s[0].start, min(s[1].stop, w - 1), min(s[0].stop, h - 1)) for s in slices if s is not None
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
        (``cv2.boundingRect`` as ``wsolevaluation`` uses it); ``(0, 4)`` when the mask is empty.

    Raises:
        TypeError: ``mask`` is not an array/tensor.
        ValueError: ``mask`` is not 2-D.

    Example:
        >>> m = np.zeros((10, 10)); m[2:5, 3:7] = 1
        >>> boxes_from_mask(m)
        array([[3, 2, 7, 5]])
    """
    arr = to_numpy("mask", mask)
    if arr.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W), got shape {list(arr.shape)}.")
    fg = arr == 1
    h, w = fg.shape
    if not fg.any():
        return np.zeros((0, 4), dtype=np.int64)
    if per_component:
        labels, _ = ndimage.label(fg, structure=EIGHT_CONNECTED)
        return slices_to_boxes(ndimage.find_objects(labels), h, w)
    rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
    return np.array([[cols[0], rows[0], min(cols[-1] + 1, w - 1), min(rows[-1] + 1, h - 1)]], dtype=np.int64)
