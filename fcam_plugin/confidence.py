"""The classifier's confidence in the labelled class, and what the seeds make of it.

Where the classifier is unsure of an image's label, the CAM of that label more often misses the
object, and so do the foreground seeds drawn from it (measured in benchmarks/README.md, "Foreground
seeds weighted by the classifier's confidence"). The objective weighs each image's foreground seeds
by ``p ** power``, and gives none to images under the fit's confidence floor: a quantile of ``p``
over the training set, read once before the first step.
"""

from __future__ import annotations

import torch

from ._checks import describe
from .distributed import all_gather_cat

__all__ = ["foreground_weights", "label_confidence", "quantile_floor"]


def label_confidence(scores: object, labels: torch.Tensor) -> torch.Tensor:
    """The classifier's softmax probability of ``labels`` ``(B,)`` in its ``scores`` ``(B, K)``."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise ValueError(
            f"`fg_confidence_power` and `fg_confidence_quantile` read the classifier's softmax, which needs "
            f"class scores (B, K) as the model's output; got {describe(scores)}. Set both to 0."
        )
    return scores.detach().float().softmax(1).gather(1, labels.view(-1, 1).long())[:, 0]


def foreground_weights(confidence: torch.Tensor, power: float, floor: float = 0.0) -> torch.Tensor:
    """Weight of each image's foreground seeds ``(B,)``: ``confidence ** power``, 0 under ``floor``."""
    return confidence ** power * (confidence >= floor)


def quantile_floor(confidences: torch.Tensor, quantile: float) -> float:
    """The ``quantile`` of the confidences of every process (all of them under torch.distributed)."""
    values = all_gather_cat(confidences.float().reshape(-1))
    if values.numel() == 0:
        raise ValueError("`loader` yielded no images to measure the classifier's confidence on.")
    return float(torch.quantile(values.double().cpu(), quantile))
