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
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import check_images, describe
from .._state import preserved
from .base import CAMSource, MapsFn, normalize_per_image
from .gradcam import _check_targets, _class_scores

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
    for name in WRAPPER_NAMES:
        import pytorch_grad_cam

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
        method_kwargs: extra constructor arguments (e.g. ``base_method=LayerCAM``; SESS's
            ``num_scales``, ``window_size``...).
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
        self._instance: Any = None
        self._owns_instance = False
        if inspect.isclass(method) and _is_gradcam_wrapper(method):
            self._cls = method
            self._layers = list(target_layers)
            self._reshape = reshape_transform
            self._kwargs = dict(method_kwargs)
            if not self._layers:
                raise ValueError(f"`target_layers` is empty for {method.__name__}.")
            self._check_kwargs()
        elif _is_gradcam_wrapper(method):
            bases = _base_cams(method)
            owner = getattr(method, "model", None) or bases[0].model
            self._check_ready_instance(method, owner, method_kwargs)
            self._cls = type(method)
            self._instance = method
            self._layers = [layer for base in bases for layer in base.target_layers]
            self._reshape = bases[0].reshape_transform
            self._kwargs = {}
        else:
            raise TypeError(
                f"`method` must be pytorch-grad-cam's RefineCAM, FinerCAM or SESS (class or instance), got {method!r}."
            )
        self._kind = _kind(self._cls)

    def _check_kwargs(self) -> None:
        params = inspect.signature(self._cls.__init__).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        unknown = sorted(set(self._kwargs) - set(params))
        if unknown:
            accepted = [n for n in params if n not in ("self", "model", "target_layers", "reshape_transform")]
            raise TypeError(
                f"{self._cls.__name__} does not accept constructor arguments {unknown}; accepted: {accepted}."
            )

    @property
    def method_name(self) -> str:
        return self._cls.__name__

    @property
    def target_layers(self) -> list[nn.Module]:
        return self._layers

    # ------------------------------------------------------------------ seeds
    def _instance_or_build(self) -> Any:
        if self._instance is None:
            with preserved(self.model):  # BaseCAM's constructor calls model.eval()
                self._instance = self._cls(self.model, self._layers, self._reshape, **self._kwargs)
            self._owns_instance = True
        return self._instance

    def cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cam = self._instance_or_build()
        with preserved(self.model):
            self.model.eval()  # seeds come from the frozen classifier in eval mode
            # The first forward is on the images themselves (the decoder's skip features are read
            # from it): SESS would otherwise start with its patches. It also validates the labels
            # and gives FinerCAM the scores to pick the comparison classes of the true class.
            with torch.no_grad():
                output = self.model(images)
                _class_scores(output, labels)
            if self._kind == "FinerCAM":
                targets = _finer_targets(output, labels)
            else:
                targets = [ClassifierOutputTarget(int(c)) for c in labels.tolist()]
            # The classifier is frozen (no parameter requires grad) and SESS detaches its input:
            # gradient base methods need the input gradient switched on to build a graph.
            bases = _base_cams(cam)
            flags = [base.compute_input_gradient for base in bases]
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

    def after_fit(self) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_instance and self._instance is not None:
            try:
                for base in _base_cams(self._instance):
                    base.activations_and_grads.release()
            finally:
                self._instance = None
                self._owns_instance = False

    # ---------------------------------------------------------- call contract
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> np.ndarray:
        """The wrapped method's ``forward`` signature; returns ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1].

        ``targets`` (and FinerCAM's ``alpha``, ``comparison_categories``, ``target_idx``) choose the
        class, which the class-agnostic F-CAM map does not depend on: they are validated, not used.

        Raises:
            TypeError / ValueError: arguments the method would reject, or ``eigen_smooth=True``.
        """
        signature = inspect.signature(self._cls.forward)
        try:
            bound = signature.bind(None, *args, **kwargs)
        except TypeError as error:
            public = signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "self"])
            raise TypeError(f"{self.method_name}(...) call: {error}; signature is {self.method_name}{public}.") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        input_tensor = values["input_tensor"]
        check_images("input_tensor", input_tensor)
        _check_targets(values.get("targets"), len(input_tensor))
        if values.get("eigen_smooth"):
            raise ValueError(
                "`eigen_smooth=True` cannot apply: it smooths the low-resolution CAM, which the F-CAM decoder "
                "does not use at inference. Call with eigen_smooth=False."
            )
        if self._kind == "FinerCAM":
            _check_finer(values)
        return maps_fn(input_tensor).float().cpu().numpy()


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
