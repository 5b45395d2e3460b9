"""End to end: a short CPU fit makes F-CAM localize better than the CAM it was trained from."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin.data import SyntheticWSOL
from fcam_plugin.metrics import PxAP

SIZE = 64


def _small_cnn(num_classes: int) -> nn.Sequential:
    def stage(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        )

    return nn.Sequential(
        stage(3, 16), stage(16, 32), stage(32, 64), stage(64, 64), stage(64, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


def _stack(dataset: SyntheticWSOL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels, masks = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels), torch.stack(masks)


def _pxap(maps: torch.Tensor, masks: torch.Tensor) -> float:
    metric = PxAP()
    metric.update(maps, masks)
    return metric.summary()["pxap"]


def test_fcam_beats_the_bilinear_cam_it_learns_from() -> None:
    from pytorch_grad_cam import GradCAMPlusPlus

    torch.manual_seed(0)
    train = SyntheticWSOL(320, image_size=SIZE, num_classes=2, seed=0, split="train", cache=True)
    test = SyntheticWSOL(64, image_size=SIZE, num_classes=2, seed=0, split="test", cache=True)
    model = _small_cnn(2)
    optimizer = torch.optim.Adam(model.parameters(), 3e-3)
    loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(8):
        for images, labels, _ in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
    model.eval()
    x, y, masks = _stack(test)
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.7, f"the classifier did not learn (accuracy {accuracy:.2f}); CAMs would be noise"

    up = FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(decoder_channels=(64, 32, 32, 16, 16)))
    cam_pxap = _pxap(up.cams(x, y), masks)
    up.fit(loader, epochs=3, seed=0, progress=False)
    fcam_pxap = _pxap(up.maps(x), masks)
    print(f"classifier accuracy {accuracy:.3f}; PxAP bilinear GradCAM++ {cam_pxap:.3f} -> F-CAM {fcam_pxap:.3f}")
    assert fcam_pxap > cam_pxap + 0.05
