"""Binary cross-entropy to a soft target map: the form of the CAM prior and the early-learning anchor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import describe

__all__ = ["soft_target_bce"]


def soft_target_bce(foreground: torch.Tensor, target: torch.Tensor, target_name: str = "target") -> torch.Tensor:
    """Binary cross-entropy between a foreground probability and a soft target map of the same shape.

    Averaged over pixels; the target is not differentiated. The CAM prior (target: the seed CAM) and
    the early-learning anchor (target: the map of the decoder frozen after its first epochs) use it.
    ``target_name``: how a shape error names the target (the caller's argument).
    """
    if not isinstance(foreground, torch.Tensor) or not isinstance(target, torch.Tensor) or foreground.shape != target.shape:
        raise ValueError(
            f"`foreground` and `{target_name}` must be tensors of one shape (B, 1, H, W), got {describe(foreground)} "
            f"and {describe(target)}."
        )
    with torch.autocast(foreground.device.type, enabled=False):
        return F.binary_cross_entropy(foreground.float().clamp(1e-6, 1 - 1e-6), target.detach().float().clamp(0, 1))
