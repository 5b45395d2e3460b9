"""``fcam demo``: see and measure F-CAM against the blobby interpolated CAM, offline, on a CPU.

:func:`run_demo` runs :func:`fcam_plugin.compare.run_comparison` (synthetic data, a ResNet-18
trained from random weights, F-CAM fits, WSOL metrics for F-CAM and the training-free rivals) and
writes to ``out_dir``:

* ``report.md`` — settings, classifier accuracy, the metric table and what it means;
* ``metrics.json`` — every number of the report (settings, metrics, timings, machine);
* ``comparison.png`` — test images with the bilinear CAM, the strongest training-free rival, F-CAM
  and the ground-truth mask, as overlays.

Nothing is downloaded. ``quick=True`` is a CI-sized smoke run (about 1-2 minutes on 2 CPU
cores): every file is produced, but the numbers of such a tiny run say little.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import numpy as np
import torch

from ._checks import describe
from .compare import CompareSettings, ComparisonResult, markdown_table, run_comparison, summarize

__all__ = ["FULL", "QUICK", "run_demo"]

#: The full demo: about 10 minutes on 2 CPU cores.
FULL = CompareSettings(
    train_images=1024, test_images=160, image_size=64, classifier_epochs=12, fcam_epochs=4,
    seed_methods=("gradcampp",),
)

#: ``--quick``: every file, tiny sizes (the numbers are not meaningful).
QUICK = CompareSettings(
    train_images=192, test_images=32, image_size=64, classifier_epochs=3, fcam_epochs=1,
    seed_methods=("gradcampp",), baselines=("gradcampp", "layercam", "refinecam"),
)

_LOW_ACCURACY = 0.6


def run_demo(
    out_dir: str | os.PathLike = "fcam-demo",
    quick: bool = False,
    seed: int = 0,
    device: str | torch.device = "cpu",
    *,
    settings: CompareSettings | None = None,
) -> dict[str, Any]:
    """Train a classifier and F-CAM on synthetic data, compare with training-free CAMs, write a report.

    Args:
        out_dir: output folder (created; existing files of the same names are replaced).
        quick: CI-sized run (about 1-2 minutes on 2 CPU cores).
        seed: seed of the data, the classifier and F-CAM.
        device: torch device (``"cpu"``, ``"cuda"``, ...).
        settings: explicit sizes (overrides ``quick``; ``seed`` and ``device`` still apply).

    Returns:
        The content of ``metrics.json`` plus ``"files"``: paths of the report, metrics and figure.

    Raises:
        TypeError: ``settings`` is not a :class:`~fcam_plugin.compare.CompareSettings`.

    Example:
        >>> result = run_demo("fcam-demo", quick=True)      # doctest: +SKIP
        >>> result["metrics"]["fcam_gradcampp"]["pxap"]      # doctest: +SKIP
    """
    if settings is not None and not isinstance(settings, CompareSettings):
        raise TypeError(f"`settings` must be a CompareSettings, got {describe(settings)}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0, got {seed!r}.")
    base = settings or (QUICK if quick else FULL)
    run = dataclasses.replace(base, seed=seed, device=str(torch.device(device)))
    out = os.fspath(out_dir)
    os.makedirs(out, exist_ok=True)
    mode = "custom" if settings is not None else ("quick" if quick else "full")
    print(f"[fcam] demo ({mode}) -> {out}: synthetic WSOL, ResNet-18 from random weights, device {run.device}", flush=True)
    start = time.perf_counter()
    result = run_comparison(run)
    files = {
        "report": os.path.join(out, "report.md"),
        "metrics": os.path.join(out, "metrics.json"),
        "figure": os.path.join(out, "comparison.png"),
    }
    _figure(result, files["figure"])
    payload = result.to_dict() | {"mode": mode, "summary": summarize(result)}
    payload["timings"]["total"] = {"wall_s": round(time.perf_counter() - start, 2)}
    with open(files["metrics"], "w") as fh:
        json.dump(payload, fh, indent=2, default=_json_default)
    with open(files["report"], "w") as fh:
        fh.write(_report(result, payload, mode))
    print(markdown_table(result), flush=True)
    print(f"[fcam] {payload['summary']['verdict']}", flush=True)
    print(f"[fcam] wrote {files['report']}, {files['metrics']}, {files['figure']} "
          f"({payload['timings']['total']['wall_s']:.0f} s)", flush=True)
    return payload | {"files": files}


def _json_default(value: object) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {describe(value)}")


# ----------------------------------------------------------------------------------- report
def _report(result: ComparisonResult, payload: dict[str, Any], mode: str) -> str:
    s, summary = result.settings, payload["summary"]
    machine, timings = result.machine, payload["timings"]
    lines = [
        "# F-CAM demo report",
        "",
        f"Synthetic WSOL data (`fcam_plugin.data.SyntheticWSOL`, seed {s.seed}): {s.train_images} training and "
        f"{s.test_images} test images of {s.image_size}x{s.image_size} px, {s.num_classes} classes. Classifier: "
        f"torchvision ResNet-18 (stride {s.classifier_stride}) trained from random weights for {s.classifier_epochs} epochs "
        f"(its CAM grid is {max(1, s.image_size // s.classifier_stride)}x{max(1, s.image_size // s.classifier_stride)}). F-CAM: {s.fcam_epochs} epochs on the frozen classifier"
        + (f", config overrides {s.fcam_overrides}" if s.fcam_overrides else "") + ".",
        "",
    ]
    if mode == "quick":
        lines += ["> **Quick run**: tiny sizes for a smoke test. The numbers below are not meaningful; "
                  "run `fcam demo` without `--quick` for the real comparison.", ""]
    acc = result.accuracy
    lines += [f"**Classifier test accuracy: {100 * acc:.1f}%** (train {100 * result.train_accuracy:.1f}%, "
              f"chance {100 / s.num_classes:.0f}%).", ""]
    if acc < _LOW_ACCURACY:
        lines += [f"> **Warning:** the classifier is weak (accuracy below {100 * _LOW_ACCURACY:.0f}%). A CAM explains "
                  "the classifier: if it has not learned the classes, its CAMs, and the F-CAM maps trained on them, "
                  "say little about the objects. Train longer (more epochs or images).", ""]
    lines += [
        "## Localization on the test split",
        "",
        "WSOL protocol (Choe et al., CVPR 2020), maps of the ground-truth class, values x 100. "
        "PxAP: pixel average precision against the object masks; MaxBoxAcc: box of the largest component at "
        "IoU >= 0.5, best threshold; MaxBoxAccV2: all components, mean over IoU 0.3/0.5/0.7. "
        "Δ columns: difference with the bilinear GradCAM++ map.",
        "",
        markdown_table(result),
        "",
        "## What it means",
        "",
        *[f"* {line}" for line in summary["findings"]],
        "",
        "![comparison](comparison.png)",
        "",
        "Figure: test images (rows); the CAM of each method overlaid in the jet colormap (red = high); the "
        "ground-truth mask outlined in white.",
        "",
        "## Run",
        "",
        f"Device {s.device}; CPU {machine['cpu']} ({machine['cpus']} cores, {machine['torch_threads']} torch threads), "
        f"load average {machine['load_avg_1min']} at the start; torch {machine['torch']}.",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
        *[f"| {k} | {v['wall_s']:.1f} | {v.get('cpu_s', float('nan')):.1f} |" for k, v in timings.items()],
        "",
        "Reproduce: `fcam demo" + (" --quick" if mode == "quick" else "") + f" --seed {s.seed}`; "
        "configurable sizes: `python benchmarks/quality.py --help`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- figure
def _figure_columns(result: ComparisonResult) -> list[tuple[str, str]]:
    """(map key, title) of the figure columns that exist in this result."""
    maps = result.samples["maps"]
    columns = [("gradcampp", "GradCAM++ (bilinear)")]
    best = result_best_training_free(result)
    if best and best != "gradcampp":
        columns.append((best, f"best training-free:\n{best}"))
    columns += [(k, "F-CAM\n(" + k[5:] + " seeds)") for k in maps if k.startswith("fcam_")]
    return [(k, t) for k, t in columns if k in maps]


def result_best_training_free(result: ComparisonResult) -> str | None:
    """Key of the training-free map with the highest PxAP."""
    keys = [k for k in result.metrics if not k.startswith("fcam_")]
    return max(keys, key=lambda k: result.metrics[k]["pxap"]) if keys else None


def _overlay(image: np.ndarray, fmap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The map in a jet colormap blended over the image, float RGB (H, W, 3) in [0, 1]."""
    x = np.clip(fmap, 0, 1)[..., None]
    jet = np.clip(np.concatenate([1.5 - np.abs(4 * x - 3), 1.5 - np.abs(4 * x - 2), 1.5 - np.abs(4 * x - 1)], -1), 0, 1)
    return alpha * image.astype(np.float32) / 255.0 + (1 - alpha) * jet


