"""Tests of the dense CRF loss (exact path vs brute force, lattice fidelity, API contract)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fcam_plugin.losses.crf import (
    DEFAULT_WEIGHT,
    DenseCRFLoss,
    dense_crf_loss,
    resolve_crf_method,
)


def _natural(b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """Piecewise-smooth colour regions with shading, texture, soft edges and noise (0..255)."""
    ys = torch.arange(h).float().view(h, 1).expand(h, w)
    xs = torch.arange(w).float().view(1, w).expand(h, w)
    out = []
    for _ in range(b):
        k = int(torch.randint(3, 8, (1,), generator=gen))
        seeds = torch.rand(k, 2, generator=gen) * torch.tensor([h, w])
        lab = ((ys[None] - seeds[:, :1, None]) ** 2 + (xs[None] - seeds[:, 1:, None]) ** 2).argmin(0)
        img = (torch.rand(k, 3, generator=gen) * 200 + 25)[lab].permute(2, 0, 1)
        img = img + (torch.rand(k, generator=gen) * 12)[lab] * torch.sin(0.4 * ys + 0.3 * xs)
        img = F.avg_pool2d(img[None], 3, 1, 1, count_include_pad=False)[0]
        out.append((img + 4 * torch.randn(3, h, w, generator=gen)).clamp(0, 255))
    return torch.stack(out)


def _logits(images: torch.Tensor, gen: torch.Generator, k: int = 2) -> torch.Tensor:
    b, _, h, w = images.shape
    smooth = F.interpolate(torch.randn(b, k, 4, 4, generator=gen), size=(h, w), mode="bilinear")
    proj = torch.randn(b, k, 3, generator=gen) / 40
    col = torch.einsum("bkc,bchw->bkhw", proj, images - images.mean((2, 3), keepdim=True))
    return 2 * smooth + col + 0.3 * torch.randn(b, k, h, w, generator=gen)


def _brute(probs: torch.Tensor, images: torch.Tensor, sxy: float, srgb: float) -> torch.Tensor:
    """Double loop over pixel pairs (float64), diagonal included, weight 1."""
    b, _, h, w = probs.shape
    total = probs.new_zeros(())
    for bi in range(b):
        for i in range(h * w):
            yi, xi = divmod(i, w)
            for j in range(h * w):
                yj, xj = divmod(j, w)
                d2 = ((yi - yj) ** 2 + (xi - xj) ** 2) / (2 * sxy**2)
                c2 = ((images[bi, :, yi, xi] - images[bi, :, yj, xj]) ** 2).sum() / (2 * srgb**2)
                total = total + torch.exp(-d2 - c2) * (probs[bi, :, yi, xi] * probs[bi, :, yj, xj]).sum()
    return -total / b


@pytest.mark.parametrize(("h", "w", "sxy", "srgb"), [(5, 6, 3.0, 40.0), (4, 4, 100.0, 15.0)])
def test_exact_matches_brute_force(h: int, w: int, sxy: float, srgb: float) -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(2, 3, h, w, generator=gen, dtype=torch.float64), 1)
    images = torch.rand(2, 3, h, w, generator=gen, dtype=torch.float64) * 255
    probs.requires_grad_()
    got = dense_crf_loss(probs, images, sxy, srgb, weight=1.0, method="exact")
    (g_got,) = torch.autograd.grad(got, probs)
    ref = _brute(probs, images, sxy, srgb)
    (g_ref,) = torch.autograd.grad(ref, probs)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=0)
    torch.testing.assert_close(g_got, g_ref, rtol=1e-9, atol=1e-12)


def test_exact_float32_matches_float64() -> None:
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(1, 2, 8, 8, generator=gen, dtype=torch.float64), 1)
    images = torch.rand(1, 3, 8, 8, generator=gen, dtype=torch.float64) * 255
    ref = dense_crf_loss(probs, images, 5.0, 20.0, 1.0, "exact")
    got = dense_crf_loss(probs.float(), images.float(), 5.0, 20.0, 1.0, "exact")
    assert got.dtype == torch.float32
    assert abs(got.item() / ref.item() - 1) < 1e-5


def test_gradcheck_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(2, 2, 3, 4, generator=gen, dtype=torch.float64), 1)
    images = torch.rand(2, 3, 3, 4, generator=gen, dtype=torch.float64) * 255
    probs.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: dense_crf_loss(p, images, 2.0, 50.0, 1.0, "exact"), (probs,)
    )


def test_exact_chunking_and_downsample_rule() -> None:
    from fcam_plugin.losses.crf import _features, exact_filter

    gen = torch.Generator().manual_seed(3)
    images = _natural(1, 12, 10, gen)
    feats = _features(images, 1, 10.0, 15.0)
    values = torch.rand(1, 2, 120, generator=gen)
    torch.testing.assert_close(
        exact_filter(feats, values, chunk_elements=7 * 120), exact_filter(feats, values)
    )
    # downsample: constant probs on a constant image -> block sums reproduce the full sum
    # up to the (smooth) spatial kernel; the value scales like f**4 * (pooled quadratic form).
    probs = torch.full((1, 1, 16, 16), 0.5)
    flat = torch.full((1, 3, 16, 16), 100.0)
    full = dense_crf_loss(probs, flat, 1000.0, 15.0, 1.0, "exact", downsample=1)
    for f in (2, 4, 3):  # 3 leaves partial border blocks
        red = dense_crf_loss(probs, flat, 1000.0, 15.0, 1.0, "exact", downsample=f)
        assert abs(red.item() / full.item() - 1) < 1e-3


def _fidelity(h: int, sxy: float, srgb: float, natural: bool) -> tuple[float, float]:
    gen = torch.Generator().manual_seed(h + int(sxy) + int(srgb))
    images = _natural(2, h, h, gen) if natural else torch.rand(2, 3, h, h, generator=gen) * 255
    logits = _logits(images, gen)
    out = []
    for method in ("exact", "lattice"):
        z = logits.clone().requires_grad_()
        loss = dense_crf_loss(torch.softmax(z, 1), images, sxy, srgb, 1.0, method, downsample=1)
        (g,) = torch.autograd.grad(loss, z)
        out.append((loss.item(), g.flatten()))
    rel = out[1][0] / out[0][0] - 1
    cos = F.cosine_similarity(out[1][1], out[0][1], 0).item()
    return rel, cos


# (size, sigma_xy, sigma_rgb, natural, |rel. error| bound, cosine bound): bounds are the
# measured values (printed with -s) with a margin.
FIDELITY_CASES = [
    (16, 100.0, 15.0, True, 0.15, 0.99),
    (32, 100.0, 15.0, True, 0.15, 0.99),
    (48, 100.0, 15.0, True, 0.15, 0.99),
    (32, 10.0, 10.0, True, 0.25, 0.98),
    (32, 30.0, 40.0, True, 0.25, 0.98),
    (32, 100.0, 15.0, False, 0.30, 0.98),
]


@pytest.mark.parametrize(("h", "sxy", "srgb", "natural", "rel_bound", "cos_bound"), FIDELITY_CASES)
def test_lattice_fidelity(
    h: int, sxy: float, srgb: float, natural: bool, rel_bound: float, cos_bound: float
) -> None:
    rel, cos = _fidelity(h, sxy, srgb, natural)
    kind = "natural" if natural else "noise"
    print(f"\nlattice {kind} {h}^2 sxy={sxy} srgb={srgb}: rel.err={rel:+.3f} grad cos={cos:.4f}")
    assert abs(rel) < rel_bound
    assert cos > cos_bound


def test_lattice_matches_reference_algorithm() -> None:
    """The vectorised lattice (simplex-level hashing, precomputed neighbours) equals a direct
    transcription of Adams et al.'s algorithm (vertex keys per point, dict hash, blur loops)."""
    from fcam_plugin.losses.crf import LATTICE_GAIN, _features, permutohedral_filter

    gen = torch.Generator().manual_seed(7)
    images = _natural(2, 9, 7, gen)
    feats = _features(images, 1, 4.0, 20.0).double()
    values = torch.rand(2, 2, 63, generator=gen, dtype=torch.float64)
    got = permutohedral_filter(feats, values)
    ref = torch.stack([_reference_lattice(feats[b], values[b]) for b in range(2)]) * LATTICE_GAIN
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)


