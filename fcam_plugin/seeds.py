"""Pseudo-labels ("seeds") sampled from a CAM: a few confident foreground and background pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._checks import check_positive, describe
from .defaults import BG_PERCENTILE, FG_EROSION, FG_SEED_POWER, N_BG, N_FG, SEED_PATCH

__all__ = ["IGNORE_INDEX", "otsu_threshold", "sample_seeds", "seed_regions"]

#: Label of pixels without a seed (ignored by the partial cross-entropy), as in ``F.cross_entropy``.
IGNORE_INDEX = -100


def otsu_threshold(values: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each map in a batch, computed on a histogram over [0, 1].

    Args:
        values: maps ``(B, ...)`` with values in [0, 1].
        bins: histogram bins.

    Returns:
        Thresholds ``(B,)``: pixels strictly above belong to the foreground class.
    """
    flat = values.reshape(values.shape[0], -1).float().clamp(0, 1)
    idx = (flat * (bins - 1)).round().long()
    hist = torch.zeros(flat.shape[0], bins, device=flat.device).scatter_add_(1, idx, torch.ones_like(flat))
    prob = hist / hist.sum(1, keepdim=True)
    levels = torch.linspace(0, 1, bins, device=flat.device)
    w0 = prob.cumsum(1)  # weight of the class "<= level"
    mu0_sum = (prob * levels).cumsum(1)
    mu_total = mu0_sum[:, -1:]
    w1 = 1 - w0
    between = (mu_total * w0 - mu0_sum) ** 2 / (w0 * w1).clamp_min(1e-12)
    between = torch.where((w0 > 0) & (w1 > 0), between, torch.full_like(between, -1))
    return levels[between.argmax(1)]


def _pick(
    candidates: torch.Tensor, count: int, keys: torch.Tensor
) -> torch.Tensor:
    """One-hot map ``(B, H, W)`` of ``count`` candidate pixels drawn uniformly without replacement.

    The draw keeps the ``count`` candidates with the largest random ``keys`` (same shape), which is
    uniform sampling without replacement and lets every process of a distributed run draw its rows
    of one global key tensor.
    """
    b = candidates.shape[0]
    scores = torch.where(candidates.reshape(b, -1) > 0, keys.reshape(b, -1), torch.full_like(keys.reshape(b, -1), -1.0))
    n = min(count, scores.shape[1])
    top = scores.topk(n, dim=1)
    onehot = torch.zeros_like(scores).scatter_(1, top.indices, (top.values >= 0).to(scores.dtype))
    return onehot.reshape(candidates.shape)


def _weighted_keys(keys: torch.Tensor, weights: torch.Tensor, power: float) -> torch.Tensor:
    """Keys whose top-k is a draw without replacement with probability ∝ ``weights ** power``.

    Efraimidis and Spirakis (2006): the largest ``u ** (1 / w)`` of uniform ``u`` are a weighted
    sample. The keys returned, ``1 / (1 - log(u) / w)`` in (0, 1], rank the pixels the same way
    without underflowing to ties at 0 where ``w`` is small. ``power`` 0 keeps the keys (a uniform
    draw).
    """
    if power <= 0:
        return keys
    w = weights.clamp(1e-6, 1) ** power
    return 1 / (1 - keys.clamp_min(1e-12).log() / w)


