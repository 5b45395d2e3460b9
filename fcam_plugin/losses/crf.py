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

* ``"exact"``: the dense affinity, in row chunks (memory ``O(chunk * N)``, never ``N x N``), at
  full resolution or at a reduced resolution ``downsample = f``: probabilities and image are
  average-pooled by ``f``, positions are the block centres in full-resolution pixels, and each block
  carries the *sum* of its probabilities (``f**2`` times the mean), so the value approximates the
  full-resolution sum (overall factor ``f**4``).
* ``"lattice"``: a permutohedral-lattice Gaussian filter (Adams et al., 2010) in pure PyTorch;
  see :func:`permutohedral_filter` for the algorithm and its calibration.

``method="auto"`` picks exact at full resolution for small images and the lattice otherwise
(:func:`resolve_crf_method`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fcam_plugin._checks import check_choice, check_positive, describe

__all__ = [
    "CRF_METHODS",
    "DEFAULT_WEIGHT",
    "EXACT_MAX_PIXELS",
    "CRFConfig",
    "DenseCRFLoss",
    "dense_crf_loss",
    "exact_filter",
    "permutohedral_filter",
    "resolve_crf_method",
]

#: Accepted values of ``method``.
CRF_METHODS = ("auto", "lattice", "exact")

#: Default loss weight λ for the exact-valued loss (sum convention). The reference recipe uses
#: λ = 2e-9 with a permutohedral filter that returns ≈ 0.56× the exact quadratic form; our loss
#: (both paths) is calibrated to the exact value, so λ = 2e-9 × 0.56 ≈ 1.1e-9.
DEFAULT_WEIGHT = 1.1e-9

#: ``method="auto"`` uses the exact full-resolution path up to this many pixels per image.
EXACT_MAX_PIXELS = 64 * 64

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

    Rules: ``"auto"`` is ``"exact"`` when ``h * w <= EXACT_MAX_PIXELS`` and ``"lattice"``
    otherwise (on every device: the lattice is linear in pixels, the exact path quadratic).
    ``downsample=None`` means 1 (full resolution) for small images and for the exact method
    ``f = ceil(sqrt(h * w / EXACT_MAX_PIXELS))`` (so at most about ``EXACT_MAX_PIXELS``
    blocks, 1/4 resolution for 224 x 224); for the lattice ``f = max(1, round(sqrt(h * w) / 112))`` (:data:`LATTICE_BASE_SIDE`).

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
        method = "exact" if n <= EXACT_MAX_PIXELS else "lattice"
    if downsample is None:
        if n <= EXACT_MAX_PIXELS:
            downsample = 1
        elif method == "exact":
            downsample = math.ceil(math.sqrt(n / EXACT_MAX_PIXELS))
        else:
            downsample = max(1, round(math.sqrt(n) / LATTICE_BASE_SIDE))
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


def _pool_sum(x: Tensor, f: int) -> Tensor:
    """Sum over ``f x f`` blocks (``f**2`` times the mean for full blocks)."""
    return F.avg_pool2d(x, f, stride=f, ceil_mode=True, divisor_override=1)


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
# permutohedral lattice (filled in below)

#: The lattice path (default ``downsample``) works on blocks of about this many pixels a side:
#: ``f = max(1, round(sqrt(h * w) / LATTICE_BASE_SIDE))``, i.e. f = 2 at 224 x 224, 4 at 448.
#: Measured on a 2-core CPU (benchmarks/README.md): 32 x 2 x 224^2 fwd+bwd takes 2.4 s at f = 1
#: (gradient cosine to the exact full-resolution loss 0.997), 0.5 s at f = 2 (0.98) and
#: 0.09 s at f = 4 (0.95); f = 2 is the cheapest setting that keeps the cosine near 0.98.
LATTICE_BASE_SIDE = 112

#: Multiplies the raw lattice output so that it matches the exact filter (see
#: :func:`permutohedral_filter`). Fitted as sum(exact * lattice) / sum(lattice ** 2) of the
#: quadratic form on piecewise-smooth ("natural-like") images, sigma_xy=100, sigma_rgb=15, sizes
#: 32..64 (ratio 1.61-1.75); the raw lattice thus returns ~0.58x the exact value, in line with the
#: reference implementation's ~0.56x. On pure-noise images or small sigmas the ratio ranges
#: 1.45-2.95: the value is an approximation, the gradient direction is the reliable part.
LATTICE_GAIN = 1.72


def _unique_inverse(keys: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.unique(keys, return_inverse=True)`` via one sort (much faster on CPU)."""
    sk, order = torch.sort(keys)
    new = torch.ones_like(sk, dtype=torch.bool)
    new[1:] = sk[1:] != sk[:-1]
    ids = torch.cumsum(new, 0) - 1
    inverse = torch.empty_like(ids)
    inverse[order] = ids
    return sk[new], inverse


def permutohedral_filter(feats: Tensor, values: Tensor) -> Tensor:
    r"""Approximate :func:`exact_filter` with a permutohedral lattice (Adams et al., 2010).

    Pure PyTorch, batched (the image index is part of the lattice key), on any device:

    1. *elevate* each ``d``-dim feature onto the hyperplane :math:`\sum x = 0` of
       :math:`\mathbb{R}^{d+1}`, find its enclosing simplex (nearest remainder-0 point and the
       rank of the residuals) and its ``d + 1`` barycentric weights;
    2. *splat*: hash the ``d + 1`` vertex keys of every point (mixed-radix int64 code, deduplicated
       with one sort) and accumulate ``weight * value`` with ``index_add_``;
    3. *blur*: along each of the ``d + 1`` lattice directions apply ``[1/2, 1, 1/2]``
       (neighbours found with ``searchsorted``; missing neighbours count as 0);
    4. *slice*: gather the ``d + 1`` vertices back with the same barycentric weights.

    Splat and slice are transposes and each blur is symmetric, so the operator is (nearly)
    symmetric, which is what reusing the forward result as the gradient assumes.

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
    bsz, n, d = feats.shape
    v = values.shape[1]
    d1 = d + 1
    dev = feats.device
    dt = feats.dtype
    m = bsz * n
    x = feats.reshape(m, d)
    # 1. elevate (scale so that the lattice blur approximates a unit-variance Gaussian)
    i = torch.arange(d, device=dev, dtype=dt)
    scale = math.sqrt(2.0 / 3.0) * d1 / torch.sqrt((i + 1) * (i + 2))
    cf = x * scale
    suffix = torch.flip(torch.cumsum(torch.flip(cf, [1]), 1), [1])  # sum_{i>=j} cf_i
    suffix = torch.cat([suffix, torch.zeros(m, 1, device=dev, dtype=dt)], 1)
    cf_shift = torch.cat([torch.zeros(m, 1, device=dev, dtype=dt), cf], 1)
    elevated = suffix - torch.arange(d1, device=dev, dtype=dt) * cf_shift
    # nearest remainder-0 point
    vq = elevated / d1
    up = torch.ceil(vq) * d1
    down = torch.floor(vq) * d1
    rem0 = torch.where(up - elevated < elevated - down, up, down)
    ssum = torch.round(rem0.sum(1) / d1).long()
    # rank of residuals (ties broken by index, like the reference algorithm)
    res = elevated - rem0
    gt = res.unsqueeze(1) > res.unsqueeze(2)  # [m, i, j] = res_j > res_i
    ge = res.unsqueeze(1) >= res.unsqueeze(2)
    upper = torch.ones(d1, d1, dtype=torch.bool, device=dev).triu(1)
    rank = ((gt & upper) | (ge & upper.t())).sum(2) + ssum.unsqueeze(1)
    rem0 = rem0.long()
    low = rank < 0
    high = rank > d
    rank = rank + d1 * low.long() - d1 * high.long()
    rem0 = rem0 + d1 * low.long() - d1 * high.long()
    # barycentric weights
    bary = torch.zeros(m, d1 + 1, device=dev, dtype=dt)
    delta = (elevated - rem0.to(dt)) / d1
    bary.scatter_add_(1, d - rank, delta)
    bary.scatter_add_(1, d - rank + 1, -delta)
    bary[:, 0] += 1.0 + bary[:, d1]
    bary = bary[:, :d1]
    # 2. keys of the d+1 vertices: key_r[c] = rem0[c] + (r if rank[c] <= d - r else r - d1)
    base = rem0[:, :d]
    lo = base.amin(0) - 2 * d1
    span = base.amax(0) + 2 * d1 - lo + 1
    radix = torch.ones(d, dtype=torch.long, device=dev)
    for c in range(d - 2, -1, -1):
        radix[c] = radix[c + 1] * span[c + 1]
    per_image = int(radix[0] * span[0])
    if per_image * bsz >= 2**62:  # pragma: no cover - needs absurd feature ranges
        raise ValueError("lattice key range overflows int64; reduce the feature range.")
    img_id = torch.arange(bsz, device=dev).repeat_interleave(n) * per_image
    enc0 = ((base - lo) * radix).sum(1) + img_id  # code of rem0
    r = torch.arange(d1, device=dev)
    wrap = (rank[:, None, :d] > (d - r)[None, :, None]).long()  # (m, d1, d)
    keys = enc0[:, None] + r[None, :] * radix.sum() - d1 * (wrap * radix).sum(2)
    lat_keys, inv = _unique_inverse(keys.reshape(-1))
    nl = lat_keys.shape[0]
    vals = values.transpose(1, 2).reshape(m, v).to(dt)
    lattice = torch.zeros(nl + 1, v, device=dev, dtype=dt)  # last row: "missing neighbour" = 0
    lattice.index_add_(0, inv, (bary.unsqueeze(2) * vals.unsqueeze(1)).reshape(-1, v))
    # 3. blur along the d+1 directions
    total = radix.sum()
    for j in range(d1):
        step = total - d1 * radix[j] if j < d else total
        nbrs = []
        for sgn in (1, -1):
            target = lat_keys + sgn * step
            idx = torch.searchsorted(lat_keys, target).clamp_(max=nl - 1)
            nbrs.append(torch.where(lat_keys[idx] == target, idx, nl))
        lattice[:nl] = lattice[:nl] + 0.5 * (lattice[nbrs[0]] + lattice[nbrs[1]])
    # 4. slice
    out = (lattice[inv].view(m, d1, v) * bary.unsqueeze(2)).sum(1)
    return (LATTICE_GAIN * out).view(bsz, n, v).transpose(1, 2).to(values.dtype)


# --------------------------------------------------------------------------------------------
# autograd function


class _QuadraticCRF(torch.autograd.Function):
    """``-scale * sum(S * (W S))`` with gradient ``-2 * scale * (W S)`` reused from forward."""

    @staticmethod
    def forward(ctx, probs: Tensor, feats: Tensor, scale: float, method: str) -> Tensor:  # noqa: ANN001
        b, k = probs.shape[:2]
        values = probs.reshape(b, k, -1)
        if method == "exact":
            filtered = exact_filter(feats, values)
        else:
            filtered = permutohedral_filter(feats, values)
        loss = -scale * (values * filtered).sum()
        ctx.save_for_backward((-2.0 * scale) * filtered.view_as(probs))
        return loss

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: ANN001, ANN205
        (grad,) = ctx.saved_tensors
        return grad_out * grad, None, None, None


# --------------------------------------------------------------------------------------------
# public API


def _check_inputs(probs: object, images: object) -> None:
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
        lo, hi = torch.aminmax(images.detach())
        lo, hi = float(lo), float(hi)
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
    sigma_xy: float = 100.0,
    sigma_rgb: float = 15.0,
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
        if cfg.downsample > 1:
            p = _pool_sum(p, cfg.downsample)
        feats = _features(img, cfg.downsample, sigma_xy, sigma_rgb)
        return _QuadraticCRF.apply(p, feats, float(weight) / probs.shape[0], cfg.method)


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
        sigma_xy: float = 100.0,
        sigma_rgb: float = 15.0,
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
