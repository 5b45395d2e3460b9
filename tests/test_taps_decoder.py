"""Feature taps found by probing (modules that run twice never tapped), and the U-Net decoder on odd input sizes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from fcam_plugin import FCAMUpscaler, NoSpatialFeaturesError
from fcam_plugin.config import FCAMConfig
from fcam_plugin.decoder import UNetDecoder
from fcam_plugin.taps import FeatureTaps, Tap, TapMismatchError, find_taps, probe_model

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
        assert sum(len(m._forward_hooks) for m in model.modules()) == len(taps) + 1  # and the model's output
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


# ------------------------------------------------------------ modules that run more than once
class SharedActivationNet(nn.Module):
    """The lukemelas EfficientNet layout: one activation module called at the stem *and* at the head."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(8)
        widths = (8, 12, 16, 24, 32)
        self._blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, 2, 1), nn.BatchNorm2d(b), nn.ReLU6()) for a, b in zip(widths, widths[1:])
        )
        self._conv_head = nn.Conv2d(32, 48, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(48)
        self._swish = nn.SiLU()
        self._fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._swish(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def _loader(size: int = 64, n: int = 2):
    from torch.utils.data import DataLoader, TensorDataset

    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, size, size, generator=generator), torch.arange(n) % 3), batch_size=n)


SMALL = FCAMConfig(decoder_channels=(16, 16, 8, 8, 8))


def test_probe_counts_calls_and_never_taps_a_shared_module() -> None:
    model = SharedActivationNet().eval()
    probe = probe_model(model)
    assert "_swish" in probe.repeated and len(probe.repeated["_swish"]) == 2
    taps = find_taps(model, probe=probe)
    assert "_swish" not in [t.name for t in taps]
    assert [t.stride for t in taps] == [2, 4, 8, 16, 32]
    # stride 2: the BatchNorm is all that runs once; stride 32: the block (ending in ReLU6) is preferred
    # to the head's bare conv and BatchNorm (pre-activation outputs)
    assert taps[0].name == "_bn0" and taps[-1].name == "_blocks.3"
    assert probe.neighbours("_swish") == ["_bn0", "_bn1"]


def test_resnet_basic_block_relu_is_seen_as_repeated() -> None:
    probe = probe_model(torchvision.models.resnet18(weights=None))
    assert "layer1.0.relu" in probe.repeated and "relu" not in probe.repeated


@pytest.mark.parametrize("method", ["GradCAMPlusPlus", "GradCAM", "torchcam:LayerCAM"])
def test_shared_module_as_target_layer_is_rejected(method: str) -> None:
    model = SharedActivationNet().eval()
    with pytest.raises(ValueError, match=r"`target_layers` entry '_swish' \(SiLU\) runs 2 times") as info:
        FCAMUpscaler(model, method, [model._swish])
    message = str(info.value)
    assert "(1, 8, 128, 128)" in message and "(1, 48, 8, 8)" in message and "'_bn0', '_bn1'" in message
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


def test_shared_module_as_skip_layer_is_rejected() -> None:
    model = SharedActivationNet().eval()
    with pytest.raises(ValueError, match=r"`skip_layers` entry '_swish' \(SiLU\) runs 2 times"):
        FCAMUpscaler(model, "GradCAMPlusPlus", skip_layers=["_bn0", "_swish"])
    with pytest.raises(ValueError, match="does not run in the model's forward pass"):
        FCAMUpscaler(model, "GradCAMPlusPlus", skip_layers=["_blocks"])


def test_target_alone_and_skips_alone_are_consistent() -> None:
    model = SharedActivationNet().eval()
    # a target alone: the skips are still found automatically, without the shared module
    up = FCAMUpscaler(model, "GradCAMPlusPlus", [model._bn1], config=SMALL)
    assert up.target_names == ["_bn1"] and "_swish" not in [t.name for t in up.taps]
    up.fit(_loader(), epochs=1, progress=False)
    assert up(input_tensor=torch.randn(1, 3, 64, 64)).shape == (1, 64, 64)
    # skips alone: the default target is the deepest skip
    up = FCAMUpscaler(model, "GradCAMPlusPlus", skip_layers=[model._bn0, "_blocks.1", "_bn1"], config=SMALL)
    assert [t.name for t in up.taps] == ["_bn0", "_blocks.1", "_bn1"] and up.target_names == ["_bn1"]
    up.fit(_loader(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="at most one layer per stride"):
        FCAMUpscaler(model, "GradCAMPlusPlus", skip_layers=["_blocks.0.0", "_blocks.0"])


def test_a_mismatched_tap_during_fit_names_the_layers() -> None:
    model = SharedActivationNet().eval()
    up = FCAMUpscaler(model, "GradCAMPlusPlus", config=SMALL)
    wrong = Tap("_swish", 32, 48)  # what the old probe read: the head call; the hook sees the stem call first
    up.taps = [*up.taps[:-1], wrong]
    with pytest.raises(TapMismatchError, match=r"'_swish' returned shape \[2, 8, 32, 32\].*48 channels at stride 32"):
        up.fit(_loader(), epochs=1, progress=False)


def test_feature_taps_check_channels_and_stride() -> None:
    model = torchvision.models.resnet18(weights=None).eval()
    taps = find_taps(model)
    x = torch.randn(1, 3, 64, 64)
    with FeatureTaps(model, [*taps[:-1], Tap("layer4", 32, 256)]) as hooks, torch.no_grad():
        with pytest.raises(TapMismatchError, match=r"'layer4' returned shape \[1, 512, 2, 2\].*256 channels"):
            hooks.forward(x)
    with FeatureTaps(model, [Tap("layer4", 4, 512)]) as hooks, torch.no_grad():
        with pytest.raises(TapMismatchError, match="not the stride 4"):
            hooks.forward(x)
    with FeatureTaps(model, taps) as hooks, torch.no_grad():
        assert len(hooks.forward(x)[1]) == len(taps)  # the right taps still pass
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0
