"""``FCAMConfig(lr_schedule="cosine")``: the default optimiser's rate decays over the fit; a user's optimiser is left alone."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_cnn

from fcam_plugin import FCAMConfig, FCAMUpscaler

EPOCHS, SEED = 2, 1


def _loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, 32, 32, generator=g), torch.randint(0, 3, (12,), generator=g)
    return [(x[i : i + 3], y[i : i + 3]) for i in range(0, 12, 3)]


def _fit(schedule: str, **kwargs: object) -> FCAMUpscaler:
    up = FCAMUpscaler(tiny_cnn(), "GradCAM", config=FCAMConfig(decoder_channels=(8, 8, 8, 8, 8), lr_schedule=schedule))
    return up.fit(_loader(), epochs=EPOCHS, seed=SEED, progress=False, **kwargs)


def _weights(up: FCAMUpscaler) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in up.decoder.state_dict().items()}


def test_cosine_changes_the_fit_and_resumes_exactly(tmp_path) -> None:
    constant, cosine = _weights(_fit("constant")), _weights(_fit("cosine"))
    assert any(not torch.equal(constant[k], cosine[k]) for k in constant if constant[k].is_floating_point())
    ckpt = tmp_path / "run.pt"
    up = _fit("cosine", checkpoint=ckpt, max_steps=3)
    up.fit(_loader(), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt, resume=ckpt)
    resumed = _weights(up)
    for key, value in cosine.items():
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_a_users_optimiser_keeps_its_rate() -> None:
    rates: list[float] = []
    optimizer_holder: dict[str, torch.optim.Optimizer] = {}

    def factory(params: object) -> torch.optim.Optimizer:
        optimizer_holder["opt"] = torch.optim.SGD(params, lr=0.01)  # a user's optimiser: never rescheduled
        return optimizer_holder["opt"]

    up = FCAMUpscaler(tiny_cnn(), "GradCAM", config=FCAMConfig(decoder_channels=(8, 8, 8, 8, 8), lr_schedule="cosine"))
    up.fit(_loader(), epochs=1, seed=SEED, progress=False, optimizer=factory,
           on_epoch_end=lambda epoch, fitted: rates.append(optimizer_holder["opt"].param_groups[0]["lr"]))
    assert rates == [0.01]


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(ValueError, match="lr_schedule"):
        FCAMConfig(lr_schedule="step")
