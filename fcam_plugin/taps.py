"""Feature taps on the frozen classifier: find skip layers by probing once, read them with hooks.

The probe runs the model on dummy inputs with a forward hook on every module and records, per
module, the output of each of its calls. A module that runs more than once per forward pass (one
activation module shared by the stem and the head, as in the lukemelas EfficientNets, or ResNet's
``BasicBlock.relu``) cannot be read with a hook, since a hook cannot tell its calls apart: it is
never chosen automatically, and :func:`check_called_once` rejects it when it is given by hand.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._state import frozen_eval
from .errors import NoSpatialFeaturesError, TapMismatchError

__all__ = [
    "FeatureTaps", "NoSpatialFeaturesError", "Probe", "Tap", "TapMismatchError", "check_called_once", "find_taps",
    "infer_in_channels", "plan_taps", "probe_model", "taps_from_layers", "to_nchw",
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


def _describe_output(output: object) -> str:
    """A call's output in a few characters: ``(1, 32, 128, 128)`` for a tensor, else its type."""
    if isinstance(output, torch.Tensor):
        return "(" + ", ".join(str(int(d)) for d in output.shape) + ")"
    return type(output).__name__


@dataclass
class _ProbeRun:
    """One dummy forward at ``size`` px.

    Attributes:
        size: side of the square dummy input.
        records: per module, ``(order, *shape-without-batch)`` of its *first* call whose output is
            a 3-D / 4-D floating tensor.
        calls: per module, the description of every call's output, in order.
        sequence: ``(name, description)`` of every module call of the forward, in order.
    """

    size: int
    records: dict[str, tuple[int, ...]] = field(default_factory=dict)
    calls: dict[str, list[str]] = field(default_factory=dict)
    sequence: list[tuple[str, str]] = field(default_factory=list)


def _probe(model: nn.Module, size: int, in_channels: int) -> _ProbeRun:
    """Run one dummy forward and record every module call (see :class:`_ProbeRun`)."""
    run = _ProbeRun(size)
    handles: list[RemovableHandle] = []

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            description = _describe_output(output)
            run.sequence.append((name, description))
            run.calls.setdefault(name, []).append(description)
            shape = _spatial_shape(output)
            if shape is not None and name not in run.records:
                run.records[name] = (len(run.sequence), *shape)

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
    return run


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


def _probe_runs(model: nn.Module, in_channels: int, probe_sizes: Sequence[int]) -> list[_ProbeRun]:
    """Probe at every size of ``probe_sizes``; if all fail, at the model's own input size."""
    runs = []
    with frozen_eval(model):
        for size in probe_sizes:
            try:
                runs.append(_probe(model, size, in_channels))
            except Exception as error:  # e.g. ViT with a fixed input size: keep what worked
                logger.debug("probe at %d px failed: %s", size, error)
        if not runs:
            own = getattr(model, "image_size", None)
            fallback = ([own] if isinstance(own, int) else []) + [s for s in FALLBACK_PROBE_SIZES if s != own]
            for size in fallback:
                try:
                    runs.append(_probe(model, size, in_channels))
                    break
                except Exception as error:
                    logger.debug("fallback probe at %d px failed: %s", size, error)
    if not runs:
        raise NoSpatialFeaturesError(
            f"`model` could not be probed with dummy inputs of shape (1, {in_channels}, S, S) for "
            f"S in {list(probe_sizes) + list(FALLBACK_PROBE_SIZES)}; pass `skip_layers` explicitly."
        )
    return runs


