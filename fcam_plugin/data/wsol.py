"""Loader for datasets in the wsolevaluation layout (Choe et al., CVPR 2020).

Expected layout (``clovaai/wsolevaluation``; CUB and OpenImages ship this way)::

    <metadata_root>/<split>/image_ids.txt      one image id (path relative to data_root) a line
                           class_labels.txt    image_id,class_id
                           image_sizes.txt     image_id,width,height          (optional)
                           localization.txt    boxes (CUB):  image_id,x0,y0,x1,y1
                                                 one line per box, several boxes per image allowed
                                               masks (OpenImages): image_id,mask_path,ignore_path
                                                 one line per mask (masks of an image are OR-ed);
                                                 ignore_path may be empty; paths are relative to
                                                 mask_root (default: data_root)
    <data_root>/<image_id>                     images (any format PIL reads)
    <mask_root>/<mask_path>                    masks, PNG, foreground > 127

With the wsolevaluation folders, ``data_root = dataset/CUB`` and
``metadata_root = metadata/CUB``. :func:`fcam_plugin.data.save_wsol_folder` writes this layout.

Images are resized to a fixed ``image_size``; boxes are rescaled with
``int(coordinate * new_size / original_size)`` and masks are resized with nearest-neighbour
interpolation. Masks are returned as uint8 with 0 (background), 1 (foreground) and 255 (ignored,
the OpenImages "ignore" regions that are not foreground), which is what
:class:`fcam_plugin.metrics.PxAP` expects (``ignore_index=255``).

Examples:
    >>> from torch.utils.data import DataLoader
    >>> ds = WSOLDataset("dataset/CUB", "metadata/CUB", "test", image_size=224)  # doctest: +SKIP
    >>> loader = DataLoader(ds, batch_size=32, collate_fn=wsol_collate)  # doctest: +SKIP
    >>> images, labels, extra = next(iter(loader))  # doctest: +SKIP
    >>> extra["boxes"][0].shape  # (N_0, 4)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .._checks import check_choice, describe
from ..errors import MetadataError
from .synthetic import MEAN, STD

__all__ = [
    "MetadataError",
    "WSOLDataset",
    "read_class_labels",
    "read_image_ids",
    "read_image_sizes",
    "read_localization",
    "wsol_collate",
]


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                out.append((number, line))
    return out


def _int(path: Path, number: int, field: str, what: str) -> int:
    try:
        return int(float(field)) if "." in field else int(field)
    except ValueError:
        raise MetadataError(f"{path}:{number}: {what} must be an integer, got {field!r}.") from None


def read_image_ids(path: str | os.PathLike) -> list[str]:
    """Read ``image_ids.txt``: one image id a line.

    Raises:
        FileNotFoundError: missing file.
        MetadataError: duplicated id or a line containing a comma.
    """
    path = Path(path)
    ids: list[str] = []
    seen: dict[str, int] = {}
    for number, line in _lines(path):
        image_id = line.strip()
        if "," in image_id:
            raise MetadataError(f"{path}:{number}: expected one image id a line, got {line!r}.")
        if image_id in seen:
            raise MetadataError(
                f"{path}:{number}: duplicated image id {image_id!r} (first on line {seen[image_id]})."
            )
        seen[image_id] = number
        ids.append(image_id)
    return ids


def read_class_labels(path: str | os.PathLike) -> dict[str, int]:
    """Read ``class_labels.txt``: ``image_id,class_id`` lines.

    Raises:
        FileNotFoundError: missing file.
        MetadataError: wrong field count or non-integer / negative class id.
    """
    path = Path(path)
    labels = {}
    for number, line in _lines(path):
        fields = line.split(",")
        if len(fields) != 2:
            raise MetadataError(f"{path}:{number}: expected 'image_id,class_id', got {line!r}.")
        label = _int(path, number, fields[1].strip(), "class_id")
        if label < 0:
            raise MetadataError(f"{path}:{number}: class_id must be >= 0, got {label}.")
        labels[fields[0].strip()] = label
    return labels


def read_image_sizes(path: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Read ``image_sizes.txt``: ``image_id,width,height`` lines -> ``{id: (width, height)}``.

    Raises:
        FileNotFoundError: missing file.
        MetadataError: wrong field count or non-positive size.
    """
    path = Path(path)
    sizes = {}
    for number, line in _lines(path):
        fields = line.split(",")
        if len(fields) != 3:
            raise MetadataError(f"{path}:{number}: expected 'image_id,width,height', got {line!r}.")
        w, h = (_int(path, number, f.strip(), "width/height") for f in fields[1:])
        if w <= 0 or h <= 0:
            raise MetadataError(f"{path}:{number}: width and height must be > 0, got {w}, {h}.")
        sizes[fields[0].strip()] = (w, h)
    return sizes


