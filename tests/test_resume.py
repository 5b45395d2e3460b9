"""Nothing is lost on interruption, and numerical faults are survived or reported clearly.

An interrupted run (Ctrl-C from the loader, a hook or the optimiser step; an error; ``max_steps``)
resumed from its checkpoint must end with exactly the decoder weights and history of an
uninterrupted run with the same seed.
"""

from __future__ import annotations

import signal
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import tiny_cnn
from torch import nn

import fcam_plugin.objective as objective
from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import read_checkpoint
from fcam_plugin.losses.size import log_barrier, log_barrier_size

EPOCHS, BATCHES, SEED = 2, 4, 3
# Constant rate: one test interrupts a run driven by its own SGD (which is never rescheduled) and
# resumes it with the default optimiser; the cosine schedule's resume is tested in test_lr_schedule.
CONFIG = dict(decoder_channels=(8, 8, 8, 8, 8), lr_schedule="constant")


class Loader:
    """A re-iterable of BATCHES batches that can raise ``error`` when global batch ``at`` is fetched."""

    def __init__(self, error: BaseException | None = None, at: int = -1) -> None:
        g = torch.Generator().manual_seed(1)
        x = torch.randn(BATCHES * 3, 3, 32, 32, generator=g)
        y = torch.randint(0, 3, (BATCHES * 3,), generator=g)
        self.batches = [(x[i : i + 3], y[i : i + 3]) for i in range(0, len(x), 3)]
        self.error, self.at, self.fetched = error, at, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in self.batches:
            if self.fetched == self.at and self.error is not None:
                self.fetched += 1
                raise self.error
            self.fetched += 1
            yield batch

    def __len__(self) -> int:
        return len(self.batches)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture(scope="module")
def reference(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    up.fit(Loader(), epochs=EPOCHS, seed=SEED, progress=False)
    return _weights(up), up.history


def _weights(up: FCAMUpscaler) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in up.decoder.state_dict().items()}


def _resume_and_compare(model: nn.Module, checkpoint: Path, reference: Any, **kwargs: Any) -> FCAMUpscaler:
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    up.fit(Loader(), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=checkpoint, resume=checkpoint, **kwargs)
    weights, history = reference
    got = _weights(up)
    assert got.keys() == weights.keys()
    for key in weights:  # bit-identical, not just close
        assert torch.equal(got[key], weights[key]), key
    assert up.history == history
    assert up.fitted
    return up


def _position(checkpoint: Path) -> tuple[int, int, int]:
    t = read_checkpoint(checkpoint)["training"]
    return t["epoch"], t["step_in_epoch"], t["global_step"]


# ----------------------------------------------------------------------------- resume
@pytest.mark.parametrize("max_steps", [3, 4], ids=["mid-epoch", "epoch-boundary"])
def test_max_steps_then_resume_equals_uninterrupted(model, reference, tmp_path, max_steps) -> None:
    ckpt = tmp_path / "run.pt"
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    history = up.fit(Loader(), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt, max_steps=max_steps).history
    assert _position(ckpt) == ((0, 3, 3) if max_steps == 3 else (1, 0, 4))
    # The returned history shows the partial epoch; the checkpoint's does not (a resume completes it).
    assert len(history) == 1 and history[0]["epoch"] == 1
    assert len(read_checkpoint(ckpt)["training"]["history"]) == (0 if max_steps == 3 else 1)
    _resume_and_compare(model, ckpt, reference)


def test_ctrl_c_from_the_loader_then_resume(model, reference, tmp_path) -> None:
    ckpt = tmp_path / "run.pt"
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with pytest.raises(KeyboardInterrupt):  # fetching the 2nd batch of epoch 2: 5 steps done
        up.fit(Loader(KeyboardInterrupt(), at=5), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt)
    assert _position(ckpt) == (1, 1, 5)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no half-written files
    _resume_and_compare(model, ckpt, reference)


def test_ctrl_c_from_a_forward_hook_then_resume(model, reference, tmp_path) -> None:
    ckpt = tmp_path / "run.pt"
    calls = [0]
    forwards_per_step = 2 if FCAMConfig(**CONFIG).flip_weight > 0 else 1  # the mirrored images' forward

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        calls[0] += 1
        if calls[0] == 2 * forwards_per_step + 1:  # inside the 3rd step's loss computation: 2 steps done
            raise KeyboardInterrupt

    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    handle = model[-1].register_forward_hook(hook)
    try:
        with pytest.raises(KeyboardInterrupt):
            up.fit(Loader(), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt)
    finally:
        handle.remove()
    assert _position(ckpt) == (0, 2, 2)
    _resume_and_compare(model, ckpt, reference)