@dataclass
class Probe:
    """What probing the model with dummy inputs saw: every module call, at one or more input sizes.

    Built by :func:`probe_model`; :func:`find_taps`, :func:`taps_from_layers` and
    :func:`check_called_once` read it, so that one probe serves them all.

    Attributes:
        in_channels: channels of the dummy inputs.
        runs: one record per probe size that ran (see ``_ProbeRun``).
    """

    in_channels: int
    runs: list[_ProbeRun]

    @property
    def repeated(self) -> dict[str, list[str]]:
        """Modules that ran more than once in one forward pass: name -> their outputs at the first size."""
        out: dict[str, list[str]] = {}
        for run in self.runs:
            for name, calls in run.calls.items():
                if len(calls) > 1 and name not in out:
                    out[name] = self.runs[0].calls.get(name, calls)
        return out

    def ran(self, name: str) -> bool:
        """Whether module ``name`` ran during the first probe."""
        return name in self.runs[0].calls

    def neighbours(self, name: str) -> list[str]:
        """For each call of a repeated module, the last module that ran once before it with the same output shape.

        These are the layers a hook can read in its place (e.g. the BatchNorm feeding a shared activation).
        """
        run = self.runs[0]
        once = {n for n, calls in run.calls.items() if len(calls) == 1}
        found = []
        for index, (called, description) in enumerate(run.sequence):
            if called != name:
                continue
            before = [n for n, d in run.sequence[:index] if d == description and n in once and n != name]
            if before and before[-1] not in found:
                found.append(before[-1])
        return found

    def describe_calls(self, name: str) -> str:
        """``"2 times per forward pass, with outputs (1, 32, 128, 128) and (1, 1280, 8, 8) on a 256 px probe"``."""
        run = self.runs[0]
        calls = run.calls.get(name, [])
        shapes = ", ".join(calls[:-1]) + f" and {calls[-1]}" if len(calls) > 1 else "".join(calls)
        return f"{len(calls)} times per forward pass, with outputs {shapes} on a {run.size} px probe"


def probe_model(
    model: nn.Module, in_channels: int | None = None, probe_sizes: Sequence[int] = PROBE_SIZES
) -> Probe:
    """Probe ``model`` with dummy inputs ``(1, C, S, S)`` for each ``S`` of ``probe_sizes``, in eval mode.

    The model's modes are restored afterwards; no hook is left on it. When every size fails (a
    ViT with a fixed input size), the model's ``image_size`` attribute and 224 px are tried.

    Args:
        model: the classifier.
        in_channels: channels of the dummy inputs (default: those of the first ``Conv2d``, else 3).
        probe_sizes: sides of the dummy inputs.

    Returns:
        The :class:`Probe` record.

    Raises:
        NoSpatialFeaturesError: the model fails on every dummy input.

    Example:
        >>> probe = probe_model(torchvision.models.resnet18())
        >>> sorted(probe.repeated)[:2]   # BasicBlock.relu runs twice per block
        ['layer1.0.relu', 'layer1.1.relu']
    """
    channels = _probe_channels(model, in_channels)
    return Probe(channels, _probe_runs(model, channels, probe_sizes))


def _interpret(name: str, runs: Sequence[_ProbeRun]) -> tuple[int, int, str, int] | None:
    """(stride, channels, layout, prefix) of a layer's output, consistent at every probe size, or None.

    A 4-D output is channel-first (NCHW) when its last two dims follow the input size and dim 1
    does not change between probes; channels-last (NHWC) when dims 1-2 follow the input and the
    last is constant. NCHW is tried first, so CNN taps are exactly those of the NCHW-only search.
    A 3-D output ``(n, c)`` is a token sequence when ``n - prefix`` is the square of size/stride.
    """
    for layout in LAYOUTS:
        found = None
        for run in runs:
            rec = run.records.get(name)
            if rec is None:
                return None
            here = _read(rec[1:], run.size, layout)
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


#: Layers whose output is a linear map of their input (pre-activation): ranked below the
#: activations, pools and blocks of the same stride. Normalisation layers count only without
#: children (timm's ``BatchNormAct2d`` is a BatchNorm2d that applies its activation child);
#: convolutions always (lukemelas' ``Conv2dStaticSamePadding`` holds its padding as a child).
_LINEAR_LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
_NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def _pre_activation(module: nn.Module) -> bool:
    """A convolution, linear or bare normalisation layer: its output comes before an activation."""
    if isinstance(module, _LINEAR_LAYERS):
        return True
    return isinstance(module, _NORM_LAYERS) and next(module.children(), None) is None


