"""``fit(val_loader=...)``: the decoder of the epoch with the best validation PxAP is kept."""

from __future__ import annotations

import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.adapters import normalize_per_image
from fcam_plugin.data import SyntheticWSOL
from fcam_plugin.metrics import PxAP


def _batches(count: int, split: str) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    data = SyntheticWSOL(count, image_size=64, num_classes=3, seed=1, split=split, cache=True)
    images, labels, masks = zip(*(data[i] for i in range(count)))
    return [(torch.stack(images[i : i + 4]), torch.tensor(labels[i : i + 4]), torch.stack(masks[i : i + 4]))
            for i in range(0, count, 4)]


def _pxap(up: FCAMUpscaler, batches: list) -> float:
    metric = PxAP()
    for images, labels, masks in batches:
        metric.update(normalize_per_image(up.maps(images, labels)), masks)
    return metric.summary()["pxap"]


def test_the_best_epoch_is_kept_and_recorded() -> None:
    train, val = _batches(8, "train"), _batches(8, "val")
    # A recipe whose best epoch on this tiny set is not the last one (checked below), so that the restore is seen.
    config = FCAMConfig(decoder_channels=(16, 8, 8, 8, 8), flip_weight=0.0)
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=config)
    seen: list[float] = []
    up.fit(train, epochs=4, seed=0, progress=False, val_loader=val,
           on_epoch_end=lambda epoch, fitted: seen.append(_pxap(fitted, val)))
    recorded = [row["val_pxap"] for row in up.history]
    assert recorded == pytest.approx(seen, abs=1e-9)  # the user's callback sees what was scored
    best = max(range(len(seen)), key=seen.__getitem__)
    assert best < len(seen) - 1, f"the last epoch is the best here {seen}: the test would not see a restore"
    assert up.best_epoch == best + 1
    assert _pxap(up, val) == pytest.approx(seen[best], abs=1e-9)  # the best decoder, not the last one


def test_a_bad_val_loader_names_the_argument() -> None:
    train = _batches(4, "train")
    up = FCAMUpscaler(tiny_cnn(3), GradCAMPlusPlus, config=FCAMConfig(decoder_channels=(16, 8, 8, 8, 8)))
    with pytest.raises(TypeError, match="`val_loader` batch 0 must be"):
        up.fit(train, epochs=1, progress=False, val_loader=[(train[0][0], train[0][1])])
    with pytest.raises(TypeError, match="`val_loader` must be an iterable"):
        up.fit(train, epochs=1, progress=False, val_loader=3)
