"""Run the compatibility matrix (CAM method x backbone) and publish it as docs/compatibility.md.

Every combination of ``tests/test_compat_matrix.py`` (methods introspected from the installed
pytorch-grad-cam and torchcam x 11 torchvision backbones, and three methods x models from timm,
the lukemelas EfficientNet packages and plain user-written modules, all with random weights) is
built, fitted for one step and called like the wrapped library; the outcome (pass / raises by
design / fail) and the seed-CAM time per image (``up.cams`` on a batch of 3, after the fit step)
are recorded. Models whose package is not installed are skipped. Sections of the page marked
``<!-- Written by hand ... -->`` are kept when it is rewritten.

Usage::

    python benchmarks/compat_matrix.py                      # everything (long on a CPU)
    python benchmarks/compat_matrix.py --subset fast        # the default test subset only
    python benchmarks/compat_matrix.py --models resnet18 swin_t --budget 3600

Results are cached in ``benchmarks/compat_matrix.json`` after each combination, so an interrupted
run resumes (``--fresh`` starts over); combinations not run are shown as "not run".
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_compat_matrix as matrix  # noqa: E402

CACHE = ROOT / "benchmarks" / "compat_matrix.json"
PAGE = ROOT / "docs" / "compatibility.md"


def is_fast(library: str, name: str, model_name: str) -> bool:
    return matrix.is_fast(library, name, model_name)


def installed(model_name: str) -> bool:
    """Whether the package a model needs is importable (torchvision and user models always are)."""
    package = matrix.MODELS[model_name].package
    return package is None or importlib.util.find_spec(package) is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", choices=["fast", "all"], default="all")
    parser.add_argument("--models", nargs="*", default=None, help="backbones to run (default: all)")
    parser.add_argument("--budget", type=float, default=None, help="stop starting new combinations after this many seconds")
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    parser.add_argument("--render-only", action="store_true", help="only rewrite the page from the cache")
    parser.add_argument("--retry-failed", action="store_true", help="run cached failures again")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    results: dict[str, dict] = {} if args.fresh or not CACHE.exists() else json.loads(CACHE.read_text())
    if args.retry_failed:
        results = {k: r for k, r in results.items() if r["status"] != "fail"}
    start = time.time()
    models = set(args.models or matrix.MODELS)
    if not args.render_only:
        # fast subset first, so that a time-limited run always covers it
        combos = [c for c in matrix.combinations() if c[2] in models]
        combos.sort(key=lambda c: not is_fast(*c))
        for library, name, model_name in combos:
            if args.subset == "fast" and not is_fast(library, name, model_name):
                continue
            key = f"{library}|{name}|{model_name}"
            if key in results:
                continue
            if not installed(model_name):
                print(f"{key}: skipped ({matrix.MODELS[model_name].package} is not installed)", flush=True)
                continue
            if args.budget is not None and time.time() - start > args.budget:
                print("budget spent; stopping", flush=True)
                break
            t0 = time.time()
            torch.manual_seed(0)
            try:
                outcome = matrix.run_combination(library, name, model_name, strict=False)
                record = {"status": outcome.status, "detail": outcome.detail, "seed_s": outcome.seed_seconds_per_image}
            except BaseException as error:  # noqa: BLE001 - a crash is a failure of that combination
                if isinstance(error, KeyboardInterrupt):
                    raise
                record = {"status": "fail", "detail": f"{type(error).__name__}: {error}"[:200], "seed_s": None}
            record["wall_s"] = round(time.time() - t0, 1)
            results[key] = record
            CACHE.write_text(json.dumps(results, indent=1, sort_keys=True))
            print(f"{key}: {record['status']} ({record['wall_s']} s) {record['detail'][:100]}", flush=True)
    kept = hand_written_sections(PAGE.read_text(encoding="utf-8")) if PAGE.exists() else []
    PAGE.write_text(render(results, kept), encoding="utf-8")
    print(f"wrote {PAGE}")


#: A section of the page whose body holds this comment was written by hand: regenerating keeps it.
HAND_WRITTEN_MARKER = "<!-- Written by hand"


def hand_written_sections(page: str) -> list[str]:
    """The ``## `` sections of ``page`` that carry :data:`HAND_WRITTEN_MARKER`, verbatim, in order."""
    sections: list[list[str]] = []
    for line in page.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    kept = ["\n".join(lines).rstrip() + "\n" for lines in sections if any(HAND_WRITTEN_MARKER in line for line in lines)]
    return kept


