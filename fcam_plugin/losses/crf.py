r"""Dense CRF loss (Tang et al., ECCV 2018) as used by F-CAM.

The loss of a soft segmentation :math:`S \in [0, 1]^{B \times K \times H \times W}` of RGB images is

.. math::

    \mathcal{L}(S) = -\frac{\lambda}{B} \sum_{b=1}^{B} \sum_{k=1}^{K} S_{bk}^\top W_b\, S_{bk},
    \qquad
    W_b[i, j] = \exp\Big(-\frac{\lVert p_i - p_j \rVert^2}{2\sigma_{xy}^2}
                          -\frac{\lVert c_i - c_j \rVert^2}{2\sigma_{rgb}^2}\Big),

over all pixel pairs :math:`(i, j)` of image :math:`b`, positions :math:`p` in pixels of the
full-resolution image and colours :math:`c` in 0..255. The diagonal :math:`i = j` is **included**
(:math:`W_{ii} = 1`): it adds :math:`-\lambda/B \sum_i \lVert S_i \rVert^2`, which keeps the
kernel positive definite (so the loss is a plain Gaussian-kernel quadratic form, exactly what the
filter computes) and is negligible against the :math:`\approx 10^4`-pixel neighbourhoods of
:math:`\sigma_{xy} = 100`.

Two ways to compute :math:`g = W S` (the only expensive part; the value is
:math:`-\lambda/B \sum S \cdot g` and the gradient :math:`-2\lambda/B\, g`, reused from the
forward pass, one filtering per step):

Both work on *points*: the pixels (``downsample = 1``) or, at a reduced resolution
``downsample = f``, two colour groups per ``f x f`` block (pixels brighter / darker than the block
mean; each group = one point with its mean colour, the block centre and the *sum* of its
probabilities, so the value approximates the full-resolution sum; every pixel reads back the
filtered value of its group, see :func:`_points`). Splitting blocks by colour keeps the two sides
of an edge apart, which plain block averaging does not (gradient cosine to the exact
full-resolution loss at 224^2: 0.977 block averages at f = 4, 0.984 groups at f = 4, 0.988 at f = 3).

* ``"exact"``: the dense affinity, in row chunks (memory ``O(chunk * N)``, never ``N x N``).
* ``"lattice"``: a permutohedral-lattice Gaussian filter (Adams et al., 2010) in pure PyTorch;
  see :class:`PermutohedralLattice` for the algorithm and :func:`permutohedral_filter` for its
  calibration.

``method="auto"`` picks exact at full resolution for small images and the lattice otherwise
(:func:`resolve_crf_method`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_positive, describe
from ..defaults import CRF_WEIGHT, SIGMA_RGB, SIGMA_XY

__all__ = [
    "CRF_METHODS",
    "DEFAULT_WEIGHT",
    "AUTO_EXACT_MAX_PIXELS",
    "EXACT_MAX_PIXELS",
    "CRFConfig",
    "DenseCRFLoss",
    "dense_crf_loss",
    "exact_filter",
    "LATTICE_DOWNSAMPLE",
    "PermutohedralLattice",
    "permutohedral_filter",
    "resolve_crf_method",
]

#: Accepted values of ``method``.
CRF_METHODS = ("auto", "lattice", "exact")

#: Default loss weight λ for the exact-valued loss (see :data:`fcam_plugin.defaults.CRF_WEIGHT`).
DEFAULT_WEIGHT = CRF_WEIGHT

#: ``method="auto"`` uses the exact full-resolution path up to this many pixels per image.
EXACT_MAX_PIXELS = 64 * 64
#: ``method="auto"`` uses the exact path only up to this many pixels: its cost is quadratic, and
#: already at 32 x 32 the full-resolution lattice is ~10x faster (batch 32, 2 CPU cores).
AUTO_EXACT_MAX_PIXELS = 24 * 24

_EXP_FLOOR = -80.0  # exp(-80) ~ 1.8e-35; torch's CPU exp is ~12x slower below about -87.
_CHUNK_ELEMENTS = 1 << 22  # affinity entries materialised at once by the exact path (16 MiB)


class CRFConfig(NamedTuple):
    """How the loss is computed for a given image size (see :func:`resolve_crf_method`)."""

    method: str
    downsample: int


def resolve_crf_method(
    h: int,
    w: int,
    device: torch.device | str | None = None,
    method: str = "auto",
    downsample: int | None = None,
) -> CRFConfig:
    """Resolve ``method``/``downsample`` for ``h x w`` images on ``device``.

    Rules: ``"auto"`` is ``"exact"`` when ``h * w <= AUTO_EXACT_MAX_PIXELS`` and ``"lattice"``
    otherwise (on every device: the lattice is linear in pixels, the exact path quadratic).
    ``downsample=None`` means 1 (full resolution) for small images (``<= EXACT_MAX_PIXELS``);
    above, :data:`LATTICE_DOWNSAMPLE` (3) for the lattice, whatever the size (time and memory
    linear in pixels), and ``f = ceil(sqrt(h * w / EXACT_MAX_PIXELS))`` for the exact method (at
    most about ``2 * EXACT_MAX_PIXELS`` points; f = 4 at 224 x 224). With ``f > 1`` every
    ``f x f`` block is split into two colour groups (see :func:`_points`).

    Returns:
        CRFConfig: ``(method, downsample)`` actually used.
    """
    del device  # the rule is the same on CPU and CUDA for now; kept for a per-device policy.
    check_choice("method", method, CRF_METHODS)
    if downsample is not None and (
        not isinstance(downsample, int) or isinstance(downsample, bool) or downsample < 1
    ):
        raise ValueError(f"`downsample` must be None or an int >= 1, got {downsample!r}.")
    n = h * w
    if method == "auto":
        method = "exact" if n <= AUTO_EXACT_MAX_PIXELS else "lattice"
    if downsample is None:
        if n <= EXACT_MAX_PIXELS:
            downsample = 1
        elif method == "exact":
            downsample = math.ceil(math.sqrt(n / EXACT_MAX_PIXELS))
        else:
            downsample = LATTICE_DOWNSAMPLE
    return CRFConfig(method, downsample)


# --------------------------------------------------------------------------------------------
# features


def _features(images: Tensor, downsample: int, sigma_xy: float, sigma_rgb: float) -> Tensor:
    """Scaled bilateral features ``(B, N, 5)`` = (y, x)/σ_xy, (r, g, b)/σ_rgb, dtype of images.

    With ``downsample > 1`` the features are those of the block averages (colour mean, block
    centre in full-resolution pixel units).
    """
    b, _, h, w = images.shape
    dev = images.device
    dt = images.dtype
    ys = torch.arange(h, device=dev, dtype=dt).view(1, 1, h, 1).expand(b, 1, h, w)
    xs = torch.arange(w, device=dev, dtype=dt).view(1, 1, 1, w).expand(b, 1, h, w)
    pos = torch.cat([ys, xs], 1)
    img = images
    if downsample > 1:
        pos = _pool_mean(pos, downsample)
        img = _pool_mean(img, downsample)
    pos = pos / sigma_xy
    col = (img - img.mean(dim=(2, 3), keepdim=True)) / sigma_rgb  # centred: better conditioned
    return torch.cat([pos - pos.mean(dim=(2, 3), keepdim=True), col], 1).flatten(2).transpose(1, 2)


def _pool_mean(x: Tensor, f: int) -> Tensor:
    """Average over ``f x f`` blocks; partial blocks at the border average their valid pixels."""
    return F.avg_pool2d(x, f, stride=f, ceil_mode=True, count_include_pad=False)


# --------------------------------------------------------------------------------------------
# exact dense filter


def exact_filter(feats: Tensor, values: Tensor, chunk_elements: int = _CHUNK_ELEMENTS) -> Tensor:
    """Exact Gaussian filter ``out[b, :, i] = sum_j exp(-|f_i - f_j|^2 / 2) values[b, :, j]``.

    Args:
        feats: ``(B, N, D)`` scaled features.
        values: ``(B, V, N)`` values to filter.
        chunk_elements: at most this many affinity entries exist at once (rows are chunked).

    Returns:
        Tensor: ``(B, V, N)``, dtype of ``values``.
    """
    b, n, _ = feats.shape
    out = torch.empty_like(values)
    sq = (feats * feats).sum(-1, keepdim=True)  # (B, N, 1)
    ones = torch.ones_like(sq)
    # -|fi - fj|^2 / 2 = fi.fj - |fi|^2/2 - |fj|^2/2 as one matmul of augmented features.
    left = torch.cat([feats, -0.5 * sq, ones], -1)
    right = torch.cat([feats, ones, -0.5 * sq], -1)
    rows = max(1, min(n, chunk_elements // max(n, 1)))
    for bi in range(b):
        r_t = right[bi].t()
        v_t = values[bi].t()  # (N, V)
        for i0 in range(0, n, rows):
            arg = left[bi, i0 : i0 + rows] @ r_t  # (rows, N)
            arg.clamp_(_EXP_FLOOR, 0.0).exp_()
            out[bi, :, i0 : i0 + rows] = (arg @ v_t).t()
    return out


# --------------------------------------------------------------------------------------------
# reduced resolution: f x f blocks, two colour groups per block


#: The lattice path (default ``downsample``) works on ``f x f`` blocks with ``f`` = this value for
#: images above :data:`EXACT_MAX_PIXELS`, whatever their size (so the cost stays linear in pixels).
#: Each block is split into two colour groups (pixels brighter / darker than the block mean), each
#: group becomes one filtered point (mean colour, block centre, summed probabilities): 2/9 of the
#: pixels at f = 3. Measured (benchmarks/README.md, 32 x 2 x 224^2 fwd+bwd, gradient cosine to the
#: exact full-resolution loss, 4 natural-like images): f = 3: 0.155 s single-thread CPU (about
#: 0.11-0.14 s on 2 idle cores), cosine 0.988 (min 0.981); f = 4: 0.108 s, 0.984 (min 0.974);
#: f = 2: 0.993; full resolution: 0.998.
LATTICE_DOWNSAMPLE = 3


class _Points(NamedTuple):
    """Filtered points of a batch: ``values (B, K, P)``, ``feats (B, P, 5)`` and ``index``
    ``(B, 1, H * W)``, the point of every pixel (``None`` when points are the pixels)."""

    values: Tensor
    feats: Tensor
    index: Tensor | None  # type: ignore[assignment]  # the field shadows tuple.index on purpose


def _points(probs: Tensor, images: Tensor, f: int, sigma_xy: float, sigma_rgb: float) -> _Points:
    """Pixels (``f == 1``) or two colour groups per ``f x f`` block (``f > 1``), no autograd.

    A block's pixels are split by luminance (r + g + b) against the block mean: group 1 = brighter,
    group 0 = the others. A group's point has the group's mean colour, the block centre (in
    full-resolution pixels) and the *sum* of its probabilities, so ``values . (W values)``
    approximates the full-resolution quadratic form, and every pixel reads the filtered value of its
    own group. Blocks at the right/bottom border may be partial. An empty group (uniform block) gets
    the block's mean colour and value 0: it adds no lattice vertex and contributes nothing.
    Block averaging without the colour split (the former rule) mixes the colours of both sides of
    every edge; the split keeps them apart at 2x the points (gradient cosine to the exact
    full-resolution loss at 224^2, exact filter, f = 4: 0.977 block averages, 0.987 groups).
    """
    b, k, h, w = probs.shape
    if f == 1:
        return _Points(probs.reshape(b, k, h * w), _features(images, 1, sigma_xy, sigma_rgb), None)
    dev, dt = probs.device, probs.dtype
    hh, ww = -(-h // f), -(-w // f)
    n, hw = hh * ww, h * w
    rows = torch.arange(h, device=dev) // f
    cols = torch.arange(w, device=dev) // f
    block = (rows.view(h, 1) * ww + cols.view(1, w)).view(1, 1, hw)
    img = images.reshape(b, 3, hw)
    count = torch.bincount(block.view(-1), minlength=n).to(dt)  # pixels per block
    lum = img.sum(1, keepdim=True)
    lum_sum = lum.new_zeros(b, 1, n).scatter_add_(2, block.expand(b, 1, hw), lum)
    brighter = lum * count[block.view(-1)] > lum_sum[:, :, block.view(-1)]
    index = block + brighter * n  # (B, 1, HW): point of every pixel
    col_sum = img.new_zeros(b, 3, 2 * n).scatter_add_(2, index.expand(b, 3, hw), img)
    g_count = img.new_zeros(b, 1, 2 * n).scatter_add_(2, index, img.new_ones(1, 1, 1).expand(b, 1, hw))
    values = probs.new_zeros(b, k, 2 * n).scatter_add_(2, index.expand(b, k, hw), probs.reshape(b, k, hw))
    mean_all = (col_sum[:, :, :n] + col_sum[:, :, n:]) / count
    col = torch.where(g_count > 0, col_sum / g_count.clamp_min(1), mean_all.repeat(1, 1, 2))
    start_y = torch.arange(hh, device=dev, dtype=dt) * f
    start_x = torch.arange(ww, device=dev, dtype=dt) * f
    cy = (start_y + (start_y + f).clamp(max=h) - 1) / 2  # block centres (partial blocks too)
    cx = (start_x + (start_x + f).clamp(max=w) - 1) / 2
    pos = torch.stack([cy.view(hh, 1).expand(hh, ww), cx.view(1, ww).expand(hh, ww)]).view(1, 2, n)
    pos = (pos - pos.mean(2, keepdim=True)) / sigma_xy
    col = col / sigma_rgb
    col = col - col.mean(2, keepdim=True)
    feats = torch.cat([pos.repeat(1, 1, 2).expand(b, 2, 2 * n), col], 1).transpose(1, 2).contiguous()
    return _Points(values, feats, index)


# --------------------------------------------------------------------------------------------
# permutohedral lattice

#: Multiplies the raw lattice output so that it matches the exact filter (see
#: :func:`permutohedral_filter`). Fitted as sum(exact * lattice) / sum(lattice ** 2) of the
#: quadratic form on piecewise-smooth ("natural-like") images, sigma_xy=100, sigma_rgb=15, sizes
#: 32..64 (ratio 1.61-1.75); the raw lattice thus returns ~0.58x the exact value, in line with the
#: reference implementation's ~0.56x. On pure-noise images or small sigmas the ratio ranges
#: 1.45-2.95: the value is an approximation, the gradient direction is the reliable part.
LATTICE_GAIN = 1.72


def _unique_inverse(keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sorted unique keys, the inverse index and one representative position per unique key
    (one sort; ``torch.unique`` is much slower on CPU)."""
    sk, order = torch.sort(keys)
    new = torch.empty_like(sk, dtype=torch.bool)
    new[:1] = True
    torch.ne(sk[1:], sk[:-1], out=new[1:])
    ids = torch.cumsum(new, 0) - 1
    inverse = torch.empty_like(ids)
    inverse[order] = ids
    return sk[new], inverse, order[new]


