"""Epoch selection on a few annotated images: ``fit(val_loader=...)`` keeps the decoder of the best epoch.

The WSOL protocol (Choe et al., CVPR 2020) allows a handful of fully annotated images for model
selection. After every epoch the F-CAM maps of the validation images (for their labels, min-max
normalised per image as the wsolevaluation inference does) are scored by PxAP; the decoder of the
best epoch is restored when the fit ends.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ._checks import describe
from .adapters.base import normalize_per_image
from .metrics import PxAP

__all__ = ["BestEpoch"]


def _split_val_batch(batch: object, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images, labels, masks)`` of one validation batch, checked."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 3:
        raise TypeError(
            f"`val_loader` batch {index} must be (images, labels, masks, ...), got {describe(batch)}."
        )
    images, labels, masks = batch[0], batch[1], batch[2]
    for name, value in (("images", images), ("labels", labels), ("masks", masks)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`val_loader` batch {index} {name} must be a tensor, got {describe(value)}.")
    masks = masks[:, 0] if masks.ndim == 4 and masks.shape[1] == 1 else masks
    if masks.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(
            f"`val_loader` batch {index} masks must be (B, H, W) = {(images.shape[0], *images.shape[-2:])} "
            f"like the images, got {tuple(masks.shape)}."
        )
    return images, labels, masks


class BestEpoch:
    """An epoch-end callback ``(epoch, upscaler)`` that scores the maps and remembers the best decoder.

    Args:
        loader: iterable of ``(images, labels, masks, ...)`` batches, masks ``(B, H, W)`` with 1 on the
            object, 0 elsewhere (255 = ignored).

    Attributes:
        best_epoch: the 1-based epoch of the best PxAP so far (None before the first).
        best_pxap: its validation PxAP.
    """

    def __init__(self, loader: Any) -> None:
        if not hasattr(loader, "__iter__"):
            raise TypeError(f"`val_loader` must be an iterable of (images, labels, masks) batches, got {describe(loader)}.")
        self.loader = loader
        self.best_epoch: int | None = None
        self.best_pxap = float("-inf")
        self._state: dict[str, torch.Tensor] | None = None

    def score(self, upscaler: Any) -> float:
        """Validation PxAP of the upscaler's current maps."""
        metric = PxAP()
        for index, batch in enumerate(self.loader):
            images, labels, masks = _split_val_batch(batch, index)
            maps = normalize_per_image(upscaler.maps(images, labels.to(upscaler.device)))
            metric.update(maps.detach().float().cpu(), masks.cpu())
        return metric.summary()["pxap"]

    def __call__(self, epoch: int, upscaler: Any) -> None:
        pxap = self.score(upscaler)
        for row in upscaler.history:
            if row.get("epoch") == epoch:
                row["val_pxap"] = pxap
        if pxap > self.best_pxap:
            self.best_epoch, self.best_pxap = epoch, pxap
            self._state = copy.deepcopy(upscaler.decoder.state_dict())

    def restore(self, decoder: torch.nn.Module) -> None:
        """Load the best epoch's weights into ``decoder`` (nothing if no epoch finished)."""
        if self._state is not None:
            decoder.load_state_dict(self._state)
