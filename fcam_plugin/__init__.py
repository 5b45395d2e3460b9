"""fcam-plugin: full-resolution class activation maps (F-CAM) for pytorch-grad-cam and torchcam."""

from __future__ import annotations

import importlib.metadata as _metadata

from ._checks import CheckpointError, NotFittedError
from .config import FCAMConfig
from .upscaler import FCAMUpscaler

try:
    __version__ = _metadata.version("fcam-plugin")
except _metadata.PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["CheckpointError", "FCAMConfig", "FCAMUpscaler", "NotFittedError", "__version__"]
