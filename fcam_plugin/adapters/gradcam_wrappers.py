"""Adapter for pytorch-grad-cam's wrapper methods: RefineCAM, FinerCAM and SESS.

These wrap one or several ``BaseCAM`` objects without subclassing ``BaseCAM`` and have their own
call signatures (read from each class's ``forward``):

- ``RefineCAM(input_tensor, targets=None, eigen_smooth=False)``
- ``FinerCAM(input_tensor, targets=None, eigen_smooth=False, alpha=1, comparison_categories=None, target_idx=None)``
- ``SESS(input_tensor, targets=None, eigen_smooth=False)``

All return ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1], as does the upscaler wrapping them.
Seeds are computed through the library itself (its hooks are released after ``fit``).

torchcam's own ``RefineCAM`` / ``FinerCAM`` belong to the torchcam adapter.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from torch import nn

from .._checks import describe
from .._state import preserved
from .base import CAMSource, MapsFn, normalize_per_image
from .gradcam import _class_scores, targets_to_classes

__all__ = ["WRAPPER_NAMES", "WrapperCAMSource", "is_wrapper_method"]

#: pytorch-grad-cam methods that wrap another CAM method.
WRAPPER_NAMES = ("RefineCAM", "FinerCAM", "SESS")


def _gradcam_wrappers() -> tuple[type, ...]:
    import pytorch_grad_cam

    return tuple(getattr(pytorch_grad_cam, name) for name in WRAPPER_NAMES if hasattr(pytorch_grad_cam, name))


def _is_gradcam_wrapper(method: object) -> bool:
    try:
        classes = _gradcam_wrappers()
    except ImportError:  # pragma: no cover - grad-cam is a dependency
        return False
    return (inspect.isclass(method) and issubclass(method, classes)) or isinstance(method, classes)


def is_wrapper_method(method: object) -> bool:
    """True for a grad-cam wrapper method (class or instance): RefineCAM, FinerCAM, SESS."""
    return _is_gradcam_wrapper(method)


def _base_cams(instance: Any) -> list[Any]:
    """The ``BaseCAM`` objects a grad-cam wrapper holds (their hooks are what must be released)."""
    if hasattr(instance, "base_cam_per_layer"):
        return list(instance.base_cam_per_layer)
    return [instance.base_cam]


def _kind(cls: type) -> str:
    import pytorch_grad_cam

    for name in WRAPPER_NAMES:
        if issubclass(cls, getattr(pytorch_grad_cam, name)):
            return name
    raise TypeError(f"{cls.__name__} is not a pytorch-grad-cam wrapper method")  # pragma: no cover


class WrapperCAMSource(CAMSource):
    """Seed source and call contract for grad-cam's RefineCAM, FinerCAM and SESS.

    Args:
        model: the classifier.
        method: the wrapper class (built lazily on ``target_layers``) or a ready instance built on
            ``model`` (its layers are used; its hooks are left to its owner).
        target_layers: layers for a method given as a class (RefineCAM: one base CAM per layer).
        reshape_transform: grad-cam's reshape transform for non-CNN models.
        **kwargs: :class:`~fcam_plugin.adapters.base.CAMSource`'s options and the method's
            constructor arguments (e.g. ``base_method=LayerCAM``; SESS's ``num_scales``...).
    """

    library = "pytorch-grad-cam"
    _reserved: ClassVar[tuple[str, ...]] = ("self", "model", "target_layers", "reshape_transform")

    # ------------------------------------------------------- library specifics
    @classmethod
    def _is_class(cls, method: type) -> bool:
        return _is_gradcam_wrapper(method)

    @classmethod
    def _is_instance(cls, method: object) -> bool:
        return not inspect.isclass(method) and _is_gradcam_wrapper(method)

    def _wrong_method_message(self, method: object) -> str:
        return f"`method` must be pytorch-grad-cam's RefineCAM, FinerCAM or SESS (class or instance), got {method!r}."

    def _owner(self, instance: Any) -> object:
        return getattr(instance, "model", None) or _base_cams(instance)[0].model

    def _instance_layers(self, instance: Any) -> tuple[list[nn.Module], Callable | None]:
        bases = _base_cams(instance)
        return [layer for base in bases for layer in base.target_layers], bases[0].reshape_transform

    def _build(self, layers: list[nn.Module]) -> Any:
        return self._cls(self.model, layers, self._reshape, **self._kwargs)

    def _release(self, instance: Any) -> None:
        errors = []
        for base in _base_cams(instance):
            try:
                base.activations_and_grads.release()
            except Exception as error:  # noqa: BLE001 - release every base CAM
                errors.append(error)
        if errors:
            raise errors[0]

    def _check_class_arguments(self) -> None:
        if not self._layers:
            raise ValueError(f"`target_layers` is empty for {self._cls.__name__}.")

    @property
    def _kind(self) -> str:
        return _kind(self._cls)

    # ------------------------------------------------------------------ seeds
    def _compute_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        output = self._first_forward(images, labels)
        return self._wrapper_maps(self.instance(), images, labels, output)

    def _compute_layer_cams(
        self, images: torch.Tensor, labels: torch.Tensor, layers: list[nn.Module]
    ) -> list[torch.Tensor]:
        output = self._first_forward(images, labels)
        return [self._wrapper_maps(self.layer_instance([layer]), images, labels, output) for layer in layers]

    def _first_forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The first forward is on the images themselves (the decoder's skip features are read from it).

        SESS would otherwise start with its patches. It also validates the labels and gives
        FinerCAM the scores to pick the comparison classes of the true class.
        """
        with preserved(self.model), torch.no_grad():
            self.model.eval()  # seeds come from the frozen classifier in eval mode
            output = self.model(images)
        _class_scores(output, labels)
        return output

    def _wrapper_maps(self, cam: Any, images: torch.Tensor, labels: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        if self._kind == "FinerCAM":
            targets = _finer_targets(output, labels)
        else:
            targets = [ClassifierOutputTarget(int(c)) for c in labels.tolist()]
        # The classifier is frozen (no parameter requires grad) and SESS detaches its input:
        # gradient base methods need the input gradient switched on to build a graph.
        bases = _base_cams(cam)
        flags = [base.compute_input_gradient for base in bases]
        with preserved(self.model), self._batch_size_set(cam):
            self.model.eval()
            try:
                for base in bases:
                    base.compute_input_gradient = bool(getattr(base, "uses_gradients", True))
                with torch.enable_grad():  # gradient base methods fail under no_grad
                    x = images.detach().requires_grad_(any(b.compute_input_gradient for b in bases))
                    result = cam(x, targets=targets)
            finally:
                for base, flag in zip(bases, flags):
                    base.compute_input_gradient = flag
        maps = torch.from_numpy(np.ascontiguousarray(result, dtype=np.float32)).to(images.device)
        return normalize_per_image(torch.nan_to_num(maps).clamp_min(0)).unsqueeze(1)

    # ---------------------------------------------------------- call contract
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> np.ndarray:
        """The wrapped method's ``forward`` signature; returns ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1].

        ``targets`` name the class of each image (FinerCAM: ``target_idx`` too); ``eigen_smooth``
        goes to ``maps_fn``; FinerCAM's ``alpha`` and ``comparison_categories`` are validated.

        Raises:
            TypeError / ValueError: arguments the method would reject, or targets naming no class.
        """
        signature = inspect.signature(self._cls.forward)  # type: ignore[attr-defined]  # a grad-cam wrapper class
        try:
            bound = signature.bind(None, *args, **kwargs)
        except TypeError as error:
            public = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "self"])
            raise TypeError(f"{self.method_name}(...) call: {error}; signature is {self.method_name}{public}.") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        images = self.check_input("input_tensor", values["input_tensor"])
        classes = targets_to_classes(values.get("targets"), len(images), images.device)
        eigen = self.check_flag("eigen_smooth", values.get("eigen_smooth", False))
        if self._kind == "FinerCAM":
            _check_finer(values)
            if classes is None and values.get("target_idx") is not None:
                classes = torch.full((len(images),), values["target_idx"], dtype=torch.long, device=images.device)
        maps = self._normalized(self.run_maps(maps_fn, images, classes, eigen))
        return maps.float().cpu().numpy()


def _finer_targets(output: torch.Tensor, labels: torch.Tensor, alpha: float = 1.0) -> list[Any]:
    """FinerCAM targets for the ground-truth classes: compared with the 3 classes of closest score."""
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    num_classes = output.shape[1]
    distance = (output - output.gather(1, labels.view(-1, 1).to(output.device))).abs()
    distance.scatter_(1, labels.view(-1, 1).to(output.device), float("inf"))
    k = min(3, num_classes - 1)
    closest = distance.topk(k, dim=1, largest=False).indices.tolist() if k > 0 else [[] for _ in labels]
    return [FinerWeightedTarget(int(c), refs, alpha) for c, refs in zip(labels.tolist(), closest)]


def _check_finer(values: dict[str, Any]) -> None:
    alpha = values.get("alpha", 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise TypeError(f"`alpha` must be a number, got {alpha!r}.")
    categories = values.get("comparison_categories")
    if categories is not None and (
        not isinstance(categories, (list, tuple)) or not all(isinstance(c, int) and c >= 0 for c in categories)
    ):
        raise TypeError(f"`comparison_categories` must be None or a list of non-negative ints, got {describe(categories)}.")
    target_idx = values.get("target_idx")
    if target_idx is not None and (isinstance(target_idx, bool) or not isinstance(target_idx, int) or target_idx < 0):
        raise TypeError(f"`target_idx` must be None or a non-negative int, got {target_idx!r}.")
