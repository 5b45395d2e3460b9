"""The F-CAM training loop: epochs of steps on the decoder, resumable, interruptible, distributed.

It knows nothing of :class:`~fcam_plugin.FCAMUpscaler`: :func:`train` takes the decoder, the
frozen classifier with its feature taps, the objective and the options, and returns the trained
decoder and the per-epoch history. Checkpoints are built by a ``snapshot`` callable that the
caller provides (the upscaler's checkpoint format, see :mod:`fcam_plugin.checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from ._checks import check_images, check_path, describe
from ._state import frozen_eval
from .checkpoint import atomic_save
from .confidence import label_confidence, quantile_floor
from .config import FCAMConfig
from .distributed import convert_batchnorm, rank_and_world, shard_loader
from .losses.size import BarrierSchedule
from .objective import Objective
from .progress import progress_bar
from .taps import FeatureTaps, Tap

__all__ = ["FitOptions", "TrainResult", "TrainState", "train"]

logger = logging.getLogger(__name__)

#: Builds a checkpoint dict from the decoder's training state (``None``: a plain save).
Snapshot = Callable[[nn.Module, "dict[str, Any] | None", bool], "dict[str, Any]"]


# --------------------------------------------------------------------------------- options
def _check_int(name: str, value: object, least: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"`{name}` must be {'None or ' if optional else ''}an int >= {least}, got {value!r}.")


@dataclass
class FitOptions:
    """How one ``fit`` runs (see :meth:`fcam_plugin.FCAMUpscaler.fit` for each field)."""

    epochs: int = 10
    optimizer: Any = None
    amp: bool = False
    seed: int = 0
    progress: bool = True
    checkpoint: str | os.PathLike | None = None
    checkpoint_every: int | None = None
    max_steps: int | None = None
    max_bad_steps: int = 20
    on_epoch_end: Callable[[int, nn.Module, list[dict[str, float]]], None] | None = None

    def validate(self, loader: Any, device: torch.device) -> None:
        """Raise before any work for bad options, a bad checkpoint path or an unusable loader."""
        _check_int("epochs", self.epochs, 1)
        _check_int("max_steps", self.max_steps, 1, optional=True)
        _check_int("checkpoint_every", self.checkpoint_every, 1, optional=True)
        _check_int("max_bad_steps", self.max_bad_steps, 1)
        if self.on_epoch_end is not None and not callable(self.on_epoch_end):
            raise TypeError(f"`on_epoch_end` must be None or a callable, got {describe(self.on_epoch_end)}.")
        if self.checkpoint is not None:
            self.checkpoint = check_path("checkpoint", self.checkpoint)
            os.makedirs(os.path.dirname(os.path.abspath(self.checkpoint)), exist_ok=True)  # fail now, not after an epoch
        if not hasattr(loader, "__iter__"):
            raise TypeError(f"`loader` must be an iterable of (images, labels) batches, got {describe(loader)}.")
        if self.epochs > 1 and iter(loader) is loader:
            raise ValueError(
                f"`loader` is a one-shot iterator ({type(loader).__name__}) but epochs={self.epochs}: it would be "
                "empty after the first epoch; pass a re-iterable such as a DataLoader or a list of batches."
            )
        if self.amp and device.type != "cuda":
            raise ValueError(f"`amp=True` needs a model on a CUDA device; the model is on {device}.")


@dataclass
class TrainState:
    """Where a run stands, always consistent with the weights and the optimiser (a resume point).

    Attributes:
        epoch / step_in_epoch: the next step to run.
        global_step: steps run so far (skipped non-finite steps included).
        history: mean loss terms of every finished epoch.
        sums / seen: running sums of the loss terms over the finite steps of the current epoch.
        confidence_floor: the quantile of the classifier's confidence under which images get no
            foreground seeds (``fg_confidence_quantile``), measured before the first step; None
            when the fit does not use one.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    sums: dict[str, float] = field(default_factory=dict)
    seen: int = 0
    confidence_floor: float | None = None

    @classmethod
    def from_checkpoint(cls, training: dict[str, Any]) -> TrainState:
        state = cls(training["epoch"], training["step_in_epoch"], training["global_step"], list(training["history"]))
        if state.step_in_epoch > 0:  # the running means of the interrupted epoch
            state.sums = dict(training.get("epoch_sums") or {})
            state.seen = int(training.get("epoch_seen") or 0)
        state.confidence_floor = training.get("confidence_floor")
        return state

    def start_epoch(self, epoch: int) -> None:
        if epoch != self.epoch or self.step_in_epoch == 0:
            self.sums, self.seen = {}, 0
        self.epoch = epoch

    def record_step(self, values: dict[str, float] | None) -> None:
        if values is not None:
            for key, value in values.items():
                self.sums[key] = self.sums.get(key, 0.0) + value
            self.seen += 1
        self.global_step += 1
        self.step_in_epoch += 1

    def epoch_mean(self) -> dict[str, float] | None:
        if not self.seen:
            return None
        return {k: v / self.seen for k, v in self.sums.items()} | {"epoch": self.epoch + 1}

    def finish_epoch(self) -> None:
        mean = self.epoch_mean()
        if mean:
            self.history.append(mean)
        self.epoch, self.step_in_epoch = self.epoch + 1, 0

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "history": self.history, "epoch_sums": dict(self.sums), "epoch_seen": self.seen,
            "confidence_floor": self.confidence_floor,
        }


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained decoder (converted for DDP if distributed) and history."""

    decoder: nn.Module
    history: list[dict[str, float]]


# ------------------------------------------------------------------------------- helpers
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


def split_batch(batch: object, index: int) -> tuple[torch.Tensor, torch.Tensor]:
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


def build_optimizer(spec: Any, decoder: nn.Module, config: FCAMConfig) -> torch.optim.Optimizer:
    """The optimiser of a fit: the config's SGD, a factory ``params -> Optimizer``, or a ready one."""
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


