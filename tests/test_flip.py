"""Flips: the flip-consistency term in training (``flip_weight``) and the test-time flip (``flip_average``)."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

from fcam_plugin import FCAMConfig, FCAMUpscaler


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
