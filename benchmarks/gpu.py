"""One prepared GPU run (issue 16): the CUDA tests, then the GPU figures, ratios measured side by side.

Usage::

    python benchmarks/gpu.py [--device cuda|cpu] [--quick] [--json PATH] [--reps N] [--no-tests]
                             [--quality] [--quality-args "..."] [--quality-timeout S]

Sections, in one process (the tests in a child ``pytest``), each one's results written to ``--json``
as soon as it ends, so that a run cut short keeps what it measured:

0. ``pytest tests/test_gpu.py``: the ``gpu`` tests and the ``device``-fixture tests;
1. dense CRF loss forward + backward, 32 x 2 x 224^2, ``method="auto"`` (target < 20 ms), and its
   gradient cosine / loss error against the exact full-resolution loss on 4 natural-like images;
2. one fit step (GradCAM++ seeds + decoder + losses + backward + SGD) with and without the CRF,
   ResNet-50, batch 32, 224 px (target with / without <= 1.1);
3. one upscaler call vs one call of the wrapped GradCAM++ on the same batch (target <= 0.6);
4. images per second of ``FCAMUpscaler(resnet50, GradCAMPlusPlus).fit`` at 224 px, batch 32,
   without and with ``amp=True`` (CUDA only);
5. with ``--quality``: the quality benchmark's 224 px learning curve, default recipe
   (``benchmarks/quality.py --device cuda --no-readme``, one variant unless ``--quality-args`` says
   otherwise; minutes on a GPU, not needed for the rest).

Times are wall-clock seconds with ``torch.cuda.synchronize()`` after every call, after a warm-up,
minimum over interleaved rounds (``benchmarks/speed.py``'s ``interleaved``: every round runs every
case of a comparison once), so a ratio compares cases measured side by side. ``--device cpu
--quick`` runs the same code at a tiny size (ResNet-18, 64 px, batch 2): the check that the script
works, not a measurement. Ends with a markdown table for benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
import traceback
from typing import Any, Callable

import torch
import torchvision
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
from fcam_plugin import FCAMUpscaler  # noqa: E402
from fcam_plugin._state import frozen_eval  # noqa: E402
from fcam_plugin.losses.crf import resolve_crf_method  # noqa: E402
from fcam_plugin.taps import FeatureTaps  # noqa: E402
from fcam_plugin.training import build_optimizer  # noqa: E402

sys.path.insert(0, HERE)
import crf as crf_bench  # noqa: E402
from speed import interleaved  # noqa: E402

#: Sizes of a full (GPU) run and of ``--quick`` (the CPU check of the script).
FULL = dict(arch="resnet50", batch=32, size=224, crf_batch=32, crf_size=224, fidelity_images=4, fit_steps=10, reps=5)
QUICK = dict(arch="resnet18", batch=2, size=64, crf_batch=4, crf_size=64, fidelity_images=1, fit_steps=2, reps=2)
#: quality.py arguments without ``--quality-args``: the 224 px preset on one variant; tiny with --quick.
QUICK_QUALITY = ("--preset quick --variants parts --train-images 24 --test-images 8 --fit-images 8 --image-size 64 "
                 "--classifier-epochs 1 --fcam-epochs 1 --batch-size 8 --rivals refinecam")
SECTIONS = ("tests", "crf", "step_call", "throughput", "quality")
TARGETS = {"crf_ms": 20.0, "step_ratio": 1.1, "call_ratio": 0.6}


# ------------------------------------------------------------------------------ helpers
def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def synced(fn: Callable[[], object], dev: str) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation, so that wall time covers the GPU work."""

    def run() -> None:
        fn()
        _sync(dev)

    return run


