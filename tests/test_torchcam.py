"""torchcam flavour of the upscaler, and grad-cam's wrapper methods (RefineCAM, FinerCAM, SESS)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fcam_plugin import FCAMUpscaler, NoCapturedInputError
from fcam_plugin.adapters.torchcam import TorchCAMSource
from fcam_plugin.config import FCAMConfig

CONFIG = FCAMConfig(decoder_channels=(16, 16, 8, 8, 8))


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4),
    ).train()


def hook_count(model: nn.Module) -> int:
    """Hooks on the model (``_forward_hooks_with_kwargs`` only flags some of ``_forward_hooks``)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def snapshot(model: nn.Module) -> tuple:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.grad is None for p in model.parameters()],
        [t.clone() for t in model.state_dict().values()],
        hook_count(model),
    )


def assert_same(a: tuple, b: tuple) -> None:
    assert a[0] == b[0] and a[1] == b[1] and a[2] == b[2] and a[4] == b[4]
    assert all(torch.equal(x, y) for x, y in zip(a[3], b[3]))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 32, 40, generator=g)
    y = torch.tensor([0, 1, 2, 3])
    return x, y, DataLoader(TensorDataset(x, y), batch_size=4)


def test_context_manager_contract(data) -> None:
    from torchcam.methods import LayerCAM

    x, y, loader = data
    model = tiny_cnn().eval()  # the test's own forwards must not move BatchNorm statistics
    model[0].train()  # a mixed-mode model: modes must come back per module
    model[1].requires_grad_(False)
    before = snapshot(model)
    with FCAMUpscaler(model, LayerCAM, [model[5]], config=CONFIG) as up:
        assert hook_count(model) == 1 and len(up.hook_handles) == 1  # the input hook only
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        assert hook_count(model) == 1
        scores = model(x)
        maps = up(y.tolist(), scores)
        assert isinstance(maps, list) and len(maps) == 1
        cam = maps[0]
        assert cam.shape == (4, 32, 40) and cam.dtype == torch.float32 and cam.device == scores.device
        flat = cam.flatten(1)
        assert torch.allclose(flat.amin(1), torch.zeros(4)) and (flat.amax(1) > 0.99).all()
        raw = up(y.tolist(), scores, normalized=False)[0]
        assert torch.allclose(raw, up.maps(x, y)) and raw.min() >= 0 and raw.max() <= 1
        # an int class_idx is the class of every image (the class gate follows it)
        assert torch.allclose(up(class_idx=1, scores=scores, normalized=False)[0], up.maps(x, [1] * len(x)))
        assert not model[1].training
    assert hook_count(model) == 0
    assert_same(before, snapshot(model))


def test_call_before_forward_is_a_clear_error(data) -> None:
    from torchcam.methods import GradCAM

    x, y, loader = data
    model = tiny_cnn()
    up = FCAMUpscaler(model, GradCAM, [model[5]], config=CONFIG).fit(loader, epochs=1, max_steps=1, progress=False)
    with up, pytest.raises(NoCapturedInputError, match=r"run `scores = model\(x\)` first"):
        up(0, torch.zeros(1, 4))
    # Without the context manager nothing is captured either: the same clear error.
    model(x)
    with pytest.raises(NoCapturedInputError):
        up(0, model(x))
    assert hook_count(model) == 0


