"""Box candidates of the ``"components"`` convention: 8-connected components (no OpenCV).

Candidates are the boxes of the 8-connected components of the binary map; MaxBoxAcc keeps the
component with the most pixels (the first in raster order on ties). Holes are not candidates.
The distinct binary maps are stacked into an ``(L, H, W)`` volume and labelled in one
``scipy.ndimage.label`` call (components never cross planes).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .boxes import EIGHT_CONNECTED, box_iou

__all__ = ["level_best"]

_PLANAR_EIGHT_CONNECTED = np.pad(EIGHT_CONNECTED[None], ((1, 1), (0, 0), (0, 0)))
_VOLUME_PIXELS = 2**22  # bound on the memory of one stacked volume


def level_best(q: np.ndarray, lows: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """``(2, L)`` IoU of the largest component's box, and best IoU over all component boxes."""
    h, w = q.shape
    best = np.empty((2, len(lows)), dtype=np.float64)
    chunk = max(1, _VOLUME_PIXELS // (h * w))
    for lo in range(0, len(lows), chunk):
        part = slice(lo, lo + chunk)
        volume = q[None] >= lows[part, None, None]
        labels, n = ndimage.label(volume, structure=_PLANAR_EIGHT_CONNECTED)
        slices = ndimage.find_objects(labels)
        coords = np.array(
            [(s[0].start, s[2].start, s[1].start, s[2].stop, s[1].stop) for s in slices], dtype=np.int64
        ).reshape(-1, 5)
        plane, boxes = coords[:, 0], coords[:, 1:]
        boxes[:, 2] = np.minimum(boxes[:, 2], w - 1)  # cv2.boundingRect x + w, clipped
        boxes[:, 3] = np.minimum(boxes[:, 3], h - 1)
        iou = box_iou(boxes, gt_boxes).max(1)
        starts = np.flatnonzero(np.r_[True, plane[1:] != plane[:-1]])  # labels follow plane order
        best[1, part] = np.maximum.reduceat(iou, starts)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        order = np.lexsort((np.arange(n), -sizes, plane))  # largest first, raster order on ties
        best[0, part] = iou[order[starts]]  # planes keep their order after the lexsort
    return best
