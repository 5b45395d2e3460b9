"""The F-CAM training loop: seeds from the CAM, partial CE + dense CRF + size barrier on the decoder."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import threading
import warnings
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import nn

from ._checks import CheckpointError, check_images, check_path, describe
from ._state import frozen_eval
from .adapters import upsample_cams
from .distributed import all_reduce_sum, convert_batchnorm, global_batch_slice, rank_and_world, shard_loader
from .encoder import FeatureTaps
from .losses.cross_entropy import partial_cross_entropy
from .losses.crf import dense_crf_loss
from .losses.seeds import IGNORE_INDEX, sample_seeds
from .losses.size import BarrierSchedule, log_barrier_size

if TYPE_CHECKING:
    from .upscaler import FCAMUpscaler

__all__ = ["train"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, so an optimiser step and its bookkeeping are atomic.

    The signal is re-raised on exit for the previous handler. No-op outside the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    except (ValueError, OSError):  # pragma: no cover - e.g. embedded interpreters
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)




def _split_batch(batch: object, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels, *extra)`` -> (images, labels) with errors naming what the loader yielded."""
    if isinstance(batch, dict):
        raise TypeError(
            f"`loader` must yield (images, labels) tuples; batch {index} is a {describe(batch)}: make the "
            "Dataset return (image, label), or give the DataLoader a collate_fn returning (images, labels)."
        )
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
    # NaN CAMs (a model producing NaN) would crash seed sampling: treat them as flat, the loss flags it.
    cams = torch.nan_to_num(upsample_cams(low.float(), size), nan=0.0).clamp(0, 1)
    offset, total = global_batch_slice(images.shape[0])  # (0, B) outside torch.distributed
    seeds = sample_seeds(
        cams, cfg.n_fg, cfg.n_bg, cfg.seed_patch, cfg.fg_erosion, cfg.bg_percentile,
        generator=generator, batch_offset=offset, batch_total=total,
    )
    autocast = torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()
    with autocast:
        logits = decoder(features, size)
    probs = logits.float().softmax(1)
    # Normalise by the global seed count so that DDP's gradient average equals one big batch.
    _, world = rank_and_world()
    seed_count = all_reduce_sum((seeds != IGNORE_INDEX).sum()).float() / world
    terms = {"pce": partial_cross_entropy(logits, seeds, count=seed_count)}
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
            ``checkpoint_every`` steps, on Ctrl-C, and when an error stops a run that made progress.
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
    if not isinstance(max_bad_steps, int) or isinstance(max_bad_steps, bool) or max_bad_steps < 1:
        raise ValueError(f"`max_bad_steps` must be an int >= 1, got {max_bad_steps!r}.")
    if checkpoint is not None:
        checkpoint = check_path("checkpoint", checkpoint)
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)  # fail now, not after an epoch
    if not hasattr(loader, "__iter__"):
        raise TypeError(f"`loader` must be an iterable of (images, labels) batches, got {describe(loader)}.")
    if epochs > 1 and iter(loader) is loader:
        raise ValueError(
            f"`loader` is a one-shot iterator ({type(loader).__name__}) but epochs={epochs}: it would be "
            "empty after the first epoch; pass a re-iterable such as a DataLoader or a list of batches."
        )
    device = upscaler.device
    if amp and device.type != "cuda":
        raise ValueError(f"`amp=True` needs a model on a CUDA device; the model is on {device}.")
    from .upscaler import atomic_save, classifier_fingerprint, read_checkpoint

    loader = shard_loader(loader, seed)
    rank, world = rank_and_world()
    distributed, main = world > 1, rank == 0
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

            # BatchNorm statistics over the global batch (SyncBatchNorm on CUDA, an all-reduce on gloo).
            decoder = convert_batchnorm(decoder, device)
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
            state = upscaler.state(training, fingerprint)
            state["fitted"] = global_step > 0  # a decoder trained for some steps is usable as is
            atomic_save(state, checkpoint)

        run: dict[str, Any] = {"sums": {}, "seen": 0}  # running means of the current epoch
        if resume_state is not None and start_step > 0:
            run["sums"] = dict(resume_state["training"].get("epoch_sums") or {})
            run["seen"] = int(resume_state["training"].get("epoch_seen") or 0)
        generator = torch.Generator(device=device)
        bad_streak = 0
        epoch, step_in_epoch = start_epoch, start_step
        # Where a resumed run continues, always consistent with weights, optimiser, sums and history:
        # updated only inside _deferred_interrupt blocks, written on Ctrl-C or on an error.
        position = (start_epoch, start_step)
        first_global_step = global_step
        partial: list[dict[str, float]] = []  # mean of an epoch cut short by max_steps (not checkpointed)
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
                    step_in_epoch = skip
                    try:
                        for index, batch in enumerate(loader):
                            if index < skip:  # resuming mid-epoch: same order, batches already done
                                bar.update({})
                                continue
                            images, labels = _split_batch(batch, index)
                            images = images.to(device, non_blocking=True)
                            labels = labels.to(device, non_blocking=True)
                            generator.manual_seed(seed * 1_000_003 + global_step)
                            terms = fcam_losses(upscaler, model_for_step, taps, images, labels, t, generator, amp)
                            loss = terms["total"]
                            opt.zero_grad(set_to_none=True)
                            finite = bool(torch.isfinite(loss))
                            if not finite:
                                bad_streak += 1
                                warnings.warn(
                                    f"non-finite F-CAM loss at step {global_step} ({ {k: float(v.detach()) for k, v in terms.items()} }); "
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
                                values = {k: float(v.detach()) for k, v in terms.items()}
                            with _deferred_interrupt():  # the step and its bookkeeping happen together or not at all
                                if finite:
                                    scaler.step(opt)
                                    scaler.update()
                                    for k, v in values.items():
                                        sums[k] = sums.get(k, 0.0) + v
                                    run["seen"] += 1
                                global_step += 1
                                step_in_epoch += 1
                                position = (epoch, step_in_epoch)
                            bar.update(values if finite else {})
                            if checkpoint_every and global_step % checkpoint_every == 0:
                                save_state(epoch, step_in_epoch)
                            if max_steps is not None and global_step >= max_steps:
                                break
                    finally:
                        bar.close()
                    if step_in_epoch == 0:
                        raise ValueError(f"`loader` yielded no batches (epoch {epoch + 1}); it must yield (images, labels).")
                    mean = {k: v / run["seen"] for k, v in sums.items()} | {"epoch": epoch + 1} if run["seen"] else None
                    if max_steps is not None and global_step >= max_steps and step_in_epoch < (total or math.inf):
                        # Stopped mid-epoch: the checkpoint's history excludes this partial epoch (a
                        # resumed run completes it); the returned history shows its mean so far.
                        save_state(*position)
                        partial = [mean] if mean else []
                        break
                    with _deferred_interrupt():
                        if mean:
                            history.append(mean)
                        position = (epoch + 1, 0)
                    save_state(*position)
            except KeyboardInterrupt:
                save_state(*position)
                if checkpoint is not None and main:
                    logger.warning("interrupted: resumable checkpoint written to %s", os.fspath(checkpoint))
                raise
            except Exception:
                if global_step > first_global_step:  # keep the progress made before the error
                    save_state(*position)
                    if checkpoint is not None and main:
                        logger.warning("training failed: resumable checkpoint written to %s", os.fspath(checkpoint))
                raise
            finally:
                decoder.eval()
                upscaler.source.after_fit()
    upscaler.history = history + partial
    return upscaler.history
