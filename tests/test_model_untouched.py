"""The user's model comes back bit-for-bit unchanged from every public operation, also from failing ones.

A fingerprint of the model (parameter and buffer bytes, parameter identity, ``requires_grad``,
``.grad`` identity and bytes, per-module ``training`` flags, every hook dict, module attributes) is
taken before and after each operation on a ResNet-18 in ``train()`` mode with a frozen stage, an
``eval()`` sub-module, existing gradients and hooks of its own.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torchvision
from pytorch_grad_cam import GradCAMPlusPlus, RandomCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fcam_plugin import FCAMConfig, FCAMUpscaler

SIZE = 64
CONFIG = dict(decoder_channels=(8, 8, 8, 8, 8))
_HOOK_DICTS = (
    "_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks", "_state_dict_hooks",
    "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks",
)


def _digest(tensor: torch.Tensor) -> str:
    return hashlib.sha1(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def fingerprint(model: nn.Module) -> dict[str, Any]:
    """Everything the plug-in could change on ``model``, as comparable values."""
    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        grad = None if p.grad is None else (id(p.grad), _digest(p.grad), p.grad.dtype)
        out[f"param {name}"] = (id(p), _digest(p), p.dtype, p.device, p.requires_grad, grad)
    for name, b in model.named_buffers():
        out[f"buffer {name}"] = (id(b), _digest(b), b.dtype, b.device, b.requires_grad)
    for name, m in model.named_modules():
        hooks = tuple((attr, tuple((k, id(v)) for k, v in getattr(m, attr, {}).items())) for attr in _HOOK_DICTS)
        out[f"module {name}"] = (type(m), m.training, hooks, tuple(sorted(vars(m))))
    return out


def assert_untouched(before: dict[str, Any], model: nn.Module, what: str) -> None:
    after = fingerprint(model)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"{what} changed the model: {changed[:6]}"


def make_model() -> nn.Module:
    """ResNet-18 in train() mode, layer1 frozen, layer2 in eval(), some .grad set, user hooks."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).train()
    model.layer1.requires_grad_(False)
    model.layer2.eval()
    model.fc.weight.grad = torch.randn_like(model.fc.weight)
    model.layer4[1].conv2.weight.grad = torch.randn_like(model.layer4[1].conv2.weight)
    model.layer3.register_forward_hook(lambda m, a, o: None)
    model.layer3.register_forward_pre_hook(lambda m, a: None)
    model.fc.register_full_backward_hook(lambda m, gi, go: None)
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return make_model()


@pytest.fixture(scope="module")
def data() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(2)
    return [(torch.randn(2, 3, SIZE, SIZE, generator=g), torch.tensor([0, 2])) for _ in range(2)]


@pytest.fixture(scope="module")
def fitted(model: nn.Module, data: Any) -> FCAMUpscaler:
    return FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(**CONFIG)).fit(data, epochs=1, progress=False)


def run_untouched(model: nn.Module, what: str, operation: Callable[[], Any]) -> Any:
    before = fingerprint(model)
    try:
        return operation()
    finally:
        assert_untouched(before, model, what)


# ------------------------------------------------------------------------ operations
def test_construct_fit_call_maps_cams(model: nn.Module, data: Any) -> None:
    x = data[0][0]
    up = run_untouched(model, "construct", lambda: FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(**CONFIG)))
    rng = torch.get_rng_state()
    run_untouched(model, "fit", lambda: up.fit(data, epochs=1, progress=False))
    assert torch.equal(rng, torch.get_rng_state())  # fit leaves the caller's RNG alone
    run_untouched(model, "call", lambda: up(input_tensor=x))
    run_untouched(model, "call with targets", lambda: up(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 2))
    run_untouched(model, "call with aug_smooth", lambda: up(input_tensor=x, aug_smooth=True))
    with pytest.warns(UserWarning, match="eigen_smooth"):
        run_untouched(model, "call with eigen_smooth", lambda: up(input_tensor=x, eigen_smooth=True))
    run_untouched(model, "maps", lambda: up.maps(x))
    run_untouched(model, "cams", lambda: up.cams(x, [0, 1]))
    run_untouched(model, "close", up.close)


def test_save_load_and_context_manager(model: nn.Module, fitted: FCAMUpscaler, data: Any, tmp_path: Path) -> None:
    x = data[0][0]
    path = tmp_path / "fcam.pt"
    run_untouched(model, "save", lambda: fitted.save(path))
    loaded = run_untouched(model, "load", lambda: FCAMUpscaler.load(path, model, GradCAMPlusPlus))

    def with_block() -> None:
        with loaded as up:
            up(input_tensor=x)

    run_untouched(model, "context manager", with_block)


def test_library_computed_method(model: nn.Module, data: Any) -> None:
    """A method run through pytorch-grad-cam itself (eval(), zero_grad(), hooks inside the library)."""
    x = data[0][0]
    up = run_untouched(model, "construct RandomCAM", lambda: FCAMUpscaler(model, RandomCAM, config=FCAMConfig(**CONFIG)))
    run_untouched(model, "fit RandomCAM", lambda: up.fit(data[:1], epochs=1, progress=False))
    run_untouched(model, "cams RandomCAM", lambda: up.cams(x, [0, 1]))
    run_untouched(model, "call RandomCAM", lambda: up(input_tensor=x))