def seed_regions(
    cams: torch.Tensor, erosion_size: int = FG_EROSION, bg_percentile: float = BG_PERCENTILE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Foreground and background seed candidates of CAMs ``(B, 1, H, W)``: float masks of the same shape.

    Foreground: above the image's Otsu threshold, eroded with an ``erosion_size`` square (the
    un-eroded region if erosion removes everything; every non-background pixel for a flat CAM).
    Background: at or below the image's ``bg_percentile``-th percentile.
    """
    b = cams.shape[0]
    threshold = otsu_threshold(cams).view(b, 1, 1, 1)
    fg_region = (cams > threshold).float()
    if erosion_size > 1:
        # Erosion = 1 - dilation of the complement; max_pool pads with -inf, so borders don't erode.
        eroded = 1 - F.max_pool2d(1 - fg_region, erosion_size, stride=1, padding=erosion_size // 2)
        keep = eroded.flatten(1).sum(1) > 0
        fg_region = torch.where(keep.view(b, 1, 1, 1), eroded, fg_region)
    low = torch.quantile(cams.flatten(1), bg_percentile / 100.0, dim=1).view(b, 1, 1, 1)
    bg_region = (cams <= low).float()
    # A constant CAM has no foreground above Otsu's threshold: use every pixel not in the background.
    no_fg = fg_region.flatten(1).sum(1) == 0
    fg_region = torch.where(no_fg.view(b, 1, 1, 1), 1 - bg_region, fg_region)
    return fg_region, bg_region


def _check_seed_arguments(
    cams: object, n_fg: int, n_bg: int, patch_size: int, erosion_size: int, bg_percentile: float, fg_power: float
) -> None:
    """Raise ``ValueError`` naming the first argument of :func:`sample_seeds` that it cannot use."""
    if not isinstance(cams, torch.Tensor) or cams.ndim not in (3, 4) or (cams.ndim == 4 and cams.shape[1] != 1):
        raise ValueError(f"`cams` must be a tensor (B, 1, H, W) or (B, H, W), got {describe(cams)}.")
    for name, value in (("n_fg", n_fg), ("n_bg", n_bg)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
    for name, value in (("patch_size", patch_size), ("erosion_size", erosion_size)):
        if not isinstance(value, int) or value < 1 or value % 2 == 0:
            raise ValueError(f"`{name}` must be an odd int >= 1, got {value!r}.")
    if not 0 < bg_percentile < 100:
        raise ValueError(f"`bg_percentile` must be in (0, 100), got {bg_percentile!r}.")
    check_positive("fg_power", fg_power, allow_zero=True)


def sample_seeds(
    cams: torch.Tensor,
    n_fg: int = N_FG,
    n_bg: int = N_BG,
    patch_size: int = SEED_PATCH,
    erosion_size: int = FG_EROSION,
    bg_percentile: float = BG_PERCENTILE,
    generator: torch.Generator | None = None,
    batch_offset: int = 0,
    batch_total: int | None = None,
    fg_power: float = FG_SEED_POWER,
) -> torch.Tensor:
    r"""Sample foreground/background seeds from CAMs, as in F-CAM.

    Foreground candidates are the pixels above the image's Otsu threshold, eroded with an
    ``erosion_size`` square (if erosion removes everything, the un-eroded region is used);
    background candidates are the pixels at or below the image's ``bg_percentile``-th percentile.
    ``n_fg`` and ``n_bg`` pixels are drawn among them (foreground pixels with probability
    ∝ ``CAM ** fg_power``, background pixels uniformly) and grown to
    ``patch_size`` x ``patch_size`` squares. Pixels claimed by both (possible on flat CAMs) and all
    other pixels are ignored.

    Args:
        cams: CAMs ``(B, 1, H, W)`` or ``(B, H, W)`` in [0, 1], at input resolution.
        n_fg: foreground seeds per image.
        n_bg: background seeds per image.
        patch_size: side of the square each seed grows to (odd).
        erosion_size: side of the erosion kernel applied to the Otsu region (odd; 1 = none).
        bg_percentile: percentile of CAM values below which pixels are background candidates.
        generator: random generator for reproducible sampling.
        batch_offset: first row of these images in a global batch (distributed training).
        batch_total: size of the global batch (default ``B``): random draws are made for the whole
            global batch, so every process samples exactly what a single process would.
        fg_power: foreground seeds favour the CAM's stronger pixels: drawn with probability
            ∝ ``CAM ** fg_power`` inside the candidate region; 0: uniformly, as in the paper.

    Returns:
        Long tensor ``(B, H, W)``: 1 foreground, 0 background, :data:`IGNORE_INDEX` elsewhere.

    Example:
        >>> cam = torch.zeros(1, 1, 32, 32); cam[..., 8:24, 8:24] = 1
        >>> seeds = sample_seeds(cam, erosion_size=3)
        >>> int((seeds == 1).sum()), int((seeds == 0).sum())
        (9, 9)
    """
    _check_seed_arguments(cams, n_fg, n_bg, patch_size, erosion_size, bg_percentile, fg_power)
    cams = cams.detach().float().reshape(cams.shape[0], 1, *cams.shape[-2:])
    b = cams.shape[0]
    fg_region, bg_region = seed_regions(cams, erosion_size, bg_percentile)
    total = b if batch_total is None else batch_total
    if not 0 <= batch_offset <= total - b:
        raise ValueError(f"`batch_offset` {batch_offset} with {b} images exceeds `batch_total` {total}.")
    seeds = torch.full((b, *cams.shape[-2:]), IGNORE_INDEX, dtype=torch.long, device=cams.device)
    grown = []
    for region, count, power in ((fg_region, n_fg, fg_power), (bg_region, n_bg, 0.0)):
        # Drawn on the generator's device (a CPU generator with CUDA CAMs would raise), then moved.
        draw_on = generator.device if generator is not None else cams.device
        keys = torch.rand((total, *cams.shape[-2:]), generator=generator, device=draw_on).to(cams.device)
        keys = keys[batch_offset : batch_offset + b]
        if count == 0:
            grown.append(torch.zeros_like(region[:, 0], dtype=torch.bool))
            continue
        picked = _pick(region[:, 0], count, _weighted_keys(keys, cams[:, 0], power)).unsqueeze(1)
        if patch_size > 1:
            picked = F.max_pool2d(picked, patch_size, stride=1, padding=patch_size // 2)
        grown.append(picked[:, 0] > 0)
    fg, bg = grown
    seeds[fg & ~bg] = 1
    seeds[bg & ~fg] = 0
    return seeds
