"""Compatibility matrix: every CAM class of pytorch-grad-cam and torchcam x common torchvision backbones.

The methods are found by introspecting the installed libraries (nothing is hand-listed), so a new
method shows up here on its own. Each combination builds an ``FCAMUpscaler``, runs one short fit
step and calls it like the wrapped library, asserting that library's contract and that the model
comes back unchanged; a combination that cannot work must raise a clear error (``EXPECTED_ERRORS``).

Default run: every method on resnet18 at 64 px, and every backbone but the two with large fixed
inputs (inception_v3, vit_b_16) with grad-cam's GradCAMPlusPlus. The rest is marked ``slow``
(``FCAM_RUN_SLOW=1``); ``benchmarks/compat_matrix.py`` runs everything.
``benchmarks/compat_matrix.py`` reuses :func:`run_combination` to publish ``docs/compatibility.md``.
"""

from __future__ import annotations

import hashlib
import inspect
import re
import time
from dataclasses import dataclass, field
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


# ----------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    name: str
    size: int
    kwargs: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
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
}

_MODEL_CACHE: dict[str, nn.Module] = {}


def build_model(name: str) -> nn.Module:
    """Random-weight torchvision model (cached per process; every test must leave it unchanged)."""
    if name not in _MODEL_CACHE:
        spec = MODELS[name]
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None, num_classes=NUM_CLASSES, **spec.kwargs)
        _MODEL_CACHE[name] = model.eval()
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
_TRANSFORMERS = ("vit_b_16", "swin_t")
_CNNS = [m for m in MODELS if m not in _TRANSFORMERS]


def expected_error(library: str, name: str, model_name: str) -> tuple[type[BaseException], str] | None:
    if library == "torchcam" and name == "LeGrad" and model_name != "vit_b_16":
        return ValueError, "LeGrad explains vision-transformer blocks"
    if library == "gradcam" and name == "FullGrad" and model_name in _TRANSFORMERS:
        return ValueError, "FullGrad cannot explain a transformer"
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
            up = FCAMUpscaler(model, cls, layers, reshape_transform=reshape, config=CONFIG, **kwargs)
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


def _params() -> list[Any]:
    out = []
    for library, name in METHODS:
        for model_name in MODELS:
            fast = model_name == FAST_MODEL or ((library, name) in FAST_EVERY_MODEL and model_name not in SLOW_MODELS)
            marks = [] if fast else [pytest.mark.slow]
            out.append(pytest.param(library, name, model_name, marks=marks, id=f"{library}-{name}-{model_name}"))
    return out


def test_methods_are_introspected() -> None:
    names = {n for _, n in METHODS}
    assert {"GradCAMPlusPlus", "ScoreCAM", "RefineCAM", "FinerCAM", "SESS"} <= {n for lib, n in METHODS if lib == "gradcam"}
    assert {"CAM", "LayerCAM", "LeGrad", "RefineCAM", "FinerCAM", "SmoothGradCAMpp"} <= {n for lib, n in METHODS if lib == "torchcam"}
    assert len(names) >= 20


@pytest.mark.parametrize(("library", "name", "model_name"), _params())
def test_combination(library: str, name: str, model_name: str) -> None:
    outcome = run_combination(library, name, model_name)
    assert outcome.status in ("pass", "raises by design"), outcome
