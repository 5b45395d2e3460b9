"""Feature taps on the frozen classifier: find skip layers by probing once, read them with hooks."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._state import frozen_eval

__all__ = ["FeatureTaps", "NoSpatialFeaturesError", "Tap", "find_taps"]

logger = logging.getLogger(__name__)

DEFAULT_STRIDES = (2, 4, 8, 16, 32)
# Two probe sizes whose strides must agree: this rejects layers such as VGG's AdaptiveAvgPool2d(7),
# whose output size does not follow the input size.
PROBE_SIZES = (256, 320)


class NoSpatialFeaturesError(ValueError):
    """Raised when a model exposes no spatial (B, C, h, w) feature map that can feed the decoder."""


@dataclass(frozen=True)
class Tap:
    """A layer of the classifier read as a skip feature: its qualified name, stride and channels."""

    name: str
    stride: int
    channels: int


def _spatial_shape(output: object) -> tuple[int, int, int] | None:
    """(C, h, w) of a module output that is a 4-D NCHW tensor, else None."""
    if isinstance(output, torch.Tensor) and output.ndim == 4 and output.is_floating_point():
        return int(output.shape[1]), int(output.shape[2]), int(output.shape[3])
    return None


def _probe(model: nn.Module, size: int, in_channels: int) -> dict[str, tuple[int, int, int, int]]:
    """Run one dummy forward; return, per module name, (order, C, h, w) of its last call."""
    records: dict[str, tuple[int, int, int, int]] = {}
    counter = [0]
    handles: list[RemovableHandle] = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            counter[0] += 1
            shape = _spatial_shape(output)
            if shape is not None:
                records[name] = (counter[0], *shape)

        return hook

    try:
        for name, module in model.named_modules():
            if name:  # the root module is the classifier itself, never a feature
                handles.append(module.register_forward_hook(make_hook(name)))
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        dummy = torch.zeros(1, in_channels, size, size, device=device, dtype=dtype)
        with torch.no_grad():
            model(dummy)
    finally:
        for handle in handles:
            handle.remove()
    return records


def _stride_of(size: int, side: int) -> int | None:
    if side <= 0:
        return None
    return 2 ** round(math.log2(size / side)) if size / side >= 1.5 else 1


def find_taps(
    model: nn.Module,
    strides: Sequence[int] = DEFAULT_STRIDES,
    in_channels: int = 3,
    probe_sizes: Sequence[int] = PROBE_SIZES,
) -> list[Tap]:
    """Find, for each stride, the last layer whose output is a feature map at that stride.

    The model is probed with dummy inputs (one per size in ``probe_sizes``) in eval mode without
    gradients; its state is restored afterwards. A layer counts only if its stride is the same at
    every probe size, so size-fixing layers (adaptive pooling) are skipped.

    Returns:
        Taps sorted by increasing stride; strides the model does not have are missing.

    Raises:
        NoSpatialFeaturesError: no layer outputs a (B, C, h, w) map at any of the strides.
    """
    runs = []
    with frozen_eval(model):
        for size in probe_sizes:
            try:
                runs.append((size, _probe(model, size, in_channels)))
            except Exception as error:  # e.g. ViT with a fixed input size: keep what worked
                logger.debug("probe at %d px failed: %s", size, error)
    if not runs:
        raise NoSpatialFeaturesError(
            f"`model` could not be probed with dummy inputs of shape (1, {in_channels}, S, S) for "
            f"S in {list(probe_sizes)}; pass `skip_layers` explicitly."
        )
    first_size, first = runs[0]
    strides_of = {name: _stride_of(first_size, rec[2]) for name, rec in first.items()}
    best: dict[int, tuple[tuple[int, int], Tap]] = {}
    for name, (order, channels, h, w) in first.items():
        stride = strides_of[name]
        if stride not in strides or _stride_of(first_size, w) != stride:
            continue
        consistent = all(
            name in rec and _stride_of(size, rec[name][2]) == stride and rec[name][1] == channels
            for size, rec in runs[1:]
        )
        if not consistent:
            continue
        # Prefer whole stages: a layer nested in blocks that end at another stride (e.g. the
        # first conv of ResNet's next stage) is a worse skip than the stage output itself.
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        inside_other = sum(strides_of.get(a) != stride for a in ancestors)
        rank = (-inside_other, order)
        if stride not in best or rank > best[stride][0]:
            best[stride] = (rank, Tap(name, stride, channels))
    if not best:
        raise NoSpatialFeaturesError(
            f"`model` ({type(model).__name__}) has no layer with a spatial feature map of shape "
            f"(B, C, H/s, W/s) for s in {list(strides)}. F-CAM needs a convolutional feature map; "
            "for transformers pass `skip_layers` and a `reshape_transform`."
        )
    taps = [best[s][1] for s in sorted(best)]
    logger.debug("feature taps: %s", taps)
    return taps


def taps_from_layers(model: nn.Module, layers: Sequence[nn.Module | str], in_channels: int = 3) -> list[Tap]:
    """Build taps for user-chosen layers (modules or qualified names) by probing their strides."""
    names = dict((m, n) for n, m in model.named_modules())
    modules = dict(model.named_modules())
    wanted = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in modules:
                raise ValueError(f"`skip_layers` names {layer!r}, which is not a submodule of `model`.")
            wanted.append(layer)
        elif isinstance(layer, nn.Module) and layer in names:
            wanted.append(names[layer])
        else:
            raise ValueError(
                f"`skip_layers` must hold submodules of `model` or their qualified names, got {layer!r}."
            )
    size = PROBE_SIZES[0]
    with frozen_eval(model):
        records = _probe(model, size, in_channels)
    taps = []
    for name in wanted:
        if name not in records:
            raise NoSpatialFeaturesError(
                f"`skip_layers` entry {name!r} does not output a (B, C, h, w) feature map."
            )
        _, channels, h, _ = records[name]
        taps.append(Tap(name, _stride_of(size, h) or 1, channels))
    return sorted(taps, key=lambda t: t.stride)


class FeatureTaps:
    """Forward hooks that keep the outputs of the tap layers; a context manager.

    Only the *first* forward pass after :meth:`arm` is recorded, so seed methods that run
    extra forwards on perturbed inputs (ScoreCAM, AblationCAM) do not overwrite the features.
    """

    def __init__(self, model: nn.Module, taps: Sequence[Tap]) -> None:
        self.model = model
        self.taps = list(taps)
        self._features: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        self._armed = False

    def _hook(self, name: str):
        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            if self._armed and name not in self._features:
                self._features[name] = output.detach()
                if len(self._features) == len(self.taps):
                    self._armed = False

        return hook

    def attach(self) -> "FeatureTaps":
        if not self._handles:
            modules = dict(self.model.named_modules())
            for tap in self.taps:
                self._handles.append(modules[tap.name].register_forward_hook(self._hook(tap.name)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._features.clear()
        self._armed = False

    def arm(self) -> None:
        self._features.clear()
        self._armed = True

    def collect(self) -> list[torch.Tensor]:
        """Features of the last armed forward, ordered like ``taps``; clears the store."""
        missing = [t.name for t in self.taps if t.name not in self._features]
        if missing:
            raise RuntimeError(f"feature taps {missing} did not fire during the forward pass.")
        features = [self._features[t.name] for t in self.taps]
        self._features.clear()
        self._armed = False
        return features

    def __enter__(self) -> "FeatureTaps":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the classifier once; return its output and the tapped features (hooks must be attached)."""
        self.arm()
        output = self.model(images)
        return output, self.collect()

    def __iter__(self) -> Iterator[Tap]:
        return iter(self.taps)
