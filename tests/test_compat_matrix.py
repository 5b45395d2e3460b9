"""Compatibility matrix: CAM classes of pytorch-grad-cam and torchcam x backbones of torchvision and beyond.

The methods are found by introspecting the installed libraries (nothing is hand-listed), so a new
method shows up here on its own. Each combination builds an ``FCAMUpscaler``, runs one short fit
step and calls it like the wrapped library, asserting that library's contract and that the model
comes back unchanged; a combination that cannot work must raise a clear error (``EXPECTED_ERRORS``).

Default run: every method on resnet18 at 64 px, and every backbone but the two with large fixed
inputs (inception_v3, vit_b_16) with grad-cam's GradCAMPlusPlus. The rest is marked ``slow``
(``FCAM_RUN_SLOW=1``); ``benchmarks/compat_matrix.py`` runs everything.
``benchmarks/compat_matrix.py`` reuses :func:`run_combination` to publish ``docs/compatibility.md``.

Beyond torchvision (``OTHER_MODELS``): timm models (``pretrained=False``), the lukemelas-style
``efficientnet-pytorch`` and ``efficientnet-lite-pytorch``, and plain modules written here, each
with ``OTHER_METHODS`` and no layer arguments (transformers excepted, as in torchvision). The
third-party rows skip when their package is not installed (``pip install fcam-plugin[models]``);
GradCAMPlusPlus on ``FAST_OTHER_MODELS`` runs by default, the rest is ``slow``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam_plugin import FCAMUpscaler
from fcam_plugin.adapters import is_gradcam_method
from fcam_plugin.adapters.gradcam_wrappers import is_wrapper_method
from fcam_plugin.adapters.torchcam import is_torchcam_method
from fcam_plugin.config import FCAMConfig

NUM_CLASSES = 5
CONFIG = FCAMConfig(decoder_channels=(32, 16, 16, 8, 8))


# ----------------------------------------------------------------------------- methods
def gradcam_methods() -> list[str]:
    import pytorch_grad_cam

    names = [n for n in dir(pytorch_grad_cam) if not n.startswith("_")]
    return sorted(
        n
        for n in names
        if inspect.isclass(getattr(pytorch_grad_cam, n))
        and (is_gradcam_method(getattr(pytorch_grad_cam, n)) or is_wrapper_method(getattr(pytorch_grad_cam, n)))
    )


def torchcam_methods() -> list[str]:
    import torchcam.methods

    names = getattr(torchcam.methods, "__all__", None) or dir(torchcam.methods)
    return sorted(n for n in names if inspect.isclass(getattr(torchcam.methods, n)) and is_torchcam_method(getattr(torchcam.methods, n)))


METHODS: list[tuple[str, str]] = [("gradcam", n) for n in gradcam_methods()] + [("torchcam", n) for n in torchcam_methods()]


def method_class(library: str, name: str) -> type:
    import pytorch_grad_cam
    import torchcam.methods

    return getattr(pytorch_grad_cam if library == "gradcam" else torchcam.methods, name)


# Constructor arguments that only make the slow methods affordable on a CPU test run.
FAST_KWARGS: dict[tuple[str, str], dict[str, Any]] = {
    ("gradcam", "AblationCAM"): {"batch_size": 64, "ratio_channels_to_ablate": 0.1},
    ("gradcam", "SESS"): {"num_scales": 2},
    ("torchcam", "ScoreCAM"): {"batch_size": 64},
    ("torchcam", "SSCAM"): {"batch_size": 64, "num_samples": 2},
    ("torchcam", "ISCAM"): {"batch_size": 64, "num_samples": 2},
    ("torchcam", "SmoothGradCAMpp"): {"num_samples": 2},
}
#: Perturbation methods called without the class gate: a gated call runs the same seed-CAM path as
#: the fit, on three times the images (requested class and two rivals), which takes these methods
#: ~2 CPU minutes in all and tests nothing the fit does not.
UNGATED = {("torchcam", "ScoreCAM"), ("torchcam", "SSCAM"), ("torchcam", "ISCAM")}


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """One column of the matrix.

    Attributes:
        name: the key (torchvision name, or ``source/name`` for the other sources).
        size: side of the test inputs.
        kwargs: constructor keywords (torchvision, timm).
        source: ``"torchvision"``, ``"timm"``, ``"efficientnet-pytorch"``, ``"efficientnet-lite-pytorch"``
            or ``"user"`` (plain modules written here).
        package: import name of the third-party package the model needs (tests skip without it).
        layers: what the combination needs beyond ``FCAMUpscaler(model, method)`` (for the page).
    """

    name: str
    size: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = "torchvision"
    package: str | None = None
    layers: str = ""


def _timm(name: str, size: int = 64, layers: str = "", **kwargs: Any) -> ModelSpec:
    return ModelSpec(f"timm/{name}", size, kwargs, "timm", "timm", layers)


TORCHVISION_MODELS = [
    ModelSpec("resnet18", 64),
    ModelSpec("resnet50", 64),
    ModelSpec("vgg11_bn", 64),
    ModelSpec("densenet121", 64),
    ModelSpec("mobilenet_v3_large", 64),
    ModelSpec("efficientnet_b0", 64),
    ModelSpec("convnext_tiny", 64),
    ModelSpec("regnet_y_400mf", 64),
    ModelSpec("inception_v3", 299, {"aux_logits": False, "init_weights": False}),
    ModelSpec("vit_b_16", 224),
    ModelSpec("swin_t", 64),
]

#: Beyond torchvision: timm (no weights), the lukemelas-style EfficientNet packages, and plain
#: modules as users write them (nn.Sequential, a forward with functional activations, one shared
#: ReLU module, a global max-pool head, a convolutional head).
OTHER_MODELS = [
    _timm("resnet18"),
    _timm("resnet26d"),
    _timm("efficientnet_b0"),
    _timm("mobilenetv3_small_050"),
    _timm("convnext_atto"),
    _timm("regnety_002"),
    _timm("dla34"),
    _timm("cspresnet50"),
    _timm("rexnet_100"),
    _timm("ghostnet_100"),
    _timm("mobilevit_xxs"),
    _timm("vit_tiny_patch16_224", 224, "target `blocks[-1].norm1` + token `reshape_transform`"),
    _timm("swin_tiny_patch4_window7_224", 224, "target `layers[-1]` + NHWC `reshape_transform`"),
    ModelSpec("efficientnet-pytorch/efficientnet-b0", 64, {}, "efficientnet-pytorch", "efficientnet_pytorch"),
    ModelSpec("efficientnet-lite-pytorch/efficientnet-lite0", 64, {}, "efficientnet-lite-pytorch", "efficientnet_lite_pytorch"),
    ModelSpec("user/sequential", 64, {}, "user"),
    ModelSpec("user/nested-stages", 64, {}, "user"),
    ModelSpec("user/functional-relu", 64, {}, "user"),
    ModelSpec("user/shared-relu", 64, {}, "user"),
    ModelSpec("user/max-pool-head", 64, {}, "user"),
    ModelSpec("user/conv-head", 64, {}, "user"),
]

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in TORCHVISION_MODELS + OTHER_MODELS}

_MODEL_CACHE: dict[str, nn.Module] = {}


def _conv_bn(cin: int, cout: int, stride: int, relu: nn.Module | None = None) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), relu if relu is not None else nn.ReLU()]


def _sequential() -> nn.Module:
    """A flat nn.Sequential CNN (a max pool for one of its five halvings)."""
    return nn.Sequential(
        *_conv_bn(3, 16, 2), *_conv_bn(16, 24, 2), nn.MaxPool2d(2), *_conv_bn(24, 32, 1),
        *_conv_bn(32, 48, 2), *_conv_bn(48, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES),
    )


def _nested_stages() -> nn.Module:
    """Stages as nested nn.Sequential blocks, with a separate head module."""
    widths = (16, 24, 32, 48, 64)
    stages, channels = [], 3
    for width in widths:
        stages.append(nn.Sequential(*_conv_bn(channels, width, 2), *_conv_bn(width, width, 1)))
        channels = width
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.1), nn.Linear(channels, NUM_CLASSES))
    return nn.Sequential(nn.Sequential(*stages), head)


class FunctionalReLUNet(nn.Module):
    """A user model whose forward applies ``F.relu`` (no activation modules) and a global *max* pool head."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 16, 24, 32, 48, 64)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, 2, 1) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(b) for b in widths[1:])
        self.fc = nn.Linear(widths[-1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm in zip(self.convs, self.norms):
            x = torch.nn.functional.relu(norm(conv(x)))
        return self.fc(torch.amax(x, dim=(2, 3)))


class SharedReLUNet(nn.Module):
    """One ``self.relu`` module called after every convolution (the pattern that defeats naive hooks)."""

    def __init__(self) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        widths = (3, 16, 24, 32, 48, 64)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b)) for a, b in zip(widths, widths[1:])
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = self.relu(block(x))
        return self.fc(self.pool(x).flatten(1))