def _only_capture_hook_added(before: dict[str, Any], model: nn.Module, up: FCAMUpscaler) -> None:
    """After constructing a torchcam upscaler, the one change is its input hook on the root module."""
    after = fingerprint(model)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == ["module "], changed
    hooks = dict(after["module "][2])
    assert [k for k, _ in hooks["_forward_hooks"]] == [h.id for h in up.hook_handles]
    assert len(up.hook_handles) == 1


def test_torchcam_flow(data: Any) -> None:
    """torchcam style: the input hook lives from construction to remove_hooks(), nothing else changes."""
    model = make_model().eval()  # the user's own forward below must not change BN statistics
    x = data[0][0]
    before = fingerprint(model)
    up = FCAMUpscaler(model, "torchcam:LayerCAM", config=FCAMConfig(**CONFIG))
    _only_capture_hook_added(before, model, up)
    with_hook = fingerprint(model)
    run_untouched(model, "fit torchcam", lambda: up.fit(data[:1], epochs=1, progress=False))

    def explain() -> None:
        with torch.no_grad():
            scores = model(x)
        up(scores.argmax(1).tolist(), scores)

    run_untouched(model, "torchcam call without with", explain)
    assert fingerprint(model) == with_hook
    up.remove_hooks()
    assert_untouched(before, model, "torchcam remove_hooks")  # zero leftover hooks

    def with_block() -> None:
        with up:
            with torch.no_grad():
                scores = model(x)
            up(scores.argmax(1).tolist(), scores)

    run_untouched(model, "torchcam with-block", with_block)  # re-attached inside, removed on exit


# ----------------------------------------------------------------- failing operations
class _FailingLoader:
    def __init__(self, data: Any, at: int) -> None:
        self.data, self.at = data, at

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(self.data):
            if i == self.at:
                raise RuntimeError("corrupt JPEG in batch 1")
            yield batch


def test_exception_from_the_loader_mid_epoch(model: nn.Module, data: Any) -> None:
    up = FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(**CONFIG))
    with pytest.raises(RuntimeError, match="corrupt JPEG"):
        run_untouched(model, "fit failing in the loader", lambda: up.fit(_FailingLoader(data, 1), epochs=1, progress=False))


def test_exception_inside_the_forward_pass(model: nn.Module, data: Any) -> None:
    up = FCAMUpscaler(model, GradCAMPlusPlus, config=FCAMConfig(**CONFIG))
    calls = [0]

    def fail_on_second(module: nn.Module, args: Any, output: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt

    handle = model.layer4.register_forward_hook(fail_on_second)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_untouched(model, "fit interrupted in forward", lambda: up.fit(data, epochs=1, progress=False))
    finally:
        handle.remove()


@pytest.mark.parametrize(
    "call",
    [
        lambda up, x: up(input_tensor=x[0]),
        lambda up, x: up(input_tensor=x, targets=[lambda o: o[0]] * 2),
        lambda up, x: up.cams(x, [0, 9]),
        lambda up, x: up.fit([(x, torch.tensor([0, 9]))], epochs=1, progress=False),
        lambda up, x: up.fit([], epochs=1, progress=False),
    ],
    ids=["bad-rank", "targets-naming-no-class", "cams-class-out-of-range", "fit-class-out-of-range", "fit-empty-loader"],
)
def test_bad_calls(model: nn.Module, fitted: FCAMUpscaler, data: Any, call: Callable) -> None:
    with pytest.raises((TypeError, ValueError)):
        run_untouched(model, "bad call", lambda: call(fitted, data[0][0]))


def test_fingerprint_detects_changes(model: nn.Module) -> None:
    """The helper itself: each kind of change is caught."""
    changes: list[Callable[[nn.Module], Any]] = [
        lambda m: m.fc.weight.data.add_(1e-6),
        lambda m: m.bn1.running_mean.add_(1e-6),
        lambda m: m.layer1[0].conv1.weight.requires_grad_(True),
        lambda m: m.layer2.train(),
        lambda m: m.fc.weight.grad.mul_(2),
        lambda m: setattr(m.fc.weight, "grad", None),
        lambda m: m.conv1.register_forward_hook(lambda *a: None),
        lambda m: m.conv1.register_forward_pre_hook(lambda *a: None),
        lambda m: m.conv1.register_full_backward_hook(lambda *a: None),
    ]
    original = make_model()
    for change in changes:
        m = copy.deepcopy(original)
        m.fc.weight.grad = original.fc.weight.grad.clone()  # deepcopy does not copy .grad
        before = fingerprint(m)
        change(m)
        assert fingerprint(m) != before


def test_layers_swapped_by_a_failing_cam_method_are_put_back() -> None:
    # grad-cam's AblationCAM swaps the target layer during its forward; if it fails midway the
    # model would keep the swapped layer. preserved() restores the module tree.
    from fcam_plugin._state import preserved

    model = make_model()
    before = fingerprint(model)
    original = model.layer4
    with pytest.raises(RuntimeError, match="boom"):
        with preserved(model):
            model.layer4 = torch.nn.Identity()
            raise RuntimeError("boom")
    assert model.layer4 is original
    assert fingerprint(model) == before
