"""CAM prior: the decoder keeps the CAM's graded ranking where seeds and colours say nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import describe

__all__ = ["CAMPrior", "cam_prior", "soft_target_bce"]


def soft_target_bce(foreground: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy between a foreground probability and a soft target map of the same shape.

    Averaged over pixels; the target is not differentiated. The CAM prior (target: the seed CAM) and
    the early-learning anchor (target: the map of the decoder frozen after its first epochs) use it.
    """
    if not isinstance(foreground, torch.Tensor) or not isinstance(target, torch.Tensor) or foreground.shape != target.shape:
        raise ValueError(
            f"`foreground` and `target` must be tensors of one shape (B, 1, H, W), got {describe(foreground)} "
            f"and {describe(target)}."
        )
    with torch.autocast(foreground.device.type, enabled=False):
        return F.binary_cross_entropy(foreground.float().clamp(1e-6, 1 - 1e-6), target.detach().float().clamp(0, 1))


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
    return soft_target_bce(foreground, cams)


class CAMPrior(nn.Module):
    """Module twin of :func:`cam_prior`."""

    def forward(self, foreground: torch.Tensor, cams: torch.Tensor) -> torch.Tensor:
        return cam_prior(foreground, cams)
