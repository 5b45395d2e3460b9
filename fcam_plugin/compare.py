"""F-CAM against training-free CAM upsampling on the synthetic WSOL set: one comparison, two users.

:func:`run_comparison` generates :class:`~fcam_plugin.data.synthetic.SyntheticWSOL` train/test
splits, trains a small classifier from random weights (torchvision ResNet-18), fits F-CAM on the
frozen classifier for each requested seed method and scores every map on the test split with the
WSOL protocol (PxAP, MaxBoxAcc, MaxBoxAccV2; ground-truth class, as in wsolevaluation).

Rivals, all training-free and all evaluated at input resolution:

* the **bilinear CAM** of each method (what pytorch-grad-cam and torchcam return);
* **LayerCAM** on the last stage, and on several stages (grad-cam averages the per-layer maps);
* **RefineCAM**, the multi-layer product built into both libraries (grad-cam 1.5.7
  ``RefineCAM(base_method=GradCAMPlusPlus)`` and torchcam 0.5 ``RefineCAM``);
* **guided filter** upsampling of a CAM (He et al., ECCV 2010), the classic image-guided
  refinement, implemented in :func:`guided_filter`.

Used by ``fcam demo`` (:mod:`fcam_plugin.demo`) and by ``benchmarks/quality.py``.

Example:
    >>> from fcam_plugin.compare import CompareSettings, run_comparison
    >>> result = run_comparison(CompareSettings(train_images=64, test_images=16, image_size=48,
    ...                                         classifier_epochs=1, fcam_epochs=1))
    >>> sorted(result.metrics)[:2]
    ['fcam_gradcampp', 'gradcampp']
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._checks import check_choice, describe
from .config import FCAMConfig
from .data.synthetic import MEAN, STD, SyntheticWSOL
from .seeds import sample_seeds
from .metrics import LocalizationEvaluator

__all__ = [
    "BASELINES",
    "SEED_METHODS",
    "CompareSettings",
    "ComparisonResult",
    "guided_filter",
    "run_comparison",
]

#: Seed methods F-CAM can be trained on: name -> (label, CAM class path, target layer names).
SEED_METHODS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "gradcampp": ("GradCAM++ (layer4)", "pytorch_grad_cam:GradCAMPlusPlus", ("layer4",)),
    "gradcam": ("GradCAM (layer4)", "pytorch_grad_cam:GradCAM", ("layer4",)),
    "layercam": ("LayerCAM (layer3+4)", "pytorch_grad_cam:LayerCAM", ("layer3", "layer4")),
    "refinecam": ("RefineCAM GradCAM++ (layer2-4)", "pytorch_grad_cam:RefineCAM", ("layer2", "layer3", "layer4")),
}

#: Training-free rivals: name -> (label, library, class, target layers). Guided-filter variants are
#: derived from the map named after ``guided:``.
BASELINES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "gradcampp": ("GradCAM++ layer4, bilinear", "gradcam", "GradCAMPlusPlus", ("layer4",)),
    "layercam_l4": ("LayerCAM layer4, bilinear", "gradcam", "LayerCAM", ("layer4",)),
    "layercam": ("LayerCAM layer3+4 (mean), bilinear", "gradcam", "LayerCAM", ("layer3", "layer4")),
    "layercam_l234": ("LayerCAM layer2-4 (mean), bilinear", "gradcam", "LayerCAM", ("layer2", "layer3", "layer4")),
    "refinecam": ("RefineCAM (grad-cam, GradCAM++ layer2-4 product)", "gradcam", "RefineCAM", ("layer2", "layer3", "layer4")),
    "refinecam_torchcam": ("RefineCAM (torchcam, GradCAMpp layer2-4 product)", "torchcam", "RefineCAM", ("layer2", "layer3", "layer4")),
}

#: Maps refined with the guided filter (name of the source map).
GUIDED_SOURCES = ("gradcampp", "layercam")

#: Guided-filter settings tried on the test set; the best PxAP is reported (an optimistic
#: upper bound for this rival): radius as a fraction of the image side, eps for a [0, 1] guide.
GUIDED_GRID: tuple[tuple[float, float], ...] = ((1 / 16, 1e-2), (1 / 16, 1e-3), (1 / 8, 1e-2), (1 / 8, 1e-3))


@dataclass
class CompareSettings:
    """Size and content of one comparison run.

    Attributes:
        train_images / test_images: sizes of the synthetic train and test splits.
        image_size: side of the square images (the CAM of ResNet-18 is ``image_size / 32``).
        num_classes: classes of the synthetic set and outputs of the classifier.
        classifier_epochs: epochs of classifier training (AdamW, one-cycle schedule).
        fcam_epochs: epochs of each F-CAM fit.
        batch_size: batch size of both trainings and of the evaluation.
        classifier_stride: 32 = torchvision's ResNet-18 as is (CAM grid ``image_size / 32``); 16 =
            its last stage without downsampling (``layer4`` stride 1), the ResNet variant of the WSOL
            literature (wsolevaluation, F-CAM's reference), CAM grid ``image_size / 16``.
        seed_methods: keys of :data:`SEED_METHODS`; one F-CAM fit per entry.
        baselines: keys of :data:`BASELINES` evaluated as training-free rivals.
        guided: compute the guided-filter rivals (of :data:`GUIDED_SOURCES` that are evaluated).
        fcam_overrides: :class:`~fcam_plugin.config.FCAMConfig` fields changed for the fits.
        seed: seed of the data, the classifier and the fits.
        device: torch device.
        figure_images: test images kept (with all their maps) for a figure.
        progress: tqdm bars and printed stage lines.
    """

    train_images: int = 1024
    test_images: int = 192
    image_size: int = 64
    num_classes: int = 4
    classifier_epochs: int = 12
    fcam_epochs: int = 6
    batch_size: int = 32
    classifier_stride: int = 32
    seed_methods: tuple[str, ...] = ("gradcampp",)
    baselines: tuple[str, ...] = tuple(BASELINES)
    guided: bool = True
    fcam_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    figure_images: int = 4
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("train_images", "test_images", "classifier_epochs", "fcam_epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"`image_size` must be an int >= 32 (ResNet-18 has stride 32), got {self.image_size!r}.")
        check_choice("classifier_stride", self.classifier_stride, (16, 32))
        self.seed_methods = tuple(self.seed_methods)
        self.baselines = tuple(self.baselines)
        for name in self.seed_methods:
            check_choice("seed_methods", name, tuple(SEED_METHODS))
        for name in self.baselines:
            check_choice("baselines", name, tuple(BASELINES))
        FCAMConfig(**self.fcam_overrides)  # fail now on an unknown or invalid field

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        out = asdict(self)
        out["seed_methods"], out["baselines"] = list(self.seed_methods), list(self.baselines)
        return out


@dataclass
class ComparisonResult:
    """What :func:`run_comparison` measured.

    Attributes:
        settings: the run's settings.
        metrics: method key -> metric summary (fractions in [0, 1]).
        labels: method key -> human-readable description.
        accuracy: top-1 accuracy of the classifier on the test split.
        train_accuracy: top-1 accuracy on the training split (un-augmented).
        seed_stats: seed method -> precision of the F-CAM seeds on the test split (fraction of
            foreground seed pixels inside the object, of background seed pixels outside).
        fcam_history: seed method -> per-epoch mean loss terms of the fit.
        guided_params: source map -> ``(radius, eps)`` of the reported guided filter.
        timings: stage -> ``{"wall_s", "cpu_s"}``.
        machine: platform, torch version, CPU count, load average at the start.
        model: the classifier (eval mode).
        samples: for the figure: ``images`` (K, H, W, 3) uint8, ``masks`` (K, H, W) bool,
            ``labels``/``predictions`` (K,), ``maps`` method -> (K, H, W) float32.
    """

    settings: CompareSettings
    metrics: dict[str, dict[str, Any]]
    labels: dict[str, str]
    accuracy: float
    train_accuracy: float
    seed_stats: dict[str, dict[str, float]]
    fcam_history: dict[str, list[dict[str, float]]]
    guided_params: dict[str, tuple[int, float]]
    timings: dict[str, dict[str, float]]
    machine: dict[str, Any]
    samples: dict[str, Any]
    model: nn.Module | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (everything but the figure samples)."""
        return {
            "settings": self.settings.to_dict(),
            "classifier": {"test_accuracy": self.accuracy, "train_accuracy": self.train_accuracy},
            "metrics": {k: _json_safe(v) for k, v in self.metrics.items()},
            "labels": dict(self.labels),
            "seed_stats": self.seed_stats,
            "fcam_history": self.fcam_history,
            "guided_params": {k: list(v) for k, v in self.guided_params.items()},
            "timings": self.timings,
            "machine": self.machine,
        }


# ------------------------------------------------------------------------------------ helpers
class _Stage:
    """Wall and CPU time of a stage, with a printed line when it ends."""

    def __init__(self, timings: dict[str, dict[str, float]], name: str, verbose: bool) -> None:
        self.timings, self.name, self.verbose = timings, name, verbose

    def __enter__(self) -> "_Stage":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.note = ""
        return self

    def __exit__(self, *exc: object) -> None:
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        self.timings[self.name] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
        if self.verbose and exc[0] is None:
            print(f"[fcam] {self.name}: {self.note}{' ' if self.note else ''}({wall:.1f} s)", flush=True)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _json_safe(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def machine_info() -> dict[str, Any]:
    """Platform, CPU model, torch version, threads and the 1-minute load average now."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        load = None
    return {
        "cpu": cpu, "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__), "python": platform.python_version(), "load_avg_1min": load,
    }


def _render(dataset: SyntheticWSOL, desc: str, verbose: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All images (normalised), labels and masks of a dataset as tensors."""
    images, labels, masks = [], [], []
    with _bar(len(dataset), desc, verbose) as bar:
        for i in range(len(dataset)):
            image, label, mask = dataset[i]
            images.append(image)
            labels.append(label)
            masks.append(mask)
            bar.update(1)
    return torch.stack(images), torch.tensor(labels), torch.stack(masks)


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random translation by up to 1/8 of the side (reflect padding)."""
    b, _, h, w = images.shape
    flip = torch.rand(b, generator=generator) < 0.5
    images = torch.where(flip.view(b, 1, 1, 1), images.flip(-1), images)
    pad = max(1, h // 8)
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + h, dx : dx + w].contiguous()


def _batches(n: int, batch_size: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return list(order.split(batch_size))


class _AugmentedLoader:
    """Shuffled, flipped/translated batches ``(images, labels)`` of in-memory tensors (for F-CAM fits)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int) -> None:
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.drop_last = len(images) > batch_size

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):  # noqa: ANN204
        for index in _batches(len(self.images), self.batch_size, self.generator)[: len(self)]:
            yield _augment(self.images[index], self.generator), self.labels[index]


