"""Checkpoints are versioned, self-describing and safe: bad files give ``CheckpointError``, never code execution."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from _helpers import tiny_cnn
from torch import nn

from fcam_plugin import CheckpointError, FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import CHECKPOINT_FORMAT, SCHEMA_VERSION, atomic_save, read_checkpoint

CONFIG = dict(decoder_channels=(8, 8, 8, 8, 8))


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_cnn()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def saved(model: nn.Module, images: torch.Tensor, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FCAMUpscaler]:
    up = FCAMUpscaler(model, "GradCAMPlusPlus", config=FCAMConfig(**CONFIG))
    up.fit([(images, torch.tensor([0, 2]))], epochs=2, progress=False)
    path = tmp_path_factory.mktemp("ckpt") / "fcam.pt"
    up.save(path)
    return path, up


def _state(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------- round trip
def test_save_load_round_trip_gives_identical_maps(saved, model, images) -> None:
    path, up = saved
    loaded = FCAMUpscaler.load(path, model, "GradCAMPlusPlus")
    assert loaded.fitted and loaded.config == up.config
    assert torch.equal(loaded.maps(images), up.maps(images))
    assert (loaded(input_tensor=images) == up(input_tensor=images)).all()
    state = _state(path)
    assert state["format"] == CHECKPOINT_FORMAT and state["schema_version"] == SCHEMA_VERSION
    assert state["method"] == {"library": "pytorch-grad-cam", "name": "GradCAMPlusPlus"}
    assert isinstance(state["versions"]["torch"], str) and type(state["versions"]["torch"]) is str


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_honour_the_umask_like_torch_save(saved, tmp_path, umask) -> None:
    _, up = saved
    previous = os.umask(umask)
    try:
        up.save(tmp_path / "ours.pt")
        torch.save({}, tmp_path / "torch.pt")
    finally:
        os.umask(previous)
    mode = (tmp_path / "ours.pt").stat().st_mode & 0o777
    assert mode == (tmp_path / "torch.pt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_ddp_and_compile_prefixes_are_stripped(saved, model, images, tmp_path) -> None:
    path, up = saved
    state = _state(path)
    state["decoder"] = {f"module._orig_mod.{k}": v for k, v in state["decoder"].items()}
    atomic_save(state, tmp_path / "ddp.pt")
    assert torch.equal(FCAMUpscaler.load(tmp_path / "ddp.pt", model, "GradCAMPlusPlus").maps(images), up.maps(images))


# ------------------------------------------------------------------------- bad files
def _truncated(path: Path, tmp: Path) -> Path:
    data = path.read_bytes()
    (tmp / "bad.pt").write_bytes(data[: len(data) // 2])
    return tmp / "bad.pt"


def _random_bytes(path: Path, tmp: Path) -> Path:
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    (tmp / "bad.pt").write_bytes(noise.numpy().tobytes())
    return tmp / "bad.pt"


def _plain_state_dict(path: Path, tmp: Path) -> Path:
    torch.save(tiny_cnn().state_dict(), tmp / "bad.pt")
    return tmp / "bad.pt"


def _a_tensor(path: Path, tmp: Path) -> Path:
    torch.save(torch.zeros(3), tmp / "bad.pt")
    return tmp / "bad.pt"


def _missing_keys(path: Path, tmp: Path) -> Path:
    state = _state(path)
    del state["decoder"]
    torch.save(state, tmp / "bad.pt")
    return tmp / "bad.pt"


def _newer_schema(path: Path, tmp: Path) -> Path:
    state = _state(path)
    state["schema_version"] = SCHEMA_VERSION + 1
    torch.save(state, tmp / "bad.pt")
    return tmp / "bad.pt"


def _bad_config(path: Path, tmp: Path) -> Path:
    state = _state(path)
    state["config"]["learning_rate"] = 0.1
    torch.save(state, tmp / "bad.pt")
    return tmp / "bad.pt"


def _wrong_decoder_shape(path: Path, tmp: Path) -> Path:
    state = _state(path)
    key = next(k for k, v in state["decoder"].items() if v.ndim == 4)
    state["decoder"][key] = torch.zeros(1, 1, 3, 3)
    torch.save(state, tmp / "bad.pt")
    return tmp / "bad.pt"


BAD_FILES = [
    ("truncated", _truncated, "could not be read safely"),
    ("random-bytes", _random_bytes, "could not be read safely"),
    ("plain-state-dict", _plain_state_dict, "is not an fcam-plugin checkpoint"),
    ("a-tensor", _a_tensor, "is not an fcam-plugin checkpoint"),
    ("missing-keys", _missing_keys, "missing keys ['decoder']"),
    ("newer-schema", _newer_schema, f"schema version {SCHEMA_VERSION + 1}, newer than"),
    ("unknown-config-key", _bad_config, "invalid config"),
    ("wrong-decoder-shape", _wrong_decoder_shape, "decoder does not match"),
]


@pytest.mark.parametrize("make,words", [(m, w) for _, m, w in BAD_FILES], ids=[i for i, _, _ in BAD_FILES])
def test_bad_file_gives_checkpoint_error(saved, model, tmp_path, make, words) -> None:
    path, _ = saved
    bad = make(path, tmp_path)
    with pytest.raises(CheckpointError) as info:
        FCAMUpscaler.load(bad, model, "GradCAMPlusPlus")
    assert isinstance(info.value, ValueError)
    assert words in str(info.value) and str(bad) in str(info.value)
    with pytest.raises(CheckpointError):  # resuming from it fails the same way, before any training
        FCAMUpscaler(model, "GradCAMPlusPlus", config=FCAMConfig(**CONFIG)).fit([], resume=bad, progress=False)


class _Payload:
    """Unpickling this would create ``marker``: the shape of a malicious checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pickle_with_code_is_not_executed(saved, model, tmp_path, writer) -> None:
    path, _ = saved
    marker = tmp_path / "pwned"
    state = _state(path)
    state["payload"] = _Payload(marker)  # a real checkpoint carrying code
    bad = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(state, bad)
    else:
        with open(bad, "wb") as handle:
            pickle.dump(state, handle)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="could not be read safely"):
        FCAMUpscaler.load(bad, model, "GradCAMPlusPlus")
    with pytest.raises(CheckpointError):
        read_checkpoint(bad)
    assert not marker.exists()


