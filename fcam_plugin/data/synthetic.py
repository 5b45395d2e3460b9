"""A procedural WSOL dataset with exact masks, hard in the way real WSOL is.

Every image holds one textured object on a textured, cluttered background:

* **Shapes.** Four shape families — smooth blobs, stars/flowers, rings/crescents and rounded
  rectangles (superellipses) — with random scale, aspect ratio and rotation, covering 10–60 % of
  the image. The family is only *weakly* tied to the class: with probability
  ``shape_consistency`` (default 0.5) it is the class's own family, otherwise a random one.
* **Discriminative parts.** The object body has a texture and colour drawn from distributions
  *shared by all classes*; the class evidence is a small part (a disc inside the object, about a
  third of its radius) carrying a class-specific motif (stripes, dots, checker or rings, with a
  class-specific frequency, orientation and colour pair). A classifier therefore needs only the
  part, and its CAM covers the part rather than the whole object, as on CUB or OpenImages.
* **Backgrounds.** Smooth colour noise fields, optional stripes, colour shifts, and distractor
  blobs that reuse the object *body* textures (but never a part motif) and are not in the mask.
  Object and background colours overlap partly, but the object colour is offset from the local
  background so that boundaries stay visible to a colour-based CRF.

Generation is deterministic: image ``i`` depends only on ``(seed, split, i)`` (a
``numpy.random.SeedSequence``), so the dataset is lazy, works with ``DataLoader`` workers, and
the class definitions (motifs) are fixed for a given ``num_classes`` whatever the seed. Use the
same ``seed`` with different ``split`` values for disjoint train/val/test sets.

Examples:
    >>> ds = SyntheticWSOL(8, image_size=64, seed=0, split="train")
    >>> image, label, mask = ds[0]
    >>> image.shape, mask.shape, ds.boxes(0).shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]), (1, 4))
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._checks import check_choice, describe
from ..metrics import boxes_from_mask

__all__ = ["MEAN", "STD", "SPLITS", "SyntheticSample", "SyntheticWSOL", "save_wsol_folder"]

MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""ImageNet channel means used for normalisation."""
STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""ImageNet channel standard deviations used for normalisation."""
SPLITS: tuple[str, ...] = ("train", "val", "test")

_NUM_FAMILIES = 4
_MOTIF_KINDS = ("stripes", "dots", "checker", "rings")
_CLASS_SEED = 0xFCA11  # class definitions do not depend on the dataset seed


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered sample.

    Attributes:
        image: float32 ``(H, W, 3)`` RGB in [0, 1].
        label: class index.
        mask: bool ``(H, W)`` object mask.
        part: bool ``(H, W)`` mask of the discriminative part (a subset of ``mask``).
        family: shape family index (0 blob, 1 star, 2 ring/crescent, 3 rounded rectangle).
    """

    image: np.ndarray
    label: int
    mask: np.ndarray
    part: np.ndarray
    family: int


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


