"""torch.distributed support for ``fit``: sharded loading, synchronised BatchNorm, global seed draws.

``fit`` works unchanged under ``torchrun``: the decoder is wrapped in DistributedDataParallel, its
BatchNorm layers use statistics of the whole global batch, a plain DataLoader is re-built with a
DistributedSampler, seed pixels are drawn from one global random tensor, and only rank 0 shows
progress and writes checkpoints. A run on P processes with per-process batch b then matches one
process with batch P*b made of the processes' batches in rank order, up to floating point.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistributedBatchNorm2d", "all_gather_cat", "all_reduce_sum", "convert_batchnorm", "global_batch_slice", "is_distributed", "rank_and_world", "shard_loader"]


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    """(rank, world size), (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device(device: torch.device) -> torch.device:
    """Where a collective's tensor must live: the batch's GPU under NCCL (never the current default)."""
    if dist.get_backend() == "nccl" and device.type != "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def global_batch_slice(batch_size: int, device: torch.device | None = None) -> tuple[int, int]:
    """(offset, total): where this process's batch sits in the global batch, in rank order.

    ``device`` is the batch's device: NCCL reduces on it, so ranks that did not call
    ``torch.cuda.set_device`` still use their own GPU.
    """
    if not is_distributed():
        return 0, batch_size
    rank, world = rank_and_world()
    sizes = torch.zeros(world, dtype=torch.int64, device=_collective_device(device or torch.device("cpu")))
    sizes[rank] = batch_size
    dist.all_reduce(sizes)
    sizes = sizes.cpu()
    return int(sizes[:rank].sum()), int(sizes.sum())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes (no gradient); identity outside torch.distributed."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone().to(_collective_device(tensor.device))
    dist.all_reduce(out)
    return out.to(tensor.device)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """The 1-D tensors of all processes concatenated in rank order; identity outside torch.distributed."""
    if not is_distributed():
        return tensor
    offset, total = global_batch_slice(tensor.numel(), tensor.device)
    # Each process writes its values at its offset of a zero tensor; the sum is the concatenation.
    out = torch.zeros(total, dtype=tensor.dtype, device=_collective_device(tensor.device))
    out[offset : offset + tensor.numel()] = tensor.detach().reshape(-1).to(out.device)
    dist.all_reduce(out)
    return out.to(tensor.device)


class DistributedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch, on any backend (gloo on CPU too).

    torch's ``SyncBatchNorm`` is used on CUDA; this twin all-reduces per-channel sums with the
    differentiable ``torch.distributed.nn.functional.all_reduce``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        xf = x.float()
        count = torch.tensor([xf.numel() / c], device=x.device, dtype=torch.float32)
        stats = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count])
        stats = all_reduce(stats)
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None:
            assert self.running_var is not None and self.num_batches_tracked is not None  # tracked together
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1).clamp_min(1))
                self.num_batches_tracked += 1
        y = (xf - mean.view(1, c, 1, 1)) * torch.rsqrt(var.view(1, c, 1, 1) + self.eps)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Swap BatchNorm2d layers for synchronised ones (in place where possible); returns the module."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = DistributedBatchNorm2d(
                child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats
            ).to(device)
            # Keep the same Parameter and buffer objects (an optimiser built on them stays valid),
            # as torch's SyncBatchNorm conversion does.
            if child.affine:
                synced.weight, synced.bias = child.weight, child.bias
            for key in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(synced, key, getattr(child, key))
            synced.train(child.training)
            setattr(module, name, synced)
        else:
            convert_batchnorm(child, device)
    return module


def shard_loader(loader: Any, seed: int) -> Any:
    """Under torch.distributed, re-build a plain DataLoader with a DistributedSampler.

    Loaders that already use a DistributedSampler, and iterables that are not DataLoaders, are
    returned unchanged (they must shard themselves).
    """
    from torch.utils.data import DataLoader, RandomSampler
    from torch.utils.data.distributed import DistributedSampler

    if not is_distributed() or not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_size is None:
        raise ValueError(
            "`loader` uses a custom batch_sampler and cannot be sharded automatically under "
            "torch.distributed; build it with a DistributedSampler."
        )
    sampler: DistributedSampler = DistributedSampler(
        loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed, drop_last=loader.drop_last
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )
