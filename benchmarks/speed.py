"""Speed ratios of F-CAM, measured side by side in one run (interleaved rounds, minimum over rounds).

Usage: ``python benchmarks/speed.py [--arch resnet50] [--batch 8] [--size 224] [--reps 5]``

(a) one training step (``fcam_plugin.objective.Objective`` + backward + SGD step: seeds from
    GradCAM++, decoder, losses) **with** the dense CRF loss (auto method) vs **without** it
    (``crf_weight = 0``), same batch, same model; plus the CRF loss alone (fwd + bwd) on the
    decoder's probabilities. Target: with / without <= 1.3. Also the step without the
    flip-consistency term (``flip_weight = 0``: no mirrored forward), and the step after the
    early-learning anchor is taken (one more decoder forward, without gradient).
(b) one upscaler call without classes (``up(input_tensor=x)``: the class-agnostic map, and
    ``up.maps(x)`` on-device) vs one call of the wrapped pytorch-grad-cam ``GradCAMPlusPlus`` on the
    same batch. Target <= 0.7 (the decoder needs no backward pass through the classifier). Also the
    call with ``targets`` (the class gate, on by default when classes are named: the wrapped
    method's CAM at three layers for the requested class and its ``gate_rivals`` rivals, one
    backward pass over 1 + rivals copies of the batch), and the class-agnostic call with the
    test-time flip (``flip_average=True``), which runs the classifier and the decoder twice.

Random weights (``weights=None``): timings do not depend on the values. CPU threads = torch default.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Callable

import torch
import torchvision
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fcam_plugin import FCAMUpscaler  # noqa: E402
from fcam_plugin._state import frozen_eval  # noqa: E402
from fcam_plugin.losses.crf import dense_crf_loss, resolve_crf_method  # noqa: E402
from fcam_plugin.taps import FeatureTaps  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crf import natural_images  # noqa: E402


def interleaved(cases: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Min wall time of each case over ``reps`` rounds; each round runs every case once."""
    for fn in cases.values():  # warm-up
        fn()
    best = {k: float("inf") for k in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t)
    return best


def _load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.arch}, batch {a.batch}, {a.size}^2, "
          f"threads {torch.get_num_threads()}, {_load()}")
    model = getattr(torchvision.models, a.arch)(weights=None, num_classes=200).eval()
    up = FCAMUpscaler(model, GradCAMPlusPlus)
    up.fitted = True  # timing only: a random decoder costs the same as a trained one
    cfg = up.config
    gen = torch.Generator().manual_seed(0)
    rgb = natural_images(a.batch, a.size, a.size, gen)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    x = (rgb / 255 - mean) / std
    labels = torch.randint(0, 200, (a.batch,), generator=gen)
    crf_weight = cfg.crf_weight
    print(f"CRF: {resolve_crf_method(a.size, a.size)}")

    # ---------------------------------------------------------------- (a) training step
    opt = torch.optim.SGD(up.decoder.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4)
    step_gen = torch.Generator().manual_seed(1)
    objective = up.objective()

    anchor = copy.deepcopy(up.decoder).requires_grad_(False).eval()

    def step(with_crf: bool, with_flip: bool = True, anchored: bool = False) -> None:
        changes = ({} if with_crf else {"crf_weight": 0.0}) | ({} if with_flip else {"flip_weight": 0.0})
        with cfg.overridden(**changes):
            terms = objective(up.decoder, taps, x, labels, 1.0, step_gen, False, anchor=anchor if anchored else None)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()

    probs = torch.softmax(torch.randn(a.batch, 2, a.size, a.size, generator=gen), 1)

    def crf_only() -> None:
        p = probs.clone().requires_grad_()
        dense_crf_loss(p, rgb, weight=crf_weight).backward()

    up.decoder.train()
    with frozen_eval(model), FeatureTaps(model, up.taps) as taps:
        t = interleaved({"with": lambda: step(True), "without": lambda: step(False), "crf": crf_only,
                         "noflip": lambda: step(True, False), "anchored": lambda: step(True, anchored=True)}, a.reps)
    print("\n(a) one training step (seeds + decoder + losses + backward + SGD), s")
    print(f"  with CRF {t['with']:.3f}   without CRF {t['without']:.3f}   CRF loss alone (fwd+bwd) "
          f"{t['crf']:.3f}")
    print(f"  ratio with / without = {t['with'] / t['without']:.2f}  (target <= 1.3)")
    print(f"  without the flip-consistency term (flip_weight=0) {t['noflip']:.3f}: ratio default / that = "
          f"{t['with'] / t['noflip']:.2f}")
    print(f"  a step after the early-learning anchor is taken {t['anchored']:.3f}: ratio that / default = "
          f"{t['anchored'] / t['with']:.2f}")

    # ---------------------------------------------------------------- (b) inference call
    targets = [ClassifierOutputTarget(int(c)) for c in labels]
    layer = dict(model.named_modules())[up.taps[-1].name]  # the upscaler's default target layer
    gradcam = GradCAMPlusPlus(model=model, target_layers=[layer])

    def flipped() -> object:
        """The class-agnostic call with the test-time flip switched on for it."""
        with up.config.overridden(flip_average=True):
            return up(input_tensor=x)

    t = interleaved({
        "up": lambda: up(input_tensor=x),
        "gate": lambda: up(input_tensor=x, targets=targets),
        "flip": flipped,
        "maps": lambda: up.maps(x),
        "gradcam": lambda: gradcam(input_tensor=x, targets=targets),
        "classifier": lambda: torch.no_grad()(model)(x),
    }, a.reps)
    print("\n(b) one call on the same batch, s")
    print(f"  up(input_tensor=x) {t['up']:.3f}   up.maps(x) {t['maps']:.3f}   "
          f"GradCAMPlusPlus {t['gradcam']:.3f}   classifier forward (no_grad) {t['classifier']:.3f}")
    print(f"  ratio class-agnostic call / GradCAM++ = {t['up'] / t['gradcam']:.2f} (maps: {t['maps'] / t['gradcam']:.2f})"
          "  (target <= 0.7)")
    print(f"  up(input_tensor=x, targets): the class gate (gate_dilation={up.config.gate_dilation}, "
          f"gate_rivals={up.config.gate_rivals}) {t['gate']:.3f}: ratio / GradCAM++ = {t['gate'] / t['gradcam']:.2f}")
    print(f"  with the test-time flip (flip_average=True, no targets) {t['flip']:.3f}: ratio / GradCAM++ = "
          f"{t['flip'] / t['gradcam']:.2f}")
    print(f"\n{_load()}")


if __name__ == "__main__":
    main()