_SYMBOL = {"pass": "✅", "raises by design": "⛔", "fail": "❌"}


def _cell(record: dict | None) -> str:
    if record is None:
        return ""
    if record["status"] == "pass" and record.get("seed_s") is not None:
        return f"✅ {record['seed_s'] * 1000:.0f}"
    return _SYMBOL.get(record["status"], "?")


def _counts(results: dict[str, dict], keys: list[str]) -> dict[str, int]:
    counts = {"pass": 0, "raises by design": 0, "fail": 0}
    for key in keys:
        if key in results:
            status = results[key]["status"]
            counts[status] = counts.get(status, 0) + 1
    return counts


def _default_layers(model_name: str) -> tuple[str, str]:
    """(skip taps, default CAM target) that ``FCAMUpscaler(model, method)`` picks, for the page."""
    try:
        taps = matrix.model_taps(model_name)
    except Exception as error:  # noqa: BLE001 - shown on the page
        return f"{type(error).__name__}", ""
    return ", ".join(f"`{t.name}`@{t.stride}" for t in taps), f"`{taps[-1].name}`"


def render(results: dict[str, dict], kept: list[str] = ()) -> str:
    torchvision_models = [spec.name for spec in matrix.TORCHVISION_MODELS]
    combos = matrix.combinations()
    keys = [f"{lib}|{name}|{model}" for lib, name, model in combos]
    run = [k for k in keys if k in results]
    counts = _counts(results, keys)
    tv_keys = [k for k in keys if k.split("|")[2] in torchvision_models]
    other_keys = [k for k in keys if k not in tv_keys]
    tv_counts, other_counts = _counts(results, tv_keys), _counts(results, other_keys)
    other_models = [spec for spec in matrix.OTHER_MODELS]
    passing_plain = [
        spec.name for spec in other_models
        if not spec.layers and all(results.get(f"{lib}|{name}|{spec.name}", {}).get("status") == "pass"
                                   for lib, name in matrix.OTHER_METHODS)
    ]
    lines = [
        "# Compatibility matrix",
        "",
        "Generated by `python benchmarks/compat_matrix.py` (do not edit by hand, except the sections marked as",
        "written by hand, which the script keeps). Every CAM class exported by the installed pytorch-grad-cam",
        "and torchcam (found by introspection) is paired with common torchvision backbones, and three common",
        "methods with models from other sources (all with random weights, 5 classes): `FCAMUpscaler` is built,",
        "fitted for one step (`FCAMConfig(decoder_channels=(32, 16, 16, 8, 8))`, batch of 3) and called like the",
        "wrapped library with batch sizes 1 and 3, `targets=None` and explicit targets; return type, dtype,",
        "shape (= input size), value range [0, 1] and the untouched model (weights, `requires_grad`, modes,",
        "`.grad`, hooks) are checked. The same checks run in `tests/test_compat_matrix.py`.",
        "",
        f"Environment of this run: Python {platform.python_version()}, torch {torch.__version__}, "
        f"{_versions()}, CPU ({os.cpu_count()} cores, shared).",
        "",
        f"**{len(run)} of {len(keys)} combinations run**: {counts['pass']} pass ✅, "
        f"{counts['raises by design']} raise a clear error by design ⛔, {counts['fail']} fail ❌; "
        "blank cells were not run (time budget; run the script to fill them).",
        "",
        f"- torchvision: {tv_counts['pass']} pass, {tv_counts['raises by design']} raise by design, "
        f"{tv_counts['fail']} fail, of {len(tv_keys)};",
        f"- [beyond torchvision](#beyond-torchvision): {other_counts['pass']} pass, "
        f"{other_counts['raises by design']} raise by design, {other_counts['fail']} fail, of {len(other_keys)}; "
        f"**{len(passing_plain)} non-torchvision architectures pass every method with `FCAMUpscaler(model, method)` "
        "and no layer arguments**.",
        "",
        "Cells show the seed-CAM time per image in milliseconds (the wrapped method computing the CAM of",
        "the ground-truth class during `fit`, CPU, load-dependent: compare within a column only).",
        "Inputs: 64 px, except inception_v3 (299 px) and vit_b_16 (224 px). Perturbation methods",
        "(ScoreCAM, SSCAM, ISCAM, AblationCAM) use the stride-8 stage as target layer and reduced",
        "sample counts to keep the CPU run short; vit_b_16 / swin_t use grad-cam style",
        "`reshape_transform`s (see [transformers](transformers.md)).",
        "",
        "## torchvision",
        "",
        "| library | method | " + " | ".join(torchvision_models) + " |",
        "|---|---|" + "---|" * len(torchvision_models),
    ]
    for library, name in matrix.METHODS:
        cells = [_cell(results.get(f"{library}|{name}|{model_name}")) for model_name in torchvision_models]
        lines.append(f"| {library} | {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Beyond torchvision",
        "",
        "Models as users bring them: [timm](https://github.com/huggingface/pytorch-image-models)",
        "(`timm.create_model(name, pretrained=False)`), the lukemelas-style EfficientNets of",
        "`efficientnet-pytorch` 0.7.1 and `efficientnet-lite-pytorch` (`EfficientNet.from_name`), and plain",
        "modules written in `tests/test_compat_matrix.py`: an `nn.Sequential`, nested `nn.Sequential` stages,",
        "a `forward` with functional `F.relu` and a global **max**-pool head, one `self.relu` module shared by",
        "every block (the layout of the lukemelas EfficientNets), an `AdaptiveMaxPool2d` head and a",
        "**convolutional** head (a 1x1 convolution to class maps, averaged). Install the third-party ones with",
        "`pip install \"fcam-plugin[models]\"`; without them these rows of the test skip.",
        "",
        "The constructor gets no layer arguments (except where the *needs* column says otherwise, as",
        "grad-cam itself needs for transformers): the skip taps and the CAM's target layer (the deepest tap)",
        "are found by probing, never a module that runs more than once per forward pass.",
        "",
        "| model | source | input | " + " | ".join(f"{lib} {name}" for lib, name in matrix.OTHER_METHODS)
        + " | skip taps found | default CAM target | needs |",
        "|---|---|---|" + "---|" * len(matrix.OTHER_METHODS) + "---|---|---|",
    ]
    for spec in other_models:
        cells = [_cell(results.get(f"{lib}|{name}|{spec.name}")) for lib, name in matrix.OTHER_METHODS]
        if not installed(spec.name):
            taps, target = f"({spec.package} not installed)", ""
        else:
            taps, target = _default_layers(spec.name)
            if spec.layers:
                target = "(given)"
        lines.append(
            f"| {spec.name.split('/', 1)[-1]} | {spec.source} | {spec.size} px | " + " | ".join(cells)
            + f" | {taps} | {target} | {spec.layers or 'nothing'} |"
        )
    notes = [(k, results[k]) for k in sorted(run) if results[k]["status"] != "pass"]
    if notes:
        lines += ["", "## Errors", "", "| combination | outcome | message |", "|---|---|---|"]
        for key, record in notes:
            message = record["detail"].replace("|", "\\|").replace("\n", " ")[:220]
            lines.append(f"| {key.replace('|', ' / ')} | {record['status']} | {message} |")
    lines += [
        "",
        "## Why some combinations raise by design",
        "",
        "- **torchcam LeGrad** explains attention: it needs transformer blocks with a",
        "  `self_attention: nn.MultiheadAttention` child (torchvision's ViT). On CNNs and Swin the",
        "  upscaler raises `ValueError` naming the layers it got.",
        "- **torchcam CAM** weights the target layer with the classifier's single `nn.Linear`; models",
        "  with several linear layers (VGG, MobileNetV3, transformers) make torchcam raise `ValueError`",
        "  (pass `fc_layer=` to choose one).",
        "- **A layer that runs more than once per forward pass** (one activation module shared by the stem",
        "  and the head, as `_swish` in the lukemelas EfficientNets) is never picked automatically; given",
        "  as `target_layers` or `skip_layers` it raises `ValueError` naming it, the shapes of its calls and",
        "  the layers that run once next to it: a hook cannot tell its calls apart.",
        "",
    ]
    return "\n".join(lines) + "".join("\n" + section for section in kept)


def _versions() -> str:
    import importlib.metadata as md

    out = []
    for dist in ("torchvision", "grad-cam", "torchcam", "timm", "efficientnet-pytorch", "efficientnet-lite-pytorch"):
        try:
            out.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return ", ".join(out)


if __name__ == "__main__":
    main()
