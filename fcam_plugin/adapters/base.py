"""The seed-source contract shared by the adapters of every CAM library."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CAMSource", "MapsFn", "normalize_per_image", "upsample_cams"]

#: Computes F-CAM maps ``(B, H, W)`` on the model's device for a batch of images.
MapsFn = Callable[..., torch.Tensor]


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


class CAMSource(ABC):
    """Turns a CAM method of some library into a seed source, and knows that library's call contract.

    A source computes, for images and class indices, CAMs ``(B, 1, h, w)`` min-max normalised per
    image, as torch tensors on the model's device (:meth:`cams`); and it implements the wrapped
    explainer's call signature and return type around the F-CAM maps (:meth:`explain`).
    """

    #: Name of the wrapped library, e.g. ``"pytorch-grad-cam"``.
    library: str = ""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    @property
    @abstractmethod
    def method_name(self) -> str:
        """Name of the wrapped CAM method, e.g. ``"GradCAMPlusPlus"``."""

    @property
    @abstractmethod
    def target_layers(self) -> list[nn.Module]:
        """Layers the CAM is computed on."""

    @abstractmethod
    def cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """CAMs of classes ``labels`` ``(B,)`` for ``images`` ``(B, C, H, W)``: ``(B, 1, h, w)`` in [0, 1].

        The model's first forward pass inside this call must be on ``images`` themselves (the
        upscaler reads the decoder's skip features from it).
        """

    @abstractmethod
    def explain(self, maps_fn: MapsFn, *args: Any, **kwargs: Any) -> Any:
        """Call contract of the wrapped explainer: parse its arguments, return its type."""

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

    def after_fit(self) -> None:
        """Release what was acquired only for training (e.g. a library object built for seeds)."""

    def attach(self) -> None:
        """Acquire what the source needs while the upscaler is in use (hooks, library objects)."""

    def close(self) -> None:
        """Release everything acquired by :meth:`attach` or lazily; idempotent."""
