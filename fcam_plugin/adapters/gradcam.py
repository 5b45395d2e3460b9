"""Adapter for pytorch-grad-cam (``grad-cam`` on PyPI): seeds from any ``BaseCAM`` method.

Eight gradient/activation methods are computed natively in torch on the model's device, batched
(no numpy/cv2 round trip in the training loop); their formulas are those of grad-cam 1.5.7 and a
test checks parity with the library. Every other method (ScoreCAM, AblationCAM, FullGrad, ...) is
run through the library itself, whose output is converted back to a tensor.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_images, describe
from .._state import preserved
from .base import CAMSource, MapsFn, normalize_per_image, upsample_cams

__all__ = ["GradCAMSource", "is_gradcam_method"]

_TTA_FACTORS = (0.9, 1.0, 1.1)  # grad-cam's default test-time augmentation: hflip x multiply


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


def _native_name(cls: type) -> str | None:
    """Name of the native formula for exactly this grad-cam class (a user subclass may differ)."""
    import pytorch_grad_cam

    name = cls.__name__
    return name if name in _WEIGHTED and getattr(pytorch_grad_cam, name, None) is cls else None


class GradCAMSource(CAMSource):
    """Seed source and call contract for a pytorch-grad-cam method.

    Args:
        model: the classifier.
        method: a ``BaseCAM`` subclass (built lazily on ``target_layers``) or a ready instance
            (which must wrap ``model``; its target layers and reshape transform are used).
        target_layers: layers for a method given as a class.
        reshape_transform: grad-cam's reshape transform for non-CNN models.
        method_kwargs: extra constructor arguments for a method given as a class.
    """

    library = "pytorch-grad-cam"

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(model)
        base = _base_cam()
        self._instance = None
        self._owns_instance = False
        if isinstance(method, base):
            self._check_ready_instance(method, method.model, method_kwargs)
            self._instance = method
            self._cls = type(method)
            self._layers = list(method.target_layers)
            self._reshape = method.reshape_transform
        elif inspect.isclass(method) and issubclass(method, base):
            self._cls = method
            self._layers = list(target_layers)
            self._reshape = reshape_transform
        else:
            raise TypeError(f"`method` must be a pytorch-grad-cam BaseCAM class or instance, got {method!r}.")
        self._kwargs = method_kwargs
        self._native = _native_name(self._cls)
        if self._cls.__name__ == "FullGrad" and self._reshape is not None:
            raise ValueError(
                "pytorch-grad-cam's FullGrad cannot explain a transformer (it aggregates the bias gradients "
                "of every Conv2d/BatchNorm2d layer at image resolution and fails on token layouts); with a "
                "`reshape_transform`, use e.g. GradCAM, LayerCAM or EigenCAM instead."
            )
        if self._native is None and not self._layers and self._cls.__name__ != "FullGrad":
            raise ValueError(f"`target_layers` is empty for {self._cls.__name__}.")

    @property
    def method_name(self) -> str:
        return self._cls.__name__

    @property
    def target_layers(self) -> list[nn.Module]:
        return self._layers

    @property
    def native(self) -> bool:
        """Whether CAMs are computed by the torch-native formula (else through the library)."""
        return self._native is not None

    # ------------------------------------------------------------------ seeds
    def cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self._native is not None:
            return self._native_cams(images, labels)
        return self._library_cams(images, labels)

    def _native_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        name = self._native
        needs_grad = name not in _NO_GRADIENT
        acts: list[torch.Tensor | None] = [None] * len(self._layers)
        single = len(self._layers) == 1

        def make_hook(i: int):
            def hook(module: nn.Module, args: object, output: torch.Tensor):
                if acts[i] is not None:
                    return None
                if single and needs_grad:
                    # Start the graph here: nothing upstream is recorded (cheaper than input grads).
                    output = output.detach().requires_grad_(True)
                    acts[i] = output
                    # A clone, not the leaf itself, goes on: in-place ops after the layer
                    # (DenseNet's F.relu(features, inplace=True)) may not modify a grad leaf.
                    return output.clone()
                acts[i] = output
                return None

            return hook

        handles = [layer.register_forward_hook(make_hook(i)) for i, layer in enumerate(self._layers)]
        try:
            with torch.enable_grad():
                x = images.detach().requires_grad_(needs_grad and not single)
                output = self.model(x)
                scores = _class_scores(output, labels)
                if any(a is None for a in acts):
                    raise RuntimeError("a target layer of the CAM method did not run in the forward pass.")
                if needs_grad:
                    grads = torch.autograd.grad(scores.sum(), acts)  # type: ignore[arg-type]
                else:
                    grads = [torch.zeros(0)] * len(acts)
        finally:
            for handle in handles:
                handle.remove()

        per_layer = []
        size = images.shape[-2:]
        for act, grad in zip(acts, grads):
            act = act.detach().float()  # type: ignore[union-attr]
            grad = grad.float()
            if self._reshape is not None:
                act = self._reshape(act)
                grad = self._reshape(grad) if needs_grad else grad
            weighted = _WEIGHTED[name](act, grad)
            cam = _projection(weighted) if name in _ALWAYS_PROJECT else weighted.sum(1)
            cam = normalize_per_image(cam.clamp_min(0)).unsqueeze(1)
            per_layer.append(cam if single else upsample_cams(cam, size))
        if single:
            return per_layer[0]
        return normalize_per_image(torch.stack(per_layer).clamp_min(0).mean(0))

    def _instance_or_build(self):
        if self._instance is None:
            with preserved(self.model):  # grad-cam's constructor calls model.eval()
                self._instance = self._cls(self.model, self._layers, self._reshape, **self._kwargs)
            self._owns_instance = True
        return self._instance

    def _library_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = self._instance_or_build()
        targets = [ClassifierOutputTarget(int(c)) for c in labels.tolist()]
        with preserved(self.model), torch.enable_grad():  # gradient methods fail under no_grad
            if not getattr(cam, "detach", True):
                # Second-order methods (ShapleyCAM's Hessian-vector product) differentiate through
                # the weights: let them require grad here; `preserved` restores flags and .grad.
                for param in self.model.parameters():
                    param.requires_grad_(True)
            x = images.detach().requires_grad_(getattr(cam, "uses_gradients", True))
            result = cam(input_tensor=x, targets=targets)
        return torch.from_numpy(np.ascontiguousarray(result)).to(images.device).unsqueeze(1)

    def after_fit(self) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_instance and self._instance is not None:
            self._instance.activations_and_grads.release()
            self._instance = None
            self._owns_instance = False

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

        Returns:
            ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1] at the input size.
        """
        if unknown or input_tensor is None:
            problem = f"got unexpected keyword arguments {sorted(unknown)}" if unknown else "needs `input_tensor`"
            raise TypeError(
                f"{self.method_name}(...) call {problem}; accepted: input_tensor, targets=None, "
                "aug_smooth=False, eigen_smooth=False."
            )
        # min_size: the model's total stride, set by the upscaler (named here after the caller's argument)
        check_images("input_tensor", input_tensor, min_size=getattr(self, "min_size", 1))
        _check_targets(targets, len(input_tensor))
        if eigen_smooth:
            raise ValueError(
                "`eigen_smooth=True` cannot apply: it smooths the low-resolution CAM, which the "
                "F-CAM decoder does not use at inference. Call with eigen_smooth=False."
            )
        if not isinstance(aug_smooth, bool):
            raise TypeError(f"`aug_smooth` must be a bool, got {aug_smooth!r}.")
        if aug_smooth:
            maps = _augmentation_smoothed(maps_fn, input_tensor)
        else:
            maps = maps_fn(input_tensor)
        return maps.float().cpu().numpy()


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


def _check_targets(targets: object, batch: int) -> None:
    if targets is None:
        return
    if not isinstance(targets, (list, tuple)):
        raise TypeError(
            f"`targets` must be None or a list of {batch} callables such as ClassifierOutputTarget(c), "
            f"got {describe(targets)}."
        )
    if len(targets) != batch:
        raise ValueError(
            f"`targets` must hold one target per image ({batch}), got {len(targets)}."
        )
    bad = [t for t in targets if not callable(t)]
    if bad:
        raise TypeError(
            f"`targets` entries must be callables such as ClassifierOutputTarget(c), got {bad[0]!r}."
        )


def _augmentation_smoothed(maps_fn: MapsFn, images: torch.Tensor) -> torch.Tensor:
    """Mean map over grad-cam's default augmentations (horizontal flip x multiply 0.9/1/1.1)."""
    total = torch.zeros(images.shape[0], *images.shape[-2:], device=images.device)
    count = 0
    for flip in (False, True):
        for factor in _TTA_FACTORS:
            x = images.flip(-1) if flip else images
            m = maps_fn(x * factor)
            total += m.flip(-1) if flip else m
            count += 1
    return total / count
