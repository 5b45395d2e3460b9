"""CAM prior: the decoder keeps the CAM's graded ranking where seeds and colours say nothing."""

from __future__ import annotations

import torch
from torch import nn

from .soft_target import soft_target_bce

__all__ = ["CAMPrior", "cam_prior"]


def cam_prior(foreground: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy between the foreground probability and the CAM, averaged over pixels.

    .. math::
        \mathcal{L} = -\frac{1}{N}\sum_p c_p \log S_p + (1 - c_p) \log (1 - S_p)

    The seeds' partial cross-entropy drives seeded pixels to 0 or 1; with nothing else, the
    decoder turns the rest into the same hard region (a binary map, which PxAP scores low). A small
    weight on this term keeps the CAM's ordering of the unseeded pixels.

    Args:
        foreground: foreground probability ``(B, 1, H, W)`` in [0, 1].
        cams: CAM ``(B, 1, H, W)`` in [0, 1] at the same size (a target: not differentiated).

    Returns:
        Scalar loss.
    """
    return soft_target_bce(foreground, cams, target_name="cams")


class CAMPrior(nn.Module):
    """Module twin of :func:`cam_prior`."""

    def forward(self, foreground: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        return cam_prior(foreground, cams)
