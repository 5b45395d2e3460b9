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
from .errors import NoSpatialFeaturesError

__all__ = [
    "FeatureTaps", "NoSpatialFeaturesError", "Tap", "find_taps", "infer_in_channels", "taps_from_layers", "to_nchw",
]

logger = logging.getLogger(__name__)

DEFAULT_STRIDES = (2, 4, 8, 16, 32)
# Two probe sizes whose strides must agree: this rejects layers such as VGG's AdaptiveAvgPool2d(7),
# whose output size does not follow the input size.
PROBE_SIZES = (256, 320)
# Tried only when every size of PROBE_SIZES fails, e.g. torchvision's ViT accepts 224 px inputs only
# (its ``image_size`` attribute, when present, is tried first).
FALLBACK_PROBE_SIZES = (224,)
#: Memory layouts of a tapped output: channels-first maps, channels-last maps (Swin), token
#: sequences ``(B, prefix + h*w, C)`` on a square grid (ViT).
LAYOUTS = ("nchw", "nhwc", "tokens")
_MAX_PREFIX_TOKENS = 8  # class / distillation / register tokens before the patch tokens


@dataclass(frozen=True)
class Tap:
    """A layer of the classifier read as a skip feature.

    Attributes:
        name: qualified module name.
        stride: input size / feature size.
        channels: feature channels.
        layout: ``"nchw"`` (CNNs), ``"nhwc"`` (channels-last, e.g. Swin stages) or ``"tokens"``
            (``(B, prefix + h*w, C)``, e.g. ViT blocks); features are always handed to the
            decoder as ``(B, C, h, w)``.
        prefix: leading non-patch tokens dropped from a ``"tokens"`` output (ViT: 1 class token).
    """

    name: str
    stride: int
    channels: int
    layout: str = "nchw"
    prefix: int = 0


def _spatial_shape(output: object) -> tuple[int, ...] | None:
    """Shape ``(d1, d2, d3)`` (4-D) or ``(n, c)`` (3-D) of a floating tensor output, else None.

    4-D outputs are kept for both layouts (NCHW and NHWC, decided across probe sizes); 3-D ones
    are token-sequence candidates.
    """
    if isinstance(output, torch.Tensor) and output.ndim in (3, 4) and output.is_floating_point():
        return tuple(int(d) for d in output.shape[1:])
    return None


def _probe(model: nn.Module, size: int, in_channels: int) -> dict[str, tuple[int, ...]]:
    """Run one dummy forward; return, per module name, (order, *shape-without-batch) of its last call."""
    records: dict[str, tuple[int, ...]] = {}
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


def infer_in_channels(model: nn.Module) -> int | None:
    """Input channels of ``model``, read from its first ``Conv2d`` or ``Linear`` layer, when that tells.

    Returns:
        The first ``nn.Conv2d``'s ``in_channels`` (modules in registration order); ``None`` when the
        first such layer is an ``nn.Linear`` (its input size mixes channels and pixels) or a lazy
        layer, or when the model has neither.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            channels = module.in_channels
            return channels if isinstance(channels, int) and channels > 0 else None
        if isinstance(module, nn.Linear):
            return None
    return None


def _probe_channels(model: nn.Module, in_channels: int | None) -> int:
    """Channels of the probe's dummy input: as given, else inferred, else 3 (RGB)."""
    return in_channels if in_channels is not None else (infer_in_channels(model) or 3)


def _stride_of(size: int, side: int) -> int | None:
    if side <= 0:
        return None
    return 2 ** round(math.log2(size / side)) if size / side >= 1.5 else 1


