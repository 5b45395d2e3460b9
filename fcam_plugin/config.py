"""Hyper-parameters of F-CAM training, with the reference recipe as defaults."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ._checks import check_choice, check_positive
from .defaults import (
    ANCHOR_STEPS,
    ANCHOR_WEIGHT,
    BARRIER_FACTOR,
    BARRIER_T0,
    BARRIER_T_MAX,
    BG_PERCENTILE,
    CAM_GATE,
    CAM_WEIGHT,
    CRF_WEIGHT,
    DECODER_CHANNELS,
    FG_CONFIDENCE_POWER,
    FG_CONFIDENCE_QUANTILE,
    FG_EROSION,
    FG_SEED_POWER,
    FLIP_AVERAGE,
    FLIP_WEIGHT,
    GATE_DILATION,
    GATE_RIVALS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LR_SCHEDULE,
    N_BG,
    N_FG,
    SEED_FLIP,
    SEED_FUSION,
    SEED_LAYERS,
    SEED_PATCH,
    SELF_TRAINING_FROM,
    SIGMA_RGB,
    SIGMA_XY,
    SIZE_WEIGHT,
)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "LR_SCHEDULE_CHOICES", "SEED_FUSION_CHOICES", "SEED_LAYER_CHOICES", "FCAMConfig"]

#: Accepted values of :attr:`FCAMConfig.seed_layers`, :attr:`FCAMConfig.seed_fusion` and
#: :attr:`FCAMConfig.lr_schedule`.
SEED_LAYER_CHOICES = ("target", "stages")
SEED_FUSION_CHOICES = ("product", "mean")
LR_SCHEDULE_CHOICES = ("constant", "cosine")



@dataclass
class FCAMConfig:
    """Everything that shapes the decoder and its training (saved in checkpoints).

    Defaults follow the paper's reference run (CUB, 224 px, ResNet-50), except where the ablations
    of ``benchmarks/README.md`` measured a better choice (``seed_layers``, ``lr_schedule``,
    ``flip_weight``, ``anchor_weight``, ``fg_seed_power``, ``fg_confidence_power``).

    Attributes:
        decoder_channels: U-Net up-block widths, from the deepest.
        n_fg / n_bg: foreground / background seeds sampled per image and step.
        seed_patch: side of the square each seed grows to.
        fg_erosion: erosion kernel applied to the Otsu foreground region.
        bg_percentile: CAM percentile below which pixels are background candidates.
        fg_seed_power: foreground seeds are drawn with probability ∝ ``CAM ** fg_seed_power``
            inside their candidate region, favouring the CAM's surest pixels (default 2); 0:
            uniformly, as in the paper.
        fg_confidence_power: each image's foreground seeds weigh ``p ** fg_confidence_power`` in
            the seeds' cross-entropy, ``p`` the classifier's softmax probability of the labelled
            class: the seeds of images the classifier is unsure of, whose CAM more often misses
            the object, count less (a weighted mean: the loss keeps its scale). Default 1; 0: all
            weigh 1, as in the paper.
        fg_confidence_quantile: images whose ``p`` is below this quantile of ``p`` over the
            training set get no foreground seeds (their background seeds stay). ``fit`` measures
            the quantile in one forward pass over the loader before the first step (no gradient;
            all processes' images under torch.distributed) and keeps it in the checkpoint. A
            quantile is relative: it also ranks the images of a classifier that is sure of nearly
            all of them, where ``p ** fg_confidence_power`` barely differs. 0 (default): none is
            left out.
        seed_flip: draw the seeds from the seed CAM averaged over the image and its horizontal
            mirror (the wrapped method runs on both: one more of its passes per step), which
            removes errors of the CAM that depend on the orientation.
        seed_layers: which CAM the seeds come from: ``"stages"`` (default: the wrapped method
            evaluated separately at the classifier's stages of stride 8 and 16 and at its target
            layers, fused by ``seed_fusion``) or ``"target"`` (its target layers only, as in the paper).
            Transformers given with a ``reshape_transform`` always use ``"target"``.
        seed_fusion: how per-stage CAMs are fused: ``"product"`` (as RefineCAM) or ``"mean"``.
        align_cams: upsample CAMs for the seeds with each cell at its receptive-field centre
            instead of the half-pixel grid (see :mod:`fcam_plugin.alignment`).
        crf_weight: lambda of the dense CRF loss (sum convention, exact-valued loss; the paper's
            2e-9 was tuned on a lattice returning ~0.56x the exact value). 0 disables the term.
        sigma_xy / sigma_rgb: bilateral kernel widths (pixels / RGB levels in 0..255).
        crf_method: "auto", "lattice" or "exact" (see ``fcam_plugin.losses.dense_crf_loss``).
        size_weight: weight of the log-barrier size term; 0 disables it.
        cam_gate: when to multiply the decoder's foreground probability by the class gate
            (:func:`fcam_plugin.class_gate.class_gate`): the seed CAM (``seed_layers``) of the
            requested class over the strongest of it and the CAMs of ``gate_rivals`` rival classes,
            all dilated by ``gate_dilation``. The gated map follows ``targets`` / ``class_idx`` and
            fades on objects where a rival class's evidence wins, at the cost of the wrapped
            method's backward pass for 1 + ``gate_rivals`` classes at every call. ``"auto"``
            (default): whenever the caller names classes (``targets``, ``class_idx``,
            ``maps(x, classes)``); without them, one class-agnostic map (the paper's), with no
            backward pass. ``True``: always (no classes: the predicted ones). ``False``: never.
        flip_average: at inference, average the decoder's foreground probability over the image
            and its horizontal mirror (two passes of the classifier's features and the decoder,
            twice the call's cost); off by default, see ``benchmarks/README.md`` ("Test-time flip
            and flip consistency").
        gate_dilation: side of the gate's pooling window (a max, then a mean), as a fraction of
            the image side (0: the CAMs themselves, undilated).
        gate_rivals: how many rival classes the gate weighs the requested class against: the
            classifier's best-scoring classes other than the requested one (int >= 1).
        self_training_from: from this epoch on (1-based), seeds are drawn from √(decoder
            probability × seed CAM), where the decoder and the CAM agree; 0 (default): never.
        cam_weight: weight of the CAM prior (:func:`fcam_plugin.losses.cam_prior`), which keeps the
            seed CAM's graded ranking where seeds and colours say nothing; 0 disables it.
        flip_weight: weight of the flip-consistency term (:func:`fcam_plugin.losses.flip_consistency`):
            the decoder's map of the mirrored image must be the mirror of its map, which removes
            errors that depend on the orientation. Costs one more classifier forward and decoder
            forward per step, both without gradient (the mirrored map is the target). 0 disables it.
        anchor_weight / anchor_steps: the early-learning anchor. The seeds' partial cross-entropy
            first teaches the decoder what most seeds agree on; with more steps it also fits the
            seeds that miss the object, and the map grows to the seed CAM's blob. At the end of the
            first epoch that completes ``anchor_steps`` or more optimisation steps, a frozen copy of
            the decoder is kept, and every later step adds ``anchor_weight`` times the BCE between
            the decoder's map and the copy's (:func:`fcam_plugin.losses.soft_target_bce`): one more
            decoder forward per step, without gradient. 0 disables it.
        barrier_t0 / barrier_factor / barrier_t_max: barrier parameter t, per epoch
            ``min(t0 * factor**epoch, t_max)``.
        lr / momentum / nesterov / weight_decay: the default SGD optimiser.
        lr_schedule: learning rate of the default optimiser over the fit: ``"cosine"`` (default:
            decayed from ``lr`` to 0 over all the steps of ``fit``) or ``"constant"`` (the paper).
        mean / std: normalisation of the classifier's inputs, undone to get RGB for the CRF.
    """

    decoder_channels: tuple[int, ...] = DECODER_CHANNELS
    n_fg: int = N_FG
    n_bg: int = N_BG
    seed_patch: int = SEED_PATCH
    fg_erosion: int = FG_EROSION
    bg_percentile: float = BG_PERCENTILE
    fg_seed_power: float = FG_SEED_POWER
    fg_confidence_power: float = FG_CONFIDENCE_POWER
    fg_confidence_quantile: float = FG_CONFIDENCE_QUANTILE
    seed_flip: bool = SEED_FLIP
    seed_layers: str = SEED_LAYERS
    seed_fusion: str = SEED_FUSION
    align_cams: bool = False
    crf_weight: float = CRF_WEIGHT
    sigma_xy: float = SIGMA_XY
    sigma_rgb: float = SIGMA_RGB
    crf_method: str = "auto"
    size_weight: float = SIZE_WEIGHT
    cam_weight: float = CAM_WEIGHT
    flip_weight: float = FLIP_WEIGHT
    anchor_weight: float = ANCHOR_WEIGHT
    anchor_steps: int = ANCHOR_STEPS
    cam_gate: bool | str = CAM_GATE
    gate_dilation: float = GATE_DILATION
    gate_rivals: int = GATE_RIVALS
    flip_average: bool = FLIP_AVERAGE
    self_training_from: int = SELF_TRAINING_FROM
    barrier_t0: float = BARRIER_T0
    barrier_factor: float = BARRIER_FACTOR
    barrier_t_max: float = BARRIER_T_MAX
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_schedule: str = LR_SCHEDULE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        self.decoder_channels = tuple(int(c) for c in self.decoder_channels)
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        weights = ("crf_weight", "size_weight", "cam_weight", "flip_weight", "anchor_weight", "fg_seed_power", "fg_confidence_power")
        for name in (*weights, "weight_decay", "momentum"):
            check_positive(name, getattr(self, name), allow_zero=True)
        for name in ("sigma_xy", "sigma_rgb", "lr", "barrier_t0", "barrier_factor", "barrier_t_max"):
            check_positive(name, getattr(self, name))
        for name in ("align_cams", "flip_average", "seed_flip", "nesterov"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool (True or False), got {getattr(self, name)!r}.")
        if not (isinstance(self.cam_gate, bool) or self.cam_gate == "auto"):
            raise TypeError(f"`cam_gate` must be True, False or 'auto', got {self.cam_gate!r}.")
        check_choice("crf_method", self.crf_method, ("auto", "lattice", "exact"))
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULE_CHOICES)
        check_choice("seed_layers", self.seed_layers, SEED_LAYER_CHOICES)
        check_choice("seed_fusion", self.seed_fusion, SEED_FUSION_CHOICES)
        for name in ("n_fg", "n_bg", "seed_patch", "fg_erosion", "self_training_from", "gate_rivals", "anchor_steps"):
            value, least = getattr(self, name), 0 if name in ("n_fg", "n_bg", "self_training_from") else 1
            odd = name in ("seed_patch", "fg_erosion")
            if not isinstance(value, int) or isinstance(value, bool) or value < least or (odd and value % 2 == 0):
                raise ValueError(f"`{name}` must be {'an odd' if odd else 'an'} int >= {least}, got {value!r}.")
        if not isinstance(self.gate_dilation, (int, float)) or not 0 <= self.gate_dilation <= 1:
            raise ValueError(f"`gate_dilation` must be a number in [0, 1], got {self.gate_dilation!r}.")
        if not isinstance(self.fg_confidence_quantile, (int, float)) or not 0 <= self.fg_confidence_quantile < 1:
            raise ValueError(f"`fg_confidence_quantile` must be a number in [0, 1), got {self.fg_confidence_quantile!r}.")
        if not isinstance(self.bg_percentile, (int, float)) or not 0 < self.bg_percentile < 100:
            raise ValueError(f"`bg_percentile` must be in (0, 100), got {self.bg_percentile!r}.")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"`mean` and `std` must hold 3 values (std > 0), got {self.mean} and {self.std}.")
        if not self.decoder_channels or min(self.decoder_channels) < 1:
            raise ValueError(f"`decoder_channels` must be positive ints, got {self.decoder_channels}.")

    def gates(self, classes_named: bool) -> bool:
        """Whether ``cam_gate`` gates a call that names classes (``classes_named``) or not: ``"auto"`` gates only the former."""
        return self.cam_gate is True or (self.cam_gate == "auto" and classes_named)

    @contextlib.contextmanager
    def overridden(self, **changes: Any) -> Iterator[FCAMConfig]:
        """Set ``changes`` on this config inside a ``with`` block and restore the old values on exit.

        The new values are validated first (as by the constructor). For inference options read at
        every call, e.g. ``with up.config.overridden(cam_gate=True): maps = up.maps(x, y)``.
        """
        replace(self, **changes)  # raises on an unknown field or an invalid value, before any change
        before = {name: getattr(self, name) for name in changes}
        for name, value in changes.items():
            setattr(self, name, value)
        try:
            yield self
        finally:
            for name, value in before.items():
                setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (lists for tuples), safe for ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FCAMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown F-CAM config keys {unknown}; accepted: {sorted(known)}.")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
