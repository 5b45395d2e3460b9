"""Procedural painting primitives of the synthetic sets: noise fields, shapes, textures, motifs.

A :class:`Canvas` holds the pixel grids of one image size; every method draws from a
``numpy.random.Generator`` passed in, so that a sample depends only on its own generator.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FAMILIES", "MOTIF_KINDS", "Canvas", "class_motif", "hsv"]

#: Shape families, by the index stored in :attr:`SyntheticSample.family`.
FAMILIES: tuple[str, ...] = ("blob", "star", "ring", "rectangle", "triangle", "cross")
#: Motif kinds of the class evidence, cycled over the classes.
MOTIF_KINDS: tuple[str, ...] = ("stripes", "dots", "checker", "rings")
_CLASS_SEED = 0xFCA11  # class definitions do not depend on the dataset seed


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB float32 ``(3,)`` of a colour given as hue, saturation, value in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float32)


def class_motif(num_classes: int, c: int) -> dict[str, object]:
    """The fixed motif of class ``c`` among ``num_classes``: kind, frequency, angle, two colours."""
    rng = np.random.default_rng([_CLASS_SEED, num_classes, c])
    hue = (c / num_classes + rng.uniform(-0.05, 0.05)) % 1.0
    return {
        "kind": MOTIF_KINDS[c % len(MOTIF_KINDS)],
        "freq": rng.uniform(0.18, 0.32) * (1 + 0.15 * (c // len(MOTIF_KINDS) % 3)),
        "angle": rng.uniform(0, np.pi) + c * 0.7,
        "color_a": hsv(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0)),
        "color_b": hsv((hue + 0.5) % 1.0, rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.3)),
    }


class Canvas:
    """Pixel grids of an ``size x size`` image and the painting operations on them."""

    def __init__(self, size: int) -> None:
        self.size = size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        self.yy, self.xx = yy, xx
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        self._freq2 = (fx**2 + fy**2).astype(np.float32)

    # ------------------------------------------------------------------------ noise
    def field(self, rng: np.random.Generator, channels: int, sigma: float) -> np.ndarray:
        """Smooth Gaussian noise ``(S, S, channels)`` of unit std, correlation length ``sigma``.

        Only the frequencies where the Gaussian envelope is non-negligible are drawn, and very
        short correlation lengths fall back to white noise.
        """
        s = self.size
        if sigma <= 1.0:
            return rng.standard_normal((s, s, channels), dtype=np.float32)
        k = min(s // 2, int(math.ceil(0.6 / sigma * s)) + 1)  # envelope < 1e-3 beyond
        rows = np.r_[0 : k + 1, s - k : s] if k < s // 2 else np.arange(s)
        cols = slice(0, k + 1)
        env = np.exp(-2 * math.pi**2 * sigma**2 * self._freq2[rows, cols])
        band = (len(rows), env.shape[1])
        spec = np.zeros((channels, s, s // 2 + 1), dtype=np.complex64)
        spec[:, rows, cols] = (
            rng.standard_normal((channels, *band), dtype=np.float32)
            + 1j * rng.standard_normal((channels, *band), dtype=np.float32)
        ) * env
        field = np.fft.irfft2(spec, s=(s, s)).astype(np.float32)
        field /= field.std(axis=(1, 2), keepdims=True) + 1e-8
        return np.ascontiguousarray(field.transpose(1, 2, 0))

    def stripes(self, rng: np.random.Generator, low: float, high: float) -> np.ndarray:
        """A sine grating ``(S, S)`` of random orientation, ``low..high`` radians per pixel / 2 pi."""
        f, a = 2 * math.pi * rng.uniform(low, high), rng.uniform(0, math.pi)
        return np.sin(self.xx * (f * math.cos(a)) + self.yy * (f * math.sin(a)))

    # ------------------------------------------------------------------------ shapes
    def shape(self, rng: np.random.Generator, family: int, cx: float, cy: float, radius: float) -> np.ndarray:
        """Bool mask ``(S, S)`` of a shape of family ``FAMILIES[family]`` around ``(cx, cy)``."""
        angle, aspect = rng.uniform(0, 2 * math.pi), rng.uniform(0.65, 1.0)
        ca, sa = math.cos(angle), math.sin(angle)
        cx, cy, radius = float(cx), float(cy), float(radius)
        dx, dy = self.xx - cx, self.yy - cy
        u = (dx * ca + dy * sa) * (aspect / radius)
        v = (dy * ca - dx * sa) * (1.0 / (radius * aspect))
        if family == 3:  # rounded rectangle (superellipse)
            p = float(rng.uniform(3.0, 6.0))
            return np.abs(u) ** p + np.abs(v) ** p <= 1.0
        if family == 5:  # cross / plus sign
            w = float(rng.uniform(0.3, 0.45))
            return ((np.abs(u) <= w) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= w) & (np.abs(u) <= 1.0))
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        if family == 2:  # ring / crescent
            inner = rng.uniform(0.5, 0.7)
            off = rng.uniform(0.0, 0.5)
            phi = rng.uniform(0, 2 * math.pi)
            return (rho <= 1.0) & (np.hypot(u - off * math.cos(phi), v - off * math.sin(phi)) > inner)
        if family == 4:  # triangle with slightly rounded corners
            sector = 2 * math.pi / 3
            edge = math.cos(sector / 2) / np.cos(np.mod(theta, sector) - sector / 2)
            return rho <= np.minimum(edge, float(rng.uniform(0.8, 0.9))) * 1.2
        r = np.ones_like(rho)
        if family == 1:  # star / flower
            n = float(rng.integers(5, 9))
            r = r + rng.uniform(0.3, 0.45) * np.cos(n * theta + rng.uniform(0, 2 * math.pi))
            r = r / 1.4
        for k in range(2, 5):  # smooth random radial function
            r = r + rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        return rho <= r

    # ------------------------------------------------------------------------ textures
    def body_texture(self, rng: np.random.Generator, base: np.ndarray, bank: int = 0) -> np.ndarray:
        """Class-agnostic body texture ``(S, S, 3)`` around colour ``base`` from texture ``bank``."""
        pattern = self._bank0_pattern(rng) if bank == 0 else self._bank1_pattern(rng)
        tint = self.field(rng, 3, self.size / 6) * 0.04
        return base + 0.09 * pattern + tint

    def _bank0_pattern(self, rng: np.random.Generator) -> np.ndarray:
        """Mottled, cross-hatched or scaly luminance pattern ``(S, S, 1)``."""
        kind = rng.integers(3)
        fine = self.field(rng, 1, 0.8)
        if kind == 0:  # mottled
            return 0.6 * fine + 0.6 * self.field(rng, 1, 3.0)
        if kind == 1:  # cross-hatch
            f, a = 2 * math.pi * rng.uniform(0.08, 0.15), rng.uniform(0, math.pi)
            ca, sa = f * math.cos(a), f * math.sin(a)
            w = np.sin(self.xx * ca + self.yy * sa)
            w2 = np.sin(self.xx * sa - self.yy * ca)
            return 0.5 * (w * w2)[..., None] + 0.4 * fine
        return np.maximum(self.field(rng, 1, 1.5), 0) * 1.2 - 0.4 + 0.3 * fine  # scales: soft spots

    def _bank1_pattern(self, rng: np.random.Generator) -> np.ndarray:
        """Cells, wood grain or speckle luminance pattern ``(S, S, 1)`` (a second texture bank)."""
        kind = rng.integers(3)
        s = self.size
        if kind == 0:  # cells: a coarse random grid, its edges warped by a smooth field
            cell = max(2.0, s * rng.uniform(0.03, 0.07))
            warp = self.field(rng, 2, cell) * cell * 0.4
            grid = rng.standard_normal((int(s / cell) + 3, int(s / cell) + 3)).astype(np.float32)
            iy = np.clip(((self.yy + warp[..., 0]) / cell).astype(int) + 1, 0, grid.shape[0] - 1)
            ix = np.clip(((self.xx + warp[..., 1]) / cell).astype(int) + 1, 0, grid.shape[1] - 1)
            return 0.8 * grid[iy, ix][..., None]
        if kind == 1:  # wood grain: a grating bent by a smooth field
            f, a = 2 * math.pi * rng.uniform(0.05, 0.12), rng.uniform(0, math.pi)
            bend = self.field(rng, 1, s / 10)[..., 0] * rng.uniform(4, 9)
            return np.sin((self.xx * math.cos(a) + self.yy * math.sin(a) + bend) * f)[..., None]
        dots = self.field(rng, 1, 1.2)  # speckle: sparse bright and dark dots
        return np.where(np.abs(dots) > 1.3, np.sign(dots) * 1.5, 0.2 * dots).astype(np.float32)

    def background(self, rng: np.random.Generator, base: np.ndarray, bank: int = 0) -> np.ndarray:
        """Cluttered background ``(S, S, 3)`` around colour ``base`` from texture ``bank``."""
        s = self.size
        image = base + 0.12 * self.field(rng, 3, rng.uniform(s / 16, s / 6))
        image += 0.05 * self.field(rng, 1, 1.0)
        if bank == 1:  # patchwork: a few flat colour regions cut by a smooth field
            regions = np.floor(self.field(rng, 1, rng.uniform(s / 12, s / 5)) * 1.5)
            image += 0.06 * np.tanh(regions) * rng.uniform(-1, 1, 3).astype(np.float32)
        if rng.random() < 0.5:
            image += (0.08 * self.stripes(rng, 0.03, 0.12))[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)
        return image

    def motif(self, rng: np.random.Generator, motif: dict[str, Any], cx: float, cy: float) -> np.ndarray:
        """Texture ``(S, S, 3)`` of a class ``motif`` (see :func:`class_motif`) centred on ``(cx, cy)``."""
        f, a = float(motif["freq"]), float(motif["angle"]) + rng.uniform(-0.25, 0.25)
        ca, sa = math.cos(a), math.sin(a)
        dx, dy = self.xx - cx, self.yy - cy
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        kind = motif["kind"]
        if kind == "stripes":
            t = np.sin((2 * math.pi * f) * u) > 0
        elif kind == "dots":
            t = np.hypot((u * f) % 1 - 0.5, (v * f) % 1 - 0.5) < 0.3
        elif kind == "checker":
            t = (np.floor(u * f * 0.8) + np.floor(v * f * 0.8)) % 2 == 0
        else:  # rings
            t = np.sin((2 * math.pi * f) * np.hypot(u, v)) > 0
        return np.where(t[..., None], motif["color_a"], motif["color_b"]).astype(np.float32)