def _probe_runs(
    model: nn.Module, in_channels: int, probe_sizes: Sequence[int]
) -> list[tuple[int, dict[str, tuple[int, ...]]]]:
    """Probe at every size of ``probe_sizes``; if all fail, at the model's own input size."""
    runs = []
    with frozen_eval(model):
        for size in probe_sizes:
            try:
                runs.append((size, _probe(model, size, in_channels)))
            except Exception as error:  # e.g. ViT with a fixed input size: keep what worked
                logger.debug("probe at %d px failed: %s", size, error)
        if not runs:
            own = getattr(model, "image_size", None)
            fallback = ([own] if isinstance(own, int) else []) + [s for s in FALLBACK_PROBE_SIZES if s != own]
            for size in fallback:
                try:
                    runs.append((size, _probe(model, size, in_channels)))
                    break
                except Exception as error:
                    logger.debug("fallback probe at %d px failed: %s", size, error)
    if not runs:
        raise NoSpatialFeaturesError(
            f"`model` could not be probed with dummy inputs of shape (1, {in_channels}, S, S) for "
            f"S in {list(probe_sizes) + list(FALLBACK_PROBE_SIZES)}; pass `skip_layers` explicitly."
        )
    return runs


def _interpret(name: str, runs: list[tuple[int, dict[str, tuple[int, ...]]]]) -> tuple[int, int, str, int] | None:
    """(stride, channels, layout, prefix) of a layer's output, consistent at every probe size, or None.

    A 4-D output is channel-first (NCHW) when its last two dims follow the input size and dim 1
    does not change between probes; channels-last (NHWC) when dims 1-2 follow the input and the
    last is constant. NCHW is tried first, so CNN taps are exactly those of the NCHW-only search.
    A 3-D output ``(n, c)`` is a token sequence when ``n - prefix`` is the square of size/stride.
    """
    for layout in LAYOUTS:
        found = None
        for size, records in runs:
            rec = records.get(name)
            if rec is None:
                return None
            here = _read(rec[1:], size, layout)
            if here is None or (found is not None and here != found):
                found = None
                break
            found = here
        if found is not None:
            return found
    return None


def _read(shape: tuple[int, ...], size: int, layout: str) -> tuple[int, int, str, int] | None:
    if layout == "nchw" and len(shape) == 3:
        channels, h, w = shape
        stride = _stride_of(size, h)
        return (stride, channels, layout, 0) if stride is not None and _stride_of(size, w) == stride else None
    if layout == "nhwc" and len(shape) == 3:
        h, w, channels = shape
        stride = _stride_of(size, h)
        if stride is None or _stride_of(size, w) != stride or stride == 1 or size % stride or h != size // stride:
            return None
        return stride, channels, layout, 0
    if layout == "tokens" and len(shape) == 2:
        n, channels = shape
        for stride in DEFAULT_STRIDES:
            side = size // stride
            if size % stride == 0 and 0 <= n - side * side <= _MAX_PREFIX_TOKENS:
                return stride, channels, layout, n - side * side
    return None


