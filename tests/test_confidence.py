"""Foreground seeds weighted by the classifier's confidence (``fg_confidence_power``) and left out
under the fit's confidence floor (``fg_confidence_quantile``)."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import read_checkpoint
from fcam_plugin.confidence import foreground_weights, label_confidence, quantile_floor
from fcam_plugin.losses.cross_entropy import partial_cross_entropy
from fcam_plugin.objective import Objective
from fcam_plugin.seeds import IGNORE_INDEX
from fcam_plugin.taps import FeatureTaps

#: A small decoder, and an erosion that leaves foreground candidates on small images.
TINY = dict(decoder_channels=(8, 8, 8, 8, 8), fg_erosion=3)


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three batches of 4 random 64 px images: the tiny CNN's CAM is 2x2, so foreground seeds are
    drawn (at 32 px it is 1x1, flat, and every seed is background)."""
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(12, 3, 64, 64, generator=g), torch.randint(0, 3, (12,), generator=g)
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)]


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
    seeds = _seeds()
    weights = Objective.seed_weights(seeds, torch.tensor([0.25, 1.0]))
    assert weights is not None
    assert weights[0, 1, 1] == 0.25 and weights[1, 2, 3] == 1.0  # foreground: the image's weight
    assert weights[0, 4, 4] == 1.0 and weights[1, 5, 0] == 1.0  # background: 1
    assert weights[seeds == IGNORE_INDEX].abs().sum() == 0
    assert Objective.seed_weights(seeds, None) is None


def test_foreground_weights_are_a_power_of_the_confidence_and_zero_under_the_floor() -> None:
    confidence = torch.tensor([0.2, 0.5, 0.9, 1.0])
    torch.testing.assert_close(foreground_weights(confidence, 2.0), confidence**2)
    torch.testing.assert_close(foreground_weights(confidence, 1.0, floor=0.5), torch.tensor([0.0, 0.5, 0.9, 1.0]))
    torch.testing.assert_close(foreground_weights(confidence, 0.0, floor=0.9), torch.tensor([0.0, 0.0, 1.0, 1.0]))


def test_quantile_floor_is_the_quantile_of_the_confidences() -> None:
    values = torch.rand(101, generator=torch.Generator().manual_seed(0))
    assert quantile_floor(values, 0.25) == pytest.approx(float(values.sort().values[25]))
    with pytest.raises(ValueError, match="no images"):
        quantile_floor(torch.zeros(0), 0.25)


def test_label_confidence_is_the_softmax_of_the_label_and_needs_class_scores() -> None:
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    confidence = label_confidence(scores, torch.tensor([0, 1]))
    torch.testing.assert_close(confidence, torch.stack([scores[0].softmax(0)[0], scores[1].softmax(0)[1]]))
    with pytest.raises(ValueError, match="fg_confidence_power.*class scores"):
        label_confidence(torch.zeros(2, 3, 4, 4), torch.tensor([0, 1]))


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
        return [row["pce"] for row in up.fit(_batches(), epochs=1, seed=0, progress=False).history]

    plain = fit(FCAMConfig(**TINY, fg_confidence_power=0.0))
    weighted = fit(FCAMConfig(**TINY, fg_confidence_power=power))
    assert (plain == weighted) == (power == 0), (plain, weighted)


def _pce(config: FCAMConfig, **fit_options: object) -> list[float]:
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=config)
    return [row["pce"] for row in up.fit(_batches(), epochs=2, seed=0, progress=False, **fit_options).history]


def test_confidence_quantile_changes_the_fit_and_is_kept_in_the_checkpoint(tmp_path) -> None:
    checkpoint = tmp_path / "run.pt"
    plain = _pce(FCAMConfig(**TINY))
    floored = _pce(FCAMConfig(**TINY, fg_confidence_quantile=0.5), checkpoint=checkpoint)
    assert plain != floored
    model = tiny_cnn(3).eval()
    with torch.no_grad():
        confidences = torch.cat([label_confidence(model(x), y) for x, y in _batches()])
    floor = read_checkpoint(checkpoint)["training"]["confidence_floor"]
    assert floor == pytest.approx(float(confidences.double().quantile(0.5)))


def test_confidence_quantile_resume_equals_uninterrupted(tmp_path) -> None:
    config = FCAMConfig(**TINY, fg_confidence_quantile=0.5)
    reference = _pce(config)
    checkpoint = tmp_path / "run.pt"
    _pce(config, checkpoint=checkpoint, max_steps=4)
    assert _pce(config, checkpoint=checkpoint, resume=checkpoint) == reference


def test_confidence_quantile_refuses_a_one_shot_loader() -> None:
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=FCAMConfig(**TINY, fg_confidence_quantile=0.25))
    with pytest.raises(ValueError, match="fg_confidence_quantile=0.25.*one-shot iterator"):
        up.fit(iter(_batches()), epochs=1, progress=False)
    assert not up.fitted
