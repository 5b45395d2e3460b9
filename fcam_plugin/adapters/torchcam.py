"""Adapter for torchcam: seeds from any ``torchcam.methods`` extractor, torchcam's call contract.

torchcam extractors hook the model themselves: the user runs ``scores = model(x)`` and then calls
``extractor(class_idx, scores)``. The upscaler mirrors that: from construction until
``remove_hooks()`` (or the end of a ``with`` block) a forward hook on the model records the
inputs of recent forward passes, and ``up(class_idx, scores)`` returns the F-CAM map of the input
whose output ``scores`` are (matched by identity, or through the autograd graph for e.g.
``softmax(scores)``, else by batch size against the last forward) as ``[Tensor (B, H, W)]`` at
input resolution, on the model's device. The upscaler's own forwards are never recorded, and run
with the hooks of the other torchcam extractors on the model switched off.

During ``fit`` the extractor (built lazily from the class, or the user's instance) computes the
seed CAMs; its hooks are enabled only inside that computation, a ready instance gets its stored
activations back afterwards, and an extractor built here is removed when training ends.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from .._checks import describe
from .._state import preserved
from ..errors import NoCapturedInputError, UnsupportedLayersError
from .base import CAMSource, MapsFn, normalize_per_image

__all__ = ["TorchCAMSource", "is_torchcam_method"]

_NORMALIZE_EPS = 1e-8  # torchcam's _CAM._normalize
_MAX_RECORDS = 8  # forwards remembered while their outputs are alive
_MAX_GRAPH_NODES = 256  # autograd nodes searched to match derived scores (softmax(scores), ...)
#: Stored state of a torchcam extractor, put back after the upscaler used a ready instance for seeds.
_STORED_STATE = ("hook_a", "hook_g", "_hook_outputs", "_input")


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


# ------------------------------------------------------------------ input capture
@dataclass
class _Forward:
    """One forward pass of the model seen by the capture hook."""

    input: torch.Tensor
    output_ref: Callable[[], Any] | None  # weak reference to the output tensor (None: not a tensor)
    output: torch.Tensor | None  # detached output, for resolving output targets to classes
    batch: int

    def alive(self) -> bool:
        return self.output_ref is not None and self.output_ref() is not None


def _batch_of(value: object) -> int | None:
    if isinstance(value, torch.Tensor):
        return int(value.shape[0]) if value.ndim else None
    if isinstance(value, (list, tuple)):
        return len(value)
    return None


def _graph_nodes(tensor: torch.Tensor) -> set[int]:
    """Ids of the autograd nodes ``tensor`` was computed from (bounded breadth-first search)."""
    seen: set[int] = set()
    frontier = [tensor.grad_fn] if tensor.grad_fn is not None else []
    while frontier and len(seen) < _MAX_GRAPH_NODES:
        node = frontier.pop(0)
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        frontier.extend(next_node for next_node, _ in node.next_functions if next_node is not None)
    return seen


class _InputCapture:
    """A forward hook on the model remembering the inputs of its recent forward passes.

    Records are kept while their output tensor is alive (at most :data:`_MAX_RECORDS`), plus the
    newest one, so that ``scores`` can be traced back to their input even after other code (a
    ScoreCAM, a metric) ran more forwards in between.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.handles: list[RemovableHandle] = []
        self._records: list[_Forward] = []
        self._paused = 0

    def attach(self, model: nn.Module) -> None:
        if not self.handles:
            self.handles.append(model.register_forward_hook(self._hook, with_kwargs=True))

    def detach(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.reset()

    def reset(self) -> None:
        self._records.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1

    def _hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        if self._paused or not self.enabled:
            return
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is None or first.ndim == 0:
            return
        is_tensor = isinstance(output, torch.Tensor)
        record = _Forward(
            input=first.detach(),
            output_ref=weakref.ref(output) if is_tensor else None,
            output=output.detach() if is_tensor else None,
            batch=int(first.shape[0]),
        )
        self._records = [r for r in self._records if r.alive()][-(_MAX_RECORDS - 1):] + [record]

    def find(self, scores: object, method: str) -> _Forward:
        """The forward whose output ``scores`` are: by identity, through the autograd graph, or the last by batch size.

        Raises:
            NoCapturedInputError: no forward pass was recorded.
            ValueError: ``scores`` match no recorded forward and not the last one's batch size.
        """
        if not self._records:
            raise NoCapturedInputError(
                "no input to explain: run `scores = model(x)` first (the upscaler records x with a forward hook "
                "from its construction until remove_hooks(), or inside `with FCAMUpscaler(model, "
                f"{method}) as up:`), then call `up(class_idx, scores)`."
            )
        if isinstance(scores, torch.Tensor):
            for record in reversed(self._records):
                if record.output_ref is not None and record.output_ref() is scores:
                    return record
            nodes = _graph_nodes(scores)
            for record in reversed(self._records):
                out = record.output_ref() if record.output_ref is not None else None
                if out is not None and out.grad_fn is not None and id(out.grad_fn) in nodes:
                    return record
        newest = self._records[-1]
        batch = _batch_of(scores)
        if scores is None or batch == newest.batch:
            return newest
        raise ValueError(
            f"`scores` ({describe(scores)}) are not the output of a forward pass the upscaler recorded: the last "
            f"forward pass had a batch of {newest.batch}. Call `up(class_idx, scores)` with `scores = model(x)` "
            "(or a function of it) from a forward pass made while the upscaler's hooks were enabled."
        )


# --------------------------------------------------------------------- the source
class TorchCAMSource(CAMSource):
    """Seed source and call contract for a torchcam extractor.

    Args:
        model: the classifier.
        method: a ``torchcam.methods`` class (built lazily, its hooks removed after ``fit``) or a
            ready extractor built on ``model`` (its layers are used; left to its owner).
        target_layers: layers for a method given as a class (modules or names); several layers
            are fused with the extractor's ``fuse_cams`` for seeds (RefineCAM fuses them itself and
            needs at least two).
        reshape_transform: passed to the extractor (transformers), when given.
        target_layer: torchcam's spelling of ``target_layers`` (a name, a module or a list of either).
        enable_hooks: whether the input capture starts enabled (torchcam's constructor flag).
        **kwargs: :class:`~fcam_plugin.adapters.base.CAMSource`'s options and the extractor's
            constructor arguments.

    Raises:
        TypeError / ValueError: a method that is not a torchcam extractor, an instance built on
            another model, or constructor arguments that do not fit the method.
    """

    library = "torchcam"
    _reserved: ClassVar[tuple[str, ...]] = ("self", "model", "target_layer")
    _build_to_check = True  # fail at construction, with torchcam's own reason
    class_argument = "`class_idx` / `targets`"

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Any = None,
        reshape_transform: Callable | None = None,
        *,
        target_layer: Any = None,
        enable_hooks: bool = True,
        **kwargs: Any,
    ) -> None:
        if target_layer is not None:
            if target_layers is not None:
                raise TypeError(
                    "give the target layers once: `target_layers` (grad-cam's spelling) or `target_layer` "
                    f"(torchcam's), got both ({describe(target_layers)} and {describe(target_layer)})."
                )
            target_layers = target_layer
        self.check_flag("enable_hooks", enable_hooks)
        self._capture = _InputCapture(enabled=enable_hooks)
        # Safety net only (remove_hooks() / a with block are the way): an upscaler dropped without
        # them does not leave its hook on the model once it is garbage-collected.
        weakref.finalize(self, self._capture.detach)
        super().__init__(model, method, target_layers, reshape_transform, **kwargs)
        self._flags = self._method_flags()

    # ------------------------------------------------------- library specifics
    @classmethod
    def _is_class(cls, method: type) -> bool:
        return issubclass(method, _torchcam_bases())

    @classmethod
    def _is_instance(cls, method: object) -> bool:
        return isinstance(method, _torchcam_bases())

    def _wrong_method_message(self, method: object) -> str:
        return f"`method` must be a torchcam.methods extractor class or instance, got {method!r}."

    def _owner(self, instance: Any) -> object:
        return instance.model

    def _instance_layers(self, instance: Any) -> tuple[list[nn.Module], Callable | None]:
        modules = dict(self.model.named_modules())
        return [modules[name] for name in instance.target_names], getattr(_inner(instance), "_reshape_transform", None)

    def _build(self, layers: list[nn.Module]) -> Any:
        return self._build_class(self._cls, layers, self._kwargs)

    def _build_class(self, cls: type, layers: list[nn.Module], kwargs: dict[str, Any]) -> Any:
        kwargs = dict(kwargs)
        if self._reshape is not None:
            kwargs["reshape_transform"] = self._reshape
        try:
            extractor = cls(self.model, list(layers), **kwargs)
        except (TypeError, ValueError) as error:
            kind = UnsupportedLayersError if isinstance(error, ValueError) else TypeError
            raise kind(f"torchcam {cls.__name__} cannot be built on these layers: {error}") from None
        _inner(extractor).disable_hooks()
        return extractor

    def _build_for_layer_cams(self, layers: list[nn.Module]) -> Any:
        """RefineCAM multiplies its layers' maps: per-layer maps come from its base method."""
        from torchcam.methods import GradCAMpp, RefineCAM

        if issubclass(self._cls, RefineCAM):
            kwargs = dict(self._kwargs)
            base = kwargs.pop("base_method", GradCAMpp)
            kwargs.pop("input_shape", None)
            return self._build_class(base, layers, kwargs)
        return self._build(layers)

    def _release(self, instance: Any) -> None:
        try:
            instance.remove_hooks()
        finally:
            instance.reset_hooks()

    def _method_flags(self) -> tuple[bool, bool]:
        """(supports ``targets``, needs ``scores``) of the wrapped extractor."""
        if self._instance is None:
            return _class_flags(self._cls)
        inner = _inner(self._instance)
        finer = type(self._instance).__name__ == "FinerCAM"
        return bool(inner._targets_supported) and not finer, bool(inner._score_used) or _is_wrapper(self._instance)

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
            self._check_legrad()

    def _check_legrad(self) -> None:
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

    # ------------------------------------------------------ hooks (torchcam API)
    def attach(self) -> None:
        """Register the forward hook recording the model's inputs (idempotent)."""
        self._capture.attach(self.model)

    def detach(self) -> None:
        """Remove the input hook and forget the recorded inputs (idempotent)."""
        self._capture.detach()

    @property
    def hook_handles(self) -> list[RemovableHandle]:
        """Handles of the hooks the upscaler holds on the model (empty after ``remove_hooks()``)."""
        return self._capture.handles

    @property
    def _hooks_enabled(self) -> bool:
        return self._capture.enabled

    def enable_hooks(self) -> None:
        """Record the inputs of the model's forward passes (the default)."""
        self._capture.enabled = True

    def disable_hooks(self) -> None:
        """Stop recording forward passes (the ones already recorded are kept)."""
        self._capture.enabled = False

    def reset_hooks(self) -> None:
        """Forget the recorded forward passes."""
        self._capture.reset()

    def _paused(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]  # a context manager, as the base's
        return self._capture.paused()

    def fuse_cams(self, cams: list[torch.Tensor], target_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """The wrapped class's ``fuse_cams`` (LayerCAM scales, RefineCAM multiplies, the others take the max)."""
        extractor = self._instance
        fuse = (extractor if extractor is not None else self._cls).fuse_cams  # type: ignore[union-attr]
        if extractor is None and "self" in inspect.signature(fuse).parameters:  # FinerCAM: an instance method
            return super().fuse_cams(cams, target_shape)
        return fuse(cams, target_shape)

    # ------------------------------------------------------------------ seeds
    def _kept_extractors(self) -> list[Any]:
        return [_inner(self._instance)] if self._instance is not None else []

    def _compute_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        extractor = self.instance()
        maps = self._extractor_maps(extractor, images, labels)
        cam = maps[0] if len(maps) == 1 else extractor.fuse_cams(list(maps))
        if cam.ndim != 3:
            raise ValueError(f"torchcam {self.method_name} returned maps of shape {list(cam.shape)}, expected (B, h, w).")
        return normalize_per_image(cam.clamp_min(0)).unsqueeze(1).to(images.device)

    def _compute_layer_cams(
        self, images: torch.Tensor, labels: torch.Tensor, layers: list[nn.Module]
    ) -> list[torch.Tensor]:
        extractor = self.layer_instance(layers)
        maps = self._extractor_maps(extractor, images, labels)
        if len(maps) != len(layers):
            raise UnsupportedLayersError(
                f"torchcam {type(extractor).__name__} returned {len(maps)} maps for {len(layers)} layers; "
                "it cannot give one map per layer."
            )
        return [m.unsqueeze(1).to(images.device) for m in maps]

    def _extractor_maps(self, extractor: Any, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
        """The extractor's maps ``[(B, h, w)]`` for ``labels``, from one forward on ``images`` (first)."""
        inner = _inner(extractor)
        stored = {k: getattr(inner, k) for k in _STORED_STATE if hasattr(inner, k)}
        was_enabled = inner._hooks_enabled
        class_idx = [int(c) for c in labels.tolist()]
        try:
            with preserved(self.model), torch.enable_grad():
                self.model.eval()  # seeds come from the frozen classifier in eval mode
                inner.reset_hooks()
                inner.enable_hooks()
                x = images.detach().requires_grad_(True)  # gradients reach the target layers
                scores = self.model(x)
                _check_seed_scores(scores, class_idx)
                maps = extractor(class_idx, scores, normalized=True)
            return [torch.nan_to_num(m.detach().float(), nan=0.0) for m in maps]
        finally:
            inner.reset_hooks()
            for key, value in stored.items():  # a ready instance keeps what it stored from the user's forward
                setattr(inner, key, value)
            inner._hooks_enabled = was_enabled

    # ---------------------------------------------------------- call contract
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        """torchcam's ``extractor(class_idx=None, scores=None, normalized=True, *, targets=None)``.

        The signature is that of the wrapped method's ``__call__`` (RefineCAM adds
        ``target_shape``, FinerCAM ``comparison_idx``). The input explained is the one whose
        output ``scores`` are (see the module docstring); ``class_idx`` / ``targets`` give the
        classes passed to ``maps_fn`` (output targets must select one class score).

        Returns:
            ``[Tensor (B, H, W)]`` float32 on the model's device at the input resolution (or at
            RefineCAM's ``target_shape``): one map, whatever the number of target layers, which
            ``fuse_cams`` returns unchanged. ``normalized=True`` min-max normalises each map like
            torchcam; ``normalized=False`` returns the F-CAM foreground probability, also in [0, 1].

        Raises:
            NoCapturedInputError: no forward pass was recorded.
            TypeError / ValueError: arguments torchcam itself would reject, scores that belong to
                no recorded forward, or targets that select no class.
        """
        values = self._bind(args, kwargs)
        forward = self._capture.find(values.get("scores"), self.method_name)
        images = forward.input
        self._check_call(values, len(images))
        classes = self._classes(values, forward, len(images))
        maps = self.run_maps(maps_fn, images, classes).float()
        if values.get("normalized", True):
            flat = maps.flatten(1)
            flat = flat - flat.amin(1, keepdim=True)
            maps = (flat / (flat.amax(1, keepdim=True) + _NORMALIZE_EPS)).view_as(maps)
        target_shape = values.get("target_shape")
        if target_shape is not None:
            maps = F.interpolate(maps.unsqueeze(1), size=tuple(target_shape), mode="bilinear", align_corners=False)[:, 0]
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

    def _classes(self, values: dict[str, Any], forward: _Forward, batch: int) -> torch.Tensor:
        """The classes of the call: ``class_idx`` as given, or the class score each output target selects."""
        device = forward.input.device
        class_idx = values.get("class_idx")
        if class_idx is not None:
            indices = [class_idx] * batch if isinstance(class_idx, int) else list(class_idx)
            return torch.tensor(indices, dtype=torch.long, device=device)
        targets = values["targets"]
        targets = [targets] * batch if callable(targets) else list(targets)
        scores = values.get("scores")
        output = scores if isinstance(scores, torch.Tensor) else forward.output
        return torch.tensor([_selected_class(t, i, output) for i, t in enumerate(targets)], dtype=torch.long, device=device)

    def _check_call(self, values: dict[str, Any], batch: int) -> None:
        name = self.method_name
        class_idx = values.get("class_idx")
        targets = values.get("targets")
        scores = values.get("scores")
        self.check_flag("normalized", values.get("normalized", True))
        supports_targets, uses_scores = self._flags
        if (class_idx is None) == (targets is None):
            raise ValueError(
                f"provide exactly one of `class_idx` or `targets` to {name}, got class_idx={class_idx!r} and "
                f"targets={describe(targets) if targets is not None else None}."
            )
        if targets is not None:
            _check_targets(targets, batch, name, supports_targets)
        if class_idx is not None:
            _check_class_idx(class_idx, batch)
        if scores is None and uses_scores:
            raise ValueError(
                f"torchcam {name} needs the model output: call `up(class_idx, scores)` with `scores = model(x)`."
            )
        if isinstance(scores, torch.Tensor):
            if scores.ndim != 2 or scores.shape[0] != batch:
                raise ValueError(
                    f"`scores` must be the output of the forward pass being explained, shape ({batch}, num_classes), "
                    f"got {describe(scores)}."
                )
            indices = [class_idx] if isinstance(class_idx, int) else (class_idx or [])
            if indices and max(indices) >= scores.shape[1]:
                raise ValueError(f"`class_idx` must be < {scores.shape[1]} (classes in `scores`), got {class_idx!r}.")
        elif scores is not None and targets is None:
            raise TypeError(f"`scores` must be a tensor (B, num_classes) when using `class_idx`, got {describe(scores)}.")
        _check_extras(values, name)


def _check_seed_scores(scores: object, class_idx: list[int]) -> None:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ValueError(f"the model must return class scores of shape (B, num_classes), got {describe(scores)}.")
    if class_idx and max(class_idx) >= scores.shape[1]:
        raise ValueError(f"class indices must be in [0, {scores.shape[1]}) for this model, got {class_idx[:8]}.")


def _check_targets(targets: object, batch: int, name: str, supported: bool) -> None:
    if not supported:
        raise ValueError(f"torchcam {name} does not support arbitrary output `targets`; pass `class_idx`.")
    if callable(targets):
        return
    if not isinstance(targets, list) or not all(callable(t) for t in targets):
        raise TypeError(f"`targets` must be a callable or a list of callables, got {describe(targets)}.")
    if len(targets) != batch:
        raise ValueError(f"`targets` must hold one target per image ({batch}), got {len(targets)}.")


def _check_class_idx(class_idx: object, batch: int) -> None:
    def ok(c: object) -> bool:
        return isinstance(c, int) and not isinstance(c, bool) and c >= 0

    if not (ok(class_idx) or (isinstance(class_idx, list) and all(ok(c) for c in class_idx))):
        raise ValueError(
            f"`class_idx` must be a non-negative int or a list of {batch} non-negative ints, got {class_idx!r}."
        )
    if isinstance(class_idx, list) and len(class_idx) != batch:
        raise ValueError(
            f"`class_idx` must hold one index per image of the forward pass being explained ({batch}), "
            f"got {len(class_idx)}."
        )


def _check_extras(values: dict[str, Any], name: str) -> None:
    target_shape = values.get("target_shape")
    if target_shape is not None and (
        not isinstance(target_shape, (tuple, list)) or len(target_shape) != 2
        or not all(isinstance(s, int) and s > 0 for s in target_shape)
    ):
        raise TypeError(f"`target_shape` must be None or a (height, width) pair of positive ints, got {target_shape!r}.")
    comparison = values.get("comparison_idx")
    if comparison is not None and not isinstance(comparison, (int, list)):
        raise TypeError(f"`comparison_idx` must be None, an int or a list of ints, got {describe(comparison)}.")
    retain_graph = values.get("retain_graph", False)
    if not isinstance(retain_graph, bool):
        raise TypeError(f"`retain_graph` must be a bool, got {retain_graph!r}.")
    known = {"class_idx", "scores", "normalized", "targets", "target_shape", "comparison_idx", "retain_graph"}
    unknown = sorted(k for k in values if k not in known)
    if unknown:
        raise TypeError(
            f"{name}(...) got unexpected keyword arguments {unknown}; F-CAM accepts "
            f"{sorted(known & set(values) | {'class_idx', 'scores', 'normalized'})}."
        )


def _selected_class(target: Callable, index: int, output: object) -> int:
    """The class whose score an output target returns (``lambda out: out[c]``, ``ClassifierOutputTarget(c)``).

    Raises:
        TypeError: the target does not return exactly one class score of the (B, num_classes) output.
    """
    category = getattr(target, "category", None)
    if isinstance(category, int) and not isinstance(category, bool) and category >= 0:
        return category
    problem = "the model output is not a (B, num_classes) tensor"
    if isinstance(output, torch.Tensor) and output.ndim == 2 and index < len(output):
        sample = output[index].detach().float().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                value = target(sample)
                grad = torch.autograd.grad(value, sample, allow_unused=True)[0] if isinstance(value, torch.Tensor) and value.numel() == 1 else None
        except Exception as error:  # noqa: BLE001 - any failure means "cannot apply"
            grad, problem = None, f"calling it on the output of image {index} raised {type(error).__name__}: {error}"
        else:
            problem = "it does not return a single class score"
        if grad is not None:
            hot = grad.nonzero().flatten().tolist()
            if len(hot) == 1 and torch.isclose(value.detach().reshape(()), sample[hot[0]].detach()) and grad[hot[0]] == 1:
                return int(hot[0])
    raise TypeError(
        f"`targets` entry {index} ({getattr(target, '__name__', type(target).__name__)}) cannot apply: the F-CAM "
        f"map is explained per class and {problem}; use targets that select one class score "
        "(e.g. lambda out: out[c]) or `class_idx`."
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
