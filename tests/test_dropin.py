"""Drop-in conformance: pytorch-grad-cam's and torchcam's own call patterns, with a fitted upscaler in place.

Each test replays, in our own words, a pattern of the two libraries' READMEs, examples or test
suites (grad-cam 1.5.7: README, ``tests/test_run_all_models.py``, ``tests/test_one_channel.py``;
torchcam 0.5.0: README, ``tests/test_methods_core.py``, ``tests/test_methods_gradient.py``,
``torchcam.metrics``) with ``FCAMUpscaler(model, Method, ...)`` where the library object was, after
a one-step fit on a tiny model. Patterns that cannot hold by construction (calling before any fit;
asserting the low resolution of the target layer) are listed in docs/compatibility.md instead.
Only the public API is used, so the file also measures the original code (see issue 17).
"""

from __future__ import annotations

import warnings
from functools import partial
from operator import itemgetter
from typing import Any

import numpy as np
import pytest
import torch
from pytorch_grad_cam.utils.model_targets import (
    ClassifierOutputReST,
    ClassifierOutputSoftmaxTarget,
    ClassifierOutputTarget,
    SemanticSegmentationTarget,
)
from torch import nn

from fcam_plugin import FCAMConfig, FCAMUpscaler

CONFIG = FCAMConfig(decoder_channels=(8, 8, 8, 8, 8))
NUM_CLASSES = 3


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyNet(nn.Module):
    """Five stride-2 stages named like a ResNet (``layer1`` ... ``layer4``), pooling, a linear head."""

    def __init__(self, in_channels: int = 3, num_classes: int = NUM_CLASSES, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = _stage(in_channels, 8)
        self.layer1 = _stage(8, 8)
        self.layer2 = _stage(8, 16)
        self.layer3 = _stage(16, 16)
        self.layer4 = _stage(16, 16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.pool(x).flatten(1))


def tiny(in_channels: int = 3, dtype: torch.dtype = torch.float32) -> TinyNet:
    return TinyNet(in_channels).to(dtype).eval()


def batch(n: int = 2, size: tuple[int, int] = (32, 32), channels: int = 3, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, channels, *size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def fit(up: FCAMUpscaler, channels: int = 3, dtype: torch.dtype = torch.float32, size: tuple[int, int] = (32, 32)) -> FCAMUpscaler:
    loader = [(batch(4, size, channels, dtype, seed=1), torch.tensor([0, 1, 2, 0]))]
    up.fit(loader, epochs=1, max_steps=1, progress=False)
    return up


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def forward_batches(model: nn.Module) -> tuple[list[int], Any]:
    """Batch sizes of the model's forward passes while the returned handle is registered."""
    sizes: list[int] = []
    handle = model.register_forward_pre_hook(lambda m, a: sizes.append(int(a[0].shape[0])))
    return sizes, handle


# =============================================================================== pytorch-grad-cam
def test_gradcam_readme_with_block_and_outputs() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    model = tiny()
    x = batch(2)
    targets = [ClassifierOutputTarget(1), ClassifierOutputTarget(2)]
    with FCAMUpscaler(model, GradCAM, target_layers=[model.layer4], config=CONFIG) as cam:
        fit(cam)
        grayscale_cam = cam(input_tensor=x, targets=targets)
        first = grayscale_cam[0, :]
        model_outputs = cam.outputs
    assert isinstance(grayscale_cam, np.ndarray) and grayscale_cam.dtype == np.float32 and grayscale_cam.shape == (2, 32, 32)
    assert isinstance(model_outputs, torch.Tensor) and model_outputs.shape == (2, NUM_CLASSES)
    rgb = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    assert show_cam_on_image(rgb, first, use_rgb=True).shape == (32, 32, 3)
    assert hook_count(model) == 0


def test_gradcam_positional_constructor() -> None:
    from pytorch_grad_cam import GradCAMPlusPlus

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAMPlusPlus, [model.layer4], None, config=CONFIG))
    assert up.target_layers == [model.layer4] and up.reshape_transform is None
    assert up(input_tensor=batch(1), targets=None).shape == (1, 32, 32)


