"""The F-CAM training loop: seeds from the CAM, partial CE + dense CRF + size barrier on the decoder."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from ._checks import CheckpointError, check_images, describe
from ._state import frozen_eval
from .adapters import upsample_cams
from .encoder import FeatureTaps
from .losses.cross_entropy import partial_cross_entropy
from .losses.crf import dense_crf_loss
from .losses.seeds import sample_seeds
from .losses.size import BarrierSchedule, log_barrier_size

if TYPE_CHECKING:
    from .upscaler import FCAMUpscaler

__all__ = ["train"]

logger = logging.getLogger(__name__)




def _split_batch(batch: object, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels, *extra)`` -> (images, labels) with errors naming what the loader yielded."""
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"`loader` must yield (images, labels) or (images, labels, *extra); batch {index} is "
            f"{describe(batch)}."
        )
    images, labels = batch[0], batch[1]
    check_images(f"loader batch {index} images", images)
    if isinstance(labels, (list, tuple)):
        labels = torch.as_tensor(labels)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"`loader` batch {index} labels must be a tensor of class indices (B,), got {describe(labels)}.")
    if labels.ndim == 2 and labels.shape == (images.shape[0], labels.shape[1]) and labels.shape[1] > 1:
        raise ValueError(
            f"`loader` batch {index} labels look one-hot / multi-label, shape {list(labels.shape)}; F-CAM "
            "needs class indices (B,): use labels.argmax(1)."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.is_floating_point():
        raise ValueError(
            f"`loader` batch {index} labels must be integer class indices of shape ({images.shape[0]},), "
            f"got {describe(labels)}."
        )
    return images, labels.long()


def _build_optimizer(spec: Any, decoder: nn.Module, config: Any) -> torch.optim.Optimizer:
    params = list(decoder.parameters())
    if spec is None:
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    if isinstance(spec, torch.optim.Optimizer):
        ids = {id(p) for group in spec.param_groups for p in group["params"]}
        if not ids or not ids <= {id(p) for p in params}:
            raise ValueError(
                "`optimizer` instance must optimise the decoder's parameters (up.decoder.parameters()); "
                "pass a factory such as `lambda params: torch.optim.AdamW(params, lr=1e-3)` instead."
            )
        return spec
    if callable(spec):
        optimizer = spec(params)
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"`optimizer` factory must return a torch.optim.Optimizer, got {describe(optimizer)}.")
        return optimizer
    raise TypeError(
        f"`optimizer` must be None, a torch.optim.Optimizer on the decoder's parameters, or a factory "
        f"taking the parameters, got {describe(spec)}."
    )


def _distributed_loader(loader: Any, seed: int) -> Any:
    """Under torch.distributed, shard a plain DataLoader with a DistributedSampler (unless it has one)."""
    from torch.utils.data import DataLoader, RandomSampler
    from torch.utils.data.distributed import DistributedSampler

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return loader
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_sampler is not None and loader.batch_size is None:
        raise ValueError("`loader` with a custom batch_sampler cannot be sharded automatically; use a DistributedSampler.")
    sampler = DistributedSampler(
        loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed, drop_last=loader.drop_last
    )
    return DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
        collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
    )


def _is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _reset_parameters(module: nn.Module) -> None:
    for m in module.modules():
        if hasattr(m, "reset_parameters") and m is not module:
            m.reset_parameters()
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()


class _Progress:
    """tqdm bar per epoch when wanted (main process only), a no-op otherwise."""

    def __init__(self, enabled: bool, total: int | None, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, leave=True, dynamic_ncols=True)

    def update(self, terms: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items()}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def fcam_losses(
    upscaler: "FCAMUpscaler",
    decoder: nn.Module,
    taps: FeatureTaps,
    images: torch.Tensor,
    labels: torch.Tensor,
    t: float,
    generator: torch.Generator | None,
    amp: bool,
) -> dict[str, torch.Tensor]:
    """Loss terms of one step (``total`` included) for a batch already on the model's device."""
    cfg = upscaler.config
    size = tuple(images.shape[-2:])
    taps.arm()
    low = upscaler.source.cams(images, labels)
    features = taps.collect()
    cams = upsample_cams(low.float(), size).clamp(0, 1)
    seeds = sample_seeds(
        cams, cfg.n_fg, cfg.n_bg, cfg.seed_patch, cfg.fg_erosion, cfg.bg_percentile, generator=generator
    )
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with autocast:
        logits = decoder(features, size)
    probs = logits.float().softmax(1)
    terms = {"pce": partial_cross_entropy(logits, seeds)}
    if cfg.crf_weight > 0:
        mean = torch.tensor(cfg.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg.std, device=images.device).view(1, 3, 1, 1)
        rgb = ((images.float() * std + mean) * 255).clamp(0, 255)
        terms["crf"] = dense_crf_loss(
            probs, rgb, sigma_xy=cfg.sigma_xy, sigma_rgb=cfg.sigma_rgb, weight=cfg.crf_weight, method=cfg.crf_method
        )
    if cfg.size_weight > 0:
        terms["size"] = cfg.size_weight * log_barrier_size(probs, t)
    terms["total"] = sum(terms.values())  # type: ignore[assignment]
    return terms


