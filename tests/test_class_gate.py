"""The class gate (``FCAMConfig(cam_gate="auto")``, the default): maps that change with ``targets`` / ``class_idx``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAMpp

from fcam_plugin import FCAMConfig, FCAMUpscaler
from fcam_plugin._state import frozen_eval
from fcam_plugin.class_gate import class_gate, dilate, rival_classes, spread

SIZE = 64


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


def _state(model: torch.nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.grad for p in model.parameters()], {k: v.clone() for k, v in model.state_dict().items()})


def _same_state(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and all(torch.equal(a[3][k], b[3][k]) for k in a[3])


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, SIZE, SIZE, generator=generator), torch.tensor([0, 1, 2, 0])


def _fitted(method: object, data: tuple[torch.Tensor, torch.Tensor], gate: bool | str = True) -> FCAMUpscaler:
    model = tiny_cnn(3)
    config = FCAMConfig(decoder_channels=(16, 8, 8, 8, 8), cam_gate=gate)
    return FCAMUpscaler(model, method, config=config).fit([data], epochs=1, seed=0, progress=False)


@pytest.mark.parametrize("method", [GradCAMPlusPlus, LayerCAM])
def test_gradcam_targets_change_the_map_and_leave_the_model_alone(method: type, data: tuple) -> None:
    x, _ = data
    up = _fitted(method, data)
    before = _state(up.model)
    maps = [up(input_tensor=x, targets=[ClassifierOutputTarget(c)] * len(x)) for c in range(3)]
    assert all(m.shape == (len(x), SIZE, SIZE) and m.dtype == np.float32 for m in maps)
    assert all(np.abs(maps[0] - other).max() > 1e-3 for other in maps[1:]), "the map ignores `targets`"
    with torch.no_grad(), frozen_eval(up.model):  # the upscaler predicts with the model in eval mode
        predicted = up.model(x).argmax(1).tolist()
    np.testing.assert_allclose(up(input_tensor=x), up(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in predicted]), atol=1e-6)
    assert _same_state(before, _state(up.model)) and _hooks(up.model) == 0


def test_torchcam_class_idx_changes_the_map(data: tuple) -> None:
    x, _ = data
    up = _fitted(GradCAMpp, data)
    with up:
        first = up(0, up.model(x))[0]
        second = up([1, 2, 1, 2], up.model(x))[0]
    assert first.shape == (len(x), SIZE, SIZE)
    assert (first - second).abs().max() > 1e-3
    assert _hooks(up.model) == 0


def test_out_of_range_or_wrong_count_raises_with_the_model_untouched(data: tuple) -> None:
    x, _ = data
    up = _fitted(GradCAMPlusPlus, data)
    before = _state(up.model)
    with pytest.raises(ValueError, match=r"`targets` name classes \[7\]"):
        up(input_tensor=x, targets=[ClassifierOutputTarget(7)] * len(x))
    with pytest.raises(ValueError, match="`classes` must hold one class index per image"):
        up.maps(x, [0, 1])
    assert _same_state(before, _state(up.model)) and _hooks(up.model) == 0


def test_without_the_gate_maps_are_class_agnostic(data: tuple) -> None:
    x, _ = data
    up = _fitted(GradCAMPlusPlus, data, gate=False)
    a = up(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x))
    b = up(input_tensor=x, targets=[ClassifierOutputTarget(1)] * len(x))
    np.testing.assert_array_equal(a, b)


def test_by_default_only_named_classes_are_gated(data: tuple) -> None:
    x, _ = data
    up = _fitted(GradCAMPlusPlus, data, gate="auto")
    assert FCAMConfig().cam_gate == "auto"
    with up.config.overridden(cam_gate=False):
        agnostic = up(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x))
    np.testing.assert_array_equal(up(input_tensor=x), agnostic)  # no targets: no gate, no backward pass
    named = up(input_tensor=x, targets=[ClassifierOutputTarget(0)] * len(x))
    assert np.abs(named - agnostic).max() > 1e-3, "named classes must be gated by default"


def test_dilate_max_pools_over_a_share_of_each_side() -> None:
    cams = torch.zeros(2, 64, 32)
    cams[0, 20, 10] = 0.25
    pooled = dilate(cams, 0.25)
    assert pooled.shape == (2, 64, 32)
    # a 17 x 9 window (a quarter of each side, odd) around the one nonzero pixel
    assert int((pooled[0] > 0).sum()) == 17 * 9 and float(pooled[0].max()) == 0.25
    assert torch.equal(dilate(cams, 0.0), cams)


def test_spread_ramps_the_pooled_evidence_down_instead_of_stepping() -> None:
    cams = torch.zeros(1, 64, 64)
    cams[0, 32, 32] = 1.0
    pooled, spreaded = dilate(cams, 0.25), spread(cams, 0.25)
    assert torch.equal(spread(cams, 0.0), cams)
    # max-pooling alone: a 17 x 17 plateau with a step of 1 at its edge
    assert float(pooled.diff(dim=-1).abs().max()) == 1.0
    # then the box mean: the same peak value, support 33 x 33, steps of at most 1/17 per pixel
    assert float(spreaded[0, 32, 32]) == 1.0 and int((spreaded[0] > 0).sum()) == 33 * 33
    assert float(spreaded.diff(dim=-1).abs().max()) <= 1 / 17 + 1e-6


def _two_objects() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A decoder map with two objects, and CAMs of class A peaking on the first, class B on the second."""
    probs = torch.zeros(1, 64, 64)
    probs[0, 8:24, 8:24] = 1.0
    probs[0, 44:60, 44:60] = 1.0
    cam_a, cam_b = torch.zeros(1, 64, 64), torch.zeros(1, 64, 64)
    cam_a[0, 10:13, 10:13], cam_a[0, 50, 50] = 1.0, 0.3  # some evidence for A leaks onto B's object
    cam_b[0, 50:53, 50:53] = 1.0
    return probs, cam_a, cam_b


