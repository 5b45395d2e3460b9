"""Validation of the metric inputs: score maps, masks, ground-truth boxes and the convention."""

from __future__ import annotations

import numpy as np
import torch

from .._checks import check_choice, describe
from ._cv2 import require_cv2

__all__ = ["CONVENTIONS", "check_boxes", "check_convention", "check_maps", "check_masks", "to_numpy"]

#: Accepted values of the ``convention`` argument of the box metrics.
CONVENTIONS = ("wsolevaluation", "components")


def to_numpy(name: str, value: object) -> np.ndarray:
    """Return ``value`` as a numpy array (a detached CPU view for tensors).

    Raises:
        TypeError: ``value`` is neither a numpy array nor a tensor.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:  # numpy has no bfloat16; float32 holds it exactly
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(f"`{name}` must be a numpy array or a torch.Tensor, got {describe(value)}.")


def check_convention(convention: object) -> str:
    """Validate ``convention`` and make sure OpenCV is there when it is needed.

    Raises:
        ValueError: ``convention`` is not one of :data:`CONVENTIONS`.
        ImportError: ``"wsolevaluation"`` without OpenCV installed.
    """
    check_choice("convention", convention, CONVENTIONS)
    if convention == "wsolevaluation":
        require_cv2()
    return str(convention)


def check_maps(maps: object) -> np.ndarray:
    """Return the maps as a ``(B, H, W)`` floating array, in their own dtype (no copy).

    Keeping the dtype matters: ``wsolevaluation`` quantises ``map * 255`` and bins the scores in
    the precision of the map it is given, so a float32 copy of float64 maps changes results.

    Raises:
        TypeError: not an array/tensor, or not floating.
        ValueError: wrong shape, empty, NaN/Inf or values outside [0, 1].
    """
    arr = to_numpy("maps", maps)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(
            f"`maps` must have shape (B, H, W) or (H, W), got shape {list(arr.shape)}; squeeze a "
            "channel dimension (B, 1, H, W) with maps[:, 0]."
        )
    if 0 in arr.shape:
        raise ValueError(f"`maps` is empty: shape {list(arr.shape)}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"`maps` must be a floating array with values in [0, 1], got dtype {arr.dtype}"
            + (" (divide uint8 maps by 255)" if arr.dtype == np.uint8 else "")
            + "."
        )
    if not np.isfinite(arr).all():
        raise ValueError("`maps` contains NaN or Inf values.")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"`maps` values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]; min-max normalise "
            "each map first (the WSOL protocol evaluates normalised score maps, see "
            "fcam_plugin.metrics.normalize_scoremap)."
        )
    return arr


def check_masks(masks: object, shape: tuple[int, ...], ignore_index: int | None) -> np.ndarray:
    """Return masks as uint8 ``(B, H, W)`` with 0 (background), 1 (foreground), 255 (ignored).

    Raises:
        TypeError: not an array/tensor of bool or numbers.
        ValueError: shape differs from the maps', or values outside {0, 1, ignore_index}.
    """
    arr = to_numpy("masks", masks)
    if arr.ndim == 2:
        arr = arr[None]
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(
            f"`masks` must have the same shape as `maps` {list(shape)} (maps must be resized to "
            f"the mask size), got shape {list(arr.shape)}."
        )
    if not (arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.number)):
        raise TypeError(f"`masks` must be a bool, integer or float array, got dtype {arr.dtype}.")
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)
    simple_ignore = ignore_index is None or (isinstance(ignore_index, (int, np.integer)) and 2 <= ignore_index <= 255)
    if arr.dtype == np.uint8 and simple_ignore:  # fast path: a table (0 -> 0, 1 -> 1, ignored -> 255, else 2)
        table = np.full(256, 2, dtype=np.uint8)
        table[:2] = (0, 1)
        if ignore_index is not None:
            table[ignore_index] = 255
        out = table[arr]
        if not (out == 2).any():
            return out
    out = np.zeros(arr.shape, dtype=np.uint8)
    fg = arr == 1
    out[fg] = 1
    valid = fg | (arr == 0)
    if ignore_index is not None:
        ignored = arr == ignore_index
        out[ignored] = 255
        valid |= ignored
    if not valid.all():
        bad = np.unique(arr[~valid])[:5]
        accepted = "{0, 1}" + (f" or {ignore_index} (ignored)" if ignore_index is not None else "")
        raise ValueError(f"`masks` values must be in {accepted}, got values such as {bad.tolist()}.")
    return out


def _check_box_array(i: int, b: object) -> np.ndarray:
    """Validate the ground-truth boxes of image ``i`` and return them as int64 ``(N, 4)``."""
    if isinstance(b, (list, tuple)):
        b = np.asarray(b, dtype=np.float64).reshape(-1, 4) if len(b) else np.zeros((0, 4))
    arr = to_numpy(f"boxes[{i}]", b)
    if arr.ndim == 1 and arr.shape[0] == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"`boxes[{i}]` must have shape (N, 4) with (x0, y0, x1, y1) rows, got shape {list(arr.shape)}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`boxes[{i}]` is empty: every image needs at least one ground-truth box.")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise ValueError(f"`boxes[{i}]` must hold finite numbers, got {describe(arr)}.")
    if (arr[:, 2] < arr[:, 0]).any() or (arr[:, 3] < arr[:, 1]).any():
        raise ValueError(
            f"`boxes[{i}]` must satisfy x1 >= x0 and y1 >= y0 (x0, y0, x1, y1 order), got {arr[:3].tolist()}."
        )
    return arr.astype(np.int64)


def check_boxes(boxes: object, batch: int, single_map: bool) -> list[np.ndarray]:
    """Return a list of ``batch`` int64 arrays of shape ``(N_i, 4)``.

    Raises:
        TypeError: ``boxes`` is not a list/array of boxes.
        ValueError: wrong number of entries, wrong shapes, empty or inverted boxes.
    """
    if single_map and isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 2:
        boxes = [boxes]
    if isinstance(boxes, (np.ndarray, torch.Tensor)) and boxes.ndim == 3:
        boxes = list(boxes)
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(
            "`boxes` must be a list with one (N, 4) array of (x0, y0, x1, y1) boxes per map, got "
            f"{describe(boxes)}."
        )
    if len(boxes) != batch:
        raise ValueError(f"`boxes` must hold one (N, 4) array per map ({batch} maps), got {len(boxes)} entries.")
    return [_check_box_array(i, b) for i, b in enumerate(boxes)]
