"""Scoring maps on the test split: WSOL metrics, how binary the maps are, seed precision, curves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..config import FCAMConfig
from ..metrics import LocalizationEvaluator
from ..objective import Objective
from ..seeds import seed_regions
from .data import Split, batches

__all__ = ["HISTOGRAM_BINS", "LearningCurve", "MapScores", "evaluate_maps", "seed_precision"]

#: Bins of the value histogram over [0, 1] (how binary the maps are).
HISTOGRAM_BINS = 10
#: (B, H, W) maps in [0, 1] of test images for the ground-truth labels.
MapsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MapScores:
    """Localization metrics of one kind of map, and the first maps for the figures.

    Attributes:
        metrics: PxAP, MaxBoxAcc, MaxBoxAccV2 (and their details), fractions in [0, 1].
        histogram: share of pixels in each of :data:`HISTOGRAM_BINS` value bins over [0, 1].
        samples: the maps ``(k, H, W)`` of the first ``k`` test images.
    """

    metrics: dict[str, Any]
    histogram: list[float]
    samples: np.ndarray = field(repr=False)

    @property
    def binary_share(self) -> float:
        """Share of pixels in the lowest and the highest bin (1.0 = a binary map)."""
        return self.histogram[0] + self.histogram[-1]

    def row(self) -> dict[str, float]:
        """The headline numbers, JSON-ready."""
        keys = ("pxap", "maxboxacc", "maxboxaccv2")
        return {k: float(self.metrics[k]) for k in keys} | {"binary_share": round(self.binary_share, 4)}


def evaluate_maps(fn: MapsFn, split: Split, batch_size: int, device: torch.device, keep: int = 4) -> MapScores:
    """Score ``fn(images, labels)`` on every image of ``split`` with the wsolevaluation protocol."""
    evaluator = LocalizationEvaluator()
    histogram = torch.zeros(HISTOGRAM_BINS, dtype=torch.float64)
    kept: list[np.ndarray] = []
    for index in batches(len(split), batch_size):
        maps = fn(split.images[index].to(device), split.labels[index].to(device)).detach().float().cpu().clamp(0, 1)
        evaluator.update(maps, masks=split.masks[index], boxes=[split.boxes[int(i)] for i in index])
        histogram += torch.histc(maps.double(), HISTOGRAM_BINS, 0, 1)
        if sum(len(k) for k in kept) < keep:
            kept.append(maps.numpy())
    samples = np.concatenate(kept)[:keep]
    return MapScores(evaluator.summary(), (histogram / histogram.sum()).tolist(), samples)


def seed_precision(objective: Objective, split: Split, batch_size: int, device: torch.device) -> dict[str, float]:
    """Share of the foreground seed candidates on the object, and of the background ones off it.

    Candidates are every pixel seeds may be drawn from (not a sample), for the ground-truth class.
    """
    cfg: FCAMConfig = objective.config
    counts = np.zeros(4)
    for index in batches(len(split), batch_size):
        images, labels = split.images[index].to(device), split.labels[index].to(device)
        fg, bg = seed_regions(objective.training_cams(images, labels), cfg.fg_erosion, cfg.bg_percentile)
        inside = split.masks[index].to(device)[:, None] > 0.5
        counts += [float((fg.bool() & inside).sum()), float(fg.sum()), float((bg.bool() & ~inside).sum()), float(bg.sum())]
    objective.source.after_fit()
    return {"fg_precision": counts[0] / max(counts[1], 1.0), "bg_precision": counts[2] / max(counts[3], 1.0)}


@dataclass
class LearningCurve:
    """An ``on_epoch_end`` callback of ``fit``: scores the F-CAM maps on the test split after each epoch.

    Attributes:
        rows: per epoch, the loss terms of the fit and the map's headline numbers.
        samples: per epoch, the maps of the first test images (for the maps-per-epoch figure).
    """

    split: Split
    batch_size: int
    device: torch.device
    keep: int = 4
    maps: Callable[[Any, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    rows: list[dict[str, float]] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    scores: list[MapScores] = field(default_factory=list)

    def __call__(self, epoch: int, upscaler: Any) -> None:
        def fcam(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return self.maps(upscaler, images, labels) if self.maps else upscaler.maps(images)

        scores = evaluate_maps(fcam, self.split, self.batch_size, self.device, self.keep)
        losses = upscaler_history_row(upscaler, epoch)
        self.rows.append({"epoch": epoch, **losses, **scores.row()})
        self.samples.append(scores.samples)
        self.scores.append(scores)


def upscaler_history_row(upscaler: Any, epoch: int) -> dict[str, float]:
    """The mean loss terms of ``epoch`` from the fit's running history (empty if not recorded yet)."""
    history = getattr(upscaler, "history", None) or []
    for row in history:
        if row.get("epoch") == epoch:
            return {k: float(v) for k, v in row.items() if k != "epoch"}
    return {}