def read_localization(
    path: str | os.PathLike,
) -> tuple[str, dict[str, Any]]:
    """Read ``localization.txt`` in either flavour.

    Returns:
        ``("boxes", {id: int64 array (N, 4)})`` for ``image_id,x0,y0,x1,y1`` lines, or
        ``("masks", {id: (list of mask paths, ignore path or None)})`` for
        ``image_id,mask_path,ignore_path`` lines.

    Raises:
        FileNotFoundError: missing file.
        MetadataError: a line of the wrong form, flavours mixed in one file, bad coordinates,
            or two different ignore paths for one image.
    """
    path = Path(path)
    kind: str | None = None
    boxes: dict[str, list[list[int]]] = {}
    masks: dict[str, tuple[list[str], str | None]] = {}
    for number, line in _lines(path):
        fields = [f.strip() for f in line.split(",")]
        this = "boxes" if len(fields) == 5 else "masks" if len(fields) == 3 else None
        if this is None:
            raise MetadataError(
                f"{path}:{number}: expected 'image_id,x0,y0,x1,y1' (boxes) or "
                f"'image_id,mask_path,ignore_path' (masks), got {line!r}."
            )
        if kind is not None and this != kind:
            raise MetadataError(f"{path}:{number}: a {this} line in a file of {kind}: {line!r}.")
        kind = this
        image_id = fields[0]
        if kind == "boxes":
            x0, y0, x1, y1 = (_int(path, number, f, "box coordinate") for f in fields[1:])
            if x1 < x0 or y1 < y0 or min(x0, y0) < 0:
                raise MetadataError(
                    f"{path}:{number}: box must satisfy 0 <= x0 <= x1 and 0 <= y0 <= y1, got "
                    f"{(x0, y0, x1, y1)}."
                )
            boxes.setdefault(image_id, []).append([x0, y0, x1, y1])
        else:
            if not fields[1]:
                raise MetadataError(f"{path}:{number}: empty mask_path in {line!r}.")
            ignore = fields[2] or None
            paths, old_ignore = masks.get(image_id, ([], None))
            if old_ignore is not None and ignore is not None and ignore != old_ignore:
                raise MetadataError(
                    f"{path}:{number}: second ignore path {ignore!r} for {image_id!r} "
                    f"(already {old_ignore!r})."
                )
            masks[image_id] = (paths + [fields[1]], ignore or old_ignore)
    if kind is None:
        raise MetadataError(f"{path}: no localization line.")
    if kind == "boxes":
        return kind, {k: np.asarray(v, dtype=np.int64) for k, v in boxes.items()}
    return kind, masks


