"""Quality benchmark: F-CAM against its seed CAM and training-free rivals, on several synthetic variants.

Runs :func:`fcam_plugin.demo.run_comparison` (the comparison behind ``fcam demo``) once per
variant, with the test split scored after every F-CAM epoch, and writes one table per variant
plus a summary across variants to the "Quality" section of ``benchmarks/README.md`` (only that
section is replaced). Each variant's report, metrics and figures go to ``--out/<variant>/``.

Trained classifiers are kept in ``--classifier-cache`` (default ``~/.cache/fcam-plugin``): a
second run with the same settings skips classifier training (the slow part on a CPU).

Examples::

    python benchmarks/quality.py                         # 224 px, all variants (CPU: hours; CUDA: minutes)
    python benchmarks/quality.py --variants parts shapes --fcam-epochs 2
    python benchmarks/quality.py --preset full --set crf_weight=0 --no-readme   # an ablation at 64 px
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
import time
from typing import Any

import torch

from fcam_plugin.data import VARIANTS
from fcam_plugin.demo import PRESETS, RIVALS, SEED_METHODS, preset, run_comparison
from fcam_plugin.demo.report import learning_curve_table, metric_table, summarize
from fcam_plugin.demo.run import write_outputs
from fcam_plugin.demo.run_info import machine_info

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
SECTION = "## Quality"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="224", choices=sorted(PRESETS), help="sizes of the run (the fields below override them)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    for name in ("train_images", "test_images", "fit_images", "image_size", "classifier_epochs", "fcam_epochs", "batch_size"):
        p.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the preset's {name}")
    p.add_argument("--seed-methods", nargs="+", default=["gradcampp"], choices=sorted(SEED_METHODS))
    p.add_argument("--rivals", nargs="+", default=list(RIVALS), choices=list(RIVALS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="FCAMConfig override for the F-CAM fits (repeatable), e.g. crf_weight=0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--classifier-cache", default=os.path.expanduser("~/.cache/fcam-plugin"))
    p.add_argument("--out", default="runs/quality", help="folder of the per-variant reports")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--no-readme", action="store_true", help="print the tables only; leave README.md alone")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def _overrides(items: list[str]) -> dict[str, Any]:
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


def _settings(args: argparse.Namespace, variant: str) -> Any:
    changes = {
        name: getattr(args, name)
        for name in ("train_images", "test_images", "fit_images", "image_size", "classifier_epochs", "fcam_epochs", "batch_size")
        if getattr(args, name) is not None
    }
    return preset(
        args.preset, variant=variant, seed_methods=tuple(args.seed_methods), rivals=tuple(args.rivals),
        fcam_overrides=_overrides(args.set), seed=args.seed, device=args.device, progress=not args.quiet,
        classifier_cache=args.classifier_cache, **changes,
    )


def summary_table(results: dict[str, Any]) -> str:
    """One row per variant and F-CAM fit: F-CAM vs its seed CAM and the best training-free map."""
    lines = [
        "| variant | classifier acc. | F-CAM on | PxAP: seed CAM / best free / **F-CAM** | MaxBoxAccV2: seed / best free / **F-CAM** | PxAP per epoch |",
        "|---|---|---|---|---|---|",
    ]
    for variant, result in results.items():
        rows, summary = result.rows(), summarize(result)
        free_px, free_v2 = summary["best_training_free"]["pxap"], summary["best_training_free"]["maxboxaccv2"]
        for method, fit in result.fits.items():
            fcam = rows[f"fcam_{method}"]
            lines.append(
                f"| {variant} | {100 * result.accuracy:.1f}% | {SEED_METHODS[method][0]} | "
                f"{100 * rows[method]['pxap']:.1f} / {100 * rows[free_px]['pxap']:.1f} / **{100 * fcam['pxap']:.1f}** | "
                f"{100 * rows[method]['maxboxaccv2']:.1f} / {100 * rows[free_v2]['maxboxaccv2']:.1f} / **{100 * fcam['maxboxaccv2']:.1f}** | "
                + ", ".join(f"{100 * r['pxap']:.1f}" for r in fit.curve.rows) + " |"
            )
    return "\n".join(lines)


def section(results: dict[str, Any], wall_s: float, command: str) -> str:
    """The README "Quality" section for one run over several variants."""
    first = next(iter(results.values()))
    s, m = first.settings, machine_info()
    lines = [
        SECTION, "",
        f"`{command}` — the comparison of `fcam demo` (`fcam_plugin/demo/`) on {len(results)} synthetic variants "
        f"(`fcam_plugin.data.VARIANTS`), {s.image_size} px, {s.train_images} train / {s.test_images} test images, "
        f"ResNet-18 from random weights ({s.classifier_epochs} epochs), F-CAM {s.fit_images or s.train_images} images x "
        f"{s.fcam_epochs} epochs, library defaults" + (f" with {s.fcam_overrides}" if s.fcam_overrides else "")
        + ". WSOL protocol, ground-truth class, values x 100; best free = the best training-free map of the variant "
        "(RefineCAM, LayerCAM, guided filter).", "",
        summary_table(results), "",
    ]
    for variant, result in results.items():
        lines += [f"### Variant `{variant}`", "", metric_table(result), ""]
        for method in result.fits:
            lines += [learning_curve_table(result, method), ""]
    lines += [
        f"Machine: {m['cpu']}, {m['cpus']} CPUs, {m['cuda'] or 'no GPU'}, torch {m['torch']} ({s.device}), "
        f"{m['torch_threads']} threads, load average {m['load_avg_1min']} at the end. Run time {wall_s / 60:.1f} min.", "",
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
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = {}
    for variant in args.variants:
        t0, c0 = time.perf_counter(), time.process_time()
        results[variant] = run_comparison(_settings(args, variant))
        total = {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(time.process_time() - c0, 2)}
        write_outputs(results[variant], os.path.join(args.out, variant), "custom", total)
        print(summary_table({variant: results[variant]}), flush=True)
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = section(results, time.perf_counter() - start, command.strip())
    print(text)
    if not args.no_readme:
        with open(README) as fh:
            old = fh.read()
        with open(README, "w") as fh:
            fh.write(replace_section(old, text))
        print(f"updated the Quality section of {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
