"""Flips: the flip-consistency term in training (``flip_weight``), the test-time flip (``flip_average``)
and seeds from the mirror-averaged seed CAM (``seed_flip``)."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.adapters.base import normalize_per_image
from fcam_plugin.taps import FeatureTaps


@pytest.fixture(scope="module")
def fitted() -> tuple[FCAMUpscaler, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 64, 48, generator=generator), torch.tensor([0, 1, 2, 0])
    config = FCAMConfig(decoder_channels=(16, 8, 8, 8, 8), flip_average=True)
    return FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=config).fit([(x, y)], epochs=1, seed=0, progress=False), x


def test_flip_averaged_map_is_mirror_symmetric(fitted: tuple[FCAMUpscaler, torch.Tensor]) -> None:
    up, x = fitted
    assert up.config.flip_average
    torch.testing.assert_close(up.maps(x.flip(-1)), up.maps(x).flip(-1), atol=1e-5, rtol=0)


def test_flip_average_is_the_mean_of_both_passes(fitted: tuple[FCAMUpscaler, torch.Tensor]) -> None:
    up, x = fitted
    averaged = up.maps(x)
    with up.config.overridden(flip_average=False):
        single, mirrored = up.maps(x), up.maps(x.flip(-1)).flip(-1)
    assert (single - mirrored).abs().max() > 1e-3, "the decoder is already symmetric: the test cannot tell"
    torch.testing.assert_close(averaged, (single + mirrored) / 2, atol=1e-5, rtol=0)
    assert not up.decoder.training and all(p.requires_grad for p in up.decoder.parameters())


@pytest.mark.parametrize("weight", [1.0, 0.0])
def test_flip_term_trains_only_when_weighted(weight: float) -> None:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([0, 1, 2, 0])
    model = tiny_cnn(3)
    forwards = [0]
    handle = model.register_forward_hook(lambda module, args, output: forwards.__setitem__(0, forwards[0] + 1))
    try:
        up = FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(decoder_channels=(8, 8, 8, 8, 8), flip_weight=weight))
        forwards[0] = 0  # the probe's forwards are not the step's
        up.fit([(x, y)], epochs=1, seed=0, progress=False)
    finally:
        handle.remove()
    terms = up.history[0]
    if weight:
        assert terms["flip"] > 0 and forwards[0] == 2, (terms, forwards)  # the seed CAM's forward and the mirrored one
    else:
        assert "flip" not in terms and forwards[0] == 1, (terms, forwards)


def test_seed_flip_averages_the_seed_cams_of_both_orientations() -> None:
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(3, 3, 96, 96, generator=generator), torch.tensor([0, 1, 2])  # 3x3 CAMs at stride 32
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=FCAMConfig(seed_flip=True))
    try:
        objective = up.objective()
        single, mirrored = objective.seed_cams(x, y), objective.seed_cams(x.flip(-1), y).flip(-1)
        assert (single - mirrored).abs().max() > 1e-2, "the seed CAM is already symmetric: the test cannot tell"
        averaged = objective.training_cams(x, y)
        torch.testing.assert_close(averaged, normalize_per_image((single + mirrored) / 2), atol=1e-5, rtol=0)
        torch.testing.assert_close(objective.training_cams(x.flip(-1), y), averaged.flip(-1), atol=1e-5, rtol=0)
        with up.config.overridden(seed_flip=False):
            torch.testing.assert_close(objective.training_cams(x, y), single)
    finally:
        up.close()


def test_seed_flip_keeps_the_skip_features_of_the_images() -> None:
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 3, 32, 32, generator=generator), torch.tensor([0, 1])
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=FCAMConfig(seed_flip=True))
    try:
        with FeatureTaps(up.model, up.taps) as taps:
            _, features = up.objective().cams_and_features(taps, x, y)
            expected = taps.forward(x)[1]
        for got, want in zip(features, expected):
            torch.testing.assert_close(got, want)
    finally:
        up.close()
