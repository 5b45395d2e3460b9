"""Foreground seeds weighted by the classifier's confidence (``fg_confidence_power``)."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_batches, tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.losses.cross_entropy import partial_cross_entropy
from fcam_plugin.objective import Objective
from fcam_plugin.seeds import IGNORE_INDEX
from fcam_plugin.taps import FeatureTaps


def _seeds() -> torch.Tensor:
    seeds = torch.full((2, 6, 6), IGNORE_INDEX)
    seeds[0, 1, 1], seeds[0, 4, 4], seeds[1, 2, 3], seeds[1, 5, 0] = 1, 0, 1, 0
    return seeds


def test_weighted_partial_ce_is_the_weighted_mean_over_seed_pixels() -> None:
    generator = torch.Generator().manual_seed(0)
    logits, seeds = torch.randn(2, 2, 6, 6, generator=generator, dtype=torch.float64), _seeds()
    weights = torch.rand(2, 6, 6, generator=generator, dtype=torch.float64)
    labelled = seeds != IGNORE_INDEX
    per_pixel = -torch.log_softmax(logits, 1).gather(1, seeds.clamp_min(0)[:, None])[:, 0]
    expected = (weights * per_pixel)[labelled].sum() / weights[labelled].sum()
    torch.testing.assert_close(partial_cross_entropy(logits, seeds, weights=weights).double(), expected)
    torch.testing.assert_close(partial_cross_entropy(logits, seeds, weights=torch.ones(2, 6, 6)), partial_cross_entropy(logits, seeds))
    with pytest.raises(ValueError, match="`weights` must have the shape of `seeds`"):
        partial_cross_entropy(logits, seeds, weights=torch.ones(2, 6))


def test_seed_weights_scale_only_foreground_seeds() -> None:
    objective = Objective(FCAMConfig(fg_confidence_power=2.0), source=None)  # type: ignore[arg-type]
    seeds = _seeds()
    weights = objective.seed_weights(seeds, torch.tensor([0.5, 1.0]))
    assert weights is not None
    assert weights[0, 1, 1] == 0.25 and weights[1, 2, 3] == 1.0  # foreground: confidence ** 2
    assert weights[0, 4, 4] == 1.0 and weights[1, 5, 0] == 1.0  # background: 1
    assert weights[seeds == IGNORE_INDEX].abs().sum() == 0
    assert objective.seed_weights(seeds, None) is None


def test_label_confidence_is_the_softmax_of_the_label_and_needs_class_scores() -> None:
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    confidence = Objective.label_confidence(scores, torch.tensor([0, 1]))
    torch.testing.assert_close(confidence, torch.stack([scores[0].softmax(0)[0], scores[1].softmax(0)[1]]))
    with pytest.raises(ValueError, match="fg_confidence_power.*class scores"):
        Objective.label_confidence(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))


def test_taps_keep_the_output_of_the_first_forward_after_arming() -> None:
    model = tiny_cnn(3).eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with FeatureTaps(model, FCAMUpscaler(model, GradCAMPlusPlus).taps) as taps:
        assert taps.output is None
        taps.arm()
        first = model(x)
        model(x.flip(-1))  # a later forward (e.g. a mirrored pass) does not replace it
        taps.collect()
        torch.testing.assert_close(taps.output, first.detach())
    assert taps.output is None  # removed with the hooks


@pytest.mark.parametrize("power", [0.0, 1.0])
def test_confidence_weighting_changes_the_fit_only_when_on(power: float) -> None:
    def fit(config: FCAMConfig) -> list[float]:
        up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=config)
        return [row["pce"] for row in up.fit(tiny_batches(), epochs=1, seed=0, progress=False).history]

    small = (8, 8, 8, 8, 8)
    plain = fit(FCAMConfig(decoder_channels=small, fg_confidence_power=0.0))
    weighted = fit(FCAMConfig(decoder_channels=small, fg_confidence_power=power))
    assert (plain == weighted) == (power == 0), (plain, weighted)
