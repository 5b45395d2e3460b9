"""Small models and data shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


def tiny_cnn(num_classes: int = 3, widths: tuple[int, ...] = (8, 8, 16, 16, 16), seed: int = 0) -> nn.Module:
    """Five stride-2 Conv-BN-ReLU stages (total stride 32), global pooling, linear head."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for out in widths:
        layers += [nn.Conv2d(channels, out, 3, 2, 1), nn.BatchNorm2d(out), nn.ReLU()]
        channels = out
    return nn.Sequential(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def tiny_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three seeded batches of 4 random 32 px images with labels in 0..2 (a loader for short fits)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.randint(0, 3, (12,), generator=g)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)]