def _size_arg(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        hw = (int(image_size), int(image_size))
    elif isinstance(image_size, (tuple, list)) and len(image_size) == 2:
        hw = (image_size[0], image_size[1])
    else:
        hw = (0, 0)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ValueError(
            f"`image_size` must be a positive int or an (H, W) pair, got {image_size!r}."
        )
    return int(hw[0]), int(hw[1])


class WSOLDataset(Dataset):
    """A split of a wsolevaluation-layout dataset (see the module docstring).

    Args:
        data_root: folder the image ids are relative to (``dataset/CUB``).
        metadata_root: folder holding one sub-folder per split (``metadata/CUB``).
        split: split sub-folder name (``train``, ``val``, ``test``, ...).
        transform: callable applied to the resized ``PIL.Image`` (RGB) that returns a tensor
            ``(3, H, W)``; it must not change the geometry. Default: to float in [0, 1], then
            ImageNet normalisation if ``normalize``.
        image_size: output size, an int or ``(H, W)`` (default 224).
        normalize: ImageNet mean/std normalisation in the default transform.
        mask_root: folder the mask paths are relative to (default ``data_root``).
        localization: ``"boxes"``, ``"masks"``, ``"none"`` (no ``localization.txt`` needed, e.g.
            training splits) or ``None`` to auto-detect (``"none"`` when the file is absent).

    Returns (``__getitem__``):
        ``(image, label, extra)``: float32 ``(3, H, W)``, ``int``, and a dict with
        ``"image_id"`` (str), ``"boxes"`` (int64 tensor ``(N, 4)``, ``(0, 4)`` without boxes),
        ``"mask"`` (uint8 tensor ``(H, W)`` with 0/1/255, or ``None`` without masks) and
        ``"orig_size"`` (``(width, height)``). Use :func:`wsol_collate` in a ``DataLoader``.

    Raises:
        FileNotFoundError: missing metadata file.
        MetadataError: malformed metadata, or an image id without a class label.
        ValueError: invalid arguments.
    """

    def __init__(
        self,
        data_root: str | os.PathLike,
        metadata_root: str | os.PathLike,
        split: str,
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        image_size: int | Sequence[int] = 224,
        *,
        normalize: bool = True,
        mask_root: str | os.PathLike | None = None,
        localization: str | None = None,
    ) -> None:
        self.data_root = Path(data_root)
        self.mask_root = Path(mask_root) if mask_root is not None else self.data_root
        self.meta = Path(metadata_root) / split
        if not self.meta.is_dir():
            raise FileNotFoundError(
                f"metadata folder for split {split!r} not found: {self.meta} (expected "
                "<metadata_root>/<split>/image_ids.txt, ...)."
            )
        if localization is not None:
            check_choice("localization", localization, ("boxes", "masks", "none"))
        if transform is not None and not callable(transform):
            raise TypeError(f"`transform` must be callable or None, got {describe(transform)}.")
        self.transform = transform
        self.normalize = bool(normalize)
        self.image_size = _size_arg(image_size)
        self.split = split
        self.image_ids = read_image_ids(self.meta / "image_ids.txt")
        labels = read_class_labels(self.meta / "class_labels.txt")
        missing = [i for i in self.image_ids if i not in labels]
        if missing:
            raise MetadataError(
                f"{self.meta / 'class_labels.txt'}: no class label for {len(missing)} image id(s), "
                f"e.g. {missing[:3]}."
            )
        self.labels = [labels[i] for i in self.image_ids]
        sizes_file = self.meta / "image_sizes.txt"
        self.image_sizes = read_image_sizes(sizes_file) if sizes_file.is_file() else {}
        loc_file = self.meta / "localization.txt"
        self.localization = localization or ("none" if not loc_file.is_file() else None)
        self._loc: dict[str, Any] = {}
        if self.localization != "none":
            kind, self._loc = read_localization(loc_file)
            if self.localization is not None and kind != self.localization:
                raise MetadataError(
                    f"{loc_file}: holds {kind}, but localization={self.localization!r} was asked."
                )
            self.localization = kind
            missing = [i for i in self.image_ids if i not in self._loc]
            if missing:
                raise MetadataError(
                    f"{loc_file}: no {kind} for {len(missing)} image id(s), e.g. {missing[:3]}."
                )

    def __len__(self) -> int:
        return len(self.image_ids)

    def _mask(self, image_id: str) -> np.ndarray:
        h, w = self.image_size
        paths, ignore = self._loc[image_id]

        def load(rel: str) -> np.ndarray:
            with Image.open(self.mask_root / rel) as file:
                mask = file.convert("L").resize((w, h), Image.Resampling.NEAREST)
                return np.asarray(mask) > 127

        fg = np.zeros((h, w), dtype=bool)
        for rel in paths:
            fg |= load(rel)
        out = fg.astype(np.uint8)
        if ignore is not None:
            out[load(ignore) & ~fg] = 255
        return out

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, dict[str, Any]]:
        image_id = self.image_ids[index]
        h, w = self.image_size
        with Image.open(self.data_root / image_id) as file:
            img = file.convert("RGB")
        orig_w, orig_h = img.size
        meta_size = self.image_sizes.get(image_id)
        if meta_size is not None and meta_size != (orig_w, orig_h):
            raise MetadataError(
                f"{self.meta / 'image_sizes.txt'}: size of {image_id!r} is {meta_size} (W, H), but "
                f"the image file is {(orig_w, orig_h)}."
            )
        img = img.resize((w, h), Image.Resampling.BILINEAR)
        if self.transform is not None:
            image = self.transform(img)
        else:
            image = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
            if self.normalize:
                mean = torch.tensor(MEAN, dtype=torch.float32)[:, None, None]
                std = torch.tensor(STD, dtype=torch.float32)[:, None, None]
                image = (image - mean) / std
        boxes = torch.zeros((0, 4), dtype=torch.int64)
        mask = None
        if self.localization == "boxes":
            b = self._loc[image_id].astype(np.float64)
            scale = np.array([w / orig_w, h / orig_h, w / orig_w, h / orig_h])
            boxes = torch.from_numpy((b * scale).astype(np.int64))
        elif self.localization == "masks":
            mask = torch.from_numpy(self._mask(image_id))
        extra = {"image_id": image_id, "boxes": boxes, "mask": mask, "orig_size": (orig_w, orig_h)}
        return image, self.labels[index], extra


def wsol_collate(
    batch: Sequence[tuple[torch.Tensor, int, dict[str, Any]]],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Collate :class:`WSOLDataset` items (boxes vary in count).

    Args:
        batch: list of ``(image, label, extra)`` items.

    Returns:
        ``(images (B, 3, H, W), labels (B,) int64, extra)`` with ``extra["boxes"]`` a list of
        ``B`` int64 tensors ``(N_i, 4)``, ``extra["masks"]`` a uint8 tensor ``(B, H, W)`` or
        ``None``, ``extra["image_ids"]`` and ``extra["orig_sizes"]`` lists.

    Raises:
        ValueError: empty batch.
    """
    if len(batch) == 0:
        raise ValueError("`batch` is empty.")
    images = torch.stack([item[0] for item in batch])
    labels = torch.as_tensor([item[1] for item in batch], dtype=torch.int64)
    masks = [item[2]["mask"] for item in batch]
    return images, labels, {
        "image_ids": [item[2]["image_id"] for item in batch],
        "boxes": [item[2]["boxes"] for item in batch],
        "masks": None if any(m is None for m in masks) else torch.stack(masks),
        "orig_sizes": [item[2]["orig_size"] for item in batch],
    }