def reset_parameters(module: nn.Module) -> None:
    """Re-initialise every sub-module's parameters and running statistics (from the global RNG)."""
    for m in module.modules():
        reset, reset_stats = getattr(m, "reset_parameters", None), getattr(m, "reset_running_stats", None)
        if callable(reset) and m is not module:
            reset()
        if callable(reset_stats):
            reset_stats()


# ---------------------------------------------------------------------------------- trainer
class _Run:
    """One fit: the decoder being trained, its optimiser and scaler, the state and its checkpoints."""

    def __init__(
        self,
        decoder: nn.Module,
        objective: Objective,
        options: FitOptions,
        snapshot: Snapshot,
        resume: dict[str, Any] | None,
        device: torch.device,
        total_steps: int | None = None,
    ) -> None:
        rank, world = rank_and_world()
        self.main, self.options, self.objective, self.snapshot = rank == 0, options, objective, snapshot
        self.device = device
        if resume is None:
            reset_parameters(decoder)
        decoder.train()
        self.step_module: nn.Module = decoder
        if world > 1:
            # BatchNorm statistics over the global batch (SyncBatchNorm on CUDA, an all-reduce on gloo).
            decoder = convert_batchnorm(decoder, device)
            self.step_module = nn.parallel.DistributedDataParallel(
                decoder, device_ids=[device] if device.type == "cuda" else None
            )
        self.decoder = decoder
        self.optimizer = build_optimizer(options.optimizer, decoder, objective.config)
        self.scaler = torch.amp.GradScaler("cuda", enabled=options.amp)
        self.state = TrainState()
        self.anchor: nn.Module | None = None  # the decoder frozen by the early-learning anchor
        if resume is not None:
            self._resume(resume)
        cfg = objective.config
        self.schedule = BarrierSchedule(cfg.barrier_t0, cfg.barrier_factor, cfg.barrier_t_max)
        self.generator = torch.Generator(device=device)
        self.bad_streak = 0
        self.first_global_step = self.state.global_step
        self.partial: list[dict[str, float]] = []  # mean of an epoch cut short by max_steps (not checkpointed)
        # Cosine decay of the default optimiser's learning rate: a function of the global step, so a
        # resumed run follows the same schedule without extra state.
        cosine = options.optimizer is None and cfg.lr_schedule == "cosine"
        self.total_steps = total_steps if cosine and total_steps else None

    def _resume(self, resume: dict[str, Any]) -> None:
        training = resume["training"]
        self.optimizer.load_state_dict(training["optimizer"])
        if self.options.amp and training.get("scaler"):
            self.scaler.load_state_dict(training["scaler"])
        self.state = TrainState.from_checkpoint(training)
        if training.get("anchor") is not None:
            self._freeze_anchor(training["anchor"])
        if training.get("seed") != self.options.seed:
            warnings.warn(
                f"resuming a run started with seed={training.get('seed')} using seed={self.options.seed}", stacklevel=4
            )

    def _freeze_anchor(self, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Keep a frozen copy of the decoder (of its current weights, or of ``state_dict``) as the anchor."""
        anchor = copy.deepcopy(self.decoder)
        if state_dict is not None:
            anchor.load_state_dict(state_dict)
        self.anchor = anchor.requires_grad_(False).eval()

    def _anchor_due(self) -> bool:
        """Whether to take the anchor now, at an epoch's end: on, not taken, ``anchor_steps`` steps run."""
        cfg = self.objective.config
        return cfg.anchor_weight > 0 and self.anchor is None and self.state.global_step >= cfg.anchor_steps

    # ------------------------------------------------------------------ checkpoints
    def save(self) -> None:
        """Write the resumable checkpoint of the current (consistent) state, on the main process."""
        if self.options.checkpoint is None or not self.main:
            return
        training = self.state.to_checkpoint() | {
            "seed": self.options.seed, "epochs": self.options.epochs, "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.options.amp else None,
            "anchor": self.anchor.state_dict() if self.anchor is not None else None,
        }
        # a decoder trained for some steps is usable as is
        atomic_save(self.snapshot(self.decoder, training, self.state.global_step > 0), self.options.checkpoint)

    @contextlib.contextmanager
    def checkpoint_on_failure(self) -> Iterator[None]:
        """On Ctrl-C, or an error after some progress, write the last consistent state, then re-raise."""
        try:
            yield
        except KeyboardInterrupt:
            self.save()
            self._log("interrupted")
            raise
        except Exception:
            if self.state.global_step > self.first_global_step:  # keep the progress made before the error
                self.save()
                self._log("training failed")
            raise

    def _log(self, what: str) -> None:
        if self.options.checkpoint is not None and self.main:
            logger.warning("%s: resumable checkpoint written to %s", what, os.fspath(self.options.checkpoint))

    # ---------------------------------------------------------------- confidence
    def measure_confidence_floor(self, model: nn.Module, loader: Any) -> None:
        """Set the fit's confidence floor (``fg_confidence_quantile``) from one forward pass over
        ``loader``, unless it is off or a resumed checkpoint holds it."""
        quantile = self.objective.config.fg_confidence_quantile
        if quantile <= 0 or self.state.confidence_floor is not None:
            return
        if iter(loader) is loader:
            raise ValueError(
                f"`fg_confidence_quantile={quantile}` reads the loader once before training, but `loader` is a "
                f"one-shot iterator ({type(loader).__name__}); pass a re-iterable such as a DataLoader."
            )
        confidences = []
        total = len(loader) if hasattr(loader, "__len__") else None
        with torch.no_grad(), self.objective.source._own_forwards(), \
                progress_bar(self.options.progress and self.main, total, "confidence") as bar:
            for index, batch in enumerate(loader):
                images, labels = split_batch(batch, index)
                self.objective.source.check_input(f"loader batch {index} images", images)
                scores = model(images.to(self.device, non_blocking=True))
                confidences.append(label_confidence(scores, labels.to(self.device)))
                bar.update(1)
        self.state.confidence_floor = quantile_floor(torch.cat(confidences) if confidences else torch.zeros(0), quantile)

    # --------------------------------------------------------------------- steps
    def out_of_steps(self) -> bool:
        return self.options.max_steps is not None and self.state.global_step >= self.options.max_steps

    def step(self, taps: FeatureTaps, batch: object, index: int, t: float) -> dict[str, float] | None:
        """One optimisation step; returns the loss values, or None for a skipped non-finite step."""
        opts = self.options
        images, labels = split_batch(batch, index)
        self.objective.source.check_input(f"loader batch {index} images", images)
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        self.generator.manual_seed(opts.seed * 1_000_003 + self.state.global_step)
        start = self.objective.config.self_training_from
        self_train = start > 0 and self.state.epoch + 1 >= start
        terms = self.objective(
            self.step_module, taps, images, labels, t, self.generator, opts.amp, self_train, self.anchor,
            self.state.confidence_floor or 0.0,
        )
        loss = terms["total"]
        self.optimizer.zero_grad(set_to_none=True)
        values = None
        if bool(torch.isfinite(loss)):
            self.bad_streak = 0
            self.scaler.scale(loss).backward()
            values = {k: float(v.detach()) for k, v in terms.items()}
        else:
            self._bad_step(terms)
        with _deferred_interrupt():  # the step and its bookkeeping happen together or not at all
            if values is not None:
                self._schedule_lr()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            self.state.record_step(values)
        return values

    def _schedule_lr(self) -> None:
        """Set the cosine-decayed learning rate of this step (nothing for a constant rate or a user's optimiser)."""
        if self.total_steps is None:
            return
        progress = min(self.state.global_step / self.total_steps, 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.objective.config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _bad_step(self, terms: dict[str, torch.Tensor]) -> None:
        self.bad_streak += 1
        warnings.warn(
            f"non-finite F-CAM loss at step {self.state.global_step} "
            f"({ {k: float(v.detach()) for k, v in terms.items()} }); step skipped",
            RuntimeWarning, stacklevel=5,
        )
        if self.bad_streak >= self.options.max_bad_steps:
            raise FloatingPointError(
                f"F-CAM training stopped: {self.bad_streak} consecutive non-finite losses. "
                "Check the images for NaN/Inf, lower the learning rate or the loss weights."
            )

    # -------------------------------------------------------------------- epochs
    def epoch(self, taps: FeatureTaps, loader: Any, epoch: int) -> bool:
        """Run (the rest of) one epoch; returns False when ``max_steps`` stopped the run inside it."""
        opts = self.options
        torch.manual_seed(opts.seed + 7919 * (epoch + 1))
        set_epoch = getattr(getattr(loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(epoch)
        t = self.schedule(epoch)
        skip = self.state.step_in_epoch if epoch == self.state.epoch else 0
        self.state.start_epoch(epoch)
        self.state.step_in_epoch = skip
        total = len(loader) if hasattr(loader, "__len__") else None
        with progress_bar(opts.progress and self.main, total, f"fit {epoch + 1}/{opts.epochs}", leave=True) as bar:
            for index, batch in enumerate(loader):
                if index < skip:  # resuming mid-epoch: same order, batches already done
                    bar.update(1)
                    continue
                bar.update(1, self.step(taps, batch, index, t))
                if opts.checkpoint_every and self.state.global_step % opts.checkpoint_every == 0:
                    self.save()
                if self.out_of_steps():
                    break
        if self.state.step_in_epoch == 0:
            raise ValueError(f"`loader` yielded no batches (epoch {epoch + 1}); it must yield (images, labels).")
        if self.out_of_steps() and self.state.step_in_epoch < (total or math.inf):
            # Stopped mid-epoch: the checkpoint's history excludes this partial epoch (a resumed run
            # completes it); the returned history shows its mean so far.
            self.save()
            mean = self.state.epoch_mean()
            self.partial = [mean] if mean else []
            return False
        with _deferred_interrupt():
            self.state.finish_epoch()
            if self._anchor_due():
                self._freeze_anchor()
        self.save()
        if opts.on_epoch_end is not None:
            opts.on_epoch_end(epoch + 1, self.decoder, list(self.state.history))
            self.decoder.train()
        return True


def _total_steps(loader: Any, options: FitOptions) -> int | None:
    """Optimisation steps of ``options.epochs`` epochs (None when the loader has no length).

    ``max_steps`` does not shorten it: a run cut by ``max_steps`` and resumed follows the schedule
    of the uninterrupted run.
    """
    try:
        return options.epochs * len(loader)
    except TypeError:
        return None


def train(
    decoder: nn.Module,
    model: nn.Module,
    taps: Sequence[Tap],
    objective: Objective,
    loader: Any,
    options: FitOptions,
    snapshot: Snapshot,
    *,
    device: torch.device,
    resume: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``decoder`` on ``loader``; the classifier ``model`` is frozen and restored afterwards.

    Args:
        decoder: the decoder to train (re-initialised from ``options.seed`` unless resuming).
        model: the frozen classifier, read through ``taps``.
        taps: the skip layers feeding the decoder.
        objective: the loss of one step (seeds from the wrapped CAM method, CRF, size).
        loader: yields ``(images, labels)`` or ``(images, labels, *extra)``.
        options: epochs, optimiser, AMP, seed, progress, checkpoints, step limits (validated here).
        snapshot: ``(decoder, training_state, fitted) -> checkpoint dict`` for resumable checkpoints.
        device: the model's device.
        resume: a checkpoint written by an earlier run, its decoder weights already loaded; the
            result equals an uninterrupted run with the same seed and loader.

    Returns:
        The trained decoder (the same object unless converted for distributed BatchNorm) and the
        per-epoch mean loss terms.
    """
    options.validate(loader, device)
    loader = shard_loader(loader, options.seed)
    cuda_devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(options.seed)
        run = _Run(decoder, objective, options, snapshot, resume, device, _total_steps(loader, options))
        with frozen_eval(model), FeatureTaps(model, taps) as hooks, run.checkpoint_on_failure():
            try:
                run.measure_confidence_floor(model, loader)
                for epoch in range(run.state.epoch, options.epochs):
                    if run.out_of_steps() or not run.epoch(hooks, loader, epoch):
                        break
            finally:
                run.decoder.eval()
                objective.source.after_fit()
    return TrainResult(run.decoder, run.state.history + run.partial)
