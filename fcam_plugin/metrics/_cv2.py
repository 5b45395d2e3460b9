"""OpenCV, optional: the ``"wsolevaluation"`` convention needs it, ``"components"`` does not."""

from __future__ import annotations

from typing import Any

cv2: Any  # the module, or None where OpenCV is missing (see require_cv2)
try:  # OpenCV is a dependency of grad-cam; the "components" convention works without it
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is missing
    cv2 = None

__all__ = ["cv2", "require_cv2"]


def require_cv2() -> None:
    """Raise ``ImportError`` when OpenCV is missing.

    Raises:
        ImportError: ``cv2`` cannot be imported.
    """
    if cv2 is None:
        raise ImportError(
            "convention='wsolevaluation' needs OpenCV: `pip install opencv-python-headless` (grad-cam "
            "depends on it), or pass convention='components' for the OpenCV-free approximation."
        )