def test_overlay_mask_works_like_on_a_torchcam_map(data) -> None:
    from torchcam.methods import LayerCAM
    from torchcam.utils import overlay_mask
    from torchvision.transforms.functional import to_pil_image

    x, y, loader = data
    model = tiny_cnn().eval()
    with LayerCAM(model, model[5]) as extractor:
        reference = extractor(0, model(x[:1]))[0]
    with FCAMUpscaler(model, LayerCAM, [model[5]], config=CONFIG) as up:
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        scores = model(x[:1])
        cam = up(0, scores)[0]
    image = to_pil_image(x[0].clamp(0, 1))
    for m in (reference, cam):
        result = overlay_mask(image, to_pil_image(m.squeeze(0), mode="F"), alpha=0.5)
        assert result.size == image.size and result.mode == "RGB"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda up, s: up(None, s), ValueError, "exactly one of `class_idx` or `targets`"),
        (lambda up, s: up(0, s, targets=[lambda o: o[0]] * 2), ValueError, "exactly one of"),
        (lambda up, s: up([0, 1, 2], s), ValueError, r"one index per image .* \(2\)"),
        (lambda up, s: up(-1, s), ValueError, "non-negative int"),
        (lambda up, s: up(0, None), ValueError, "needs the model output"),
        (lambda up, s: up(0, s[:1]), ValueError, r"shape \(2, num_classes\)"),
        (lambda up, s: up(9, s), ValueError, "must be < 4"),
        (lambda up, s: up(0, s, normalized="yes"), TypeError, "`normalized` must be a bool"),
        (lambda up, s: up(0, s, foo=1), TypeError, r"unexpected keyword arguments \['foo'\]"),
        (lambda up, s: up(0, s, 1, 2, 3), TypeError, "too many positional arguments"),
    ],
)
def test_call_errors_name_the_argument(data, call, error, match) -> None:
    from torchcam.methods import GradCAMpp

    x, y, loader = data
    model = tiny_cnn()
    with FCAMUpscaler(model, GradCAMpp, [model[5]], config=CONFIG) as up:
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        scores = model(x[:2])
        with pytest.raises(error, match=match):
            call(up, scores)
    assert hook_count(model) == 0


def test_targets_follow_the_method(data) -> None:
    from torchcam.methods import CAM, XGradCAM

    x, y, loader = data
    model = tiny_cnn()
    with FCAMUpscaler(model, XGradCAM, [model[5]], config=CONFIG) as up:
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        scores = model(x)
        assert up(targets=lambda out: out[0], scores=scores)[0].shape == (4, 32, 40)
    with FCAMUpscaler(model, CAM, [model[5]], config=CONFIG) as up:
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        model(x)
        with pytest.raises(ValueError, match="CAM does not support arbitrary output `targets`"):
            up(targets=lambda out: out[0])
        assert up(2)[0].shape == (4, 32, 40)  # CAM needs no scores, like torchcam's
    assert hook_count(model) == 0


def test_multi_layer_seeds_use_fuse_cams(data) -> None:
    from torchcam.methods import LayerCAM

    x, y, _ = data
    model = tiny_cnn().eval()
    layers = [model[3], model[5]]
    up = FCAMUpscaler(model, LayerCAM, layers, config=CONFIG)
    seeds = up.source.cams(x, y)
    assert seeds.shape == (4, 1, 8, 10) and seeds.min() >= 0 and seeds.max() <= 1
    with LayerCAM(model, layers) as extractor:
        x_grad = x.clone().requires_grad_(True)
        cams = extractor(y.tolist(), model(x_grad))
        fused = LayerCAM.fuse_cams(cams)
    flat = fused.flatten(1)
    expected = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True) + 1e-7)
    assert torch.allclose(seeds.flatten(1), expected, atol=1e-4)
    up.close()  # the extractor built for seeds lives until fit ends or the upscaler closes
    assert hook_count(model) == 0


@pytest.mark.parametrize("name", ["LayerCAM", "GradCAM"])
def test_layer_cams_match_torchcam_per_layer(data, name: str) -> None:
    """layer_cams: one extractor over all the layers, one map per layer, each like torchcam's on that layer."""
    import torchcam.methods

    x, y, _ = data
    model = tiny_cnn().eval()
    layers = [model[3], model[5]]
    up = FCAMUpscaler(model, getattr(torchcam.methods, name), [model[5]], config=CONFIG)
    first_inputs = []
    handle = model.register_forward_pre_hook(lambda m, a: first_inputs.append(a[0]))
    try:
        maps = up.source.layer_cams(x, y, layers)
    finally:
        handle.remove()
    assert len(first_inputs) == 1 and torch.equal(first_inputs[0], x)
    assert [m.shape for m in maps] == [(4, 1, 8, 10), (4, 1, 4, 5)]
    assert len(up.source._per_layer) == 1  # one extractor for all the layers
    for layer, ours in zip(layers, maps):
        with getattr(torchcam.methods, name)(model, layer) as extractor:
            theirs = extractor(y.tolist(), model(x.clone().requires_grad_(True)))[0]
        flat = theirs.flatten(1)
        theirs = (flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True) + 1e-7)
        assert torch.allclose(ours.flatten(1), theirs, atol=1e-4)
    up.source.after_fit()
    assert not up.source._per_layer
    up.remove_hooks()
    assert hook_count(model) == 0


