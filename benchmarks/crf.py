"""Benchmark of the dense CRF loss: speed, memory and fidelity of the lattice / exact paths.

Usage: ``python benchmarks/crf.py [--device cpu|cuda] [--quick]``

Fidelity reference = exact full-resolution loss (chunked dense affinity) on a few images;
cosine is between gradients w.r.t. the *logits* (through a softmax), K = 2.
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


def time_one(method: str, ds: int | None, side: int, batch: int, device: str, reps: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    images = natural_images(batch, side, side, gen).to(device)
    logits = make_logits(images.cpu(), gen).to(device)
    rss0 = _vm("VmRSS")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    loss_and_grad(images, logits, method, ds)  # warm-up (also sets the memory peak)
    _sync(device)
    peak = (torch.cuda.max_memory_allocated() - base) if device == "cuda" else _vm("VmHWM") - rss0
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        loss_and_grad(images, logits, method, ds)
        _sync(device)
        times.append(time.perf_counter() - t)
    return {"time": min(times), "peak_mb": peak / 2**20}


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
    """Run ``time_one`` in a fresh process so that the CPU peak RSS (VmHWM) is its own."""
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def fidelity(method: str, ds: int | None, refs: list) -> tuple[float, float]:
    cos, rel = [], []
    for images, logits, loss_ref, g_ref in refs:
        loss, g = loss_and_grad(images, logits, method, ds)
        cos.append(F.cosine_similarity(g.flatten(), g_ref.flatten(), 0).item())
        rel.append((loss / loss_ref - 1).item())
    return sum(cos) / len(cos), sum(rel) / len(rel)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="fewer reference images and repeats")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(time_one(*json.loads(a.child))))
        return
    dev, reps = a.device, (1 if a.quick else 3)
    n_ref = 2 if a.quick else 4
    print(f"torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(123)
    refs = {}
    t_full = 0.0
    for kind, fn in (("natural", natural_images), ("noise", noise_images)):
        refs[kind] = []
        for _ in range(n_ref if kind == "natural" else 1):
            img = fn(1, 224, 224, gen).to(dev)
            lg = make_logits(img.cpu(), gen).to(dev)
            t = time.perf_counter()
            loss, g = loss_and_grad(img, lg, "exact", 1)
            _sync(dev)
            t_full = time.perf_counter() - t
            refs[kind].append((img, lg, loss, g))
    auto = resolve_crf_method(224, 224, dev)
    rows = [
        (f"lattice 1/{auto.downsample} (auto)", "lattice", None),
        ("lattice 1/4", "lattice", 4),
        ("lattice full res", "lattice", 1),
        ("exact 1/4", "exact", 4),
        ("exact 1/2", "exact", 2),
    ]
    print("\n32 x 2 x 224^2, fwd+bwd (min of repeats); fidelity vs exact full-res gradient "
          f"(natural: mean of {n_ref} images, noise: 1 image)")
    print(f"{'method':24s} {'time s':>8s} {'peak MB':>8s} {'cos nat':>8s} {'rel nat':>8s} "
          f"{'cos noise':>9s} {'rel noise':>9s}")
    for name, method, ds in rows:
        r = run_child(method, ds, 224, 32, dev, reps)
        cn, rn = fidelity(method, ds, refs["natural"])
        cz, rz = fidelity(method, ds, refs["noise"])
        print(f"{name:24s} {r['time']:8.3f} {r['peak_mb']:8.0f} {cn:8.4f} {rn:+8.3f} {cz:9.4f} {rz:+9.3f}")
    print(f"{'exact full res':24s} {t_full * 32:8.1f}* {'n/a':>8s} {1.0:8.4f} {0.0:+8.3f} "
          f"{1.0:9.4f} {0.0:+9.3f}   (* 1 image timed x 32, extrapolated)")

    print("\nScaling (batch 4 x 2 classes, natural images): time fwd+bwd, us per pixel")
    print(f"{'side':>5s} {'auto cfg':>14s} {'auto s':>8s} {'us/px':>7s} {'lat full s':>10s} {'us/px':>7s} "
          f"{'peak MB':>8s}")
    sides = (112, 224, 448) if a.quick else (112, 224, 448, 896)
    for side in sides:
        cfg = resolve_crf_method(side, side, dev)
        r = run_child(cfg.method, None, side, 4, dev, reps)
        f = run_child("lattice", 1, side, 4, dev, 1)
        px = 4 * side * side
        print(f"{side:5d} {cfg.method + ' 1/' + str(cfg.downsample):>14s} {r['time']:8.3f} "
              f"{1e6 * r['time'] / px:7.3f} {f['time']:10.3f} {1e6 * f['time'] / px:7.3f} {f['peak_mb']:8.0f}")


if __name__ == "__main__":
    main()
