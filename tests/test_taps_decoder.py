"""Feature taps found by probing, and the U-Net decoder on odd input sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fcam_plugin.decoder import UNetDecoder
from fcam_plugin import NoSpatialFeaturesError
from fcam_plugin.taps import FeatureTaps, find_taps

FAMILIES = {
    "resnet18": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "vgg11_bn": ["features.6", "features.13", "features.20", "features.27", "features"],
    "densenet121": [
        "features.relu0", "features.denseblock1", "features.denseblock2", "features.denseblock3", "features",
    ],
    "mobilenet_v3_large": ["features.1", "features.3", "features.6", "features.12", "features"],
    "efficientnet_b0": ["features.1", "features.2", "features.3", "features.5", "features"],
    "convnext_tiny": ["features.1", "features.3", "features.5", "features"],
}


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_taps_are_stage_outputs(arch: str) -> None:
    model = getattr(torchvision.models, arch)(weights=None).train()
    taps = find_taps(model)
    assert [t.name for t in taps] == FAMILIES[arch]
    strides = [t.stride for t in taps]
    assert strides == sorted(strides) and strides[-1] == 32
    assert model.training, "probing must restore the model's mode"


def test_taps_skip_size_fixing_layers() -> None:
    # VGG's AdaptiveAvgPool2d(7) gives 7x7 at any input: it must not be taken for stride 32.
    model = torchvision.models.vgg11_bn(weights=None)
    assert "avgpool" not in [t.name for t in find_taps(model)]


def test_no_spatial_features_raises() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 256 * 256, 4))
    with pytest.raises(NoSpatialFeaturesError, match="spatial feature map"):
        find_taps(mlp)


@pytest.mark.parametrize("size", [(64, 64), (70, 90), (33, 47)])
def test_decoder_output_is_input_size(size: tuple[int, int]) -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    taps = find_taps(model)
    decoder = UNetDecoder([t.channels for t in taps], [t.stride for t in taps], (32, 16, 16, 8, 8))
    x = torch.randn(2, 3, *size)
    with FeatureTaps(model, taps) as hooks, torch.no_grad():
        _, feats = hooks.forward(x)
        assert sum(len(m._forward_hooks) for m in model.modules()) == len(taps)
    logits = decoder(feats, size)
    assert logits.shape == (2, 2, *size)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_decoder_parameter_count_matches_paper() -> None:
    # About 9 M parameters on ResNet-50 with the reference widths (design notes).
    decoder = UNetDecoder([64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32])
    n = sum(p.numel() for p in decoder.parameters())
    assert 8.5e6 < n < 9.5e6


def test_decoder_without_some_skips() -> None:
    # ConvNeXt has no stride-2 feature; ViT-like encoders only one scale.
    decoder = UNetDecoder([384], [16], (64, 32, 16, 8))
    out = decoder([torch.randn(1, 384, 4, 4)], (64, 64))
    assert out.shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(encoder_channels=[8, 16], encoder_strides=[4]), "equal length"),
        (dict(encoder_channels=[8, 16], encoder_strides=[8, 4]), "powers of two"),
        (dict(encoder_channels=[8], encoder_strides=[32], decoder_channels=(8, 8)), "at least 5"),
    ],
)
def test_decoder_bad_config(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UNetDecoder(**kwargs)
