"""Benchmark of the dense CRF loss: speed, memory and fidelity of the lattice / exact paths.

Usage: ``python benchmarks/crf.py [--device cpu|cuda] [--quick] [--refs FILE]``

Fidelity reference = exact full-resolution loss (chunked dense affinity) on 4 natural-like images
and 1 noise image at 224^2 (about 15-90 s each on 2 CPU cores; ``--refs FILE`` caches them);
cosine is between gradients w.r.t. the *logits* (through a softmax), K = 2. Times of the methods
are measured in one process, interleaved round by round, minimum over rounds; peak memory
(VmHWM growth, or CUDA peak) in a fresh child process per method.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fcam_plugin.losses.crf import dense_crf_loss, resolve_crf_method  # noqa: E402


def natural_images(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Piecewise-smooth colour regions (Voronoi) with shading, texture, soft edges and noise."""
    ys = torch.arange(h).float().view(h, 1).expand(h, w)
    xs = torch.arange(w).float().view(1, w).expand(h, w)
    out = []
    for _ in range(b):
        k = int(torch.randint(4, 12, (1,), generator=gen))
        seeds = torch.rand(k, 2, generator=gen) * torch.tensor([h, w])
        lab = ((ys[None] - seeds[:, :1, None]) ** 2 + (xs[None] - seeds[:, 1:, None]) ** 2).argmin(0)
        img = (torch.rand(k, 3, generator=gen) * 200 + 25)[lab].permute(2, 0, 1)
        slope = (torch.rand(k, 3, 2, generator=gen) - 0.5) * 60 / max(h, w)
        img = img + (slope[lab][..., 0] * ys[..., None] + slope[lab][..., 1] * xs[..., None]).permute(2, 0, 1)
        freq = torch.rand(k, 2, generator=gen) * 0.5
        img = img + (torch.rand(k, generator=gen) * 12)[lab] * torch.sin(freq[lab, 0] * ys + freq[lab, 1] * xs)
        img = F.avg_pool2d(img[None], 3, 1, 1, count_include_pad=False)[0]
        out.append((img + 4 * torch.randn(3, h, w, generator=gen)).clamp(0, 255))
    return torch.stack(out)


def noise_images(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=gen) * 255


def make_logits(images: torch.Tensor, gen: torch.Generator, k: int = 2) -> torch.Tensor:
    """Smooth random field + a colour-correlated term + pixel noise (decoder-like logits)."""
    b, _, h, w = images.shape
    smooth = F.interpolate(torch.randn(b, k, 7, 7, generator=gen), size=(h, w), mode="bicubic") * 2
    proj = torch.randn(b, k, 3, generator=gen) / 40
    col = torch.einsum("bkc,bchw->bkhw", proj, images - images.mean((2, 3), keepdim=True))
    return smooth + col + 0.3 * torch.randn(b, k, h, w, generator=gen)