def _outline(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a bool mask (inner 4-neighbour boundary)."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _panels(result: ComparisonResult) -> tuple[list[str], list[list[np.ndarray]]]:
    """Column titles and rows of RGB float panels: image | maps ... | ground truth."""
    samples = result.samples
    columns = _figure_columns(result)
    titles = ["image"] + [t for _, t in columns] + ["ground-truth mask"]
    rows = []
    for i in range(len(samples["images"])):
        image, mask = samples["images"][i], samples["masks"][i]
        edge = _outline(mask)
        row = [image.astype(np.float32) / 255.0]
        for key, _ in columns:
            panel = _overlay(image, samples["maps"][key][i])
            panel[edge] = 1.0
            row.append(panel)
        gt = 0.35 * image.astype(np.float32) / 255.0 + 0.65 * mask[..., None].astype(np.float32)
        gt[edge] = (1.0, 1.0, 1.0)
        row.append(gt)
        rows.append(row)
    return titles, rows


def _figure(result: ComparisonResult, path: str) -> None:
    """Comparison figure with matplotlib (Agg) when installed, else a plain PIL grid."""
    titles, rows = _panels(result)
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        _figure_pil(rows, path)
        return
    n_rows, n_cols = len(rows), len(titles)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.9 * n_cols, 1.9 * n_rows + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r][c]
            ax.imshow(np.clip(panel, 0, 1), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
        pred, label = int(result.samples["predictions"][r]), int(result.samples["labels"][r])
        axes[r][0].set_ylabel(f"class {label}" + ("" if pred == label else f"\n(pred. {pred})"), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _figure_pil(rows: list[list[np.ndarray]], path: str) -> None:
    from PIL import Image

    pad = 4
    h, w = rows[0][0].shape[:2]
    scale = max(1, 128 // max(h, w))
    grid = np.ones((len(rows) * (h * scale + pad) + pad, len(rows[0]) * (w * scale + pad) + pad, 3), np.float32)
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            big = np.kron(np.clip(panel, 0, 1), np.ones((scale, scale, 1), np.float32))
            y, x = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
            grid[y : y + h * scale, x : x + w * scale] = big
    Image.fromarray((grid * 255 + 0.5).astype(np.uint8)).save(path)
