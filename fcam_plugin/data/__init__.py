"""Datasets for weakly-supervised localisation: a synthetic set and wsolevaluation loaders."""

from __future__ import annotations

from .export import save_wsol_folder
from .multi import MultiObjectSample, MultiObjectWSOL
from .synthetic import MEAN, STD, VARIANTS, SyntheticSample, SyntheticVariant, SyntheticWSOL
from .wsol import (
    MetadataError,
    WSOLDataset,
    read_class_labels,
    read_image_ids,
    read_image_sizes,
    read_localization,
    wsol_collate,
)

__all__ = [
    "MEAN",
    "STD",
    "VARIANTS",
    "MetadataError",
    "MultiObjectSample",
    "MultiObjectWSOL",
    "SyntheticSample",
    "SyntheticVariant",
    "SyntheticWSOL",
    "WSOLDataset",
    "read_class_labels",
    "read_image_ids",
    "read_image_sizes",
    "read_localization",
    "save_wsol_folder",
    "wsol_collate",
]