def test_layer_cams_of_refinecam_use_its_base_method(data) -> None:
    from torchcam.methods import LayerCAM, RefineCAM

    x, y, _ = data
    model = tiny_cnn().eval()
    with FCAMUpscaler(model, RefineCAM, [model[3], model[5]], config=CONFIG, base_method=LayerCAM) as up:
        maps = up.source.layer_cams(x, y, [model[3], model[5]])
        assert [m.shape for m in maps] == [(4, 1, 8, 10), (4, 1, 4, 5)]
        assert type(next(iter(up.source._per_layer.values()))).__name__ == "LayerCAM"
    assert hook_count(model) == 0


def test_ready_instance_is_left_to_its_owner(data) -> None:
    from torchcam.methods import GradCAM

    x, y, loader = data
    model = tiny_cnn()
    extractor = GradCAM(model, model[5])
    n_hooks = hook_count(model)
    with FCAMUpscaler(model, extractor, config=CONFIG) as up:
        assert up.source.method_name == "GradCAM" and up.source.target_layers == [model[5]]
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        model(x)
        assert up(0, model(x))[0].shape == (4, 32, 40)
    assert hook_count(model) == n_hooks and extractor._hooks_enabled  # untouched
    extractor.remove_hooks()
    other = tiny_cnn()
    with pytest.raises(ValueError, match="built on a different model"):
        FCAMUpscaler(other, GradCAM(model, model[5]), config=CONFIG)


def test_state_restored_after_an_exception_in_the_block(data) -> None:
    from torchcam.methods import SmoothGradCAMpp

    x, y, loader = data
    model = tiny_cnn()
    before = snapshot(model)
    with pytest.raises(ZeroDivisionError):
        with FCAMUpscaler(model, SmoothGradCAMpp, [model[5]], config=CONFIG, num_samples=2) as up:
            up.fit(loader, epochs=1, max_steps=1, progress=False)
            1 / 0  # noqa: B018 (an error raised inside the block)
    assert_same(before, snapshot(model))
    # an error raised inside fit (bad labels) also leaves the model as it was
    bad = DataLoader(TensorDataset(x, torch.tensor([0, 1, 2, 9])), batch_size=4)
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\)"):
        with FCAMUpscaler(model, SmoothGradCAMpp, [model[5]], config=CONFIG, num_samples=2) as up:
            up.fit(bad, epochs=1, max_steps=1, progress=False)
    assert_same(before, snapshot(model))


def test_constructor_errors() -> None:
    from torchcam.methods import CAM, LayerCAM, LeGrad, RefineCAM

    model = tiny_cnn()
    with pytest.raises(ValueError, match="RefineCAM .* at least two layers, got 1"):
        FCAMUpscaler(model, RefineCAM, [model[5]], config=CONFIG)
    with pytest.raises(ValueError, match="LeGrad explains vision-transformer blocks"):
        FCAMUpscaler(model, LeGrad, [model[5]], config=CONFIG)
    with pytest.raises(ValueError, match="CAM .* one layer, got 2"):
        FCAMUpscaler(model, CAM, [model[3], model[5]], config=CONFIG)
    with pytest.raises(TypeError, match="give the target layers once"):
        FCAMUpscaler(model, LayerCAM, [model[5]], config=CONFIG, target_layer="5")
    with pytest.raises(ValueError, match=r"names 'layer9', which is not a submodule"):
        FCAMUpscaler(model, LayerCAM, target_layer="layer9", config=CONFIG)
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'foo'"):
        FCAMUpscaler(model, LayerCAM, "5", config=CONFIG, foo=1)
    assert hook_count(model) == 0


