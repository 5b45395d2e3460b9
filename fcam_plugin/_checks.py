"""Input validation shared by the public API.

Every check raises a ``TypeError`` or ``ValueError`` (or a subclass) whose message names the
argument, echoes what was received and says what is accepted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = [
    "check_choice",
    "check_images",
    "check_path",
    "check_positive",
    "describe",
]


def describe(value: object) -> str:
    """Short description of a value for error messages (type, shape, dtype, device)."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)}, dtype={value.dtype}, device={value.device})"
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={list(shape)}, dtype={value.dtype})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(describe(v) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{type(value).__name__}[{inner}{more}] of length {len(value)}"
    if isinstance(value, dict):
        return f"dict with keys {sorted(map(str, value))[:8]}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_choice(name: str, value: object, accepted: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ValueError(f"`{name}` must be one of {list(accepted)}, got {value!r}.")


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a positive (or non-negative) finite number."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok:
        ok = value >= 0 if allow_zero else value > 0
        ok = ok and value != float("inf")
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"`{name}` must be a finite number {bound}, got {value!r}.")


def check_path(name: str, value: object) -> str:
    """Validate a checkpoint file path (``str`` or ``os.PathLike``, not a folder) and return it as ``str``.

    Raises:
        TypeError: not a ``str`` / ``os.PathLike``.
        ValueError: the path is an existing folder.
    """
    if not isinstance(value, (str, os.PathLike)) or not isinstance(os.fspath(value), str):
        raise TypeError(f"`{name}` must be a file path (str or os.PathLike), got {describe(value)}.")
    path = os.fspath(value)
    if not path or os.path.isdir(path):
        raise ValueError(f"`{name}` must name a file such as 'fcam.pt', got the folder {path!r}.")
    return path


def check_images(
    name: str,
    images: object,
    *,
    channels: int | None = None,
    min_size: int = 1,
    allow_nonfinite: bool = False,
) -> torch.Tensor:
    """Validate a batch of images ``(B, C, H, W)`` of floating dtype and return it.

    Args:
        name: the caller's argument name, used in the messages.
        images: the value to check.
        channels: required channel count ``C``; ``None`` accepts any (e.g. when the model's input
            channels are unknown).
        min_size: smallest accepted ``H`` and ``W``.
        allow_nonfinite: accept NaN / Inf values.

    Raises:
        TypeError: not a tensor, or not a floating dtype.
        ValueError: wrong rank, channel count, empty batch, too small, or NaN/Inf values.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"`{name}` must be a torch.Tensor of shape (B, C, H, W), got {describe(images)}."
        )
    if images.ndim != 4:
        hint = " (add a batch dimension with x.unsqueeze(0))" if images.ndim == 3 else ""
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W), got shape {list(images.shape)}{hint}."
        )
    if not images.is_floating_point():
        raise TypeError(
            f"`{name}` must be a floating tensor (normalised like the classifier's "
            f"training data), got dtype {images.dtype}; convert with x.float()"
            + (" / 255 and normalise" if images.dtype == torch.uint8 else "")
            + "."
        )
    if images.shape[0] == 0:
        raise ValueError(f"`{name}` is an empty batch: shape {list(images.shape)}.")
    if channels is not None and images.shape[1] != channels:
        raise ValueError(
            f"`{name}` must have {channels} channels (B, {channels}, H, W), "
            f"got {images.shape[1]} channels in shape {list(images.shape)}."
        )
    if min(images.shape[-2:]) < min_size:
        raise ValueError(
            f"`{name}` is too small: spatial size {tuple(images.shape[-2:])}, the model needs at "
            f"least {min_size}x{min_size} pixels."
        )
    if not allow_nonfinite and not bool(torch.isfinite(images).all()):
        raise ValueError(f"`{name}` contains NaN or Inf values; clean the input first.")
    return images
