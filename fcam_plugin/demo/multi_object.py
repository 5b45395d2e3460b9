"""Several objects per image: the map of each class present, per-class PxAP and the right-object rate.

Every (image, class present) pair of a :class:`~fcam_plugin.data.MultiObjectWSOL` split is scored:
the map of that class against that class's mask, the other objects counting as background
(per-class PxAP, pooled over all pairs), and whether the map puts more mass per pixel on the
requested object than on any other object of the image (the right-object rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from ..adapters import normalize_per_image
from ..data import MultiObjectWSOL
from ..metrics import PxAP
from ..upscaler import FCAMUpscaler
from .rivals import LibraryCAM
from .settings import RIVALS, SEED_METHODS, DemoSettings

__all__ = ["PerClassScores", "score_per_class", "multi_object_scores"]

#: (images (B, 3, H, W), classes (B,)) -> maps (B, H, W).
MapsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class PerClassScores:
    """Per-class PxAP and right-object rate of one map over a multi-object split.

    Attributes:
        pxap / right_object: in [0, 1].
        samples: maps ``(classes present, H, W)`` of the first images, for the figure.
    """

    pxap: float
    right_object: float
    samples: list[torch.Tensor] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, float]:
        """The two numbers, JSON-ready."""
        return {"pxap": self.pxap, "right_object": self.right_object}


def _right_object(maps: torch.Tensor, masks: torch.Tensor, classes: list[int]) -> int:
    """How many of the maps ``(K, H, W)`` of ``classes`` have more mass per pixel on their own object than on any other."""
    area = torch.stack([masks[c].sum().clamp_min(1) for c in classes])
    right = 0
    for k in range(len(classes)):
        mass = torch.stack([(maps[k] * masks[c]).sum() for c in classes]) / area
        right += int(int(mass.argmax()) == k)
    return right


def score_per_class(fn: MapsFn, test: MultiObjectWSOL, device: torch.device, keep: int = 0) -> PerClassScores:
    """Score ``fn`` on every (image, class present) pair of ``test``; keep the maps of the first ``keep`` images."""
    metric, right, pairs, samples = PxAP(), 0, 0, []
    for i in range(len(test)):
        image, labels, masks = test[i]
        classes = labels.long()
        images = image[None].expand(len(classes), -1, -1, -1).to(device)
        maps = normalize_per_image(fn(images, classes.to(device)).detach().float().cpu())
        for k, c in enumerate(classes.tolist()):
            metric.update(maps[k], masks[c])
        right += _right_object(maps, masks, classes.tolist())
        pairs += len(classes)
        if i < keep:
            samples.append(maps)
    return PerClassScores(metric.summary()["pxap"], right / max(pairs, 1), samples)


def multi_object_scores(
    s: DemoSettings, model: nn.Module, up: FCAMUpscaler, device: torch.device
) -> tuple[dict[str, PerClassScores], dict[str, str], MultiObjectWSOL]:
    """The wrapped CAM, RefineCAM and F-CAM (class-agnostic and gated) on ``s.multi_images`` multi-object images."""
    test = MultiObjectWSOL(s.multi_images, s.image_size, s.classes, seed=s.seed, split="test", variant=s.variant)
    method = SEED_METHODS[s.seed_methods[0]][0]
    label, library, name, layers = RIVALS["refinecam"]
    refinecam = LibraryCAM(model, library, name, layers, s.image_size)

    def agnostic(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with up.config.overridden(cam_gate=False):
            return up.maps(images, classes)

    gated = "class gate (the default when classes are named)"
    fns: dict[str, tuple[str, MapsFn]] = {
        "cam": (f"{method}, layer4, interpolated (what the library returns)", up.cams),
        "refinecam": (label, refinecam),
        "fcam_agnostic": (f"F-CAM on {method} seeds, class-agnostic (cam_gate=False)", agnostic),
        "fcam": (f"F-CAM on {method} seeds, " + (gated if up.config.gates(classes_named=True) else "as configured (cam_gate=False)"), up.maps),
    }
    try:
        scores = {key: score_per_class(fn, test, device, s.figure_images) for key, (_, fn) in fns.items()}
    finally:
        refinecam.close()
    return scores, {key: text for key, (text, _) in fns.items()}, test
