"""CUDA paths (issue 16): CRF lattice, AMP, pinned loaders, CUDA vs CPU maps, DDP on NCCL.

Tests marked ``gpu`` run only where CUDA is available (tests/conftest.py skips them elsewhere).
Tests taking the ``device`` fixture run on the CPU, and again on CUDA where it exists.
``python benchmarks/gpu.py`` runs this file, then the GPU benchmark, in one go.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from test_crf import FIDELITY_CASES, _fidelity, _logits, _natural
from test_distributed import PER_RANK_BATCH, WORLD, _Blobs, _model, _rank_ordered_single_process_loader
from test_model_untouched import make_model, run_untouched
from test_resume import Loader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.checkpoint import read_checkpoint
from fcam_plugin.losses.crf import DenseCRFLoss, _features, dense_crf_loss, exact_filter, permutohedral_filter
from fcam_plugin.seeds import sample_seeds

CONFIG = FCAMConfig(decoder_channels=(8, 8, 8, 8, 8))
gpu = pytest.mark.gpu


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """No TF32 in CUDA matmuls and convolutions, so that CUDA and CPU float32 results compare tightly."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _finite_history(up: FCAMUpscaler) -> bool:
    return bool(up.history) and all(math.isfinite(v) for row in up.history for v in row.values())


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0).item()


# ============================================================ core tests on every device
def test_fit_and_call_on_device(device: torch.device) -> None:
    """Fit from a (pinned on CUDA) DataLoader of CPU tensors, then every way of getting maps."""
    model = tiny_cnn().to(device).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 0])), batch_size=2, pin_memory=device.type == "cuda")
    up = FCAMUpscaler(model, GradCAMPlusPlus, config=CONFIG).fit(loader, epochs=1, max_steps=2, progress=False)
    assert _finite_history(up)
    assert all(p.device.type == device.type for p in up.decoder.parameters())
    maps = up.maps(x[:2])  # CPU input, moved to the model's device
    assert maps.device.type == device.type and maps.shape == (2, 32, 32)
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    called = up(input_tensor=x[:2].to(device), targets=[ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    assert isinstance(called, np.ndarray) and called.dtype == np.float32 and called.shape == (2, 32, 32)
    assert np.isfinite(called).all() and called.min() >= 0 and called.max() <= 1
    assert up.cams(x[:2], [0, 1]).device.type == device.type


def test_seeds_with_a_cpu_generator_on_any_device(device: torch.device) -> None:
    """A CPU generator draws the same seeds for CAMs on any device (it raised on CUDA before)."""
    cam = torch.zeros(2, 1, 32, 32)
    cam[..., 8:24, 6:20] = 1
    cam[1] = cam[1].flip(-1) * 0.7 + 0.1
    want = sample_seeds(cam, 3, 3, generator=torch.Generator().manual_seed(0))
    got = sample_seeds(cam.to(device), 3, 3, generator=torch.Generator().manual_seed(0))
    assert got.device.type == device.type
    assert torch.equal(got.cpu(), want)
    on_device = [sample_seeds(cam.to(device), 3, 3, generator=torch.Generator(device=device).manual_seed(1))
                 for _ in range(2)]
    assert torch.equal(*on_device)  # a generator on the CAMs' device is reproducible too
    assert on_device[0].device.type == device.type


@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_crf_module_on_device(device: torch.device, method: str) -> None:
    """DenseCRFLoss on the device: float32 scalar there, gradient there, same value as on the CPU."""
    gen = torch.Generator().manual_seed(4)
    images = _natural(2, 40, 40, gen)
    logits = _logits(images, gen)
    loss_fn = DenseCRFLoss(50.0, 20.0, 1e-3, method)
    want = loss_fn(torch.softmax(logits, 1), images)
    z = logits.to(device).requires_grad_()
    got = loss_fn(torch.softmax(z, 1), images.to(device))
    got.backward()
    assert got.device.type == device.type and got.dtype == torch.float32
    assert z.grad is not None and z.grad.device.type == device.type and bool(torch.isfinite(z.grad).all())
    assert abs(got.item() / want.item() - 1) < 1e-4


# ============================================================ CRF on CUDA
@gpu
def test_lattice_on_cuda_equals_cpu_float64() -> None:
    """Same lattice on both devices (sort, searchsorted, scatter, index_add): equal up to rounding."""
    gen = torch.Generator().manual_seed(7)
    images = _natural(2, 40, 36, gen)
    feats = _features(images, 1, 10.0, 20.0).double()
    values = torch.rand(2, 2, 40 * 36, generator=gen, dtype=torch.float64)
    want = permutohedral_filter(feats, values)
    got = permutohedral_filter(feats.cuda(), values.cuda())
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(exact_filter(feats.cuda(), values.cuda(), 7 * 1440).cpu(), exact_filter(feats, values),
                               rtol=1e-10, atol=1e-12)


@gpu
@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_block_groups_on_cuda_equal_cpu_float64(method: str) -> None:
    """The reduced resolution (two colour groups per 3x3 block, ``_points``) on CUDA: loss and gradient."""
    gen = torch.Generator().manual_seed(9)
    images = _natural(2, 50, 47, gen).double()  # partial border blocks
    probs = torch.softmax(torch.randn(2, 2, 50, 47, generator=gen, dtype=torch.float64), 1)
    out = []
    for dev in ("cpu", "cuda"):
        p = probs.to(dev).requires_grad_()
        loss = dense_crf_loss(p, images.to(dev), 20.0, 15.0, 1.0, method, downsample=3)
        out.append((loss.cpu(), torch.autograd.grad(loss, p)[0].cpu()))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-9, atol=0)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-9, atol=1e-12)


