"""One comparison run, in stages: data, classifier, F-CAM fits with learning curves, rivals.

:func:`run_comparison` renders a synthetic variant, trains (or reuses) a ResNet-18, fits F-CAM
for each seed method with the test split scored after every epoch, and scores the training-free
rivals, all with the wsolevaluation protocol (ground-truth class; CAMs resized bicubically and
min-max normalised as the reference's inference does).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import describe
from ..config import FCAMConfig
from ..defaults import IMAGENET_MEAN, IMAGENET_STD
from ..metrics import resize_like_wsolevaluation
from ..upscaler import FCAMUpscaler
from .classifier import accuracy, classifier_for
from .data import AugmentedLoader, Split, render_split
from .evaluation import LearningCurve, MapScores, evaluate_maps, seed_precision
from .multi_object import PerClassScores, multi_object_scores
from .rivals import GUIDED_GRID, LibraryCAM, guided_filter, protocol_maps
from .run_info import Stage, machine_info
from .settings import RIVALS, SEED_METHODS, DemoSettings

__all__ = ["ComparisonResult", "FitRecord", "run_comparison"]


@dataclass
class FitRecord:
    """One F-CAM fit: its learning curve, seed precision and loss history."""

    method: str
    curve: LearningCurve
    seeds: dict[str, float]
    history: list[dict[str, float]]


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` measured.

    Attributes:
        settings: the run's settings.
        scores: map key -> :class:`MapScores` (F-CAM keys ``fcam_<method>`` hold the last epoch).
        labels: map key -> human-readable name.
        fits: seed method -> :class:`FitRecord`.
        accuracy / train_accuracy: top-1 of the classifier on the test / training split.
        classifier_trained: whether the classifier was trained in this run (else read from the cache).
        timings: stage -> ``{"wall_s", "cpu_s"}``.
        machine: see :func:`~fcam_plugin.demo.run_info.machine_info`.
        figure: images ``(k, S, S, 3)`` uint8, masks ``(k, S, S)``, labels and predictions of the
            test images shown in the figures.
        multi: map key -> :class:`~fcam_plugin.demo.multi_object.PerClassScores` on the
            multi-object images (empty without them); ``multi_labels``: key -> name;
            ``multi_figure``: images, classes present and per-class masks of the first of them.
    """

    settings: DemoSettings
    scores: dict[str, MapScores]
    labels: dict[str, str]
    fits: dict[str, FitRecord]
    accuracy: float
    train_accuracy: float
    classifier_trained: bool
    timings: dict[str, dict[str, float]]
    machine: dict[str, Any]
    figure: dict[str, np.ndarray] = field(repr=False)
    multi: dict[str, PerClassScores] = field(default_factory=dict)
    multi_labels: dict[str, str] = field(default_factory=dict)
    multi_figure: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def rows(self) -> dict[str, dict[str, float]]:
        """Headline numbers of every map."""
        return {key: score.row() for key, score in self.scores.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every number (not the figure arrays)."""
        return {
            "settings": self.settings.to_dict(),
            "classifier": {
                "test_accuracy": self.accuracy, "train_accuracy": self.train_accuracy, "trained": self.classifier_trained,
            },
            "metrics": {k: _json_safe(v.metrics) | {"histogram": v.histogram} for k, v in self.scores.items()},
            "labels": dict(self.labels),
            "learning_curves": {k: f.curve.rows for k, f in self.fits.items()},
            "seed_precision": {k: f.seeds for k, f in self.fits.items()},
            "multi_object": {k: v.row() for k, v in self.multi.items()},
            "fcam_history": {k: f.history for k, f in self.fits.items()},
            "timings": self.timings,
            "machine": self.machine,
        }


def _json_safe(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def _method_class(key: str) -> type:
    module, name = SEED_METHODS[key][1].split(":")
    return getattr(importlib.import_module(module), name)


def _protocol_cam_maps(up: FCAMUpscaler) -> Any:
    """The wrapped method's CAM resized and normalised like the wsolevaluation inference."""

    def fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        low = up.low_res_cams(images, labels)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return torch.from_numpy(resize_like_wsolevaluation(low.cpu(), size)).float()

    return fn


def _fcam_maps(up: FCAMUpscaler, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return protocol_maps(up.maps(images, labels))


def _fit(
    s: DemoSettings, model: nn.Module, key: str, train: Split, test: Split, device: torch.device, timings: dict
) -> tuple[FCAMUpscaler, FitRecord]:
    label = SEED_METHODS[key][0]
    up = FCAMUpscaler(model, _method_class(key), config=FCAMConfig(**s.fcam_overrides))
    with Stage(timings, f"seeds_{key}", s.progress) as stage:
        seeds = seed_precision(up.objective(), test, s.batch_size, device)
        stage.note = f"{label} seed candidates on the object {100 * seeds['fg_precision']:.0f}%, background off it {100 * seeds['bg_precision']:.0f}%"
    curve = LearningCurve(test, s.batch_size, device, keep=s.figure_images, maps=_fcam_maps)
    count = s.fit_images or len(train)
    loader = AugmentedLoader(train.images[:count], train.labels[:count], s.batch_size, s.seed + 2)
    with Stage(timings, f"fcam_fit_{key}", s.progress) as stage:
        up.fit(loader, epochs=s.fcam_epochs, seed=s.seed, progress=s.progress, on_epoch_end=curve)
        last = curve.rows[-1]
        stage.note = (f"F-CAM on {label} seeds, {count} images x {s.fcam_epochs} epochs: PxAP per epoch "
                      + " ".join(f"{100 * r['pxap']:.1f}" for r in curve.rows) + f", last MaxBoxAccV2 {100 * last['maxboxaccv2']:.1f}")
    return up, FitRecord(key, curve, seeds, list(up.history))


def _rivals(
    s: DemoSettings, model: nn.Module, cams: dict[str, Any], test: Split, device: torch.device
) -> tuple[dict[str, MapScores], dict[str, str]]:
    scores, labels = {}, {}
    for key in s.rivals:
        label, library, name, layers = RIVALS[key]
        rival = LibraryCAM(model, library, name, layers, s.image_size)
        try:
            scores[key] = evaluate_maps(rival, test, s.batch_size, device, s.figure_images)
        finally:
            rival.close()
        labels[key] = label
    if s.guided:
        first = s.seed_methods[0]
        scores[f"guided_{first}"], labels[f"guided_{first}"] = _best_guided(s, cams[first], test, device)
    return scores, labels


def _best_guided(s: DemoSettings, source: Any, test: Split, device: torch.device) -> tuple[MapScores, str]:
    """The guided filter of a CAM at the setting of :data:`GUIDED_GRID` with the best test PxAP."""
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    found = []
    for fraction, eps in GUIDED_GRID:
        radius = max(1, round(fraction * s.image_size))

        def guided(images: torch.Tensor, labels: torch.Tensor, radius: int = radius, eps: float = eps) -> torch.Tensor:
            rgb = (images * std + mean).clamp(0, 1)
            return protocol_maps(guided_filter(rgb, source(images, labels)[:, None].to(images.device), radius, eps)[:, 0])

        found.append((evaluate_maps(guided, test, s.batch_size, device, s.figure_images), radius, eps))
    score, radius, eps = max(found, key=lambda item: item[0].metrics["pxap"])
    label = f"guided filter of {SEED_METHODS[s.seed_methods[0]][0]} (r={radius}, eps={eps:g}; best of {len(GUIDED_GRID)} on the test split)"
    return score, label


def _multi_object(
    s: DemoSettings, model: nn.Module, up: FCAMUpscaler, device: torch.device, timings: dict
) -> tuple[dict[str, PerClassScores], dict[str, str], dict[str, list[np.ndarray]]]:
    """The maps of each class present on the multi-object images, scored; the first images kept for the figure."""
    with Stage(timings, "multi_object", s.progress) as stage:
        scores, labels, test = multi_object_scores(s, model, up, device)
        stage.note = (f"{len(test)} images with 2-3 objects, per-class PxAP / right-object rate: " + ", ".join(
            f"{key} {100 * v.pxap:.1f} / {100 * v.right_object:.0f}%" for key, v in scores.items()))
    shown = [test.render_multi(i) for i in range(min(s.figure_images, len(test)))]
    figure = {"images": [(255 * sample.image + 0.5).astype(np.uint8) for sample in shown],
              "classes": [np.asarray(sample.labels) for sample in shown],
              "masks": [sample.masks[list(sample.labels)] for sample in shown]}
    return scores, labels, figure


def run_comparison(settings: DemoSettings | None = None) -> ComparisonResult:
    """Run the whole comparison (see the module docstring); prints stage lines if ``progress``.

    Raises:
        TypeError: ``settings`` is not a :class:`DemoSettings`.
    """
    s = settings or DemoSettings()
    if not isinstance(s, DemoSettings):
        raise TypeError(f"`settings` must be a DemoSettings, got {describe(s)}.")
    device = torch.device(s.device)
    timings: dict[str, dict[str, float]] = {}
    machine = machine_info()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(s.seed)
        with Stage(timings, "data", s.progress) as stage:
            train, test = render_split(s, "train", s.train_images), render_split(s, "test", s.test_images)
            stage.note = f"variant {s.variant!r}: {len(train)} train / {len(test)} test images, {s.image_size} px, {s.classes} classes"
        with Stage(timings, "classifier", s.progress) as stage:
            model, trained = classifier_for(train, s, device)
            test_acc, preds = accuracy(model, test, s.batch_size, device)
            train_acc, _ = accuracy(model, train, s.batch_size, device)
            stage.note = (f"ResNet-18 {'trained' if trained else 'from the cache'}: test accuracy {100 * test_acc:.1f}% "
                          f"(train {100 * train_acc:.1f}%, chance {100 / s.classes:.0f}%)")
        scores: dict[str, MapScores] = {}
        labels: dict[str, str] = {}
        fits: dict[str, FitRecord] = {}
        cams: dict[str, Any] = {}
        for key in s.seed_methods:
            up = FCAMUpscaler(model, _method_class(key), config=FCAMConfig(**s.fcam_overrides))
            cams[key] = _protocol_cam_maps(up)
            with Stage(timings, f"cam_{key}", s.progress):
                scores[key] = evaluate_maps(cams[key], test, s.batch_size, device, s.figure_images)
            labels[key] = f"{SEED_METHODS[key][0]}, layer4, interpolated (what the library returns)"
            up.close()
        multi: tuple[dict[str, PerClassScores], dict[str, str], dict[str, list[np.ndarray]]] = ({}, {}, {})
        for key in s.seed_methods:
            up, fits[key] = _fit(s, model, key, train, test, device, timings)
            scores[f"fcam_{key}"] = fits[key].curve.scores[-1]
            labels[f"fcam_{key}"] = f"F-CAM on {SEED_METHODS[key][0]} seeds"
            if key == s.seed_methods[0] and s.multi_images and s.classes >= 3:
                multi = _multi_object(s, model, up, device, timings)
            up.close()
        with Stage(timings, "rivals", s.progress) as stage:
            rival_scores, rival_labels = _rivals(s, model, cams, test, device)
            stage.note = f"{len(rival_scores)} training-free rivals"
        scores.update(rival_scores)
        labels.update(rival_labels)
    k = min(s.figure_images, len(test))
    figure = {
        "images": (test.rgb(slice(0, k)).permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8),
        "masks": test.masks[:k].numpy() > 0.5,
        "labels": test.labels[:k].numpy(),
        "predictions": preds[:k].numpy(),
    }
    return ComparisonResult(s, scores, labels, fits, test_acc, train_acc, trained, timings, machine, figure, *multi)
