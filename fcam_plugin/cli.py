"""The ``fcam`` command line: ``demo``, ``fit``, ``explain`` and ``eval``.

This module only orchestrates: it builds the classifier, the data loaders and an
:class:`~fcam_plugin.FCAMUpscaler` from command-line flags and calls the library. Run
``fcam --help`` or ``fcam <command> --help`` for the flags; ``python -m fcam_plugin`` works too.

Exit status: 0 on success, 2 on a usage error or a bad input (one line ``fcam: error: ...`` on
stderr; add ``--debug`` for the traceback), 1 on an unexpected internal error, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay lazy: `fcam --help` must be fast
    import torch
    from torch import nn

    from .upscaler import FCAMUpscaler

__all__ = ["main"]

PROG = "fcam"
DEFAULT_METHOD = "GradCAMPlusPlus"


class UsageError(ValueError):
    """A bad command line or input; reported as one line and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (``fcam: error: ...``) instead of usage + exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


# ------------------------------------------------------------------------------------ parser
_EPILOG_FIT = """\
examples:
  fcam fit --arch resnet50 --weights cub_resnet50.pth --num-classes 200 \\
           --wsol-data dataset/CUB --wsol-metadata metadata/CUB --split train \\
           --method CAM --epochs 50 --out fcam_cub.pt
  fcam fit --arch resnet18 --num-classes 2 --data my_images/ --epochs 1 --out tiny.pt  # random weights: testing only
  fcam fit ... --out fcam_cub.pt --resume            # continue an interrupted run
  fcam fit --model mypkg.models:build --data photos/ --labels predicted \\
           --target-layer _bn1 --skip-layer _bn0 --skip-layer _blocks.2 --skip-layer _blocks.4

The skip layers (decoder inputs) and the CAM's target layer are found by probing the model; a
module that runs more than once per forward pass (e.g. one activation shared by stem and head) is
never chosen, and is refused when given. --target-layer and --skip-layer can be given separately.

Images are resized to ~8/7 of --image-size, randomly cropped to --image-size and flipped
(the paper's recipe), then normalised with the config's mean/std (ImageNet by default).
"""

_EPILOG_EXPLAIN = """\
example:
  fcam explain --arch resnet50 --weights cub_resnet50.pth --num-classes 200 \\
               --checkpoint fcam_cub.pt --images photos/ --out maps/

For every image <name>.<ext> under --images, writes <out>/<name>.npy (float32 (H, W) in [0, 1]
at the image's original size) and <out>/<name>.png (the map blended over the image, as
fcam_plugin.overlay draws it), and one gallery of all overlays, <out>/index.html (open it in a
browser), with each image's top-1 class and score. Images are read and explained in batches.
"""

_EPILOG_EVAL = """\
example:
  fcam eval --arch resnet50 --weights cub_resnet50.pth --num-classes 200 \\
            --checkpoint fcam_cub.pt --wsol-data dataset/CUB --wsol-metadata metadata/CUB \\
            --split test --baseline --out cub_test.json

PxAP needs masks (OpenImages flavour); with boxes only (CUB flavour) it is reported as nan.
"""


_NO_CHECK_HELP = (
    "load the checkpoint even if the classifier's weights differ from those it was trained on "
    "(the architecture must still match)"
)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS,
        help="show the full traceback of errors",
    )


