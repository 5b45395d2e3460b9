"""PxAP: pixel-wise average precision of score maps against masks (streaming)."""

from __future__ import annotations

import numpy as np

from ._inputs import check_maps, check_masks
from .boxes import cam_thresholds

__all__ = ["PxAP"]


def histogram_bins(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Histogram bin of each score, with the edges ``thresholds + [1, 2, 3]`` of :class:`PxAP`.

    Bin ``i`` holds ``edges[i] <= v < edges[i + 1]``: the bins of
    ``np.histogram(values, bins=edges)`` for scores in [0, 1], a score exactly on an edge going
    to the bin that starts there. Scores are compared with the edges in float64 whatever their
    dtype (float16/float32 convert exactly), so nothing moves across an edge by rounding.
    ``floor(v * T)`` is within one bin of the answer; one comparison each way fixes it.

    Args:
        values: scores in [0, 1], any shape and floating dtype.
        thresholds: the ``T`` uniform CAM thresholds ``k / T`` (:func:`cam_thresholds`).

    Returns:
        int array of bin indices in ``[0, T]``, flattened.
    """
    num = len(thresholds)
    edges = np.append(thresholds, [1.0, 2.0, 3.0])
    v = values.astype(np.float64, copy=False).ravel()
    index = (v * num).astype(np.intp)
    np.minimum(index, num, out=index)
    index -= edges[index] > v
    index += edges[index + 1] <= v
    return index


class PxAP:
    """Pixel-wise average precision of score maps against binary masks (streaming).

    Foreground and background scores are accumulated in histograms whose edges are the CAM
    thresholds ``0, 1/T, ..., (T-1)/T`` plus 1, 2 and 3 (as ``wsolevaluation``); per threshold
    TP and FP are the reversed cumulative sums and ``AP = sum_i precision_i (recall_i - recall_{i-1})``.
    Scores are binned in float64 (no float32 copy), so values exactly on an edge land like in
    the reference.

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
        arr = check_maps(maps)
        self.accumulate(arr, check_masks(masks, arr.shape, self.ignore_index))

    def accumulate(self, maps: np.ndarray, masks: np.ndarray) -> None:
        """Accumulate validated maps ``(B, H, W)`` and uint8 masks (0, 1, 255 = ignored)."""
        bins = len(self._edges) - 1
        kind = np.minimum(masks.ravel(), 2).astype(np.intp)  # 0 background, 1 foreground, 2 ignored
        counts = np.bincount(kind * bins + histogram_bins(maps, self.thresholds), minlength=3 * bins)
        self._bg_hist += counts[:bins]
        self._fg_hist += counts[bins : 2 * bins]

    def curve(self) -> tuple[np.ndarray, np.ndarray]:
        """Precision and recall per histogram edge, highest threshold first.

        Returns:
            ``(precision, recall)``, two float64 arrays of shape ``(T + 2,)``; precision is 0
            where nothing is predicted positive.

        Raises:
            RuntimeError: no foreground pixel has been seen yet.
        """
        tp = self._fg_hist[::-1].cumsum().astype(np.float64)
        fp = self._bg_hist[::-1].cumsum().astype(np.float64)
        num_fg = self._fg_hist.sum()
        if num_fg == 0:
            raise RuntimeError("PxAP: no foreground pixel accumulated; call update() with masks.")
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
        return precision, tp / num_fg

    def summary(self) -> dict[str, float]:
        """Return ``{"pxap": AP}`` with AP in [0, 1].

        Raises:
            RuntimeError: no foreground pixel has been seen yet.
        """
        precision, recall = self.curve()
        predicted = (self._fg_hist + self._bg_hist)[::-1].cumsum()[1:] > 0  # terms with TP + FP > 0
        return {"pxap": float((precision[1:] * np.diff(recall))[predicted].sum())}