def loss_and_grad(images, logits, method, ds):  # noqa: ANN001, ANN201
    z = logits.clone().requires_grad_()
    loss = dense_crf_loss(torch.softmax(z, 1), images, weight=1.0, method=method, downsample=ds)
    loss.backward()
    return loss.detach(), z.grad


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _batch(side: int, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = natural_images(batch, side, side, gen)
    return images.to(device), make_logits(images, gen).to(device)


def peak_one(method: str, ds: int | None, side: int, batch: int, device: str) -> dict:
    """Peak memory of one fwd+bwd (run in a fresh process: VmHWM is per process)."""
    images, logits = _batch(side, batch, device)
    rss0 = _vm("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    loss_and_grad(images, logits, method, ds)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else _vm("VmHWM") - rss0
    return {"peak_mb": peak / 2**20}


def time_interleaved(cases: list, side: int, batch: int, device: str, reps: int) -> list[float]:
    """Min over ``reps`` rounds of fwd+bwd time; every round runs all cases once (interleaved)."""
    images, logits = _batch(side, batch, device)
    for method, ds in cases:  # warm-up
        loss_and_grad(images, logits, method, ds)
    best = [float("inf")] * len(cases)
    for _ in range(reps):
        for i, (method, ds) in enumerate(cases):
            _sync(device)
            t = time.perf_counter()
            loss_and_grad(images, logits, method, ds)
            _sync(device)
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def _vm(field: str) -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(*args: object) -> dict:
    """Run ``peak_one`` in a fresh process so that the CPU peak RSS (VmHWM) is its own."""
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def fidelity(method: str, ds: int | None, refs: list) -> tuple[float, float, float]:
    """Mean gradient cosine, mean relative loss error, min cosine over the reference images."""
    cos, rel = [], []
    for images, logits, loss_ref, g_ref in refs:
        loss, g = loss_and_grad(images, logits, method, ds)
        cos.append(F.cosine_similarity(g.flatten(), g_ref.flatten(), 0).item())
        rel.append((loss / loss_ref - 1).item())
    return sum(cos) / len(cos), sum(rel) / len(rel), min(cos)


def _load() -> str:
    try:
        return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover
        return "load average n/a"


def reference(dev: str, n_ref: int, path: str | None) -> dict:
    if path and os.path.exists(path):
        refs = torch.load(path)
        if len(refs["natural"]) >= n_ref:
            refs["natural"] = refs["natural"][:n_ref]
            return refs
    gen = torch.Generator().manual_seed(123)
    refs = {"natural": [], "noise": [], "time": 0.0}
    for kind, fn, count in (("natural", natural_images, n_ref), ("noise", noise_images, 1)):
        for _ in range(count):
            img = fn(1, 224, 224, gen)
            lg = make_logits(img, gen)
            img, lg = img.to(dev), lg.to(dev)
            t = time.perf_counter()
            loss, g = loss_and_grad(img, lg, "exact", 1)
            _sync(dev)
            refs["time"] = time.perf_counter() - t
            refs[kind].append((img.cpu(), lg.cpu(), loss.cpu(), g.cpu()))
    if path:
        torch.save(refs, path)
    return refs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="fewer reference images and repeats")
    ap.add_argument("--refs", help="cache file for the exact full-resolution references")
    ap.add_argument("--reps", type=int, default=None, help="timing rounds (default 5, quick 2)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(peak_one(*json.loads(a.child))))
        return
    dev = a.device
    reps = a.reps or (2 if a.quick else 5)
    n_ref = 2 if a.quick else 4
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, {_load()}")
    refs = reference(dev, n_ref, a.refs)
    refs = {k: [tuple(x.to(dev) for x in r) for r in v] for k, v in refs.items() if k != "time"} | {
        "time": refs["time"]}
    auto = resolve_crf_method(224, 224, dev)
    rows = [
        (f"lattice f={auto.downsample} groups (auto)", "lattice", None),
        ("lattice f=4 groups", "lattice", 4),
        ("lattice f=2 groups", "lattice", 2),
        ("lattice full res", "lattice", 1),
        ("exact f=4 groups", "exact", 4),
    ]
    print("\n32 x 2 x 224^2, fwd+bwd (min of interleaved rounds); fidelity vs exact full-res gradient "
          f"(natural: mean [min] of {n_ref} images, noise: 1 image)")
    times = time_interleaved([(m, ds) for _, m, ds in rows], 224, 32, dev, reps)
    print(f"{'method':30s} {'time s':>7s} {'peak MB':>8s} {'cos nat':>15s} {'rel nat':>8s} "
          f"{'cos noise':>9s} {'rel noise':>9s}")
    for (name, method, ds), t in zip(rows, times):
        r = run_child(method, ds, 224, 32, dev)
        cn, rn, cmin = fidelity(method, ds, refs["natural"])
        cz, rz, _ = fidelity(method, ds, refs["noise"])
        print(f"{name:30s} {t:7.3f} {r['peak_mb']:8.0f} {cn:7.4f} [{cmin:.4f}] {rn:+8.3f} {cz:9.4f} {rz:+9.3f}")
    print(f"{'exact full res':30s} {refs['time'] * 32:7.1f}* {'n/a':>8s} {1.0:7.4f} {'':8s} {0.0:+8.3f} "
          f"{1.0:9.4f} {0.0:+9.3f}   (* 1 image timed x 32, extrapolated)")

    print("\nScaling (batch 4 x 2 classes, natural images): fwd+bwd time, us per pixel, peak MB")
    print(f"{'side':>5s} {'auto cfg':>12s} {'auto s':>8s} {'us/px':>7s} {'peak MB':>8s} {'lat full s':>10s} "
          f"{'us/px':>7s} {'peak MB':>8s}")
    sides = (112, 224, 448) if a.quick else (112, 224, 448, 896)
    for side in sides:
        cfg = resolve_crf_method(side, side, dev)
        ta, tf = time_interleaved([(cfg.method, None), ("lattice", 1)], side, 4, dev, max(2, reps - 2))
        pa = run_child(cfg.method, None, side, 4, dev)["peak_mb"]
        pf = run_child("lattice", 1, side, 4, dev)["peak_mb"]
        px = 4 * side * side
        print(f"{side:5d} {cfg.method + ' f=' + str(cfg.downsample):>12s} {ta:8.3f} {1e6 * ta / px:7.3f} "
              f"{pa:8.0f} {tf:10.3f} {1e6 * tf / px:7.3f} {pf:8.0f}")
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
