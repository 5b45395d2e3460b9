"""Partial cross-entropy: cross-entropy on the seed pixels only."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import describe
from ..seeds import IGNORE_INDEX

__all__ = ["PartialCrossEntropy", "partial_cross_entropy"]


def partial_cross_entropy(
    logits: torch.Tensor,
    seeds: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    count: torch.Tensor | float | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Mean cross-entropy over the pixels that carry a seed.

    .. math:: \mathcal{H} = \frac{1}{|\Omega'|} \sum_{p \in \Omega'} -\log S_p[Y_p]

    With ``weights`` :math:`w_p`, the weighted mean :math:`\sum w_p (-\log S_p[Y_p]) / \sum w_p`
    over the seed pixels.

    Args:
        logits: ``(B, K, H, W)`` unnormalised scores.
        seeds: ``(B, H, W)`` long labels in ``[0, K)`` or ``ignore_index``.
        ignore_index: label of pixels without a seed.
        count: number of seed pixels (with ``weights``: their total weight) to divide by
            (default: those in ``seeds``; distributed training passes the global count).
        weights: ``(B, H, W)`` non-negative weight of each pixel's term (default: 1 everywhere).

    Returns:
        Scalar loss; 0 (with a gradient path) when no pixel carries a seed.
    """
    if logits.ndim != 4 or seeds.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"`logits` (B, K, H, W) and `seeds` (B, H, W) must match, got {describe(logits)} and "
            f"{describe(seeds)}."
        )
    if weights is not None and weights.shape != seeds.shape:
        raise ValueError(f"`weights` must have the shape of `seeds` {tuple(seeds.shape)}, got {describe(weights)}.")
    labelled = seeds != ignore_index
    if weights is None:
        total = F.cross_entropy(logits.float(), seeds, ignore_index=ignore_index, reduction="sum")
        own_count, floor = labelled.sum(), 1.0  # a number of pixels
    else:
        per_pixel = F.cross_entropy(logits.float(), seeds, ignore_index=ignore_index, reduction="none")
        weights = weights.float() * labelled
        total, own_count, floor = (weights * per_pixel).sum(), weights.sum(), 1e-12  # a total weight, maybe below 1
    count = own_count if count is None else count
    return total / torch.as_tensor(count, device=total.device).clamp_min(floor)


class PartialCrossEntropy(nn.Module):
    """Module twin of :func:`partial_cross_entropy`."""

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
        return partial_cross_entropy(logits, seeds, self.ignore_index)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}"
