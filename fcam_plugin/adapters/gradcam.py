"""Adapter for pytorch-grad-cam (``grad-cam`` on PyPI): seeds from any ``BaseCAM`` method.

Eight gradient/activation methods are computed natively in torch on the model's device, batched
(no numpy/cv2 round trip in the training loop); their formulas are those of grad-cam 1.5.7 and a
test checks parity with the library. Every other method (ScoreCAM, AblationCAM, FullGrad, ...) is
run through the library itself, whose output is converted back to a tensor.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .._checks import describe
from .._state import preserved
from .base import CAMSource, MapsFn, normalize_per_image, upsample_cams

__all__ = ["GradCAMSource", "is_gradcam_method", "targets_to_classes"]

_TTA_FACTORS = (0.9, 1.0, 1.1)  # grad-cam's default test-time augmentation: hflip x multiply
_GRADCAM_SIGNATURE = "input_tensor, targets=None, aug_smooth=False, eigen_smooth=False"


def _base_cam() -> type:
    from pytorch_grad_cam.base_cam import BaseCAM

    return BaseCAM


def is_gradcam_method(method: object) -> bool:
    """True for a pytorch-grad-cam ``BaseCAM`` subclass or instance."""
    try:
        base = _base_cam()
    except ImportError:  # pragma: no cover - grad-cam is a dependency
        return False
    return (inspect.isclass(method) and issubclass(method, base)) or isinstance(method, base)


# ----------------------------------------------------------------------- targets
def _class_target_attributes() -> dict[type, str]:
    """grad-cam target classes that name one class, and the attribute holding it."""
    from pytorch_grad_cam.utils import model_targets as mt

    table = {
        mt.ClassifierOutputTarget: "category",
        mt.ClassifierOutputSoftmaxTarget: "category",
        getattr(mt, "ClassifierOutputReST", None): "category",
        getattr(mt, "FinerWeightedTarget", None): "main_category",
    }
    return {cls: attr for cls, attr in table.items() if cls is not None}


def _target_name(target: object) -> str:
    name = getattr(target, "__name__", None) or type(target).__name__
    return f"{name} ({target!r})" if name == "<lambda>" else name


def _target_class(target: object, index: int) -> int:
    """The class a grad-cam target names (``ClassifierOutputTarget(c).category``), with clear errors."""
    for cls, attr in _class_target_attributes().items():
        if isinstance(target, cls):
            category = getattr(target, attr, None)
            if isinstance(category, (int, np.integer)) and not isinstance(category, bool) and category >= 0:
                return int(category)
            raise ValueError(
                f"`targets[{index}]` is a {type(target).__name__} whose class {category!r} is not a non-negative int."
            )
    raise TypeError(
        f"`targets[{index}]` is {_target_name(target)}, which does not name a class: the F-CAM map is explained "
        "per class, so targets must be ClassifierOutputTarget(c), ClassifierOutputSoftmaxTarget(c) or "
        "ClassifierOutputReST(c) (or None for the predicted class)."
    )


def targets_to_classes(targets: object, batch: int, device: torch.device | None = None) -> torch.Tensor | None:
    """grad-cam ``targets`` as the classes they name: ``LongTensor (B,)``, or None for the predicted class.

    Raises:
        TypeError: not a list, entries that are not callables, or callables that name no class
            (``SemanticSegmentationTarget``, a lambda).
        ValueError: not one target per image.
    """
    if targets is None:
        return None
    if not isinstance(targets, (list, tuple)):
        raise TypeError(
            f"`targets` must be None or a list of {batch} callables such as ClassifierOutputTarget(c), "
            f"got {describe(targets)}."
        )
    if len(targets) != batch:
        raise ValueError(f"`targets` must hold one target per image ({batch}), got {len(targets)}.")
    if all(t is None for t in targets):
        return None  # SESS accepts [None] * B: the predicted class of each image
    bad = [t for t in targets if not callable(t)]
    if bad:
        raise TypeError(
            f"`targets` entries must be callables such as ClassifierOutputTarget(c), got {bad[0]!r}."
        )
    classes = [_target_class(t, i) for i, t in enumerate(targets)]
    return torch.tensor(classes, dtype=torch.long, device=device)


# ---------------------------------------------------------------- native formulas
def _projection(x: torch.Tensor) -> torch.Tensor:
    """First principal component projection per image, as grad-cam's ``get_2d_projection``."""
    b, c = x.shape[:2]
    flat = torch.nan_to_num(x.float()).reshape(b, c, -1).transpose(1, 2)  # (B, hw, C)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    return (flat @ vh[:, 0, :, None]).reshape(b, *x.shape[2:])


