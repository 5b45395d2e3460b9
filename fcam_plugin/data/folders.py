"""A flat or nested folder of images without labels, streamed for ``fcam explain``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFiles", "list_images"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm")
"""File extensions read as images (case-insensitive)."""


def list_images(root: str | os.PathLike) -> list[Path]:
    """Image files under ``root`` (recursively), sorted, as paths relative to ``root``.

    Args:
        root: a folder, or a single image file (then ``[Path(name)]`` relative to its folder).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: no image file was found.
    """
    root = Path(root)
    if root.is_file():
        return [Path(root.name)]
    if not root.is_dir():
        raise FileNotFoundError(f"`images` folder {str(root)!r} does not exist.")
    files = sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(
            f"`images` folder {str(root)!r} holds no image file (accepted extensions: "
            f"{', '.join(IMAGE_EXTENSIONS)})."
        )
    return files


class ImageFiles(Dataset):
    """Images of a folder, returned as ``(tensor, index)``; ``files[index]`` names the source.

    Args:
        root: folder searched recursively (see :func:`list_images`), or one image file.
        transform: turns a PIL RGB image into a tensor ``(3, H, W)`` (resize, normalise).

    Example:
        >>> from torchvision import transforms as T
        >>> ds = ImageFiles("photos/", T.Compose([T.Resize((224, 224)), T.ToTensor()]))  # doctest: +SKIP
        >>> image, index = ds[0]; ds.files[index]  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        path = Path(root)
        self.root = path.parent if path.is_file() else path
        self.files = list_images(path)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def open(self, index: int) -> Image.Image:
        """The original image ``index`` as PIL RGB."""
        with Image.open(self.root / self.files[index]) as image:
            return image.convert("RGB")

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.open(index)), index
