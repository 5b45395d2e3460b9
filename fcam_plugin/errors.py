"""Every exception the library raises on purpose, in one place (all are ``ValueError`` subclasses).

Each is re-exported at the top level (``from fcam_plugin import CheckpointError``). Bad arguments
raise plain ``TypeError`` / ``ValueError`` whose message names the argument, echoes the value
received and says what is accepted.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "MetadataError",
    "NoCapturedInputError",
    "NoSpatialFeaturesError",
    "NotFittedError",
    "TapMismatchError",
    "UnsupportedLayersError",
]


class NotFittedError(ValueError, RuntimeError):
    """Raised when an upscaler is used before ``fit`` or ``load`` (a ``ValueError``, and a
    ``RuntimeError`` for code written against earlier versions)."""


class CheckpointError(ValueError):
    """Raised for a truncated, corrupt, foreign or mismatched checkpoint."""


class NoSpatialFeaturesError(ValueError):
    """Raised when a model exposes no spatial (B, C, h, w) feature map that can feed the decoder."""


class TapMismatchError(ValueError, RuntimeError):
    """A tapped layer's output, during a fit or a call, is not what probing the model found.

    A ``ValueError`` with a message naming the layers (and a ``RuntimeError``, which is what the
    decoder's convolution would otherwise raise, without naming anything).
    """


class NoCapturedInputError(ValueError, RuntimeError, AssertionError):
    """Raised when the upscaler is called like a torchcam extractor before any forward pass.

    Also an ``AssertionError``, which is what torchcam's extractors raise in that case, so code
    written against torchcam (``pytest.raises(AssertionError)``) keeps working.
    """


class MetadataError(ValueError):
    """Raised for malformed wsolevaluation metadata files (with the file and line)."""


class UnsupportedLayersError(ValueError):
    """Raised when the wrapped CAM method cannot be evaluated at the layers asked for.

    torchcam's ``CAM`` needs the classifier's linear head to match its layer, so it exists at the
    last stage only; F-CAM's multi-stage seeds then fall back to the target layers (with a warning).
    """
