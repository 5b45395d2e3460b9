"""Where a low-resolution CAM cell really looks: receptive-field offsets, and upsampling that honours them.

Interpolating a CAM assumes that cell ``i`` of a stride-``s`` map is centred on input pixel
``s*i + (s-1)/2`` (half-pixel centres, what ``cv2.resize`` and ``F.interpolate`` do). A CNN whose
stride-2 layers pad symmetrically (ResNet's ``conv3x3(stride=2, padding=1)``) sees, instead,
around ``s*i``: at stride 32 the interpolated CAM sits about 10-16 px down and to the right of
what it responds to (measured 15.6 px on a ResNet-50, about 11 on trained ResNet-18s). Seeds
drawn from the shifted map put foreground labels on the background beside the object.

:func:`receptive_offsets` measures, per layer, the centre of the gradient energy of a middle
cell's activation with respect to random inputs, minus the half-pixel centre; :func:`upsample_aligned`
then resamples the CAM at the corrected positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._state import frozen_eval

__all__ = ["PROBE_CELLS", "receptive_offsets", "upsample_aligned"]

#: The probe input has this many cells of the deepest stride per side, so that the middle cell's
#: receptive field is not clipped by the image border.
PROBE_CELLS = 10
_PROBE_SAMPLES = 4


def _centre_of_energy(grad: torch.Tensor) -> tuple[float, float]:
    """Row and column centre of mass of the squared gradient ``(B, C, H, W)``."""
    energy = grad.double().pow(2).sum((0, 1))
    rows = torch.arange(energy.shape[0], dtype=energy.dtype, device=energy.device)
    cols = torch.arange(energy.shape[1], dtype=energy.dtype, device=energy.device)
    total = energy.sum().clamp_min(1e-300)
    return float((energy.sum(1) * rows).sum() / total), float((energy.sum(0) * cols).sum() / total)


def receptive_offsets(
    model: nn.Module, layers: Sequence[nn.Module], in_channels: int = 3, stride: int = 32
) -> list[tuple[float, float]]:
    """Per layer, ``(dy, dx)`` in input pixels from a cell's half-pixel centre to its receptive-field centre.

    Layers whose output is not a ``(B, C, h, w)`` map (token sequences) get ``(0.0, 0.0)``. The
    model comes back as it was (modes, ``requires_grad``, ``.grad``); the caller's RNG is untouched.

    Args:
        model: the classifier.
        layers: its layers whose CAMs will be upsampled.
        in_channels: input channels of the model.
        stride: the model's deepest stride (sets the probe size ``PROBE_CELLS * stride``).
    """
    size = PROBE_CELLS * stride
    outputs: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: outputs.setdefault(i, out)) for i, layer in enumerate(layers)]
    param = next(model.parameters())
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(_PROBE_SAMPLES, in_channels, size, size, generator=generator).to(param.device, param.dtype)
    try:
        with frozen_eval(model), torch.enable_grad():
            model(x.requires_grad_(True))
            return [_offset(outputs.get(i), x, size) for i in range(len(layers))]
    finally:
        for handle in handles:
            handle.remove()


def _offset(output: object, x: torch.Tensor, size: int) -> tuple[float, float]:
    if not isinstance(output, torch.Tensor) or output.ndim != 4 or not output.requires_grad:
        return 0.0, 0.0
    h, w = output.shape[-2:]
    if h < 2 or w < 2:
        return 0.0, 0.0
    (grad,) = torch.autograd.grad(output[:, :, h // 2, w // 2].sum(), x, retain_graph=True)
    cy, cx = _centre_of_energy(grad)
    sy, sx = size / h, size / w
    return cy - (sy * (h // 2) + (sy - 1) / 2), cx - (sx * (w // 2) + (sx - 1) / 2)


def _grid_coordinates(n_out: int, n_in: int, offset: float, device: torch.device) -> torch.Tensor:
    """Normalised sampling coordinates (``align_corners=False``) of ``n_out`` output pixels in ``n_in`` cells."""
    scale = n_out / n_in
    cells = (torch.arange(n_out, device=device, dtype=torch.float32) - offset - (scale - 1) / 2) / scale
    return (cells + 0.5) / n_in * 2 - 1


def upsample_aligned(cams: torch.Tensor, size: Sequence[int], offset: tuple[float, float]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, 1, h, w)`` CAMs to ``size``, each cell placed at its receptive-field centre.

    With ``offset == (0, 0)`` this equals ``F.interpolate(..., mode="bilinear", align_corners=False)``;
    the borders are extended (replicate) where the shifted grid leaves the map.
    """
    height, width = int(size[0]), int(size[1])
    if offset == (0.0, 0.0):
        return F.interpolate(cams, size=(height, width), mode="bilinear", align_corners=False)
    gy = _grid_coordinates(height, cams.shape[-2], offset[0], cams.device)
    gx = _grid_coordinates(width, cams.shape[-1], offset[1], cams.device)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), -1)
    grid = grid.unsqueeze(0).expand(cams.shape[0], -1, -1, -1).to(cams.dtype)
    return F.grid_sample(cams, grid, mode="bilinear", padding_mode="border", align_corners=False)
