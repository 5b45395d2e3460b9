"""Maps as pictures: a map blended over its image, as pytorch-grad-cam's ``show_cam_on_image`` does.

Example:
    >>> import numpy as np
    >>> from fcam_plugin import overlay
    >>> picture = overlay(np.zeros((4, 4, 3)), np.ones((4, 4)))   # uint8 (4, 4, 3)
    >>> picture.dtype, picture.shape
    (dtype('uint8'), (4, 4, 3))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps

from ._checks import describe

__all__ = ["colorize", "overlay"]


def _as_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch here
        value = value.detach().float().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array or a torch tensor, got {describe(value)}.")
    return value


def _image_rgb(image: Any) -> np.ndarray:
    """``(H, W, 3)`` float RGB in [0, 1] from uint8 or float, HWC or CHW, grey or colour."""
    arr = _as_array("image", image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"`image` must be (H, W), (H, W, 3) or (3, H, W), got shape {list(arr.shape)}.")
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.min() < 0 or arr.max() > 1:
        raise ValueError(
            f"`image` must be uint8 or float in [0, 1] (un-normalised RGB), got values in "
            f"[{arr.min():.3g}, {arr.max():.3g}]."
        )
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr.astype(np.float32)


def colorize(cam: Any, colormap: str = "jet") -> np.ndarray:
    """A map ``(H, W)`` in [0, 1] through a matplotlib colormap: float RGB ``(H, W, 3)`` in [0, 1].

    Raises:
        ValueError: ``cam`` is not 2-D, or ``colormap`` is not a matplotlib colormap name.
    """
    arr = _as_array("cam", cam)
    if arr.ndim != 2:
        raise ValueError(f"`cam` must be one map (H, W), got shape {list(arr.shape)}.")
    if colormap not in colormaps:
        raise ValueError(f"`colormap` must be a matplotlib colormap name such as 'jet' or 'viridis', got {colormap!r}.")
    return colormaps[colormap](np.clip(np.nan_to_num(arr), 0, 1))[..., :3].astype(np.float32)


def overlay(image: Any, cam: Any, *, image_weight: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """The map in a colormap, blended over the image: what grad-cam's ``show_cam_on_image`` returns.

    Args:
        image: the un-normalised picture, uint8 or float in [0, 1]; ``(H, W, 3)``, ``(3, H, W)``
            or grey ``(H, W)``; numpy or torch.
        cam: one map ``(H, W)`` in [0, 1] of the same size (e.g. one row of the upscaler's output).
        image_weight: weight of the image in the blend, in [0, 1].
        colormap: a matplotlib colormap name.

    Returns:
        uint8 RGB ``(H, W, 3)``.

    Raises:
        TypeError / ValueError: inputs of the wrong type, shape or range; sizes that differ.
    """
    rgb = _image_rgb(image)
    heat = colorize(cam, colormap)
    if heat.shape[:2] != rgb.shape[:2]:
        raise ValueError(
            f"`cam` must have the image's size {list(rgb.shape[:2])}, got {list(heat.shape[:2])}; "
            "resize the map (e.g. torch.nn.functional.interpolate) first."
        )
    if isinstance(image_weight, bool) or not isinstance(image_weight, (int, float)) or not 0 <= image_weight <= 1:
        raise ValueError(f"`image_weight` must be a number in [0, 1], got {image_weight!r}.")
    blended = image_weight * rgb + (1 - image_weight) * heat
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)