def build_classifier(num_classes: int, stride: int = 32) -> nn.Module:
    """torchvision ResNet-18 with random weights; ``stride=16`` sets ``layer4``'s stride to 1 (WSOL variant)."""
    import torchvision

    model = torchvision.models.resnet18(weights=None, num_classes=num_classes)
    if stride == 16:
        model.layer4[0].conv1.stride = (1, 1)
        model.layer4[0].downsample[0].stride = (1, 1)
    return model


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    progress: bool = True,
    stride: int = 32,
) -> nn.Module:
    """ResNet-18 from random weights, AdamW + one-cycle schedule, flips and translations; eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(num_classes, stride).to(device)
    generator = torch.Generator().manual_seed(seed + 1)
    steps_per_epoch = max(1, len(images) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch, pct_start=0.2)
    model.train()
    with _bar(epochs * steps_per_epoch, "classifier", progress) as bar:
        for _ in range(epochs):
            for index in _batches(len(images), batch_size, generator)[:steps_per_epoch]:
                x = _augment(images[index], generator).to(device)
                y = labels[index].to(device)
                scores = model(x)
                loss = F.cross_entropy(scores, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                acc = (scores.argmax(1) == y).float().mean()
                bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc.item():.2f}", refresh=False)
                bar.update(1)
    return model.eval()


@torch.no_grad()
def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device) -> tuple[float, torch.Tensor]:
    preds = torch.cat([model(images[i].to(device)).argmax(1).cpu() for i in _batches(len(images), batch_size)])
    return float((preds == labels).float().mean()), preds


# ------------------------------------------------------------------------------ rivals
def _box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a ``(2r+1)^2`` window, averaging only the pixels inside the image at the borders."""
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


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
    var_i = (_box_mean(outer, radius).view(b, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None])
    sigma = var_i.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, dtype=guide.dtype, device=guide.device)
    a = torch.linalg.solve(sigma, cov_ip.permute(0, 2, 3, 1).unsqueeze(-1))[..., 0].permute(0, 3, 1, 2)
    b_coef = mean_p - (a * mean_i).sum(1, keepdim=True)
    out = (_box_mean(a, radius) * guide).sum(1, keepdim=True) + _box_mean(b_coef, radius)
    return out.float()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Clamp at 0 and min-max normalise each map of ``(B, H, W)`` (a flat map stays 0)."""
    flat = maps.clamp_min(0).flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    return (flat / flat.max(1, keepdim=True).values.clamp_min(1e-7)).view_as(maps).clamp(0, 1)


class _LibraryCAM:
    """A training-free rival: the library's own CAM, upsampled bilinearly to the input size."""

    def __init__(self, model: nn.Module, library: str, name: str, layers: Sequence[str], image_size: int) -> None:
        self.model, self.library = model, library
        modules = [model.get_submodule(n) for n in layers]
        if library == "gradcam":
            import pytorch_grad_cam

            cls = getattr(pytorch_grad_cam, name)
            self.cam = cls(model, target_layers=modules)
            self.inner = list(getattr(self.cam, "base_cam_per_layer", [self.cam]))
        else:
            import torchcam.methods

            cls = getattr(torchcam.methods, name)
            self.cam = cls(model, list(layers), input_shape=(3, image_size, image_size))

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.library == "gradcam":
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

            targets = [ClassifierOutputTarget(int(c)) for c in labels]
            maps = torch.from_numpy(np.ascontiguousarray(self.cam(input_tensor=images, targets=targets)))
            return _normalise(maps.float().to(images.device))
        with torch.enable_grad():
            scores = self.model(images)
            low = self.cam(labels.tolist(), scores)[0]
        up = F.interpolate(low[:, None].float(), size=images.shape[-2:], mode="bilinear", align_corners=False)
        return _normalise(up[:, 0].detach())

    def close(self) -> None:
        if self.library == "gradcam":
            for cam in self.inner:  # RefineCAM has no __exit__: release its base CAMs' hooks
                cam.activations_and_grads.release()
        else:
            self.cam.remove_hooks()


