"""Adapter for torchcam: seeds from any ``torchcam.methods`` extractor, torchcam's call contract.

torchcam extractors hook the model themselves: the user runs ``scores = model(x)`` and then calls
``extractor(class_idx, scores)``. The upscaler mirrors that: while it is open (``with
FCAMUpscaler(model, LayerCAM) as up:``) a forward pre-hook on the model keeps the last input, and
``up(class_idx, scores)`` returns the F-CAM map of that input as ``[Tensor (B, H, W)]`` at input
resolution, on the model's device.

During ``fit`` the extractor (built lazily from the class, or the user's instance) computes the
seed CAMs; its hooks are enabled only inside that computation and an extractor built here is
removed when training ends.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .._checks import describe
from .._state import preserved
from ..errors import NoCapturedInputError
from .base import CAMSource, MapsFn, normalize_per_image

__all__ = ["TorchCAMSource", "is_torchcam_method"]

_NORMALIZE_EPS = 1e-8  # torchcam's _CAM._normalize


def _torchcam_bases() -> tuple[type, ...]:
    from torchcam.methods.core import _CAM

    bases: list[type] = [_CAM]
    try:
        from torchcam.methods.gradient import _CAMWrapper
    except ImportError:  # pragma: no cover - older torchcam without wrapper methods
        pass
    else:
        bases.append(_CAMWrapper)
    return tuple(bases)


def is_torchcam_method(method: object) -> bool:
    """True for a ``torchcam.methods`` extractor class or instance (wrappers such as RefineCAM included)."""
    try:
        bases = _torchcam_bases()
    except ImportError:  # pragma: no cover - torchcam is a dependency
        return False
    return (inspect.isclass(method) and issubclass(method, bases)) or isinstance(method, bases)


def _is_wrapper(obj: object) -> bool:
    return hasattr(obj, "base_cam")


def _inner(extractor: Any) -> Any:
    """The hook-owning ``_CAM`` of an extractor (the base CAM of RefineCAM / FinerCAM)."""
    return extractor.base_cam if _is_wrapper(extractor) else extractor


class TorchCAMSource(CAMSource):
    """Seed source and call contract for a torchcam extractor.

    Args:
        model: the classifier.
        method: a ``torchcam.methods`` class (built lazily, its hooks removed after ``fit``) or a
            ready extractor built on ``model`` (its layers are used; left to its owner).
        target_layers: layers for a method given as a class; several layers are fused with the
            extractor's ``fuse_cams`` (RefineCAM fuses them itself and needs at least two).
        reshape_transform: passed to the extractor (transformers), when given.
        method_kwargs: extra constructor arguments for a method given as a class.

    Raises:
        TypeError / ValueError: a method that is not a torchcam extractor, an instance built on
            another model, or constructor arguments that do not fit the method.
    """

    library = "torchcam"

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Sequence[nn.Module],
        reshape_transform: Callable | None = None,
        **method_kwargs: Any,
    ) -> None:
        super().__init__(model)
        if not is_torchcam_method(method):
            raise TypeError(f"`method` must be a torchcam.methods extractor class or instance, got {method!r}.")
        self._extractor: Any = None
        self._owns_extractor = False
        if inspect.isclass(method):
            self._cls = method
            self._layers = list(target_layers)
            self._reshape = reshape_transform
            self._kwargs = dict(method_kwargs)
            self._check_class_arguments()
            self._build()  # fail now, with torchcam's reason, rather than at the first fit step
            self._release_extractor()
        else:
            self._check_ready_instance(method, method.model, method_kwargs)
            if reshape_transform is not None:
                raise ValueError(
                    "`reshape_transform` cannot apply to a ready torchcam extractor (it was fixed when the "
                    "extractor was built); pass the class instead."
                )
            self._cls = type(method)
            self._extractor = method
            modules = dict(model.named_modules())
            self._layers = [modules[name] for name in method.target_names]
            self._reshape = None
            self._kwargs = {}
        if self._extractor is not None:
            inner = _inner(self._extractor)
            finer = type(self._extractor).__name__ == "FinerCAM"
            self._flags = (bool(inner._targets_supported) and not finer, bool(inner._score_used) or _is_wrapper(self._extractor))
        else:
            self._flags = _class_flags(self._cls)
        self._input_handle: RemovableHandle | None = None
        self._input: torch.Tensor | None = None
        self._capture_paused = False

    # --------------------------------------------------------------- metadata
    @property
    def method_name(self) -> str:
        return self._cls.__name__

    @property
    def target_layers(self) -> list[nn.Module]:
        return self._layers

    def _check_class_arguments(self) -> None:
        name = self._cls.__name__
        if not self._layers:
            raise ValueError(f"`target_layers` is empty for torchcam {name}.")
        if name == "RefineCAM" and len(self._layers) < 2:
            raise ValueError(
                f"torchcam RefineCAM multiplies the CAMs of several layers: `target_layers` must hold at least "
                f"two layers, got {len(self._layers)}; e.g. target_layers=[model.layer3, model.layer4]."
            )
        if name == "CAM" and len(self._layers) > 1:
            raise ValueError(
                f"torchcam CAM weights one layer with the classifier's fc weights: `target_layers` must hold "
                f"one layer, got {len(self._layers)}."
            )
        if name == "LeGrad":
            bad = [type(m).__name__ for m in self._layers if not isinstance(getattr(m, "self_attention", None), nn.MultiheadAttention)]
            if bad:
                raise ValueError(
                    "torchcam LeGrad explains vision-transformer blocks: every target layer must be a block "
                    f"with a `self_attention: nn.MultiheadAttention` child (e.g. model.encoder.layers[-1] of "
                    f"torchvision's ViT), got {bad}; this model cannot use LeGrad."
                )
            if self._reshape is not None:
                raise ValueError(
                    "`reshape_transform` cannot apply to torchcam LeGrad (it reshapes the patch tokens itself); "
                    "leave it None."
                )
        signature = inspect.signature(self._cls.__init__)
        params = signature.parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(self._kwargs) - set(params))
            if unknown:
                accepted = [n for n in params if n not in ("self", "model", "target_layer")]
                raise TypeError(
                    f"torchcam {name} does not accept constructor arguments {unknown}; accepted: {accepted}."
                )
        for reserved in ("target_layer", "model"):
            if reserved in self._kwargs:
                raise TypeError(
                    f"pass `{reserved}` through FCAMUpscaler's own arguments (model, target_layers), not as a "
                    f"keyword for {name}."
                )

    # ------------------------------------------------------------- lifecycle
    def _build(self) -> Any:
        if self._extractor is None:
            kwargs = dict(self._kwargs)
            if self._reshape is not None:
                kwargs["reshape_transform"] = self._reshape
            layers: Any = list(self._layers)
            with preserved(self.model):  # torchcam may probe the model / switch modes while building
                try:
                    extractor = self._cls(self.model, layers, **kwargs)
                except (TypeError, ValueError) as error:
                    raise type(error)(f"torchcam {self._cls.__name__} cannot be built on these layers: {error}") from None
            _inner(extractor).disable_hooks()
            self._extractor = extractor
            self._owns_extractor = True
        return self._extractor

    def attach(self) -> None:
        """Register the forward pre-hook that captures the model's input (idempotent)."""
        if self._input_handle is None:
            self._input_handle = self.model.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if not self._capture_paused and args and isinstance(args[0], torch.Tensor):
            self._input = args[0].detach()

    def after_fit(self) -> None:
        self._release_extractor()

    def _release_extractor(self) -> None:
        if self._owns_extractor and self._extractor is not None:
            try:
                self._extractor.remove_hooks()
            finally:
                self._extractor.reset_hooks()
                self._extractor = None
                self._owns_extractor = False

    def close(self) -> None:
        """Remove the input pre-hook and an extractor built here; idempotent."""
        try:
            self._release_extractor()
        finally:
            if self._input_handle is not None:
                self._input_handle.remove()
                self._input_handle = None
            self._input = None

    # ------------------------------------------------------------------ seeds
    def cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        extractor = self._build()
        inner = _inner(extractor)
        was_enabled = inner._hooks_enabled
        class_idx = [int(c) for c in labels.tolist()]
        self._capture_paused = True
        try:
            with preserved(self.model), torch.enable_grad():
                self.model.eval()  # seeds come from the frozen classifier in eval mode
                inner.reset_hooks()
                inner.enable_hooks()
                x = images.detach().requires_grad_(True)  # gradients reach the target layers
                scores = self.model(x)
                if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
                    raise ValueError(
                        f"the model must return class scores of shape (B, num_classes), got {describe(scores)}."
                    )
                if class_idx and max(class_idx) >= scores.shape[1]:
                    raise ValueError(
                        f"class indices must be in [0, {scores.shape[1]}) for this model, got {class_idx[:8]}."
                    )
                maps = extractor(class_idx, scores, normalized=True)
                cam = maps[0] if len(maps) == 1 else extractor.fuse_cams(list(maps))
            cam = torch.nan_to_num(cam.detach().float(), nan=0.0)
        finally:
            self._capture_paused = False
            inner.reset_hooks()
            if was_enabled:
                inner.enable_hooks()
            else:
                inner.disable_hooks()
        if cam.ndim != 3:
            raise ValueError(f"torchcam {self.method_name} returned maps of shape {list(cam.shape)}, expected (B, h, w).")
        return normalize_per_image(cam.clamp_min(0)).unsqueeze(1).to(images.device)

    # ---------------------------------------------------------- call contract
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """torchcam's ``extractor(class_idx=None, scores=None, normalized=True, *, targets=None)``.

        The signature is that of the wrapped method's ``__call__`` (RefineCAM adds
        ``target_shape``, FinerCAM ``comparison_idx``). The map is the F-CAM foreground
        probability of the last input forwarded through the model while the upscaler was open;
        like every F-CAM map it does not depend on the class (``class_idx`` / ``targets`` are
        validated as torchcam does, then select nothing).

        Returns:
            ``[Tensor (B, H, W)]`` float32 on the model's device at the input resolution:
            ``normalized=True`` min-max normalises each map like torchcam; ``normalized=False``
            returns the raw foreground probability, also in [0, 1].

        Raises:
            NoCapturedInputError: no forward pass since the upscaler was opened.
            TypeError / ValueError: arguments torchcam itself would reject, or that cannot apply.
        """
        bound = self._bind(args, kwargs)
        images = self._input
        if images is None:
            raise NoCapturedInputError(
                "no input to explain: run `scores = model(x)` first, inside `with FCAMUpscaler(model, "
                f"{self.method_name}) as up:` (the upscaler captures x with a forward pre-hook while it is open), "
                "then call `up(class_idx, scores)`."
            )
        batch = images.shape[0]
        self._check_call(bound, batch)
        normalized = bound.get("normalized", True)
        self._capture_paused = True
        try:
            maps = maps_fn(images).float()
        finally:
            self._capture_paused = False
        if normalized:
            flat = maps.flatten(1)
            flat = flat - flat.amin(1, keepdim=True)
            maps = (flat / (flat.amax(1, keepdim=True) + _NORMALIZE_EPS)).view_as(maps)
        return [maps]

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        signature = inspect.signature(self._cls.__call__)
        try:
            bound = signature.bind(None, *args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{self.method_name}(...) call: {error}; signature is {self.method_name}{_public(signature)}.") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        values.pop("self", None)
        extra = values.pop("kwargs", {}) or {}
        values.update(extra)
        return values

    def _check_call(self, values: dict[str, Any], batch: int) -> None:
        name = self.method_name
        class_idx = values.get("class_idx")
        targets = values.get("targets")
        scores = values.get("scores")
        normalized = values.get("normalized", True)
        if not isinstance(normalized, bool):
            raise TypeError(f"`normalized` must be a bool, got {normalized!r}.")
        supports_targets, uses_scores = self._flags
        if (class_idx is None) == (targets is None):
            raise ValueError(
                f"provide exactly one of `class_idx` or `targets` to {name}, got class_idx={class_idx!r} and "
                f"targets={describe(targets) if targets is not None else None}."
            )
        if targets is not None:
            if not supports_targets:
                raise ValueError(f"torchcam {name} does not support arbitrary output `targets`; pass `class_idx`.")
            if callable(targets):
                targets = [targets]
            elif not isinstance(targets, list) or not all(callable(t) for t in targets):
                raise TypeError(f"`targets` must be a callable or a list of callables, got {describe(targets)}.")
            elif len(targets) != batch:
                raise ValueError(f"`targets` must hold one target per image ({batch}), got {len(targets)}.")
        if class_idx is not None:
            ok = (isinstance(class_idx, int) and not isinstance(class_idx, bool) and class_idx >= 0) or (
                isinstance(class_idx, list)
                and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in class_idx)
            )
            if not ok:
                raise ValueError(
                    f"`class_idx` must be a non-negative int or a list of {batch} non-negative ints, got {class_idx!r}."
                )
            if isinstance(class_idx, list) and len(class_idx) != batch:
                raise ValueError(
                    f"`class_idx` must hold one index per image of the last forward pass ({batch}), got {len(class_idx)}."
                )
        if scores is None and uses_scores:
            raise ValueError(
                f"torchcam {name} needs the model output: call `up(class_idx, scores)` with `scores = model(x)`."
            )
        if isinstance(scores, torch.Tensor):
            if scores.ndim != 2 or scores.shape[0] != batch:
                raise ValueError(
                    f"`scores` must be the output of the last forward pass, shape ({batch}, num_classes), got "
                    f"{describe(scores)}."
                )
            indices = [class_idx] if isinstance(class_idx, int) else (class_idx or [])
            if indices and max(indices) >= scores.shape[1]:
                raise ValueError(f"`class_idx` must be < {scores.shape[1]} (classes in `scores`), got {class_idx!r}.")
        elif scores is not None and targets is None:
            raise TypeError(f"`scores` must be a tensor (B, num_classes) when using `class_idx`, got {describe(scores)}.")
        target_shape = values.get("target_shape")
        if target_shape is not None:
            raise ValueError(
                f"`target_shape`={target_shape!r} cannot apply: F-CAM maps are always at the input resolution; "
                "leave target_shape=None."
            )
        retain_graph = values.get("retain_graph", False)
        if not isinstance(retain_graph, bool):
            raise TypeError(f"`retain_graph` must be a bool, got {retain_graph!r}.")
        known = {"class_idx", "scores", "normalized", "targets", "target_shape", "comparison_idx", "retain_graph"}
        unknown = sorted(k for k in values if k not in known)
        if unknown:
            raise TypeError(
                f"{name}(...) got unexpected keyword arguments {unknown}; F-CAM accepts {sorted(known & set(values) | {'class_idx', 'scores', 'normalized'})}."
            )


def _public(signature: inspect.Signature) -> inspect.Signature:
    return signature.replace(parameters=[p for n, p in signature.parameters.items() if n != "self"])


def _class_flags(cls: type) -> tuple[bool, bool]:
    """(supports ``targets``, needs ``scores``) of a torchcam class, as its ``__init__`` would set them."""
    from torchcam.methods import activation, gradient

    if issubclass(cls, getattr(gradient, "FinerCAM", ())):
        return False, True
    if issubclass(cls, getattr(gradient, "RefineCAM", ())):
        return True, True  # its default base, GradCAMpp
    if issubclass(cls, getattr(gradient, "LeGrad", ())) or issubclass(cls, getattr(activation, "CAM", ())):
        return False, False
    if issubclass(cls, getattr(gradient, "SmoothGradCAMpp", ())):
        return True, False
    if issubclass(cls, getattr(gradient, "_GradCAM", ())):
        return True, True
    if issubclass(cls, getattr(activation, "ScoreCAM", ())):
        return True, False
    return False, False
