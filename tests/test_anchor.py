"""``FCAMConfig(anchor_weight=w, anchor_steps=k)``: after the first epoch ending at >= k steps, the decoder is
also pulled to its frozen copy (the early-learning anchor)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _helpers import tiny_batches, tiny_cnn

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import read_checkpoint

TINY = (8, 8, 8, 8, 8)


def _fit(
    weight: float, steps: int = 1, epochs: int = 3, **fit: object
) -> tuple[FCAMUpscaler, list[dict[str, torch.Tensor]]]:
    """A fit of 3 steps per epoch; the decoder's weights after every epoch."""
    config = FCAMConfig(decoder_channels=TINY, anchor_weight=weight, anchor_steps=steps)
    up, weights = FCAMUpscaler(tiny_cnn(), "GradCAM", config=config), []
    up.fit(tiny_batches(), epochs=epochs, seed=0, progress=False,
           on_epoch_end=lambda epoch, fitted: weights.append({k: v.clone() for k, v in fitted.decoder.state_dict().items()}),
           **fit)
    return up, weights


@pytest.mark.parametrize(("steps", "first_anchored"), [(1, 2), (3, 2), (4, 3)])
def test_the_anchor_acts_after_the_first_epoch_with_enough_steps(steps: int, first_anchored: int) -> None:
    (off_up, off), (on_up, on) = _fit(0.0), _fit(1.0, steps)
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(off, on)]
    assert same == [epoch < first_anchored for epoch in (1, 2, 3)], f"anchor_steps={steps}: {same}"
    assert ["anchor" in row for row in on_up.history] == [epoch >= first_anchored for epoch in (1, 2, 3)]
    assert all("anchor" not in row for row in off_up.history)


def test_a_resumed_fit_keeps_the_anchor_and_ends_as_an_uninterrupted_one(tmp_path: Path) -> None:
    reference, _ = _fit(1.0)
    ckpt = tmp_path / "run.pt"
    _fit(1.0, checkpoint=ckpt, max_steps=5)  # stopped inside epoch 2, after the anchor was taken
    assert read_checkpoint(ckpt)["training"]["anchor"] is not None
    resumed, _ = _fit(1.0, checkpoint=ckpt, resume=ckpt)
    for key, value in reference.decoder.state_dict().items():
        assert torch.equal(resumed.decoder.state_dict()[key], value), key
    assert resumed.history == reference.history


@pytest.mark.parametrize(("name", "value"), [("anchor_weight", -1.0), ("anchor_steps", 0), ("anchor_steps", 1.5), ("anchor_steps", True)])
def test_bad_anchor_settings_are_refused(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"`{name}`"):
        FCAMConfig(**{name: value})  # type: ignore[arg-type]
