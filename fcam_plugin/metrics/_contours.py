"""Box candidates of the ``"wsolevaluation"`` convention: OpenCV contours in tree retrieval.

Per binary map, ``cv2.findContours(..., cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)`` returns the
outer contour of every 8-connected component *and* the contour of every hole. MaxBoxAccV2 boxes
all of them (``cv2.boundingRect``); MaxBoxAcc keeps the contour of largest polygon area
(``cv2.contourArea``: holes enclosed by an outer contour count, a 1-px line has area 0), the
first one in OpenCV's order on ties.

Speed: one ``findContours`` per distinct binary map (see ``_levels``), on the map cropped to its
foreground (exact: OpenCV pads the image with zeros and scans it in raster order, which a crop
keeps), and the rectangles and areas of all contours of all levels in a few vectorised calls.
"""

from __future__ import annotations

import numpy as np

from ._cv2 import cv2
from .boxes import box_iou

__all__ = ["level_best", "level_contours"]

_LEVELS_PER_CHUNK = 32  # bounds the contours held at once (noisy maps have thousands per level)


def _foreground_extents(q: np.ndarray, lows: np.ndarray) -> np.ndarray:
    """``(L, 4)`` first/last row and first/last column of ``q >= lows[l]`` for every level."""
    out = []
    for profile in (q.max(1), q.max(0)):
        hit = profile[None, :] >= lows[:, None]
        first = hit.argmax(1)
        last = len(profile) - 1 - hit[:, ::-1].argmax(1)
        out += [first, last]
    return np.stack(out, 1)


def level_contours(q: np.ndarray, lows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes and doubled areas of the contours of every level, in OpenCV's order.

    Args:
        q: ``(H, W)`` uint8 map.
        lows: ``(L,)`` increasing levels; level ``l`` is the binary map ``q >= lows[l]`` (non-empty).

    Returns:
        ``(boxes, area2, counts)``: ``(N, 4)`` int64 ``(x0, y0, x1, y1)`` boxes with
        ``x1 = min(x + w, W - 1)`` (``cv2.boundingRect`` as wsolevaluation clips it), ``(N,)``
        int64 twice the ``cv2.contourArea`` (exact integers), and ``(L,)`` contours per level.
    """
    h, w = q.shape
    contours, offsets, counts = [], [], []
    for low, (r0, r1, c0, c1) in zip(lows.tolist(), _foreground_extents(q, lows).tolist()):
        binary = (q[r0 : r1 + 1, c0 : c1 + 1] >= low).view(np.uint8)
        found = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[-2]
        contours.extend(found)
        offsets.append((c0, r0))
        counts.append(len(found))
    per_level = np.asarray(counts, dtype=np.int64)
    if (per_level == 0).any():  # cannot happen: a non-empty map has an outer contour
        raise RuntimeError("OpenCV found no contour in a non-empty binary map.")
    lengths = np.fromiter((len(c) for c in contours), dtype=np.int64, count=len(contours))
    points = np.concatenate(contours).reshape(-1, 2).astype(np.int64)
    starts = np.cumsum(lengths) - lengths
    x, y = points[:, 0], points[:, 1]
    following = np.arange(1, len(points) + 1)
    following[starts + lengths - 1] = starts  # close each polygon
    area2 = np.abs(np.add.reduceat(x * y[following] - y * x[following], starts))  # shoelace
    shift = np.repeat(np.asarray(offsets, dtype=np.int64), per_level, axis=0)
    boxes = np.stack(
        [
            np.minimum.reduceat(x, starts) + shift[:, 0],
            np.minimum.reduceat(y, starts) + shift[:, 1],
            np.minimum(np.maximum.reduceat(x, starts) + 1 + shift[:, 0], w - 1),
            np.minimum(np.maximum.reduceat(y, starts) + 1 + shift[:, 1], h - 1),
        ],
        1,
    )
    return boxes, area2, per_level


def level_best(q: np.ndarray, lows: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """``(2, L)`` IoU of the largest-area contour's box, and best IoU over all contour boxes.

    Levels are processed in chunks of ``_LEVELS_PER_CHUNK`` so that noisy maps (thousands of
    contours per level) keep a bounded memory.
    """
    best = np.empty((2, len(lows)), dtype=np.float64)
    for lo in range(0, len(lows), _LEVELS_PER_CHUNK):
        part = slice(lo, lo + _LEVELS_PER_CHUNK)
        boxes, area2, counts = level_contours(q, lows[part])
        iou = box_iou(boxes, gt_boxes).max(1)
        starts = np.cumsum(counts) - counts
        level = np.repeat(np.arange(len(counts)), counts)
        is_max = np.flatnonzero(area2 == np.maximum.reduceat(area2, starts)[level])
        first = is_max[np.r_[True, level[is_max[1:]] != level[is_max[:-1]]]]  # first maximum per level
        best[0, part] = iou[first]
        best[1, part] = np.maximum.reduceat(iou, starts)
    return best
