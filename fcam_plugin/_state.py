"""Snapshot and restore of everything the plug-in may touch on the user's model."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ModelState", "frozen_eval", "preserved"]


@dataclass
class ModelState:
    """Per-module ``training`` flags and sub-modules, per-parameter ``requires_grad`` and ``.grad``."""

    training: list[tuple[nn.Module, bool]]
    requires_grad: list[tuple[nn.Parameter, bool]]
    grads: list[tuple[nn.Parameter, torch.Tensor | None]]
    children: list[tuple[nn.Module, dict[str, nn.Module | None]]]

    @classmethod
    def capture(cls, model: nn.Module) -> ModelState:
        params = list(model.parameters())
        return cls(
            training=[(m, m.training) for m in model.modules()],
            requires_grad=[(p, p.requires_grad) for p in params],
            grads=[(p, p.grad) for p in params],
            children=[(m, dict(m._modules)) for m in model.modules()],
        )

    def restore(self) -> None:
        # Sub-modules first: a CAM method that swaps layers (grad-cam's AblationCAM replaces the
        # target layer during its forward) may be interrupted before it puts them back.
        for module, children in self.children:
            if module._modules != children:
                module._modules.clear()
                module._modules.update(children)
        for module, flag in self.training:
            module.training = flag
        for param, flag in self.requires_grad:
            param.requires_grad_(flag)
        for param, grad in self.grads:
            param.grad = grad


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[nn.Module]:
    """Restore modes, ``requires_grad`` and ``.grad`` of ``model`` on exit, also after an exception.

    Needed because e.g. pytorch-grad-cam's constructor calls ``model.eval()`` and its forward
    calls ``model.zero_grad()`` without restoring either.
    """
    state = ModelState.capture(model)
    try:
        yield model
    finally:
        state.restore()


@contextlib.contextmanager
def frozen_eval(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and ``requires_grad=False`` on every parameter, restored on exit."""
    with preserved(model):
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        yield model