def find_taps(
    model: nn.Module,
    strides: Sequence[int] = DEFAULT_STRIDES,
    in_channels: int | None = None,
    probe_sizes: Sequence[int] = PROBE_SIZES,
    *,
    probe: Probe | None = None,
) -> list[Tap]:
    """Find, for each stride, the layer whose output is the best skip feature at that stride.

    The model is probed with dummy inputs (one per size in ``probe_sizes``, with ``in_channels``
    channels: by default those of the model's first ``Conv2d``, else 3) in eval mode without
    gradients; its state is restored afterwards. A layer counts only if its stride is the same at
    every probe size, so size-fixing layers (adaptive pooling) are skipped, and only if it runs
    once per forward pass (a hook cannot tell the calls of a shared module apart).

    Among the layers of one stride, the preferred one is (1) not nested in a block that ends at
    another stride, (2) not a bare convolution / normalisation / linear layer (post-activation
    outputs, pools and whole blocks come first), (3) the last to run.

    Args:
        model: the classifier.
        strides: strides to look for.
        in_channels: channels of the dummy inputs (default: inferred).
        probe_sizes: sides of the dummy inputs.
        probe: a :func:`probe_model` record to reuse instead of probing again.

    Returns:
        Taps sorted by increasing stride; strides the model does not have are missing.

    Raises:
        NoSpatialFeaturesError: no layer outputs a (B, C, h, w) map at any of the strides.
    """
    probe = probe if probe is not None else probe_model(model, in_channels, probe_sizes)
    runs = probe.runs
    first = runs[0].records
    modules = dict(model.named_modules())
    repeated = probe.repeated
    if repeated:
        logger.debug("not tapped (they run more than once per forward pass): %s", sorted(repeated))
    candidates = {name: _interpret(name, runs) for name in first if name not in repeated}
    strides_of = {name: (c[0] if c else None) for name, c in candidates.items()}
    # Layers whose channel-first 4-D outputs are maps at *some* stride keep exactly the historical
    # stride of the NCHW reading, so that CNN ancestors are ranked as before.
    for name, rec in first.items():
        if strides_of.get(name) is None and len(rec) == 4:
            strides_of[name] = _stride_of(runs[0].size, rec[2])
    best: dict[int, tuple[tuple[int, int, int], Tap]] = {}
    for name, candidate in candidates.items():
        if candidate is None:
            continue
        stride, channels, layout, prefix = candidate
        if stride not in strides:
            continue
        # Prefer whole stages: a layer nested in blocks that end at another stride (e.g. the
        # first conv of ResNet's next stage) is a worse skip than the stage output itself.
        # Containers that never run themselves (nn.ModuleList) do not count.
        parts = name.split(".")
        ancestors = [".".join(parts[:i]) for i in range(1, len(parts))]
        inside_other = sum(strides_of.get(a) != stride for a in ancestors if probe.ran(a))
        # Internals of a convolution (lukemelas' padding child) count as the convolution.
        pre = _pre_activation(modules[name]) or any(isinstance(modules[a], _LINEAR_LAYERS) for a in ancestors)
        rank = (-inside_other, int(not pre), first[name][0])
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


