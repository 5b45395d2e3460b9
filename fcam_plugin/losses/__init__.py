"""F-CAM's loss terms, each as a function and an ``nn.Module`` twin (kornia style)."""

from __future__ import annotations

from .cam_prior import CAMPrior, cam_prior
from .crf import DenseCRFLoss, dense_crf_loss, resolve_crf_method
from .cross_entropy import PartialCrossEntropy, partial_cross_entropy
from .flip import FlipConsistency, flip_consistency
from .size import BarrierSchedule, LogBarrierSize, log_barrier, log_barrier_size
from .soft_target import soft_target_bce

__all__ = [
    "CAMPrior",
    "BarrierSchedule",
    "DenseCRFLoss",
    "FlipConsistency",
    "LogBarrierSize",
    "PartialCrossEntropy",
    "cam_prior",
    "dense_crf_loss",
    "flip_consistency",
    "log_barrier",
    "log_barrier_size",
    "partial_cross_entropy",
    "resolve_crf_method",
    "soft_target_bce",
]
