"""Small models shared by the tests."""

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
