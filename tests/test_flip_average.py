"""Test-time flip (``FCAMConfig(flip_average=True)``): the map of a mirrored image is the mirrored map."""

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
    up.config.flip_average = False
    try:
        single, mirrored = up.maps(x), up.maps(x.flip(-1)).flip(-1)
    finally:
        up.config.flip_average = True
    assert (single - mirrored).abs().max() > 1e-3, "the decoder is already symmetric: the test cannot tell"
    torch.testing.assert_close(averaged, (single + mirrored) / 2, atol=1e-5, rtol=0)
    assert not up.decoder.training and all(p.requires_grad for p in up.decoder.parameters())
