"""The classifier of a run: a torchvision ResNet-18 trained from random weights, optionally cached."""

from __future__ import annotations

import hashlib
import json
import os

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..checkpoint import atomic_save, read_state_dict
from ..progress import progress_bar
from .data import Split, augment, batches
from .settings import DemoSettings

__all__ = ["accuracy", "build_classifier", "classifier_for", "train_classifier"]


def build_classifier(num_classes: int) -> nn.Module:
    """torchvision ResNet-18 with random weights and ``num_classes`` outputs."""
    return torchvision.models.resnet18(weights=None, num_classes=num_classes)


def train_classifier(split: Split, settings: DemoSettings, device: torch.device) -> nn.Module:
    """ResNet-18 from random weights, AdamW + one-cycle schedule, flips and translations; eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = build_classifier(settings.classes).to(device)
    generator = torch.Generator().manual_seed(settings.seed + 1)
    steps = max(1, len(split) // settings.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=settings.classifier_epochs * steps, pct_start=0.2)
    model.train()
    with progress_bar(settings.progress, settings.classifier_epochs * steps, "classifier") as bar:
        for _ in range(settings.classifier_epochs):
            for index in batches(len(split), settings.batch_size, generator)[:steps]:
                x, y = augment(split.images[index], generator).to(device), split.labels[index].to(device)
                scores = model(x)
                loss = F.cross_entropy(scores, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1, {"loss": float(loss.detach()), "acc": float((scores.argmax(1) == y).float().mean())})
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, split: Split, batch_size: int, device: torch.device) -> tuple[float, torch.Tensor]:
    """Top-1 accuracy on a split and the predictions ``(N,)``."""
    preds = torch.cat([model(split.images[i].to(device)).argmax(1).cpu() for i in batches(len(split), batch_size)])
    return float((preds == split.labels).float().mean()), preds


def _cache_key(settings: DemoSettings) -> str:
    """What the trained weights depend on: variant, size, classes, data and training settings, torch."""
    fields = {
        "variant": settings.variant, "size": settings.image_size, "classes": settings.classes,
        "train": settings.train_images, "epochs": settings.classifier_epochs, "batch": settings.batch_size,
        "seed": settings.seed, "torch": torch.__version__.split("+")[0],
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return f"resnet18-{settings.variant}-{settings.image_size}px-{digest}.pt"


def classifier_for(split: Split, settings: DemoSettings, device: torch.device) -> tuple[nn.Module, bool]:
    """The run's classifier: loaded from ``settings.classifier_cache`` when there, else trained (and cached).

    Returns:
        ``(model, trained)``: the classifier in eval mode, and whether it was trained now.
    """
    path = os.path.join(settings.classifier_cache, _cache_key(settings)) if settings.classifier_cache else None
    if path is not None and os.path.isfile(path):
        model = build_classifier(settings.classes)
        model.load_state_dict(read_state_dict(path))
        return model.to(device).eval(), False
    model = train_classifier(split, settings, device)
    if path is not None:
        atomic_save(model.state_dict(), path)
    return model, True