def test_gradcam_positional_reshape_transform() -> None:
    from pytorch_grad_cam import LayerCAM

    model = tiny()
    calls = []

    def reshape_transform(tensor: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(tensor.shape))
        return tensor

    up = fit(FCAMUpscaler(model, LayerCAM, [model.layer3], reshape_transform, config=CONFIG))
    assert up.reshape_transform is reshape_transform and calls  # used for the seeds
    assert up(batch(2), None).shape == (2, 32, 32)


def test_gradcam_bare_module_as_target_layers() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, target_layers=model.layer4, config=CONFIG))
    assert up.target_layers == [model.layer4]
    assert up(input_tensor=batch(2)).shape == (2, 32, 32)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # grad-cam's __del__ after its own TypeError
def test_gradcam_unknown_constructor_argument_raises_like_the_class() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny()
    with pytest.raises(TypeError):
        GradCAM(model=model, target_layers=[model.layer4], foo=1)
    with pytest.raises(TypeError, match="foo"):
        FCAMUpscaler(model, GradCAM, [model.layer4], foo=1, config=CONFIG)
    # grad-cam's old tests pass `device=None`, which 1.5.7 no longer takes: both refuse it alike
    with pytest.raises(TypeError):
        GradCAM(model=model, target_layers=[model.layer4], device=None)
    with pytest.raises(TypeError, match="device"):
        FCAMUpscaler(model=model, method=GradCAM, target_layers=[model.layer4], device=None, config=CONFIG)
    assert hook_count(model) == 0


_RUN_ALL = ["GradCAM", "ScoreCAM", "GradCAMPlusPlus", "AblationCAM", "XGradCAM", "EigenCAM", "EigenGradCAM", "LayerCAM", "FullGrad"]
_FITTED: dict[str, FCAMUpscaler] = {}


def _run_all_upscaler(name: str) -> FCAMUpscaler:
    """One fitted upscaler per method, as grad-cam's test builds one CAM object per case."""
    import pytorch_grad_cam

    if name not in _FITTED:
        model = tiny()
        cam = FCAMUpscaler(model=model, method=getattr(pytorch_grad_cam, name),
                           target_layers=[model.layer4, model.layer3], config=CONFIG)
        cam.batch_size = 4
        _FITTED[name] = fit(cam)
    return _FITTED[name]


@pytest.mark.parametrize("cam_method", _RUN_ALL)
@pytest.mark.parametrize("eigen_smooth", [True, False])
@pytest.mark.parametrize("target_category", [None, 1])
@pytest.mark.parametrize(("batch_size", "width", "height"), [(2, 32, 32), (1, 32, 40)])
def test_gradcam_run_all_models_pattern(cam_method: str, eigen_smooth: bool, target_category: int | None,
                                        batch_size: int, width: int, height: int) -> None:
    cam = _run_all_upscaler(cam_method)
    input_tensor = batch(1, (height, width)).repeat(batch_size, 1, 1, 1)
    targets = None if target_category is None else [ClassifierOutputTarget(target_category) for _ in range(batch_size)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # eigen_smooth has nothing to act on (warned once)
        grayscale_cam = cam(input_tensor=input_tensor, targets=targets, aug_smooth=False, eigen_smooth=eigen_smooth)
    assert grayscale_cam.shape[0] == input_tensor.shape[0]
    assert grayscale_cam.shape[1:] == input_tensor.shape[2:]


def test_gradcam_eigen_smooth_warns_once() -> None:
    from pytorch_grad_cam import EigenGradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, EigenGradCAM, [model.layer4], config=CONFIG))
    x = batch(2)
    with pytest.warns(UserWarning, match="eigen_smooth"):
        first = up(x, None, False, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        second = up(input_tensor=x, eigen_smooth=True)
    np.testing.assert_array_equal(first, second)


def test_gradcam_aug_smooth_honours_tta_transforms() -> None:
    import ttach as tta
    from pytorch_grad_cam import GradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG))
    x = batch(2)
    sizes, handle = forward_batches(model)
    try:
        default = up(input_tensor=x, aug_smooth=True)
        n_default = len(sizes)
        up.tta_transforms = tta.Compose([tta.HorizontalFlip()])
        custom = up(input_tensor=x, aug_smooth=True)
    finally:
        handle.remove()
    # grad-cam's default has 6 augmentations, the user's 2; each runs the same forwards (decoder, class gate)
    assert n_default > 0 and n_default == 3 * (len(sizes) - n_default)
    assert default.shape == custom.shape == (2, 32, 32)