# ---------------------------------------------------------------------------- evaluation
def _seed_precision(cams: torch.Tensor, masks: torch.Tensor, config: FCAMConfig, generator: torch.Generator) -> tuple[float, float, float, float]:
    """Sums (fg seed pixels in object, fg seed pixels, bg seed pixels outside, bg seed pixels)."""
    seeds = sample_seeds(
        cams[:, None], config.n_fg, config.n_bg, config.seed_patch, config.fg_erosion, config.bg_percentile,
        generator=generator,
    )
    fg, bg = seeds == 1, seeds == 0
    inside = masks > 0.5
    return float((fg & inside).sum()), float(fg.sum()), float((bg & ~inside).sum()), float(bg.sum())


def _fcam_config(settings: CompareSettings) -> FCAMConfig:
    return FCAMConfig(**settings.fcam_overrides)


def run_comparison(settings: CompareSettings | None = None, model: nn.Module | None = None) -> ComparisonResult:
    """Run the whole comparison (see the module docstring); prints stage lines if ``progress``.

    Args:
        settings: sizes and methods; default :class:`CompareSettings`.
        model: a classifier already trained on this synthetic set (a ResNet-18 with
            ``settings.num_classes`` outputs, on ``settings.device``): skips classifier training.

    Returns:
        ComparisonResult: metrics per method, classifier accuracy, timings, figure samples.
    """
    from .upscaler import FCAMUpscaler

    s = settings or CompareSettings()
    if not isinstance(s, CompareSettings):
        raise TypeError(f"`settings` must be a CompareSettings, got {describe(s)}.")
    device = torch.device(s.device)
    verbose = s.progress
    timings: dict[str, dict[str, float]] = {}
    machine = machine_info()
    labels_of: dict[str, str] = {}

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(s.seed)
        with _Stage(timings, "data", verbose) as stage:
            train_set = SyntheticWSOL(s.train_images, s.image_size, s.num_classes, seed=s.seed, split="train")
            test_set = SyntheticWSOL(s.test_images, s.image_size, s.num_classes, seed=s.seed, split="test")
            x_train, y_train, _ = _render(train_set, "data train", verbose)
            x_test, y_test, m_test = _render(test_set, "data test", verbose)
            gt_boxes = [test_set.boxes(i) for i in range(len(test_set))]
            stage.note = f"{s.train_images} train / {s.test_images} test images, {s.image_size} px, {s.num_classes} classes"

        with _Stage(timings, "classifier", verbose) as stage:
            trained = model is None
            if model is None:
                model = train_classifier(
                    x_train, y_train, s.num_classes, s.classifier_epochs, s.batch_size, s.seed, device, verbose,
                    s.classifier_stride,
                )
            model.eval()
            accuracy, preds = _accuracy(model, x_test, y_test, s.batch_size, device)
            train_accuracy, _ = _accuracy(model, x_train, y_train, s.batch_size, device)
            stage.note = (
                f"ResNet-18, {s.classifier_epochs if trained else 'given'} epochs: test accuracy {100 * accuracy:.1f}% "
                f"(train {100 * train_accuracy:.1f}%, chance {100 / s.num_classes:.0f}%)"
            )

        upscalers: dict[str, FCAMUpscaler] = {}
        histories: dict[str, list[dict[str, float]]] = {}
        config = _fcam_config(s)
        for name in s.seed_methods:
            label, path, layer_names = SEED_METHODS[name]
            with _Stage(timings, f"fcam_fit_{name}", verbose) as stage:
                module, cls_name = path.split(":")
                method = getattr(__import__(module, fromlist=[cls_name]), cls_name)
                layers = [model.get_submodule(n) for n in layer_names]
                up = FCAMUpscaler(model, method, target_layers=layers, config=config)
                up.fit(
                    _AugmentedLoader(x_train, y_train, s.batch_size, s.seed + 2), epochs=s.fcam_epochs,
                    seed=s.seed, progress=verbose,
                )
                histories[name] = list(up.history)
                upscalers[name] = up
                labels_of[f"fcam_{name}"] = f"F-CAM, {label} seeds"
                last = histories[name][-1] if histories[name] else {}
                stage.note = f"F-CAM on {label} seeds, {s.fcam_epochs} epochs, last epoch " + ", ".join(
                    f"{k} {v:.3g}" for k, v in last.items() if k != "epoch"
                )

        # ------------------------------------------------------------------ evaluation
        with _Stage(timings, "evaluation", verbose) as stage:
            evaluators: dict[str, LocalizationEvaluator] = {}
            k = min(s.figure_images, s.test_images)
            samples_maps: dict[str, list[torch.Tensor]] = {}
            rgb_test = (x_test * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)).clamp(0, 1)
            guided_sources = [g for g in GUIDED_SOURCES if g in s.baselines] if s.guided else []
            grid = [(max(1, round(f * s.image_size)), eps) for f, eps in GUIDED_GRID]
            seed_counts = {name: [0.0, 0.0, 0.0, 0.0] for name in s.seed_methods}
            gen = torch.Generator(device=device).manual_seed(s.seed + 3)

            def record(key: str, maps: torch.Tensor, index: torch.Tensor, masks: torch.Tensor) -> None:
                ev = evaluators.setdefault(key, LocalizationEvaluator())
                ev.update(maps.cpu(), masks=masks, boxes=[gt_boxes[int(i)] for i in index])
                if int(index[0]) < k:
                    samples_maps.setdefault(key, []).append(maps[: k - int(index[0])].cpu())

            # (key, maps_fn(images, labels) -> (B, H, W) in [0, 1]); library CAMs hold hooks until closed
            methods: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]] = []
            for name in s.baselines:
                label, library, cls_name, layer_names = BASELINES[name]
                labels_of[name] = label
                methods.append((name, _lazy_cam(model, library, cls_name, layer_names, s.image_size)))
            for name, up in upscalers.items():
                methods.append((f"fcam_{name}", lambda x, y, up=up: _normalise(up.maps(x))))  # min-max, as the protocol
                methods.append((f"seeds_{name}", lambda x, y, up=up: up.cams(x, y)))
            batches = _batches(s.test_images, s.batch_size)
            with _bar(len(methods) * len(batches), "evaluation", verbose) as bar:
                for key, fn in methods:
                    try:
                        for index in batches:
                            x, y, m = x_test[index].to(device), y_test[index].to(device), m_test[index]
                            maps = fn(x, y).detach().float().clamp(0, 1)
                            if key.startswith("seeds_"):
                                counts = _seed_precision(maps, m.to(device), config, gen)
                                seed_counts[key[6:]] = [a + b for a, b in zip(seed_counts[key[6:]], counts)]
                            else:
                                record(key, maps, index, m)
                            for radius, eps in grid if key in guided_sources else []:
                                refined = guided_filter(rgb_test[index].to(device), maps[:, None], radius, eps)
                                record(f"guided_{key}@{radius},{eps:g}", _normalise(refined[:, 0]), index, m)
                            bar.update(1)
                    finally:
                        if hasattr(fn, "close"):
                            fn.close()
            metrics = {key: ev.summary() for key, ev in evaluators.items()}
            guided_params: dict[str, tuple[int, float]] = {}
            for src in guided_sources:  # keep the best setting of the grid (by PxAP) under a stable key
                keys = [key for key in metrics if key.startswith(f"guided_{src}@")]
                best = max(keys, key=lambda key: metrics[key]["pxap"])
                radius, eps = best.split("@")[1].split(",")
                guided_params[src] = (int(radius), float(eps))
                metrics[f"guided_{src}"] = metrics.pop(best) | {"grid": {key.split("@")[1]: metrics[key]["pxap"] for key in keys if key != best}}
                samples_maps[f"guided_{src}"] = samples_maps.pop(best)
                for key in keys:
                    metrics.pop(key, None)
                    samples_maps.pop(key, None)
                labels_of[f"guided_{src}"] = f"guided filter of {labels_of[src]} (r={radius}, eps={eps}; best of {len(keys)} on test)"
            seed_stats = {
                name: {"fg_precision": c[0] / max(c[1], 1.0), "bg_precision": c[2] / max(c[3], 1.0)}
                for name, c in seed_counts.items()
            }
            stage.note = f"{len(metrics)} maps x {s.test_images} test images"

    samples = {
        "images": (rgb_test[:k].permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8),
        "masks": m_test[:k].numpy() > 0.5,
        "labels": y_test[:k].numpy(),
        "predictions": preds[:k].numpy(),
        "maps": {key: torch.cat(v)[:k].numpy() for key, v in samples_maps.items()},
    }
    for up in upscalers.values():
        up.close()
    ordered = {key: metrics[key] for key in _order(metrics)}
    return ComparisonResult(
        settings=s, metrics=ordered, labels={key: labels_of.get(key, key) for key in ordered},
        accuracy=accuracy, train_accuracy=train_accuracy, seed_stats=seed_stats, fcam_history=histories,
        guided_params=guided_params, timings=timings, machine=machine, samples=samples, model=model,
    )