def _fidelity_on_cuda(h: int, sxy: float, srgb: float, natural: bool) -> tuple[float, float]:
    """test_crf's ``_fidelity`` (same seeds, same images) with the tensors on CUDA."""
    gen = torch.Generator().manual_seed(h + int(sxy) + int(srgb))
    images = _natural(2, h, h, gen) if natural else torch.rand(2, 3, h, h, generator=gen) * 255
    logits = _logits(images, gen)
    out = []
    for method in ("exact", "lattice"):
        z = logits.cuda().requires_grad_()
        loss = dense_crf_loss(torch.softmax(z, 1), images.cuda(), sxy, srgb, 1.0, method, downsample=1)
        (g,) = torch.autograd.grad(loss, z)
        out.append((loss.item(), g))
    return out[1][0] / out[0][0] - 1, _cos(out[1][1], out[0][1])


@gpu
@pytest.mark.parametrize(("h", "sxy", "srgb", "natural", "rel_bound", "cos_bound"), FIDELITY_CASES)
def test_lattice_fidelity_on_cuda(h: int, sxy: float, srgb: float, natural: bool, rel_bound: float,
                                  cos_bound: float) -> None:
    """test_crf.py's fidelity bounds, on CUDA, and the same figures as on the CPU."""
    with strict_fp32():
        rel, cos = _fidelity_on_cuda(h, sxy, srgb, natural)
    rel_cpu, cos_cpu = _fidelity(h, sxy, srgb, natural)
    print(f"\ncuda lattice {h}^2 sxy={sxy} srgb={srgb}: rel.err={rel:+.4f} (cpu {rel_cpu:+.4f}) "
          f"grad cos={cos:.5f} (cpu {cos_cpu:.5f})")
    assert abs(rel) < rel_bound
    assert cos > cos_bound
    assert abs(rel - rel_cpu) < 1e-3 and abs(cos - cos_cpu) < 1e-3


@gpu
def test_auto_default_fidelity_96px_on_cuda() -> None:
    """test_crf.py's bounds for the auto default (lattice, 3x3 blocks in two colour groups), on CUDA."""
    gen = torch.Generator().manual_seed(10)
    images = _natural(1, 96, 96, gen)
    logits = _logits(images, gen)
    out = []
    with strict_fp32():
        for method, ds in (("exact", 1), ("auto", None)):
            z = logits.cuda().requires_grad_()
            loss = dense_crf_loss(torch.softmax(z, 1), images.cuda(), weight=1.0, method=method, downsample=ds)
            out.append((loss.item(), torch.autograd.grad(loss, z)[0]))
    rel, cos = out[1][0] / out[0][0] - 1, _cos(out[1][1], out[0][1])
    print(f"\ncuda auto 96^2: rel.err={rel:+.3f} grad cos={cos:.4f}")
    assert abs(rel) < 0.1
    assert cos > 0.98


