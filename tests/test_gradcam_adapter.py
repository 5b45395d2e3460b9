"""The pytorch-grad-cam seed source agrees with the library's own maps."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_grad_cam
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from fcam_plugin.adapters import normalize_per_image, upsample_cams
from fcam_plugin.adapters.gradcam import GradCAMSource

NATIVE = [
    "GradCAM", "GradCAMPlusPlus", "XGradCAM", "LayerCAM", "EigenCAM",
    "HiResCAM", "GradCAMElementWise", "EigenGradCAM",
]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    # Random BatchNorm statistics give activations with structure (not all-positive noise).
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return net


def _library_maps(model, name, layers, x, labels) -> np.ndarray:
    cls = getattr(pytorch_grad_cam, name)
    with cls(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in labels])


@pytest.mark.parametrize("name", NATIVE)
@pytest.mark.parametrize("multi_layer", [False, True], ids=["one-layer", "two-layers"])
def test_native_cams_match_library(model, name: str, multi_layer: bool) -> None:
    layers = [model.layer3, model.layer4] if multi_layer else [model.layer4]
    x = torch.randn(3, 3, 96, 96)
    labels = torch.tensor([0, 3, 4])
    source = GradCAMSource(model, getattr(pytorch_grad_cam, name), layers)
    assert source.native
    low = source.cams(x, labels)
    assert low.device == x.device and low.dtype == torch.float32
    ours = normalize_per_image(upsample_cams(low, x.shape[-2:]))[:, 0].numpy()
    theirs = _library_maps(model, name, layers, x, labels)
    assert ours.shape == theirs.shape
    if name in ("EigenCAM", "EigenGradCAM"):
        # The first principal direction has an arbitrary sign (LAPACK builds differ), so the maps
        # are compared after the projection itself is checked up to sign.
        pytest.skip("compared by test_projection_matches_library_up_to_sign")
    np.testing.assert_allclose(ours, theirs, atol=2e-3)


def test_projection_matches_library_up_to_sign() -> None:
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    from fcam_plugin.adapters.gradcam import _projection

    x = torch.randn(4, 16, 5, 7)
    ours = _projection(x).numpy()
    theirs = get_2d_projection(x.numpy())
    for a, b in zip(ours, theirs):
        sign = np.sign((a * b).sum())
        np.testing.assert_allclose(a * sign, b, atol=1e-4)


def test_eigencam_single_layer_matches_library_up_to_sign(model) -> None:
    x = torch.randn(2, 3, 96, 96)
    labels = torch.tensor([0, 1])
    source = GradCAMSource(model, pytorch_grad_cam.EigenCAM, [model.layer4])
    ours = normalize_per_image(upsample_cams(source.cams(x, labels), x.shape[-2:]))[:, 0].numpy()
    theirs = _library_maps(model, "EigenCAM", [model.layer4], x, labels)
    flipped_source = _projection_flipped_maps(model, x)
    for i in range(len(x)):
        same = np.abs(ours[i] - theirs[i]).max() < 2e-3
        flipped = np.abs(flipped_source[i] - theirs[i]).max() < 2e-3
        assert same or flipped


def _projection_flipped_maps(model, x) -> np.ndarray:
    from fcam_plugin.adapters.gradcam import _projection

    acts = {}
    handle = model.layer4.register_forward_hook(lambda m, a, o: acts.setdefault("a", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    cam = normalize_per_image((-_projection(acts["a"])).clamp_min(0)).unsqueeze(1)
    return normalize_per_image(upsample_cams(cam, x.shape[-2:]))[:, 0].numpy()


def test_native_cams_are_normalised_per_image(model) -> None:
    source = GradCAMSource(model, pytorch_grad_cam.GradCAMPlusPlus, [model.layer4])
    low = source.cams(torch.randn(2, 3, 64, 64), torch.tensor([1, 2]))
    assert low.shape == (2, 1, 2, 2)
    flat = low.flatten(1)
    assert torch.all(flat.min(1).values == 0)
    assert torch.all((flat.max(1).values - 1).abs() < 1e-5)


def test_native_cams_work_under_no_grad_and_leave_no_hooks(model) -> None:
    source = GradCAMSource(model, pytorch_grad_cam.GradCAM, [model.layer4])
    with torch.no_grad():
        low = source.cams(torch.randn(1, 3, 64, 64), torch.tensor([0]))
    assert torch.isfinite(low).all()
    assert all(not m._forward_hooks for m in model.modules())


@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM", "FullGrad", "KPCA_CAM", "FEM", "ShapleyCAM", "RandomCAM"])
def test_library_path_for_other_methods(model, name: str) -> None:
    source = GradCAMSource(model, getattr(pytorch_grad_cam, name), [model.layer4])
    assert not source.native
    x = torch.randn(2, 3, 64, 64)
    model.train()
    try:
        cams = source.cams(x, torch.tensor([1, 4]))
        assert model.training, "grad-cam's constructor calls model.eval(); the adapter must restore it"
    finally:
        source.close()
        model.eval()
    assert cams.shape == (2, 1, 64, 64)
    assert float(cams.min()) >= 0 and float(cams.max()) <= 1 + 1e-6
    assert all(not m._forward_hooks for m in model.modules())


def test_ready_instance_on_another_model_is_rejected(model) -> None:
    other = torchvision.models.resnet18(weights=None)
    cam = pytorch_grad_cam.GradCAM(model=other, target_layers=[other.layer4])
    try:
        with pytest.raises(ValueError, match="different model"):
            GradCAMSource(model, cam, [model.layer4])
    finally:
        cam.activations_and_grads.release()


def test_ready_instance_uses_its_layers(model) -> None:
    cam = pytorch_grad_cam.LayerCAM(model=model, target_layers=[model.layer3])
    try:
        source = GradCAMSource(model, cam)
        assert source.target_layers == [model.layer3] and source.target_names == ["layer3"]
        assert source.cams(torch.randn(1, 3, 64, 64), torch.tensor([2])).shape == (1, 1, 4, 4)
        assert GradCAMSource(model, cam, "layer3").target_layers == [model.layer3]  # the same layers: fine
        with pytest.raises(ValueError, match="cannot apply to a ready LayerCAM instance"):
            GradCAMSource(model, cam, [model.layer4])
    finally:
        cam.activations_and_grads.release()


@pytest.mark.parametrize("name", ["GradCAM", "LayerCAM", "GradCAMPlusPlus"])
def test_layer_cams_match_the_library_per_layer(model, name: str) -> None:
    """layer_cams: the method at each layer separately (one forward/backward), like one-layer library CAMs."""
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([1, 4])
    source = GradCAMSource(model, getattr(pytorch_grad_cam, name), [model.layer4])
    first_inputs = []
    handle = model.register_forward_pre_hook(lambda m, a: first_inputs.append(a[0]))
    try:
        maps = source.layer_cams(x, labels, [model.layer2, model.layer3, model.layer4])
    finally:
        handle.remove()
    assert len(first_inputs) == 1 and torch.equal(first_inputs[0], x)  # one forward, on the images
    assert [m.shape for m in maps] == [(2, 1, 8, 8), (2, 1, 4, 4), (2, 1, 2, 2)]
    for layer, low in zip([model.layer2, model.layer3, model.layer4], maps):
        flat = low.flatten(1)
        assert torch.all(flat.min(1).values == 0) and torch.all(flat.max(1).values <= 1)
        ours = normalize_per_image(upsample_cams(low, x.shape[-2:]))[:, 0].numpy()
        np.testing.assert_allclose(ours, _library_maps(model, name, [layer], x, labels), atol=2e-3)


def test_layer_cams_of_a_library_method_build_one_instance_per_layer(model) -> None:
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([0, 2])
    source = GradCAMSource(model, pytorch_grad_cam.FEM, [model.layer4])
    assert not source.native
    maps = source.layer_cams(x, labels, [model.layer3, model.layer4])
    assert [m.shape for m in maps] == [(2, 1, 64, 64)] * 2
    assert len(source._per_layer) == 2  # built lazily, one per layer, kept for the next step
    for layer, ours in zip([model.layer3, model.layer4], maps):
        theirs = _library_maps(model, "FEM", [layer], x, labels)
        np.testing.assert_allclose(normalize_per_image(ours)[:, 0].numpy(), theirs, atol=2e-3)
    source.after_fit()
    assert not source._per_layer and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match="not a submodule of `model`"):
        source.layer_cams(x, labels, [torch.nn.Conv2d(3, 3, 1)])


def test_label_out_of_range(model) -> None:
    source = GradCAMSource(model, pytorch_grad_cam.GradCAM, [model.layer4])
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 5\)"):
        source.cams(torch.randn(1, 3, 64, 64), torch.tensor([7]))


@pytest.mark.parametrize("name", ["FullGrad", "ShapleyCAM"])
def test_methods_that_cannot_explain_transformers_refuse_a_reshape_transform(model, name: str) -> None:
    # The library's own call fails on token layouts for both (ShapleyCAM: shapes that do not broadcast).
    with pytest.raises(ValueError, match=f"{name} cannot explain a transformer.*reshape_transform"):
        GradCAMSource(model, getattr(pytorch_grad_cam, name), [model.layer4], reshape_transform=lambda t: t)
    assert all(not m._forward_hooks for m in model.modules())
