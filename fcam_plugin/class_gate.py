"""The class gate: what makes the class-agnostic decoder's map follow the requested class.

The decoder segments whatever the classifier attends to, for every class alike. The gate keeps
its map where the requested class has more evidence than any rival class (the classifier's other
top predictions) and fades it where a rival's evidence wins: the requested class's seed CAM,
max-pooled over a window of ``dilation`` times the image side and then averaged over the same
window (:func:`spread`), divided by the pixel-wise maximum of that CAM and the rivals' CAMs, pooled
alike. Each CAM is normalised on its own, so on an image with one object, which every class's CAM
points at, the gate stays near 1; on an image with several objects, each other object belongs to
a rival and fades. The pooling spreads the
evidence over the whole object, so the decoder keeps its boundary. Measured in
``benchmarks/README.md`` ("Class-conditional maps").
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = ["class_gate", "dilate", "rival_classes", "spread"]


def _odd_window(side: int, dilation: float) -> int:
    return max(1, int(round(dilation * side)) // 2 * 2 + 1)


def _separable_pool(maps: torch.Tensor, dilation: float, pool: Callable[..., torch.Tensor], **options: Any) -> torch.Tensor:
    """``pool`` over a window of ``dilation`` times each side (odd), as rows then columns (a separable window)."""
    kh, kw = (_odd_window(int(side), dilation) for side in maps.shape[-2:])
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    # A max or mean over a rectangle is separable: rows, then columns (~14x faster than the 2-D window at 224 px).
    rows = pool(flat, (kh, 1), stride=1, padding=(kh // 2, 0), **options)
    return pool(rows, (1, kw), stride=1, padding=(0, kw // 2), **options).reshape(maps.shape)


def dilate(cams: torch.Tensor, dilation: float) -> torch.Tensor:
    """Max-pool maps ``(..., H, W)`` over a window of ``dilation`` times each side (odd; 0: unchanged)."""
    return cams if dilation <= 0 else _separable_pool(cams, dilation, F.max_pool2d)


def spread(cams: torch.Tensor, dilation: float) -> torch.Tensor:
    """:func:`dilate`, then a box mean over the same window: the pooled evidence without its square steps.

    A max-pool alone turns each CAM peak into a flat rectangle with hard edges, which the gate
    would print onto the map (blocky maps where the decoder's own map is faint, e.g. real photos
    after a short fit); the mean over the window ramps those edges down instead.
    """
    if dilation <= 0:
        return cams
    return _separable_pool(dilate(cams, dilation), dilation, F.avg_pool2d, count_include_pad=False)


def class_gate(requested: torch.Tensor, rivals: torch.Tensor, dilation: float) -> torch.Tensor:
    """The gate ``(B, H, W)`` in [0, 1] from the seed CAMs of the requested and rival classes.

    The requested class's pooled CAM over the pixel-wise maximum of it and every rival's pooled
    CAM: 1 where the requested class's evidence is the strongest, less where a rival's is. A
    flat requested CAM (the same value everywhere, e.g. all zero for an untrained model) says
    nothing about where the class is: its image keeps the decoder's map (gate 1).

    Args:
        requested: ``(B, H, W)`` CAMs in [0, 1] of the requested classes, at the map's size.
        rivals: ``(B, K, H, W)`` CAMs in [0, 1] of K rival classes per image (a rival equal to the
            requested class changes nothing).
        dilation: side of the pooling window as a fraction of the image side; 0: no pooling.
    """
    if rivals.ndim != 4 or rivals.shape[0] != requested.shape[0] or rivals.shape[-2:] != requested.shape[-2:]:
        raise ValueError(f"`rivals` must be (B, K, H, W) with B, H, W of `requested` {tuple(requested.shape)}, "
                         f"got {tuple(rivals.shape)}.")
    own = spread(requested.clamp(0, 1), dilation)
    strongest = torch.maximum(own, spread(rivals.clamp(0, 1), dilation).amax(1))
    gate = own / strongest.clamp_min(1e-6)
    flat = own.amax((-2, -1)) <= own.amin((-2, -1))
    return torch.where(flat.view(-1, 1, 1), torch.ones_like(gate), gate)


def rival_classes(scores: torch.Tensor, requested: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` best-scoring classes other than ``requested``: ``(B, min(count, C - 1))`` indices.

    Args:
        scores: ``(B, C)`` the classifier's class scores.
        requested: ``(B,)`` the requested class of each image.
        count: how many rivals per image.
    """
    others = scores.detach().float().scatter(1, requested.view(-1, 1).to(scores.device), float("-inf"))
    return others.topk(min(count, scores.shape[1] - 1), dim=1).indices