def find_taps(
    model: nn.Module,
    strides: Sequence[int] = DEFAULT_STRIDES,
    in_channels: int | None = None,
    probe_sizes: Sequence[int] = PROBE_SIZES,
) -> list[Tap]:
    """Find, for each stride, the last layer whose output is a feature map at that stride.

    The model is probed with dummy inputs (one per size in ``probe_sizes``, with ``in_channels``
    channels: by default those of the model's first ``Conv2d``, else 3) in eval mode without
    gradients; its state is restored afterwards. A layer counts only if its stride is the same at
    every probe size, so size-fixing layers (adaptive pooling) are skipped.

    Returns:
        Taps sorted by increasing stride; strides the model does not have are missing.

    Raises:
        NoSpatialFeaturesError: no layer outputs a (B, C, h, w) map at any of the strides.
    """
    runs = _probe_runs(model, _probe_channels(model, in_channels), probe_sizes)
    first_size, first = runs[0]
    candidates = {name: _interpret(name, runs) for name in first}
    strides_of = {name: (c[0] if c else None) for name, c in candidates.items()}
    # Layers whose channel-first 4-D outputs are maps at *some* stride keep exactly the historical
    # stride of the NCHW reading, so that CNN ancestors are ranked as before.
    for name, rec in first.items():
        if strides_of[name] is None and len(rec) == 4:
            strides_of[name] = _stride_of(first_size, rec[2])
    best: dict[int, tuple[tuple[int, int], Tap]] = {}
    for name, candidate in candidates.items():
        if candidate is None:
            continue
        stride, channels, layout, prefix = candidate
        if stride not in strides:
            continue
        order = first[name][0]
        # Prefer whole stages: a layer nested in blocks that end at another stride (e.g. the
        # first conv of ResNet's next stage) is a worse skip than the stage output itself.
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        inside_other = sum(strides_of.get(a) != stride for a in ancestors)
        rank = (-inside_other, order)
        if stride not in best or rank > best[stride][0]:
            best[stride] = (rank, Tap(name, stride, channels, layout, prefix))
    if not best:
        raise NoSpatialFeaturesError(
            f"`model` ({type(model).__name__}) has no layer with a spatial feature map of shape "
            f"(B, C, H/s, W/s), (B, H/s, W/s, C) or tokens (B, [cls +] H/s * W/s, C) for s in "
            f"{list(strides)}. F-CAM needs a spatial feature map; pass `skip_layers` explicitly."
        )
    taps = [best[s][1] for s in sorted(best)]
    logger.debug("feature taps: %s", taps)
    return taps


def taps_from_layers(
    model: nn.Module, layers: Sequence[nn.Module | str], in_channels: int | None = None
) -> list[Tap]:
    """Build taps for user-chosen layers (modules or qualified names) by probing their strides.

    The probe's input has ``in_channels`` channels (default: inferred as in :func:`find_taps`).
    """
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
    runs = _probe_runs(model, _probe_channels(model, in_channels), PROBE_SIZES[:1])
    size, records = runs[0]
    taps = []
    for name in wanted:
        if name not in records:
            raise NoSpatialFeaturesError(
                f"`skip_layers` entry {name!r} does not output a (B, C, h, w) feature map."
            )
        candidate = _interpret(name, runs)
        if candidate is None and len(records[name]) == 4:  # historical reading: NCHW at one size
            _, channels, h, _ = records[name]
            candidate = (_stride_of(size, h) or 1, channels, "nchw", 0)
        if candidate is None:
            raise NoSpatialFeaturesError(
                f"`skip_layers` entry {name!r} outputs shape {list(records[name][1:])} (without batch), "
                "which is neither a (C, h, w) / (h, w, C) map nor a square grid of tokens."
            )
        taps.append(Tap(name, *candidate))
    return sorted(taps, key=lambda t: t.stride)


def to_nchw(output: torch.Tensor, tap: Tap) -> torch.Tensor:
    """A tapped output as ``(B, C, h, w)``: NHWC maps are permuted, tokens (square grid) reshaped.

    Raises:
        ValueError: token outputs whose patch count is not a square (non-square inputs to a ViT).
    """
    if tap.layout == "nchw":
        return output
    if tap.layout == "nhwc":
        return output.permute(0, 3, 1, 2)
    tokens = output[:, tap.prefix :]
    side = math.isqrt(tokens.shape[1])
    if side * side != tokens.shape[1]:
        raise ValueError(
            f"feature tap {tap.name!r} returned {tokens.shape[1]} patch tokens, not a square grid; "
            "transformer taps need square inputs."
        )
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)


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

    def _hook(self, tap: Tap):
        name = tap.name

        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            if self._armed and name not in self._features:
                self._features[name] = to_nchw(output.detach(), tap)
                if len(self._features) == len(self.taps):
                    self._armed = False

        return hook

    def attach(self) -> "FeatureTaps":
        if not self._handles:
            modules = dict(self.model.named_modules())
            for tap in self.taps:
                self._handles.append(modules[tap.name].register_forward_hook(self._hook(tap)))
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