def test_names_wrappers_and_remove_hooks(data) -> None:
    x, y, loader = data
    model = tiny_cnn()
    up = FCAMUpscaler(model, "torchcam:RefineCAM", [model[3], model[5]], config=CONFIG)
    assert isinstance(up.source, TorchCAMSource) and up.source.method_name == "RefineCAM"
    with up:
        up.fit(loader, epochs=1, max_steps=1, progress=False)
        scores = model(x)
        assert up(0, scores, target_shape=(4, 5))[0].shape == (4, 4, 5)  # RefineCAM's output size
        with pytest.raises(TypeError, match="`target_shape`"):
            up(0, scores, target_shape=4)
        assert up(0, scores)[0].shape == (4, 32, 40)
    up = FCAMUpscaler(model, "torchcam:FinerCAM", [model[5]], config=CONFIG)
    up.source.attach()
    up.fit(loader, epochs=1, max_steps=1, progress=False)
    scores = model(x)
    assert up(0, scores, comparison_idx=[1])[0].shape == (4, 32, 40)
    up.remove_hooks()
    assert hook_count(model) == 0


# --------------------------------------------------------------- grad-cam wrapper methods
@pytest.mark.parametrize("name", ["RefineCAM", "FinerCAM", "SESS"])
def test_gradcam_wrappers(data, name: str) -> None:
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from fcam_plugin.adapters.gradcam_wrappers import WrapperCAMSource, is_wrapper_method

    x, y, loader = data
    model = tiny_cnn()
    before = snapshot(model)
    cls = getattr(pytorch_grad_cam, name)
    assert is_wrapper_method(cls)
    kwargs = {"num_scales": 2} if name == "SESS" else {}
    layers = [model[3], model[5]] if name == "RefineCAM" else [model[5]]
    up = FCAMUpscaler(model, cls, layers, config=CONFIG, **kwargs)
    assert isinstance(up.source, WrapperCAMSource)
    seeds = up.source.cams(x, y)
    assert seeds.shape == (4, 1, 32, 40) and seeds.min() >= 0 and seeds.max() <= 1
    up.fit(loader, epochs=1, max_steps=1, progress=False)
    for batch, targets in ((x[:1], None), (x[:3], [ClassifierOutputTarget(c) for c in (0, 1, 2)])):
        maps = up(batch, targets=targets)
        assert isinstance(maps, np.ndarray) and maps.dtype == np.float32 and maps.shape == (len(batch), 32, 40)
        assert maps.min() >= 0 and maps.max() <= 1
    with pytest.warns(UserWarning, match="eigen_smooth=True` has nothing to act on"):
        assert up(x, eigen_smooth=True).shape == (4, 32, 40)
    with pytest.raises(TypeError, match=rf"{name}\(\.\.\.\) call: .*aug_smooth"):
        up(x, aug_smooth=True)  # not in these methods' signatures
    if name == "FinerCAM":
        assert up(x, alpha=0.5, comparison_categories=[1, 2], target_idx=None).shape == (4, 32, 40)
        with pytest.raises(TypeError, match="`alpha` must be a number"):
            up(x, alpha="big")
    up.close()
    assert_same(before, snapshot(model))


def test_gradcam_wrapper_errors() -> None:
    from pytorch_grad_cam import FinerCAM, RefineCAM

    model = tiny_cnn()
    with pytest.raises(TypeError, match=r"FinerCAM.__init__\(\) got unexpected keyword arguments \['gamma'\]"):
        FCAMUpscaler(model, FinerCAM, [model[5]], config=CONFIG, gamma=1.0)
    instance = RefineCAM(tiny_cnn(), [nn.Identity()])
    with pytest.raises(ValueError, match="built on a different model"):
        FCAMUpscaler(model, instance, config=CONFIG)


def test_docs_page_runs() -> None:
    """Every python block of docs/torchcam.md runs as written (on its random tiny data)."""
    import re
    from pathlib import Path

    page = Path(__file__).resolve().parents[1] / "docs" / "torchcam.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)
    assert blocks
    namespace: dict = {}
    exec(compile("\n".join(blocks), str(page), "exec"), namespace)  # noqa: S102 - our own docs
    assert namespace["maps"][0].shape == (2, 64, 64)