def _layer_names(model: nn.Module, layers: Sequence[nn.Module | str], argument: str) -> list[str]:
    """Qualified names of ``layers`` (modules of ``model`` or their names)."""
    names = {id(m): n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    wanted = []
    for layer in layers:
        if isinstance(layer, str):
            if layer not in modules:
                raise ValueError(f"`{argument}` names {layer!r}, which is not a submodule of `model`.")
            wanted.append(layer)
        elif isinstance(layer, nn.Module) and id(layer) in names:
            wanted.append(names[id(layer)])
        else:
            raise ValueError(
                f"`{argument}` must hold submodules of `model` or their qualified names, got {layer!r}."
            )
    return wanted


def check_called_once(
    probe: Probe, model: nn.Module, layers: Sequence[nn.Module | str], argument: str
) -> None:
    """Raise ``ValueError`` if a layer of ``layers`` runs more than once per forward pass, or never.

    A forward hook on such a layer sees several outputs (a shared activation called at the stem and
    at the head): a skip feature would be the wrong one, a CAM would mix two layers.

    Args:
        probe: the model's :func:`probe_model` record.
        model: the classifier.
        layers: modules of ``model`` or their qualified names.
        argument: the argument the layers came from, for the message (``"target_layers"``).

    Raises:
        ValueError: naming the layer, the shapes of its calls and the layers that run once nearby.
    """
    repeated = probe.repeated
    for name in _layer_names(model, layers, argument):
        if name in repeated:
            module = model.get_submodule(name)
            near = probe.neighbours(name)
            hint = (
                f"; the layers that run once just before its calls are {near}" if near else ""
            )
            raise ValueError(
                f"`{argument}` entry {name!r} ({type(module).__name__}) runs {probe.describe_calls(name)}: "
                f"a hook on it cannot tell its calls apart (features would come from the wrong call, a CAM "
                f"would mix them). Pass a layer that runs once per forward pass instead{hint}."
            )
        if not probe.ran(name):
            raise ValueError(
                f"`{argument}` entry {name!r} ({type(model.get_submodule(name)).__name__}) does not run in "
                "the model's forward pass (a container such as nn.ModuleList, or an unused layer); pass a "
                "layer that runs, e.g. one of its children."
            )


def taps_from_layers(
    model: nn.Module,
    layers: Sequence[nn.Module | str],
    in_channels: int | None = None,
    *,
    probe: Probe | None = None,
) -> list[Tap]:
    """Build taps for user-chosen layers (modules or qualified names) by probing their strides.

    The probe's input has ``in_channels`` channels (default: inferred as in :func:`find_taps`);
    ``probe`` reuses a :func:`probe_model` record.

    Raises:
        ValueError: a layer that is not a module of ``model``, that never runs or runs more than
            once per forward pass.
        NoSpatialFeaturesError: a layer whose output is not a feature map.
    """
    wanted = _layer_names(model, layers, "skip_layers")
    if probe is None:
        probe = probe_model(model, in_channels, PROBE_SIZES[:1])
    check_called_once(probe, model, wanted, "skip_layers")
    run = probe.runs[0]
    taps = []
    for name in wanted:
        if name not in run.records:
            raise NoSpatialFeaturesError(
                f"`skip_layers` entry {name!r} does not output a (B, C, h, w) feature map (it returns "
                f"{run.calls[name][0]} on a {run.size} px probe)."
            )
        candidate = _interpret(name, probe.runs)
        if candidate is None and len(run.records[name]) == 4:  # historical reading: NCHW at one size
            _, channels, h, _ = run.records[name]
            candidate = (_stride_of(run.size, h) or 1, channels, "nchw", 0)
        if candidate is None:
            raise NoSpatialFeaturesError(
                f"`skip_layers` entry {name!r} outputs shape {list(run.records[name][1:])} (without batch), "
                "which is neither a (C, h, w) / (h, w, C) map nor a square grid of tokens."
            )
        taps.append(Tap(name, *candidate))
    taps = sorted(taps, key=lambda t: t.stride)
    doubled = sorted({t.stride for t in taps if sum(u.stride == t.stride for u in taps) > 1})
    if doubled:
        raise ValueError(
            f"`skip_layers` must hold at most one layer per stride, got {[(t.name, t.stride) for t in taps]} "
            f"(several at stride {doubled}); the decoder takes one skip feature per stride."
        )
    return taps


def plan_taps(
    model: nn.Module, skip_layers: Sequence[nn.Module | str] | None = None, in_channels: int | None = None
) -> tuple[list[Tap], Probe]:
    """The decoder's taps (``skip_layers`` when given, else found by :func:`find_taps`) and the probe used.

    The probe is returned so that the CAM's target layers can be checked against it
    (:func:`check_called_once`) without probing the model again.
    """
    probe = probe_model(model, in_channels, PROBE_SIZES[:1] if skip_layers else PROBE_SIZES)
    if skip_layers:
        return taps_from_layers(model, skip_layers, probe=probe), probe
    return find_taps(model, probe=probe), probe


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
    :meth:`collect` checks every feature against its :class:`Tap` (channels, and a size that
    follows the recorded input's at the tap's stride) and raises :class:`TapMismatchError` naming
    the layers otherwise, before a decoder convolution fails on it.
    """

    def __init__(self, model: nn.Module, taps: Sequence[Tap]) -> None:
        self.model = model
        self.taps = list(taps)
        self._features: dict[str, torch.Tensor] = {}
        self._repeated: set[str] = set()
        self._input_size: tuple[int, int] | None = None
        self._handles: list[RemovableHandle] = []
        self._armed = False
        self._output_armed = False
        self._output: object = None

    def _hook(self, tap: Tap):
        name = tap.name

        def hook(module: nn.Module, args: object, output: torch.Tensor) -> None:
            if not self._armed:
                return
            if name in self._features:
                self._repeated.add(name)
                return
            if not isinstance(output, torch.Tensor):
                raise TapMismatchError(
                    f"feature tap {name!r} returned {type(output).__name__}, not a tensor; pass `skip_layers` "
                    "with layers that return feature maps."
                )
            self._features[name] = to_nchw(output.detach(), tap)
            if len(self._features) == len(self.taps):
                self._armed = False

        return hook

    def _input_hook(self, module: nn.Module, args: tuple[object, ...]) -> None:
        if self._armed and self._input_size is None and args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            self._input_size = (int(args[0].shape[-2]), int(args[0].shape[-1]))

    def _output_hook(self, module: nn.Module, args: object, output: object) -> None:
        if self._output_armed:
            self._output = output.detach() if isinstance(output, torch.Tensor) else output
            self._output_armed = False

    def attach(self) -> FeatureTaps:
        if not self._handles:
            modules = dict(self.model.named_modules())
            self._handles.append(self.model.register_forward_pre_hook(self._input_hook))
            self._handles.append(self.model.register_forward_hook(self._output_hook))
            for tap in self.taps:
                self._handles.append(modules[tap.name].register_forward_hook(self._hook(tap)))
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._clear()
        self._output, self._output_armed = None, False

    def _clear(self) -> None:
        self._features.clear()
        self._repeated.clear()
        self._input_size = None
        self._armed = False

    def arm(self) -> None:
        self._clear()
        self._armed = self._output_armed = True
        self._output = None

    @property
    def output(self) -> object:
        """The model's output (detached) of the first forward pass after the last :meth:`arm`; None before."""
        return self._output

    def collect(self) -> list[torch.Tensor]:
        """Features of the last armed forward, ordered like ``taps``; clears the store.

        Raises:
            TapMismatchError: a tap that did not run, ran twice before the others, or returned a
                feature whose channels or size differ from what the probe found.
        """
        try:
            missing = [t.name for t in self.taps if t.name not in self._features]
            if missing:
                raise TapMismatchError(
                    f"feature taps {missing} did not run during the forward pass of the images (taps: "
                    f"{_tap_list(self.taps)}); the model's forward skips them for these inputs: pass `skip_layers` "
                    "with layers that always run."
                )
            problems = [p for p in (self._mismatch(t) for t in self.taps) if p]
            if self._repeated:
                problems.insert(0, f"{sorted(self._repeated)} ran more than once in one forward pass")
            if problems:
                raise TapMismatchError(
                    f"the decoder's skip features do not match the layers found when probing the model: "
                    f"{'; '.join(problems)} (taps: {_tap_list(self.taps)}). Pass `skip_layers` with layers that "
                    "run once per forward pass and return the same feature map for every input."
                )
            return [self._features[t.name] for t in self.taps]
        finally:
            self._clear()

    def _mismatch(self, tap: Tap) -> str | None:
        """Why the feature of ``tap`` does not fit it, or None."""
        feature = self._features[tap.name]
        if feature.ndim != 4 or feature.shape[1] != tap.channels:
            return (
                f"{tap.name!r} returned shape {list(feature.shape)} (as NCHW) but was probed with "
                f"{tap.channels} channels at stride {tap.stride}"
            )
        if self._input_size is not None:
            for side, size in zip(feature.shape[-2:], self._input_size):
                if not tap.stride / _STRIDE_SLACK <= size / max(int(side), 1) <= tap.stride * _STRIDE_SLACK:
                    return (
                        f"{tap.name!r} returned a {int(feature.shape[-2])}x{int(feature.shape[-1])} map for "
                        f"{self._input_size[0]}x{self._input_size[1]} images, not the stride {tap.stride} it was "
                        "probed at"
                    )
        return None

    def __enter__(self) -> FeatureTaps:
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


#: How far (as a factor) a feature's measured stride may be from its tap's before it is a mismatch;
#: small or odd inputs round sizes up (a 33 px input gives 2x2 maps at stride 32).
_STRIDE_SLACK = 3.0


def _tap_list(taps: Sequence[Tap]) -> str:
    return "[" + ", ".join(f"{t.name}@{t.stride} ({t.channels} ch)" for t in taps) + "]"