def _order(metrics: dict[str, Any]) -> list[str]:
    """Baselines first (in :data:`BASELINES` order), then guided filters, then F-CAM."""
    rank = {name: i for i, name in enumerate(BASELINES)}
    return sorted(metrics, key=lambda k: (k.startswith("fcam_"), k.startswith("guided_"), rank.get(k, 99), k))


def _lazy_cam(model: nn.Module, library: str, name: str, layers: Sequence[str], image_size: int) -> Any:
    """A callable building the library CAM on first use, with ``close()`` releasing its hooks."""

    class _Lazy:
        cam: _LibraryCAM | None = None

        def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            if self.cam is None:
                self.cam = _LibraryCAM(model, library, name, layers, image_size)
            return self.cam(images, labels)

        def close(self) -> None:
            if self.cam is not None:
                self.cam.close()
                self.cam = None

    return _Lazy()


# ------------------------------------------------------------------------------- reporting
#: Target of issue 4: F-CAM PxAP gain over the bilinear GradCAM++ map, and MaxBoxAccV2 gain.
TARGET_PXAP_GAIN = 0.15
TARGET_BOXV2_GAIN = 0.10
#: Bilinear GradCAM++ PxAP above which the synthetic set is too easy to tell methods apart.
EASY_PXAP = 0.8


