"""A procedural WSOL dataset with exact masks, hard in the way real WSOL is, in several variants.

Every image holds one textured object on a textured, cluttered background. The default variant
(``"parts"``):

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

Other variants (:data:`VARIANTS`, or any :class:`SyntheticVariant`) change where the class
evidence is (a part, the object's shape, or its whole texture), the shape families, the object
sizes, the clutter, the colour contrast (camouflage) and the texture bank. A method change is
worth keeping only when it wins on all of them.

Generation is deterministic: image ``i`` depends only on ``(seed, split, i)`` (a
``numpy.random.SeedSequence``), so the dataset is lazy, works with ``DataLoader`` workers, and
the class definitions (motifs) are fixed for a given ``num_classes`` whatever the seed. Use the
same ``seed`` with different ``split`` values for disjoint train/val/test sets.

Examples:
    >>> ds = SyntheticWSOL(8, image_size=64, seed=0, split="train")
    >>> image, label, mask = ds[0]
    >>> image.shape, mask.shape, ds.boxes(0).shape
    (torch.Size([3, 64, 64]), torch.Size([64, 64]), (1, 4))
    >>> SyntheticWSOL(4, image_size=64, variant="shapes").variant.evidence
    'shape'
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_choice, describe
from ..defaults import IMAGENET_MEAN, IMAGENET_STD
from ..metrics import boxes_from_mask
from .painting import FAMILIES, Canvas, class_motif

__all__ = [
    "EVIDENCE",
    "FAMILIES",
    "MEAN",
    "STD",
    "SPLITS",
    "VARIANTS",
    "SyntheticSample",
    "SyntheticVariant",
    "SyntheticWSOL",
]

MEAN: tuple[float, float, float] = IMAGENET_MEAN
"""ImageNet channel means used for normalisation."""
STD: tuple[float, float, float] = IMAGENET_STD
"""ImageNet channel standard deviations used for normalisation."""
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Where the class evidence lies: a small part of the object, its shape, or its whole texture.
EVIDENCE: tuple[str, ...] = ("part", "shape", "texture")


@dataclass(frozen=True)
class SyntheticVariant:
    """How a synthetic set looks.

    Attributes:
        evidence: ``"part"`` (a class motif on a small disc inside the object), ``"shape"`` (the
            class is the object's shape family) or ``"texture"`` (a class motif over the whole object).
        families: shape families of objects and distractors, names from :data:`FAMILIES`; class
            ``c`` has family ``families[c % len(families)]``.
        object_area: range of the object's share of the image.
        distractors: range of the number of body-textured distractor shapes (not in the mask).
        contrast: range of the colour offset between object body and background (lower = camouflage).
        texture_bank: 0 or 1, the set of body and background textures.
        shape_consistency: probability that an object has its class's family (``"part"`` and
            ``"texture"`` evidence; always 1 for ``"shape"``).
        distractor_families: shape families of the distractors (default: ``families``); with
            shape evidence, distractors shaped like a class would be class evidence themselves.
    """

    evidence: str = "part"
    families: tuple[str, ...] = FAMILIES[:4]
    object_area: tuple[float, float] = (0.10, 0.60)
    distractors: tuple[int, int] = (1, 3)
    contrast: tuple[float, float] = (0.18, 0.35)
    texture_bank: int = 0
    shape_consistency: float = 0.5
    distractor_families: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("evidence", self.evidence, EVIDENCE)
        for name in ("families", "distractor_families"):
            value = getattr(self, name)
            if value is None and name == "distractor_families":
                continue
            object.__setattr__(self, name, tuple(value))
            unknown = [f for f in getattr(self, name) if f not in FAMILIES]
            if not getattr(self, name) or unknown:
                raise ValueError(f"`{name}` must be names from {FAMILIES}, got {value!r}.")
        lo, hi = self.object_area
        if not 0 < lo <= hi < 1:
            raise ValueError(f"`object_area` must be a range (lo, hi) with 0 < lo <= hi < 1, got {self.object_area!r}.")
        lo_d, hi_d = self.distractors
        if not (isinstance(lo_d, int) and isinstance(hi_d, int) and 0 <= lo_d <= hi_d):
            raise ValueError(f"`distractors` must be an int range (lo, hi) with 0 <= lo <= hi, got {self.distractors!r}.")
        if not 0 <= self.contrast[0] <= self.contrast[1]:
            raise ValueError(f"`contrast` must be a range (lo, hi) with 0 <= lo <= hi, got {self.contrast!r}.")
        check_choice("texture_bank", self.texture_bank, (0, 1))
        if not isinstance(self.shape_consistency, (int, float)) or not 0 <= self.shape_consistency <= 1:
            raise ValueError(f"`shape_consistency` must be a probability in [0, 1], got {self.shape_consistency!r}.")


#: Named variants: the default, and sets that differ in evidence, textures, shapes, sizes, clutter
#: and camouflage. Each uses its own class count in the benchmarks (``shapes``: 5).
VARIANTS: dict[str, SyntheticVariant] = {
    "parts": SyntheticVariant(),
    "shapes": SyntheticVariant(
        evidence="shape", families=FAMILIES[:5], object_area=(0.12, 0.45), distractors=(2, 4), texture_bank=1,
        distractor_families=("cross",),
    ),
    "textures": SyntheticVariant(
        evidence="texture", families=("blob", "rectangle", "triangle", "cross"), object_area=(0.10, 0.50),
        distractors=(1, 4), texture_bank=1,
    ),
    "small": SyntheticVariant(object_area=(0.03, 0.15), distractors=(3, 6)),
    "camouflage": SyntheticVariant(contrast=(0.04, 0.12), object_area=(0.15, 0.60), distractors=(2, 4)),
}


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered sample.

    Attributes:
        image: float32 ``(H, W, 3)`` RGB in [0, 1].
        label: class index.
        mask: bool ``(H, W)`` object mask.
        part: bool ``(H, W)`` mask of the class evidence (a subset of ``mask``; the whole mask
            for shape and texture evidence).
        family: shape family index in :data:`FAMILIES`.
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


def _resolve_variant(variant: str | SyntheticVariant) -> SyntheticVariant:
    if isinstance(variant, SyntheticVariant):
        return variant
    if isinstance(variant, str) and variant in VARIANTS:
        return VARIANTS[variant]
    raise ValueError(f"`variant` must be one of {sorted(VARIANTS)} or a SyntheticVariant, got {variant!r}.")


class SyntheticWSOL(Dataset):
    """Synthetic weakly-supervised localisation dataset (see the module docstring).

    Args:
        num_images: number of images.
        image_size: side ``S`` of the square images (>= 32).
        num_classes: number of classes (>= 2); class ``c`` has its own shape family and motif.
        seed: dataset seed (>= 0).
        split: one of ``"train"``, ``"val"``, ``"test"``; splits of one seed are disjoint.
        variant: a name of :data:`VARIANTS` or a :class:`SyntheticVariant`.
        normalize: return images normalised with :data:`MEAN`/:data:`STD` (default) or raw in
            [0, 1].
        distractors: ``False`` removes the variant's distractor shapes.
        shape_consistency: overrides the variant's probability that an object has its class's
            own shape family.
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
        variant: str | SyntheticVariant = "parts",
        normalize: bool = True,
        distractors: bool = True,
        shape_consistency: float | None = None,
        cache: bool = False,
    ) -> None:
        self.num_images = _check_int("num_images", num_images, 0)
        self.image_size = _check_int("image_size", image_size, 32)
        self.num_classes = _check_int("num_classes", num_classes, 2)
        self.seed = _check_int("seed", seed, 0)
        check_choice("split", split, SPLITS)
        self.split = split
        variant = _resolve_variant(variant)
        if shape_consistency is not None:
            variant = replace(variant, shape_consistency=shape_consistency)
        if not distractors:
            variant = replace(variant, distractors=(0, 0))
        self.variant = variant
        self.normalize = bool(normalize)
        self._cache: dict[int, SyntheticSample] | None = {} if cache else None
        self._canvas = Canvas(self.image_size)
        self._motifs = [class_motif(self.num_classes, c) for c in range(self.num_classes)]
        self._family_ids = [FAMILIES.index(f) for f in variant.families]
        self._distractor_ids = [FAMILIES.index(f) for f in variant.distractor_families or variant.families]

    @property
    def shape_consistency(self) -> float:
        """Probability that an object has its class's own shape family."""
        return 1.0 if self.variant.evidence == "shape" else float(self.variant.shape_consistency)

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
    # the steps of one sample, in the order they draw from its generator
    # ---------------------------------------------------------------------------------------
    def _generate(self, index: int) -> SyntheticSample:
        rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
        label = index % self.num_classes
        family = self._family(rng, label)
        bg_base = rng.uniform(0.2, 0.8, 3).astype(np.float32)
        image = self._canvas.background(rng, bg_base, self.variant.texture_bank)
        # object body colour: offset from the background so that its edge is visible
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction) + 1e-8
        body = np.clip(bg_base + rng.uniform(*self.variant.contrast) * direction, 0.1, 0.9).astype(np.float32)
        image = self._paint_distractors(rng, image, body)
        mask = self._place_object(rng, family)
        obj = self._canvas.body_texture(rng, body, self.variant.texture_bank)
        obj *= 1 + 0.12 * self._canvas.field(rng, 1, self.image_size / 8)  # shading
        image = np.where(mask[..., None], obj, image)
        image, part = self._paint_evidence(rng, image, mask, label)
        # global colour shift and sensor noise
        image = image * rng.uniform(0.85, 1.15, 3).astype(np.float32) + np.float32(rng.uniform(-0.05, 0.05))
        image += 0.015 * rng.standard_normal(image.shape, dtype=np.float32)
        image = np.clip(image, 0.0, 1.0).astype(np.float32)
        return SyntheticSample(image=image, label=label, mask=mask, part=part, family=family)

    def _family(self, rng: np.random.Generator, label: int) -> int:
        own = self._family_ids[label % len(self._family_ids)]
        if self.variant.evidence == "shape":
            return own
        if rng.random() < self.variant.shape_consistency:
            return own
        return self._family_ids[int(rng.integers(len(self._family_ids)))]

    def _paint_distractors(self, rng: np.random.Generator, image: np.ndarray, body: np.ndarray) -> np.ndarray:
        """Body-like textured shapes that are not the object."""
        low, high = self.variant.distractors
        if high == 0:
            return image
        s = self.image_size
        for _ in range(int(rng.integers(low, high + 1))):
            radius = s * rng.uniform(0.08, 0.16)
            family = self._distractor_ids[int(rng.integers(len(self._distractor_ids)))]
            cx, cy = rng.uniform(0, s, 2)
            blob = self._canvas.shape(rng, family, float(cx), float(cy), radius)
            colour = np.clip(body + rng.normal(0, 0.08, 3), 0, 1).astype(np.float32)
            tex = self._canvas.body_texture(rng, colour, self.variant.texture_bank)
            image = np.where(blob[..., None], tex, image)
        return image

    def _place_object(
        self, rng: np.random.Generator, family: int, area: tuple[float, float] | None = None
    ) -> np.ndarray:
        """The object mask: a shape of ``family`` whose area is in ``area`` (default: the variant's), 12 tries."""
        s = self.image_size
        low, high = area or self.variant.object_area
        mask = np.zeros((s, s), dtype=bool)
        for _ in range(12):
            target = rng.uniform(low, high)
            probe = self._canvas.shape(np.random.default_rng(rng.integers(2**32)), family, s / 2, s / 2, s * 0.25)
            unit_area = max(probe.mean(), 1e-3)
            radius = s * 0.25 * np.sqrt(target / unit_area)
            margin = min(radius * 0.8, s / 2)
            cx, cy = rng.uniform(margin, s - margin, 2)
            mask = self._canvas.shape(rng, family, cx, cy, radius)
            if low <= mask.mean() <= high:
                break
        return mask

    def _paint_evidence(
        self, rng: np.random.Generator, image: np.ndarray, mask: np.ndarray, label: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Paint the class motif (on a part or the whole object); returns the image and the evidence mask."""
        evidence = self.variant.evidence
        if evidence == "shape":
            return image, mask
        ys, xs = np.nonzero(mask)
        k = int(rng.integers(len(ys)))
        cx, cy = float(xs[k]), float(ys[k])
        if evidence == "part":  # a disc inside the object, about a third of its radius
            part_r = max(3.0, 0.38 * np.sqrt(len(ys) / np.pi)) * rng.uniform(0.85, 1.15)
            part = mask & (np.hypot(self._canvas.xx - cx, self._canvas.yy - cy) <= part_r)
        else:
            part = mask
        motif = self._canvas.motif(rng, self._motifs[label], cx, cy) + 0.04 * self._canvas.field(rng, 3, 1.0)
        alpha = rng.uniform(0.75, 0.95) if evidence == "part" else rng.uniform(0.45, 0.7)
        return np.where(part[..., None], alpha * motif + (1 - alpha) * image, image), part
