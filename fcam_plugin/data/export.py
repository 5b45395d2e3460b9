"""Write a dataset to disk in the wsolevaluation layout (images, masks or boxes, metadata files)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .._checks import check_choice, describe
from ..metrics import boxes_from_mask
from .synthetic import SyntheticWSOL

__all__ = ["save_wsol_folder"]


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
