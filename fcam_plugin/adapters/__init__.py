"""Adapters turning the CAM methods of pytorch-grad-cam and torchcam into F-CAM seed sources."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from .base import CAMSource, MapsFn, fuse_cams, normalize_per_image, quiet_extractors, upsample_cams
from .gradcam import GradCAMSource, is_gradcam_method
from .gradcam_wrappers import WrapperCAMSource, is_wrapper_method
from .torchcam import TorchCAMSource, is_torchcam_method

__all__ = [
    "CAMSource",
    "GradCAMSource",
    "MapsFn",
    "TorchCAMSource",
    "WrapperCAMSource",
    "build_source",
    "fuse_cams",
    "is_gradcam_method",
    "is_torchcam_method",
    "is_wrapper_method",
    "normalize_per_image",
    "quiet_extractors",
    "resolve_method",
    "upsample_cams",
]

_LIBRARY_PREFIXES = {"gradcam": "pytorch_grad_cam", "pytorch_grad_cam": "pytorch_grad_cam", "torchcam": "torchcam.methods"}


def _method_names(module_name: str) -> dict[str, Any]:
    import importlib

    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or dir(module)
    out = {}
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isclass(obj) and (is_gradcam_method(obj) or is_torchcam_method(obj) or is_wrapper_method(obj)):
            out[name] = obj
    return out


def resolve_method(method: Any) -> Any:
    """Turn a method name (``"GradCAMPlusPlus"``, ``"torchcam:LayerCAM"``) into its class.

    Plain names are looked up in pytorch-grad-cam first, then torchcam; prefix ``gradcam:`` or
    ``torchcam:`` to choose. Classes and instances are returned unchanged.
    """
    if not isinstance(method, str):
        return method
    prefix, _, name = method.rpartition(":")
    if prefix and prefix.lower() not in _LIBRARY_PREFIXES:
        raise ValueError(f"`method` prefix {prefix!r} is unknown; use one of {sorted(_LIBRARY_PREFIXES)}.")
    modules = [_LIBRARY_PREFIXES[prefix.lower()]] if prefix else ["pytorch_grad_cam", "torchcam.methods"]
    accepted = []
    for module_name in modules:
        table = _method_names(module_name)
        matches = {k: v for k, v in table.items() if k.lower() == name.lower()}
        if matches:
            return next(iter(matches.values()))
        accepted += [f"{module_name.split('.')[0]}:{k}" for k in sorted(table)]
    raise ValueError(f"`method` {method!r} is not a known CAM method; accepted: {accepted}.")


def build_source(
    model: nn.Module,
    method: Any,
    target_layers: Any = None,
    reshape_transform: Callable | None = None,
    **kwargs: Any,
) -> CAMSource:
    """Pick the adapter for ``method`` (class, instance or name) of either library and build it.

    ``kwargs`` are :class:`CAMSource`'s options (``default_layers``, ``min_size``, ``in_channels``,
    ``normalize``), the library's own spellings (torchcam's ``target_layer``, ``enable_hooks``)
    and the method's constructor arguments.
    """
    method = resolve_method(method)
    for adapter in _ADAPTERS:
        if adapter.accepts(method):
            return adapter(model, method, target_layers, reshape_transform, **kwargs)
    raise TypeError(
        f"`method` must be a CAM class or instance of pytorch-grad-cam (e.g. GradCAMPlusPlus) or of "
        f"torchcam.methods (e.g. LayerCAM), or its name, got {method!r}."
    )


_ADAPTERS: tuple[type[CAMSource], ...] = (GradCAMSource, WrapperCAMSource, TorchCAMSource)
