"""``FCAMConfig(self_training_from=k)``: from epoch k, seeds come from where the decoder and the CAM agree."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_batches, tiny_cnn

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.objective import Objective


def _weights_after_each_epoch(start: int) -> list[dict[str, torch.Tensor]]:
    config = FCAMConfig(decoder_channels=(8, 8, 8, 8, 8), self_training_from=start)
    up, weights = FCAMUpscaler(tiny_cnn(), "GradCAM", config=config), []
    up.fit(tiny_batches(), epochs=2, seed=0, progress=False,
           on_epoch_end=lambda epoch, fitted: weights.append({k: v.clone() for k, v in fitted.decoder.state_dict().items()}))
    return weights


_SEED_CAMS = Objective.seed_cams


def _blob_cams(self: Objective, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A CAM peaking off-centre: random tiny CNNs give flat CAMs, on which both seed rules agree."""
    _SEED_CAMS(self, images, labels)  # the model's forward (the taps read it)
    h, w = images.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    blob = torch.exp(-((ys - h / 3) ** 2 + (xs - w / 3) ** 2) / (2 * (h / 6) ** 2))
    return blob.expand(images.shape[0], 1, h, w).clone()


def test_self_training_starts_at_the_given_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Objective, "seed_cams", _blob_cams)
    off, from_second = _weights_after_each_epoch(0), _weights_after_each_epoch(2)
    same = [all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(off, from_second)]
    assert same == [True, False], "epoch 1 must match the plain recipe and epoch 2 must not"


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_bad_start_epoch_is_refused(value: object) -> None:
    with pytest.raises(ValueError, match="`self_training_from`"):
        FCAMConfig(self_training_from=value)  # type: ignore[arg-type]