def test_gradcam_batch_size_is_honoured_by_scorecam_seeds() -> None:
    from pytorch_grad_cam import ScoreCAM

    model = tiny()
    up = FCAMUpscaler(model, ScoreCAM, [model.layer3], config=CONFIG)
    up.batch_size = 4
    sizes, handle = forward_batches(model)
    try:
        up.cams(batch(2), [0, 1])
    finally:
        handle.remove()
    assert max(sizes[1:]) == 4  # the masked inputs go in chunks of the configured batch size


def test_gradcam_one_channel_model() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny(in_channels=1)
    input_tensor = batch(1, channels=1).repeat(4, 1, 1, 1)
    with FCAMUpscaler(model=model, method=GradCAM, target_layers=[model.layer4], config=CONFIG) as cam:
        fit(cam, channels=1)
        grayscale_cam = cam(input_tensor=input_tensor, targets=None)
    assert grayscale_cam.shape == (4, 32, 32)


def test_gradcam_maps_span_zero_to_one_per_image() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG))
    maps = up(input_tensor=batch(3), targets=None).reshape(3, -1)
    np.testing.assert_allclose(maps.min(1), 0, atol=1e-6)
    np.testing.assert_allclose(maps.max(1), 1, atol=1e-4)


def test_gradcam_normalize_probability_option() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG, normalize="probability"))
    x = batch(2)
    np.testing.assert_allclose(up(input_tensor=x), up.maps(x).numpy(), atol=1e-6)


def test_gradcam_class_targets_of_every_kind() -> None:
    from pytorch_grad_cam import GradCAMPlusPlus

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAMPlusPlus, [model.layer4], config=CONFIG))
    x = batch(3)
    targets = [ClassifierOutputTarget(0), ClassifierOutputSoftmaxTarget(1), ClassifierOutputReST(2)]
    assert up(input_tensor=x, targets=targets).shape == (3, 32, 32)


def test_gradcam_targets_that_cannot_apply_are_refused_by_name() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG))
    x = batch(2)
    mask = np.ones((32, 32), dtype=np.float32)
    with pytest.raises(TypeError, match="SemanticSegmentationTarget"):
        up(input_tensor=x, targets=[SemanticSegmentationTarget(1, mask)] * 2)
    with pytest.raises(TypeError, match="lambda"):
        up(input_tensor=x, targets=[lambda output: output.sum()] * 2)
    with pytest.raises(ValueError, match="one target per image"):
        up(input_tensor=x, targets=[ClassifierOutputTarget(1)])
    with pytest.raises(ValueError, match=r"\[7\]"):
        up(input_tensor=x, targets=[ClassifierOutputTarget(7)] * 2)


def test_gradcam_model_eval_side_effect_is_deliberately_not_reproduced() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny().train()
    GradCAM(model=model, target_layers=[model.layer4]).activations_and_grads.release()
    assert not model.training  # grad-cam's constructor switches the model to eval() for good
    model.train()
    up = FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG)
    assert model.training  # ours leaves the mode alone (maps are computed in eval mode anyway)
    fit(up)
    assert model.training and up(input_tensor=batch(1)).shape == (1, 32, 32) and model.training


def test_gradcam_float64_model_and_inputs() -> None:
    from pytorch_grad_cam import GradCAM

    model = tiny(dtype=torch.float64)
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG), dtype=torch.float64)
    maps = up(input_tensor=batch(2, dtype=torch.float64), targets=[ClassifierOutputTarget(0)] * 2)
    assert maps.dtype == np.float32 and maps.shape == (2, 32, 32) and np.isfinite(maps).all()


def test_gradcam_confidence_change_metric() -> None:
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange

    model = tiny()
    up = fit(FCAMUpscaler(model, GradCAM, [model.layer4], config=CONFIG))
    x = batch(2)
    targets = [ClassifierOutputTarget(1)] * 2
    grayscale_cams = up(input_tensor=x, targets=targets)
    scores = CamMultImageConfidenceChange()(x, grayscale_cams, targets, model)
    assert scores.shape == (2,)


