"""Class-conditional maps: the class gate on images with 2-3 objects, and its cost on single objects.

For every test image of ``MultiObjectWSOL`` and every class present, the map of that class is
scored against that class's mask, the other objects counting as background: per-class PxAP
(pooled over all (image, class) pairs) and the right-object rate (more map mass on the requested
object than on any other object of the image). The same fits are also scored on the variant's
single-object test split (PxAP, MaxBoxAccV2, wsolevaluation protocol, ground-truth class).

Compared: the wrapped GradCAM++ (bilinear, what the library returns), RefineCAM (GradCAM++ layers
2-4), F-CAM without the class gate (``cam_gate=False``: one map for every class) and F-CAM with
the gate at each ``--dilations`` value (``gate_dilation``; the default is 0.25), all from the same
fit. Medians over ``--fit-seeds``.

The classifier and the F-CAM fit use the single-object training set of the variant (as
``fcam demo``); only the multi-object test images hold several objects.

Example::

    python benchmarks/multi_object.py --variants parts textures --fit-seeds 0 1 2 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import pytorch_grad_cam
import torch

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.data import VARIANTS, MultiObjectWSOL
from fcam_plugin.demo import preset
from fcam_plugin.demo.classifier import classifier_for
from fcam_plugin.demo.data import AugmentedLoader, Split, render_split
from fcam_plugin.demo.evaluation import evaluate_maps
from fcam_plugin.demo.multi_object import score_per_class
from fcam_plugin.demo.rivals import LibraryCAM, protocol_maps
from fcam_plugin.demo.settings import RIVALS, DemoSettings

#: (images (B, 3, H, W), classes (B,)) -> maps (B, H, W) in [0, 1].
MapsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--test-images", type=int, default=96, help="multi-object test images")
    p.add_argument("--fit-images", type=int, default=512)
    p.add_argument("--train-images", type=int, default=1024, help="classifier training images")
    p.add_argument("--classifier-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="data and classifier seed (a new seed: independent data)")
    p.add_argument("--fit-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--dilations", type=float, nargs="+", default=[0.0, 0.25], help="gate_dilation values scored")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--classifier-cache", default=os.path.expanduser("~/.cache/fcam-plugin"))
    return p.parse_args(argv)


def score_both(fn: MapsFn, multi: MultiObjectWSOL, single: Split, batch_size: int) -> dict[str, float]:
    """Per-class scores on the multi-object images, and PxAP / MaxBoxAccV2 on the single-object split."""
    row = evaluate_maps(lambda x, y: protocol_maps(fn(x, y)), single, batch_size, torch.device("cpu"), 1).row()
    return score_per_class(fn, multi, torch.device("cpu")).row() | {"single_pxap": row["pxap"], "single_v2": row["maxboxaccv2"]}


def _gated(up: FCAMUpscaler, dilation: float | None) -> MapsFn:
    """F-CAM maps with the gate at ``dilation`` (None: no gate)."""

    def fn(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        with up.config.overridden(cam_gate=dilation is not None, gate_dilation=dilation or 0.0):
            return up.maps(images, classes)

    return fn


def _fcam_rows(model: torch.nn.Module, s: DemoSettings, train: Split, evaluate: Callable[[MapsFn], dict],
               seed: int, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """One F-CAM fit (defaults, fit seed ``seed``) scored without the gate and with each dilation."""
    up = FCAMUpscaler(model, pytorch_grad_cam.GradCAMPlusPlus, config=FCAMConfig())
    loader = AugmentedLoader(train.images[: args.fit_images], train.labels[: args.fit_images], s.batch_size, seed + 2)
    up.fit(loader, epochs=args.epochs, seed=seed, progress=False)
    rows = {"F-CAM, no gate (cam_gate=False)": evaluate(_gated(up, None))}
    for dilation in args.dilations:
        rows[f"F-CAM, gate_dilation={dilation:g}"] = evaluate(_gated(up, dilation))
    up.close()
    return rows


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    s = preset("full", variant=variant, image_size=args.image_size, seed=args.seed, progress=False,
               train_images=args.train_images, classifier_epochs=args.classifier_epochs,
               classifier_cache=args.classifier_cache)
    train, single = render_split(s, "train", s.train_images), render_split(s, "test", s.test_images)
    model, _ = classifier_for(train, s, torch.device("cpu"))
    multi = MultiObjectWSOL(args.test_images, args.image_size, max(s.classes, 3), seed=s.seed, split="test", variant=variant)

    def evaluate(fn: MapsFn) -> dict[str, float]:
        return score_both(fn, multi, single, s.batch_size)

    probe = FCAMUpscaler(model, pytorch_grad_cam.GradCAMPlusPlus)
    _, library, name, layers = RIVALS["refinecam"]
    refinecam = LibraryCAM(model, library, name, layers, args.image_size)
    try:
        rows = {"GradCAM++ (bilinear)": evaluate(probe.cams), "RefineCAM layers 2-4": evaluate(refinecam)}
    finally:
        probe.close()
        refinecam.close()
    fits = [_fcam_rows(model, s, train, evaluate, seed, args) for seed in args.fit_seeds]
    for name in fits[0]:
        rows[name] = {key: statistics.median(fit[name][key] for fit in fits) for key in fits[0][name]}
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}", flush=True)
    start, results = time.perf_counter(), {}
    for variant in args.variants:
        results[variant] = run_variant(variant, args)
        print(variant, {k: {m: round(100 * v, 1) for m, v in r.items()} for k, r in results[variant].items()}, flush=True)
    methods = list(next(iter(results.values())))
    print("per-class PxAP / right-object rate (multi-object) · PxAP / MaxBoxAccV2 (single object), "
          f"medians over fit seeds {args.fit_seeds}")
    print("| map | " + " | ".join(results) + " |\n|---|" + "---|" * len(results))
    for method in methods:
        cells = [f"{100 * r[method]['pxap']:.1f} / {100 * r[method]['right_object']:.0f}% · "
                 f"{100 * r[method]['single_pxap']:.1f} / {100 * r[method]['single_v2']:.1f}" for r in results.values()]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"{time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
