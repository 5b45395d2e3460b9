"""Tests of the synthetic WSOL dataset and the wsolevaluation-layout loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fcam_plugin.data import (
    MEAN,
    STD,
    VARIANTS,
    MetadataError,
    MultiObjectWSOL,
    SyntheticVariant,
    SyntheticWSOL,
    WSOLDataset,
    read_class_labels,
    read_image_sizes,
    read_localization,
    save_wsol_folder,
    wsol_collate,
)
from fcam_plugin.data.painting import FAMILIES
from fcam_plugin.metrics import LocalizationEvaluator, boxes_from_mask


# ------------------------------------------------------------------------------------------
# synthetic dataset
# ------------------------------------------------------------------------------------------
def test_item_types_shapes_and_normalisation():
    ds = SyntheticWSOL(6, image_size=48, num_classes=3, seed=1)
    image, label, mask = ds[4]
    assert image.dtype == torch.float32 and image.shape == (3, 48, 48)
    assert isinstance(label, int) and label == 4 % 3
    assert mask.dtype == torch.float32 and mask.shape == (48, 48)
    assert set(torch.unique(mask).tolist()) == {0.0, 1.0}
    raw = SyntheticWSOL(6, image_size=48, num_classes=3, seed=1, normalize=False)[4][0]
    assert 0.0 <= float(raw.min()) and float(raw.max()) <= 1.0
    expected = (raw - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(image, expected)


def test_deterministic_per_index_and_split():
    a = SyntheticWSOL(10, image_size=40, seed=3)
    b = SyntheticWSOL(10, image_size=40, seed=3, cache=True)
    # order-independent: image i depends only on (seed, split, i)
    for i in (7, 2, 7):
        torch.testing.assert_close(a[i][0], b[i][0])
    test = SyntheticWSOL(10, image_size=40, seed=3, split="test")
    other = SyntheticWSOL(10, image_size=40, seed=4)
    assert not torch.equal(a[2][0], test[2][0]) and not torch.equal(a[2][0], other[2][0])


def test_objects_cover_10_to_60_percent_and_part_inside_object():
    ds = SyntheticWSOL(40, image_size=64, seed=0)
    for i in range(len(ds)):
        s = ds.render(i)
        assert 0.10 <= s.mask.mean() <= 0.60
        assert s.part.any() and not (s.part & ~s.mask).any()
        assert s.part.sum() < 0.5 * s.mask.sum()  # evidence is a part, not the whole object
    labels = [ds[i][1] for i in range(8)]
    assert sorted(set(labels)) == [0, 1, 2, 3]


def test_objects_are_textured_and_boundaries_visible():
    ds = SyntheticWSOL(10, image_size=64, seed=2, distractors=False)
    for i in range(len(ds)):
        s = ds.render(i)
        body = s.mask & ~s.part
        assert s.image[body].std(axis=0).mean() > 0.02  # textured, not flat
        inner = s.mask & ~np.roll(s.mask, 2, 0) | s.mask & ~np.roll(s.mask, -2, 1)
        # colour step across the boundary is larger than the noise level
        edge = np.abs(s.image - np.roll(s.image, 2, 0)).sum(-1)[inner].mean()
        assert edge > 0.1


def test_boxes_and_dataloader_workers():
    ds = SyntheticWSOL(4, image_size=32, seed=0)
    box = ds.boxes(1)
    assert box.shape == (1, 4)
    np.testing.assert_array_equal(box, boxes_from_mask(ds.render(1).mask, per_component=False))
    batch = next(iter(DataLoader(ds, batch_size=4, num_workers=1)))
    torch.testing.assert_close(batch[0][3], ds[3][0])


def test_generation_speed():
    import time

    ds = SyntheticWSOL(100, image_size=96, seed=0)
    start = time.process_time()
    for i in range(100):
        ds.render(i)
    assert time.process_time() - start < 3.0  # ~5 ms per image on one core


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"num_images": -1}, "`num_images`"),
        ({"num_images": 2, "image_size": 16}, "`image_size`"),
        ({"num_images": 2, "num_classes": 1}, "`num_classes`"),
        ({"num_images": 2, "split": "dev"}, "`split`"),
        ({"num_images": 2, "shape_consistency": 2.0}, "`shape_consistency`"),
    ],
)
def test_invalid_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SyntheticWSOL(**kwargs)
    with pytest.raises(IndexError):
        SyntheticWSOL(2, image_size=32)[5]


# ------------------------------------------------------------------------------------------
# wsolevaluation layout
# ------------------------------------------------------------------------------------------
def test_roundtrip_masks_flavour(tmp_path):
    ds = SyntheticWSOL(5, image_size=40, seed=0, split="test")
    data_root, meta_root = save_wsol_folder(ds, tmp_path, name="SYN", localization="masks")
    assert (meta_root / "test" / "localization.txt").read_text().startswith(
        "test/00000.png,masks/test/00000.png,\n"
    )
    loaded = WSOLDataset(data_root, meta_root, "test", image_size=40)
    assert loaded.localization == "masks" and len(loaded) == 5
    image, label, extra = loaded[2]
    assert label == ds[2][1]
    np.testing.assert_array_equal(extra["mask"].numpy(), ds.render(2).mask.astype(np.uint8))
    torch.testing.assert_close(image, ds[2][0], atol=0.02, rtol=0)  # 8-bit PNG round trip
    images, labels, extras = next(iter(DataLoader(loaded, batch_size=5, collate_fn=wsol_collate)))
    assert images.shape == (5, 3, 40, 40) and labels.tolist() == [0, 1, 2, 3, 0]
    assert extras["masks"].shape == (5, 40, 40) and extras["masks"].dtype == torch.uint8
    ev = LocalizationEvaluator(num_thresholds=20)
    ev.update(extras["masks"].float().clamp(max=1), masks=extras["masks"])
    assert ev.summary()["pxap"] == pytest.approx(1.0)


def test_roundtrip_boxes_flavour_and_resize(tmp_path):
    ds = SyntheticWSOL(3, image_size=40, seed=5, split="val")
    data_root, meta_root = save_wsol_folder(ds, tmp_path, name="CUBLIKE", localization="boxes")
    same = WSOLDataset(data_root, meta_root, "val", image_size=40)
    _, _, extra = same[1]
    assert extra["mask"] is None
    np.testing.assert_array_equal(extra["boxes"].numpy(), ds.boxes(1))
    small = WSOLDataset(data_root, meta_root, "val", image_size=(20, 10), normalize=False)
    image, _, extra = small[1]
    assert image.shape == (3, 20, 10) and 0 <= float(image.min())
    np.testing.assert_array_equal(
        extra["boxes"].numpy(), (ds.boxes(1) * np.array([10 / 40, 20 / 40] * 2)).astype(int)
    )
    _, _, extras = wsol_collate([small[0], small[1]])
    assert extras["masks"] is None and len(extras["boxes"]) == 2


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_hand_written_openimages_style(tmp_path):
    data, meta = tmp_path / "OpenImages", tmp_path / "meta" / "OpenImages"
    (data / "val" / "cls").mkdir(parents=True)
    Image.fromarray(np.full((10, 20, 3), 128, np.uint8)).save(data / "val" / "a.jpg")
    m0 = np.zeros((10, 20), np.uint8)
    m0[:5, :5] = 255
    m1 = np.zeros((10, 20), np.uint8)
    m1[5:, 15:] = 255
    ign = np.zeros((10, 20), np.uint8)
    ign[:, :10] = 255
    for name, arr in (("a_m0.png", m0), ("a_m1.png", m1), ("a_ignore.png", ign)):
        Image.fromarray(arr).save(data / "val" / "cls" / name)
    _write(meta / "val" / "image_ids.txt", "val/a.jpg\n")
    _write(meta / "val" / "class_labels.txt", "val/a.jpg,7\n")
    _write(meta / "val" / "image_sizes.txt", "val/a.jpg,20,10\n")
    _write(
        meta / "val" / "localization.txt",
        "val/a.jpg,val/cls/a_m0.png,val/cls/a_ignore.png\nval/a.jpg,val/cls/a_m1.png,\n",
    )
    ds = WSOLDataset(data, meta, "val", image_size=(10, 20))
    _, label, extra = ds[0]
    expected = np.zeros((10, 20), np.uint8)
    expected[:, :10] = 255
    expected[:5, :5] = 1
    expected[5:, 15:] = 1
    assert label == 7
    np.testing.assert_array_equal(extra["mask"].numpy(), expected)


def test_hand_written_cub_style_multiple_boxes(tmp_path):
    data, meta = tmp_path / "CUB", tmp_path / "meta" / "CUB"
    data.mkdir()
    Image.fromarray(np.zeros((50, 100, 3), np.uint8)).save(data / "b.png")
    _write(meta / "test" / "image_ids.txt", "b.png\n")
    _write(meta / "test" / "class_labels.txt", "b.png,0\n")
    _write(meta / "test" / "localization.txt", "b.png,10,5,60,45\nb.png,0,0,99,49\n")
    ds = WSOLDataset(data, meta, "test", image_size=(25, 50))
    np.testing.assert_array_equal(ds[0][2]["boxes"].numpy(), [[5, 2, 30, 22], [0, 0, 49, 24]])


@pytest.mark.parametrize(
    ("fname", "text", "pattern"),
    [
        ("class_labels.txt", "a.png,0\nb.png\n", r"class_labels.txt:2: expected"),
        ("class_labels.txt", "a.png,x\n", r"class_labels.txt:1: class_id must be an integer"),
        ("image_sizes.txt", "a.png,10\n", r"image_sizes.txt:1:"),
        ("localization.txt", "a.png,1,2,3\n", r"localization.txt:1: expected"),
        ("localization.txt", "a.png,5,2,3,4\n", r"localization.txt:1: box must satisfy"),
        ("localization.txt", "a.png,0,0,3,4\na.png,m.png,\n", r"localization.txt:2: a masks line"),
    ],
)
def test_malformed_metadata_names_file_and_line(tmp_path, fname, text, pattern):
    path = tmp_path / fname
    path.write_text(text)
    reader = {
        "class_labels.txt": read_class_labels,
        "image_sizes.txt": read_image_sizes,
        "localization.txt": read_localization,
    }[fname]
    with pytest.raises(MetadataError, match=pattern):
        reader(path)


def test_missing_label_and_missing_split(tmp_path):
    meta = tmp_path / "meta"
    _write(meta / "train" / "image_ids.txt", "a.png\nb.png\n")
    _write(meta / "train" / "class_labels.txt", "a.png,0\n")
    with pytest.raises(MetadataError, match="no class label.*b.png"):
        WSOLDataset(tmp_path, meta, "train")
    with pytest.raises(FileNotFoundError, match="split 'val'"):
        WSOLDataset(tmp_path, meta, "val")
    with pytest.raises(ValueError, match="`image_size`"):
        _write(meta / "train" / "class_labels.txt", "a.png,0\nb.png,1\n")
        WSOLDataset(tmp_path, meta, "train", image_size=(0, 3))


# ------------------------------------------------------------------------------------------
# variants and the multi-object set
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_variant_renders_objects_in_its_size_range(variant):
    v = VARIANTS[variant]
    ds = SyntheticWSOL(12, image_size=64, num_classes=5, seed=2, variant=variant)
    areas = [ds.render(i).mask.mean() for i in range(len(ds))]
    inside = [v.object_area[0] <= a <= v.object_area[1] for a in areas]
    assert sum(inside) >= 10, areas  # 12 placement tries each; a rare miss keeps the last try
    if v.evidence == "shape":
        assert all(ds.render(i).family == FAMILIES.index(v.families[i % 5]) for i in range(len(ds)))


def test_variants_differ_and_validate():
    a = SyntheticWSOL(3, image_size=48, variant="parts")[1][0]
    b = SyntheticWSOL(3, image_size=48, variant="camouflage")[1][0]
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="`variant`"):
        SyntheticWSOL(2, variant="nope")
    with pytest.raises(ValueError, match="`families`"):
        SyntheticVariant(families=("hexagon",))
    with pytest.raises(ValueError, match="`object_area`"):
        SyntheticVariant(object_area=(0.5, 0.2))


def test_multi_object_masks_are_disjoint_and_match_the_labels():
    ds = MultiObjectWSOL(8, image_size=64, num_classes=4, seed=1)
    for i in range(len(ds)):
        image, labels, masks = ds[i]
        present = {int(c) for c in labels}
        assert 2 <= len(present) == len(labels) <= 3
        assert {c for c in range(4) if masks[c].any()} == present
        assert float(masks.sum(0).max()) == 1.0  # no pixel belongs to two objects
    torch.testing.assert_close(ds[3][0], ds[3][0])
    with pytest.raises(ValueError, match="num_classes"):
        MultiObjectWSOL(2, num_classes=2)
