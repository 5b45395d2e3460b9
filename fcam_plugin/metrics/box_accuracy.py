"""MaxBoxAcc and MaxBoxAccV2: box accuracy at the best CAM threshold (streaming)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._inputs import check_boxes, check_convention, check_maps
from ._levels import best_ious
from .boxes import cam_thresholds

__all__ = ["MaxBoxAcc", "MaxBoxAccV2"]


def _check_iou_thresholds(iou_thresholds: Sequence[float]) -> tuple[float, ...]:
    """Validate the IoU thresholds: a non-empty sequence of numbers in (0, 1]."""
    ious = tuple(iou_thresholds)
    if not ious or any(not isinstance(t, (int, float)) or isinstance(t, bool) or not 0 < t <= 1 for t in ious):
        raise ValueError(f"`iou_thresholds` must be a non-empty sequence of numbers in (0, 1], got {ious!r}.")
    return ious


class _BoxAccuracy:
    """Shared machinery of MaxBoxAcc and MaxBoxAccV2 (one correct counter per threshold pair)."""

    _all_candidates: bool = False

    def __init__(self, num_thresholds: int, iou_thresholds: Sequence[float], convention: str) -> None:
        self.thresholds = cam_thresholds(num_thresholds)
        self.iou_thresholds = _check_iou_thresholds(iou_thresholds)
        self.convention = check_convention(convention)
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
        arr = check_maps(maps)
        for score_map, gt_boxes in zip(arr, check_boxes(boxes, arr.shape[0], single)):
            self.accumulate(best_ious(score_map, gt_boxes, self.thresholds, self.convention))

    def accumulate(self, best: np.ndarray) -> None:
        """Count one image from its ``(2, T)`` best IoUs (row 0: largest candidate, row 1: all)."""
        row = best[1 if self._all_candidates else 0]
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
    """MaxBoxAcc (v1): box of the largest candidate, IoU >= ``iou_threshold``, best threshold.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_threshold: IoU needed for a correct box (default 0.5).
        convention: ``"wsolevaluation"`` (default) — the largest OpenCV contour by polygon area,
            exactly as the reference code; or ``"components"`` — the 8-connected component with
            most pixels, no OpenCV needed. See the module documentation.

    Raises:
        ValueError: invalid ``num_thresholds``, ``iou_threshold`` or ``convention``.
        ImportError: ``convention="wsolevaluation"`` without OpenCV.

    Example:
        >>> m = MaxBoxAcc()
        >>> cam = np.zeros((16, 16), np.float32); cam[2:6, 3:9] = 1
        >>> m.update(cam, np.array([[3, 2, 9, 6]]))
        >>> m.summary()["maxboxacc"]
        1.0
    """

    _all_candidates = False

    def __init__(
        self, num_thresholds: int = 1000, iou_threshold: float = 0.5, convention: str = "wsolevaluation"
    ) -> None:
        super().__init__(num_thresholds, (iou_threshold,), convention)

    def summary(self) -> dict[str, float]:
        """Return ``{"maxboxacc": acc, "maxboxacc_threshold": best CAM threshold}``.

        Raises:
            RuntimeError: nothing accumulated yet.
        """
        acc = self.accuracies()[0]
        best = int(np.argmax(acc))
        return {"maxboxacc": float(acc[best]), "maxboxacc_threshold": float(self.thresholds[best])}


class MaxBoxAccV2(_BoxAccuracy):
    """MaxBoxAccV2: boxes of all candidates, mean over IoU thresholds of the best accuracy.

    Args:
        num_thresholds: number of CAM thresholds over [0, 1) (default 1000).
        iou_thresholds: IoU thresholds (default 0.3, 0.5, 0.7).
        convention: ``"wsolevaluation"`` (default) — every OpenCV contour is a candidate, holes
            included, exactly as the reference code; or ``"components"`` — the 8-connected
            components only, no OpenCV needed.

    Raises:
        ValueError: invalid ``num_thresholds``, ``iou_thresholds`` or ``convention``.
        ImportError: ``convention="wsolevaluation"`` without OpenCV.

    Example:
        >>> m = MaxBoxAccV2()
        >>> cam = np.zeros((16, 16), np.float32); cam[2:6, 3:9] = 1
        >>> m.update(cam, np.array([[3, 2, 9, 6]]))
        >>> m.summary()["maxboxaccv2"]
        1.0
    """

    _all_candidates = True

    def __init__(
        self,
        num_thresholds: int = 1000,
        iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
        convention: str = "wsolevaluation",
    ) -> None:
        super().__init__(num_thresholds, iou_thresholds, convention)

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