class _SignallingSGD(torch.optim.SGD):
    """The default optimiser (same hyper-parameters) that delivers SIGINT in the middle of step ``at``."""

    def __init__(self, params: Any, at: int) -> None:
        cfg = FCAMConfig()
        super().__init__(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        self.at, self.count = at, 0

    def step(self, closure: Any = None) -> Any:
        self.count += 1
        if self.count == self.at:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives while the weights are being updated
        return super().step(closure)


@pytest.fixture
def interactive_sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal, also when the test process was started with
    SIGINT ignored (a background job of a non-interactive shell, as some CI runners start it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_during_the_optimiser_step_is_deferred(model, reference, tmp_path, interactive_sigint) -> None:
    """A real SIGINT inside ``optimizer.step``: the step and its bookkeeping complete, then the run stops."""
    ckpt = tmp_path / "run.pt"
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with pytest.raises(KeyboardInterrupt):
        up.fit(Loader(), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt,
               optimizer=lambda params: _SignallingSGD(params, at=6))
    assert _position(ckpt) == (1, 2, 6)  # step 6 was completed, not half-applied nor lost
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    _resume_and_compare(model, ckpt, reference)


def test_an_error_mid_epoch_keeps_the_progress(model, reference, tmp_path) -> None:
    ckpt = tmp_path / "run.pt"
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with pytest.raises(OSError, match="disk"):
        up.fit(Loader(OSError("disk unplugged"), at=6), epochs=EPOCHS, seed=SEED, progress=False, checkpoint=ckpt)
    assert _position(ckpt) == (1, 2, 6)
    _resume_and_compare(model, ckpt, reference)


def test_periodic_checkpoint_survives_a_failing_save(model, tmp_path, monkeypatch) -> None:
    """A crash while writing a checkpoint leaves the previous one intact and no temporary file."""
    ckpt = tmp_path / "run.pt"
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    up.fit(Loader(), epochs=1, seed=SEED, progress=False, checkpoint=ckpt, max_steps=2, checkpoint_every=1)
    before = ckpt.read_bytes()
    real_save = torch.save

    def failing_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        f.write(b"partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="no space"):
        up.fit(Loader(), epochs=1, seed=SEED, progress=False, checkpoint=ckpt, resume=ckpt, checkpoint_every=1)
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_bad_checkpoint_path_fails_before_training(model, tmp_path) -> None:
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    loader = Loader(RuntimeError("the loader must not be touched"), at=0)
    with pytest.raises(ValueError, match="`checkpoint`.*folder"):
        up.fit(loader, epochs=1, progress=False, checkpoint=tmp_path)
    assert loader.fetched == 0


# ---------------------------------------------------------------------- numerical faults
def _nan_size_term(steps: set[int]) -> Any:
    """A size term that is NaN at the given (0-based) calls, normal otherwise."""
    real, calls = objective.log_barrier_size, [0]

    def term(probs: torch.Tensor, t: float) -> torch.Tensor:
        value = real(probs, t)
        calls[0] += 1
        return value * float("nan") if calls[0] - 1 in steps else value

    return term


def test_nan_loss_steps_are_skipped_with_a_warning(model, monkeypatch) -> None:
    monkeypatch.setattr(objective, "log_barrier_size", _nan_size_term({1, 2}))
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with pytest.warns(RuntimeWarning) as record:
        up.fit(Loader(), epochs=1, seed=SEED, progress=False, max_bad_steps=3)
    messages = [str(w.message) for w in record if "non-finite" in str(w.message)]
    assert [m[:33] for m in messages] == ["non-finite F-CAM loss at step 1 (", "non-finite F-CAM loss at step 2 ("]
    assert all("'size': nan" in m and "step skipped" in m for m in messages)
    assert all(torch.isfinite(p).all() for p in up.decoder.state_dict().values())
    assert len(up.history) == 1 and all(v == v for v in up.history[0].values())  # mean of the 2 good steps


def test_persistent_nan_loss_stops_with_a_clear_error(model, monkeypatch) -> None:
    monkeypatch.setattr(objective, "log_barrier_size", _nan_size_term(set(range(100))))
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(FloatingPointError, match="3 consecutive non-finite losses"):
            up.fit(Loader(), epochs=1, seed=SEED, progress=False, max_bad_steps=3)
    assert not up.fitted


def test_model_producing_nan_is_reported_not_crashing() -> None:
    """NaN features (a broken classifier) give NaN CAMs and losses: skipped, then a clear error."""
    model = tiny_cnn()
    with torch.no_grad():
        model[0][0].weight.fill_(float("nan"))
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**CONFIG))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(FloatingPointError, match="consecutive non-finite"):
            up.fit(Loader(), epochs=1, seed=SEED, progress=False, max_bad_steps=2)
    assert [str(w.message)[:25] for w in record] == ["non-finite F-CAM loss at "] * 2


@pytest.mark.parametrize("t", [1e-6, 1.0, 10.0, 1e6, 1e20, 1e40, 1e160, 1e300])
@pytest.mark.parametrize("fill,side", [(0.0, 8), (1.0, 64), (0.5, 256)], ids=["zero-probs", "one-probs", "large"])
def test_size_barrier_is_finite_for_extreme_inputs(t: float, fill: float, side: int) -> None:
    probs = torch.full((2, 2, side, side), fill, requires_grad=True)
    value = log_barrier_size(probs, t)
    value.backward()
    assert torch.isfinite(value)
    if t * 1.0 < 1e37:  # the true slope of the violated branch is t / (B*K): beyond float32 for t >~ 1e38
        assert torch.isfinite(probs.grad).all()


def test_size_barrier_all_zero_probabilities_is_penalised() -> None:
    zero = log_barrier_size(torch.zeros(1, 2, 8, 8), 5.0)
    full = log_barrier_size(torch.full((1, 2, 8, 8), 0.5), 5.0)
    assert torch.isfinite(zero) and zero > full
    z = torch.tensor([-1e30, -1.0, -1e-3, 0.0, 1.0, 1e30], dtype=torch.float64)
    assert torch.isfinite(log_barrier(z, 10.0)).all()