# ------------------------------------------------------------------- mismatched files
def test_other_architecture(saved) -> None:
    path, _ = saved
    other = tiny_cnn(widths=(8, 8, 16, 16, 32))
    with pytest.raises(CheckpointError, match="different classifier architecture"):
        FCAMUpscaler.load(path, other, "GradCAMPlusPlus")
    with pytest.raises(CheckpointError, match="different classifier architecture"):
        FCAMUpscaler.load(path, other, "GradCAMPlusPlus", check_weights=False)


def test_same_architecture_other_weights(saved, images) -> None:
    path, up = saved
    retrained = tiny_cnn(seed=1)
    with pytest.raises(CheckpointError, match="different weights.*check_weights=False"):
        FCAMUpscaler.load(path, retrained, "GradCAMPlusPlus")
    loaded = FCAMUpscaler.load(path, retrained, "GradCAMPlusPlus", check_weights=False)
    expected = up.decoder.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.decoder.state_dict().items())


def test_other_decoder_config(saved, model) -> None:
    path, _ = saved
    wider = FCAMUpscaler(model, "GradCAMPlusPlus", config=FCAMConfig(decoder_channels=(16, 16, 8, 8, 8)))
    with pytest.raises(CheckpointError, match=r"decoder_channels=\[8, 8, 8, 8, 8\].*\[16, 16, 8, 8, 8\]"):
        wider.load_state(read_checkpoint(path), path)
    assert not wider.fitted