def _max_pool_head() -> nn.Module:
    """Stages, then global max pooling (AdaptiveMaxPool2d) and a linear layer."""
    layers: list[nn.Module] = []
    for cin, cout in zip((3, 16, 24, 32, 48), (16, 24, 32, 48, 64)):
        layers += _conv_bn(cin, cout, 2)
    return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, NUM_CLASSES))


def _conv_head() -> nn.Module:
    """All-convolutional: a 1x1 convolution gives class maps, averaged into scores (NiN / SqueezeNet style)."""
    layers: list[nn.Module] = []
    for cin, cout in zip((3, 16, 24, 32, 48), (16, 24, 32, 48, 64)):
        layers += _conv_bn(cin, cout, 2)
    return nn.Sequential(*layers, nn.Conv2d(64, NUM_CLASSES, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())


_USER_MODELS: dict[str, Callable[[], nn.Module]] = {
    "user/sequential": _sequential,
    "user/nested-stages": _nested_stages,
    "user/functional-relu": FunctionalReLUNet,
    "user/shared-relu": SharedReLUNet,
    "user/max-pool-head": _max_pool_head,
    "user/conv-head": _conv_head,
}


def _build(spec: ModelSpec) -> nn.Module:
    if spec.source == "torchvision":
        return getattr(torchvision.models, spec.name)(weights=None, num_classes=NUM_CLASSES, **spec.kwargs)
    if spec.source == "timm":
        import timm

        return timm.create_model(spec.name.split("/", 1)[1], pretrained=False, num_classes=NUM_CLASSES, **spec.kwargs)
    if spec.source == "efficientnet-pytorch":
        from efficientnet_pytorch import EfficientNet

        return EfficientNet.from_name(spec.name.split("/", 1)[1], num_classes=NUM_CLASSES)
    if spec.source == "efficientnet-lite-pytorch":
        from efficientnet_lite_pytorch import EfficientNet as LiteNet

        return LiteNet.from_name(spec.name.split("/", 1)[1], num_classes=NUM_CLASSES)
    return _USER_MODELS[spec.name]()


def build_model(name: str) -> nn.Module:
    """Random-weight model (cached per process; every test must leave it unchanged)."""
    if name not in _MODEL_CACHE:
        torch.manual_seed(0)
        _MODEL_CACHE[name] = _build(MODELS[name]).eval()
    return _MODEL_CACHE[name]


_TAPS_CACHE: dict[str, list[Any]] = {}


def model_taps(model_name: str) -> list[Any]:
    from fcam_plugin.taps import find_taps

    if model_name not in _TAPS_CACHE:
        _TAPS_CACHE[model_name] = find_taps(build_model(model_name))
    return _TAPS_CACHE[model_name]


def vit_reshape(tensor: torch.Tensor) -> torch.Tensor:
    """grad-cam's ViT reshape transform: drop the class token, tokens -> (B, C, 14, 14)."""
    tokens = tensor[:, 1:, :]
    side = int(tokens.shape[1] ** 0.5)
    return tokens.reshape(tokens.size(0), side, side, tokens.size(2)).permute(0, 3, 1, 2)


def swin_reshape(tensor: torch.Tensor) -> torch.Tensor:
    """torchvision's Swin stages are channels-last (B, h, w, C)."""
    return tensor.permute(0, 3, 1, 2)


def layers_for(library: str, name: str, model_name: str, model: nn.Module) -> tuple[list[nn.Module] | None, Callable | None]:
    """Target layers and reshape transform of a combination (None: the upscaler's default)."""
    if model_name == "vit_b_16":
        blocks = model.encoder.layers
        if name == "LeGrad":
            return [blocks[-1]], None
        if library == "torchcam" and name == "RefineCAM":
            return [blocks[-2].ln_1, blocks[-1].ln_1], vit_reshape
        return [blocks[-1].ln_1], vit_reshape
    if model_name == "swin_t":
        if library == "torchcam" and name == "RefineCAM":
            return [model.features[5], model.norm], swin_reshape
        return [model.norm], swin_reshape
    if model_name == "timm/vit_tiny_patch16_224":  # grad-cam's recipe: the last block's norm1
        return [model.blocks[-1].norm1], vit_reshape
    if model_name == "timm/swin_tiny_patch4_window7_224":  # timm's Swin stages are channels-last too
        return [model.layers[-1]], swin_reshape
    modules = dict(model.named_modules())
    if library == "torchcam" and name == "RefineCAM":
        return [modules[t.name] for t in model_taps(model_name)[-2:]], None
    if name in _PERTURBATION:
        # One forward per channel of the target layer: the stride-8 stage keeps CPU runs short.
        return [modules[t.name] for t in model_taps(model_name) if t.stride == 8][-1:] or None, None
    return None, None  # the upscaler's default (last stage); LeGrad must refuse it clearly


#: Methods that run one forward per channel of the target layer.
_PERTURBATION = {"ScoreCAM", "SSCAM", "ISCAM", "AblationCAM"}


# ------------------------------------------------------------------- raises by design
#: (library, method, model or "*") -> (exception type, message regex): combinations that cannot work.
_TRANSFORMERS = ("vit_b_16", "swin_t", "timm/vit_tiny_patch16_224", "timm/swin_tiny_patch4_window7_224")
_CNNS = [m for m in MODELS if m not in _TRANSFORMERS]


def expected_error(library: str, name: str, model_name: str) -> tuple[type[BaseException], str] | None:
    if library == "torchcam" and name == "LeGrad" and model_name != "vit_b_16":
        return ValueError, "LeGrad explains vision-transformer blocks"
    if library == "gradcam" and name == "FullGrad" and model_name in _TRANSFORMERS:
        return ValueError, "FullGrad cannot explain a transformer"
    if library == "gradcam" and name == "ShapleyCAM" and model_name in _TRANSFORMERS:
        return ValueError, "ShapleyCAM cannot explain a transformer"
    if library == "torchcam" and name == "CAM":
        fcs = [m for m in build_model(model_name).modules() if isinstance(m, nn.Linear)]
        if len(fcs) > 1:
            return ValueError, "torchcam CAM cannot be built.*multiple fully connected layers"
    return None


# ------------------------------------------------------------------------ invariants
def model_state(model: nn.Module) -> dict[str, Any]:
    """Everything the plug-in must leave untouched: weights, flags, modes, grads, hooks."""
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    hook_attrs = (
        "_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
        "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_state_dict_hooks",
    )
    return {
        "weights": digest.hexdigest(),
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "hooks": [sum(len(getattr(m, a, {}) or {}) for a in hook_attrs) for m in model.modules()],
    }


def make_batch(size: int, batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=generator)
    labels = torch.arange(batch) % NUM_CLASSES
    return images, labels


def check_gradcam_output(maps: object, batch: int, size: int) -> None:
    assert isinstance(maps, np.ndarray), type(maps)
    assert maps.dtype == np.float32
    assert maps.shape == (batch, size, size)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1


def check_torchcam_output(maps: object, batch: int, size: int, device: torch.device) -> None:
    assert isinstance(maps, list) and len(maps) == 1, type(maps)
    cam = maps[0]
    assert isinstance(cam, torch.Tensor) and cam.dtype == torch.float32 and cam.device == device
    assert cam.shape == (batch, size, size)
    assert torch.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1


@dataclass
class Outcome:
    status: str  # "pass", "raises by design", "fail"
    detail: str = ""
    seed_seconds_per_image: float | None = None


def run_combination(library: str, name: str, model_name: str, *, strict: bool = True) -> Outcome:
    """Build, fit one step, call with batch 1 (targets=None) and batch 3 (explicit targets).

    With ``strict`` (tests) assertion errors propagate; otherwise they are reported as failures.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = build_model(model_name)
    size = MODELS[model_name].size
    cls = method_class(library, name)
    layers, reshape = layers_for(library, name, model_name, model)
    kwargs = dict(FAST_KWARGS.get((library, name), {}))
    if (library, name) == ("gradcam", "AblationCAM") and model_name in _TRANSFORMERS:
        from pytorch_grad_cam.ablation_layer import AblationLayerVit

        kwargs["ablation_layer"] = AblationLayerVit()  # grad-cam's documented setting for transformers
    before = model_state(model)
    expected = expected_error(library, name, model_name)
    images, labels = make_batch(size, 3)
    loader = DataLoader(TensorDataset(images, labels), batch_size=3)
    try:
        try:
            config = replace(CONFIG, cam_gate=False) if (library, name) in UNGATED else CONFIG
            up = FCAMUpscaler(model, cls, layers, reshape_transform=reshape, config=config, **kwargs)
            with up:
                up.fit(loader, epochs=1, max_steps=1, progress=False, seed=0)
                seed_time = None
                if not strict:  # benchmark: seed-CAM time per image
                    start = time.perf_counter()
                    up.cams(images, labels)
                    seed_time = (time.perf_counter() - start) / len(images)
                device = up.device
                if library == "gradcam":
                    single = up(input_tensor=images[:1], targets=None)
                    check_gradcam_output(single, 1, size)
                    targets = [ClassifierOutputTarget(int(c)) for c in labels]
                    check_gradcam_output(up(images, targets=targets), 3, size)
                else:
                    model(images[:1])
                    # class_idx (every method) with scores where the extractor needs them
                    check_torchcam_output(up(0, model(images[:1])), 1, size, device)
                    scores = model(images)
                    check_torchcam_output(up(labels.tolist(), scores), 3, size, device)
                    raw = up(labels.tolist(), scores, normalized=False)
                    check_torchcam_output(raw, 3, size, device)
                    if up.source._flags[0]:  # explicit output targets, where the extractor accepts them
                        from torchcam.methods import OutputTarget  # noqa: F401

                        check_torchcam_output(up(targets=[lambda out, c=int(c): out[c] for c in labels], scores=scores), 3, size, device)
        except Exception as error:  # noqa: BLE001
            if expected is not None and isinstance(error, expected[0]) and re.search(expected[1], str(error)):
                return Outcome("raises by design", f"{type(error).__name__}: {str(error).splitlines()[0]}")
            if strict:
                raise
            return Outcome("fail", f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        if expected is not None:
            message = f"expected {expected[0].__name__} matching {expected[1]!r}, but it worked"
            if strict:
                raise AssertionError(message)
            return Outcome("fail", message)
        after = model_state(model)
        for key in before:
            if before[key] != after[key]:
                if strict:
                    raise AssertionError(f"the model's {key} changed")
                return Outcome("fail", f"the model's {key} changed")
        return Outcome("pass", seed_seconds_per_image=seed_time)
    finally:
        for param in model.parameters():  # never leak grads to the next combination
            param.grad = None


# ------------------------------------------------------------------------------ tests
FAST_MODEL = "resnet18"
FAST_EVERY_MODEL = {("gradcam", "GradCAMPlusPlus")}
SLOW_MODELS = {"inception_v3", "vit_b_16"}  # 299 / 224 px inputs: minutes on a 2-core CPU

#: Methods run on the models beyond torchvision (every method runs on the torchvision ones).
OTHER_METHODS = [("gradcam", "GradCAMPlusPlus"), ("gradcam", "GradCAM"), ("torchcam", "LayerCAM")]
#: Models beyond torchvision in the default run (GradCAMPlusPlus only): each takes under a second.
FAST_OTHER_MODELS = {
    "user/sequential", "user/nested-stages", "user/functional-relu", "user/shared-relu", "user/max-pool-head",
    "user/conv-head", "efficientnet-pytorch/efficientnet-b0", "efficientnet-lite-pytorch/efficientnet-lite0",
    "timm/resnet18", "timm/efficientnet_b0", "timm/mobilenetv3_small_050", "timm/convnext_atto", "timm/regnety_002",
}

#: Combinations that once failed, run by default as regression tests: ShapleyCAM's second derivative
#: through MobileNetV3's hardsigmoid (the stage seeds fall back to the target layer) and its
#: gradients stored as views on ConvNeXt (grad-cam's release() cannot detach them in place).
FAST_REGRESSIONS = {("gradcam", "ShapleyCAM", "mobilenet_v3_large"), ("gradcam", "ShapleyCAM", "convnext_tiny")}


def combinations() -> list[tuple[str, str, str]]:
    """Every (library, method, model) of the matrix: all methods x torchvision, OTHER_METHODS x the rest."""
    torchvision_names = [spec.name for spec in TORCHVISION_MODELS]
    out = [(lib, name, model) for lib, name in METHODS for model in torchvision_names]
    return out + [(lib, name, spec.name) for lib, name in OTHER_METHODS for spec in OTHER_MODELS]


def is_fast(library: str, name: str, model_name: str) -> bool:
    """Whether a combination runs by default (the rest is marked ``slow``)."""
    if (library, name, model_name) in FAST_REGRESSIONS:
        return True
    if MODELS[model_name].source != "torchvision":
        return model_name in FAST_OTHER_MODELS and (library, name) in FAST_EVERY_MODEL
    return model_name == FAST_MODEL or ((library, name) in FAST_EVERY_MODEL and model_name not in SLOW_MODELS)


def _params() -> list[Any]:
    out = []
    for library, name, model_name in combinations():
        marks = [] if is_fast(library, name, model_name) else [pytest.mark.slow]
        out.append(pytest.param(library, name, model_name, marks=marks, id=f"{library}-{name}-{model_name}"))
    return out


def test_methods_are_introspected() -> None:
    names = {n for _, n in METHODS}
    assert {"GradCAMPlusPlus", "ScoreCAM", "RefineCAM", "FinerCAM", "SESS"} <= {n for lib, n in METHODS if lib == "gradcam"}
    assert {"CAM", "LayerCAM", "LeGrad", "RefineCAM", "FinerCAM", "SmoothGradCAMpp"} <= {n for lib, n in METHODS if lib == "torchcam"}
    assert len(names) >= 20


@pytest.mark.parametrize(("library", "name", "model_name"), _params())
def test_combination(library: str, name: str, model_name: str) -> None:
    package = MODELS[model_name].package
    if package is not None:
        pytest.importorskip(package)
    outcome = run_combination(library, name, model_name)
    assert outcome.status in ("pass", "raises by design"), outcome
