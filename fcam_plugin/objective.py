"""F-CAM's training objective for one batch: seeds from the CAM, then partial CE + dense CRF + size.

Knows the decoder, the feature taps, the seed source and the config; nothing of the loop around it.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from .adapters.base import CAMSource, normalize_per_image
from .alignment import upsample_aligned
from .confidence import foreground_weights, label_confidence
from .config import FCAMConfig
from .decoder import foreground_probability
from .distributed import all_reduce_sum, global_batch_slice, rank_and_world
from .errors import UnsupportedLayersError
from .losses.cam_prior import cam_prior
from .losses.crf import dense_crf_loss
from .losses.cross_entropy import partial_cross_entropy
from .losses.flip import flip_consistency
from .losses.size import log_barrier_size
from .losses.soft_target import soft_target_bce
from .seeds import IGNORE_INDEX, sample_seeds
from .taps import FeatureTaps

__all__ = ["Objective", "unnormalize"]


def unnormalize(images: torch.Tensor, config: FCAMConfig) -> torch.Tensor:
    """RGB in 0..255 ``(B, 3, H, W)`` from images normalised with the config's mean and std."""
    mean = torch.tensor(config.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=images.device).view(1, 3, 1, 1)
    return ((images.float() * std + mean) * 255).clamp(0, 255)


