"""The synthetic splits of a run as tensors in memory, and the augmented loader of the fits."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.synthetic import MEAN, STD, SyntheticWSOL
from ..progress import progress_bar
from .settings import DemoSettings

__all__ = ["AugmentedLoader", "Split", "augment", "batches", "render_split"]


@dataclass
class Split:
    """One split held in memory.

    Attributes:
        images: ``(N, 3, S, S)`` normalised with ImageNet mean/std.
        labels: ``(N,)`` class indices.
        masks: ``(N, S, S)`` float {0, 1} object masks.
        boxes: per image, the ``(1, 4)`` ground-truth box of the whole object.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    boxes: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)

    def rgb(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Un-normalised RGB ``(n, 3, S, S)`` in [0, 1] of some images."""
        mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
        return (self.images[index] * std + mean).clamp(0, 1)


def render_split(settings: DemoSettings, split: str, count: int) -> Split:
    """Render ``count`` images of the run's variant and split (deterministic in the run's seed)."""
    dataset = SyntheticWSOL(
        count, settings.image_size, settings.classes, seed=settings.seed, split=split, variant=settings.variant
    )
    images, labels, masks = [], [], []
    with progress_bar(settings.progress, count, f"data {split}", unit="img") as bar:
        for i in range(count):
            image, label, mask = dataset[i]
            images.append(image)
            labels.append(label)
            masks.append(mask)
            bar.update(1)
    return Split(torch.stack(images), torch.tensor(labels), torch.stack(masks), [dataset.boxes(i) for i in range(count)])


def batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Index batches over ``n`` items, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random translation by up to 1/8 of the side (reflect padding)."""
    b, _, h, w = images.shape
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
    pad = max(1, h // 8)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + h, dx : dx + w].contiguous()


class AugmentedLoader:
    """Shuffled, flipped and translated batches ``(images, labels)`` of in-memory tensors, re-iterable."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.drop_last = len(images) > batch_size

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for index in batches(len(self.images), self.batch_size, self.generator)[: len(self)]:
            yield augment(self.images[index], self.generator), self.labels[index]
