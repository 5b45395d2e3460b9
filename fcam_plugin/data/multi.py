"""A synthetic set with several objects of different classes per image and one mask per class.

For class-conditional maps: the map of class ``c`` should cover the object of class ``c`` and
not the others. Every image holds 2 or 3 objects of distinct classes, painted like the objects of
:class:`~fcam_plugin.data.SyntheticWSOL` (same variants, motifs and textures) at about half the
size, without overlap, on the same cluttered backgrounds.

Example:
    >>> ds = MultiObjectWSOL(2, image_size=64, seed=0)
    >>> image, labels, masks = ds[0]
    >>> image.shape, masks.shape, len(labels) in (2, 3)
    (torch.Size([3, 64, 64]), torch.Size([4, 64, 64]), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .synthetic import MEAN, SPLITS, STD, SyntheticVariant, SyntheticWSOL

__all__ = ["MultiObjectSample", "MultiObjectWSOL"]

_MULTI_SPLIT_OFFSET = 7  # generator streams disjoint from the single-object sets of the same seed


@dataclass(frozen=True)
class MultiObjectSample:
    """One rendered multi-object sample.

    Attributes:
        image: float32 ``(H, W, 3)`` RGB in [0, 1].
        labels: the classes present, one per object.
        masks: bool ``(num_classes, H, W)``: the mask of each class (empty for absent classes).
    """

    image: np.ndarray
    labels: tuple[int, ...]
    masks: np.ndarray


class MultiObjectWSOL(SyntheticWSOL):
    """2-3 objects of distinct classes per image, with a mask per class (see the module docstring).

    Args:
        num_images: number of images.
        image_size: side of the square images (>= 32).
        num_classes: number of classes (>= 3).
        seed: dataset seed; split: ``"train"``, ``"val"`` or ``"test"``.
        variant: a name of :data:`~fcam_plugin.data.VARIANTS` or a :class:`~fcam_plugin.data.SyntheticVariant`.
        max_objects: 2 or 3 objects at most per image (at least 2).
        normalize: return images normalised with ImageNet mean/std (default) or raw in [0, 1].

    Returns (``__getitem__``):
        ``(image, labels, masks)``: float32 ``(3, S, S)``, long ``(k,)`` classes present, float32
        ``(num_classes, S, S)`` per-class masks in {0, 1}.
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 96,
        num_classes: int = 4,
        seed: int = 0,
        split: str = "test",
        *,
        variant: str | SyntheticVariant = "parts",
        max_objects: int = 3,
        normalize: bool = True,
    ) -> None:
        super().__init__(num_images, image_size, num_classes, seed, split, variant=variant, normalize=normalize)
        if self.num_classes < 3:
            raise ValueError(f"`num_classes` must be >= 3 for several objects of distinct classes, got {num_classes}.")
        if max_objects not in (2, 3):
            raise ValueError(f"`max_objects` must be 2 or 3, got {max_objects!r}.")
        self.max_objects = max_objects

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]
        sample = self.render_multi(index)
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))
        if self.normalize:
            image = (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
        return image, torch.tensor(sample.labels), torch.from_numpy(sample.masks.astype(np.float32))

    def render_multi(self, index: int) -> MultiObjectSample:
        """Render sample ``index`` (deterministic in ``(seed, split, index)``)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < self.num_images:
            raise IndexError(f"`index` must be an int in [0, {self.num_images}), got {index!r}.")
        rng = np.random.default_rng([self.seed, _MULTI_SPLIT_OFFSET + SPLITS.index(self.split), int(index)])
        count = int(rng.integers(2, self.max_objects + 1))
        labels = tuple(int(c) for c in rng.choice(self.num_classes, size=count, replace=False))
        bg_base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
        image = self._canvas.background(rng, bg_base, self.variant.texture_bank)
        image = self._paint_distractors(rng, image, self._body_colour(rng, bg_base))
        masks = np.zeros((self.num_classes, self.image_size, self.image_size), dtype=bool)
        low, high = self.variant.object_area
        area = (low / count, high / count)
        for label in labels:
            mask = self._free_place(rng, self._family(rng, label), area, np.asarray(masks.any(0)))
            body = self._body_colour(rng, bg_base)
            obj = self._canvas.body_texture(rng, body, self.variant.texture_bank)
            image = np.where(mask[..., None], obj * (1 + 0.12 * self._canvas.field(rng, 1, self.image_size / 8)), image)
            image, _ = self._paint_evidence(rng, image, mask, label)
            masks[label] = mask
        image = image * rng.uniform(0.85, 1.15, 3).astype(np.float32) + np.float32(rng.uniform(-0.05, 0.05))
        image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
        return MultiObjectSample(np.clip(image, 0.0, 1.0).astype(np.float32), labels, masks)

    def _body_colour(self, rng: np.random.Generator, bg_base: np.ndarray) -> np.ndarray:
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction) + 1e-8
        return np.clip(bg_base + rng.uniform(*self.variant.contrast) * direction, 0.1, 0.9).astype(np.float32)

    def _free_place(
        self, rng: np.random.Generator, family: int, area: tuple[float, float], taken: np.ndarray
    ) -> np.ndarray:
        """An object mask not touching ``taken`` (the first of 20 tries that fits, else the least overlapping)."""
        best, best_overlap = None, np.inf
        grown = taken | np.roll(taken, 2, 0) | np.roll(taken, -2, 0) | np.roll(taken, 2, 1) | np.roll(taken, -2, 1)
        for _ in range(20):
            mask = self._place_object(rng, family, area)
            overlap = (mask & grown).sum()
            if overlap < best_overlap:
                best, best_overlap = mask, overlap
            if overlap == 0:
                break
        return best & ~taken  # type: ignore[operator]
