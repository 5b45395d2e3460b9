"""fit under torch.distributed (gloo, 2 CPU processes) equals one process on the same global batch."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import read_checkpoint

PER_RANK_BATCH = 3
WORLD = 2
STEPS = 3


class _Blobs(Dataset):
    """Bright squares on noise, label = quadrant of the square (deterministic per index)."""

    def __len__(self) -> int:
        return WORLD * PER_RANK_BATCH * STEPS

    def __getitem__(self, i: int):
        g = torch.Generator().manual_seed(i)
        image = torch.randn(3, 48, 48, generator=g) * 0.3
        label = i % 4
        y, x = divmod(label, 2)
        image[:, 4 + 22 * y : 20 + 22 * y, 4 + 22 * x : 20 + 22 * x] += 1.5
        return image, label


def _model() -> nn.Module:
    torch.manual_seed(0)

    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(
        stage(3, 8), stage(8, 8), stage(8, 16), stage(16, 16), stage(16, 16),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    ).eval()


def _fit(loader, checkpoint: str | None = None) -> dict[str, torch.Tensor]:
    from pytorch_grad_cam import GradCAM

    # The confidence floor is a quantile over the images of every process (gathered before the fit).
    config = FCAMConfig(
        decoder_channels=(16, 16, 8, 8, 8), crf_method="exact", crf_weight=1e-6, fg_erosion=3,
        fg_confidence_quantile=0.5,
    )
    up = FCAMUpscaler(_model(), GradCAM, config=config)
    up.fit(loader, epochs=1, seed=3, progress=False, checkpoint=checkpoint)
    return {k: v.detach().clone() for k, v in up.decoder.state_dict().items()}


def _worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        loader = DataLoader(_Blobs(), batch_size=PER_RANK_BATCH, shuffle=False)  # sharded by fit
        state = _fit(loader, checkpoint=out + ".ckpt")  # written by rank 0
        if rank == 0:
            torch.save(state, out)
    finally:
        dist.destroy_process_group()


def _rank_ordered_single_process_loader() -> DataLoader:
    # DistributedSampler(shuffle=False) gives rank r the indices r, r + WORLD, ...; a global step
    # holds rank 0's batch then rank 1's batch.
    order = []
    for step in range(STEPS):
        for rank in range(WORLD):
            rank_indices = list(range(rank, len(_Blobs()), WORLD))
            order += rank_indices[step * PER_RANK_BATCH : (step + 1) * PER_RANK_BATCH]
    return DataLoader(Subset(_Blobs(), order), batch_size=WORLD * PER_RANK_BATCH, shuffle=False)


@pytest.mark.skipif(not dist.is_available() or sys.platform == "win32", reason="needs torch.distributed with gloo")
def test_two_process_fit_matches_single_process(tmp_path) -> None:
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_worker, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    distributed = torch.load(out, weights_only=True)
    single = _fit(_rank_ordered_single_process_loader(), checkpoint=str(tmp_path / "single.pt"))
    floors = [read_checkpoint(path)["training"]["confidence_floor"] for path in (out + ".ckpt", tmp_path / "single.pt")]
    assert floors[0] == pytest.approx(floors[1], abs=1e-6)  # not the median of one process's images
    assert distributed.keys() == single.keys()
    for key in single:
        assert torch.allclose(distributed[key].float(), single[key].float(), atol=1e-4, rtol=1e-3), key
    # the runs did train: weights moved away from their (seeded) initialisation
    from fcam_plugin.training import reset_parameters

    untrained = FCAMUpscaler(_model(), "GradCAM", config=FCAMConfig(decoder_channels=(16, 16, 8, 8, 8))).decoder
    with torch.random.fork_rng():
        torch.manual_seed(3)
        reset_parameters(untrained)
    moved = [k for k, v in untrained.state_dict().items() if v.is_floating_point() and not torch.allclose(v, single[k])]
    assert moved
