"""FCAMUpscaler: fit / call / save / load around a frozen classifier and a wrapped CAM method."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ._checks import check_images, check_path, describe
from ._state import frozen_eval
from ._version import __version__
from .adapters import CAMSource, build_source, upsample_cams
from .checkpoint import (
    CHECKPOINT_FORMAT,
    SCHEMA_VERSION,
    atomic_save,
    check_classifier,
    classifier_fingerprint,
    clean_state_dict,
    read_checkpoint,
)
from .config import FCAMConfig
from .decoder import UNetDecoder
from .errors import CheckpointError, NotFittedError
from .objective import Objective
from .taps import FeatureTaps, Tap, find_taps, taps_from_layers
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
    class-agnostic, as in the paper: it segments the object the classifier attends to, so the
    map does not change with ``targets``.

    Args:
        model: the classifier, returning scores ``(B, num_classes)``.
        method: a CAM class or ready instance of pytorch-grad-cam (``GradCAMPlusPlus``) or
            torchcam (``torchcam.methods.LayerCAM``), or its name (``"GradCAMPlusPlus"``,
            ``"torchcam:LayerCAM"``).
        target_layers: layers of the CAM; default: the model's last spatial stage.
        reshape_transform: pytorch-grad-cam reshape transform (transformers).
        skip_layers: layers read as the decoder's skip features; default: found by probing.
        config: training and decoder hyper-parameters.
        **method_kwargs: extra constructor arguments for ``method`` given as a class.

    Example:
        >>> from pytorch_grad_cam import GradCAMPlusPlus
        >>> up = FCAMUpscaler(model, GradCAMPlusPlus).fit(loader, epochs=1)
        >>> maps = up(input_tensor=x, targets=None)   # np.ndarray (B, H, W) float32 in [0, 1]
    """

    def __init__(
        self,
        model: nn.Module,
        method: Any,
        target_layers: Sequence[nn.Module] | None = None,
        *,
        reshape_transform: Callable | None = None,
        skip_layers: Sequence[nn.Module | str] | None = None,
        config: FCAMConfig | None = None,
        **method_kwargs: Any,
    ) -> None:
        if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
            raise TypeError(f"`model` must be a torch.nn.Module with parameters, got {describe(model)}.")
        if config is not None and not isinstance(config, FCAMConfig):
            raise TypeError(f"`config` must be an FCAMConfig, got {describe(config)}.")
        self.model = model
        self.config = config or FCAMConfig()
        self.device = model_device(model)
        self.taps: list[Tap] = taps_from_layers(model, skip_layers) if skip_layers else find_taps(model)
        if target_layers is None:
            modules = dict(model.named_modules())
            target_layers = [modules[self.taps[-1].name]]
        elif isinstance(target_layers, nn.Module) or not all(isinstance(m, nn.Module) for m in target_layers):
            raise TypeError(
                f"`target_layers` must be a list of submodules of `model`, got {describe(target_layers)}."
            )
        self.source: CAMSource = build_source(model, method, list(target_layers), reshape_transform, **method_kwargs)
        self.decoder = UNetDecoder(
            [t.channels for t in self.taps], [t.stride for t in self.taps], self.config.decoder_channels
        ).to(self.device)
        self.min_size = self.taps[-1].stride
        self.source.min_size = self.min_size  # lets the adapter name the caller's argument in size errors
        self.fitted = False
        self.history: list[dict[str, float]] = []

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
    ) -> "FCAMUpscaler":
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

        Returns:
            ``self``, to chain ``FCAMUpscaler(model, method).fit(loader)``; per-epoch mean loss terms
            are in :attr:`history`.

        Raises:
            CheckpointError: ``resume`` is unreadable or belongs to another classifier or decoder.
            FloatingPointError: ``max_bad_steps`` non-finite losses in a row.
        """
        options = FitOptions(
            epochs=epochs, optimizer=optimizer, amp=amp, seed=seed, progress=progress, checkpoint=checkpoint,
            checkpoint_every=checkpoint_every, max_steps=max_steps, max_bad_steps=max_bad_steps,
        )
        options.validate(loader, self.device)
        resume_state = self._read_resume(resume) if resume is not None else None
        fingerprint = classifier_fingerprint(self.model)

        def snapshot(decoder: nn.Module, training: dict[str, Any] | None, fitted: bool) -> dict[str, Any]:
            return self._checkpoint(decoder, training, fitted, fingerprint)

        result = train(
            self.decoder, self.model, self.taps, Objective(self.config, self.source), loader, options, snapshot,
            device=self.device, resume=resume_state,
        )
        self.decoder, self.history, self.fitted = result.decoder, result.history, True
        return self

    def _read_resume(self, path: str | os.PathLike) -> dict[str, Any]:
        state = read_checkpoint(path)
        if not state.get("training"):
            raise CheckpointError(
                f"`resume` checkpoint {os.fspath(path)!r} holds no training state (saved by save(), not by fit)."
            )
        self.load_state(state, path)
        return state

    # ----------------------------------------------------------------- inference
    def maps(self, images: torch.Tensor) -> torch.Tensor:
        """F-CAM maps ``(B, H, W)``: foreground probability at input resolution, on the model's device.

        Args:
            images: ``(B, 3, H, W)`` normalised like the classifier's inputs.
        """
        self._check_fitted()
        check_images("images", images, min_size=self.min_size)
        images = images.to(self.device)
        with torch.no_grad(), frozen_eval(self.model), FeatureTaps(self.model, self.taps) as taps:
            _, features = taps.forward(images)
            was_training = self.decoder.training
            self.decoder.eval()
            try:
                logits = self.decoder(features, tuple(images.shape[-2:]))
            finally:
                self.decoder.train(was_training)
        return logits.float().softmax(1)[:, 1]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call like the wrapped method; e.g. for pytorch-grad-cam
        ``up(input_tensor, targets=None, aug_smooth=False, eigen_smooth=False)`` returns an
        ``np.ndarray`` float32 ``(B, H, W)`` in [0, 1]."""
        self._check_fitted()
        return self.source.explain(self.maps, *args, **kwargs)

    def cams(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """The wrapped method's CAMs of ``labels``, bilinearly upsampled: ``(B, H, W)`` in [0, 1]."""
        check_images("images", images, min_size=self.min_size)
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
        return upsample_cams(low, images.shape[-2:]).clamp(0, 1)[:, 0].detach()

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise NotFittedError(
                "this FCAMUpscaler has not been trained: call `fit(loader)` or "
                "`FCAMUpscaler.load(path, model, method)` first."
            )

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Release hooks and library objects held for the wrapped method; idempotent."""
        self.source.close()

    def remove_hooks(self) -> None:
        """Alias of :meth:`close`, named like torchcam's ``extractor.remove_hooks()``."""
        self.close()

    def __enter__(self) -> "FCAMUpscaler":
        self.source.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        taps = ", ".join(f"{t.name}@{t.stride}" for t in self.taps)
        n_params = sum(p.numel() for p in self.decoder.parameters())
        return (
            f"{type(self).__name__}(model={type(self.model).__name__}, method={self.source.library}:"
            f"{self.source.method_name}, target_layers=[{', '.join(self._layer_names())}], "
            f"skips=[{taps}], decoder_params={n_params / 1e6:.2f}M, fitted={self.fitted})"
        )

    def _layer_names(self) -> list[str]:
        names = {m: n for n, m in self.model.named_modules()}
        return [names.get(m, type(m).__name__) for m in self.source.target_layers]

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
    ) -> "FCAMUpscaler":
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