def _add_model_args(parser: argparse.ArgumentParser, method_default: str | None, skip_layers: bool = False) -> None:
    """The classifier's flags; ``skip_layers`` adds ``--skip-layer`` (fit: explain and eval read the checkpoint's)."""
    group = parser.add_argument_group("classifier (frozen; same flags for fit, explain and eval)")
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--arch", metavar="NAME",
        help="torchvision model name (resnet50, vgg16, densenet121, ...); default resnet50",
    )
    source.add_argument(
        "--model", metavar="MODULE:CALLABLE",
        help="import MODULE and call CALLABLE() to get the classifier (e.g. mypkg.models:build)",
    )
    group.add_argument(
        "--weights", metavar="PATH",
        help="state_dict file loaded with torch.load(weights_only=True), strictly; 'none' or "
        "absent = --arch's random initialisation (fixed seed, meant for testing only), or the weights the "
        "--model callable loaded",
    )
    group.add_argument(
        "--num-classes", type=_positive_int, metavar="N",
        help="classifier output size for --arch (default: torchvision's, 1000)",
    )
    group.add_argument(
        "--method", default=method_default, metavar="NAME",
        help="CAM method of pytorch-grad-cam or torchcam, e.g. GradCAMPlusPlus, CAM, "
        "LayerCAM, torchcam:LayerCAM"
        + (f" (default {method_default})" if method_default else " (default: the checkpoint's)"),
    )
    group.add_argument(
        "--target-layer", action="append", metavar="NAME",
        help="dotted name of a CAM target layer, e.g. layer4 (repeatable; default: found automatically)",
    )
    if skip_layers:
        group.add_argument(
            "--skip-layer", action="append", metavar="NAME",
            help="dotted name of a layer read as a decoder skip feature, e.g. layer2 (repeatable, at most one "
            "per stride; default: found automatically; explain and eval read them from the checkpoint)",
        )
    group.add_argument("--device", help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda if available)")
    group.add_argument(
        "--image-size", type=_positive_int, default=224, metavar="PX",
        help="side of the square model input (default 224)",
    )
    group.add_argument(
        "--batch-size", type=_positive_int, default=32, metavar="N", help="batch size (default 32)"
    )
    group.add_argument(
        "--workers", type=_non_negative_int, default=min(4, os.cpu_count() or 1), metavar="N",
        help="DataLoader worker processes (default: min(4, CPUs))",
    )
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def _add_wsol_args(group: Any, split_default: str, required: bool = False) -> None:
    group.add_argument(
        "--wsol-data", metavar="ROOT", required=required,
        help="wsolevaluation data root, e.g. dataset/CUB (image ids are relative to it)",
    )
    group.add_argument(
        "--wsol-metadata", metavar="ROOT", help="wsolevaluation metadata root, e.g. metadata/CUB"
    )
    group.add_argument(
        "--split", default=split_default, help=f"metadata split folder (default {split_default})"
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fcam`` argument parser (exposed for documentation tools)."""
    parser = _Parser(
        prog=PROG,
        description="F-CAM: full-resolution class activation maps for a frozen classifier "
        "(Belharbi et al., WACV 2022).",
        epilog="Run `fcam <command> --help` for the flags of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of errors")
    commands = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    _add_demo(commands)
    _add_fit(commands)
    _add_explain(commands)
    _add_eval(commands)
    return parser


_FORMATTER = argparse.RawDescriptionHelpFormatter
#: ``fcam demo --preset`` and ``--variant`` choices: the keys of ``fcam_plugin.demo.PRESETS`` and
#: ``fcam_plugin.data.VARIANTS`` (kept equal by tests/test_cli.py; the demo is imported only when run).
DEMO_PRESETS = ("quick", "full", "224")
DEMO_VARIANTS = ("parts", "shapes", "textures", "small", "camouflage")


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="train and evaluate F-CAM on a synthetic dataset; writes a report",
        description="End-to-end demo on the synthetic WSOL dataset: trains a classifier, fits F-CAM, "
        "compares it with bilinear CAMs and writes figures and a report.",
    )
    demo.add_argument("--out", default="fcam-demo", metavar="DIR", help="output folder (default fcam-demo)")
    demo.add_argument("--quick", action="store_true", help="a smoke run, under a minute on a 2-core CPU (its numbers are not meaningful)")
    demo.add_argument(
        "--preset", choices=DEMO_PRESETS,
        help="sizes of the run: quick (as --quick), full (the default: 64 px, about 3.5 min on 2 CPU cores) or 224 "
        "(the paper's resolution, 1600 train / 256 test images: hours on a 2-core CPU, minutes on a GPU)",
    )
    demo.add_argument("--variant", choices=DEMO_VARIANTS, help="synthetic data variant (default parts)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", help="torch device (default: cuda if available)")
    _add_common(demo)
    demo.set_defaults(func=_cmd_demo)


def _add_fit(commands: Any) -> None:
    fit = commands.add_parser(
        "fit", help="train the F-CAM decoder on a frozen classifier", epilog=_EPILOG_FIT,
        description="Train the F-CAM decoder on top of a frozen classifier and write a checkpoint. "
        "Only image-level labels are used.", formatter_class=_FORMATTER,
    )
    _add_model_args(fit, DEFAULT_METHOD, skip_layers=True)
    data = fit.add_argument_group("training data (one of --data or --wsol-data)")
    data.add_argument("--data", metavar="DIR", help="torchvision ImageFolder: DIR/<class>/<image>")
    data.add_argument(
        "--labels", choices=("folder", "predicted"), default="folder",
        help="labels of --data images: their class folder's index (default), or the classifier's own top-1 "
        "class of each image ('predicted': for a pretrained model and unlabelled photos in one folder DIR/any/)",
    )
    _add_wsol_args(data, "train")
    train = fit.add_argument_group("training")
    train.add_argument("--out", default="fcam.pt", metavar="PATH", help="checkpoint to write (default fcam.pt)")
    train.add_argument("--epochs", type=_positive_int, default=10, help="passes over the data (default 10)")
    train.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--resume", nargs="?", const="", metavar="PATH",
        help="continue from a checkpoint written by an interrupted fit (default: --out)",
    )
    train.add_argument(
        "--checkpoint-every", type=_positive_int, metavar="STEPS",
        help="also write --out every STEPS steps (it is always written at epoch ends and on Ctrl-C)",
    )
    train.add_argument("--max-steps", type=_positive_int, metavar="N", help="stop after N steps (quick runs)")
    train.add_argument("--amp", action="store_true", help="float16 autocast for the decoder (CUDA)")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
        help="override an FCAMConfig field, e.g. --set crf_weight=0 --set size_weight=0.2 (repeatable)",
    )
    _add_common(fit)
    fit.set_defaults(func=_cmd_fit)


def _add_explain(commands: Any) -> None:
    explain = commands.add_parser(
        "explain", help="write F-CAM maps (.npy), overlays (.png) and a gallery for a folder of images",
        epilog=_EPILOG_EXPLAIN, formatter_class=_FORMATTER,
        description="Compute F-CAM maps for every image of a folder, batch by batch.",
    )
    _add_model_args(explain, None)
    io = explain.add_argument_group("input / output")
    io.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint written by `fcam fit`")
    io.add_argument("--no-weights-check", action="store_true", help=_NO_CHECK_HELP)
    io.add_argument("--images", required=True, metavar="DIR", help="folder of images (searched recursively) or one image")
    io.add_argument("--out", default="fcam-maps", metavar="DIR", help="output folder (default fcam-maps)")
    io.add_argument(
        "--alpha", type=_unit_float, default=0.5, help="weight of the image in the overlay (default 0.5)"
    )
    io.add_argument("--no-png", action="store_true", help="write only the .npy maps")
    _add_common(explain)
    explain.set_defaults(func=_cmd_explain)


def _add_eval(commands: Any) -> None:
    evaluate = commands.add_parser(
        "eval", help="localization metrics (PxAP, MaxBoxAcc, MaxBoxAccV2) on a wsolevaluation dataset",
        epilog=_EPILOG_EVAL, formatter_class=_FORMATTER,
        description="Evaluate F-CAM maps (and optionally the bilinear CAM baseline) with the "
        "wsolevaluation protocol; prints a table and writes JSON.",
    )
    _add_model_args(evaluate, None)
    ev = evaluate.add_argument_group("evaluation")
    ev.add_argument("--checkpoint", required=True, metavar="PATH", help="checkpoint written by `fcam fit`")
    ev.add_argument("--no-weights-check", action="store_true", help=_NO_CHECK_HELP)
    _add_wsol_args(ev, "test")
    ev.add_argument("--baseline", action="store_true", help="also evaluate the wrapped method's bilinear CAM")
    ev.add_argument("--out", default="fcam-eval.json", metavar="PATH", help="JSON report (default fcam-eval.json)")
    ev.add_argument(
        "--num-thresholds", type=_positive_int, default=1000, help="CAM thresholds (default 1000, as wsolevaluation)"
    )
    ev.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N images")
    _add_common(evaluate)
    evaluate.set_defaults(func=_cmd_eval)


# ---------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fcam`` command line and return its exit status.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a usage error or bad input, 1 on an internal error, 130 on Ctrl-C.

    Example:
        >>> from fcam_plugin.cli import main
        >>> main(["--version"])  # doctest: +SKIP
        fcam 0.1.0
        0
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    from .errors import CheckpointError, NotFittedError

    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help / --version
            return int(done.code or 0)
        debug = bool(getattr(args, "debug", False))
        if args.command is None:
            raise UsageError("a command is required: demo, fit, explain or eval (see `fcam --help`)")
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (UsageError, ValueError, TypeError, CheckpointError, NotFittedError, FileNotFoundError) as error:
        if debug:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug: keep it short unless asked
        if debug:
            raise
        print(
            f"{PROG}: internal error: {type(error).__name__}: {_one_line(error)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.strerror and error.filename:
        text = f"{error.strerror}: {error.filename}"
    return " ".join(text.split())


# ------------------------------------------------------------------------------ commands
def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import preset, run_demo
    except ModuleNotFoundError as error:
        if error.name not in ("fcam_plugin.demo", f"{__package__}.demo"):
            raise
        raise UsageError("`fcam demo` is not available in this installation (fcam_plugin.demo is missing)") from None
    if args.quick and args.preset not in (None, "quick"):
        raise UsageError(f"--quick and --preset {args.preset} name different sizes; pass one of them")
    kwargs: dict[str, Any] = {}
    if args.preset or args.variant:
        name = args.preset or ("quick" if args.quick else "full")
        kwargs["settings"] = preset(name, **({"variant": args.variant} if args.variant else {}))
    result = run_demo(out_dir=args.out, quick=args.quick, seed=args.seed, device=_device(args.device), **kwargs)
    files = result.get("files", {}) if isinstance(result, dict) else {}
    if files:
        print("demo written: " + ", ".join(str(path) for path in files.values()))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from .config import FCAMConfig
    from .upscaler import FCAMUpscaler

    if (args.data is None) == (args.wsol_data is None):
        raise UsageError("give exactly one of --data DIR (ImageFolder) or --wsol-data ROOT --wsol-metadata ROOT")
    config = FCAMConfig.from_dict({**FCAMConfig().to_dict(), **_parse_overrides(args.overrides)})
    device = _device(args.device)
    device = _init_distributed(device)
    model = _build_model(args, device)
    loader = _train_loader(args, config, model, device)
    resume = None
    if args.resume is not None:
        resume = args.resume or args.out
        if not os.path.isfile(resume):
            raise UsageError(f"--resume: no checkpoint at {resume!r} to continue from")
    with _layer_flags():
        upscaler = FCAMUpscaler(
            model, args.method, _target_layers(model, args.target_layer), skip_layers=args.skip_layer or None,
            config=config,
        )
        with upscaler:
            upscaler.fit(
                loader, epochs=args.epochs, seed=args.seed, progress=not args.no_progress,
                checkpoint=args.out, checkpoint_every=args.checkpoint_every, resume=resume,
                max_steps=args.max_steps, amp=args.amp,
            )
    if _destroy_distributed() != 0:
        return 0  # rank 0 reports
    last = upscaler.history[-1] if upscaler.history else {}
    terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k != "epoch")
    print(f"checkpoint written to {args.out}" + (f" (last epoch: {terms})" if terms else ""))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader

    from .data.folders import ImageFiles
    from .progress import progress_bar

    device = _device(args.device)
    model = _build_model(args, device)
    upscaler = _load_upscaler(args, model)
    dataset = ImageFiles(args.images, _eval_transform(args.image_size, upscaler.config))
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    out = Path(args.out)
    entries: list[dict[str, Any]] = []
    with upscaler, progress_bar(not args.no_progress, len(dataset), "explain", unit="img") as bar:
        for images, indices in loader:
            with _captured_scores(model) as scores:
                maps = upscaler.maps(images)
            top = _top1(scores[0] if scores else None, len(indices))
            for fmap, index, (label, score) in zip(maps, indices.tolist(), top):
                entries.append(_write_map(dataset, index, fmap, out, args, label, score))
            bar.update(len(indices))
    message = f"{len(entries)} map(s) written to {out}"
    if not args.no_png:
        gallery = _write_gallery(out, entries, f"{upscaler.source.method_name} + F-CAM")
        message += f"; gallery: {gallery}"
    print(message)
    return 0


def _write_map(
    dataset: Any, index: int, fmap: torch.Tensor, out: Path, args: argparse.Namespace, label: int | None,
    score: float | None,
) -> dict[str, Any]:
    """Write ``<out>/<name>.npy`` (and ``.png`` overlay) for one image; returns its gallery entry."""
    import numpy as np
    import torch
    from PIL import Image

    from .visualize import overlay

    rel = dataset.files[index]
    original = dataset.open(index)
    full = torch.nn.functional.interpolate(
        fmap[None, None].float(), size=(original.height, original.width), mode="bilinear", align_corners=False,
    )[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)
    target = out / rel.with_suffix("")
    target.parent.mkdir(parents=True, exist_ok=True)
    np.save(target.with_name(target.name + ".npy"), full)
    png = target.with_name(target.name + ".png")
    if not args.no_png:
        Image.fromarray(overlay(np.asarray(original), full, image_weight=args.alpha)).save(png)
    return {"name": str(rel), "png": png.relative_to(out).as_posix(), "label": label, "score": score}


def _write_gallery(out: Path, entries: Sequence[dict[str, Any]], title: str) -> Path:
    """One ``index.html`` showing every overlay with its file name and top-1 class (relative links)."""
    import html

    cards = []
    for entry in entries:
        caption = html.escape(entry["name"])
        if entry["label"] is not None:
            caption += f"<br><small>top-1 class {entry['label']} ({entry['score']:.2f})</small>"
        link = html.escape(entry["png"], quote=True)
        cards.append(
            f'<figure><a href="{link}"><img src="{link}" loading="lazy" alt="{html.escape(entry["name"], quote=True)}">'
            f"</a><figcaption>{caption}</figcaption></figure>"
        )
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>" + html.escape(title) + "</title>\n<style>"
        "body{font-family:sans-serif;margin:1em}main{display:flex;flex-wrap:wrap;gap:12px}"
        "figure{margin:0;width:224px}img{width:224px;height:auto;display:block}"
        "figcaption{font-size:13px;word-break:break-all}</style></head>\n<body><h1>" + html.escape(title) + "</h1>"
        f"<p>{len(entries)} image(s); each map is blended over its image (red: foreground).</p>\n<main>\n"
        + "\n".join(cards) + "\n</main></body></html>\n"
    )
    path = out / "index.html"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


@contextlib.contextmanager
def _captured_scores(model: nn.Module) -> Iterator[list[Any]]:
    """The outputs of the model's forward passes inside the block (its hook is removed on exit)."""
    outputs: list[Any] = []
    handle = model.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def _top1(scores: Any, count: int) -> list[tuple[int | None, float | None]]:
    """(class, softmax score) per image from class scores ``(B, K)``; (None, None) for other outputs."""
    import torch

    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 or scores.shape[0] != count:
        return [(None, None)] * count
    probs = scores.detach().float().softmax(1)
    values, labels = probs.max(1)
    return list(zip(labels.tolist(), values.tolist()))


def _cmd_eval(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader, Subset

    from .data.wsol import WSOLDataset, wsol_collate
    from .metrics import LocalizationEvaluator

    if args.wsol_data is None or args.wsol_metadata is None:
        raise UsageError("eval needs --wsol-data ROOT and --wsol-metadata ROOT")
    device = _device(args.device)
    model = _build_model(args, device)
    upscaler = _load_upscaler(args, model)
    dataset = WSOLDataset(
        args.wsol_data, args.wsol_metadata, args.split,
        transform=_to_tensor(upscaler.config), image_size=args.image_size,
    )
    if dataset.localization == "none":
        raise UsageError(f"split {args.split!r} has no localization.txt: nothing to evaluate against")
    if args.limit is not None:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))  # type: ignore[assignment]
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers, collate_fn=wsol_collate)
    evaluators = {"fcam": LocalizationEvaluator(args.num_thresholds)}
    if args.baseline:
        evaluators["cam"] = LocalizationEvaluator(args.num_thresholds)
    from .progress import progress_bar

    with upscaler, progress_bar(not args.no_progress, len(dataset), "eval", unit="img") as bar:
        for images, labels, extra in loader:
            maps = {"fcam": upscaler.maps(images)}
            if args.baseline:
                maps["cam"] = upscaler.cams(images, labels)
            for name, batch_maps in maps.items():
                batch_maps = batch_maps.detach().float().clamp(0, 1).cpu()
                if extra["masks"] is not None:
                    evaluators[name].update(batch_maps, masks=extra["masks"])
                else:
                    evaluators[name].update(batch_maps, boxes=[b.numpy() for b in extra["boxes"]])
            bar.update(len(labels))
    results = {name: ev.summary() for name, ev in evaluators.items()}
    method = f"{upscaler.source.library}:{upscaler.source.method_name}"
    report = {
        "dataset": {"data": args.wsol_data, "metadata": args.wsol_metadata, "split": args.split,
                    "images": len(dataset), "image_size": args.image_size},
        "checkpoint": args.checkpoint,
        "method": method,
        "num_thresholds": args.num_thresholds,
        "metrics": {_label(name, method): _json_safe(summary) for name, summary in results.items()},
    }
    print(_table(report["metrics"]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"metrics written to {out}")
    return 0


# ------------------------------------------------------------------------------- helpers
def _version() -> str:
    from . import __version__

    return __version__


def _int_at_least(minimum: int):
    """argparse type: an int >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _unit_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE (e.g. crf_weight=0), got {item!r}")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            value = text.strip()
        out[key.strip()] = value
    return out


def _device(name: str | None) -> torch.device:
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device: {name!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name!r}: CUDA is not available here; use --device cpu")
    return device


def _init_distributed(device: torch.device) -> torch.device:
    """Under ``torchrun`` (WORLD_SIZE > 1): join the process group, one GPU per local rank."""
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return device


def _destroy_distributed() -> int:
    """Leave the process group joined by :func:`_init_distributed`; returns this process's rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 0
    rank = dist.get_rank()
    dist.barrier()
    dist.destroy_process_group()
    return rank


def _build_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """The classifier from --arch / --model, with --weights loaded strictly, on ``device``."""
    import torch
    from torch import nn

    if args.model:
        module_name, sep, attr = args.model.partition(":")
        if not sep or not module_name or not attr:
            raise UsageError(f"--model expects MODULE:CALLABLE (e.g. mypkg.models:build), got {args.model!r}")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as error:
            raise UsageError(f"--model {args.model!r}: {error}") from None
        model = factory()
        if not isinstance(model, nn.Module):
            raise UsageError(f"--model {args.model!r} returned {type(model).__name__}, not a torch.nn.Module")
    else:
        import torchvision

        arch = args.arch or "resnet50"
        kwargs = {} if args.num_classes is None else {"num_classes": args.num_classes}
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # random init is reproducible, so fit/explain/eval agree
                model = torchvision.models.get_model(arch, weights=None, **kwargs)
        except ValueError:
            names = torchvision.models.list_models(module=torchvision.models)
            raise UsageError(f"--arch {arch!r} is not a torchvision classification model; e.g. {names[:8]} ...") from None
    if args.weights and args.weights.lower() != "none":
        state = _read_weights(args.weights)
        missing, unexpected = _load_weights(model, state)
        if missing or unexpected:
            raise UsageError(
                f"--weights {args.weights!r} does not fit the model: {len(missing)} missing key(s) "
                f"{missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
                + ("; check --num-classes" if any("fc" in k or "classifier" in k or "head" in k for k in missing + unexpected) else "")
            )
    elif not args.model:  # a --model callable may load its own weights
        print(f"{PROG}: warning: no --weights: random classifier weights (testing only)", file=sys.stderr)
    return model.to(device).eval()


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    from .checkpoint import read_state_dict
    from .errors import CheckpointError

    try:
        return read_state_dict(path)
    except CheckpointError as error:
        raise UsageError(f"--weights: {error}") from None


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    cleaned = state  # read_state_dict removed DDP's `module.` / torch.compile's `_orig_mod.` prefixes
    own = model.state_dict()
    missing = [k for k in own if k not in cleaned]
    unexpected = [k for k in cleaned if k not in own]
    if missing or unexpected:
        return missing, unexpected
    shapes = [k for k in own if tuple(own[k].shape) != tuple(cleaned[k].shape)]
    if shapes:
        k = shapes[0]
        raise UsageError(
            f"--weights: {len(shapes)} tensor(s) of the wrong shape, e.g. {k} {list(cleaned[k].shape)} "
            f"vs the model's {list(own[k].shape)}; check --num-classes / --arch"
        )
    model.load_state_dict(cleaned, strict=True)
    return [], []


def _target_layers(model: nn.Module, names: Sequence[str] | None) -> list[nn.Module] | None:
    if not names:
        return None
    layers = []
    for name in names:
        try:
            layers.append(model.get_submodule(name))
        except AttributeError:
            children = [n for n, _ in model.named_children()]
            raise UsageError(f"--target-layer {name!r} is not a submodule of the model; top-level ones: {children}") from None
    return layers


#: The library's layer arguments and the command-line flags that set them.
_LAYER_FLAGS = {"`skip_layers`": "--skip-layer", "`target_layers`": "--target-layer"}


@contextlib.contextmanager
def _layer_flags() -> Iterator[None]:
    """Errors about the layer arguments (bad, repeated or mismatched layers), reworded with the CLI's flags."""
    try:
        yield
    except ValueError as error:  # TapMismatchError and NoSpatialFeaturesError included
        text = str(error)
        if not any(argument in text for argument in _LAYER_FLAGS):
            raise
        for argument, flag in _LAYER_FLAGS.items():
            text = text.replace(argument, flag)
        raise UsageError(text) from None


def _checkpoint_method(path: str) -> str:
    from .checkpoint import read_checkpoint

    info = read_checkpoint(path).get("method") or {}
    name = info.get("name")
    if not name:
        raise UsageError(f"checkpoint {path!r} does not record its CAM method: pass --method")
    prefix = "torchcam" if "torchcam" in str(info.get("library", "")) else "gradcam"
    return f"{prefix}:{name}"


def _load_upscaler(args: argparse.Namespace, model: nn.Module) -> FCAMUpscaler:
    from .errors import CheckpointError
    from .upscaler import FCAMUpscaler

    method = args.method or _checkpoint_method(args.checkpoint)
    try:
        return FCAMUpscaler.load(
            args.checkpoint, model, method, check_weights=not args.no_weights_check,
            target_layers=_target_layers(model, args.target_layer),
        )
    except CheckpointError as error:
        if "check_weights=False" in str(error):
            raise CheckpointError(f"{error} (on the command line: --no-weights-check)") from None
        if "different classifier architecture" in str(error):
            hint = _architecture_hint(args, model)
            if hint:
                raise CheckpointError(f"{str(error).rstrip('.')}; {hint}") from None
        raise


def _architecture_hint(args: argparse.Namespace, model: nn.Module) -> str:
    """Which flag fixes a checkpoint made for another classifier: --num-classes N, or --arch / --model."""
    from .checkpoint import classifier_fingerprint, head_outputs, read_checkpoint

    saved = read_checkpoint(args.checkpoint).get("classifier")
    if not isinstance(saved, dict) or not isinstance(saved.get("shapes"), dict):
        return "check --arch / --model and --num-classes (the checkpoint is too old to say which tensors differ)"
    head = head_outputs(saved, classifier_fingerprint(model))
    if head is not None:
        if args.model:
            return f"--model must build the classifier with {head[0]} outputs, as at fit time (it has {head[1]})"
        return f"pass --num-classes {head[0]} (as at fit time; this classifier has {head[1]} outputs)"
    trained_on = saved.get("class", "another architecture")
    return (
        f"the checkpoint was fitted on a {trained_on}: pass the --arch (or --model) and --num-classes used "
        f"with `fcam fit`, not {('--model ' + args.model) if args.model else '--arch ' + (args.arch or 'resnet50')}"
    )


def _to_tensor(config: Any) -> Any:
    from torchvision import transforms as T

    return T.Compose([T.ToTensor(), T.Normalize(config.mean, config.std)])


def _eval_transform(size: int, config: Any) -> Any:
    from torchvision import transforms as T

    return T.Compose([T.Resize((size, size)), _to_tensor(config)])


def _train_loader(args: argparse.Namespace, config: Any, model: nn.Module, device: torch.device) -> Any:
    """The augmented training loader of --data / --wsol-data (labels: the folders', or --labels predicted)."""
    from torch.utils.data import DataLoader
    from torchvision import transforms as T

    size = args.image_size
    resized = max(size, round(size * 8 / 7))  # 256 for 224, as the reference recipe
    augment = T.Compose([T.RandomCrop(size), T.RandomHorizontalFlip(), _to_tensor(config)])
    collate = None
    if args.data is not None:
        from torchvision.datasets import ImageFolder

        if not os.path.isdir(args.data):
            raise UsageError(f"--data: folder {args.data!r} does not exist")
        dataset = ImageFolder(args.data, transform=T.Compose([T.Resize((resized, resized)), augment]))
        classes = len(dataset.classes)
        if args.labels == "predicted" and len(dataset):
            _relabel_with_predictions(dataset, model, device, args, config)
            classes = 0  # the model's own classes: always in range
    elif args.labels == "predicted":
        raise UsageError("--labels predicted works with --data DIR; --wsol-data takes its labels from the metadata")
    else:
        from .data.wsol import WSOLDataset, wsol_collate

        if args.wsol_metadata is None:
            raise UsageError("--wsol-data needs --wsol-metadata ROOT")
        dataset = WSOLDataset(
            args.wsol_data, args.wsol_metadata, args.split, transform=augment,
            image_size=resized, localization="none",
        )
        classes = max(dataset.labels) + 1
        collate = wsol_collate
    if args.arch is not None or args.model is None:
        expected = args.num_classes or 1000
        if classes > expected:
            raise UsageError(
                f"the training data has {classes} classes but the classifier outputs {expected}; set --num-classes"
            )
    if len(dataset) == 0:
        raise UsageError("the training data holds no image")
    return DataLoader(
        dataset, batch_size=min(args.batch_size, len(dataset)), shuffle=True, drop_last=len(dataset) > args.batch_size,
        num_workers=args.workers, collate_fn=collate, persistent_workers=args.workers > 0,
    )


def _relabel_with_predictions(
    dataset: Any, model: nn.Module, device: torch.device, args: argparse.Namespace, config: Any
) -> None:
    """Replace an ImageFolder's labels by the classifier's top-1 class of each (resized, un-augmented) image."""
    import torch
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from .progress import progress_bar

    plain = ImageFolder(dataset.root, transform=_eval_transform(args.image_size, config))
    loader = DataLoader(plain, batch_size=args.batch_size, num_workers=args.workers)
    predicted: list[int] = []
    with torch.no_grad(), progress_bar(not args.no_progress, len(plain), "labels", unit="img") as bar:
        for images, _ in loader:
            scores = model(images.to(device))
            if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
                raise UsageError(f"--labels predicted needs class scores (B, K) from the model, got {type(scores).__name__}")
            predicted += scores.argmax(1).tolist()
            bar.update(len(images))
    dataset.samples = [(path, label) for (path, _), label in zip(dataset.samples, predicted)]
    dataset.imgs, dataset.targets = dataset.samples, predicted
    counts = sorted(((predicted.count(c), c) for c in set(predicted)), reverse=True)
    common = ", ".join(f"{c} ({n})" for n, c in counts[:5])
    print(f"labels: the classifier's top-1 class of each image: {len(counts)} distinct, most common {common}")


def _label(name: str, method: str) -> str:
    base = method.split(":", 1)[-1]
    return f"{base} + F-CAM" if name == "fcam" else f"{base} (bilinear)"


def _json_safe(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in summary.items()}


def _table(metrics: dict[str, dict[str, Any]]) -> str:
    columns = [("PxAP", "pxap"), ("MaxBoxAcc", "maxboxacc"), ("MaxBoxAccV2", "maxboxaccv2")]
    width = max(len("method"), *(len(k) for k in metrics))
    lines = [f"{'method':<{width}}  " + "  ".join(f"{c:>11}" for c, _ in columns)]
    for name, summary in metrics.items():
        cells = []
        for _, key in columns:
            value = summary.get(key)
            cells.append(f"{'n/a':>11}" if value is None else f"{100 * value:>11.1f}")
        lines.append(f"{name:<{width}}  " + "  ".join(cells))
    return "\n".join(lines) + "\n(values x 100; n/a: PxAP needs masks)"
