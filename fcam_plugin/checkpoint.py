"""The checkpoint format: classifier fingerprint, safe reading, atomic writing that honours the umask.

A checkpoint is a plain dict of builtins and tensors (readable with ``torch.load(weights_only=True)``,
so no pickled code ever runs): the decoder's ``state_dict``, the :class:`~fcam_plugin.FCAMConfig`,
the skip layers, the CAM method, a fingerprint of the classifier it was trained on, and, for a
checkpoint written by ``fit``, the resumable training state.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from typing import Any

import torch
from torch import nn

from ._checks import describe
from .errors import CheckpointError

__all__ = [
    "CHECKPOINT_FORMAT",
    "SCHEMA_VERSION",
    "atomic_save",
    "check_classifier",
    "classifier_fingerprint",
    "clean_state_dict",
    "head_outputs",
    "read_checkpoint",
    "read_state_dict",
]

CHECKPOINT_FORMAT = "fcam-plugin-checkpoint"
SCHEMA_VERSION = 1
_REQUIRED_KEYS = ("format", "schema_version", "config", "taps", "classifier", "decoder")


def classifier_fingerprint(model: nn.Module) -> dict[str, Any]:
    """Hashes of the classifier's architecture (names, shapes, dtypes) and of its weights.

    Also records the model's class and the shape of every tensor of its ``state_dict``, so that a
    mismatch can say which tensors differ (checkpoints without them still load; only the hashes
    are compared).
    """
    arch, weights = hashlib.sha256(), hashlib.sha256()
    shapes: dict[str, list[int]] = {}
    for name, tensor in model.state_dict().items():
        arch.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        shapes[name] = [int(d) for d in tensor.shape]
        if tensor.is_floating_point():
            weights.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {
        "architecture": arch.hexdigest()[:16],
        "weights": weights.hexdigest()[:16],
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "shapes": shapes,
    }


def _shape_differences(saved: dict[str, Any], current: dict[str, Any], limit: int = 4) -> str:
    """What differs between two fingerprints' tensors, in words; empty when the saved one has no shapes."""
    old, new = saved.get("shapes"), current["shapes"]
    if not isinstance(old, dict):
        return ""
    parts = []
    if saved.get("class") and saved["class"] != current["class"]:
        parts.append(f"the checkpoint's classifier is a {saved['class']}, this one a {current['class']}")
    changed = [k for k in new if k in old and list(old[k]) != new[k]]
    if changed:
        listed = ", ".join(f"{k} {list(old[k])} vs {new[k]}" for k in changed[:limit])
        more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
        parts.append(f"tensor shapes differ (checkpoint vs this model): {listed}{more}")
    missing, extra = [k for k in old if k not in new], [k for k in new if k not in old]
    if missing or extra:
        parts.append(
            f"{len(missing)} tensor(s) only in the checkpoint's classifier (e.g. {missing[:3]}), "
            f"{len(extra)} only in this one (e.g. {extra[:3]})"
        )
    head = head_outputs(saved, current)
    if head is not None:
        parts.append(f"the classifier head: {head[0]} outputs in the checkpoint vs {head[1]} here")
    return "; ".join(parts)


def head_outputs(saved: dict[str, Any], current: dict[str, Any]) -> tuple[int, int] | None:
    """``(saved, current)`` output counts when the two classifiers differ only in their last layer's outputs.

    That is the signature of a different number of classes: the last 2-D (or 4-D 1x1) weight and
    its bias differ in their first dimension, every other tensor is the same.
    """
    old, new = saved.get("shapes"), current["shapes"]
    if not isinstance(old, dict) or list(old) != list(new):
        return None
    changed = [k for k in new if list(old[k]) != new[k]]
    if not changed:
        return None
    weights = [k for k in changed if len(new[k]) >= 2]
    if len(weights) != 1:
        return None
    key = weights[0]
    prefix = key.rsplit(".", 1)[0]
    if any(not k.startswith(prefix + ".") for k in changed) or list(old[key][1:]) != new[key][1:]:
        return None
    return int(old[key][0]), int(new[key][0])


def check_classifier(state: dict[str, Any], model: nn.Module, path: object, check_weights: bool) -> None:
    """Raise ``CheckpointError`` unless the checkpoint's classifier fingerprint matches ``model``.

    For checkpoints that record tensor shapes, the message says which tensors differ (e.g. the
    head: 2 vs 3 outputs, i.e. a different number of classes).
    """
    saved = state["classifier"] if isinstance(state["classifier"], dict) else {}
    current = classifier_fingerprint(model)
    if saved.get("architecture") != current["architecture"]:
        details = _shape_differences(saved, current)
        raise CheckpointError(
            f"checkpoint {str(path)!r} was made for a different classifier architecture "
            f"(fingerprint {saved.get('architecture')}, this model has {current['architecture']})"
            + (f": {details}." if details else ".")
        )
    if check_weights and saved.get("weights") != current["weights"]:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was made for the same architecture with different weights "
            f"(fingerprint {saved.get('weights')}, this model has {current['weights']}); pass "
            "check_weights=False to load it anyway."
        )


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes from the keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a half-written file.

    The file gets the permissions ``torch.save`` would give it (``0o666`` minus the umask), not the
    ``0o600`` of the temporary file, so that group members can read a shared checkpoint.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fcam-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _safe_load(path: str, what: str) -> Any:
    """``torch.load(weights_only=True)`` on CPU; ``CheckpointError`` for anything unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, foreign pickle with code, random bytes...
        raise CheckpointError(
            f"{what} {path!r} could not be read safely (weights_only=True): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None


def _checked_path(path: object, what: str) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a file path (str or os.PathLike), got {describe(path)}.")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{what} {path!r} does not exist or is not a file.")
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a checkpoint with ``weights_only=True``; clear errors for bad files.

    Raises:
        TypeError: ``path`` is not a path.
        CheckpointError: missing, unreadable, foreign, incomplete or too new.
    """
    path = _checked_path(path, "checkpoint `path`")
    state = _safe_load(path, "checkpoint")
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path!r} is not an fcam-plugin checkpoint (expected a dict with format={CHECKPOINT_FORMAT!r}, "
            f"got {describe(state)})."
        )
    missing = [k for k in _REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path!r} is missing keys {missing}.")
    if not isinstance(state["schema_version"], int) or state["schema_version"] > SCHEMA_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has schema version {state['schema_version']}, newer than this "
            f"fcam-plugin supports ({SCHEMA_VERSION}); upgrade fcam-plugin."
        )
    return state


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A model ``state_dict`` saved with ``torch.save``, read safely; common wrappers are unpacked.

    Accepts a bare state dict or one nested under ``state_dict``, ``model_state_dict`` or
    ``model`` (what training scripts often write), with DDP / torch.compile prefixes removed.

    Raises:
        CheckpointError: missing or unreadable file, or not a dict of tensors.
    """
    path = _checked_path(path, "weights file")
    state = _safe_load(path, "weights file")
    for key in ("state_dict", "model_state_dict", "model"):  # common training-script wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path!r} is not a state_dict (a dict of tensors), got {describe(state)}.")
    return clean_state_dict(state)