def _reference_lattice(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Adams et al. (2010) permutohedral filter, point by point (float64, one image)."""
    n, d = x.shape
    d1 = d + 1
    scale = [math.sqrt(2 / 3) * d1 / math.sqrt((i + 1) * (i + 2)) for i in range(d)]
    table: dict[tuple, torch.Tensor] = {}
    verts = []
    for p in range(n):
        cf = [float(x[p, i]) * scale[i] for i in range(d)]
        el = [sum(cf[j:]) - j * cf[j - 1] if j else sum(cf) for j in range(d1)]
        el[d] = -d * cf[d - 1]
        rem0 = [round(e / d1) * d1 for e in el]
        s = sum(rem0) // d1
        res = [el[i] - rem0[i] for i in range(d1)]
        rank = [sum(1 for j in range(d1) if (res[j] > res[i] if j > i else res[j] >= res[i]) and j != i) + s
                for i in range(d1)]
        for i in range(d1):
            if rank[i] < 0:
                rank[i] += d1
                rem0[i] += d1
            elif rank[i] > d:
                rank[i] -= d1
                rem0[i] -= d1
        bary = [0.0] * (d1 + 1)
        for i in range(d1):
            delta = (el[i] - rem0[i]) / d1
            bary[d - rank[i]] += delta
            bary[d - rank[i] + 1] -= delta
        bary[0] += 1.0 + bary[d1]
        pv = []
        for r in range(d1):
            key = tuple(rem0[i] + r - (d1 if rank[i] > d - r else 0) for i in range(d))
            table.setdefault(key, torch.zeros(v.shape[0], dtype=v.dtype))
            table[key] = table[key] + bary[r] * v[:, p]
            pv.append((key, bary[r]))
        verts.append(pv)
    for j in range(d1):
        step = [1 - (d1 if i == j else 0) for i in range(d)]
        new = {}
        for key, val in table.items():
            up = tuple(k + s for k, s in zip(key, step))
            dn = tuple(k - s for k, s in zip(key, step))
            new[key] = val + 0.5 * (table.get(up, 0 * val) + table.get(dn, 0 * val))
        table = new
    return torch.stack([sum(w * table[k] for k, w in pv) for pv in verts], 1)


def test_block_groups_exact_on_two_colour_images() -> None:
    """With <= 2 colours per block (brighter/darker) and a flat spatial kernel, the colour groups
    lose nothing: the reduced exact loss and its gradient equal the full-resolution ones."""
    gen = torch.Generator().manual_seed(8)
    b, h, w = 2, 12, 10  # 10 = 3 + 3 + 3 + 1: partial border blocks
    dark, bright = torch.tensor([40.0, 90.0, 60.0]), torch.tensor([200.0, 150.0, 120.0])
    pick = torch.rand(b, 1, h, w, generator=gen) > 0.6
    images = torch.where(pick, bright.view(1, 3, 1, 1), dark.view(1, 3, 1, 1)).double()
    images[1] = images[1] * 0.5 + 30  # another pair of colours
    probs = torch.softmax(torch.randn(b, 2, h, w, generator=gen, dtype=torch.float64), 1)
    out = []
    for f in (1, 3):
        p = probs.clone().requires_grad_()
        loss = dense_crf_loss(p, images, 1e6, 30.0, 1.0, "exact", downsample=f)
        out.append((loss, torch.autograd.grad(loss, p)[0]))
    torch.testing.assert_close(out[1][0], out[0][0], rtol=1e-9, atol=0)
    torch.testing.assert_close(out[1][1], out[0][1], rtol=1e-9, atol=1e-12)


def test_gradcheck_block_groups() -> None:
    """The reduced loss's gradient (filtered value of each pixel's group) is its true gradient."""
    gen = torch.Generator().manual_seed(9)
    images = _natural(1, 4, 5, gen).double()
    probs = torch.softmax(torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64), 1)
    probs.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda p: dense_crf_loss(p, images, 3.0, 30.0, 1.0, "exact", downsample=2), (probs,),
        fast_mode=True,
    )


def test_auto_default_fidelity_96px() -> None:
    """The auto default (lattice, 2 colour groups per 3x3 block) against the exact full-resolution
    gradient; 96^2 keeps the reference affordable (benchmarks/crf.py measures 224^2: 0.988)."""
    gen = torch.Generator().manual_seed(10)
    images = _natural(1, 96, 96, gen)
    logits = _logits(images, gen)
    assert resolve_crf_method(96, 96) == ("lattice", 3)
    out = []
    for method, ds in (("exact", 1), ("auto", None)):
        z = logits.clone().requires_grad_()
        loss = dense_crf_loss(torch.softmax(z, 1), images, weight=1.0, method=method, downsample=ds)
        out.append((loss.item(), torch.autograd.grad(loss, z)[0].flatten()))
    rel = out[1][0] / out[0][0] - 1
    cos = F.cosine_similarity(out[1][1], out[0][1], 0).item()
    print(f"\nauto (lattice, f=3 groups) 96^2: rel.err={rel:+.3f} grad cos={cos:.4f}")
    assert abs(rel) < 0.1
    assert cos > 0.98


def test_auto_resolution_and_repr() -> None:
    assert resolve_crf_method(24, 24) == ("exact", 1)
    assert resolve_crf_method(32, 32) == ("lattice", 1)  # exact is quadratic: lattice from 25 x 25 on
    assert resolve_crf_method(64, 64) == ("lattice", 1)
    assert resolve_crf_method(224, 224) == ("lattice", 3)
    assert resolve_crf_method(896, 896) == ("lattice", 3)  # fixed block size: linear in pixels
    assert resolve_crf_method(224, 224, method="exact") == ("exact", 4)
    assert resolve_crf_method(224, 224, method="exact", downsample=1) == ("exact", 1)
    text = repr(DenseCRFLoss())
    assert "sigma_xy=100.0" in text and "sigma_rgb=15.0" in text and "'lattice'" in text
    assert f"weight={DEFAULT_WEIGHT:g}" in text


@pytest.mark.parametrize("method", ["exact", "lattice", "auto"])
def test_module_equals_functional(method: str) -> None:
    gen = torch.Generator().manual_seed(4)
    images = _natural(2, 20, 20, gen)
    probs = torch.softmax(_logits(images, gen), 1)
    mod = DenseCRFLoss(50.0, 20.0, 1e-3, method)
    torch.testing.assert_close(mod(probs, images), dense_crf_loss(probs, images, 50.0, 20.0, 1e-3, method))


@pytest.mark.parametrize("method", ["exact", "lattice"])
def test_batched_equals_sum_of_images(method: str) -> None:
    gen = torch.Generator().manual_seed(5)
    images = _natural(3, 24, 20, gen)
    probs = torch.softmax(_logits(images, gen), 1)
    whole = dense_crf_loss(probs, images, weight=1.0, method=method)
    parts = sum(dense_crf_loss(probs[i : i + 1], images[i : i + 1], weight=1.0, method=method) for i in range(3))
    torch.testing.assert_close(whole * 3, parts, rtol=1e-5, atol=0)


@pytest.mark.parametrize("method", ["exact", "lattice"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_give_float32(method: str, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(6)
    images = _natural(2, 16, 16, gen)
    logits = _logits(images, gen).to(dtype).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = dense_crf_loss(torch.softmax(logits, 1), images.to(dtype), method=method)
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())
    loss.backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    ref = dense_crf_loss(torch.softmax(logits.detach().float(), 1), images.to(dtype).float(), method=method)
    assert abs(loss.item() / ref.item() - 1) < 1e-2


def test_invalid_inputs() -> None:
    probs = torch.softmax(torch.randn(2, 2, 8, 8), 1)
    images = torch.rand(2, 3, 8, 8) * 255
    cases = [
        (dict(probs=probs.numpy()), TypeError, "probs"),
        (dict(probs=probs[0]), ValueError, "probs"),
        (dict(probs=probs.long()), TypeError, "probs"),
        (dict(images=images[:, :1]), ValueError, "images"),
        (dict(images=images[:1]), ValueError, "share B, H and W"),
        (dict(images=images[..., :4]), ValueError, "share B, H and W"),
        (dict(probs=probs[:, :0]), ValueError, "K >= 1"),
        (dict(images=images / 255), ValueError, "0..255"),
        (dict(images=images - 128), ValueError, "0..255"),
        (dict(method="fast"), ValueError, "method"),
        (dict(sigma_xy=0.0), ValueError, "sigma_xy"),
        (dict(sigma_rgb=-1.0), ValueError, "sigma_rgb"),
        (dict(weight=float("nan")), ValueError, "weight"),
        (dict(downsample=0), ValueError, "downsample"),
    ]
    for kwargs, exc, text in cases:
        args = dict(probs=probs, images=images) | kwargs
        with pytest.raises(exc, match=text):
            dense_crf_loss(**args)
    with pytest.raises(ValueError, match="method"):
        DenseCRFLoss(method="crf")
