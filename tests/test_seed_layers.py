"""Where the seeds come from: the wrapped method at three depths for CNNs, the target layers otherwise."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus
from torchcam.methods import CAM

from fcam_plugin import FCAMConfig, FCAMUpscaler

SMALL = FCAMConfig(decoder_channels=(8, 8, 8, 8, 8))


def _batch(classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, 64, 64, generator=g), torch.randint(0, classes, (2,), generator=g)


def test_a_cnn_seeds_from_its_stride_8_and_16_stages_and_target_layer() -> None:
    up = FCAMUpscaler(tiny_cnn(), GradCAMPlusPlus, config=SMALL)
    strides = {t.name: t.stride for t in up.taps}
    names = {id(m): n for n, m in up.model.named_modules()}
    assert [strides[names[id(m)]] for m in up.seed_stage_layers()] == [8, 16, 32]
    assert up.objective().stages


def test_the_paper_recipe_seeds_from_the_target_layer_only() -> None:
    up = FCAMUpscaler(tiny_cnn(), GradCAMPlusPlus, config=FCAMConfig(decoder_channels=(8,) * 5, seed_layers="target"))
    assert not up.objective().stages


def test_a_fixed_grid_reshape_transform_keeps_the_target_layers() -> None:
    """grad-cam's Swin recipe reshapes to the last stage's grid: other stages would not fit it."""
    model = torchvision.models.swin_t(num_classes=3).eval()

    def reshape(tensor: torch.Tensor, side: int = 2) -> torch.Tensor:
        return tensor.reshape(tensor.size(0), side, side, tensor.size(-1)).permute(0, 3, 1, 2)

    up = FCAMUpscaler(model, GradCAMPlusPlus, target_layers=[model.norm], reshape_transform=reshape, config=SMALL)
    assert up.seed_stage_layers() == [] and not up.objective().stages
    up.fit([_batch()], epochs=1, progress=False)
    assert up(input_tensor=_batch()[0]).shape == (2, 64, 64)


def test_a_head_bound_method_falls_back_to_its_target_layer_with_a_warning() -> None:
    up = FCAMUpscaler(tiny_cnn(), CAM, config=SMALL)
    with pytest.warns(UserWarning, match="seed_layers='stages'.*target layers only"):
        up.fit([_batch()], epochs=1, progress=False)
    assert up.fitted
    # The class gate reuses the fit's seed CAMs and their fallback: no second warning, no second failure.
    images, labels = _batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert up.maps(images, labels).shape == (2, 64, 64)