def _weighted(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    return weights[:, :, None, None] * acts


def _gradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return _weighted(g.mean(dim=(2, 3)), a)


def _gradcampp(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    g2 = g**2
    g3 = g2 * g
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    aij = g2 / (2 * g2 + sum_a * g3 + 1e-6)
    aij = torch.where(g != 0, aij, torch.zeros_like(aij))
    return _weighted((g.clamp_min(0) * aij).sum(dim=(2, 3)), a)


def _xgradcam(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    sum_a = a.sum(dim=(2, 3), keepdim=True)
    return _weighted((g * a / (sum_a + 1e-7)).sum(dim=(2, 3)), a)


# Each returns the weighted activations (B, C, h, w); the CAM is their channel sum, or their first
# principal component with eigen_smooth. EigenCAM/EigenGradCAM always project.
_WEIGHTED: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "GradCAM": _gradcam,
    "GradCAMPlusPlus": _gradcampp,
    "XGradCAM": _xgradcam,
    "HiResCAM": lambda a, g: g * a,
    "GradCAMElementWise": lambda a, g: (g * a).clamp_min(0),
    "LayerCAM": lambda a, g: g.clamp_min(0) * a,
    "EigenCAM": lambda a, g: a,
    "EigenGradCAM": lambda a, g: g * a,
}
_ALWAYS_PROJECT = {"EigenCAM", "EigenGradCAM"}
_NO_GRADIENT = {"EigenCAM"}
#: grad-cam methods whose own call fails on a transformer's token layout, with the reason: they refuse a
#: ``reshape_transform`` with a clear error instead.
_NO_TRANSFORMERS = {
    "FullGrad": "it aggregates the bias gradients of every Conv2d/BatchNorm2d layer at image resolution and "
    "fails on token layouts",
    "ShapleyCAM": "its Hessian-vector weights ignore `reshape_transform`, and attention has no second derivative "
    "on the CPU: the library's own call fails too",
}


def _native_name(cls: type) -> str | None:
    """Name of the native formula for exactly this grad-cam class (a user subclass may differ)."""
    import pytorch_grad_cam

    name = cls.__name__
    return name if name in _WEIGHTED and getattr(pytorch_grad_cam, name, None) is cls else None


def _class_scores(output: object, labels: torch.Tensor) -> torch.Tensor:
    """``output[i, labels[i]]`` with clear errors (ClassifierOutputTarget semantics)."""
    if not isinstance(output, torch.Tensor) or output.ndim != 2:
        raise ValueError(
            f"the model must return class scores of shape (B, num_classes), got {describe(output)}."
        )
    num_classes = output.shape[1]
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"class indices must be in [0, {num_classes}) for this model (it returns {num_classes} scores), "
            f"got {labels.tolist()[:8]}{'...' if labels.numel() > 8 else ''} in `labels` / `targets`."
        )
    return output.gather(1, labels.view(-1, 1).to(output.device)).squeeze(1)


class _LayerRecorder:
    """Forward hooks keeping the first output of each layer (a context manager).

    With ``leaf=True`` (one layer, gradient methods) the recorded output is made a leaf that
    requires grad, so the backward pass starts there and nothing upstream is recorded.
    """

    def __init__(self, layers: Sequence[nn.Module], leaf: bool) -> None:
        self.layers = list(layers)
        self.leaf = leaf
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self._handles: list[Any] = []

    def _hook(self, index: int) -> Callable:
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> torch.Tensor | None:
            if self.outputs[index] is not None:
                return None
            if self.leaf:
                output = output.detach().requires_grad_(True)
                self.outputs[index] = output
                # A clone, not the leaf itself, goes on: in-place ops after the layer
                # (DenseNet's F.relu(features, inplace=True)) may not modify a grad leaf.
                return output.clone()
            self.outputs[index] = output
            return None

        return hook

    def __enter__(self) -> _LayerRecorder:
        self._handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


class GradCAMSource(CAMSource):
    """Seed source and call contract for a pytorch-grad-cam method.

    Args:
        model: the classifier.
        method: a ``BaseCAM`` subclass (built lazily on ``target_layers``) or a ready instance
            (which must wrap ``model``; its target layers and reshape transform are used).
        target_layers: layers for a method given as a class (modules or names).
        reshape_transform: grad-cam's reshape transform for non-CNN models.
        **kwargs: :class:`~fcam_plugin.adapters.base.CAMSource`'s options and the method's
            constructor arguments.
    """

    library = "pytorch-grad-cam"
    _reserved: ClassVar[tuple[str, ...]] = ("self", "model", "target_layers", "reshape_transform")

    # ------------------------------------------------------- library specifics
    @classmethod
    def _is_class(cls, method: type) -> bool:
        return issubclass(method, _base_cam())

    @classmethod
    def _is_instance(cls, method: object) -> bool:
        return isinstance(method, _base_cam())

    def _wrong_method_message(self, method: object) -> str:
        return f"`method` must be a pytorch-grad-cam BaseCAM class or instance, got {method!r}."

    def _owner(self, instance: Any) -> object:
        return instance.model

    def _instance_layers(self, instance: Any) -> tuple[list[nn.Module], Callable | None]:
        return list(instance.target_layers), instance.reshape_transform

    def _build(self, layers: list[nn.Module]) -> Any:
        return self._cls(self.model, layers, self._reshape, **self._kwargs)

    def _release(self, instance: Any) -> None:
        hooks = instance.activations_and_grads
        # grad-cam's release() first detaches the stored tensors in place, which raises on views
        # (ShapleyCAM's second-order gradients on convnext): drop them, then remove the hooks.
        for stored in (getattr(hooks, "activations", None), getattr(hooks, "gradients", None)):
            if isinstance(stored, list):
                stored.clear()
        hooks.release()

    def _check_class_arguments(self) -> None:
        name = self._cls.__name__
        if name in _NO_TRANSFORMERS and self._reshape is not None:
            raise ValueError(
                f"pytorch-grad-cam's {name} cannot explain a transformer ({_NO_TRANSFORMERS[name]}); with a "
                "`reshape_transform`, use e.g. GradCAM, LayerCAM or EigenCAM instead."
            )
        if self._native is None and not self._layers and name != "FullGrad":
            raise ValueError(f"`target_layers` is empty for {name}.")

    @property
    def _native(self) -> str | None:
        return _native_name(self._cls)

    @property
    def native(self) -> bool:
        """Whether CAMs are computed by the torch-native formula (else through the library)."""
        return self._native is not None

    # ------------------------------------------------------------------ seeds
    def _compute_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self._native is None:
            return self._library_maps(self.instance(), images, labels)
        per_layer = self._native_maps(images, labels, self._layers)
        if len(per_layer) == 1:
            return per_layer[0]
        size = images.shape[-2:]
        stacked = torch.stack([upsample_cams(cam, size) for cam in per_layer])
        return normalize_per_image(stacked.clamp_min(0).mean(0))

    def _compute_layer_cams(
        self, images: torch.Tensor, labels: torch.Tensor, layers: list[nn.Module]
    ) -> list[torch.Tensor]:
        if self._native is not None:
            return self._native_maps(images, labels, layers)
        return [self._library_maps(self.layer_instance([layer]), images, labels) for layer in layers]

    def _native_maps(self, images: torch.Tensor, labels: torch.Tensor, layers: list[nn.Module]) -> list[torch.Tensor]:
        """One forward (and backward): per layer ``(B, 1, h, w)`` min-max normalised, on the model's device."""
        name = self._native
        needs_grad = name not in _NO_GRADIENT
        single = len(layers) == 1
        with _LayerRecorder(layers, leaf=single and needs_grad) as recorder, torch.enable_grad():
            x = images.detach().requires_grad_(needs_grad and not single)
            scores = _class_scores(self.model(x), labels)
            acts = recorder.outputs
            if any(a is None for a in acts):
                raise RuntimeError("a target layer of the CAM method did not run in the forward pass.")
            grads = torch.autograd.grad(scores.sum(), acts) if needs_grad else [None] * len(acts)  # type: ignore[arg-type]
        maps = []
        for act, grad in zip(acts, grads):
            act = act.detach().float()  # type: ignore[union-attr]
            grad = grad.float() if grad is not None else torch.zeros(0)
            if self._reshape is not None:
                act = self._reshape(act)
                grad = self._reshape(grad) if needs_grad else grad
            weighted = _WEIGHTED[name](act, grad)  # type: ignore[index]
            cam = _projection(weighted) if name in _ALWAYS_PROJECT else weighted.sum(1)
            maps.append(normalize_per_image(cam.clamp_min(0)).unsqueeze(1))
        return maps

    def _library_maps(self, cam: Any, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The library's own CAM ``(B, 1, H, W)`` for ``labels`` (its first forward is on ``images``)."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        targets = [ClassifierOutputTarget(int(c)) for c in labels.tolist()]
        with preserved(self.model), torch.enable_grad(), self._batch_size_set(cam):  # gradient methods fail under no_grad
            if not getattr(cam, "detach", True):
                # Second-order methods (ShapleyCAM's Hessian-vector product) differentiate through
                # the weights: let them require grad here; `preserved` restores flags and .grad.
                for param in self.model.parameters():
                    param.requires_grad_(True)
            x = images.detach().requires_grad_(getattr(cam, "uses_gradients", True))
            result = cam(input_tensor=x, targets=targets)
        return torch.from_numpy(np.ascontiguousarray(result)).to(images.device).unsqueeze(1)

    # ---------------------------------------------------------- call contract
    def explain(
        self,
        maps_fn: MapsFn,
        input_tensor: torch.Tensor | None = None,
        targets: Sequence[Callable] | None = None,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        **unknown: Any,
    ) -> np.ndarray:
        """grad-cam's ``cam(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)``.

        ``targets`` name the class of each image (``ClassifierOutputTarget(c)`` and the softmax /
        ReST variants); ``aug_smooth`` averages over :attr:`tta_transforms` (grad-cam's default:
        horizontal flip x multiply 0.9/1/1.1); ``eigen_smooth`` goes to ``maps_fn``.

        Returns:
            ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1] at the input size, each map stretched to
            span [0, 1] with ``normalize="minmax"``.
        """
        if unknown or input_tensor is None:
            problem = f"got unexpected keyword arguments {sorted(unknown)}" if unknown else "needs `input_tensor`"
            raise TypeError(f"{self.method_name}(...) call {problem}; accepted: {_GRADCAM_SIGNATURE}.")
        images = self.check_input("input_tensor", input_tensor)
        classes = targets_to_classes(targets, len(images), images.device)
        smooth = self.check_flag("aug_smooth", aug_smooth)
        eigen = self.check_flag("eigen_smooth", eigen_smooth)

        def one(x: torch.Tensor) -> torch.Tensor:
            return self._normalized(self.run_maps(maps_fn, x, classes, eigen))

        maps = self._augmented(one, images) if smooth else one(images)
        return maps.float().cpu().numpy()

    def _augmented(self, maps_of: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
        """Mean map over the test-time augmentations: :attr:`tta_transforms` when set, else grad-cam's default."""
        if self.tta_transforms is None:
            pairs = [(flip, factor) for flip in (False, True) for factor in _TTA_FACTORS]
            maps = []
            for flip, factor in pairs:
                x = images.flip(-1) if flip else images
                m = maps_of(x * factor)
                maps.append(m.flip(-1) if flip else m)
        else:
            maps = []
            for transform in self.tta_transforms:  # ttach transformers: augment_image / deaugment_mask
                m = maps_of(transform.augment_image(images))
                maps.append(transform.deaugment_mask(m.unsqueeze(1)).squeeze(1))
        if not maps:
            raise ValueError("`tta_transforms` holds no transform; set it to None for grad-cam's default.")
        return torch.stack(maps).mean(0)
