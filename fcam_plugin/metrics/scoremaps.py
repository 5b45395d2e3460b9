"""Score maps prepared the way ``wsolevaluation``'s inference prepares them.

The reference resizes every low-resolution CAM to the image size with bicubic interpolation
(``cv2.resize(cam, size, interpolation=cv2.INTER_CUBIC)``, in float64) and min-max normalises it
(``cam -= cam.min(); cam /= cam.max()``; a constant map or one with NaN becomes all zeros). Its
published numbers are computed on such maps, so comparing with them needs the same preparation.

What a library user may want instead: bicubic interpolation overshoots (values below the CAM's
minimum next to peaks), and the min-max keeps that overshoot as low scores; a ReLU'd, bilinear
upsampling (as pytorch-grad-cam and torchcam return) gives other maps and other numbers. Both are
valid score maps; only the reference's preparation reproduces the published tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._cv2 import cv2, require_cv2
from ._inputs import to_numpy

__all__ = ["normalize_scoremap", "resize_like_wsolevaluation"]


def _as_maps(name: str, value: object, squeeze_channel: bool) -> tuple[np.ndarray, bool]:
    """``(B, H, W)`` float64 copy of maps given as ``(H, W)``, ``(B, H, W)`` (or ``(B, 1, H, W)``)."""
    arr = to_numpy(name, value)
    if squeeze_channel and arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim not in (2, 3):
        accepted = "(H, W), (B, H, W) or (B, 1, H, W)" if squeeze_channel else "(H, W) or (B, H, W)"
        raise ValueError(f"`{name}` must have shape {accepted}, got shape {list(arr.shape)}.")
    if 0 in arr.shape:
        raise ValueError(f"`{name}` is empty: shape {list(arr.shape)}.")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"`{name}` must be a real-valued array, got dtype {arr.dtype}.")
    if np.isinf(arr).any():
        raise ValueError(f"`{name}` contains Inf values; a score map must be finite.")
    single = arr.ndim == 2
    return np.array(arr[None] if single else arr, dtype=np.float64), single


def _normalize_inplace(maps: np.ndarray) -> np.ndarray:
    """Min-max normalise float64 ``(B, H, W)`` maps in place; NaN or constant maps become zeros."""
    degenerate = np.isnan(maps).any(axis=(1, 2))
    maps -= maps.min(axis=(1, 2), keepdims=True)
    top = maps.max(axis=(1, 2), keepdims=True)
    degenerate |= top[:, 0, 0] == 0  # max - min == 0 exactly when the map is constant
    maps[degenerate] = 0.0
    top[degenerate] = 1.0
    maps /= top
    return maps


def normalize_scoremap(maps: object) -> np.ndarray:
    """Min-max normalise each map to [0, 1] as ``wsolevaluation`` does, in float64.

    Each map becomes ``(m - m.min()) / (m - m.min()).max()``, computed in that order in float64
    (the reference's in-place ``cam -= cam.min(); cam /= cam.max()``); a map that is constant or
    holds a NaN becomes all zeros. The input is not modified.

    Args:
        maps: ``(H, W)`` or ``(B, H, W)`` numpy array or tensor.

    Returns:
        float64 numpy array of the input's shape, values in [0, 1].

    Raises:
        TypeError: not an array/tensor of real numbers.
        ValueError: wrong shape, empty, or Inf values.

    Example:
        >>> normalize_scoremap(np.array([[1.0, 3.0], [2.0, 5.0]]))
        array([[0.  , 0.5 ],
               [0.25, 1.  ]])
    """
    arr, single = _as_maps("maps", maps, squeeze_channel=False)
    out = _normalize_inplace(arr)
    return out[0] if single else out


def _check_size(size: Any) -> tuple[int, int]:
    """``(H, W)`` from an int or a pair of positive ints."""
    pair = (size, size) if isinstance(size, (int, np.integer)) and not isinstance(size, bool) else size
    ok = isinstance(pair, (tuple, list)) and len(pair) == 2
    ok = ok and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in pair)
    if not ok:
        raise ValueError(f"`size` must be an int >= 1 or a pair (H, W) of ints >= 1, got {size!r}.")
    return int(pair[0]), int(pair[1])


def resize_like_wsolevaluation(cams: object, size: int | tuple[int, int]) -> np.ndarray:
    """Resize CAMs bicubically with OpenCV and min-max normalise them, as the reference inference.

    Reproduces ``wsolevaluation``'s inference step: the CAM is cast to float64, resized with
    ``cv2.resize(..., interpolation=cv2.INTER_CUBIC)`` and normalised with
    :func:`normalize_scoremap`. The result is what its evaluators receive, so
    :class:`LocalizationEvaluator` then reproduces the published numbers.

    ``size`` is ``(H, W)``; OpenCV's ``dsize`` is ``(W, H)`` and is built from it (the reference
    passes its square 224 x 224 size directly, which only matters for non-square images).

    Args:
        cams: low-resolution maps ``(h, w)``, ``(B, h, w)`` or ``(B, 1, h, w)`` (numpy or torch).
        size: output ``(H, W)``, or one int for a square size.

    Returns:
        float64 numpy array ``(B, H, W)`` (``(H, W)`` for a 2-D input) with values in [0, 1].

    Raises:
        TypeError: ``cams`` is not an array/tensor of real numbers.
        ValueError: wrong shape, Inf values, or an invalid ``size``.
        ImportError: OpenCV is not installed.

    Example:
        >>> cams = np.random.default_rng(0).random((2, 1, 7, 7))
        >>> maps = resize_like_wsolevaluation(cams, 224)
        >>> maps.shape, float(maps.min()), float(maps.max())
        ((2, 224, 224), 0.0, 1.0)
    """
    require_cv2()
    height, width = _check_size(size)
    arr, single = _as_maps("cams", cams, squeeze_channel=True)
    out = np.empty((arr.shape[0], height, width), dtype=np.float64)
    for i, cam in enumerate(arr):
        out[i] = cv2.resize(cam, (width, height), interpolation=cv2.INTER_CUBIC).reshape(height, width)
    out = _normalize_inplace(out)
    return out[0] if single else out
