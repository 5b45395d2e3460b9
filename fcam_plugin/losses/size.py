"""Size prior: every region keeps a non-zero size, enforced by a log-barrier extension."""

from __future__ import annotations

import math

import torch
from torch import nn

from .._checks import check_positive, describe
from ..defaults import BARRIER_FACTOR, BARRIER_T0, BARRIER_T_MAX

__all__ = ["BarrierSchedule", "LogBarrierSize", "log_barrier", "log_barrier_size"]


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    r"""Log-barrier extension (Kervadec et al., 2019) of the constraint :math:`z \le 0`.

    .. math::
        \tilde\psi_t(z) = \begin{cases} -\frac{1}{t}\log(-z) & z \le -\frac{1}{t^2} \\
        t z - \frac{1}{t}\log\frac{1}{t^2} + \frac{1}{t} & \text{otherwise} \end{cases}

    Continuous and differentiable, linear (never Inf) where the constraint is violated.
    """
    check_positive("t", t)
    # float64 and log(1/t^2) = -2 log(t): finite values and gradients for any t > 0 (a float32
    # t * z overflows past t ~ 1e38, and t**2 raises OverflowError past t ~ 1e154).
    z64 = z.double()
    edge = -((1.0 / t) ** 2)
    inside = -torch.log((-z64).clamp_min(max(-edge, 1e-300))) / t  # clamp keeps the unused branch finite
    outside = t * z64 + 2.0 * math.log(t) / t + 1.0 / t
    return torch.where(z64 <= edge, inside, outside).to(z.dtype)


def log_barrier_size(probs: torch.Tensor, t: float) -> torch.Tensor:
    r"""F-CAM's absolute size constraint :math:`\sum_p S^r_p \ge 0` for every region r.

    Each region's total probability mass is kept away from zero by the log-barrier extension of
    :math:`-\sum_p S^r_p \le 0`, averaged over images and regions.

    Args:
        probs: ``(B, K, H, W)`` soft segmentation (softmax output).
        t: barrier parameter (larger = closer to the hard constraint).

    Returns:
        Scalar loss.
    """
    if probs.ndim != 4:
        raise ValueError(f"`probs` must have shape (B, K, H, W), got {describe(probs)}.")
    sizes = probs.float().sum(dim=(2, 3))
    return log_barrier(-sizes, t).mean()


class LogBarrierSize(nn.Module):
    """Module twin of :func:`log_barrier_size`; ``t`` is passed per call (it follows a schedule)."""

    def forward(self, probs: torch.Tensor, t: float) -> torch.Tensor:
        return log_barrier_size(probs, t)


class BarrierSchedule:
    """The barrier parameter t: starts at ``t0``, multiplied by ``factor`` every epoch, capped at ``t_max``."""

    def __init__(self, t0: float = BARRIER_T0, factor: float = BARRIER_FACTOR, t_max: float = BARRIER_T_MAX) -> None:
        for name, value in (("t0", t0), ("factor", factor), ("t_max", t_max)):
            check_positive(name, value)
        self.t0, self.factor, self.t_max = t0, factor, t_max

    def __call__(self, epoch: int) -> float:
        return min(self.t0 * self.factor**epoch, self.t_max)

    def __repr__(self) -> str:
        return f"BarrierSchedule(t0={self.t0}, factor={self.factor}, t_max={self.t_max})"