class Objective:
    """The loss terms of one training step.

    Args:
        config: the loss weights and seed parameters.
        source: the wrapped CAM method, giving the CAMs the seeds are drawn from.
        seed_layers: with ``config.seed_layers == "stages"``, the layers the wrapped method is
            evaluated at (their CAMs fused by ``config.seed_fusion``).
        offsets: ``layers -> [(dy, dx)]``, the receptive-field offsets used to upsample CAMs when
            ``config.align_cams`` (see :mod:`fcam_plugin.alignment`); ``None``: no alignment.
    """

    def __init__(
        self,
        config: FCAMConfig,
        source: CAMSource,
        seed_layers: Sequence[nn.Module] = (),
        offsets: Callable[[Sequence[nn.Module]], list[tuple[float, float]]] | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.seed_layers = list(seed_layers)
        self.offsets = offsets if config.align_cams else None
        self.stages = config.seed_layers == "stages" and len(self.seed_layers) > 1

    def _aligned_layers(self) -> list[nn.Module]:
        if self.stages:
            return self.seed_layers
        return list(self.source.target_layers) if len(self.source.target_layers) == 1 else []

    def prepare(self) -> None:
        """Measure the receptive-field offsets now (one probe of the model) if alignment needs them."""
        if self.offsets is not None and self._aligned_layers():
            self.offsets(self._aligned_layers())

    def _upsample(self, cams: Sequence[torch.Tensor], layers: Sequence[nn.Module], size: Sequence[int]) -> list[torch.Tensor]:
        """Each CAM at input size, at its layer's receptive-field centres when aligning."""
        offsets = self.offsets(layers) if self.offsets is not None and layers else [(0.0, 0.0)] * len(cams)
        return [upsample_aligned(c.float(), size, o).clamp(0, 1) for c, o in zip(cams, offsets)]

    def seed_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The map seeds are drawn from: CAMs of ``labels`` ``(B, 1, H, W)`` in [0, 1] at input size.

        The model's first forward pass inside this call is on ``images`` (skip features are read from it).
        """
        size = images.shape[-2:]
        if self.stages:
            try:
                per_layer = self.source.layer_cams(images, labels, self.seed_layers)
            except torch.OutOfMemoryError:
                raise
            except (UnsupportedLayersError, RuntimeError) as error:
                # e.g. ShapleyCAM's second derivative through a later block without one (hardsigmoid):
                # the method may still work at the target layers, which the fallback below tries.
                self.stages = False
                warnings.warn(
                    f"seed_layers='stages': the wrapped method failed at the stage layers ({error}); the seeds "
                    "come from the target layers only (seed_layers='target').", UserWarning, stacklevel=2,
                )
            else:
                stacked = torch.nan_to_num(torch.stack(self._upsample(per_layer, self.seed_layers, size)), nan=0.0)
                fused = stacked.prod(0) if self.config.seed_fusion == "product" else stacked.mean(0)
                return normalize_per_image(fused).clamp(0, 1)
        low = self.source.cams(images, labels)
        # Several target layers are fused by the library at input size: only a single one is aligned.
        layers = self._aligned_layers()
        # NaN CAMs (a model producing NaN) would crash seed sampling: treat them as flat, the loss flags it.
        return torch.nan_to_num(self._upsample([low], layers, size)[0], nan=0.0).clamp(0, 1)

    def training_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The map training seeds are drawn from: :meth:`seed_cams`, averaged with the mirror of the
        mirrored image's when ``config.seed_flip``. The first forward pass is still on ``images``.
        """
        cams = self.seed_cams(images, labels)
        if not self.config.seed_flip:
            return cams
        mirrored = self.seed_cams(images.flip(-1), labels).flip(-1)
        return normalize_per_image((cams + mirrored) / 2).clamp(0, 1)

    def cams_and_features(
        self, taps: FeatureTaps, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The training CAMs of ``labels`` ``(B, 1, H, W)`` and the skip features of the images' forward."""
        self.prepare()  # before arming: the first forward after arm() must be on the images
        taps.arm()
        cams = self.training_cams(images, labels)
        return cams, taps.collect()

    def sample(self, seed_map: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Seeds ``(B, H, W)`` drawn from ``seed_map`` ``(B, 1, H, W)`` with the config's seed parameters."""
        cfg = self.config
        offset, total = global_batch_slice(seed_map.shape[0], seed_map.device)  # (0, B) outside torch.distributed
        return sample_seeds(
            seed_map, cfg.n_fg, cfg.n_bg, cfg.seed_patch, cfg.fg_erosion, cfg.bg_percentile,
            generator=generator, batch_offset=offset, batch_total=total, fg_power=cfg.fg_seed_power,
        )

    def mirrored_features(self, taps: FeatureTaps, images: torch.Tensor) -> list[torch.Tensor] | None:
        """The skip features of the mirrored images, for the flip-consistency term (None when it is off)."""
        if self.config.flip_weight <= 0:
            return None
        with torch.no_grad(), self.source._own_forwards():  # not recorded by torchcam's input capture
            return taps.forward(images.flip(-1))[1]

    @staticmethod
    def decode(
        decoder: nn.Module, features: list[torch.Tensor], mirrored: list[torch.Tensor] | None, size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder logits of the images and, when given their features, of the mirrored images.

        The mirrored pass is a target (no gradient), run on the bare decoder: under DDP its
        parameters are used once per step, as the reducer requires.
        """
        logits = decoder(features, size)
        if mirrored is None:
            return logits, None
        with torch.no_grad():
            return logits, getattr(decoder, "module", decoder)(mirrored, size)

    @property
    def reads_confidence(self) -> bool:
        """Whether the seeds' weights need the classifier's confidence in the label."""
        return self.config.fg_confidence_power > 0 or self.config.fg_confidence_quantile > 0

    @staticmethod
    def seed_weights(seeds: torch.Tensor, fg_weights: torch.Tensor | None) -> torch.Tensor | None:
        """Per-pixel weights of the seeds' cross-entropy: each image's ``fg_weights`` ``(B,)`` on its
        foreground seeds, 1 on background seeds, 0 elsewhere (None: every seed weighs 1)."""
        if fg_weights is None:
            return None
        foreground = fg_weights.view(-1, 1, 1)
        return torch.where(seeds == 1, foreground, torch.ones_like(foreground)) * (seeds != IGNORE_INDEX)

    @staticmethod
    def anchor_map(anchor: nn.Module | None, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor | None:
        """The frozen anchor decoder's foreground probability ``(B, 1, H, W)`` (None without an anchor)."""
        if anchor is None:
            return None
        with torch.no_grad():
            return foreground_probability(anchor(features, size))[:, None]

    def terms(
        self, logits: torch.Tensor, seeds: torch.Tensor, images: torch.Tensor, t: float,
        cams: torch.Tensor | None = None, mirrored_logits: torch.Tensor | None = None,
        anchored: torch.Tensor | None = None, fg_weights: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The weighted loss terms and their sum (``total``) for the decoder's ``logits``.

        ``cams`` ``(B, 1, H, W)``: the seed CAMs, needed by the CAM prior (``config.cam_weight > 0``);
        ``mirrored_logits``: the decoder's logits of the mirrored images, for the flip-consistency
        term (``config.flip_weight > 0``); ``fg_weights`` ``(B,)``: the weight of each image's
        foreground seeds (:func:`fcam_plugin.confidence.foreground_weights`; None: all weigh 1).
        """
        cfg = self.config
        probs = logits.float().softmax(1)
        # Normalise by the global seed count (or weight) so that DDP's gradient average equals one big batch.
        _, world = rank_and_world()
        weights = self.seed_weights(seeds, fg_weights)
        seed_count = all_reduce_sum((seeds != IGNORE_INDEX).sum() if weights is None else weights.sum()).float() / world
        terms = {"pce": partial_cross_entropy(logits, seeds, count=seed_count, weights=weights)}
        if cfg.crf_weight > 0:
            terms["crf"] = dense_crf_loss(
                probs, unnormalize(images, cfg), sigma_xy=cfg.sigma_xy, sigma_rgb=cfg.sigma_rgb,
                weight=cfg.crf_weight, method=cfg.crf_method,
            )
        if cfg.size_weight > 0:
            terms["size"] = cfg.size_weight * log_barrier_size(probs, t)
        if cfg.cam_weight > 0 and cams is not None:
            terms["cam"] = cfg.cam_weight * cam_prior(probs[:, 1:2], cams)
        if cfg.flip_weight > 0 and mirrored_logits is not None:
            terms["flip"] = cfg.flip_weight * flip_consistency(probs[:, 1], foreground_probability(mirrored_logits))
        if cfg.anchor_weight > 0 and anchored is not None:
            terms["anchor"] = cfg.anchor_weight * soft_target_bce(probs[:, 1:2], anchored)
        terms["total"] = sum(terms.values())  # type: ignore[assignment]
        return terms

    def __call__(
        self,
        decoder: nn.Module,
        taps: FeatureTaps,
        images: torch.Tensor,
        labels: torch.Tensor,
        t: float,
        generator: torch.Generator | None,
        amp: bool = False,
        self_train: bool = False,
        anchor: nn.Module | None = None,
        confidence_floor: float = 0.0,
    ) -> dict[str, torch.Tensor]:
        """Loss terms of one step (``total`` included) for a batch already on the model's device.

        ``self_train``: draw the seeds from √(decoder probability × seed CAM), where the decoder and
        the CAM agree, instead of from the seed CAM (``config.self_training_from``); ``anchor``: the
        decoder frozen by the early-learning anchor (``config.anchor_weight``; None before);
        ``confidence_floor``: images whose confidence in the label is below it get no foreground
        seeds (``config.fg_confidence_quantile``, measured by the training loop before the fit).
        """
        cams, features = self.cams_and_features(taps, images, labels)
        fg_weights = None
        if self.reads_confidence:
            confidence = label_confidence(taps.output, labels)
            fg_weights = foreground_weights(confidence, self.config.fg_confidence_power, confidence_floor)
        mirrored = self.mirrored_features(taps, images)
        autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
        with autocast:
            size = (images.shape[-2], images.shape[-1])
            logits, mirrored_logits = self.decode(decoder, features, mirrored, size)
            anchored = self.anchor_map(anchor, features, size)
        seed_map = cams
        if self_train:
            seed_map = normalize_per_image((foreground_probability(logits.detach())[:, None] * cams).sqrt()).clamp(0, 1)
        seeds = self.sample(seed_map, generator)
        return self.terms(logits, seeds, images, t, cams, mirrored_logits, anchored, fg_weights)
