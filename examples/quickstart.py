"""Quick start: F-CAM maps for a classifier, called exactly like pytorch-grad-cam.

Runs on a CPU in about a minute on synthetic data; with your own model and loader only the
first block changes.
"""

import torch
import torchvision
from pytorch_grad_cam import GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch.utils.data import DataLoader

from fcam_plugin import FCAMUpscaler
from fcam_plugin.data import SyntheticWSOL

torch.manual_seed(0)
train = SyntheticWSOL(64, image_size=64, num_classes=4, split="train")
loader = DataLoader(train, batch_size=16, shuffle=True)  # yields (images, labels, masks)
model = torchvision.models.resnet18(weights=None, num_classes=4)  # your trained classifier here

# 1) fit the decoder on the frozen classifier (seeds from GradCAM++)
up = FCAMUpscaler(model, GradCAMPlusPlus).fit(loader, epochs=1)
print(up)

# 2) call it like GradCAMPlusPlus(model, target_layers)(input_tensor=x, targets=...)
x = torch.stack([train[i][0] for i in range(4)])
maps = up(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in (0, 1, 2, 3)])
print(type(maps).__name__, maps.dtype, maps.shape, f"range [{maps.min():.2f}, {maps.max():.2f}]")
assert maps.shape == (4, 64, 64)

# 3) on-device tensors, and save / load
on_device = up.maps(x)  # torch.Tensor (B, H, W) on the model's device
up.save("fcam-quickstart.pt")
again = FCAMUpscaler.load("fcam-quickstart.pt", model, GradCAMPlusPlus)
assert torch.allclose(again.maps(x), on_device)
print("saved and reloaded: fcam-quickstart.pt")
