"""The demo's pictures: maps side by side with a colour bar, the learning curve, maps per epoch."""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from ..visualize import overlay
from .pipeline import ComparisonResult
from .report import summarize

__all__ = ["comparison_figure", "epochs_figure", "learning_curve_figure", "per_class_figure"]

_PANEL = 1.9  # inches per panel


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (inner 4-neighbour boundary)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _panel(image: np.ndarray, fmap: np.ndarray, mask: np.ndarray) -> np.ndarray:
    picture = overlay(image, fmap)
    picture[_outline(mask)] = 255
    return picture


def _columns(result: ComparisonResult) -> list[str]:
    """The seed CAMs, the best training-free map, then every F-CAM map."""
    best_free = summarize(result)["best_training_free"]["pxap"]
    keys = [k for k in result.settings.seed_methods] + [best_free] + [k for k in result.scores if k.startswith("fcam_")]
    return list(dict.fromkeys(keys))


def _title(result: ComparisonResult, key: str) -> str:
    label = result.labels[key].split(" (")[0].split(", layer4")[0]
    return textwrap.fill(label, 26) + f"\nPxAP {100 * result.rows()[key]['pxap']:.1f}"


def _colorbar(fig: Figure, axes: np.ndarray) -> None:
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap="jet")
    bar = fig.colorbar(mappable, ax=list(axes.ravel()), fraction=0.02, pad=0.01)
    bar.set_label("map value", fontsize=8)
    bar.ax.tick_params(labelsize=7)


def _draw_row(axes_row: np.ndarray, panels: list[np.ndarray], titles: list[str], with_titles: bool) -> None:
    """One figure row: each panel without ticks, titled when ``with_titles`` (the first row)."""
    for ax, panel, title in zip(axes_row, panels, titles):
        ax.imshow(panel, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if with_titles:
            ax.set_title(title, fontsize=7)


def comparison_figure(result: ComparisonResult, path: str) -> None:
    """Test images (rows) x maps (columns) as overlays, the object outlined, with a colour bar."""
    keys, fig_data = _columns(result), result.figure
    n_rows, n_cols = len(fig_data["images"]), len(keys) + 2
    fig = Figure(figsize=(_PANEL * n_cols + 0.6, _PANEL * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        image, mask = fig_data["images"][r], fig_data["masks"][r]
        panels = [image] + [_panel(image, result.scores[k].samples[r], mask) for k in keys]
        gt = (0.35 * image + 0.65 * 255 * mask[..., None]).astype(np.uint8)
        gt[_outline(mask)] = 255
        _draw_row(axes[r], panels + [gt], ["image"] + [_title(result, k) for k in keys] + ["object mask"], r == 0)
        pred, label = int(fig_data["predictions"][r]), int(fig_data["labels"][r])
        axes[r][0].set_ylabel(f"class {label}" + ("" if pred == label else f"\n(predicted {pred})"), fontsize=8)
    _colorbar(fig, axes)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def learning_curve_figure(result: ComparisonResult, path: str) -> None:
    """PxAP and MaxBoxAccV2 per epoch of every F-CAM fit, with its seed CAM and the best rival as lines."""
    rows, summary = result.rows(), summarize(result)
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for ax, (name, metric) in zip(axes, (("PxAP", "pxap"), ("MaxBoxAccV2", "maxboxaccv2"))):
        for i, (key, fit) in enumerate(result.fits.items()):
            colour = f"C{i}"
            epochs = [r["epoch"] for r in fit.curve.rows]
            ax.plot(epochs, [100 * r[metric] for r in fit.curve.rows], "o-", color=colour, label=result.labels[f"fcam_{key}"])
            ax.axhline(100 * rows[key][metric], color=colour, ls=":", label=f"seed CAM: {result.labels[key].split(',')[0]}")
        free = summary["best_training_free"][metric]
        ax.axhline(100 * rows[free][metric], color="k", ls="--", label=f"best training-free: {result.labels[free]}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{name} (test)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def epochs_figure(result: ComparisonResult, path: str) -> None:
    """The F-CAM maps of the first test images (rows) after each epoch (columns), first fit only."""
    key, fit = next(iter(result.fits.items()))
    fig_data = result.figure
    n_rows, n_cols = len(fig_data["images"]), len(fit.curve.samples) + 1
    fig = Figure(figsize=(_PANEL * n_cols + 0.6, _PANEL * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r in range(n_rows):
        image, mask = fig_data["images"][r], fig_data["masks"][r]
        panels = [_panel(image, result.scores[key].samples[r], mask)] + [_panel(image, s[r], mask) for s in fit.curve.samples]
        titles = ["seed CAM"] + [f"epoch {row['epoch']}\nPxAP {100 * row['pxap']:.1f}" for row in fit.curve.rows]
        _draw_row(axes[r], panels, titles, r == 0)
    _colorbar(fig, axes)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def per_class_figure(result: ComparisonResult, path: str) -> None:
    """Multi-object test images (rows): for each class present, the wrapped CAM and F-CAM's map of that class."""
    data, shown = result.multi_figure, ("cam", "fcam")
    n_rows = len(data["images"])
    n_cols = 1 + len(shown) * max(len(c) for c in data["classes"])
    fig = Figure(figsize=(_PANEL * n_cols + 0.6, _PANEL * n_rows + 0.6))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for r, (image, classes, masks) in enumerate(zip(data["images"], data["classes"], data["masks"])):
        axes[r][0].imshow(image, interpolation="nearest")
        axes[r][0].set_title("image: classes " + ", ".join(str(int(c)) for c in classes), fontsize=7)
        for k, c in enumerate(classes):
            for j, key in enumerate(shown):
                ax = axes[r][1 + len(shown) * k + j]
                ax.imshow(_panel(image, result.multi[key].samples[r][k].numpy(), masks[k]), interpolation="nearest")
                name = "F-CAM" if key == "fcam" else result.multi_labels[key].split(",")[0]
                ax.set_title(f"class {int(c)}: {name}", fontsize=7)
    _colorbar(fig, axes)
    fig.savefig(path, dpi=110, bbox_inches="tight")
