"""Training-free rivals of F-CAM: library CAMs over several layers and the guided filter.

Each rival is a callable ``(images, labels) -> maps (B, H, W)`` in [0, 1] with a ``close()`` that
releases the hooks the library holds on the model. The wrapped method's own bilinear CAM is not
here: it comes from :meth:`fcam_plugin.FCAMUpscaler.low_res_cams`, the path of ``fcam eval --baseline``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytorch_grad_cam
import torch
import torch.nn.functional as F
import torchcam.methods
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from .._checks import describe
from ..metrics import normalize_scoremap

__all__ = ["GUIDED_GRID", "LibraryCAM", "guided_filter", "protocol_maps"]

#: Guided-filter settings tried on the test set, the best PxAP reported (an optimistic upper bound
#: for this rival): radius as a fraction of the image side, eps for a [0, 1] guide.
GUIDED_GRID: tuple[tuple[float, float], ...] = ((1 / 16, 1e-2), (1 / 16, 1e-3), (1 / 8, 1e-2), (1 / 8, 1e-3))


def protocol_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise full-resolution maps ``(B, H, W)`` as the wsolevaluation inference does."""
    return torch.from_numpy(normalize_scoremap(maps.detach().double().cpu().numpy())).float()


class LibraryCAM:
    """A CAM method of pytorch-grad-cam or torchcam on named layers, as the library returns it."""

    def __init__(self, model: nn.Module, library: str, name: str, layers: Sequence[str], image_size: int) -> None:
        self.model, self.library = model, library
        if library == "gradcam":
            self.cam: Any = getattr(pytorch_grad_cam, name)(model, target_layers=[model.get_submodule(n) for n in layers])
            self.inner = list(getattr(self.cam, "base_cam_per_layer", [self.cam]))
        else:
            self.cam = getattr(torchcam.methods, name)(model, list(layers), input_shape=(3, image_size, image_size))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.library == "gradcam":
            targets = [ClassifierOutputTarget(int(c)) for c in labels]
            maps = torch.from_numpy(np.ascontiguousarray(self.cam(input_tensor=images, targets=targets)))
            return protocol_maps(maps)
        with torch.enable_grad():
            low = self.cam(labels.tolist(), self.model(images))[0]
        return protocol_maps(F.interpolate(low[:, None].float(), size=images.shape[-2:], mode="bilinear")[:, 0])

    def close(self) -> None:
        if self.library == "gradcam":
            for cam in self.inner:  # grad-cam's RefineCAM has no __exit__: release its base CAMs' hooks
                cam.activations_and_grads.release()
        else:
            self.cam.remove_hooks()


def _box_sum(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Sum over the ``(2r+1)^2`` window around each pixel, clipped to the image (integral image, O(1)/px)."""
    h, w = x.shape[-2:]
    integral = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    r0, r1 = (rows - radius).clamp(0, h), (rows + radius + 1).clamp(0, h)
    c0, c1 = (cols - radius).clamp(0, w), (cols + radius + 1).clamp(0, w)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return integral[..., r, :][..., :, c]

    return at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0)


def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2r+1)^2`` window, averaging only the pixels inside the image at the borders."""
    return _box_sum(x, radius) / _box_sum(torch.ones_like(x[..., :1, :, :]), radius)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    r"""Colour guided filter (He, Sun and Tang, ECCV 2010, eqs. 19-21), batched in torch.

    Fits, in every ``(2r+1)^2`` window, the source as a linear function of the guide's colour,
    :math:`q = a^\top I + b` with :math:`a = (\Sigma + \epsilon U)^{-1} \mathrm{cov}(I, p)`, and
    averages the coefficients of the windows covering each pixel: edges of the guide are
    transferred to the (upsampled) source map.

    Args:
        guide: ``(B, 3, H, W)`` guide image, RGB in [0, 1].
        src: ``(B, 1, H, W)`` map to filter (e.g. a bilinearly upsampled CAM).
        radius: window radius ``r`` in pixels (>= 1).
        eps: regulariser (larger = smoother; in squared guide units).

    Returns:
        ``(B, 1, H, W)`` filtered map (not clamped or normalised).

    Example:
        >>> g = torch.rand(1, 3, 32, 32); p = torch.rand(1, 1, 32, 32)
        >>> guided_filter(g, p, radius=4, eps=1e-2).shape
        torch.Size([1, 1, 32, 32])
    """
    if guide.ndim != 4 or guide.shape[1] != 3 or src.ndim != 4 or src.shape[1] != 1 or guide.shape[-2:] != src.shape[-2:]:
        raise ValueError(f"`guide` must be (B, 3, H, W) and `src` (B, 1, H, W) of the same size, got {describe(guide)} and {describe(src)}.")
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
        raise ValueError(f"`radius` must be an int >= 1, got {radius!r}.")
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0, got {eps!r}.")
    guide, src = guide.double(), src.double()  # the 3x3 solves are ill-conditioned in float32
    b, _, h, w = guide.shape
    mean_i, mean_p = _box_mean(guide, radius), _box_mean(src, radius)
    cov_ip = _box_mean(guide * src, radius) - mean_i * mean_p  # (B, 3, H, W)
    outer = (guide[:, :, None] * guide[:, None]).reshape(b, 9, h, w)
    var_i = _box_mean(outer, radius).view(b, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None]
    sigma = var_i.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, dtype=guide.dtype, device=guide.device)
    a = torch.linalg.solve(sigma, cov_ip.permute(0, 2, 3, 1).unsqueeze(-1))[..., 0].permute(0, 3, 1, 2)
    b_coef = mean_p - (a * mean_i).sum(1, keepdim=True)
    out = (_box_mean(a, radius) * guide).sum(1, keepdim=True) + _box_mean(b_coef, radius)
    return out.float()
