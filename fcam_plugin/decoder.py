"""The F-CAM decoder: a U-Net over the classifier's skip features, 2 logits at input size."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .defaults import DECODER_CHANNELS

__all__ = ["DEFAULT_DECODER_CHANNELS", "UNetDecoder", "foreground_probability"]

DEFAULT_DECODER_CHANNELS = DECODER_CHANNELS


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """The foreground probability ``(B, H, W)`` (float32) from the decoder's logits ``(B, 2, H, W)``."""
    return logits.float().softmax(1)[:, 1]


class _ConvBNReLU(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class _UpBlock(nn.Module):
    """Nearest upsample to an explicit size, concatenate the skip (if any), 2 x Conv-BN-ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _ConvBNReLU(in_channels + skip_channels, out_channels)
        self.conv2 = _ConvBNReLU(out_channels, out_channels)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip.to(x.dtype)], dim=1)
        return self.conv2(self.conv1(x))


class UNetDecoder(nn.Module):
    """U-Net decoder built from the encoder's channel metadata (not from the model class).

    The deepest feature is the bottleneck; each up-block doubles the resolution (to an explicit
    target size, so any input size works), concatenates the skip feature of that stride when the
    encoder has one, and applies two 3x3 Conv-BN-ReLU. A 3x3 head gives ``num_classes`` logits at
    the input resolution.

    Args:
        encoder_channels: channels of the skip features, ordered by increasing stride.
        encoder_strides: their strides (powers of two), same order.
        decoder_channels: output channels of the up-blocks, from the deepest; one block per
            halving of the deepest stride (5 for stride 32). Extra leading entries are unused.
        num_classes: logits per pixel (2: background, foreground).

    Example:
        >>> dec = UNetDecoder([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])
        >>> feats = [torch.rand(1, c, 64 // s, 64 // s) for c, s in zip([64, 64, 128, 256, 512], [2, 4, 8, 16, 32])]
        >>> dec(feats, (64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_strides: Sequence[int],
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        num_classes: int = 2,
    ) -> None:
        super().__init__()
        if len(encoder_channels) != len(encoder_strides) or not encoder_channels:
            raise ValueError(
                f"`encoder_channels` {list(encoder_channels)} and `encoder_strides` "
                f"{list(encoder_strides)} must be non-empty and of equal length."
            )
        if list(encoder_strides) != sorted(set(encoder_strides)) or any(
            s < 1 or s & (s - 1) for s in encoder_strides
        ):
            raise ValueError(
                f"`encoder_strides` must be increasing powers of two, got {list(encoder_strides)}."
            )
        self.encoder_strides = [int(s) for s in encoder_strides]
        self.encoder_channels = [int(c) for c in encoder_channels]
        deepest = self.encoder_strides[-1]
        n_blocks = int(math.log2(deepest))
        if len(decoder_channels) < n_blocks:
            raise ValueError(
                f"`decoder_channels` needs at least {n_blocks} entries for a deepest stride of "
                f"{deepest}, got {list(decoder_channels)}."
            )
        self.decoder_channels = [int(c) for c in decoder_channels[len(decoder_channels) - n_blocks :]]
        skip_channels = dict(zip(self.encoder_strides, self.encoder_channels))
        self.block_strides = [deepest // 2 ** (i + 1) for i in range(n_blocks)]
        blocks = []
        in_ch = self.encoder_channels[-1]
        for stride, out_ch in zip(self.block_strides, self.decoder_channels):
            blocks.append(_UpBlock(in_ch, skip_channels.get(stride, 0), out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Conv2d(in_ch, num_classes, 3, padding=1)
        self.num_classes = num_classes

    def forward(self, features: Sequence[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        """Decode features (ordered like ``encoder_strides``) to logits ``(B, num_classes, H, W)``."""
        if len(features) != len(self.encoder_strides):
            raise ValueError(
                f"`features` must hold {len(self.encoder_strides)} maps (strides "
                f"{self.encoder_strides}), got {len(features)}."
            )
        skips = dict(zip(self.encoder_strides, features))
        x = features[-1]
        height, width = output_size
        for stride, block in zip(self.block_strides, self.blocks):
            skip = skips.get(stride)
            size = tuple(skip.shape[-2:]) if skip is not None else (-(-height // stride), -(-width // stride))
            x = block(x, size, skip)
        return self.head(x)