@gpu
@pytest.mark.parametrize("method", ["exact", "lattice", "auto"])
def test_crf_gradient_under_autocast_float16(method: str) -> None:
    """Half probabilities from a float16 layer under autocast: float32 loss, finite float16 gradient
    (scaled as GradScaler scales it) equal to the float32 one."""
    gen = torch.Generator().manual_seed(6)
    images = _natural(2, 48, 48, gen)
    logits = _logits(images, gen).cuda()
    images = images.cuda()
    torch.manual_seed(0)
    layer = nn.Conv2d(2, 2, 1).cuda()  # stands for the decoder's last layer
    scaler = torch.amp.GradScaler("cuda")
    z = logits.clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        out = layer(z)
        assert out.dtype == torch.float16
        loss = dense_crf_loss(torch.softmax(out, 1).half(), images.half(), method=method)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    (g16,) = torch.autograd.grad(scaler.scale(loss), z)
    assert bool(torch.isfinite(g16).all())
    g16 = g16 / scaler.get_scale()
    z32 = logits.clone().requires_grad_()
    with strict_fp32():
        ref = dense_crf_loss(torch.softmax(layer(z32), 1), images, method=method)
        (g32,) = torch.autograd.grad(ref, z32)
    print(f"\nautocast {method}: loss rel.err={loss.item() / ref.item() - 1:+.2e} grad cos={_cos(g16, g32):.5f}")
    assert abs(loss.item() / ref.item() - 1) < 1e-2
    assert _cos(g16, g32) > 0.99


# ============================================================ fit and call on CUDA
@gpu
def test_fit_amp_pinned_loader_finite_and_model_untouched() -> None:
    """fit(amp=True) from a pinned DataLoader: finite losses, the model and the caller's RNGs untouched."""
    model = make_model().cuda()  # ResNet-18 in train(), frozen stage, eval() stage, .grad set, user hooks
    g = torch.Generator().manual_seed(2)
    data = TensorDataset(torch.randn(12, 3, 64, 64, generator=g), torch.tensor([0, 1, 2] * 4))
    loader = DataLoader(data, batch_size=4, shuffle=True, pin_memory=True)
    up = run_untouched(model, "construct", lambda: FCAMUpscaler(model, GradCAMPlusPlus, config=CONFIG))
    rngs = torch.get_rng_state(), torch.cuda.get_rng_state()
    run_untouched(model, "fit amp", lambda: up.fit(loader, epochs=1, max_steps=3, amp=True, progress=False))
    assert torch.equal(rngs[0], torch.get_rng_state()) and torch.equal(rngs[1], torch.cuda.get_rng_state())
    assert _finite_history(up), up.history
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 for p in up.decoder.parameters())
    x = data.tensors[0][:2]
    maps = run_untouched(model, "call", lambda: up(input_tensor=x))
    assert isinstance(maps, np.ndarray) and maps.shape == (2, 64, 64) and np.isfinite(maps).all()


@gpu
def test_amp_step_losses_match_float32() -> None:
    """One step's loss terms with the decoder under float16 autocast equal the float32 ones."""
    model = tiny_cnn().cuda().eval()
    loader = [(torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 1, 2, 0]))]
    history = {}
    for amp in (False, True):
        up = FCAMUpscaler(model, GradCAMPlusPlus, config=CONFIG)
        up.fit(loader, epochs=1, max_steps=1, amp=amp, progress=False)
        history[amp] = up.history[0]
    print(f"\nfloat32 {history[False]}\namp     {history[True]}")
    assert history[True].keys() == history[False].keys()
    for key in ("pce", "crf", "size"):
        assert history[True][key] == pytest.approx(history[False][key], rel=2e-2, abs=1e-9), key
    assert abs(history[True]["total"] - history[False]["total"]) < 1e-2  # pce and size nearly cancel in the total


@gpu
def test_amp_resume_on_cuda_matches_uninterrupted(tmp_path: Path) -> None:
    """A CUDA AMP run stopped by max_steps and resumed (GradScaler state included) ends where an
    uninterrupted one does (close, not bit-identical: CUDA atomics reorder sums)."""
    model = tiny_cnn().cuda()
    whole = FCAMUpscaler(model, "GradCAM", config=CONFIG).fit(Loader(), epochs=2, seed=3, amp=True, progress=False)
    ckpt = tmp_path / "run.pt"
    FCAMUpscaler(model, "GradCAM", config=CONFIG).fit(
        Loader(), epochs=2, seed=3, amp=True, progress=False, checkpoint=ckpt, max_steps=3)
    assert read_checkpoint(ckpt)["training"]["scaler"] is not None
    resumed = FCAMUpscaler(model, "GradCAM", config=CONFIG).fit(
        Loader(), epochs=2, seed=3, amp=True, progress=False, checkpoint=ckpt, resume=ckpt)
    want, got = whole.decoder.state_dict(), resumed.decoder.state_dict()
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-4, rtol=1e-3), key
    assert len(resumed.history) == len(whole.history) == 2
    for a, b in zip(resumed.history, whole.history):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-5)


