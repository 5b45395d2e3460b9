"""Ablation of the F-CAM recipe: several config overrides, several synthetic variants, one table.

For each variant the data, the classifier (cached, see ``fcam demo``) and the training-free
baselines are computed once; then every ``--config`` is fitted with the same loader and seed, and
the test split is scored after every epoch. A change is worth keeping only when it wins on every
variant. The last table printed is what goes in the ablation section of ``benchmarks/README.md``.

Examples::

    python benchmarks/ablation.py --image-size 64 --config paper: --config stages:seed_layers=stages
    python benchmarks/ablation.py --variants parts small --config "prior:seed_layers=stages,cam_weight=0.2"
    python benchmarks/ablation.py --variants parts --config exact: --seeds-from masks   # seeds from the true masks
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import statistics
import time
from typing import Any

import torch

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.data import VARIANTS
from fcam_plugin.demo import preset
from fcam_plugin.demo.classifier import accuracy, classifier_for
from fcam_plugin.demo.data import AugmentedLoader, batches, render_split
from fcam_plugin.demo.evaluation import LearningCurve, evaluate_maps, seed_precision
from fcam_plugin.demo.pipeline import _fcam_maps, _method_class, _protocol_cam_maps
from fcam_plugin.demo.rivals import LibraryCAM
from fcam_plugin.demo.run_info import machine_info
from fcam_plugin.demo.settings import RIVALS
from fcam_plugin.objective import Objective

BASELINES = ("layercam_l234", "refinecam")


def parse_config(text: str) -> tuple[str, dict[str, Any]]:
    """``"name:key=value,key=value"`` -> ``(name, {key: value})`` (values as Python literals)."""
    name, _, body = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    FCAMConfig(**overrides)  # fail now on an unknown or invalid field
    return name, overrides


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--config", action="append", type=parse_config, required=True, metavar="NAME:KEY=VALUE,...")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--train-images", type=int, default=1024)
    p.add_argument("--test-images", type=int, default=160)
    p.add_argument("--fit-images", type=int, default=None, help="images of each F-CAM fit (default: all)")
    p.add_argument("--classifier-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3, help="F-CAM epochs")
    p.add_argument("--method", default="gradcampp", help="wrapped method (a key of fcam_plugin.demo.SEED_METHODS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-seeds", type=int, nargs="+", default=[0], help="fit seeds (one fit per config and seed)")
    p.add_argument("--val-images", type=int, default=0,
                   help="annotated validation images for epoch selection (fit(val_loader=...)); 0: none")
    p.add_argument("--gate-both", action="store_true",
                   help="also score every fit with the class gate switched (config name + '/gate' or '/no-gate')")
    p.add_argument("--seeds-from", choices=("cam", "masks"), default="cam",
                   help="draw the fits' seeds from the seed CAM (the method) or from the true masks (an upper bound)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write every result here (updated after each fit)")
    p.add_argument("--classifier-cache", default=os.path.expanduser("~/.cache/fcam-plugin"))
    return p.parse_args(argv)


class MaskSeedLoader(AugmentedLoader):
    """A fit loader that augments each batch's true masks with its images and leaves them in ``pending``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, batch_size: int, seed: int) -> None:
        # the masks ride along as a 4th channel, so the flips and shifts of the batch apply to them alike
        super().__init__(torch.cat([images, masks.float().reshape(len(images), 1, *images.shape[-2:])], 1),
                         labels, batch_size, seed)
        self.pending: torch.Tensor | None = None

    def __iter__(self) -> Any:
        for both, labels in super().__iter__():
            self.pending = both[:, 3:]
            yield both[:, :3].contiguous(), labels


