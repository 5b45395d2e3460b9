"""Peak memory of explaining and evaluating a stream of images: 1x versus 10x as many.

``python benchmarks/memory.py [--images 64] [--size 64] [--batch 32]``

Each scale runs in a fresh child process (peak RSS = the kernel's ``VmHWM``, which cannot be
reset within a process). A child builds a ResNet-18 (random weights, 3 classes), fits an F-CAM
decoder for one step, then streams ``n`` images batch by batch through ``up.maps`` and, when
``fcam_plugin.metrics`` is installed, through ``LocalizationEvaluator.update``. Memory must not
grow with ``n``: nothing is kept per image (maps are dropped after each batch, the metrics keep
fixed-size histograms and counters).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(n_images: int, size: int, batch: int) -> dict[str, float]:
    import torch
    import torchvision

    from fcam_plugin import FCAMUpscaler

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3)
    up = FCAMUpscaler(model, "GradCAMPlusPlus")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, size, size, generator=g)
    up.fit([(x, torch.tensor([0, 1, 2, 0]))], epochs=1, progress=False, max_steps=1)
    try:
        from fcam_plugin.metrics import LocalizationEvaluator
    except ImportError:  # metrics written by another module; measure maps alone
        evaluator = None
    else:
        evaluator = LocalizationEvaluator(num_thresholds=100)

    def stream(count: int) -> None:
        for start in range(0, count, batch):
            b = min(batch, count - start)
            images = torch.randn(b, 3, size, size, generator=g)
            masks = torch.zeros(b, size, size)
            masks[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
            maps = up.maps(images)
            if evaluator is not None:
                evaluator.update(maps.cpu().numpy(), masks=masks.numpy())

    stream(batch)  # warm-up: allocator pools and lazily-initialised kernels are set up once
    setup = _rss_mb("VmRSS")
    start = time.perf_counter()
    stream(n_images)
    seconds = time.perf_counter() - start
    peak, end = _rss_mb("VmHWM"), _rss_mb("VmRSS")
    summary = evaluator.summary() if evaluator is not None else {}
    return {
        "images": n_images,
        "setup_rss_mb": round(setup, 1),
        "peak_rss_mb": round(peak, 1),
        "end_rss_mb": round(end, 1),
        "growth_mb": round(end - setup, 1),
        "seconds": round(seconds, 2),
        "metrics": bool(summary),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images at 1x (10x is ten times more)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.size, args.batch)))
        return
    rows = []
    for n in (args.images, 10 * args.images):
        out = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--size", str(args.size), "--batch", str(args.batch)],
            check=True, capture_output=True, text=True,
        ).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"ResNet-18, {args.size} px, batch {args.batch}, up.maps"
          + (" + LocalizationEvaluator.update" if rows[0]["metrics"] else "") + ", torch CPU, 1 thread")
    print("| images | peak RSS MB (VmHWM) | RSS after warm-up MB | RSS at end MB | end − warm-up MB | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['images']} | {r['peak_rss_mb']} | {r['setup_rss_mb']} | {r['end_rss_mb']} | {r['growth_mb']} | {r['seconds']} |")
    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak RSS 10x / 1x = {ratio:.3f}")


if __name__ == "__main__":
    main()
