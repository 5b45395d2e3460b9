"""Quality benchmark: F-CAM against the bilinear CAM and training-free refinements (PxAP, MaxBoxAcc).

Runs :func:`fcam_plugin.compare.run_comparison` (the comparison behind ``fcam demo``) at a
configurable size and writes its table, with the machine and the run time, to the "Quality"
section of ``benchmarks/README.md`` (only that section is replaced; the others are kept).

Examples::

    python benchmarks/quality.py                                 # the default size (~10 min, 2 CPU cores)
    python benchmarks/quality.py --train-images 2048 --fcam-epochs 10 --seed-methods gradcampp layercam
    python benchmarks/quality.py --set crf_weight=0 --no-readme   # an ablation, printed only
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import sys
import time

import torch

from fcam_plugin.compare import BASELINES, SEED_METHODS, CompareSettings, markdown_table, run_comparison, summarize

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
SECTION = "## Quality"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = CompareSettings()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--train-images", type=int, default=d.train_images)
    p.add_argument("--test-images", type=int, default=d.test_images)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--num-classes", type=int, default=d.num_classes)
    p.add_argument("--classifier-epochs", type=int, default=d.classifier_epochs)
    p.add_argument("--fcam-epochs", type=int, default=d.fcam_epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--classifier-stride", type=int, default=d.classifier_stride, choices=(16, 32),
                   help="16: ResNet-18 with layer4 stride 1, the WSOL variant (CAM grid image_size/16)")
    p.add_argument("--seed-methods", nargs="+", default=["gradcampp", "layercam"], choices=sorted(SEED_METHODS))
    p.add_argument("--baselines", nargs="+", default=list(BASELINES), choices=list(BASELINES))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="FCAMConfig override for the F-CAM fits (repeatable), e.g. crf_weight=0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--classifier", metavar="PATH",
                   help="state_dict of a ResNet-18 already trained on this synthetic set (skips classifier training)")
    p.add_argument("--save-classifier", metavar="PATH", help="write the trained classifier's state_dict here")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--json", metavar="PATH", help="also write the full result as JSON")
    p.add_argument("--no-readme", action="store_true", help="print the table only; leave README.md alone")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            out[key.strip()] = text.strip()
    return out


def section(result, wall_s: float, command: str) -> str:
    """The README "Quality" section for one result."""
    s, m = result.settings, result.machine
    summary = summarize(result)
    lines = [
        SECTION,
        "",
        f"`{command}` — the comparison of `fcam demo` (`fcam_plugin/compare.py`). Synthetic WSOL "
        f"(`SyntheticWSOL`, seed {s.seed}): {s.train_images} train / {s.test_images} test images, "
        f"{s.image_size} px, {s.num_classes} classes; ResNet-18 from random weights, {s.classifier_epochs} epochs "
        f"(stride {s.classifier_stride}, CAM grid {s.image_size // s.classifier_stride}x{s.image_size // s.classifier_stride}); F-CAM {s.fcam_epochs} epochs per seed method"
        + (f", overrides {s.fcam_overrides}" if s.fcam_overrides else "") + ". Metrics on the test split, "
        "ground-truth class, values x 100; Δ = difference with bilinear GradCAM++.",
        "",
        f"Classifier test accuracy **{100 * result.accuracy:.1f}%** (train {100 * result.train_accuracy:.1f}%).",
        "",
        markdown_table(result),
        "",
        *[f"* {line}" for line in summary["findings"]],
        "",
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, torch {m['torch']} ({s.device}), load average "
        f"{m['load_avg_1min']} at the start (shared machine: times are noisy). Run time {wall_s / 60:.1f} min "
        "(" + ", ".join(f"{k} {v['wall_s']:.0f} s" for k, v in result.timings.items()) + ").",
        "",
    ]
    return "\n".join(lines)


def replace_section(text: str, new_section: str) -> str:
    """Replace the "## Quality" section of a README (up to the next "## " heading), or append it."""
    pattern = re.compile(rf"^{re.escape(SECTION)}\s*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: new_section.rstrip("\n") + "\n\n", text, count=1).rstrip("\n") + "\n"
    return text.rstrip("\n") + "\n\n" + new_section.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = CompareSettings(
        train_images=args.train_images, test_images=args.test_images, image_size=args.image_size,
        num_classes=args.num_classes, classifier_epochs=args.classifier_epochs, fcam_epochs=args.fcam_epochs,
        batch_size=args.batch_size, classifier_stride=args.classifier_stride, seed_methods=tuple(args.seed_methods), baselines=tuple(args.baselines),
        fcam_overrides=_overrides(args.set), seed=args.seed, device=args.device, progress=not args.quiet,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    model = None
    if args.classifier:
        from fcam_plugin.compare import build_classifier

        model = build_classifier(args.num_classes, args.classifier_stride)
        model.load_state_dict(torch.load(args.classifier, map_location="cpu", weights_only=True))
        model = model.to(args.device)
    start = time.perf_counter()
    result = run_comparison(settings, model=model)
    if args.save_classifier:
        torch.save(result.model.state_dict(), args.save_classifier)
    wall = time.perf_counter() - start
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = section(result, wall, command.strip())
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.to_dict() | {"summary": summarize(result), "wall_s": wall}, fh, indent=2, default=float)
    if not args.no_readme:
        with open(README) as fh:
            old = fh.read()
        with open(README, "w") as fh:
            fh.write(replace_section(old, text))
        print(f"updated the Quality section of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