def test_gate_keeps_the_requested_object_and_fades_the_rivals() -> None:
    probs, cam_a, cam_b = _two_objects()
    gated_a = probs * class_gate(cam_a, cam_b[:, None], dilation=0.25)
    gated_b = probs * class_gate(cam_b, cam_a[:, None], dilation=0.25)
    assert gated_a[0, 8:24, 8:24].mean() > 0.5 and gated_a[0, 44:60, 44:60].max() <= 0.3 + 1e-6
    assert gated_b[0, 44:60, 44:60].mean() > 0.5 and gated_b[0, 8:24, 8:24].max() == 0


def test_gate_is_one_where_every_class_points_at_the_same_object() -> None:
    probs, cam_a, _ = _two_objects()
    rivals = torch.stack([0.5 * cam_a, torch.zeros_like(cam_a)], 1)  # a rival on the same object, a flat one
    gate = class_gate(cam_a, rivals, dilation=0.25)
    # 1 wherever the requested class has any (pooled) evidence, 0 where no class has any
    assert torch.equal(gate, (spread(cam_a, 0.25) > 0).float())


def test_flat_requested_cam_keeps_the_map_and_bad_rivals_raise() -> None:
    flat = torch.zeros(2, 16, 16)
    assert torch.equal(class_gate(flat, torch.rand(2, 3, 16, 16), 0.25), torch.ones(2, 16, 16))
    with pytest.raises(ValueError, match="`rivals` must be"):
        class_gate(flat, torch.rand(2, 16, 16), 0.25)


def test_rivals_are_the_best_other_classes() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [2.0, 1.0, 3.0, 0.0]])
    assert rival_classes(scores, torch.tensor([1, 0]), 2).tolist() == [[2, 3], [2, 1]]
    assert rival_classes(scores[:, :2], torch.tensor([1, 0]), 5).tolist() == [[0], [1]]
    assert rival_classes(scores[:, :1], torch.tensor([0, 0]), 2).shape == (2, 0)