def _elevation(d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(d + 1, d)`` matrix mapping features onto the hyperplane ``sum = 0`` of R^(d+1), scaled so
    that the lattice blur approximates a unit-variance Gaussian (Adams et al., 2010)."""
    d1 = d + 1
    i = torch.arange(d, dtype=torch.float64)
    scale = math.sqrt(2.0 / 3.0) * d1 / torch.sqrt((i + 1) * (i + 2))
    e = torch.zeros(d1, d, dtype=torch.float64)
    for j in range(d1):
        e[j, j:] = scale[j:]  # elevated_j = sum_{i >= j} s_i x_i - j s_{j-1} x_{j-1}
        if j > 0:
            e[j, j - 1] -= j * scale[j - 1]
    return e.to(device, dtype)


class PermutohedralLattice:
    r"""Lattice structure of ``(B, N, d)`` features, reusable for several filterings.

    Built once per batch (all images in one lattice: the image index is part of the key), in
    "column" layout (``(d + 1, B * N)`` tensors, each row contiguous):

    1. *elevate* the features onto the hyperplane :math:`\sum x = 0` of :math:`\mathbb{R}^{d+1}`
       (one matmul), find the enclosing simplex (nearest remainder-0 point, rank of the residuals,
       ties broken by index as in the reference algorithm) and the ``d + 1`` barycentric weights;
    2. *hash* without a hash table: the simplex of every point is one int64 key (mixed-radix code
       of its remainder-0 point and its rank permutation), deduplicated with one sort; the
       ``d + 1`` vertex keys are computed for the distinct simplices only (5-10x fewer than the
       points on natural images) and deduplicated with a second sort;
    3. *neighbours* of every vertex along the ``d + 1`` lattice directions with one
       ``searchsorted`` (the "minus" neighbours are the inverse of the "plus" ones).

    :meth:`filter` then splats (``index_add_``), blurs with ``[1/2, 1, 1/2]`` along each direction
    (gathers on the precomputed neighbours; missing neighbours count as 0) and slices.
    """

    def __init__(self, feats: Tensor) -> None:
        bsz, n, d = feats.shape
        d1 = d + 1
        dev, dt = feats.device, feats.dtype
        m = bsz * n
        self.shape = (bsz, n)
        el = _elevation(d, dev, dt) @ feats.reshape(m, d).t()  # (d1, m)
        q = torch.round(el * (1.0 / d1))  # nearest remainder-0 point = d1 * q
        res = el - q * d1
        rank = q.sum(0).to(torch.int32).expand(d1, m).clone()
        for i in range(d1):  # rank_i = #{j < i: res_j >= res_i} + #{j > i: res_j > res_i} + sum q
            for j in range(i + 1, d1):
                above = res[j] > res[i]
                rank[i] += above
                rank[j] += ~above
        wrap = (rank < 0).to(torch.int32) - (rank > d).to(torch.int32)
        rank += d1 * wrap
        q += wrap.to(dt)
        delta = el.sub_(q * d1).mul_(1.0 / d1)  # (d1, m)
        # order[k] = coordinate of rank k; barycentric weights from the rank-sorted residuals
        order = torch.empty(d1, m, dtype=torch.long, device=dev)
        order.scatter_(0, rank.long(), torch.arange(d1, device=dev).view(d1, 1).expand(d1, m))
        sf = delta.gather(0, order.flip(0))  # sf[j] = residual of the coordinate of rank d - j
        bary = torch.empty_like(sf)
        bary[1:] = sf[1:] - sf[:-1]
        bary[0] = 1.0 + sf[0] - sf[d]
        self.bary = bary
        # keys: code(v) = sum_c (v_c div d1 - lo_c) * radix_c + (v mod d1) over c < d, + image
        qi = q[:d].to(torch.int64)
        lo = qi.amin(1, keepdim=True) - 2
        span = (qi.amax(1) + 3 - lo.squeeze(1)).tolist()
        rad = [d1]
        for c in range(d - 1, 0, -1):
            rad.append(rad[-1] * int(span[c]))
        rad = rad[::-1]
        per_image = rad[0] * int(span[0])
        if per_image * bsz >= 2**62:  # pragma: no cover - needs absurd feature ranges
            raise ValueError("lattice key range overflows int64; reduce the feature range.")
        radix = torch.tensor(rad + [0], device=dev)
        base = ((qi - lo) * radix[:d, None]).sum(0)
        if bsz > 1:
            base += torch.arange(bsz, device=dev).repeat_interleave(n) * per_image
        if per_image * bsz * d1**d < 2**62:  # one key per simplex: hash the distinct ones
            pw = torch.tensor([d1**c for c in range(d)], device=dev).view(d, 1)
            _, sid, rep = _unique_inverse(base * d1**d + (rank[:d].long() * pw).sum(0))
            s_order, s_base = order.index_select(1, rep), base[rep]
        else:  # pragma: no cover - huge key ranges: hash every point's vertices
            sid, s_order, s_base = None, order, base
        # vertex r = rem0 + r - d1 * [rank > d - r]: subtract the radices of the r top-ranked coords
        top = torch.cumsum(radix[s_order[1:].flip(0)], 0)  # (d, S)
        codes = torch.empty(d1, s_base.numel(), dtype=torch.long, device=dev)
        codes[0] = s_base
        codes[1:] = s_base + torch.arange(1, d1, device=dev).view(d, 1) - top
        keys, inv, _ = _unique_inverse(codes.reshape(-1))
        vid = inv.view(d1, -1)
        self.vid = vid.index_select(1, sid) if sid is not None else vid  # (d1, m): vertices of every point
        nl = keys.numel()
        self.n_vertices = nl
        # neighbours along direction j: +(1, ..., 1) - d1 e_j (e_d: the implicit last coordinate)
        total = sum(rad)
        rem = keys % d1
        plus = torch.stack([
            torch.where(rem < d, keys + 1 - (rad[j] if j < d else 0), keys - d + total - (rad[j] if j < d else 0))
            for j in range(d1)
        ])
        idx = torch.searchsorted(keys, plus).clamp_(max=nl - 1)
        found = keys[idx] == plus
        self.plus = torch.where(found, idx, nl)  # (d1, nl); index nl = the "missing" zero row
        minus = torch.full((d1, nl + 1), nl, dtype=torch.long, device=dev)  # column nl: dump
        src = torch.arange(nl, device=dev).expand(d1, nl)
        minus.scatter_(1, self.plus, torch.where(found, src, nl))
        self.minus = minus[:, :nl]

    def filter(self, values: Tensor) -> Tensor:
        """Splat ``(B, V, N)`` values, blur, slice; returns ``(B, V, N)`` (un-normalised)."""
        bsz, n = self.shape
        v = values.shape[1]
        d1, m = self.vid.shape
        nl = self.n_vertices
        vals = values.to(self.bary.dtype).transpose(0, 1).reshape(v, m)
        flat = self.vid.reshape(-1)
        lat = vals.new_zeros(v, nl + 1)  # column nl: the "missing neighbour", stays 0
        for c in range(v):  # 1-D index_add_ / take: much faster than row gathers of width v
            lat[c].index_add_(0, flat, (self.bary * vals[c]).view(-1))
        lat = lat.t().contiguous()
        for j in range(d1):  # the right side is evaluated before the in-place update
            lat[:nl] += 0.5 * (lat.index_select(0, self.plus[j]) + lat.index_select(0, self.minus[j]))
        lat = lat.t().contiguous()
        out = torch.stack([(lat[c].take(self.vid) * self.bary).sum(0) for c in range(v)])  # (v, m)
        return out.view(v, bsz, n).transpose(0, 1).to(values.dtype)


def permutohedral_filter(feats: Tensor, values: Tensor) -> Tensor:
    r"""Approximate :func:`exact_filter` with a permutohedral lattice (Adams et al., 2010).

    Pure PyTorch, batched, on any device (see :class:`PermutohedralLattice`). Splat and slice are
    transposes and each blur is symmetric, so the operator is (nearly) symmetric, which is what
    reusing the forward result as the gradient assumes.

    Normalisation: the un-normalised lattice output is proportional to a Gaussian filter of a
    slightly different, blockier kernel. It is multiplied by :data:`LATTICE_GAIN`, a constant
    fitted once as ``<S, W_exact S> / <S, W_lattice S>`` (least squares over piecewise-smooth
    test images, see :data:`LATTICE_GAIN`) so the loss approximates the exact value; the raw
    lattice returns ~0.58x the exact value.

    Args:
        feats: ``(B, N, d)`` scaled features (already divided by their sigmas).
        values: ``(B, V, N)``.

    Returns:
        Tensor: ``(B, V, N)``.
    """
    return LATTICE_GAIN * PermutohedralLattice(feats).filter(values)


# --------------------------------------------------------------------------------------------
# autograd function


class _QuadraticCRF(torch.autograd.Function):
    """``-scale * sum(S * (W S))`` with gradient ``-2 * scale * (W S)`` reused from forward.

    ``W S`` is computed on the points of :func:`_points` (pixels or colour groups of blocks) and
    read back at every pixel from its point, so the backward is one multiplication.
    """

    @staticmethod
    def forward(ctx, probs: Tensor, images: Tensor, sigmas: tuple, scale: float, method: str, f: int) -> Tensor:  # noqa: ANN001
        pts = _points(probs, images, f, *sigmas)
        if method == "exact":
            filtered = exact_filter(pts.feats, pts.values)
        else:
            filtered = permutohedral_filter(pts.feats, pts.values)
        loss = -scale * (pts.values * filtered).sum()
        if pts.index is not None:
            filtered = filtered.gather(2, pts.index.expand(-1, filtered.shape[1], -1))
        ctx.save_for_backward(filtered.view_as(probs).mul_(-2.0 * scale))
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None, None, None, None


# --------------------------------------------------------------------------------------------
# public API


def _check_inputs(probs: Any, images: Any) -> None:
    for name, x, want in (("probs", probs, "(B, K, H, W)"), ("images", images, "(B, 3, H, W)")):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor of shape {want}, got {describe(x)}.")
        if x.ndim != 4:
            raise ValueError(f"`{name}` must have shape {want}, got shape {list(x.shape)}.")
        if not x.is_floating_point():
            raise TypeError(
                f"`{name}` must be a floating tensor, got dtype {x.dtype}; convert with x.float()."
            )
    if probs.shape[1] < 1 or probs.shape[0] < 1:
        raise ValueError(
            f"`probs` needs B >= 1 and K >= 1 in (B, K, H, W), got shape {list(probs.shape)}."
        )
    if images.shape[1] != 3:
        raise ValueError(
            f"`images` must have shape (B, 3, H, W) (RGB), got shape {list(images.shape)}."
        )
    if (probs.shape[0], *probs.shape[2:]) != (images.shape[0], *images.shape[2:]):
        raise ValueError(
            "`probs` and `images` must share B, H and W: got probs "
            f"{list(probs.shape)} and images {list(images.shape)}."
        )
    if probs.device != images.device:
        raise ValueError(
            f"`probs` ({probs.device}) and `images` ({images.device}) must be on the same device."
        )
    if images.numel():
        low, high = torch.aminmax(images.detach())
        lo, hi = float(low), float(high)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("`images` contains NaN or Inf values.")
        if lo < 0.0 or hi <= 1.0:
            raise ValueError(
                f"`images` must be RGB in 0..255 (un-normalised), got values in [{lo:.3g}, {hi:.3g}]"
                "; the dense CRF kernel uses sigma_rgb in 0..255 units: pass the raw image "
                "(e.g. undo the mean/std normalisation and multiply by 255)."
            )


def _check_params(sigma_xy: float, sigma_rgb: float, weight: float, method: str) -> None:
    check_positive("sigma_xy", sigma_xy)
    check_positive("sigma_rgb", sigma_rgb)
    check_positive("weight", weight, allow_zero=True)
    check_choice("method", method, CRF_METHODS)


def dense_crf_loss(
    probs: Tensor,
    images: Tensor,
    sigma_xy: float = SIGMA_XY,
    sigma_rgb: float = SIGMA_RGB,
    weight: float = DEFAULT_WEIGHT,
    method: str = "auto",
    downsample: int | None = None,
) -> Tensor:
    r"""Dense CRF loss :math:`-\frac{\lambda}{B}\sum_b\sum_k S_{bk}^\top W_b S_{bk}`.

    Computed in float32 for float16/bfloat16/float32 inputs (autocast is disabled inside), so it
    is safe under AMP and returns float32; float64 ``probs`` are computed and returned in float64
    (for ``gradcheck``). Differentiable w.r.t. ``probs`` only.

    Args:
        probs: ``(B, K, H, W)`` soft segmentation (e.g. a softmax), any float dtype.
        images: ``(B, 3, H, W)`` RGB in 0..255 (float, not normalised, not differentiated).
        sigma_xy: spatial bandwidth in full-resolution pixels.
        sigma_rgb: colour bandwidth in 0..255 units.
        weight: λ (sum convention, divided by B). Default :data:`DEFAULT_WEIGHT`.
        method: ``"auto"``, ``"lattice"`` or ``"exact"`` (see :func:`resolve_crf_method`).
        downsample: block size ``f`` of the reduced resolution, ``None`` for the default.

    Returns:
        Tensor: scalar float32 loss.

    Raises:
        TypeError: non-tensor or non-float inputs.
        ValueError: bad shapes, mismatched B/H/W, images not in 0..255, bad parameters.

    Example:
        >>> probs = torch.softmax(torch.randn(2, 2, 32, 32), 1)
        >>> images = torch.rand(2, 3, 32, 32) * 255
        >>> dense_crf_loss(probs, images).shape
        torch.Size([])
    """
    _check_inputs(probs, images)
    _check_params(sigma_xy, sigma_rgb, weight, method)
    h, w = probs.shape[-2:]
    cfg = resolve_crf_method(h, w, probs.device, method, downsample)
    with torch.autocast(probs.device.type, enabled=False):
        dtype = torch.float64 if probs.dtype == torch.float64 else torch.float32
        p = probs.to(dtype)
        img = images.detach().to(dtype)
        return _QuadraticCRF.apply(
            p, img, (float(sigma_xy), float(sigma_rgb)), float(weight) / probs.shape[0],
            cfg.method, cfg.downsample,
        )


class DenseCRFLoss(nn.Module):
    """Module twin of :func:`dense_crf_loss` (same arguments, same semantics).

    Example:
        >>> loss_fn = DenseCRFLoss(sigma_xy=100.0, sigma_rgb=15.0)
        >>> probs = torch.softmax(torch.randn(1, 2, 16, 16), 1)
        >>> loss_fn(probs, torch.rand(1, 3, 16, 16) * 255).dtype
        torch.float32
    """

    def __init__(
        self,
        sigma_xy: float = SIGMA_XY,
        sigma_rgb: float = SIGMA_RGB,
        weight: float = DEFAULT_WEIGHT,
        method: str = "auto",
        downsample: int | None = None,
    ) -> None:
        super().__init__()
        _check_params(sigma_xy, sigma_rgb, weight, method)
        resolve_crf_method(1, 1, None, method, downsample)  # validates downsample
        self.sigma_xy = sigma_xy
        self.sigma_rgb = sigma_rgb
        self.weight = weight
        self.method = method
        self.downsample = downsample
        self.last_config: CRFConfig | None = None

    def forward(self, probs: Tensor, images: Tensor) -> Tensor:
        """Loss for ``probs`` ``(B, K, H, W)`` and ``images`` ``(B, 3, H, W)`` in 0..255."""
        if isinstance(probs, Tensor) and probs.ndim == 4:
            self.last_config = resolve_crf_method(
                probs.shape[-2], probs.shape[-1], probs.device, self.method, self.downsample
            )
        return dense_crf_loss(
            probs, images, self.sigma_xy, self.sigma_rgb, self.weight, self.method,
            self.downsample,
        )

    def extra_repr(self) -> str:
        """Parameters and the method resolved for 224 x 224 (or the last input size)."""
        cfg = self.last_config or resolve_crf_method(224, 224, None, self.method, self.downsample)
        where = "last input" if self.last_config else "224x224"
        return (
            f"sigma_xy={self.sigma_xy}, sigma_rgb={self.sigma_rgb}, weight={self.weight:g}, "
            f"method={self.method!r} -> {cfg.method!r} (downsample={cfg.downsample}, {where})"
        )