@pytest.mark.parametrize("name", ["RefineCAM", "FinerCAM", "SESS"])
def test_gradcam_wrapper_methods_with_eigen_smooth(name: str) -> None:
    import pytorch_grad_cam

    model = tiny()
    layers = [model.layer3, model.layer4] if name == "RefineCAM" else [model.layer4]
    kwargs = {"num_scales": 2} if name == "SESS" else {}
    up = fit(FCAMUpscaler(model, getattr(pytorch_grad_cam, name), layers, config=CONFIG, **kwargs))
    x = batch(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        maps = up(x, targets=None, eigen_smooth=True)
    assert maps.shape == (2, 32, 32)
    if name == "FinerCAM":
        assert up(x, target_idx=1).shape == (2, 32, 32)
    up.close()
    assert hook_count(model) == 0


# ======================================================================================= torchcam
def test_torchcam_readme_with_block_and_overlay() -> None:
    from torchcam.methods import LayerCAM
    from torchcam.utils import overlay_mask
    from torchvision.transforms.functional import to_pil_image

    model = tiny()
    x = batch(1, (64, 64))
    with FCAMUpscaler(model, LayerCAM, "layer4", config=CONFIG) as cam_extractor:
        fit(cam_extractor)
        out = model(x)
        activation_map = cam_extractor(out.squeeze(0).argmax().item(), out)
    assert len(activation_map) == 1 and activation_map[0].shape == (1, 64, 64)
    image = to_pil_image(x[0].clamp(0, 1))
    result = overlay_mask(image, to_pil_image(activation_map[0].squeeze(0), mode="F"), alpha=0.5)
    assert result.size == image.size
    assert hook_count(model) == 0


@pytest.mark.parametrize("spelling", ["name", "module", "names", "modules"])
def test_torchcam_target_layer_spellings(spelling: str) -> None:
    from torchcam.methods import GradCAM

    model = tiny()
    target_layer = {
        "name": "layer4", "module": model.layer4, "names": ["layer3", "layer4"], "modules": [model.layer3, model.layer4],
    }[spelling]
    with FCAMUpscaler(model, GradCAM, target_layer=target_layer, config=CONFIG) as up:
        fit(up)
        assert up.target_names == (["layer3", "layer4"] if spelling.endswith("s") else ["layer4"])
        scores = model(batch(2))
        assert up([0, 1], scores)[0].shape == (2, 32, 32)
    assert hook_count(model) == 0


def test_torchcam_readme_without_with_block() -> None:
    from torchcam.methods import LayerCAM

    model = tiny()
    cam_extractor = fit(FCAMUpscaler(model, LayerCAM, "layer4", config=CONFIG))
    out = model(batch(2))
    cams = cam_extractor(out.argmax(1).tolist(), out)
    assert cams[0].shape == (2, 32, 32)
    cam_extractor.remove_hooks()
    assert hook_count(model) == 0


def test_torchcam_hook_handles_remove_and_reset() -> None:
    from torchcam.methods import GradCAM

    model = tiny()
    extractor = fit(FCAMUpscaler(model, GradCAM, "layer3", config=CONFIG))
    assert len(extractor.hook_handles) == 1
    with torch.no_grad():
        model(batch(1))
    extractor.remove_hooks()
    assert len(extractor.hook_handles) == 0 and hook_count(model) == 0
    extractor.reset_hooks()
    scores = model(batch(1))
    with pytest.raises(AssertionError):  # torchcam: "Inputs need to be forwarded in the model ..."
        extractor(0, scores)


def test_torchcam_precheck_pattern() -> None:
    from torchcam.methods import GradCAMpp

    model = tiny()
    with FCAMUpscaler(model, GradCAMpp, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        with torch.no_grad():
            with pytest.raises(AssertionError):
                extractor(0)  # no forward yet
            model(batch(1))
            with pytest.raises(ValueError):
                extractor(-1)
            with pytest.raises(ValueError):
                extractor([-1])
            with pytest.raises(ValueError):
                extractor(0)  # a gradient method needs the scores


def test_torchcam_fuse_cams_on_the_class() -> None:
    with pytest.raises(TypeError):
        FCAMUpscaler.fuse_cams(torch.zeros((3, 32, 32)))
    with pytest.raises(ValueError):
        FCAMUpscaler.fuse_cams([])
    cams = [torch.rand((1, 32, 32)), torch.rand((1, 16, 16))]
    assert torch.equal(cams[0], FCAMUpscaler.fuse_cams(cams[:1]))
    assert FCAMUpscaler.fuse_cams(cams).shape == (1, 32, 32)
    assert FCAMUpscaler.fuse_cams(cams, (16, 16)).shape == (1, 16, 16)


def test_torchcam_multi_layer_maps_and_fuse_cams() -> None:
    from torchcam.methods import LayerCAM

    model = tiny()
    with FCAMUpscaler(model, LayerCAM, ["layer3", "layer4"], config=CONFIG) as extractor:
        fit(extractor)
        scores = model(batch(2))
        cams = extractor([0, 1], scores)
        fused = extractor.fuse_cams(cams)
    assert isinstance(fused, torch.Tensor) and fused.shape == (2, 32, 32)


def test_torchcam_classification_metric() -> None:
    from torchcam.methods import LayerCAM
    from torchcam.metrics import ClassificationMetric

    model = tiny()
    with FCAMUpscaler(model, LayerCAM, ["layer3", "layer4"], config=CONFIG) as extractor:
        fit(extractor)
        metric = ClassificationMetric(extractor, partial(torch.softmax, dim=-1))
        metric.update(batch(2))
        summary = metric.summary()
    assert set(summary) == {"avg_drop", "conf_increase"}
    assert hook_count(model) == 0


def test_torchcam_deletion_insertion_metric() -> None:
    from torchcam.methods import GradCAM
    from torchcam.metrics import DeletionInsertionMetric

    model = tiny()
    with FCAMUpscaler(model, GradCAM, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        metric = DeletionInsertionMetric(extractor, partial(torch.softmax, dim=-1), steps=4)
        metric.update(batch(2))
        assert set(metric.summary()) == {"deletion_auc", "insertion_auc"}


def test_torchcam_disable_and_enable_hooks() -> None:
    from torchcam.methods import CAM

    model = tiny()
    with FCAMUpscaler(model, CAM, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        x_a, x_b = batch(2, seed=3), batch(2, seed=4)
        with torch.no_grad():
            model(x_a)
            reference = extractor(0)[0]
            extractor.disable_hooks()
            model(x_b)  # not recorded
            assert torch.equal(extractor(0)[0], reference)
            extractor.enable_hooks()
            model(x_b)
            assert not torch.equal(extractor(0)[0], reference)


def test_torchcam_output_targets() -> None:
    from torchcam.methods import GradCAM, SmoothGradCAMpp

    model = tiny()
    x = batch(2)
    with FCAMUpscaler(model, GradCAM, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        output = model(x)
        cams = extractor(scores=output, targets=[itemgetter(0), itemgetter(2)])
        assert cams[0].shape == (2, 32, 32)
    with FCAMUpscaler(model, SmoothGradCAMpp, "layer4", config=CONFIG, num_samples=2) as extractor:
        fit(extractor)
        model(x)
        assert extractor(targets=itemgetter(1))[0].shape == (2, 32, 32)


def test_torchcam_float64_model_and_inputs() -> None:
    from torchcam.methods import LayerCAM

    model = tiny(dtype=torch.float64)
    with FCAMUpscaler(model, LayerCAM, "layer4", config=CONFIG) as extractor:
        fit(extractor, dtype=torch.float64)
        scores = model(batch(2, dtype=torch.float64))
        cam = extractor(scores.argmax(1).tolist(), scores)[0]
    assert cam.shape == (2, 32, 32) and torch.isfinite(cam).all()


def test_torchcam_constructor_keywords() -> None:
    from torchcam.methods import LayerCAM

    model = tiny()
    up = FCAMUpscaler(model, LayerCAM, "layer4", input_shape=(3, 32, 32), enable_hooks=False, config=CONFIG)
    fit(up)
    scores = model(batch(2))
    with pytest.raises(AssertionError):
        up(0, scores)  # hooks were disabled at construction: nothing recorded
    up.enable_hooks()
    scores = model(batch(2))
    assert up(0, scores)[0].shape == (2, 32, 32)
    up.remove_hooks()
    with pytest.raises(TypeError, match="foo"):
        FCAMUpscaler(model, LayerCAM, "layer4", foo=1, config=CONFIG)
    assert hook_count(model) == 0


def test_torchcam_refinecam_and_finercam_calls() -> None:
    from torchcam.methods import FinerCAM, RefineCAM

    model = tiny()
    x = batch(2)
    with FCAMUpscaler(model, RefineCAM, ["layer3", "layer4"], config=CONFIG) as extractor:
        fit(extractor)
        scores = model(x)
        assert extractor([0, 1], scores)[0].shape == (2, 32, 32)
        assert extractor([0, 1], scores, target_shape=(8, 8))[0].shape == (2, 8, 8)
    with FCAMUpscaler(model, FinerCAM, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        scores = model(x)
        assert extractor(0, scores, [1, 2], False)[0].shape == (2, 32, 32)


def test_torchcam_normalized_flag() -> None:
    from torchcam.methods import GradCAM

    model = tiny()
    x = batch(2)
    with FCAMUpscaler(model, GradCAM, "layer4", config=CONFIG) as extractor:
        fit(extractor)
        scores = model(x)
        normalized = extractor([0, 1], scores)[0]
        raw = extractor([0, 1], scores, normalized=False)[0]
    flat = normalized.flatten(1)
    assert torch.allclose(flat.amin(1), torch.zeros(2)) and (flat.amax(1) > 0.99).all()
    assert torch.allclose(raw, extractor.maps(x))


# ============================================================== other extractors on the same model
def test_regression_coexisting_extractor_is_not_broken() -> None:
    """Issue 17: the upscaler's own forward used to overwrite the other extractor's stored outputs."""
    from torchcam.methods import LayerCAM

    model = tiny()
    x = batch(2)
    with LayerCAM(model, "layer4") as alone:
        reference = alone([0, 1], model(x.clone().requires_grad_()))[0]
    ext = LayerCAM(model, "layer4")
    up = fit(FCAMUpscaler(model, LayerCAM, [model.layer4], config=CONFIG))
    with ext, up:
        s = model(x.clone().requires_grad_())
        ours = up([0, 1], s)
        theirs = ext([0, 1], s)
    assert ours[0].shape == (2, 32, 32)
    assert torch.allclose(theirs[0], reference, atol=1e-6)
    assert hook_count(model) == 0


def test_ready_torchcam_instance_keeps_working() -> None:
    from torchcam.methods import GradCAM

    model = tiny()
    x = batch(2)
    with GradCAM(model, "layer4") as alone:
        reference = alone([0, 1], model(x))[0]
    ext = GradCAM(model, "layer4")
    with ext:
        up = FCAMUpscaler(model, ext, config=CONFIG)
        fit(up)
        s = model(x)
        up([0, 1], s)
        assert torch.allclose(ext([0, 1], s)[0], reference, atol=1e-6)
        up.remove_hooks()
    assert hook_count(model) == 0


def test_scores_are_traced_back_to_their_own_input() -> None:
    """Issue 17: a ScoreCAM run between model(x) and up(idx, scores) made the upscaler explain its masked batch."""
    from torchcam.methods import LayerCAM, ScoreCAM

    model = tiny()
    x = batch(2, seed=5)
    with FCAMUpscaler(model, LayerCAM, "layer4", config=CONFIG) as up:
        fit(up)
        s = model(x)
        expected = up.maps(x)
        with ScoreCAM(model, "layer3", batch_size=8) as score_cam, torch.no_grad():
            model(batch(2, seed=6))
            score_cam(0)  # more forwards of the same batch size, on other inputs
        assert torch.allclose(up([0, 1], s, normalized=False)[0], expected)
        assert torch.allclose(up([0, 1], s.softmax(-1), normalized=False)[0], expected)  # derived scores too
        other = model(batch(3, seed=7))
        assert torch.allclose(up([0, 1], s, normalized=False)[0], expected)  # another batch size in between
        assert up([0, 1, 2], other)[0].shape == (3, 32, 32)


def test_scores_of_no_recorded_forward_are_refused() -> None:
    from torchcam.methods import GradCAM

    model = tiny()
    with FCAMUpscaler(model, GradCAM, "layer4", config=CONFIG) as up:
        fit(up)
        model(batch(2))
        with pytest.raises(ValueError, match="scores"):
            up(0, torch.zeros(3, NUM_CLASSES))
