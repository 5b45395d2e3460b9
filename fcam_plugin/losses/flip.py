"""Flip consistency: the decoder's map of a mirrored image should be the mirror of its map."""

from __future__ import annotations

import torch
from torch import nn

from .._checks import describe

__all__ = ["FlipConsistency", "flip_consistency"]


def flip_consistency(foreground: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
    r"""Mean squared difference between the foreground probability and that of the mirrored image.

    .. math::
        \mathcal{L} = \frac{1}{N}\sum_p \left(S_p - \overleftrightarrow{S'}_p\right)^2

    where :math:`S'` is the map of the horizontally mirrored image, mirrored back. Seeds, CRF and
    size say nothing about the pixels far from the seeds, where the decoder is free to make errors
    that depend on the image's orientation; this term removes them. The training objective passes
    ``mirrored`` without gradient, as a target.

    Args:
        foreground: foreground probability ``(B, H, W)`` or ``(B, 1, H, W)`` of the images.
        mirrored: the same for the mirrored images, as the decoder returned it (not mirrored back).

    Returns:
        Scalar loss.
    """
    if not isinstance(foreground, torch.Tensor) or not isinstance(mirrored, torch.Tensor) or foreground.shape != mirrored.shape:
        raise ValueError(
            f"`foreground` and `mirrored` must be tensors of one shape, got {describe(foreground)} and {describe(mirrored)}."
        )
    return (foreground.float() - mirrored.float().flip(-1)).pow(2).mean()


class FlipConsistency(nn.Module):
    """Module twin of :func:`flip_consistency`."""

    def forward(self, foreground: torch.Tensor, mirrored: torch.Tensor) -> torch.Tensor:
        return flip_consistency(foreground, mirrored)
