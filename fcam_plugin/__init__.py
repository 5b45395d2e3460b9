"""fcam-plugin: full-resolution class activation maps (F-CAM) for pytorch-grad-cam and torchcam.

The top level is lazy, as torchcam's: ``import fcam_plugin`` imports neither torch nor the CAM
libraries; each public name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import (
    CheckpointError,
    MetadataError,
    NoCapturedInputError,
    NoSpatialFeaturesError,
    NotFittedError,
    TapMismatchError,
    UnsupportedLayersError,
)

if TYPE_CHECKING:
    from .config import FCAMConfig
    from .upscaler import FCAMUpscaler
    from .visualize import colorize, overlay

#: Public name -> module that defines it (imported on first access).
_LAZY = {
    "FCAMConfig": "config",
    "FCAMUpscaler": "upscaler",
    "colorize": "visualize",
    "overlay": "visualize",
}

__all__ = [
    "CheckpointError",
    "FCAMConfig",
    "FCAMUpscaler",
    "MetadataError",
    "NoCapturedInputError",
    "NoSpatialFeaturesError",
    "NotFittedError",
    "TapMismatchError",
    "UnsupportedLayersError",
    "__version__",
    "colorize",
    "overlay",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip __getattr__
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