@gpu
@pytest.mark.parametrize("tf32", [False, True], ids=["strict-fp32", "default-tf32"])
def test_maps_on_cuda_equal_maps_on_cpu(tmp_path: Path, tf32: bool) -> None:
    """A decoder fitted on the CPU, saved, loaded for the same classifier on CUDA: the same maps."""
    model = tiny_cnn().eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    cpu_up = FCAMUpscaler(model, GradCAMPlusPlus, config=CONFIG)
    cpu_up.fit([(x, torch.tensor([0, 1, 2]))], epochs=1, max_steps=2, progress=False)
    cpu_up.save(tmp_path / "fcam.pt")
    cuda_up = FCAMUpscaler.load(tmp_path / "fcam.pt", copy.deepcopy(model).cuda(), GradCAMPlusPlus)
    with strict_fp32() if not tf32 else contextlib.nullcontext():
        got, called = cuda_up.maps(x), cuda_up(input_tensor=x.cuda())
    want, called_cpu = cpu_up.maps(x), cpu_up(input_tensor=x)
    assert got.device.type == "cuda"
    maps_tol = 1e-2 if tf32 else 1e-4
    print(f"\n{'tf32' if tf32 else 'fp32'}: max |maps cuda - cpu| = {(got.cpu() - want).abs().max():.2e}, "
          f"calls {np.abs(called - called_cpu).max():.2e}")
    torch.testing.assert_close(got.cpu(), want, atol=maps_tol, rtol=0)
    # The call stretches each map to [0, 1]: differences grow by 1 / (max - min) of the probabilities.
    span = (want.flatten(1).amax(1) - want.flatten(1).amin(1)).numpy()
    assert (np.abs(called - called_cpu).max(axis=(1, 2)) <= 2 * maps_tol / span + 1e-6).all()


# ============================================================ DDP on NCCL
def _cuda_fit(loader: DataLoader | list, device: torch.device) -> tuple[dict[str, torch.Tensor], bool]:
    """test_distributed's fit, with the classifier on ``device``; also whether SyncBatchNorm was used."""
    from pytorch_grad_cam import GradCAM

    config = FCAMConfig(decoder_channels=(16, 16, 8, 8, 8), crf_method="exact", crf_weight=1e-6)
    up = FCAMUpscaler(_model().to(device), GradCAM, config=config)
    up.fit(loader, epochs=1, seed=3, progress=False)
    synced = any(isinstance(m, nn.SyncBatchNorm) for m in up.decoder.modules())
    return {k: v.detach().cpu().clone() for k, v in up.decoder.state_dict().items()}, synced


def _nccl_worker(rank: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        with strict_fp32():
            loader = DataLoader(_Blobs(), batch_size=PER_RANK_BATCH, shuffle=False, pin_memory=True)  # sharded by fit
            state, synced = _cuda_fit(loader, torch.device("cuda", rank))
        if rank == 0:
            torch.save({"state": state, "synced": synced}, out)
    finally:
        dist.destroy_process_group()


def _nccl_ready() -> bool:
    return dist.is_available() and dist.is_nccl_available() and torch.cuda.device_count() >= WORLD


@gpu
@pytest.mark.skipif(not _nccl_ready(), reason=f"needs NCCL and {WORLD} CUDA devices")
def test_nccl_fit_matches_single_process(tmp_path: Path) -> None:
    """DDP + SyncBatchNorm on NCCL, 2 GPUs, equals one GPU on the same global batch (as the gloo test)."""
    out = str(tmp_path / "rank0.pt")
    mp.spawn(_nccl_worker, args=(str(tmp_path / "init"), out), nprocs=WORLD, join=True)
    saved = torch.load(out, weights_only=True)
    assert saved["synced"], "the decoder's BatchNorm layers were not converted to SyncBatchNorm"
    with strict_fp32():
        single, _ = _cuda_fit(_rank_ordered_single_process_loader(), torch.device("cuda", 0))
    assert saved["state"].keys() == single.keys()
    for key in single:
        assert torch.allclose(saved["state"][key].float(), single[key].float(), atol=1e-4, rtol=1e-3), key