def train(
    upscaler: "FCAMUpscaler",
    loader: Any,
    epochs: int = 10,
    *,
    optimizer: Any = None,
    amp: bool = False,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: str | os.PathLike | None = None,
    max_steps: int | None = None,
    max_bad_steps: int = 20,
) -> list[dict[str, float]]:
    """Train ``upscaler.decoder`` on ``loader``; the classifier is frozen and restored afterwards.

    Args:
        upscaler: the upscaler whose decoder is trained.
        loader: yields ``(images, labels)`` or ``(images, labels, *extra)``.
        epochs: passes over the loader (>= 1).
        optimizer: None (SGD with the config's reference defaults), a factory
            ``params -> Optimizer``, or an optimizer already built on the decoder's parameters.
        amp: float16 autocast for the decoder (CUDA only).
        seed: makes the run reproducible (decoder init, seed sampling, loader shuffling); the
            caller's global RNG state is left untouched.
        progress: show a progress bar with the loss terms.
        checkpoint: path of a resumable checkpoint, written atomically at each epoch end, every
            ``checkpoint_every`` steps, and on Ctrl-C.
        checkpoint_every: steps between checkpoints (default: epoch ends only).
        resume: checkpoint to continue from; the result equals an uninterrupted run with the same
            seed and loader.
        max_steps: stop after this many optimisation steps in total (for quick runs).
        max_bad_steps: consecutive non-finite losses tolerated (each skipped with a warning).

    Returns:
        Per-epoch mean loss terms (also appended to ``upscaler.history``).
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"`epochs` must be an int >= 1, got {epochs!r}.")
    if max_steps is not None and (not isinstance(max_steps, int) or max_steps < 1):
        raise ValueError(f"`max_steps` must be None or an int >= 1, got {max_steps!r}.")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int) or checkpoint_every < 1):
        raise ValueError(f"`checkpoint_every` must be None or an int >= 1, got {checkpoint_every!r}.")
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"`loader` must be an iterable of (images, labels) batches, got {describe(loader)}.")
    device = upscaler.device
    if amp and device.type != "cuda":
        raise ValueError(f"`amp=True` needs a model on a CUDA device; the model is on {device}.")
    from .upscaler import atomic_save, classifier_fingerprint, read_checkpoint

    loader = _distributed_loader(loader, seed)
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    main = _is_main_process()
    decoder = upscaler.decoder
    schedule = BarrierSchedule(upscaler.config.barrier_t0, upscaler.config.barrier_factor, upscaler.config.barrier_t_max)
    fingerprint = classifier_fingerprint(upscaler.model)
    cuda_devices = [device] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        start_epoch, start_step, global_step, history = 0, 0, 0, []
        resume_state = None
        if resume is not None:
            resume_state = read_checkpoint(resume)
            if not resume_state.get("training"):
                raise CheckpointError(f"`resume` checkpoint {os.fspath(resume)!r} holds no training state (saved by save(), not by fit).")
            upscaler.load_state(resume_state, resume)
        else:
            _reset_parameters(decoder)
        decoder.train()
        model_for_step: nn.Module = decoder
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            if device.type == "cuda":
                decoder = nn.SyncBatchNorm.convert_sync_batchnorm(decoder)
                upscaler.decoder = decoder
            model_for_step = DistributedDataParallel(decoder, device_ids=[device] if device.type == "cuda" else None)
        opt = _build_optimizer(optimizer, decoder, upscaler.config)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        if resume_state is not None:
            training = resume_state["training"]
            opt.load_state_dict(training["optimizer"])
            if amp and training.get("scaler"):
                scaler.load_state_dict(training["scaler"])
            start_epoch, start_step = training["epoch"], training["step_in_epoch"]
            global_step, history = training["global_step"], list(training["history"])
            if training.get("seed") != seed:
                warnings.warn(f"resuming a run started with seed={training.get('seed')} using seed={seed}", stacklevel=3)

        def save_state(epoch: int, step_in_epoch: int) -> None:
            if checkpoint is None or not main:
                return
            training = {
                "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
                "history": history, "seed": seed, "epochs": epochs,
                "epoch_sums": dict(run["sums"]), "epoch_seen": run["seen"],
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if amp else None,
            }
            atomic_save(upscaler.state(training, fingerprint), checkpoint)

        run: dict[str, Any] = {"sums": {}, "seen": 0}  # running means of the current epoch
        if resume_state is not None and start_step > 0:
            run["sums"] = dict(resume_state["training"].get("epoch_sums") or {})
            run["seen"] = int(resume_state["training"].get("epoch_seen") or 0)
        generator = torch.Generator(device=device)
        bad_streak = 0
        epoch, step_in_epoch = start_epoch, start_step
        with frozen_eval(upscaler.model), FeatureTaps(upscaler.model, upscaler.taps) as taps:
            try:
                for epoch in range(start_epoch, epochs):
                    if max_steps is not None and global_step >= max_steps:
                        break
                    torch.manual_seed(seed + 7919 * (epoch + 1))
                    sampler = getattr(loader, "sampler", None)
                    if hasattr(sampler, "set_epoch"):
                        sampler.set_epoch(epoch)
                    t = schedule(epoch)
                    if epoch != start_epoch or start_step == 0:
                        run["sums"], run["seen"] = {}, 0
                    sums = run["sums"]
                    total = len(loader) if hasattr(loader, "__len__") else None
                    bar = _Progress(progress and main, total, f"fit {epoch + 1}/{epochs}")
                    skip = start_step if epoch == start_epoch else 0
                    step_in_epoch = 0
                    try:
                        for index, batch in enumerate(loader):
                            if index < skip:  # resuming mid-epoch: same order, batches already done
                                step_in_epoch += 1
                                bar.update({})
                                continue
                            images, labels = _split_batch(batch, index)
                            images = images.to(device, non_blocking=True)
                            labels = labels.to(device, non_blocking=True)
                            generator.manual_seed(seed * 1_000_003 + global_step)
                            terms = fcam_losses(upscaler, model_for_step, taps, images, labels, t, generator, amp)
                            loss = terms["total"]
                            opt.zero_grad(set_to_none=True)
                            if not torch.isfinite(loss):
                                bad_streak += 1
                                warnings.warn(
                                    f"non-finite F-CAM loss at step {global_step} ({ {k: float(v) for k, v in terms.items()} }); "
                                    "step skipped", RuntimeWarning, stacklevel=2,
                                )
                                if bad_streak >= max_bad_steps:
                                    raise FloatingPointError(
                                        f"F-CAM training stopped: {bad_streak} consecutive non-finite losses. "
                                        "Check the images for NaN/Inf, lower the learning rate or the loss weights."
                                    )
                            else:
                                bad_streak = 0
                                scaler.scale(loss).backward()
                                scaler.step(opt)
                                scaler.update()
                                values = {k: float(v.detach()) for k, v in terms.items()}
                                for k, v in values.items():
                                    sums[k] = sums.get(k, 0.0) + v
                                run["seen"] += 1
                                bar.update(values)
                            global_step += 1
                            step_in_epoch += 1
                            if checkpoint_every and global_step % checkpoint_every == 0:
                                save_state(epoch, step_in_epoch)
                            if max_steps is not None and global_step >= max_steps:
                                break
                    finally:
                        bar.close()
                    if step_in_epoch == 0:
                        raise ValueError(f"`loader` yielded no batches (epoch {epoch + 1}); it must yield (images, labels).")
                    if run["seen"]:
                        history.append({k: v / run["seen"] for k, v in sums.items()} | {"epoch": epoch + 1})
                    if max_steps is not None and global_step >= max_steps and step_in_epoch < (total or math.inf):
                        save_state(epoch, step_in_epoch)
                        break
                    save_state(epoch + 1, 0)
            except KeyboardInterrupt:
                save_state(epoch, step_in_epoch)
                if checkpoint is not None and main:
                    logger.warning("interrupted: resumable checkpoint written to %s", os.fspath(checkpoint))
                raise
            finally:
                decoder.eval()
                upscaler.source.after_fit()
    upscaler.history = history
    return history
