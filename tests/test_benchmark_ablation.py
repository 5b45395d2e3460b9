"""`benchmarks/ablation.py --seeds-from masks`: the fits' seeds come from the true masks, aligned with the images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"
_SPEC = importlib.util.spec_from_file_location("fcam_benchmark_ablation", _PATH)
assert _SPEC is not None and _SPEC.loader is not None
ablation = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(ablation)


def _masked_data(n: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(n, size, size)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        masks[i, top : top + size // 3, left : left + size // 4] = 1
    images = torch.rand(n, 3, size, size, generator=g)
    images[:, 0] = masks  # channel 0 carries the mask, so alignment after augmentation is visible
    return images, torch.randint(0, 3, (n,), generator=g), masks


def test_loader_augments_masks_with_their_images() -> None:
    images, labels, masks = _masked_data()
    loader = ablation.MaskSeedLoader(images, labels, masks, batch_size=4, seed=3)
    batches = 0
    for batch, _ in loader:
        assert loader.pending is not None and loader.pending.shape == (4, 1, 32, 32)
        assert torch.equal(loader.pending[:, 0], batch[:, 0])  # flipped and shifted alike
        batches += 1
    assert batches == len(loader) == 2


def test_objective_draws_from_the_pending_masks_once_then_from_the_cam() -> None:
    images, labels, masks = _masked_data(4)
    up = ablation.MaskSeededUpscaler(tiny_cnn(), GradCAMPlusPlus)
    try:
        up.loader = ablation.MaskSeedLoader(images, labels, masks, batch_size=4, seed=3)
        objective = up.objective()
        batch, batch_labels = next(iter(up.loader))
        pending = up.loader.pending
        assert torch.equal(objective.training_cams(batch, batch_labels), pending)
        assert up.loader.pending is None
        cams = objective.training_cams(batch, batch_labels)  # nothing pending: the seed CAM, as in the library
        assert not torch.equal(cams, pending) and cams.shape == pending.shape
    finally:
        up.close()
