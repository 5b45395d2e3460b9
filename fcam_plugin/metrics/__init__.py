"""Streaming WSOL localization metrics: PxAP, MaxBoxAcc and MaxBoxAccV2.

The definitions follow Choe et al., "Evaluating Weakly Supervised Object Localization Methods
Right" (CVPR 2020). With the default ``convention="wsolevaluation"`` the numbers are those of
their ``wsolevaluation`` code (re-implemented, equal to 1e-6 on every input family we tested):

* **PxAP** — pixel-wise average precision. Foreground and background pixel scores are
  accumulated in fixed histograms whose bin edges are the CAM thresholds
  ``0, 1/T, ..., (T-1)/T`` (plus edges 1, 2, 3), compared in float64; per threshold, TP/FP are
  the reversed cumulative sums, and ``AP = sum_i precision_i * (recall_i - recall_{i-1})``.
* **MaxBoxAcc** (v1) — for each CAM threshold the map is binarised, the box of the "largest"
  candidate is compared with the ground-truth boxes; an image counts as correct when the IoU
  with *any* GT box is >= 0.5. The metric is the best accuracy over the thresholds.
* **MaxBoxAccV2** — the boxes of *all* candidates are considered (best IoU over candidate boxes
  x GT boxes), at IoU thresholds 0.3, 0.5 and 0.7, each maxed over the CAM thresholds; the
  metric is their mean.

All metrics are returned as fractions in [0, 1] (the literature reports them x 100).

Conventions shared by both box conventions (those of ``wsolevaluation``):

* **Maps** are score maps in [0, 1], one per image, already resized to the image/mask size
  (``(B, H, W)`` or ``(H, W)``; numpy arrays or torch tensors), kept in their own dtype. The
  reference's inference resizes CAMs bicubically and min-max normalises them:
  :func:`resize_like_wsolevaluation` and :func:`normalize_scoremap` reproduce it. Values outside
  [0, 1] raise a ``ValueError``.
* **Binarisation for boxes** is done on the 8-bit quantised map ``q = uint8(map * 255)``
  (computed in the map's dtype); a pixel is foreground at threshold ``t`` when
  ``q > int(t * max(q))``.
* **Boxes** are integer pixel corners ``(x0, y0, x1, y1)`` and IoU uses the *inclusive* area
  ``(x1 - x0 + 1) * (y1 - y0 + 1)``. A predicted box is ``cv2.boundingRect`` clipped as in
  ``wsolevaluation``: for a candidate spanning columns ``a..b`` and rows ``c..d`` the box is
  ``(a, c, min(b + 1, W - 1), min(d + 1, H - 1))``. :func:`boxes_from_mask` uses the same rule,
  so a perfect map reaches IoU 1 against boxes derived from its own mask. An empty binary map
  gives the box ``(0, 0, 0, 0)``.

The ``convention`` argument of :class:`MaxBoxAcc`, :class:`MaxBoxAccV2` and
:class:`LocalizationEvaluator` chooses the box candidates of a binary map:

* ``"wsolevaluation"`` (default): the contours of ``cv2.findContours(..., cv2.RETR_TREE,
  cv2.CHAIN_APPROX_SIMPLE)`` — the outer contour of every 8-connected component **and the
  contour of every hole** (its box is the hole's box grown by one pixel). MaxBoxAccV2 boxes all
  of them; MaxBoxAcc keeps the contour of largest polygon area (``cv2.contourArea``: an outer
  contour's area includes its holes, a 1-px line has area 0), the first in OpenCV's order on ties.
* ``"components"``: the 8-connected components only (``scipy.ndimage``, no OpenCV needed);
  MaxBoxAcc keeps the component with most pixels, the first in raster order on ties. A ring
  whose ground truth is its hole scores 0 here and 1 with ``"wsolevaluation"``.

Memory does not grow with the dataset: PxAP keeps two histograms of ``T + 2`` bins and the box
metrics keep one counter per (IoU threshold, CAM threshold). The box candidates of a map are
computed once per *distinct* binary map (at most 256 for 8-bit maps, whatever ``T``).

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

from ._inputs import CONVENTIONS
from .box_accuracy import MaxBoxAcc, MaxBoxAccV2
from .boxes import box_iou, boxes_from_mask, cam_thresholds
from .evaluator import LocalizationEvaluator
from .pxap import PxAP
from .scoremaps import normalize_scoremap, resize_like_wsolevaluation

__all__ = [
    "CONVENTIONS",
    "LocalizationEvaluator",
    "MaxBoxAcc",
    "MaxBoxAccV2",
    "PxAP",
    "box_iou",
    "boxes_from_mask",
    "cam_thresholds",
    "normalize_scoremap",
    "resize_like_wsolevaluation",
]
