"""What a comparison run found, in words and tables: the measured winner, learning curves, timings."""

from __future__ import annotations

from typing import Any

from .pipeline import ComparisonResult

__all__ = ["learning_curve_table", "markdown_report", "metric_table", "multi_object_section", "summarize"]

_HEADLINE = (("PxAP", "pxap"), ("MaxBoxAcc", "maxboxacc"), ("MaxBoxAccV2", "maxboxaccv2"))
_LOW_ACCURACY = 0.6


def _argmax(rows: dict[str, dict[str, float]], keys: list[str], metric: str) -> str:
    """The key among ``keys`` whose row scores highest on ``metric``."""
    return max(keys, key=lambda key: rows[key][metric])

def _fcam_keys(result: ComparisonResult) -> list[str]:
    return [k for k in result.scores if k.startswith("fcam_")]


def summarize(result: ComparisonResult) -> dict[str, Any]:
    """The measured winners and every F-CAM's gains over its seed CAM and the best training-free map.

    Returns:
        ``best`` (metric -> key of the map scoring highest), ``best_training_free`` (metric -> key),
        ``gains`` (F-CAM key -> metric -> difference with its seed CAM, ``_vs_free`` with the best
        training-free map) and ``verdict`` (one sentence).
    """
    rows = result.rows()
    free = [k for k in rows if not k.startswith("fcam_")]
    best = {m: _argmax(rows, list(rows), m) for _, m in _HEADLINE}
    best_free = {m: _argmax(rows, free, m) for _, m in _HEADLINE}
    gains = {}
    for key in _fcam_keys(result):
        seed = key[len("fcam_"):]
        gains[key] = {m: rows[key][m] - rows[seed][m] for _, m in _HEADLINE}
        gains[key] |= {f"{m}_vs_free": rows[key][m] - rows[best_free[m]][m] for _, m in _HEADLINE}
    winner = best["pxap"]
    verdict = f"Best PxAP: {result.labels[winner]} ({100 * rows[winner]['pxap']:.1f})"
    if best["maxboxaccv2"] != winner:
        verdict += f"; best boxes (MaxBoxAccV2): {result.labels[best['maxboxaccv2']]} ({100 * rows[best['maxboxaccv2']]['maxboxaccv2']:.1f})"
    return {"best": best, "best_training_free": best_free, "gains": gains, "verdict": verdict + "."}


def metric_table(result: ComparisonResult) -> str:
    """Every map's PxAP, MaxBoxAcc, MaxBoxAccV2 (x 100, best in bold) and share of near-binary pixels."""
    rows = result.rows()
    best = summarize(result)["best"]
    lines = ["| map | PxAP | MaxBoxAcc | MaxBoxAccV2 | pixels at 0-0.1 or 0.9-1 |", "|---|---|---|---|---|"]
    for key, row in rows.items():
        cells = [f"**{100 * row[m]:.1f}**" if best[m] == key else f"{100 * row[m]:.1f}" for _, m in _HEADLINE]
        lines.append(f"| {result.labels.get(key, key)} | " + " | ".join(cells) + f" | {100 * row['binary_share']:.0f}% |")
    return "\n".join(lines)


def learning_curve_table(result: ComparisonResult, method: str) -> str:
    """Per epoch of the F-CAM fit on ``method``: its loss terms and the test metrics, after its seed CAM."""
    fit = result.fits[method]
    seed_row = result.rows()[method]
    losses = [k for k in fit.curve.rows[0] if k not in ("epoch", "pxap", "maxboxacc", "maxboxaccv2", "binary_share")] if fit.curve.rows else []
    head = "| epoch | " + " | ".join(losses) + (" | " if losses else "") + "PxAP | MaxBoxAcc | MaxBoxAccV2 | near-binary |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    lines.append("| seed CAM | " + " | ".join("" for _ in losses) + (" | " if losses else "")
                 + " | ".join(f"{100 * seed_row[m]:.1f}" for _, m in _HEADLINE) + f" | {100 * seed_row['binary_share']:.0f}% |")
    for row in fit.curve.rows:
        lines.append(f"| {row['epoch']} | " + " | ".join(f"{row[k]:.4g}" for k in losses) + (" | " if losses else "")
                     + " | ".join(f"{100 * row[m]:.1f}" for _, m in _HEADLINE) + f" | {100 * row['binary_share']:.0f}% |")
    return "\n".join(lines)


def _findings(result: ComparisonResult, summary: dict[str, Any]) -> list[str]:
    rows, out = result.rows(), []
    if result.accuracy < _LOW_ACCURACY:
        out.append(f"The classifier reaches only {100 * result.accuracy:.1f}% test accuracy: its CAMs, and the F-CAM maps "
                   "trained on them, say little about the objects. Train longer (more epochs or images).")
    free_px = summary["best_training_free"]["pxap"]
    for key, gain in summary["gains"].items():
        seed = key[len("fcam_"):]
        curve = [r["pxap"] for r in result.fits[seed].curve.rows]
        out.append(
            f"{result.labels[key]}: PxAP {100 * rows[key]['pxap']:.1f}, {100 * gain['pxap']:+.1f} over its seed CAM and "
            f"{100 * gain['pxap_vs_free']:+.1f} over the best training-free map ({result.labels[free_px]}); "
            f"MaxBoxAccV2 {100 * gain['maxboxaccv2']:+.1f} over its seed CAM. PxAP per epoch: "
            + ", ".join(f"{100 * v:.1f}" for v in curve) + "."
        )
        stats = result.fits[seed].seeds
        out.append(f"Seed candidates of {result.labels[seed].split(',')[0]}: {100 * stats['fg_precision']:.0f}% of the "
                   f"foreground ones lie on the object, {100 * stats['bg_precision']:.0f}% of the background ones off it.")
    out.append(summary["verdict"])
    return out


