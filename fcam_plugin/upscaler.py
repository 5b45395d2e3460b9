"""FCAMUpscaler: fit / call / save / load around a frozen classifier and a wrapped CAM method."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any, Callable

import torch
from torch import nn

from ._checks import check_path, describe
from ._state import frozen_eval
from ._version import __version__
from .adapters import CAMSource, build_source, upsample_cams
from .adapters.base import FuseCamsAttribute
from .alignment import receptive_offsets
from .checkpoint import (
    CHECKPOINT_FORMAT,
    SCHEMA_VERSION,
    atomic_save,
    check_classifier,
    classifier_fingerprint,
    clean_state_dict,
    read_checkpoint,
)
from .class_gate import class_gate, rival_classes
from .config import FCAMConfig
from .decoder import UNetDecoder, foreground_probability
from .errors import CheckpointError, NotFittedError
from .objective import Objective
from .selection import BestEpoch
from .taps import FeatureTaps, Tap, check_called_once, infer_in_channels, plan_taps
from .training import FitOptions, train

__all__ = ["FCAMUpscaler", "model_device"]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    param = next(model.parameters(), None)
    if param is None:
        buffer = next(model.buffers(), None)
        return buffer.device if buffer is not None else torch.device("cpu")
    return param.device


class FCAMUpscaler:
    """Full-resolution CAMs for a frozen classifier, called exactly like the CAM method it wraps.

    A light U-Net decoder is trained on the classifier's skip features (the classifier stays
    frozen and is never modified), guided by seeds sampled from the wrapped method's CAM, a dense
    CRF colour prior and a size prior (F-CAM, Belharbi et al., WACV 2022). The decoder is
    class-agnostic, as in the paper: it segments the object the classifier attends to. When the
    caller names classes (``targets``, ``class_idx``), the class gate makes the map follow them:
    it fades the regions where a rival class's CAM is stronger than the requested class's
    (``FCAMConfig(cam_gate="auto")``, at the cost of the wrapped method's backward pass).

    Args:
        model: the classifier, returning scores ``(B, num_classes)``.
        method: a CAM class or ready instance of pytorch-grad-cam (``GradCAMPlusPlus``) or
            torchcam (``torchcam.methods.LayerCAM``), or its name (``"GradCAMPlusPlus"``,
            ``"torchcam:LayerCAM"``).
        target_layers: layers of the CAM: a module, a qualified name (``"layer4"``) or a list of
            either; default: the model's last spatial stage. torchcam's spelling
            ``target_layer=`` is accepted for torchcam methods.
        reshape_transform: pytorch-grad-cam reshape transform (transformers); positional as in
            grad-cam's ``Method(model, target_layers, reshape_transform)``.
        skip_layers: layers read as the decoder's skip features; default: found by probing.
        config: training and decoder hyper-parameters.
        normalize: value convention of grad-cam style calls: ``"minmax"`` (default, drop-in:
            each map stretched to span [0, 1] per image, as pytorch-grad-cam's ``scale_cam_image``)
            or ``"probability"`` (the decoder's foreground probability, comparable across images).
            torchcam style calls follow their own ``normalized=`` flag (True: min-max, as torchcam;
            False: the probability).
        **method_kwargs: constructor arguments for ``method`` given as a class; names the class
            does not take raise ``TypeError``, as the class itself would.

    torchcam methods: the upscaler records the model's inputs with a forward hook from
    construction until :meth:`remove_hooks` / :meth:`close` (or the end of a ``with`` block), as a
    torchcam extractor does. pytorch-grad-cam methods hold no hooks between calls. Unlike
    pytorch-grad-cam's constructor, the upscaler never calls ``model.eval()`` on your model.

    Example:
        >>> from pytorch_grad_cam import GradCAMPlusPlus
        >>> up = FCAMUpscaler(model, GradCAMPlusPlus, [model.layer4]).fit(loader, epochs=1)
        >>> maps = up(input_tensor=x, targets=None)   # np.ndarray (B, H, W) float32 in [0, 1]
    """

    #: torchcam's ``fuse_cams``: ``FCAMUpscaler.fuse_cams(cams)`` (max fusion) or
    #: ``up.fuse_cams(cams)`` (the wrapped method's own fusion).
    fuse_cams = FuseCamsAttribute()

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Any = None,
        reshape_transform: Callable | None = None,
        *,
        skip_layers: Sequence[nn.Module | str] | None = None,
        config: FCAMConfig | None = None,
        normalize: str = "minmax",
        **method_kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"`model` must be a torch.nn.Module with parameters, got {describe(model)}.")
        if config is not None and not isinstance(config, FCAMConfig):
            raise TypeError(f"`config` must be an FCAMConfig, got {describe(config)}.")
        self.model = model
        self.config = config or FCAMConfig()
        self.device = model_device(model)
        self.in_channels = infer_in_channels(model)
        # One probe serves the skip taps (given or found) and the check of the CAM's target layers.
        taps, probe = plan_taps(model, skip_layers, self.in_channels)
        self.taps: list[Tap] = taps
        self.min_size = self.taps[-1].stride
        modules = dict(model.named_modules())
        self.source: CAMSource = build_source(
            model, method, target_layers, reshape_transform, default_layers=[modules[self.taps[-1].name]],
            min_size=self.min_size, in_channels=self.in_channels, normalize=normalize, **method_kwargs,
        )
        owned = {id(m) for m in modules.values()}
        check_called_once(probe, model, [m for m in self.source.target_layers if id(m) in owned], "target_layers")
        self.decoder: nn.Module = UNetDecoder(
            [t.channels for t in self.taps], [t.stride for t in self.taps], self.config.decoder_channels
        ).to(self.device, torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32)
        self.fitted = False
        self.history: list[dict[str, float]] = []
        #: The epoch whose decoder ``fit(val_loader=...)`` kept (None without a validation loader).
        self.best_epoch: int | None = None
        #: Model output of the last call's forward pass (pytorch-grad-cam's ``cam.outputs``).
        self.outputs: Any = None
        self._warned: set[str] = set()
        self._offsets: dict[int, tuple[float, float]] = {}
        self._objective: Objective | None = None  # the seed CAMs of the class gate
        self.source.attach()  # last: nothing can fail after the hooks are on

    # ------------------------------------------------------------------ training
    def fit(
        self,
        loader: Any,
        epochs: int = 10,
        *,
        optimizer: Any = None,
        amp: bool = False,
        seed: int = 0,
        progress: bool = True,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int | None = None,
        resume: str | os.PathLike | None = None,
        max_steps: int | None = None,
        max_bad_steps: int = 20,
        on_epoch_end: Callable[[int, FCAMUpscaler], None] | None = None,
        val_loader: Any = None,
    ) -> FCAMUpscaler:
        """Train the decoder; the classifier stays frozen and comes back unchanged.

        Args:
            loader: iterable of batches ``(images, labels)`` or ``(images, labels, *extra)``, images
                ``(B, 3, H, W)`` normalised like the classifier's inputs, labels ``(B,)`` class indices.
            epochs: passes over ``loader`` (>= 1).
            optimizer: None (SGD with the config's reference defaults), a factory
                ``params -> Optimizer``, or an optimizer already built on the decoder's parameters.
            amp: float16 autocast for the decoder (CUDA only).
            seed: makes the run reproducible (decoder init, seed sampling, loader shuffling); the
                caller's global RNG state is left untouched.
            progress: show a progress bar with the loss terms.
            checkpoint: path of a resumable checkpoint, written atomically at each epoch end, every
                ``checkpoint_every`` steps, on Ctrl-C, and when an error stops a run that made progress.
            checkpoint_every: steps between checkpoints (default: epoch ends only).
            resume: checkpoint to continue from; the result equals an uninterrupted run with the same
                seed and loader.
            max_steps: stop after this many optimisation steps in total (for quick runs).
            max_bad_steps: consecutive non-finite losses tolerated (each skipped with a warning).
            on_epoch_end: called as ``on_epoch_end(epoch, upscaler)`` after every finished epoch
                (1-based), with the upscaler usable for maps and its :attr:`history` up to that
                epoch (e.g. to draw a learning curve).

        Returns:
            ``self``, to chain ``FCAMUpscaler(model, method).fit(loader)``; per-epoch mean loss terms
            are in :attr:`history`.

        Raises:
            CheckpointError: ``resume`` is unreadable or belongs to another classifier or decoder.
            FloatingPointError: ``max_bad_steps`` non-finite losses in a row.
        """
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise TypeError(f"`on_epoch_end` must be None or a callable (epoch, upscaler), got {describe(on_epoch_end)}.")
        selector = BestEpoch(val_loader) if val_loader is not None else None
        callbacks = [c for c in (selector, on_epoch_end) if c is not None]
        options = FitOptions(
            epochs=epochs, optimizer=optimizer, amp=amp, seed=seed, progress=progress, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, max_steps=max_steps, max_bad_steps=max_bad_steps,
            on_epoch_end=self._epoch_callback(callbacks) if callbacks else None,
        )
        options.validate(loader, self.device)
        resume_state = self._read_resume(resume) if resume is not None else None
        fingerprint = classifier_fingerprint(self.model)

        def snapshot(decoder: nn.Module, training: dict[str, Any] | None, fitted: bool) -> dict[str, Any]:
            return self._checkpoint(decoder, training, fitted, fingerprint)

        result = train(
            self.decoder, self.model, self.taps, self._fit_objective(), loader, options, snapshot,
            device=self.device, resume=resume_state,
        )
        self.decoder, self.history, self.fitted = result.decoder, result.history, True
        if selector is not None:
            selector.restore(self.decoder)
            self.best_epoch = selector.best_epoch
        return self

    def objective(self) -> Objective:
        """The training objective of this upscaler: seeds from the wrapped method, CRF, size prior."""
        return Objective(self.config, self.source, self.seed_stage_layers(), self.cam_offsets)

    def _fit_objective(self) -> Objective:
        """A new objective for a fit, kept for the class gate's seed CAMs (with any fallback it made)."""
        self._objective = self.objective()
        return self._objective

    def cam_offsets(self, layers: Sequence[nn.Module]) -> list[tuple[float, float]]:
        """Receptive-field offsets ``(dy, dx)`` of layers of the classifier, measured once per layer."""
        missing = [layer for layer in layers if id(layer) not in self._offsets]
        if missing:
            stride = self.taps[-1].stride
            with self.source._own_forwards():  # other extractors and our input capture ignore the probe
                measured = receptive_offsets(self.model, missing, self.in_channels or 3, stride)
            self._offsets.update({id(layer): offset for layer, offset in zip(missing, measured)})
        return [self._offsets[id(layer)] for layer in layers]

    def seed_stage_layers(self) -> list[nn.Module]:
        """Layers the wrapped method is evaluated at for ``seed_layers="stages"``.

        The classifier's stages of stride 8 and 16 (the decoder's skip taps there), then the CAM's
        target layers; the per-layer CAMs are fused as RefineCAM fuses its layers. None with a
        ``reshape_transform`` (transformers): it is written for the target layers' token grid, and
        the stages of a hierarchical transformer (Swin) have other grids.
        """
        if self.source.reshape_transform is not None:
            return []
        modules = dict(self.model.named_modules())
        stages = [modules[t.name] for t in self.taps if t.stride in (8, 16)]
        layers: list[nn.Module] = []
        for layer in stages + list(self.source.target_layers):
            if all(layer is not other for other in layers):
                layers.append(layer)
        return layers

    def _epoch_callback(
        self, callbacks: Sequence[Callable[[int, FCAMUpscaler], None]]
    ) -> Callable[[int, nn.Module, list[dict[str, float]]], None]:
        """The training loop's epoch hook: the decoder being trained, seen through this upscaler."""

        def hook(epoch: int, decoder: nn.Module, history: list[dict[str, float]]) -> None:
            fitted, self.decoder, self.fitted, self.history = self.fitted, decoder, True, history
            try:
                for callback in callbacks:
                    callback(epoch, self)
            finally:
                self.fitted = fitted

        return hook

    def _read_resume(self, path: str | os.PathLike) -> dict[str, Any]:
        state = read_checkpoint(path)
        if not state.get("training"):
            raise CheckpointError(
                f"`resume` checkpoint {os.fspath(path)!r} holds no training state (saved by save(), not by fit)."
            )
        self.load_state(state, path)
        return state

    # ----------------------------------------------------------------- inference
    def maps(self, images: torch.Tensor, classes: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """F-CAM maps ``(B, H, W)`` at input resolution, on the model's device.

        The decoder's foreground probability, averaged with that of the mirrored images when
        ``config.flip_average``; when gated (``config.cam_gate``: by default whenever ``classes``
        are given), multiplied by the class gate of ``classes`` against their rival classes
        (class-conditional maps, see :func:`fcam_plugin.class_gate.class_gate`).

        Args:
            images: ``(B, 3, H, W)`` normalised like the classifier's inputs.
            classes: ``(B,)`` class indices of the gate; ``None``: the class-agnostic map (with
                ``cam_gate=True``: the gate of the classifier's predicted classes).

        Raises:
            ValueError: ``classes`` of the wrong length or outside the model's scores.
        """
        return self._maps(images, classes, "`classes`")

    def _maps(self, images: torch.Tensor, classes: Any, argument: str) -> torch.Tensor:
        """:meth:`maps`, with ``argument`` the caller's name for the classes (in error messages)."""
        self._check_fitted()
        self.source.check_input("images", images)
        images = images.to(self.device)
        with torch.no_grad(), frozen_eval(self.model), frozen_eval(self.decoder), FeatureTaps(self.model, self.taps) as taps:
            scores, probs = self._foreground(taps, images)
            if self.config.flip_average:
                probs = 0.5 * (probs + self._foreground(taps, images.flip(-1))[1].flip(-1))
        if not self.config.gates(classes_named=classes is not None):
            return probs
        return probs * self._class_gate(images, scores, self._gate_classes(scores, classes, argument))

    def _foreground(self, taps: FeatureTaps, images: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """The classifier's output and the decoder's foreground probability ``(B, H, W)`` for ``images``."""
        scores, features = taps.forward(images)
        logits = self.decoder(features, tuple(images.shape[-2:]))
        return scores, foreground_probability(logits)

    def _gate_classes(self, scores: Any, classes: Any, argument: str) -> torch.Tensor:
        """The gate's classes ``(B,)``: ``classes`` checked against the model's scores, or the predicted ones."""
        if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
            raise ValueError(
                f"`cam_gate` needs class scores (B, num_classes) from the model, got {describe(scores)}."
            )
        if classes is None:
            return scores.argmax(1)
        classes = torch.as_tensor(classes, device=scores.device).long().view(-1)
        if classes.numel() != scores.shape[0]:
            raise ValueError(f"{argument} must hold one class index per image ({scores.shape[0]}), got {classes.numel()}.")
        self.source.check_classes(classes, scores.shape[1], argument)
        return classes

    def _class_gate(self, images: torch.Tensor, scores: torch.Tensor, requested: torch.Tensor) -> torch.Tensor:
        """The class gate ``(B, H, W)`` of ``requested`` ``(B,)`` against the ``config.gate_rivals`` best other classes."""
        rivals = rival_classes(scores, requested, self.config.gate_rivals)
        if rivals.shape[1] == 0:  # a one-class model: nothing to tell apart
            return torch.ones(images.shape[0], *images.shape[-2:], device=images.device)
        classes = torch.cat([requested.view(-1, 1), rivals], 1)  # (B, 1 + K)
        cams = self._gate_cams(images.repeat_interleave(classes.shape[1], 0), classes.reshape(-1))
        cams = cams.view(*classes.shape, *cams.shape[-2:])
        return class_gate(cams[:, 0], cams[:, 1:], self.config.gate_dilation)

    def _gate_cams(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """The seed CAM of ``classes`` at input size ``(B, H, W)`` in [0, 1] (the wrapped method, with gradients)."""
        if self._objective is None:
            self._objective = self.objective()
        try:
            with frozen_eval(self.model):
                cams = self._objective.seed_cams(images, classes)
        finally:
            self.source.after_fit()  # a library CAM object built for this call holds hooks on the model
        return cams[:, 0].detach().float()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call like the wrapped method, with its arguments and its return type.

        pytorch-grad-cam: ``up(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)``
        returns an ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1]. torchcam:
        ``up(class_idx, scores, normalized=True, *, targets=None)`` returns ``[Tensor (B, H, W)]``
        for the input whose output ``scores`` are.

        Raises:
            NotFittedError: before ``fit`` or ``load``.
            TypeError / ValueError: arguments the wrapped method would reject; classes outside
                the model's scores.
        """
        self._check_fitted()
        return self.source.explain(self._inference_maps, *args, **kwargs)

    def _inference_maps(
        self, images: torch.Tensor, classes: torch.Tensor | None, *, eigen_smooth: bool = False
    ) -> torch.Tensor:
        """The maps function handed to the adapters: F-CAM maps ``(B, H, W)`` for ``classes`` ``(B,)`` or None.

        ``classes`` are validated against the model's scores; they change the map through the
        class gate (``config.cam_gate``; None: the class-agnostic map). ``eigen_smooth`` has no CAM to act on (warned once).
        """
        if eigen_smooth:
            self._warn_once(
                "eigen_smooth",
                "`eigen_smooth=True` has nothing to act on here: the F-CAM map comes from the decoder, not from "
                "the low-resolution CAM it would smooth; the flag is ignored.",
            )
        outputs: list[Any] = []
        handle = self.model.register_forward_hook(lambda module, args, output: outputs.append(output))
        try:
            maps = self._maps(images, classes, self.source.class_argument)
        finally:
            handle.remove()
        self.outputs = outputs[0] if outputs else None
        if classes is not None and isinstance(self.outputs, torch.Tensor) and self.outputs.ndim == 2:
            self.source.check_classes(classes, self.outputs.shape[1], self.source.class_argument)
        return maps

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=5)

    # --------------------------------------------- attributes of the wrapped libraries
    @property
    def target_layers(self) -> list[nn.Module]:
        """The CAM's target layers (pytorch-grad-cam's attribute)."""
        return self.source.target_layers

    @property
    def reshape_transform(self) -> Callable | None:
        """pytorch-grad-cam's reshape transform (None for CNNs)."""
        return self.source.reshape_transform

    @property
    def batch_size(self) -> int | None:
        """pytorch-grad-cam's ``batch_size``: masked forwards per batch of ScoreCAM / AblationCAM seeds (None: theirs)."""
        return self.source.batch_size

    @batch_size.setter
    def batch_size(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"`batch_size` must be None or an int >= 1, got {value!r}.")
        self.source.batch_size = value

    @property
    def tta_transforms(self) -> Any:
        """pytorch-grad-cam's ``tta_transforms`` used by ``aug_smooth=True`` (None: hflip x multiply 0.9/1/1.1)."""
        return self.source.tta_transforms

    @tta_transforms.setter
    def tta_transforms(self, value: Any) -> None:
        if value is not None and not hasattr(value, "__iter__"):
            raise TypeError(
                f"`tta_transforms` must be None or an iterable of ttach transforms (e.g. ttach.Compose([...])), "
                f"got {describe(value)}."
            )
        self.source.tta_transforms = value

    @property
    def target_names(self) -> list[str]:
        """Qualified names of the target layers (torchcam's attribute)."""
        return self.source.target_names

    @property
    def hook_handles(self) -> list[Any]:
        """Handles of the hooks the upscaler holds on the model (torchcam's attribute; empty for grad-cam)."""
        return self.source.hook_handles

    def enable_hooks(self) -> None:
        """Record the inputs of the model's forward passes again (torchcam's method)."""
        self.source.enable_hooks()

    def disable_hooks(self) -> None:
        """Stop recording the model's forward passes (torchcam's method)."""
        self.source.disable_hooks()

    def reset_hooks(self) -> None:
        """Forget the recorded forward passes (torchcam's method)."""
        self.source.reset_hooks()

    def _hooks_off(self) -> Any:
        """Context manager with the upscaler's hooks off (used by ``torchcam.metrics`` around extra forwards)."""
        return self.source._hooks_off()

    def cams(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """The wrapped method's CAMs of ``labels``, bilinearly upsampled: ``(B, H, W)`` in [0, 1].

        This is what the wrapped library returns (its low-resolution map, interpolated); the
        wsolevaluation protocol resizes :meth:`low_res_cams` bicubically instead
        (:func:`fcam_plugin.metrics.resize_like_wsolevaluation`).
        """
        images = images.to(self.device) if isinstance(images, torch.Tensor) else images
        low = self.low_res_cams(images, labels)
        return upsample_cams(low, images.shape[-2:]).clamp(0, 1)[:, 0].detach()

    def low_res_cams(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """The wrapped method's CAMs of ``labels`` at the target layer's resolution: ``(B, 1, h, w)`` in [0, 1]."""
        self.source.check_input("images", images)
        images = images.to(self.device)
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"`labels` must be class indices (B,) as ints or a tensor, got {describe(labels)}.") from None
        if labels.ndim > 1 or labels.numel() != images.shape[0] or labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(
                f"`labels` must hold one integer class index per image ({images.shape[0]},), got {describe(labels)}."
            )
        labels = labels.to(self.device).long().view(-1)
        try:
            with frozen_eval(self.model):
                low = self.source.cams(images, labels)
        finally:
            self.source.after_fit()  # a library CAM object built for this call holds hooks on the model
        return low.detach()

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(
                "this FCAMUpscaler has not been trained: call `fit(loader)` or "
                "`FCAMUpscaler.load(path, model, method)` first."
            )

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Remove every hook and library object the upscaler holds on the model; idempotent.

        Afterwards the model has no hook of the upscaler left. Entering a ``with`` block again
        re-attaches the torchcam input hook.
        """
        self.source.close()

    def remove_hooks(self) -> None:
        """Alias of :meth:`close`, named like torchcam's ``extractor.remove_hooks()``."""
        self.close()

    def __enter__(self) -> FCAMUpscaler:
        self.source.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        taps = ", ".join(f"{t.name}@{t.stride}" for t in self.taps)
        n_params = sum(p.numel() for p in self.decoder.parameters())
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, method={self.source.library}:"
            f"{self.source.method_name}, target_layers=[{', '.join(self.source.target_names)}], "
            f"skips=[{taps}], normalize={self.source.normalize!r}, decoder_params={n_params / 1e6:.2f}M, "
            f"fitted={self.fitted})"
        )

    # ---------------------------------------------------------------- persistence
    def _checkpoint(
        self, decoder: nn.Module, training: dict[str, Any] | None, fitted: bool, fingerprint: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "versions": {"fcam_plugin": __version__, "torch": str(torch.__version__)},
            "method": {"library": self.source.library, "name": self.source.method_name},
            "config": self.config.to_dict(),
            "taps": [[t.name, t.stride, t.channels] for t in self.taps],
            "classifier": fingerprint,
            "decoder": {k: v.detach().cpu() for k, v in decoder.state_dict().items()},
            "fitted": fitted,
            "training": training,
        }

    def state(self) -> dict[str, Any]:
        """The checkpoint dict of this upscaler (builtins and tensors only), as :meth:`save` writes it."""
        return self._checkpoint(self.decoder, None, self.fitted, classifier_fingerprint(self.model))

    def save(self, path: str | os.PathLike) -> None:
        """Write decoder weights, config and classifier fingerprint to ``path`` (atomically)."""
        atomic_save(self.state(), check_path("path", path))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        model: nn.Module,
        method: Any,
        *,
        check_weights: bool = True,
        **kwargs: Any,
    ) -> FCAMUpscaler:
        """Rebuild an upscaler saved by :meth:`save` for ``model`` and ``method``.

        Uses ``torch.load(weights_only=True)``: no pickled code is executed.

        Args:
            check_weights: also require the classifier's weights to match the saved fingerprint
                (architecture must always match).

        Raises:
            CheckpointError: unreadable, foreign or mismatched checkpoint.
        """
        state = read_checkpoint(path)
        if not isinstance(model, nn.Module):
            raise TypeError(f"`model` must be a torch.nn.Module, got {describe(model)}.")
        check_classifier(state, model, path, check_weights)  # before probing layers it may not have
        try:
            config = FCAMConfig.from_dict(state["config"])
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"checkpoint {str(path)!r} has an invalid config: {error}") from None
        upscaler = cls(
            model,
            method,
            skip_layers=[name for name, _, _ in state["taps"]],
            config=config,
            **kwargs,
        )
        upscaler.load_state(state, path, check_weights=check_weights)
        return upscaler

    def load_state(self, state: dict[str, Any], path: object = "<state>", *, check_weights: bool = True) -> None:
        """Load a checkpoint dict into this upscaler after checking it fits the classifier."""
        check_classifier(state, self.model, path, check_weights)
        saved_channels = list(state["config"].get("decoder_channels", [])) if isinstance(state["config"], dict) else None
        if saved_channels != list(self.config.decoder_channels):
            raise CheckpointError(
                f"checkpoint {str(path)!r} has decoder_channels={saved_channels}, this upscaler has "
                f"{list(self.config.decoder_channels)}; rebuild it with FCAMUpscaler.load(path, model, method)."
            )
        taps = [[t.name, t.stride, t.channels] for t in self.taps]
        if [list(t) for t in state["taps"]] != taps:
            raise CheckpointError(f"checkpoint {str(path)!r} skip layers {state['taps']} differ from this model's {taps}.")
        try:
            self.decoder.load_state_dict(clean_state_dict(state["decoder"]), strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"checkpoint {str(path)!r} decoder does not match its config: {error}") from None
        self.fitted = bool(state.get("fitted", True))