def _peak_reset(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(dev: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if dev == "cuda" else None


def environment(dev: str) -> dict[str, Any]:
    """Versions, threads and the device, as printed at the top of the run."""
    env: dict[str, Any] = {
        "python": platform.python_version(), "torch": str(torch.__version__), "torchvision": torchvision.__version__,
        "cuda_runtime": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "device": dev,
        "load_avg": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    if dev == "cuda":
        props = torch.cuda.get_device_properties(0)
        env |= {"gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
                "gpu_memory_gib": round(props.total_memory / 2**30, 1), "capability": f"{props.major}.{props.minor}",
                "driver": _driver()}
    return env


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def _inputs(up: FCAMUpscaler, batch: int, size: int, dev: str, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural-like images normalised like the classifier's inputs, and random labels, on ``dev``."""
    gen = torch.Generator().manual_seed(0)
    rgb = crf_bench.natural_images(batch, size, size, gen)
    mean = torch.tensor(up.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(up.config.std).view(1, 3, 1, 1)
    return ((rgb / 255 - mean) / std).to(dev), torch.randint(0, classes, (batch,), generator=gen).to(dev)


def _classifier(arch: str, dev: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None, num_classes=200).to(dev).eval()


# ----------------------------------------------------------------------------- sections
def run_tests(dev: str, timeout: int) -> dict[str, Any]:
    """``pytest tests/test_gpu.py`` in a child process; its summary line and output."""
    cmd = [sys.executable, "-m", "pytest", os.path.join("tests", "test_gpu.py"), "-p", "no:cacheprovider", "-q", "-s", "-rfEs"]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout + 60, env=env)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output, code = (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else (error.stdout or ""), -9
    print(output.rstrip()[-6000:], flush=True)
    summary = next((line.strip("= ") for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed|error)", line)), "")
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    return {"command": " ".join(cmd), "returncode": code, "summary": summary, "counts": counts,
            "wall_s": round(time.perf_counter() - t, 1), "output_tail": output[-8000:]}


def crf_section(dev: str, p: dict[str, Any], reps: int) -> dict[str, Any]:
    """Dense CRF fwd+bwd time (benchmarks/crf.py's ``time_interleaved``) and fidelity to the exact loss."""
    side, batch = p["crf_size"], p["crf_batch"]
    cfg = resolve_crf_method(side, side, dev)
    (t_auto,) = crf_bench.time_interleaved([("auto", None)], side, batch, dev, reps)
    images, logits = crf_bench._batch(side, batch, dev)
    _peak_reset(dev)
    crf_bench.loss_and_grad(images, logits, "auto", None)
    _sync(dev)
    peak = _peak_mb(dev)
    del images, logits
    # exact full-resolution references, 1 image at a time (benchmarks/crf.py's protocol, any size)
    gen = torch.Generator().manual_seed(123)
    refs = []
    t = time.perf_counter()
    for _ in range(p["fidelity_images"]):
        img = crf_bench.natural_images(1, side, side, gen)
        lg = crf_bench.make_logits(img, gen)
        img, lg = img.to(dev), lg.to(dev)
        refs.append((img, lg, *crf_bench.loss_and_grad(img, lg, "exact", 1)))
    _sync(dev)
    t_ref = (time.perf_counter() - t) / max(1, len(refs))
    cos, rel, cos_min = crf_bench.fidelity("auto", None, refs)
    return {"shape": [batch, 2, side, side], "config": list(cfg), "fwd_bwd_s": t_auto, "peak_mb": peak,
            "fidelity": {"images": len(refs), "size": side, "cos_mean": cos, "cos_min": cos_min, "rel_mean": rel,
                         "exact_ref_s_per_image": round(t_ref, 3)}}


def step_and_call_section(dev: str, p: dict[str, Any], reps: int) -> dict[str, Any]:
    """(a) one fit step with / without the CRF; (b) upscaler call vs GradCAM++ call (as benchmarks/speed.py)."""
    model = _classifier(p["arch"], dev)
    up = FCAMUpscaler(model, GradCAMPlusPlus)
    up.fitted = True  # timing only: a random decoder costs what a trained one does
    cfg = up.config
    x, labels = _inputs(up, p["batch"], p["size"], dev, 200)
    opt = build_optimizer(None, up.decoder, cfg)  # fit's default SGD
    step_gen = torch.Generator(device=dev).manual_seed(1)
    objective = up.objective()

    def step(with_crf: bool) -> None:
        with cfg.overridden(**({} if with_crf else {"crf_weight": 0.0})):
            terms = objective(up.decoder, taps, x, labels, 1.0, step_gen, False)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    up.decoder.train()
    _peak_reset(dev)
    with frozen_eval(model), FeatureTaps(model, up.taps) as taps:
        ts = interleaved({"with": synced(lambda: step(True), dev), "without": synced(lambda: step(False), dev)}, reps)
    step_peak = _peak_mb(dev)
    up.decoder.eval()

    targets = [ClassifierOutputTarget(int(c)) for c in labels]
    layer = dict(model.named_modules())[up.taps[-1].name]  # the upscaler's default target layer
    gradcam = GradCAMPlusPlus(model=model, target_layers=[layer])
    try:
        tc = interleaved({
            "up": synced(lambda: up(input_tensor=x), dev),  # no classes named: the class-agnostic map
            "gate": synced(lambda: up(input_tensor=x, targets=targets), dev),  # the class gate (default with targets)
            "maps": synced(lambda: up.maps(x), dev),
            "gradcam": synced(lambda: gradcam(input_tensor=x, targets=targets), dev),
            "classifier": synced(lambda: torch.no_grad()(model)(x), dev),
        }, reps)
    finally:
        gradcam.activations_and_grads.release()
    return {
        "model": p["arch"], "batch": p["batch"], "size": p["size"], "crf": list(resolve_crf_method(p["size"], p["size"], dev)),
        "step": {"with_crf_s": ts["with"], "without_crf_s": ts["without"], "ratio": ts["with"] / ts["without"],
                 "peak_mb": step_peak},
        "call": {"upscaler_s": tc["up"], "maps_s": tc["maps"], "gradcampp_s": tc["gradcam"], "classifier_s": tc["classifier"],
                 "ratio": tc["up"] / tc["gradcam"], "maps_ratio": tc["maps"] / tc["gradcam"],
                 "gate_s": tc["gate"], "gate_ratio": tc["gate"] / tc["gradcam"]},
    }


def throughput_section(dev: str, p: dict[str, Any], reps: int) -> dict[str, Any]:
    """Images/s of whole ``fit`` calls (``p["fit_steps"]`` steps each), float32 and AMP interleaved."""
    model = _classifier(p["arch"], dev)
    up = FCAMUpscaler(model, GradCAMPlusPlus)
    x, labels = _inputs(up, p["batch"], p["size"], dev, 200)
    x, labels = x.cpu(), labels.cpu()
    if dev == "cuda":  # what a DataLoader(pin_memory=True) yields
        x, labels = x.pin_memory(), labels.pin_memory()
    loader = [(x, labels)] * p["fit_steps"]
    amps = (False, True) if dev == "cuda" else (False,)
    cases = {f"amp={amp}": synced(lambda amp=amp: up.fit(loader, epochs=1, amp=amp, progress=False), dev) for amp in amps}
    _peak_reset(dev)
    t = interleaved(cases, max(1, reps - 2))
    images = p["fit_steps"] * p["batch"]
    out: dict[str, Any] = {"model": p["arch"], "batch": p["batch"], "size": p["size"], "steps_per_fit": p["fit_steps"],
                           "fp32_images_per_s": images / t["amp=False"], "fp32_fit_s": t["amp=False"], "peak_mb": _peak_mb(dev)}
    if dev == "cuda":
        out |= {"amp_images_per_s": images / t["amp=True"], "amp_fit_s": t["amp=True"],
                "amp_speedup": t["amp=False"] / t["amp=True"]}
    return out


def quality_section(dev: str, extra: str, out_dir: str, timeout: int, quick: bool) -> dict[str, Any]:
    """``benchmarks/quality.py`` (224 px preset, default recipe) as a child process; its learning curve."""
    default = QUICK_QUALITY if quick else "--variants parts"
    args = shlex.split(extra or default)
    cmd = [sys.executable, os.path.join(HERE, "quality.py"), "--device", dev, "--no-readme", "--quiet",
           "--out", os.path.join(out_dir, "quality"), "--classifier-cache", os.path.join(out_dir, "classifier-cache"), *args]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
        code = -9
    print(output.rstrip()[-6000:], flush=True)
    curves = re.findall(r"^\| epoch \|.*?(?=\n\s*\n|\Z)", output, re.M | re.S)  # the learning-curve tables
    return {"command": " ".join(cmd), "args": " ".join(args), "returncode": code, "wall_s": round(time.perf_counter() - t, 1),
            "learning_curves": curves, "output_tail": output[-12000:]}


# ------------------------------------------------------------------------------ report
def _mark(value: float | None, target: float, below: bool, applicable: bool) -> str:
    if value is None or not applicable:
        return "n/a"
    return "✓" if (value < target if below else value <= target) else "✗"


def markdown(results: dict[str, Any]) -> str:
    """The table for benchmarks/README.md (GPU section)."""
    env, full = results["env"], results["mode"] == "full" and results["env"]["device"] == "cuda"
    what = env.get("gpu") or "CPU"
    lines = [
        f"`python benchmarks/gpu.py {results['argv']}` — {what}, torch {env['torch']} (CUDA {env['cuda_runtime']}, "
        f"cuDNN {env['cudnn']}), {env['torch_threads']} CPU threads, TF32 matmul {env['tf32_matmul']} / cuDNN "
        f"{env['tf32_cudnn']}, {results['mode']} run, {results['wall_s']:.0f} s in all.", "",
        "| measurement | value | reference (same run) | ratio | target |",
        "|---|---|---|---|---|",
    ]
    tests = results.get("tests")
    if tests:
        lines.append(f"| `pytest tests/test_gpu.py` | {tests['summary'] or 'rc ' + str(tests['returncode'])} | | | all pass |")
    c = results.get("crf")
    if c and "error" not in c:
        b, k, h, w = c["shape"]
        f = c["fidelity"]
        lines.append(f"| CRF fwd+bwd {b}×{k}×{h}², auto = {c['config'][0]} f={c['config'][1]} | {1e3 * c['fwd_bwd_s']:.1f} ms"
                     f"{'' if c['peak_mb'] is None else ', peak ' + str(c['peak_mb']) + ' MB'} | | | < 20 ms "
                     f"{_mark(1e3 * c['fwd_bwd_s'], TARGETS['crf_ms'], True, full)} |")
        lines.append(f"| CRF gradient cosine to exact full-res, {f['images']} images {f['size']}² | {f['cos_mean']:.4f} "
                     f"(min {f['cos_min']:.4f}), loss {f['rel_mean']:+.3f} | exact {f['exact_ref_s_per_image']:.2f} s/image | | ≥ 0.98 |")
    s = results.get("step_call")
    if s and "error" not in s:
        st, ca = s["step"], s["call"]
        where = f"{s['model']}, batch {s['batch']}, {s['size']}²"
        lines.append(f"| fit step with CRF ({where}) | {1e3 * st['with_crf_s']:.1f} ms | without CRF "
                     f"{1e3 * st['without_crf_s']:.1f} ms | **{st['ratio']:.2f}** | ≤ 1.1 "
                     f"{_mark(st['ratio'], TARGETS['step_ratio'], False, full)} |")
        lines.append(f"| `up(input_tensor=x)` ({where}) | {1e3 * ca['upscaler_s']:.1f} ms | GradCAM++ call "
                     f"{1e3 * ca['gradcampp_s']:.1f} ms | **{ca['ratio']:.2f}** | ≤ 0.6 "
                     f"{_mark(ca['ratio'], TARGETS['call_ratio'], False, full)} |")
        lines.append(f"| `up.maps(x)` (on-device tensor) | {1e3 * ca['maps_s']:.1f} ms | GradCAM++ call | {ca['maps_ratio']:.2f} | |")
        lines.append(f"| `up(input_tensor=x, targets)` (class gate) | {1e3 * ca['gate_s']:.1f} ms | GradCAM++ call | "
                     f"{ca['gate_ratio']:.2f} | |")
        lines.append(f"| classifier forward, no grad | {1e3 * ca['classifier_s']:.1f} ms | | | |")
    t = results.get("throughput")
    if t and "error" not in t:
        where = f"{t['model']}, batch {t['batch']}, {t['size']}², {t['steps_per_fit']} steps per fit"
        lines.append(f"| fit, float32 ({where}) | {t['fp32_images_per_s']:.0f} images/s | | | |")
        if "amp_images_per_s" in t:
            lines.append(f"| fit, `amp=True` | {t['amp_images_per_s']:.0f} images/s | float32 {t['fp32_images_per_s']:.0f} "
                         f"images/s | {t['amp_speedup']:.2f}× faster | |")
    q = results.get("quality")
    if q:
        lines.append(f"| `benchmarks/quality.py {q['args']}` | rc {q['returncode']}, {q['wall_s']:.0f} s | "
                     "learning curve below | | |")
    for name in ("crf", "step_call", "throughput"):
        if isinstance(results.get(name), dict) and "error" in results[name]:
            lines.append(f"| {name} | **failed**: {results[name]['error'].strip().splitlines()[-1][:150]} | | | |")
    if q and q.get("learning_curves"):
        lines += ["", f"Learning curve (`benchmarks/quality.py {q['args']}`, test split after every F-CAM epoch):", ""]
        for curve in q["learning_curves"]:
            lines += [curve, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cuda", "cpu"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CPU check of this script)")
    ap.add_argument("--json", help="write the results (updated after every section) to this file")
    ap.add_argument("--reps", type=int, help=f"timing rounds (default {FULL['reps']}, quick {QUICK['reps']})")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--no-tests", action="store_true", help="skip pytest tests/test_gpu.py")
    ap.add_argument("--tests-timeout", type=int, default=300, help="seconds for the test run")
    ap.add_argument("--quality", action="store_true", help="also run benchmarks/quality.py (224 px learning curve)")
    ap.add_argument("--quality-args", default="", help='arguments for quality.py (default "--variants parts"; tiny with --quick)')
    ap.add_argument("--quality-timeout", type=int, default=240, help="seconds for the quality run")
    ap.add_argument("--only", help="comma-separated sections to run: " + ",".join(SECTIONS) + " (e.g. --only quality)")
    a = ap.parse_args(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here (use --device cpu --quick for the CPU check)")
    only = set(a.only.split(",")) if a.only else None
    if only and not only <= set(SECTIONS):
        ap.error(f"--only: unknown sections {sorted(only - set(SECTIONS))}; choose among {', '.join(SECTIONS)}")
    if a.threads:
        torch.set_num_threads(a.threads)
    dev, p = a.device, dict(QUICK if a.quick else FULL)
    reps = a.reps or p["reps"]
    start = time.perf_counter()
    results: dict[str, Any] = {"argv": " ".join(sys.argv[1:] if argv is None else argv), "mode": "quick" if a.quick else "full",
                               "sizes": p, "targets": TARGETS, "env": environment(dev)}
    env = results["env"]
    print(f"torch {env['torch']} (CUDA {env['cuda_runtime']}, cuDNN {env['cudnn']}), torchvision {env['torchvision']}, "
          f"python {env['python']}; device {dev}" + (f": {env['gpu']} x{env['gpu_count']}, {env['gpu_memory_gib']} GiB, "
                                                    f"sm {env['capability']}, driver {env['driver']}" if dev == "cuda" else "")
          + f"; {env['torch_threads']} torch threads, {env['cpus']} CPUs, load {env['load_avg']}; TF32 matmul "
          f"{env['tf32_matmul']}, cuDNN {env['tf32_cudnn']}; {results['mode']} run, {reps} rounds", flush=True)

    def save() -> None:
        results["wall_s"] = time.perf_counter() - start
        if a.json:
            os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
            with open(a.json, "w") as fh:
                json.dump(results, fh, indent=1, default=str)

    failed = False
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = []
    if not a.no_tests:
        sections.append(("tests", lambda: run_tests(dev, a.tests_timeout)))
    sections += [
        ("crf", lambda: crf_section(dev, p, reps)),
        ("step_call", lambda: step_and_call_section(dev, p, reps)),
        ("throughput", lambda: throughput_section(dev, p, reps)),
    ]
    if a.quality or (only and "quality" in only):
        out_dir = os.path.dirname(os.path.abspath(a.json)) if a.json else os.path.join(ROOT, "runs", "gpu")
        sections.append(("quality", lambda: quality_section(dev, a.quality_args, out_dir, a.quality_timeout, a.quick)))
    for name, run in sections:
        if only is not None and name not in only:
            continue
        print(f"\n== {name}", flush=True)
        t = time.perf_counter()
        try:
            results[name] = run()
        except Exception:  # keep the other sections' figures: GPU time is scarce
            results[name] = {"error": traceback.format_exc()}
            print(results[name]["error"], flush=True)
        if name in ("tests", "quality"):
            failed |= results[name].get("returncode", 1) != 0
        else:
            failed |= "error" in results[name]
            if "error" not in results[name]:
                print(json.dumps(results[name], default=str), flush=True)
        if dev == "cuda":
            torch.cuda.empty_cache()
        print(f"   ({time.perf_counter() - t:.1f} s)", flush=True)
        save()
    results["markdown"] = markdown({**results, "wall_s": time.perf_counter() - start})
    save()
    print("\n" + results["markdown"])
    if a.json:
        print(f"\nresults: {a.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