def _setup(result: ComparisonResult) -> list[str]:
    s = result.settings
    grid = max(1, s.image_size // 32)
    return [
        f"Synthetic WSOL data (`fcam_plugin.data.SyntheticWSOL`, variant `{s.variant}`, seed {s.seed}): {s.train_images} "
        f"training and {s.test_images} test images of {s.image_size}x{s.image_size} px, {s.classes} classes, exact masks. "
        f"Classifier: torchvision ResNet-18 trained from random weights for {s.classifier_epochs} epochs (its layer4 CAM "
        f"is a {grid}x{grid} grid). F-CAM: {s.fit_images or s.train_images} training images x {s.fcam_epochs} epochs on "
        "the frozen classifier, library defaults" + (f" with {s.fcam_overrides}" if s.fcam_overrides else "") + ".",
        "",
        f"**Classifier test accuracy {100 * result.accuracy:.1f}%** (train {100 * result.train_accuracy:.1f}%, chance "
        f"{100 / s.classes:.0f}%).",
        "",
    ]


def _run_lines(result: ComparisonResult, total: dict[str, float]) -> list[str]:
    m = result.machine
    return [
        f"Device {result.settings.device}; {m['cpu']} ({m['cpus']} cores, {m['torch_threads']} torch threads), load "
        f"average {m['load_avg_1min']} at the start; torch {m['torch']}.",
        "",
        "| stage | wall s | CPU s |",
        "|---|---|---|",
        *[f"| {k} | {v['wall_s']:.1f} | {v['cpu_s']:.1f} |" for k, v in (result.timings | {"total": total}).items()],
    ]


def multi_object_section(result: ComparisonResult) -> list[str]:
    """Report lines: per-class PxAP and right-object rate on the multi-object images (none without them)."""
    if not result.multi:
        return []
    lines = [
        "## Several objects per image: one map per class", "",
        f"{result.settings.multi_images} test images with 2-3 objects of different classes "
        "(`fcam_plugin.data.MultiObjectWSOL`). For every class present, the map of that class is scored against "
        "that class's mask, the other objects counting as background (per-class PxAP), and it counts as right when "
        "it puts more mass per pixel on the requested object than on any other (right-object rate). Values x 100.", "",
        "| map | per-class PxAP | right-object rate |", "|---|---|---|",
    ]
    lines += [f"| {result.multi_labels[k]} | {100 * v.pxap:.1f} | {100 * v.right_object:.0f}% |" for k, v in result.multi.items()]
    return lines + [""]


def markdown_report(result: ComparisonResult, total: dict[str, float], mode: str, figures: dict[str, str]) -> str:
    """The demo's ``report.md``: setup, metric table, findings, learning curves, figures, run."""
    lines = ["# F-CAM demo report", "", *_setup(result)]
    if mode == "quick":
        lines += ["> **Quick run**: tiny sizes for a smoke test; the numbers are not meaningful. Run `fcam demo` "
                  "without `--quick` for the real comparison.", ""]
    lines += [
        "## Localization on the test split", "",
        "WSOL protocol (Choe et al., CVPR 2020; the wsolevaluation conventions): maps of the ground-truth class, "
        "values x 100, the best of each column in bold. PxAP: pixel average precision against the masks; MaxBoxAcc: box "
        "of the largest contour at IoU >= 0.5, best threshold; MaxBoxAccV2: all contours, mean over IoU 0.3/0.5/0.7. "
        "The last column is the share of pixels below 0.1 or above 0.9: near 100% means a near-binary map.", "",
        metric_table(result), "",
        "## What it means", "", *[f"* {line}" for line in _findings(result, summarize(result))], "",
    ]
    for key in result.fits:
        lines += [f"## Learning curve: {result.labels['fcam_' + key]}", "", learning_curve_table(result, key), ""]
    for name, caption in (
        ("comparison", "Test images (rows); each map overlaid in the jet colormap (colour bar: map value); the object outlined in white."),
        ("curve", "PxAP and MaxBoxAccV2 of F-CAM after every epoch, with the seed CAM and the best training-free map as lines."),
        ("epochs", "The F-CAM maps of the first test images after every epoch."),
        ("per_class", "Images with several objects (rows): for each class present, the wrapped CAM and the F-CAM map of "
                      "that class (class gate); that class's object outlined in white."),
    ):
        if name == "per_class":
            lines += multi_object_section(result)
        if name in figures:
            lines += [f"![{name}]({figures[name]})", "", f"Figure: {caption}", ""]
    lines += ["## Run", "", *_run_lines(result, total), ""]
    return "\n".join(lines)
