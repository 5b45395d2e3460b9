"""The adapter base shared by every CAM library: constructor, lifecycle and the shared checks.

:class:`CAMSource` turns a CAM method of some library into (a) a *seed source* for training
(:meth:`~CAMSource.cams`, :meth:`~CAMSource.layer_cams`) and (b) that library's call contract
around the F-CAM maps (:meth:`~CAMSource.explain`). The base owns what every library shares:
the constructor (class or ready instance, target layers given as modules or names, constructor
keywords checked against the wrapped class), the lifecycle (library objects built lazily,
released by :meth:`~CAMSource.after_fit` / :meth:`~CAMSource.close`), the input and class checks,
the value convention of the maps, and running the upscaler's own forwards without disturbing
other extractors hooked on the same model. A library adapter overrides only what differs: how to
recognise, inspect, build and release its objects (``_is_class``, ``_is_instance``, ``_owner``,
``_instance_layers``, ``_build``, ``_release``), how it computes CAMs (``_compute_cams``,
``_compute_layer_cams``) and its call signature (``explain``).

The inference maps function that :meth:`~CAMSource.explain` receives has the signature
:data:`MapsFn`: ``maps_fn(images, classes, eigen_smooth=False) -> Tensor (B, H, W)``, where
``classes`` is a ``LongTensor (B,)`` of the requested classes, or ``None`` for the predicted class.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from difflib import get_close_matches
from typing import Any, Callable, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_images, describe
from .._state import preserved

__all__ = [
    "NORMALIZE_CHOICES",
    "CAMSource",
    "FuseCamsAttribute",
    "MapsFn",
    "fuse_cams",
    "normalize_per_image",
    "quiet_extractors",
    "resolve_layers",
    "upsample_cams",
]

#: Value conventions of the maps returned by a grad-cam style call (``FCAMUpscaler(normalize=...)``).
NORMALIZE_CHOICES = ("minmax", "probability")


class MapsFn(Protocol):
    """The upscaler's inference maps: ``(B, H, W)`` in [0, 1] on the model's device.

    Args:
        images: ``(B, C, H, W)`` batch to explain.
        classes: ``LongTensor (B,)`` of the requested classes, or ``None`` for the predicted class.
        eigen_smooth: grad-cam's flag, to apply where the map uses a CAM (warned about otherwise).
    """

    def __call__(
        self, images: torch.Tensor, classes: torch.Tensor | None, *, eigen_smooth: bool = False
    ) -> torch.Tensor: ...


def normalize_per_image(cams: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Min-max normalise each map of ``(B, ...)`` to [0, 1] like pytorch-grad-cam's ``scale_cam_image``."""
    flat = cams.flatten(1)
    flat = flat - flat.min(1, keepdim=True).values
    flat = flat / (eps + flat.max(1, keepdim=True).values)
    return flat.view_as(cams)