class SyntheticWSOL(Dataset):
    """Synthetic weakly-supervised localisation dataset (see the module docstring).

    Args:
        num_images: number of images.
        image_size: side ``S`` of the square images (>= 32).
        num_classes: number of classes (>= 2); class ``c`` has shape family ``c % 4`` and its
            own part motif.
        seed: dataset seed (>= 0).
        split: one of ``"train"``, ``"val"``, ``"test"``; splits of one seed are disjoint.
        normalize: return images normalised with :data:`MEAN`/:data:`STD` (default) or raw in
            [0, 1].
        distractors: add body-textured distractor blobs to the background.
        shape_consistency: probability that an object has its class's own shape family.
        cache: keep rendered samples in memory (per dataset instance).

    Returns (``__getitem__``):
        ``(image, label, mask)``: float32 tensor ``(3, S, S)``, ``int``, float32 tensor
        ``(S, S)`` with values in {0, 1}.

    Raises:
        ValueError: an argument is out of range.

    Examples:
        >>> ds = SyntheticWSOL(4, image_size=48, normalize=False)
        >>> float(ds[1][0].min()) >= 0.0 and ds[1][1] == 1
        True
    """

    def __init__(
        self,
        num_images: int,
        image_size: int = 96,
        num_classes: int = 4,
        seed: int = 0,
        split: str = "train",
        *,
        normalize: bool = True,
        distractors: bool = True,
        shape_consistency: float = 0.5,
        cache: bool = False,
    ) -> None:
        self.num_images = _check_int("num_images", num_images, 0)
        self.image_size = _check_int("image_size", image_size, 32)
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.seed = _check_int("seed", seed, 0)
        check_choice("split", split, SPLITS)
        self.split = split
        if not isinstance(shape_consistency, (int, float)) or not 0 <= shape_consistency <= 1:
            raise ValueError(
                f"`shape_consistency` must be a probability in [0, 1], got {shape_consistency!r}."
            )
        self.shape_consistency = float(shape_consistency)
        self.normalize = bool(normalize)
        self.distractors = bool(distractors)
        self._cache: dict[int, SyntheticSample] | None = {} if cache else None
        s = self.image_size
        yy, xx = np.mgrid[0:s, 0:s].astype(np.float32)
        self._yy, self._xx = yy, xx
        fy = np.fft.fftfreq(s)[:, None]
        fx = np.fft.rfftfreq(s)[None, :]
        self._freq2 = (fx**2 + fy**2).astype(np.float32)
        self._motifs = [self._class_motif(c) for c in range(self.num_classes)]

    # ---------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        sample = self.render(index)
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1)))
        if self.normalize:
            mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
            std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
            image = (image - mean) / std
        return image, sample.label, torch.from_numpy(sample.mask.astype(np.float32))

    def boxes(self, index: int) -> np.ndarray:
        """Ground-truth box of image ``index``: int64 ``(1, 4)`` ``(x0, y0, x1, y1)``.

        The box encloses the whole object mask, in the convention of
        :func:`fcam_plugin.metrics.boxes_from_mask`.
        """
        return boxes_from_mask(self.render(index).mask, per_component=False)

    def render(self, index: int) -> SyntheticSample:
        """Render sample ``index`` (deterministic in ``(seed, split, index)``).

        Raises:
            IndexError: ``index`` out of range.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"`index` must be an int, got {describe(index)}.")
        if not -self.num_images <= index < self.num_images:
            raise IndexError(f"`index` {index} out of range for {self.num_images} images.")
        index = int(index) % self.num_images
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        sample = self._generate(index)
        if self._cache is not None:
            self._cache[index] = sample
        return sample

    # ---------------------------------------------------------------------------------------
    # building blocks
    # ---------------------------------------------------------------------------------------
    def _class_motif(self, c: int) -> dict[str, object]:
        rng = np.random.default_rng([_CLASS_SEED, self.num_classes, c])
        hue = (c / self.num_classes + rng.uniform(-0.05, 0.05)) % 1.0
        return {
            "kind": _MOTIF_KINDS[c % len(_MOTIF_KINDS)],
            "freq": rng.uniform(0.18, 0.32) * (1 + 0.15 * (c // len(_MOTIF_KINDS) % 3)),
            "angle": rng.uniform(0, np.pi) + c * 0.7,
            "color_a": _hsv(hue, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0)),
            "color_b": _hsv((hue + 0.5) % 1.0, rng.uniform(0.1, 0.4), rng.uniform(0.05, 0.3)),
        }

    def _field(self, rng: np.random.Generator, channels: int, sigma: float) -> np.ndarray:
        """Smooth Gaussian noise ``(S, S, channels)`` of unit std, correlation length ``sigma``.

        Only the frequencies where the Gaussian envelope is non-negligible are drawn, and very
        short correlation lengths fall back to white noise.
        """
        s = self.image_size
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

    def _shape(
        self, rng: np.random.Generator, family: int, cx: float, cy: float, radius: float
    ) -> np.ndarray:
        """Bool mask ``(S, S)`` of a shape of the given family and parameters."""
        angle, aspect = rng.uniform(0, 2 * math.pi), rng.uniform(0.65, 1.0)
        ca, sa = math.cos(angle), math.sin(angle)
        cx, cy, radius = float(cx), float(cy), float(radius)
        dx, dy = self._xx - cx, self._yy - cy
        u = (dx * ca + dy * sa) * (aspect / radius)
        v = (dy * ca - dx * sa) * (1.0 / (radius * aspect))
        if family == 3:  # rounded rectangle (superellipse)
            p = float(rng.uniform(3.0, 6.0))
            return np.abs(u) ** p + np.abs(v) ** p <= 1.0
        rho, theta = np.hypot(u, v), np.arctan2(v, u)
        if family == 2:  # ring / crescent
            inner = rng.uniform(0.5, 0.7)
            off = rng.uniform(0.0, 0.5)
            phi = rng.uniform(0, 2 * math.pi)
            return (rho <= 1.0) & (np.hypot(u - off * math.cos(phi), v - off * math.sin(phi)) > inner)
        r = np.ones_like(rho)
        if family == 1:  # star / flower
            n = float(rng.integers(5, 9))
            r = r + rng.uniform(0.3, 0.45) * np.cos(n * theta + rng.uniform(0, 2 * math.pi))
            r = r / 1.4
        for k in range(2, 5):  # smooth random radial function
            r = r + rng.uniform(0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
        return rho <= r

    def _body_texture(self, rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
        """Class-agnostic body texture ``(S, S, 3)`` around colour ``base``."""
        s = self.image_size
        kind = rng.integers(3)
        fine = self._field(rng, 1, 0.8)
        if kind == 0:  # mottled
            pattern = 0.6 * fine + 0.6 * self._field(rng, 1, 3.0)
        elif kind == 1:  # cross-hatch
            f, a = 2 * math.pi * rng.uniform(0.08, 0.15), rng.uniform(0, math.pi)
            ca, sa = f * math.cos(a), f * math.sin(a)
            w = np.sin(self._xx * ca + self._yy * sa)
            w2 = np.sin(self._xx * sa - self._yy * ca)
            pattern = 0.5 * (w * w2)[..., None] + 0.4 * fine
        else:  # scales: soft spots
            pattern = np.maximum(self._field(rng, 1, 1.5), 0) * 1.2 - 0.4 + 0.3 * fine
        tint = self._field(rng, 3, s / 6) * 0.04
        return base + 0.09 * pattern + tint

    def _motif(self, rng: np.random.Generator, c: int, cx: float, cy: float) -> np.ndarray:
        """Class-specific motif texture ``(S, S, 3)`` centred on ``(cx, cy)``."""
        m = self._motifs[c]
        f, a = float(m["freq"]), float(m["angle"]) + rng.uniform(-0.25, 0.25)
        ca, sa = math.cos(a), math.sin(a)
        dx, dy = self._xx - cx, self._yy - cy
        u = dx * ca + dy * sa
        v = dy * ca - dx * sa
        kind = m["kind"]
        if kind == "stripes":
            t = np.sin((2 * math.pi * f) * u) > 0
        elif kind == "dots":
            t = np.hypot((u * f) % 1 - 0.5, (v * f) % 1 - 0.5) < 0.3
        elif kind == "checker":
            t = (np.floor(u * f * 0.8) + np.floor(v * f * 0.8)) % 2 == 0
        else:  # rings
            t = np.sin((2 * math.pi * f) * np.hypot(u, v)) > 0
        return np.where(t[..., None], m["color_a"], m["color_b"]).astype(np.float32)

    # ---------------------------------------------------------------------------------------
    def _generate(self, index: int) -> SyntheticSample:
        s = self.image_size
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        label = index % self.num_classes
        if rng.random() < self.shape_consistency:
            family = label % _NUM_FAMILIES
        else:
            family = int(rng.integers(_NUM_FAMILIES))

        # ---- background: smooth colour field + optional stripes
        bg_base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
        image = bg_base + 0.12 * self._field(rng, 3, rng.uniform(s / 16, s / 6))
        image += 0.05 * self._field(rng, 1, 1.0)
        if rng.random() < 0.5:
            f, a = 2 * math.pi * rng.uniform(0.03, 0.12), rng.uniform(0, math.pi)
            stripes = np.sin(self._xx * (f * math.cos(a)) + self._yy * (f * math.sin(a)))
            image += (0.08 * stripes)[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)

        # ---- object: body colour offset from the background so that its edge is visible
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction) + 1e-8
        body = np.clip(bg_base + rng.uniform(0.18, 0.35) * direction, 0.1, 0.9).astype(np.float32)

        # ---- distractors: body-like textures that are not the object
        if self.distractors:
            for _ in range(int(rng.integers(1, 4))):
                radius = s * rng.uniform(0.08, 0.16)
                blob = self._shape(rng, int(rng.integers(_NUM_FAMILIES)), *rng.uniform(0, s, 2),
                                   radius)  # fmt: skip
                tex = self._body_texture(rng, np.clip(body + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32))
                image = np.where(blob[..., None], tex, image)

        # ---- object shape covering 10-60 % of the image
        mask = np.zeros((s, s), dtype=bool)
        for _ in range(12):
            target = rng.uniform(0.10, 0.60)
            probe = self._shape(np.random.default_rng(rng.integers(2**32)), family, s / 2, s / 2,
                                s * 0.25)  # fmt: skip
            unit_area = max(probe.mean(), 1e-3)
            radius = s * 0.25 * np.sqrt(target / unit_area)
            margin = min(radius * 0.8, s / 2)
            cx, cy = rng.uniform(margin, s - margin, 2)
            mask = self._shape(rng, family, cx, cy, radius)
            if 0.10 <= mask.mean() <= 0.60:
                break
        obj = self._body_texture(rng, body)
        obj *= 1 + 0.12 * self._field(rng, 1, s / 8)  # shading
        image = np.where(mask[..., None], obj, image)

        # ---- discriminative part: a disc inside the object with the class motif
        ys, xs = np.nonzero(mask)
        k = int(rng.integers(len(ys)))
        pcx, pcy = float(xs[k]), float(ys[k])
        part_r = max(3.0, 0.38 * np.sqrt(len(ys) / np.pi)) * rng.uniform(0.85, 1.15)
        part = mask & (np.hypot(self._xx - pcx, self._yy - pcy) <= part_r)
        motif = self._motif(rng, label, pcx, pcy) + 0.04 * self._field(rng, 3, 1.0)
        alpha = rng.uniform(0.75, 0.95)
        image = np.where(part[..., None], alpha * motif + (1 - alpha) * image, image)

        # ---- global colour shift and sensor noise
        image = image * rng.uniform(0.85, 1.15, 3).astype(np.float32) + np.float32(
            rng.uniform(-0.05, 0.05)
        )
        image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        return SyntheticSample(image=image, label=label, mask=mask, part=part, family=family)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.asarray(rgb, dtype=np.float32)


# -------------------------------------------------------------------------------------------
# export in the wsolevaluation layout
# -------------------------------------------------------------------------------------------
def _raw_sample(dataset: object, index: int) -> tuple[np.ndarray, int, np.ndarray]:
    """``(uint8 image (H, W, 3), label, bool mask (H, W))`` from a dataset item."""
    if isinstance(dataset, SyntheticWSOL):
        s = dataset.render(index)
        return (s.image * 255 + 0.5).astype(np.uint8), s.label, s.mask
    item = dataset[index]  # type: ignore[index]
    if not isinstance(item, (tuple, list)) or len(item) < 3:
        raise TypeError(
            f"`dataset` items must be (image, label, mask) tuples, got {describe(item)} at "
            f"index {index}."
        )
    image, label, mask = item[:3]
    image = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    mask = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if image.ndim != 3 or image.shape[0] != 3 or image.min() < 0 or image.max() > 1:
        raise ValueError(
            f"`dataset` images must be raw RGB (3, H, W) in [0, 1] (use normalize=False), got "
            f"{describe(image)} with range [{image.min():.3g}, {image.max():.3g}] at index {index}."
        )
    if mask.shape != image.shape[1:]:
        raise ValueError(
            f"`dataset` masks must be (H, W) = {list(image.shape[1:])}, got {list(mask.shape)}."
        )
    return (image.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8), int(label), mask > 0.5


def save_wsol_folder(
    dataset: object,
    root: str | os.PathLike,
    name: str = "SYNTHETIC",
    split: str | None = None,
    localization: str = "masks",
) -> tuple[Path, Path]:
    """Write a dataset to disk in the wsolevaluation layout (see :mod:`fcam_plugin.data.wsol`).

    Files written (``<split>`` defaults to ``dataset.split``, else ``"test"``)::

        <root>/data/<name>/<split>/00000.png                  images
        <root>/data/<name>/masks/<split>/00000.png            masks (localization="masks")
        <root>/metadata/<name>/<split>/image_ids.txt          <split>/00000.png
                                      class_labels.txt        <split>/00000.png,<label>
                                      image_sizes.txt         <split>/00000.png,<W>,<H>
                                      localization.txt        boxes: id,x0,y0,x1,y1
                                                              masks: id,masks/<split>/00000.png,

    Args:
        dataset: a :class:`SyntheticWSOL` (rendered raw), or any indexable dataset with
            ``len()`` whose items are ``(image (3, H, W) in [0, 1], label, mask (H, W))``.
        root: output folder (created if needed).
        name: dataset folder name (``CUB``, ``OpenImages``, ... in wsolevaluation).
        split: split name used for the sub-folders.
        localization: ``"masks"`` (OpenImages flavour) or ``"boxes"`` (CUB flavour; one box
            around each object mask, :func:`fcam_plugin.metrics.boxes_from_mask` convention).

    Returns:
        ``(data_root, metadata_root)`` = ``(<root>/data/<name>, <root>/metadata/<name>)``, the
        arguments expected by :class:`fcam_plugin.data.wsol.WSOLDataset`.

    Raises:
        ValueError: bad ``localization``, or dataset items that are not raw images and masks.
        TypeError: dataset items of the wrong type.

    Examples:
        >>> import tempfile
        >>> data_root, meta_root = save_wsol_folder(SyntheticWSOL(2, 32), tempfile.mkdtemp())
        >>> sorted(p.name for p in (meta_root / "train").iterdir())[:2]
        ['class_labels.txt', 'image_ids.txt']
    """
    check_choice("localization", localization, ("masks", "boxes"))
    if split is None:
        split = getattr(dataset, "split", "test")
    if not isinstance(name, str) or not name or "/" in name or "," in name:
        raise ValueError(f"`name` must be a non-empty folder name without '/' or ',', got {name!r}.")
    root = Path(root)
    data_root, meta_root = root / "data" / name, root / "metadata" / name
    (data_root / split).mkdir(parents=True, exist_ok=True)
    (meta_root / split).mkdir(parents=True, exist_ok=True)
    if localization == "masks":
        (data_root / "masks" / split).mkdir(parents=True, exist_ok=True)
    ids, labels, sizes, locs = [], [], [], []
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, label, mask = _raw_sample(dataset, i)
        image_id = f"{split}/{i:05d}.png"
        Image.fromarray(image).save(data_root / image_id)
        ids.append(image_id)
        labels.append(f"{image_id},{label}")
        sizes.append(f"{image_id},{image.shape[1]},{image.shape[0]}")
        if localization == "masks":
            mask_id = f"masks/{split}/{i:05d}.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(data_root / mask_id)
            locs.append(f"{image_id},{mask_id},")
        else:
            for box in boxes_from_mask(mask, per_component=False):
                locs.append(f"{image_id}," + ",".join(str(int(v)) for v in box))
    for fname, lines in (
        ("image_ids.txt", ids),
        ("class_labels.txt", labels),
        ("image_sizes.txt", sizes),
        ("localization.txt", locs),
    ):
        (meta_root / split / fname).write_text("\n".join(lines) + "\n")
    return data_root, meta_root