class MaskSeedObjective(Objective):
    """The library's objective with the seed CAM of each training batch replaced by its true masks."""

    loader: MaskSeedLoader | None = None

    def training_cams(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cams = super().training_cams(images, labels)  # still runs the model: the skip features come from this pass
        if self.loader is None or self.loader.pending is None:
            return cams
        mask, self.loader.pending = self.loader.pending, None
        return mask.to(cams) if mask.shape[0] == images.shape[0] else cams


class MaskSeededUpscaler(FCAMUpscaler):
    """``--seeds-from masks``: an upscaler whose fits draw their seeds from ``loader``'s true masks."""

    loader: MaskSeedLoader | None = None

    def objective(self) -> Objective:
        objective = MaskSeedObjective(self.config, self.source, self.seed_stage_layers(), self.cam_offsets)
        objective.loader = self.loader
        return objective


def _baselines(settings: Any, model: torch.nn.Module, test: Any, device: torch.device) -> dict[str, dict[str, float]]:
    up = FCAMUpscaler(model, _method_class(settings.seed_methods[0]))
    rows = {"seed_cam": evaluate_maps(_protocol_cam_maps(up), test, settings.batch_size, device).row()}
    up.close()
    for key in BASELINES:
        _, library, name, layers = RIVALS[key]
        rival = LibraryCAM(model, library, name, layers, settings.image_size)
        try:
            rows[key] = evaluate_maps(rival, test, settings.batch_size, device).row()
        finally:
            rival.close()
    return rows


def _toggled_gate_maps(up: FCAMUpscaler, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The F-CAM maps with the class gate switched the other way for this call."""
    with up.config.overridden(cam_gate=not up.config.gates(classes_named=True)):
        return _fcam_maps(up, images, labels)


def _fit(
    settings: Any, model: torch.nn.Module, train: Any, test: Any, overrides: dict, seed: int, gate_both: bool,
    val: Any = None, seeds_from: str = "cam",
) -> dict[str, Any]:
    device = torch.device(settings.device)
    upscaler = MaskSeededUpscaler if seeds_from == "masks" else FCAMUpscaler
    up = upscaler(model, _method_class(settings.seed_methods[0]), config=FCAMConfig(**overrides))
    seeds = seed_precision(up.objective(), test, settings.batch_size, device)
    curves = [LearningCurve(test, settings.batch_size, device, keep=1, maps=_fcam_maps)]
    if gate_both:
        curves.append(LearningCurve(test, settings.batch_size, device, keep=1, maps=_toggled_gate_maps))
    count = settings.fit_images or len(train)
    images, labels = train.images[:count], train.labels[:count]
    if isinstance(up, MaskSeededUpscaler):
        up.loader = loader = MaskSeedLoader(images, labels, train.masks[:count], settings.batch_size, seed + 2)
    else:
        loader = AugmentedLoader(images, labels, settings.batch_size, seed + 2)
    start = time.perf_counter()
    val_loader = None if val is None else [(val.images[i], val.labels[i], val.masks[i]) for i in batches(len(val), 32)]
    up.fit(loader, epochs=settings.fcam_epochs, seed=seed, progress=False, val_loader=val_loader,
           on_epoch_end=lambda epoch, fitted: [curve(epoch, fitted) for curve in curves])
    selected = evaluate_maps(lambda x, y: _fcam_maps(up, x, y), test, settings.batch_size, device, 1).row()
    up.close()
    return {"seeds": seeds, "curves": [c.rows for c in curves], "fit_s": round(time.perf_counter() - start, 1),
            "selected": selected | {"epoch": up.best_epoch}}


def _median_curve(curves: list[list[dict[str, float]]], key: str) -> list[float]:
    """Per epoch, the median of ``key`` over the fits (one curve per fit seed)."""
    return [statistics.median(row[key] for row in rows) for rows in zip(*curves)]


def _cell(result: dict[str, Any], base: dict[str, dict[str, float]]) -> str:
    """Median over fit seeds of the last epoch: PxAP (Δ seed CAM / Δ best free), MaxBoxAccV2, lowest PxAP of any epoch."""
    pxap, v2 = _median_curve(result["curves"], "pxap"), _median_curve(result["curves"], "maxboxaccv2")
    best_free = max(base[k]["pxap"] for k in BASELINES)
    text = (f"{100 * pxap[-1]:.1f} ({100 * (pxap[-1] - base['seed_cam']['pxap']):+.1f} / "
            f"{100 * (pxap[-1] - best_free):+.1f}), V2 {100 * v2[-1]:.1f}, min {100 * min(pxap):.1f}")
    selected = [row for row in result.get("selected", []) if row.get("epoch")]
    if selected:
        text += (f"; val-selected {100 * statistics.median(r['pxap'] for r in selected):.1f}, "
                 f"V2 {100 * statistics.median(r['maxboxaccv2'] for r in selected):.1f}")
    return text


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per config, one column per variant (see :func:`_cell`; medians over fit seeds)."""
    variants = list(results)
    lines = ["| config | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    lines.append("| seed CAM / best free (PxAP, V2) | " + " | ".join(
        f"{100 * r['baselines']['seed_cam']['pxap']:.1f} / {100 * max(r['baselines'][k]['pxap'] for k in BASELINES):.1f}, "
        f"V2 {100 * r['baselines']['seed_cam']['maxboxaccv2']:.1f} / "
        f"{100 * max(r['baselines'][k]['maxboxaccv2'] for k in BASELINES):.1f}" for r in results.values()) + " |")
    names = list(next(iter(results.values()))["configs"])
    for name in names:
        cells = [_cell(results[v]["configs"][name], results[v]["baselines"]) if name in results[v]["configs"] else "" for v in variants]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine_info()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}, {info['cpu']}", flush=True)
    results: dict[str, Any] = {}
    for variant in args.variants:
        s = preset(
            "full", variant=variant, image_size=args.image_size, train_images=args.train_images,
            test_images=args.test_images, fit_images=args.fit_images, classifier_epochs=args.classifier_epochs,
            fcam_epochs=args.epochs, seed_methods=(args.method,), seed=args.seed, progress=False,
            classifier_cache=args.classifier_cache,
        )
        device = torch.device(s.device)
        train, test = render_split(s, "train", s.train_images), render_split(s, "test", s.test_images)
        val = render_split(s, "val", args.val_images) if args.val_images else None
        model, _ = classifier_for(train, s, device)
        acc, _ = accuracy(model, test, s.batch_size, device)
        entry = results[variant] = {"accuracy": acc, "baselines": _baselines(s, model, test, device), "configs": {}}
        print(f"{variant}: accuracy {100 * acc:.1f}%, baselines {json.dumps(entry['baselines'])}", flush=True)
        for name, overrides in args.config:
            fits = [_fit(s, model, train, test, overrides, seed, args.gate_both, val, args.seeds_from) for seed in args.fit_seeds]
            toggled = name + ("/no-gate" if FCAMConfig(**overrides).gates(classes_named=True) else "/gate")
            for index, key in enumerate([name, toggled][: len(fits[0]["curves"])]):
                entry["configs"][key] = {"overrides": overrides, "curves": [f["curves"][index] for f in fits],
                                         "seeds": fits[0]["seeds"], "fit_s": fits[0]["fit_s"],
                                         "selected": [f["selected"] for f in fits]}
                curve = " ".join(f"{100 * r['pxap']:.1f}/{100 * r['maxboxaccv2']:.1f}" for r in fits[0]["curves"][index])
                print(f"  {key}: PxAP/V2 per epoch {curve}; seeds fg {100 * fits[0]['seeds']['fg_precision']:.0f}% "
                      f"bg {100 * fits[0]['seeds']['bg_precision']:.0f}%; {fits[0]['fit_s']} s", flush=True)
            if args.json:
                with open(args.json, "w") as fh:
                    json.dump({"args": vars(args) | {"config": args.config}, "machine": info, "results": results}, fh, indent=1)
    print(table(results))
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