def _training_free(result: ComparisonResult) -> list[str]:
    return [k for k in result.metrics if not k.startswith("fcam_")]


def summarize(result: ComparisonResult) -> dict[str, Any]:
    """Gains of every F-CAM variant, the target check, the recommended seed method and findings.

    Returns:
        dict with ``gains`` (per F-CAM key: PxAP and MaxBoxAccV2 minus the bilinear GradCAM++ map
        and PxAP minus the best training-free map), ``best_training_free``, ``target_met`` (per
        F-CAM key), ``recommended`` (F-CAM key with the best PxAP), ``dataset_too_easy``,
        ``verdict`` (one line) and ``findings`` (sentences for a report).
    """
    m = result.metrics
    free = _training_free(result)
    best_free = max(free, key=lambda k: m[k]["pxap"]) if free else None
    base = m.get("gradcampp")
    fcams = [k for k in m if k.startswith("fcam_")]
    gains: dict[str, dict[str, float]] = {}
    target: dict[str, bool] = {}
    for key in fcams:
        g: dict[str, float] = {}
        if base is not None:
            g["pxap_vs_bilinear"] = m[key]["pxap"] - base["pxap"]
            g["maxboxaccv2_vs_bilinear"] = m[key]["maxboxaccv2"] - base["maxboxaccv2"]
        if best_free is not None:
            g["pxap_vs_best_training_free"] = m[key]["pxap"] - m[best_free]["pxap"]
        gains[key] = g
        if base is not None and best_free is not None:
            target[key] = (
                g["pxap_vs_bilinear"] >= TARGET_PXAP_GAIN and g["pxap_vs_best_training_free"] > 0
                and g["maxboxaccv2_vs_bilinear"] >= TARGET_BOXV2_GAIN
            )
    recommended = max(fcams, key=lambda k: m[k]["pxap"]) if fcams else None
    too_easy = base is not None and base["pxap"] > EASY_PXAP
    findings = []
    if result.accuracy < 0.6:
        findings.append(f"The classifier reaches only {100 * result.accuracy:.1f}% test accuracy: its CAMs (and F-CAM, "
                        "trained on them) are of limited meaning.")
    if base is not None:
        findings.append(f"Bilinear GradCAM++ reaches PxAP {100 * base['pxap']:.1f}"
                        + (" — above 80: the dataset is too easy to separate the methods." if too_easy else
                           " (the dataset is not trivially easy: PxAP <= 80)."))
    if best_free is not None:
        findings.append(f"Strongest training-free map: {result.labels[best_free]} (PxAP {100 * m[best_free]['pxap']:.1f}).")
    for key in fcams:
        g = gains[key]
        parts = [f"{result.labels[key]}: PxAP {100 * m[key]['pxap']:.1f}"]
        if "pxap_vs_bilinear" in g:
            parts.append(f"{100 * g['pxap_vs_bilinear']:+.1f} vs bilinear GradCAM++ (target +{100 * TARGET_PXAP_GAIN:.0f})")
            parts.append(f"MaxBoxAccV2 {100 * g['maxboxaccv2_vs_bilinear']:+.1f} (target +{100 * TARGET_BOXV2_GAIN:.0f})")
        if "pxap_vs_best_training_free" in g:
            parts.append(f"PxAP {100 * g['pxap_vs_best_training_free']:+.1f} vs the strongest training-free map")
        stats = result.seed_stats.get(key[5:])
        if stats:
            parts.append(f"seed precision fg {100 * stats['fg_precision']:.0f}% / bg {100 * stats['bg_precision']:.0f}%")
        findings.append(", ".join(parts) + (" — target met." if target.get(key) else " — target not met." if key in target else "."))
    if recommended is not None and len(fcams) > 1:
        findings.append(f"Pick the seed method of {result.labels[recommended]}: it gives the best F-CAM PxAP here.")
    if recommended is None:
        verdict = "no F-CAM fit in this run"
    elif best_free is None or base is None:
        verdict = f"F-CAM ({recommended}) PxAP {100 * m[recommended]['pxap']:.1f}"
    else:
        g = gains[recommended]
        verdict = (f"F-CAM ({recommended[5:]} seeds) PxAP {100 * m[recommended]['pxap']:.1f}: "
                   f"{100 * g['pxap_vs_bilinear']:+.1f} vs bilinear GradCAM++, "
                   f"{100 * g['pxap_vs_best_training_free']:+.1f} vs the strongest training-free map ({best_free}); "
                   f"classifier accuracy {100 * result.accuracy:.1f}%")
    return {
        "gains": gains, "best_training_free": best_free, "target_met": target, "recommended": recommended,
        "dataset_too_easy": too_easy, "verdict": verdict, "findings": findings,
    }


def markdown_table(result: ComparisonResult) -> str:
    """The metric table (values x 100; Δ = difference with the bilinear GradCAM++ map)."""
    m = result.metrics
    base = m.get("gradcampp")
    lines = [
        "| method | PxAP | Δ PxAP | MaxBoxAcc | MaxBoxAccV2 | Δ V2 |",
        "|---|---|---|---|---|---|",
    ]
    for key, v in m.items():
        label = result.labels.get(key, key)
        label = f"**{label}**" if key.startswith("fcam_") else label
        d_px = "" if base is None or key == "gradcampp" else f"{100 * (v['pxap'] - base['pxap']):+.1f}"
        d_v2 = "" if base is None or key == "gradcampp" else f"{100 * (v['maxboxaccv2'] - base['maxboxaccv2']):+.1f}"
        lines.append(f"| {label} | {100 * v['pxap']:.1f} | {d_px} | {100 * v['maxboxacc']:.1f} | "
                     f"{100 * v['maxboxaccv2']:.1f} | {d_v2} |")
    return "\n".join(lines)
