"""LocalizationEvaluator: PxAP, MaxBoxAcc and MaxBoxAccV2 updated together (streaming)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ._inputs import check_boxes, check_maps, check_masks
from ._levels import best_ious
from .box_accuracy import MaxBoxAcc, MaxBoxAccV2
from .boxes import boxes_from_mask
from .pxap import PxAP

__all__ = ["LocalizationEvaluator"]


class LocalizationEvaluator:
    """PxAP, MaxBoxAcc and MaxBoxAccV2 updated together.

    The box candidates of each map are computed once and feed both box metrics.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_thresholds: IoU thresholds of MaxBoxAccV2.
        ignore_index: mask value excluded from PxAP and from mask-derived boxes.
        convention: box candidates, ``"wsolevaluation"`` (default, OpenCV contours with holes,
            the reference's numbers) or ``"components"`` (8-connected components, no OpenCV).

    Raises:
        ValueError: invalid ``num_thresholds``, ``iou_thresholds`` or ``convention``.
        ImportError: ``convention="wsolevaluation"`` without OpenCV.

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
        convention: str = "wsolevaluation",
    ) -> None:
        self.pxap = PxAP(num_thresholds, ignore_index=ignore_index)  # validates num_thresholds
        self.maxboxacc = MaxBoxAcc(num_thresholds, convention=convention)
        self.maxboxaccv2 = MaxBoxAccV2(num_thresholds, iou_thresholds, convention=convention)
        self.ignore_index = ignore_index
        self.convention = self.maxboxacc.convention
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
        arr = check_maps(maps)
        if masks is not None:
            gt = check_masks(masks, arr.shape, self.ignore_index)
            self.pxap.accumulate(arr, gt)
            self._seen_masks = True
            if boxes is None:
                boxes = [boxes_from_mask(m) for m in gt]
        elif isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 2 and getattr(maps, "ndim", 3) == 2:
            boxes = [boxes]
        for score_map, gt_boxes in zip(arr, check_boxes(boxes, arr.shape[0], single_map=False)):
            best = best_ious(score_map, gt_boxes, self.maxboxacc.thresholds, self.convention)
            self.maxboxacc.accumulate(best)
            self.maxboxaccv2.accumulate(best)

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