def upsample_cams(cams: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling of ``(B, 1, h, w)`` CAMs to ``size`` (half-pixel centres, like cv2.resize)."""
    if tuple(cams.shape[-2:]) == tuple(size):
        return cams
    return F.interpolate(cams, size=tuple(size), mode="bilinear", align_corners=False)


def fuse_cams(cams: list[torch.Tensor], target_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """Fuse maps ``[(B, h_l, w_l)]`` into one ``(B, H, W)``: bilinear resize, then element-wise maximum.

    The semantics of torchcam's ``_CAM.fuse_cams``: one map is returned unchanged; several are
    resized to ``target_shape`` (default: the largest of each dimension) and max-combined.

    Raises:
        TypeError: ``cams`` is not a list of tensors.
        ValueError: ``cams`` is empty.
    """
    if not isinstance(cams, list) or not all(isinstance(c, torch.Tensor) for c in cams):
        raise TypeError(f"`cams` must be a list of tensors (B, h, w), got {describe(cams)}.")
    if not cams:
        raise ValueError("`cams` must hold at least one map, got an empty list.")
    if len(cams) == 1:
        return cams[0]
    shape = tuple(target_shape) if target_shape is not None else tuple(max(s) for s in zip(*(c.shape[1:] for c in cams)))
    mode = {2: "bilinear", 3: "trilinear"}.get(len(shape), "nearest")
    extra = {} if mode == "nearest" else {"align_corners": False}
    fused = None
    for cam in cams:
        resized = F.interpolate(cam.unsqueeze(1), size=shape, mode=mode, **extra).squeeze(1)
        fused = resized if fused is None else torch.maximum(fused, resized)
    return fused  # type: ignore[return-value]


class FuseCamsAttribute:
    """``fuse_cams`` as torchcam exposes it: callable on the class and on an instance.

    On the class (``FCAMUpscaler.fuse_cams(cams)``) it is the generic :func:`fuse_cams`; on an
    upscaler (``up.fuse_cams(cams)``) it is its source's, i.e. the wrapped method's own fusion.
    """

    def __get__(self, obj: Any, owner: type | None = None) -> Callable[..., torch.Tensor]:
        if obj is None:
            return fuse_cams
        return obj.source.fuse_cams


def resolve_layers(model: nn.Module, layers: object, argument: str = "target_layers") -> list[nn.Module]:
    """Target layers given as a module, a qualified name, or a list of either, as modules of ``model``.

    Raises:
        TypeError: neither a module, a name nor a list of those.
        ValueError: a name or module that is not part of ``model`` (close names are suggested).
    """
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    modules = dict(model.named_modules())
    owned = {id(m) for m in modules.values()}
    out = []
    for item in items:
        if isinstance(item, str):
            if item not in modules:
                close = get_close_matches(item, list(modules), n=3)
                hint = f"; closest names: {close}" if close else ""
                raise ValueError(f"`{argument}` names {item!r}, which is not a submodule of `model`{hint}.")
            out.append(modules[item])
        elif isinstance(item, nn.Module):
            if id(item) not in owned:
                raise ValueError(
                    f"`{argument}` holds a {type(item).__name__} that is not a submodule of `model`; "
                    "pass layers of the model being explained (e.g. model.layer4) or their names."
                )
            out.append(item)
        else:
            raise TypeError(
                f"`{argument}` must be a submodule of `model`, its qualified name (e.g. 'layer4'), or a list "
                f"of those, got {describe(layers)}."
            )
    return out


def _hook_owner(hook: Callable) -> object | None:
    """The object whose bound method ``hook`` is (through ``functools.partial``), else None."""
    while isinstance(hook, functools.partial):
        hook = hook.func
    return getattr(hook, "__self__", None)


def _extractors_on(model: nn.Module) -> list[Any]:
    """Objects hooked on ``model`` with a torchcam-style ``_hooks_enabled`` switch (extractors)."""
    found: dict[int, Any] = {}
    for module in model.modules():
        for hooks in (module._forward_hooks, module._forward_pre_hooks):
            for hook in hooks.values():
                owner = _hook_owner(hook)
                if owner is not None and isinstance(getattr(owner, "_hooks_enabled", None), bool):
                    found[id(owner)] = owner
    return list(found.values())


@contextlib.contextmanager
def quiet_extractors(model: nn.Module, keep: Sequence[object] = ()) -> Iterator[None]:
    """Switch off the hooks of the torchcam extractors on ``model`` (except ``keep``), restored on exit.

    The upscaler's own forwards run inside this, so that they do not overwrite what the user's
    extractors stored from the user's forward (torchcam's metrics do the same around theirs).
    """
    kept = {id(k) for k in keep}
    switched = [e for e in _extractors_on(model) if id(e) not in kept and e._hooks_enabled]
    for extractor in switched:
        extractor._hooks_enabled = False
    try:
        yield
    finally:
        for extractor in switched:
            extractor._hooks_enabled = True


def _accepted_keywords(cls: type) -> set[str] | None:
    """Keyword names ``cls(...)`` accepts, or None when its ``__init__`` takes ``**kwargs``."""
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]  # the class's own __init__
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return {n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL} - {"self"}


class CAMSource(ABC):
    """A CAM method of some library as an F-CAM seed source, with that library's call contract.

    Args:
        model: the classifier.
        method: the wrapped method, as a class (built lazily on the target layers) or a ready
            instance built on ``model`` (its layers are used; it is left to its owner).
        target_layers: layers for a method given as a class: a module, a qualified name, or a
            list of either; ``None`` uses ``default_layers``.
        reshape_transform: the library's reshape transform (transformers).
        default_layers: layers used when ``target_layers`` is None (the upscaler passes the last
            spatial stage).
        min_size: smallest input side the model accepts (its total stride), for input checks.
        in_channels: input channels of the model, for input checks (None: any).
        normalize: value convention of the maps where the library call has no flag of its own:
            ``"minmax"`` (each map stretched to span [0, 1], as pytorch-grad-cam does) or
            ``"probability"`` (the decoder's foreground probability).
        **method_kwargs: constructor arguments for a method given as a class.

    Raises:
        TypeError: ``method`` is not of this library; constructor keywords the wrapped class does
            not take (named, as the class itself would); bad layer types.
        ValueError: a ready instance built on another model, or given constructor arguments.
    """

    #: Name of the wrapped library, e.g. ``"pytorch-grad-cam"``.
    library: ClassVar[str] = ""
    #: Constructor parameters the adapter passes itself (never accepted as method keywords).
    _reserved: ClassVar[tuple[str, ...]] = ("self", "model")
    #: Build (and release) one library object at construction to surface the library's own errors.
    _build_to_check: ClassVar[bool] = False
    #: How the library's call names the classes, for error messages.
    class_argument: ClassVar[str] = "`targets`"

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Any = None,
        reshape_transform: Callable | None = None,
        *,
        default_layers: Sequence[nn.Module] = (),
        min_size: int = 1,
        in_channels: int | None = None,
        normalize: str = "minmax",
        **method_kwargs: Any,
    ) -> None:
        check_choice("normalize", normalize, NORMALIZE_CHOICES)
        self.model = model
        self.min_size = min_size
        self.in_channels = in_channels
        self.normalize = normalize
        self.batch_size: int | None = None
        self.tta_transforms: Any = None
        self._instance: Any = None
        self._owns_instance = False
        self._per_layer: dict[Any, Any] = {}
        if self._is_instance(method):
            self._init_from_instance(method, target_layers, reshape_transform, method_kwargs)
        elif inspect.isclass(method) and self._is_class(method):
            layers = target_layers if target_layers is not None else list(default_layers)
            self._init_from_class(method, layers, reshape_transform, method_kwargs)
        else:
            raise TypeError(self._wrong_method_message(method))

    # ------------------------------------------------------- library specifics
    @classmethod
    @abstractmethod
    def _is_class(cls, method: type) -> bool:
        """Whether ``method`` is a CAM class of this library."""

    @classmethod
    @abstractmethod
    def _is_instance(cls, method: object) -> bool:
        """Whether ``method`` is a ready CAM object of this library."""

    @classmethod
    def accepts(cls, method: object) -> bool:
        """Whether this adapter handles ``method`` (a class or instance of its library)."""
        return (inspect.isclass(method) and cls._is_class(method)) or cls._is_instance(method)

    def _wrong_method_message(self, method: object) -> str:
        return f"`method` must be a {self.library} CAM class or instance, got {method!r}."

    @abstractmethod
    def _owner(self, instance: Any) -> object:
        """The model a ready instance was built on."""

    @abstractmethod
    def _instance_layers(self, instance: Any) -> tuple[list[nn.Module], Callable | None]:
        """Target layers and reshape transform of a ready instance."""

    @abstractmethod
    def _build(self, layers: list[nn.Module]) -> Any:
        """A library object of ``self._cls`` on ``layers`` (called under :func:`preserved`)."""

    @abstractmethod
    def _release(self, instance: Any) -> None:
        """Remove the hooks of a library object built by :meth:`_build`."""

    def _check_class_arguments(self) -> None:
        """Hook: combinations of class, layers and keywords the library cannot run (raise early)."""

    # ------------------------------------------------------------ constructor
    def _init_from_class(
        self, method: type, target_layers: Any, reshape_transform: Callable | None, method_kwargs: dict[str, Any]
    ) -> None:
        self._cls = method
        self._layers = resolve_layers(self.model, target_layers)
        self._reshape = reshape_transform
        self._kwargs = dict(method_kwargs)
        self._check_class_arguments()
        self._check_keywords()
        if self._build_to_check or _accepted_keywords(self._cls) is None:
            # Fail now, with the library's own reason (keywords a **kwargs chain rejects, layers it
            # cannot hook), rather than at the first training step.
            self._release(self._build_preserved(self._layers))

    def _init_from_instance(
        self, method: Any, target_layers: Any, reshape_transform: Callable | None, method_kwargs: dict[str, Any]
    ) -> None:
        self._check_ready_instance(method, self._owner(method), method_kwargs)
        self._cls = type(method)
        self._instance = method
        self._kwargs = {}
        self._layers, self._reshape = self._instance_layers(method)
        if target_layers is not None and resolve_layers(self.model, target_layers) != self._layers:
            raise ValueError(
                f"`target_layers` cannot apply to a ready {self._cls.__name__} instance: it was built on its own "
                f"layers ({self.target_names}); leave `target_layers` out or pass the class instead."
            )
        if reshape_transform is not None and reshape_transform is not self._reshape:
            raise ValueError(
                f"`reshape_transform` cannot apply to a ready {self._cls.__name__} instance (it was fixed when the "
                "instance was built); leave it out or pass the class instead."
            )
        batch_size = getattr(method, "batch_size", None)
        self.batch_size = batch_size if isinstance(batch_size, int) else None
        self.tta_transforms = getattr(method, "tta_transforms", None)

    def _check_ready_instance(self, method: Any, owner: object, method_kwargs: dict[str, Any]) -> None:
        """A ready CAM object must wrap this source's model and takes no constructor arguments."""
        if owner is not self.model:
            raise ValueError(
                f"`method` is a {type(method).__name__} instance built on a different model "
                f"({type(owner).__name__} object at {id(owner):#x}) than `model` "
                f"({type(self.model).__name__} object at {id(self.model):#x}); build it on the same model or "
                "pass the class instead."
            )
        if method_kwargs:
            raise ValueError(
                f"constructor arguments {sorted(method_kwargs)} cannot apply to a ready "
                f"{type(method).__name__} instance; pass the class instead."
            )

    def _check_keywords(self) -> None:
        """Constructor keywords must be ones the wrapped class takes (checked as the class would)."""
        name = self._cls.__name__
        reserved = sorted(set(self._kwargs) & set(self._reserved))
        if reserved:
            raise TypeError(
                f"{name}: pass {reserved} through FCAMUpscaler's own arguments (model, target_layers, "
                "reshape_transform), not as keywords for the method."
            )
        accepted = _accepted_keywords(self._cls)
        if accepted is None:
            return  # **kwargs: the class itself judges them when built (see __init__)
        unknown = sorted(set(self._kwargs) - accepted)
        if unknown:
            others = sorted(accepted - set(self._reserved))
            takes = f"it also takes {others}" if others else "it takes no other keyword arguments"
            raise TypeError(
                f"{name}.__init__() got unexpected keyword arguments {unknown}; besides the model and the "
                f"target layers, {takes}."
            )
        if "batch_size" in self._kwargs and isinstance(self._kwargs["batch_size"], int):
            self.batch_size = self._kwargs["batch_size"]

    # -------------------------------------------------------------- metadata
    @property
    def method_name(self) -> str:
        """Name of the wrapped CAM method, e.g. ``"GradCAMPlusPlus"``."""
        return self._cls.__name__

    @property
    def target_layers(self) -> list[nn.Module]:
        """Layers the CAM is computed on."""
        return self._layers

    @property
    def reshape_transform(self) -> Callable | None:
        """The library's reshape transform (None for CNNs)."""
        return self._reshape

    @property
    def target_names(self) -> list[str]:
        """Qualified names of the target layers in the model (torchcam's attribute)."""
        names = {id(m): n for n, m in self.model.named_modules()}
        return [names.get(id(m), type(m).__name__) for m in self._layers]

    # ------------------------------------------------------------- lifecycle
    def _build_preserved(self, layers: list[nn.Module]) -> Any:
        with preserved(self.model):  # library constructors switch modes (grad-cam calls model.eval())
            return self._build(layers)

    def instance(self) -> Any:
        """The library object on the target layers: the ready instance, or one built now (kept until released)."""
        if self._instance is None:
            self._instance = self._build_preserved(self._layers)
            self._owns_instance = True
        return self._instance

    def layer_instance(self, layers: Sequence[nn.Module]) -> Any:
        """A library object on ``layers`` for :meth:`layer_cams`, built lazily, released by :meth:`after_fit`."""
        key = tuple(id(layer) for layer in layers)
        if key not in self._per_layer:
            with preserved(self.model):
                self._per_layer[key] = self._build_for_layer_cams(list(layers))
        return self._per_layer[key]

    def _build_for_layer_cams(self, layers: list[nn.Module]) -> Any:
        """Hook: the library object giving per-layer maps on ``layers`` (default: the method itself)."""
        return self._build(layers)

    @contextlib.contextmanager
    def _batch_size_set(self, cam: Any) -> Iterator[None]:
        """The configured ``batch_size`` (ScoreCAM, AblationCAM) on ``cam`` for one call, restored after."""
        if self.batch_size is None:
            yield
            return
        missing = object()
        previous = getattr(cam, "batch_size", missing)
        cam.batch_size = self.batch_size
        try:
            yield
        finally:
            if previous is missing:
                del cam.batch_size
            else:
                cam.batch_size = previous

    def attach(self) -> None:
        """Acquire what the source needs while the upscaler is in use (hooks); idempotent."""

    def detach(self) -> None:
        """Release what :meth:`attach` acquired; idempotent."""

    def after_fit(self) -> None:
        """Release the library objects built for seeds (their hooks); the next use builds them again."""
        objects = list(self._per_layer.values())
        self._per_layer.clear()
        if self._owns_instance and self._instance is not None:
            objects.append(self._instance)
            self._instance = None
            self._owns_instance = False
        errors = []
        for obj in objects:
            try:
                self._release(obj)
            except Exception as error:  # noqa: BLE001 - release every object, then re-raise
                errors.append(error)
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Release everything: library objects built here and the hooks of :meth:`attach`; idempotent."""
        try:
            self.after_fit()
        finally:
            self.detach()

    # ---------------------------------------------------- torchcam-style hook API
    @property
    def hook_handles(self) -> list[Any]:
        """Handles of the hooks this source holds on the model (torchcam's attribute)."""
        return []

    def enable_hooks(self) -> None:
        """Enable this source's hooks (torchcam's method); nothing to do for sources without hooks."""

    def disable_hooks(self) -> None:
        """Disable this source's hooks (torchcam's method); nothing to do for sources without hooks."""

    def reset_hooks(self) -> None:
        """Forget what the hooks stored (torchcam's method); nothing to do for sources without hooks."""

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """Hook: the source's own hooks are off inside (torchcam's input capture)."""
        yield

    def _hooks_off(self) -> contextlib.AbstractContextManager[None]:
        """torchcam's private context manager used by ``torchcam.metrics`` around their extra forwards."""
        return self._paused()

    def _own_forwards(self, keep: Sequence[object] = ()) -> contextlib.ExitStack:
        """Context for the upscaler's own forwards: other extractors' hooks and our own capture off."""
        stack = contextlib.ExitStack()
        stack.enter_context(quiet_extractors(self.model, keep))
        stack.enter_context(self._paused())
        return stack

    # ---------------------------------------------------------------- checks
    def check_input(self, name: str, images: object) -> torch.Tensor:
        """Validate images to explain: ``(B, C, H, W)``, floating, the model's channels and dtype, large enough.

        Raises:
            TypeError: not a floating tensor, or float64 against a model of another precision (or
                the reverse).
            ValueError: shape, channel count, size or non-finite values.
        """
        images = check_images(name, images, channels=self.in_channels, min_size=self.min_size)
        param = next(self.model.parameters(), None)
        model_dtype = param.dtype if param is not None else images.dtype
        if (images.dtype == torch.float64) != (model_dtype == torch.float64):
            convert = "x.double()" if model_dtype == torch.float64 else "x.float()"
            raise TypeError(
                f"`{name}` has dtype {images.dtype} but the model's parameters are {model_dtype}; "
                f"convert with {convert} (or the model with model.to(dtype))."
            )
        return images

    @staticmethod
    def check_flag(name: str, value: object) -> bool:
        """``value`` must be a bool (grad-cam's ``aug_smooth`` / ``eigen_smooth``, torchcam's ``normalized``)."""
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be a bool, got {value!r}.")
        return value

    @staticmethod
    def check_classes(classes: torch.Tensor | None, num_classes: int, argument: str) -> None:
        """Class indices must lie in ``[0, num_classes)``: the model returns ``num_classes`` scores.

        Raises:
            ValueError: naming ``argument`` and the offending indices.
        """
        if classes is None or not classes.numel():
            return
        bad = [c for c in classes.tolist() if not 0 <= c < num_classes]
        if bad:
            raise ValueError(
                f"{argument} name classes {sorted(set(bad))[:8]} outside [0, {num_classes}): the model returns "
                f"{num_classes} scores."
            )

    def _normalized(self, maps: torch.Tensor) -> torch.Tensor:
        """Apply the value convention: per-image min-max stretch (``"minmax"``) or the probability as it is."""
        return normalize_per_image(maps) if self.normalize == "minmax" else maps

    def run_maps(
        self, maps_fn: MapsFn, images: torch.Tensor, classes: torch.Tensor | None, eigen_smooth: bool = False
    ) -> torch.Tensor:
        """Call the inference maps with the upscaler's forwards isolated (other extractors and our hooks off)."""
        with self._own_forwards():
            return maps_fn(images, classes, eigen_smooth=eigen_smooth)

    # ------------------------------------------------------------------ seeds
    def cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CAMs of classes ``labels`` ``(B,)`` for ``images`` ``(B, C, H, W)``: ``(B, 1, h, w)`` in [0, 1].

        The wrapped method on all the target layers (combined as the library combines them). The
        model's first forward pass inside this call is on ``images`` themselves (the upscaler reads
        the decoder's skip features from it); other extractors on the model are left untouched.
        """
        with self._own_forwards(keep=self._kept_extractors()):
            return self._compute_cams(images, labels)

    def layer_cams(self, images: torch.Tensor, labels: torch.Tensor, layers: Sequence[nn.Module]) -> list[torch.Tensor]:
        """The wrapped method evaluated separately at each of ``layers``, for classes ``labels`` ``(B,)``.

        Args:
            images: ``(B, C, H, W)``.
            labels: ``(B,)`` class indices.
            layers: modules of the model.

        Returns:
            One map ``(B, 1, h_l, w_l)`` per layer, min-max normalised per image. The model's first
            forward pass inside this call is on ``images`` themselves.

        Raises:
            TypeError / ValueError: layers that are not modules of the model, an empty list.
        """
        layers = resolve_layers(self.model, list(layers), "layers")
        if not layers:
            raise ValueError("`layers` must hold at least one module of the model, got an empty list.")
        with self._own_forwards(keep=self._kept_extractors()):
            maps = self._compute_layer_cams(images, labels, layers)
        return [normalize_per_image(torch.nan_to_num(m.float()).clamp_min(0)) for m in maps]

    def _kept_extractors(self) -> Sequence[object]:
        """Hook: extractors whose hooks must stay on during seed computation (the source's own)."""
        return ()

    @abstractmethod
    def _compute_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """:meth:`cams` without the isolation context."""

    @abstractmethod
    def _compute_layer_cams(
        self, images: torch.Tensor, labels: torch.Tensor, layers: list[nn.Module]
    ) -> list[torch.Tensor]:
        """:meth:`layer_cams` without the checks, isolation and normalisation: ``[(B, 1, h_l, w_l)]``."""

    # ---------------------------------------------------------- call contract
    @abstractmethod
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> Any:
        """The wrapped explainer's call: parse its arguments, call ``maps_fn``, return its type."""

    def fuse_cams(self, cams: list[torch.Tensor], target_shape: tuple[int, ...] | None = None) -> torch.Tensor:
        """torchcam's ``fuse_cams``: one map from per-layer maps (the generic max fusion here)."""
        return fuse_cams(cams, target_shape)

    @staticmethod
    def warn(message: str) -> None:
        """A ``UserWarning`` for a flag that is valid upstream but has nothing to act on."""
        warnings.warn(message, UserWarning, stacklevel=4)
