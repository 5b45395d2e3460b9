"""What one comparison run does: data variant, sizes, seed methods, rivals, and the named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .._checks import check_choice
from ..config import FCAMConfig
from ..data.synthetic import VARIANTS

__all__ = ["PRESETS", "RIVALS", "SEED_METHODS", "DemoSettings", "preset"]

#: Seed methods F-CAM is trained on: key -> (label, CAM class as "module:name").
SEED_METHODS: dict[str, tuple[str, str]] = {
    "gradcampp": ("GradCAM++", "pytorch_grad_cam:GradCAMPlusPlus"),
    "gradcam": ("GradCAM", "pytorch_grad_cam:GradCAM"),
    "layercam": ("LayerCAM", "pytorch_grad_cam:LayerCAM"),
    "torchcam_gradcampp": ("GradCAM++ (torchcam)", "torchcam.methods:GradCAMpp"),
}

#: Training-free rivals: key -> (label, library, class name, target layers of the ResNet-18).
RIVALS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "layercam_l234": ("LayerCAM, layers 2-4 (grad-cam mean)", "gradcam", "LayerCAM", ("layer2", "layer3", "layer4")),
    "refinecam": ("RefineCAM, GradCAM++ layers 2-4 (grad-cam)", "gradcam", "RefineCAM", ("layer2", "layer3", "layer4")),
    "refinecam_torchcam": (
        "RefineCAM, GradCAM++ layers 2-4 (torchcam)", "torchcam", "RefineCAM", ("layer2", "layer3", "layer4"),
    ),
}


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}.")


@dataclass
class DemoSettings:
    """Size and content of one comparison run (``fcam demo``, ``benchmarks/quality.py``).

    Attributes:
        variant: synthetic variant, a key of :data:`fcam_plugin.data.VARIANTS`.
        image_size: side of the square images (the ResNet-18 CAM grid is ``image_size / 32``).
        num_classes: classes; ``None`` for the variant's own count (5 for ``shapes``, else 4).
        train_images / test_images: sizes of the synthetic train and test splits.
        fit_images: training images used by the F-CAM fits (``None``: all of them).
        classifier_epochs: epochs of classifier training (AdamW, one-cycle schedule).
        fcam_epochs: epochs of each F-CAM fit; the test split is evaluated after every one.
        batch_size: batch size of both trainings and of the evaluation.
        seed_methods: keys of :data:`SEED_METHODS`, one F-CAM fit each (the wrapped method).
        rivals: keys of :data:`RIVALS` evaluated as training-free rivals.
        guided: add the guided filter of the first seed method's bilinear CAM as a rival.
        fcam_overrides: :class:`~fcam_plugin.FCAMConfig` fields changed for the fits.
        seed: seed of the data, the classifier and the fits.
        device: torch device.
        figure_images: test images shown in the figures.
        multi_images: test images with 2-3 objects of different classes, on which the map of each
            class present is scored (per-class PxAP, right-object rate); 0: none (also with fewer
            than 3 classes).
        classifier_cache: folder where trained classifiers are kept and reused (``None``: none).
        progress: progress bars and one line per stage.
    """

    variant: str = "parts"
    image_size: int = 64
    num_classes: int | None = None
    train_images: int = 1024
    test_images: int = 160
    fit_images: int | None = None
    classifier_epochs: int = 12
    fcam_epochs: int = 4
    batch_size: int = 32
    seed_methods: tuple[str, ...] = ("gradcampp",)
    rivals: tuple[str, ...] = tuple(RIVALS)
    guided: bool = True
    fcam_overrides: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "cpu"
    figure_images: int = 4
    multi_images: int = 96
    classifier_cache: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, tuple(VARIANTS))
        for name in ("train_images", "test_images", "classifier_epochs", "fcam_epochs", "batch_size", "figure_images"):
            _positive(name, getattr(self, name))
        if self.fit_images is not None:
            _positive("fit_images", self.fit_images)
        if isinstance(self.multi_images, bool) or not isinstance(self.multi_images, int) or self.multi_images < 0:
            raise ValueError(f"`multi_images` must be an int >= 0, got {self.multi_images!r}.")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 32:
            raise ValueError(f"`image_size` must be an int >= 32 (ResNet-18 has stride 32), got {self.image_size!r}.")
        if self.num_classes is not None:
            _positive("num_classes", self.num_classes)
        self.seed_methods, self.rivals = tuple(self.seed_methods), tuple(self.rivals)
        if not self.seed_methods:
            raise ValueError("`seed_methods` must name at least one method of SEED_METHODS.")
        for name in self.seed_methods:
            check_choice("seed_methods", name, tuple(SEED_METHODS))
        for name in self.rivals:
            check_choice("rivals", name, tuple(RIVALS))
        FCAMConfig(**self.fcam_overrides)  # fail now on an unknown or invalid field

    @property
    def classes(self) -> int:
        """The number of classes of this run."""
        return self.num_classes or (5 if self.variant == "shapes" else 4)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self) | {"seed_methods": list(self.seed_methods), "rivals": list(self.rivals), "classes": self.classes}


#: Named runs: ``quick`` (a smoke test, numbers not meaningful), ``full`` (64 px), ``224`` (the
#: paper's resolution, the benchmark of benchmarks/quality.py).
PRESETS: dict[str, DemoSettings] = {
    "quick": DemoSettings(
        train_images=192, test_images=32, classifier_epochs=3, fcam_epochs=1, figure_images=3,
        rivals=("layercam_l234", "refinecam"), multi_images=8,
    ),
    "full": DemoSettings(train_images=1024, test_images=160, classifier_epochs=12, fcam_epochs=4),
    "224": DemoSettings(
        image_size=224, train_images=1600, test_images=256, fit_images=640, classifier_epochs=12, fcam_epochs=4,
        multi_images=64,
    ),
}


def preset(name: str, **changes: Any) -> DemoSettings:
    """A named preset of :data:`PRESETS` with some fields changed (validated again)."""
    check_choice("preset", name, tuple(PRESETS))
    return replace(PRESETS[name], **changes)
