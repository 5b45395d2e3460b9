"""The bad-input table: every mistake a user can make gets a specific error that says what to fix.

One list of cases (:data:`CASES`) drives both the tests and the docs page ``docs/errors.md``: each
case is run once, its exception type and the key words of its message are checked, and the page
is rendered from the messages actually raised. ``test_errors_doc_is_up_to_date`` fails when the page
is stale; regenerate it with ``FCAM_UPDATE_DOCS=1 pytest tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from _helpers import tiny_cnn
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from fcam_plugin import CheckpointError, FCAMConfig, FCAMUpscaler, NoSpatialFeaturesError, NotFittedError

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
NUM_CLASSES = 3
SIZE = 32
SMALL = dict(decoder_channels=(8, 8, 8, 8, 8))


class Env:
    """Objects shared by the cases: a tiny classifier, a fitted and an unfitted upscaler, data, files."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.model = tiny_cnn()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(4, 3, SIZE, SIZE, generator=g)
        self.y = torch.tensor([0, 1, 2, 0])
        self.up = FCAMUpscaler(self.model, "GradCAM", config=FCAMConfig(**SMALL))
        self.up.fit([(self.x, self.y)], epochs=1, progress=False)
        self.unfitted = FCAMUpscaler(self.model, GradCAM, config=FCAMConfig(**SMALL))
        self.saved = tmp / "fcam.pt"
        self.up.save(self.saved)
        self.results: dict[str, BaseException | None] = {}

    def fit(self, loader: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("progress", False)
        return self.unfitted.fit(loader, **kwargs)

    def batch(self, images: Any = None, labels: Any = None) -> list[tuple[Any, Any]]:
        return [(self.x if images is None else images, self.y if labels is None else labels)]


@dataclass(frozen=True)
class Case:
    """One row of the table: what the user did, the call, the expected exception and message words."""

    id: str
    area: str
    case: str
    call: str
    run: Callable[[Env], Any]
    exception: type[BaseException]
    words: tuple[str, ...]


def _dict_loader(env: Env) -> list[dict[str, torch.Tensor]]:
    return [{"image": env.x, "label": env.y}]


def _one_shot(env: Env) -> Any:
    return (b for b in env.batch())


def _foreign_cam(env: Env) -> Any:
    other = tiny_cnn(seed=1)
    cam = GradCAM(other, [other[0]])
    try:
        return FCAMUpscaler(env.model, cam)
    finally:
        cam.activations_and_grads.release()


def _own_cam_with_kwargs(env: Env) -> Any:
    model = tiny_cnn()
    cam = GradCAM(model, [model[0]])
    try:
        return FCAMUpscaler(model, cam, config=FCAMConfig(**SMALL), reshape_transform=None, compute_input_gradient=True)
    finally:
        cam.activations_and_grads.release()


def _no_spatial_model() -> nn.Module:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, NUM_CLASSES))


def _nan(env: Env) -> torch.Tensor:
    x = env.x.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


def _inf(env: Env) -> torch.Tensor:
    x = env.x.clone()
    x[1, 2, 3, 4] = float("inf")
    return x


def _foreign_optimizer(env: Env) -> torch.optim.Optimizer:
    return torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1)


T = [ClassifierOutputTarget(0)]

CASES: list[Case] = [
    # ------------------------------------------------------------------ construction
    Case("model-not-module", "construct", "model is not an nn.Module", "FCAMUpscaler(lambda x: x, 'GradCAM')",
         lambda e: FCAMUpscaler(lambda x: x, "GradCAM"), TypeError, ("`model`", "function", "torch.nn.Module")),
    Case("model-no-params", "construct", "model without parameters", "FCAMUpscaler(nn.ReLU(), 'GradCAM')",
         lambda e: FCAMUpscaler(nn.ReLU(), "GradCAM"), TypeError, ("`model`", "ReLU", "with parameters")),
    Case("model-no-spatial", "construct", "model with no spatial feature map",
         "FCAMUpscaler(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)), 'GradCAM')",
         lambda e: FCAMUpscaler(_no_spatial_model(), "GradCAM"), NoSpatialFeaturesError,
         ("`model`", "Sequential", "spatial feature map", "skip_layers")),
    Case("method-unknown-name", "construct", "unknown CAM method name", "FCAMUpscaler(model, 'GradCAMPlus')",
         lambda e: FCAMUpscaler(e.model, "GradCAMPlus"), ValueError, ("`method`", "'GradCAMPlus'", "GradCAMPlusPlus")),
    Case("method-unknown-library", "construct", "unknown library prefix", "FCAMUpscaler(model, 'keras:GradCAM')",
         lambda e: FCAMUpscaler(e.model, "keras:GradCAM"), ValueError, ("`method`", "'keras'", "torchcam")),
    Case("method-wrong-type", "construct", "method is neither a CAM class, instance nor name", "FCAMUpscaler(model, 42)",
         lambda e: FCAMUpscaler(e.model, 42), TypeError, ("`method`", "42", "GradCAMPlusPlus")),
    Case("method-other-model", "construct", "CAM instance built on a different model",
         "FCAMUpscaler(model, GradCAM(other_model, [other_model[0]]))",
         _foreign_cam, ValueError, ("`method`", "different model", "pass the class")),
    Case("method-instance-kwargs", "construct", "constructor arguments given with a ready CAM instance",
         "FCAMUpscaler(model, GradCAM(model, [model[0]]), compute_input_gradient=True)",
         _own_cam_with_kwargs, ValueError, ("compute_input_gradient", "instance", "pass the class")),
    Case("target-layers-foreign", "construct", "target layer that is not part of the model",
         "FCAMUpscaler(model, 'GradCAM', target_layers=nn.Conv2d(3, 8, 3))",
         lambda e: FCAMUpscaler(e.model, "GradCAM", target_layers=nn.Conv2d(3, 8, 3)), ValueError,
         ("`target_layers`", "Conv2d", "not a submodule")),
    Case("target-layers-int", "construct", "target layer given as an index", "FCAMUpscaler(model, 'GradCAM', target_layers=3)",
         lambda e: FCAMUpscaler(e.model, "GradCAM", target_layers=3), TypeError, ("`target_layers`", "3", "qualified name")),
    Case("method-unknown-keyword", "construct", "constructor keyword the CAM class does not take",
         "FCAMUpscaler(model, 'GradCAM', foo=1)",
         lambda e: FCAMUpscaler(e.model, "GradCAM", foo=1), TypeError, ("GradCAM.__init__()", "['foo']")),
    Case("method-torchcam-spelling", "construct", "torchcam's `target_layer` with a pytorch-grad-cam class",
         "FCAMUpscaler(model, 'GradCAM', target_layer='0')",
         lambda e: FCAMUpscaler(e.model, "GradCAM", target_layer="0"), TypeError, ("GradCAM.__init__()", "['target_layer']")),
    Case("normalize-unknown", "construct", "unknown value convention", "FCAMUpscaler(model, 'GradCAM', normalize='sigmoid')",
         lambda e: FCAMUpscaler(e.model, "GradCAM", normalize="sigmoid"), ValueError, ("`normalize`", "'sigmoid'", "'minmax'")),
    Case("skip-layers-unknown", "construct", "skip layer that is not in the model",
         "FCAMUpscaler(model, 'GradCAM', skip_layers=['layer9'])",
         lambda e: FCAMUpscaler(e.model, "GradCAM", skip_layers=["layer9"]), ValueError,
         ("`skip_layers`", "'layer9'", "submodule")),
    Case("config-dict", "construct", "config given as a dict", "FCAMUpscaler(model, 'GradCAM', config={'lr': 0.1})",
         lambda e: FCAMUpscaler(e.model, "GradCAM", config={"lr": 0.1}), TypeError, ("`config`", "FCAMConfig", "'lr'")),
    Case("config-lr", "construct", "negative learning rate", "FCAMConfig(lr=-0.1)",
         lambda e: FCAMConfig(lr=-0.1), ValueError, ("`lr`", "-0.1", "> 0")),
    Case("config-crf-method", "construct", "unknown CRF method", "FCAMConfig(crf_method='fast')",
         lambda e: FCAMConfig(crf_method="fast"), ValueError, ("`crf_method`", "'fast'", "'exact'")),
    Case("config-seed-patch", "construct", "even seed patch size", "FCAMConfig(seed_patch=2)",
         lambda e: FCAMConfig(seed_patch=2), ValueError, ("`seed_patch`", "2", "odd")),
    Case("config-flag-not-bool", "construct", "a string for an on/off option", 'FCAMConfig(flip_average="no")',
         lambda e: FCAMConfig(flip_average="no"), TypeError, ("`flip_average`", "'no'", "bool")),
    Case("config-gate-mode", "construct", "an unknown class-gate mode", 'FCAMConfig(cam_gate="always")',
         lambda e: FCAMConfig(cam_gate="always"), TypeError, ("`cam_gate`", "'always'", "'auto'")),
    Case("config-gate-rivals", "construct", "no rival class for the gate", "FCAMConfig(gate_rivals=0)",
         lambda e: FCAMConfig(gate_rivals=0), ValueError, ("`gate_rivals`", "0", ">= 1")),
    Case("config-gate-dilation", "construct", "gate dilation above the image side", "FCAMConfig(gate_dilation=2)",
         lambda e: FCAMConfig(gate_dilation=2), ValueError, ("`gate_dilation`", "2", "[0, 1]")),
    Case("config-confidence-quantile", "construct", "a confidence quantile of 1 (every image left out)",
         "FCAMConfig(fg_confidence_quantile=1.0)",
         lambda e: FCAMConfig(fg_confidence_quantile=1.0), ValueError, ("`fg_confidence_quantile`", "1.0", "[0, 1)")),
    Case("config-mean", "construct", "normalisation mean with 2 values", "FCAMConfig(mean=(0.5, 0.5))",
         lambda e: FCAMConfig(mean=(0.5, 0.5)), ValueError, ("`mean`", "(0.5, 0.5)", "3 values")),
    Case("config-unknown-key", "construct", "unknown key in a config dict", "FCAMConfig.from_dict({'learning_rate': 0.1})",
         lambda e: FCAMConfig.from_dict({"learning_rate": 0.1}), ValueError, ("'learning_rate'", "accepted", "'lr'")),
    # ------------------------------------------------------------------------ fit
    Case("fit-zero-epochs", "fit", "zero epochs", "up.fit(loader, epochs=0)",
         lambda e: e.fit(e.batch(), epochs=0), ValueError, ("`epochs`", "0", ">= 1")),
    Case("fit-float-epochs", "fit", "fractional epochs", "up.fit(loader, epochs=2.5)",
         lambda e: e.fit(e.batch(), epochs=2.5), ValueError, ("`epochs`", "2.5", "int")),
    Case("fit-loader-not-iterable", "fit", "loader is not iterable", "up.fit(42)",
         lambda e: e.fit(42), TypeError, ("`loader`", "42", "iterable")),
    Case("fit-loader-dicts", "fit", "loader yields dicts", "up.fit([{'image': x, 'label': y}])",
         lambda e: e.fit(_dict_loader(e), epochs=1), TypeError, ("`loader`", "dict", "'image'", "collate_fn")),
    Case("fit-loader-tensors", "fit", "loader yields single tensors", "up.fit([x])",
         lambda e: e.fit([e.x], epochs=1), TypeError, ("`loader`", "Tensor(shape=[4, 3, 32, 32]", "(images, labels)")),
    Case("fit-loader-empty-batch", "fit", "loader yields an empty batch", "up.fit([(x[:0], y[:0])])",
         lambda e: e.fit(e.batch(e.x[:0], e.y[:0]), epochs=1), ValueError, ("loader batch 0 images", "empty batch", "[0, 3, 32, 32]")),
    Case("fit-loader-nothing", "fit", "loader yields nothing", "up.fit([])",
         lambda e: e.fit([], epochs=1), ValueError, ("`loader`", "no batches", "(images, labels)")),
    Case("fit-loader-one-shot", "fit", "generator (one-shot iterator) with several epochs",
         "up.fit((b for b in batches), epochs=2)",
         lambda e: e.fit(_one_shot(e), epochs=2), ValueError, ("`loader`", "one-shot", "generator", "DataLoader")),
    Case("fit-labels-one-hot", "fit", "labels as one-hot vectors", "up.fit([(x, F.one_hot(y, 3))])",
         lambda e: e.fit(e.batch(labels=nn.functional.one_hot(e.y, NUM_CLASSES)), epochs=1), ValueError,
         ("labels", "one-hot", "[4, 3]", "argmax(1)")),
    Case("fit-labels-length", "fit", "labels of the wrong length", "up.fit([(x, y[:3])])",
         lambda e: e.fit(e.batch(labels=e.y[:3]), epochs=1), ValueError, ("labels", "(4,)", "shape=[3]")),
    Case("fit-labels-float", "fit", "labels as floats", "up.fit([(x, y.float())])",
         lambda e: e.fit(e.batch(labels=e.y.float()), epochs=1), ValueError, ("labels", "integer", "torch.float32")),
    Case("fit-labels-range", "fit", "class index out of range", "up.fit([(x, torch.tensor([0, 1, 2, 5]))])",
         lambda e: e.fit(e.batch(labels=torch.tensor([0, 1, 2, 5])), epochs=1), ValueError,
         ("`labels`", "[0, 3)", "[0, 1, 2, 5]")),
    Case("fit-images-uint8", "fit", "uint8 images", "up.fit([(x_uint8, y)])",
         lambda e: e.fit(e.batch(images=(e.x * 50).clamp(0, 255).to(torch.uint8)), epochs=1), TypeError,
         ("images", "torch.uint8", "/ 255")),
    Case("fit-images-nan", "fit", "NaN in images", "up.fit([(x_with_nan, y)])",
         lambda e: e.fit(e.batch(images=_nan(e)), epochs=1), ValueError, ("loader batch 0 images", "NaN")),
    Case("fit-images-rank", "fit", "images without batch dimension", "up.fit([(x[0], y)])",
         lambda e: e.fit(e.batch(images=e.x[0]), epochs=1), ValueError, ("images", "(B, C, H, W)", "[3, 32, 32]")),
    Case("fit-optimizer-string", "fit", "optimizer given as a name", "up.fit(loader, optimizer='adam')",
         lambda e: e.fit(e.batch(), optimizer="adam"), TypeError, ("`optimizer`", "'adam'", "factory")),
    Case("fit-optimizer-foreign", "fit", "optimizer built on other parameters",
         "up.fit(loader, optimizer=torch.optim.SGD(other.parameters(), lr=0.1))",
         lambda e: e.fit(e.batch(), optimizer=_foreign_optimizer(e)), ValueError, ("`optimizer`", "decoder", "factory")),
    Case("fit-amp-cpu", "fit", "amp on a CPU model", "up.fit(loader, amp=True)",
         lambda e: e.fit(e.batch(), amp=True), ValueError, ("`amp=True`", "CUDA", "cpu")),
    Case("fit-checkpoint-folder", "fit", "checkpoint path is a folder", "up.fit(loader, checkpoint='runs/')",
         lambda e: e.fit(e.batch(), checkpoint=e.tmp), ValueError, ("`checkpoint`", "folder", "'fcam.pt'")),
    Case("fit-checkpoint-every", "fit", "checkpoint every 0 steps", "up.fit(loader, checkpoint='c.pt', checkpoint_every=0)",
         lambda e: e.fit(e.batch(), checkpoint=e.tmp / "c.pt", checkpoint_every=0), ValueError,
         ("`checkpoint_every`", "0", ">= 1")),
    Case("fit-max-steps", "fit", "max_steps=0", "up.fit(loader, max_steps=0)",
         lambda e: e.fit(e.batch(), max_steps=0), ValueError, ("`max_steps`", "0", ">= 1")),
    Case("fit-max-bad-steps", "fit", "max_bad_steps=0", "up.fit(loader, max_bad_steps=0)",
         lambda e: e.fit(e.batch(), max_bad_steps=0), ValueError, ("`max_bad_steps`", "0", ">= 1")),
    Case("fit-resume-missing", "fit", "resume from a missing file", "up.fit(loader, resume='missing.pt')",
         lambda e: e.fit(e.batch(), resume=e.tmp / "missing.pt"), CheckpointError, ("missing.pt", "does not exist")),
    Case("fit-resume-saved", "fit", "resume from a file written by save() (no training state)",
         "up.fit(loader, resume='fcam.pt')",
         lambda e: e.fit(e.batch(), resume=e.saved), CheckpointError, ("`resume`", "no training state", "save()")),
    # ------------------------------------------------------------------ inference
    Case("call-not-fitted", "inference", "calling before fit", "FCAMUpscaler(model, GradCAM)(input_tensor=x)",
         lambda e: e.unfitted(input_tensor=e.x), NotFittedError, ("not been trained", "fit(loader)", "load(")),
    Case("maps-not-fitted", "inference", "maps before fit", "FCAMUpscaler(model, GradCAM).maps(x)",
         lambda e: e.unfitted.maps(e.x), NotFittedError, ("not been trained", "fit(loader)")),
    Case("call-rank", "inference", "image without batch dimension", "up(input_tensor=x[0])",
         lambda e: e.up(input_tensor=e.x[0]), ValueError, ("`input_tensor`", "[3, 32, 32]", "unsqueeze(0)")),
    Case("call-uint8", "inference", "uint8 images", "up(input_tensor=x_uint8)",
         lambda e: e.up(input_tensor=torch.zeros(4, 3, SIZE, SIZE, dtype=torch.uint8)), TypeError,
         ("`input_tensor`", "torch.uint8", "/ 255")),
    Case("call-float64", "inference", "float64 images for a float32 model", "up(input_tensor=x.double())",
         lambda e: e.up(input_tensor=e.x.double()), TypeError, ("`input_tensor`", "torch.float64", "torch.float32", "x.float()")),
    Case("call-1-channel", "inference", "grayscale images (1 channel)", "up(input_tensor=x[:, :1])",
         lambda e: e.up(input_tensor=e.x[:, :1]), ValueError, ("`input_tensor`", "3 channels", "got 1")),
    Case("call-4-channels", "inference", "RGBA images (4 channels)", "up(input_tensor=torch.cat([x, x[:, :1]], 1))",
         lambda e: e.up(input_tensor=torch.cat([e.x, e.x[:, :1]], 1)), ValueError, ("`input_tensor`", "3 channels", "got 4")),
    Case("call-too-small", "inference", "images smaller than the model's total stride", "up(input_tensor=x[..., :16, :16])",
         lambda e: e.up(input_tensor=e.x[..., :16, :16]), ValueError, ("`input_tensor`", "too small", "(16, 16)", "32x32")),
    Case("maps-too-small", "inference", "images smaller than the model's total stride", "up.maps(x[..., :16, :16])",
         lambda e: e.up.maps(e.x[..., :16, :16]), ValueError, ("`images`", "too small", "(16, 16)", "32x32")),
    Case("call-inf", "inference", "Inf in images", "up(input_tensor=x_with_inf)",
         lambda e: e.up(input_tensor=_inf(e)), ValueError, ("`input_tensor`", "NaN or Inf")),
    Case("call-numpy", "inference", "numpy array instead of a tensor", "up(input_tensor=x.numpy())",
         lambda e: e.up(input_tensor=e.x.numpy()), TypeError, ("`input_tensor`", "ndarray", "torch.Tensor")),
    Case("call-targets-length", "inference", "targets of the wrong length", "up(input_tensor=x, targets=[ClassifierOutputTarget(0)])",
         lambda e: e.up(input_tensor=e.x, targets=T), ValueError, ("`targets`", "(4)", "got 1")),
    Case("call-targets-int", "inference", "targets as a bare int", "up(input_tensor=x, targets=3)",
         lambda e: e.up(input_tensor=e.x, targets=3), TypeError, ("`targets`", "3", "ClassifierOutputTarget")),
    Case("call-targets-ints", "inference", "targets as class indices instead of callables", "up(input_tensor=x, targets=[0, 1, 2, 0])",
         lambda e: e.up(input_tensor=e.x, targets=[0, 1, 2, 0]), TypeError, ("`targets`", "callables", "got 0")),
    Case("call-targets-lambda", "inference", "a target that names no class", "up(input_tensor=x, targets=[lambda o: o.sum()] * 4)",
         lambda e: e.up(input_tensor=e.x, targets=[lambda o: o.sum()] * 4), TypeError,
         ("`targets[0]`", "<lambda>", "does not name a class", "ClassifierOutputTarget(c)")),
    Case("call-targets-segmentation", "inference", "a segmentation target on a classifier",
         "up(input_tensor=x, targets=[SemanticSegmentationTarget(1, mask)] * 4)",
         lambda e: e.up(input_tensor=e.x, targets=[_segmentation_target()] * 4), TypeError,
         ("`targets[0]`", "SemanticSegmentationTarget", "does not name a class")),
    Case("call-targets-range", "inference", "a target class the model does not have",
         "up(input_tensor=x, targets=[ClassifierOutputTarget(7)] * 4)",
         lambda e: e.up(input_tensor=e.x, targets=[ClassifierOutputTarget(7)] * 4), ValueError,
         ("`targets`", "[7]", "[0, 3)", "3 scores")),
    Case("call-aug-smooth-not-bool", "inference", "aug_smooth given as a string", "up(input_tensor=x, aug_smooth='yes')",
         lambda e: e.up(input_tensor=e.x, aug_smooth="yes"), TypeError, ("`aug_smooth`", "'yes'", "bool")),
    Case("call-unknown-keyword", "inference", "keyword the wrapped method does not take", "up(input_tensor=x, target=T)",
         lambda e: e.up(input_tensor=e.x, target=T), TypeError, ("GradCAM(...)", "['target']", "targets=None")),
    Case("call-no-input", "inference", "call without input_tensor", "up(targets=T)",
         lambda e: e.up(targets=T), TypeError, ("GradCAM(...)", "needs `input_tensor`")),
    Case("cams-labels-range", "inference", "class index out of range", "up.cams(x, [0, 1, 2, 7])",
         lambda e: e.up.cams(e.x, [0, 1, 2, 7]), ValueError, ("`labels`", "[0, 3)", "[0, 1, 2, 7]")),
    Case("cams-labels-length", "inference", "fewer labels than images", "up.cams(x, [0, 1])",
         lambda e: e.up.cams(e.x, [0, 1]), ValueError, ("`labels`", "(4,)", "shape=[2]")),
    Case("cams-labels-float", "inference", "float labels", "up.cams(x, [0.5, 1, 2, 0])",
         lambda e: e.up.cams(e.x, [0.5, 1, 2, 0]), ValueError, ("`labels`", "integer", "torch.float32")),
    # ---------------------------------------------------------------- persistence
    Case("save-folder", "persistence", "save to a folder", "up.save('runs/')",
         lambda e: e.up.save(e.tmp), ValueError, ("`path`", "folder", "'fcam.pt'")),
    Case("save-none", "persistence", "save to None", "up.save(None)",
         lambda e: e.up.save(None), TypeError, ("`path`", "None", "os.PathLike")),
    Case("load-missing", "persistence", "load a missing file", "FCAMUpscaler.load('missing.pt', model, 'GradCAM')",
         lambda e: FCAMUpscaler.load(e.tmp / "missing.pt", e.model, "GradCAM"), CheckpointError,
         ("missing.pt", "does not exist")),
    Case("load-folder", "persistence", "load a folder", "FCAMUpscaler.load('runs/', model, 'GradCAM')",
         lambda e: FCAMUpscaler.load(e.tmp, e.model, "GradCAM"), CheckpointError, ("`path`", "not a file")),
    Case("load-none", "persistence", "load from None", "FCAMUpscaler.load(None, model, 'GradCAM')",
         lambda e: FCAMUpscaler.load(None, e.model, "GradCAM"), TypeError, ("`path`", "None", "os.PathLike")),
    Case("load-model-wrong-type", "persistence", "load for something that is not a model",
         "FCAMUpscaler.load('fcam.pt', 'resnet18', 'GradCAM')",
         lambda e: FCAMUpscaler.load(e.saved, "resnet18", "GradCAM"), TypeError, ("`model`", "'resnet18'", "nn.Module")),
]


def _optional_cases() -> list[Case]:
    """Cases for parts written concurrently by others: the torchcam adapter and the ``fcam`` CLI."""
    cases = []
    try:
        from fcam_plugin import NoCapturedInputError
    except ImportError:
        pass
    else:
        cases.append(Case(
            "torchcam-before-forward", "inference", "torchcam call before any forward pass of the model",
            "with FCAMUpscaler(model, 'torchcam:LayerCAM') as up: up(0, scores)",
            _torchcam_before_forward, NoCapturedInputError, ("no input", "model(x)", "up(class_idx, scores)"),
        ))
        cases.append(Case(
            "torchcam-foreign-scores", "inference", "torchcam call with scores of no recorded forward pass",
            "model(x); up(0, torch.zeros(2, 3))", _torchcam_other_scores, ValueError,
            ("`scores`", "not the output of a forward pass", "batch of 4"),
        ))
    try:
        import fcam_plugin.cli  # noqa: F401
    except ImportError:
        pass
    else:
        cases += [
            Case("cli-no-command", "cli", "no sub-command", "fcam", lambda e: _cli(e, []), SystemExit,
                 ("exit status 2", "fcam: error", "command")),
            Case("cli-bad-epochs", "cli", "non-integer epochs", "fcam fit --epochs two ...",
                 lambda e: _cli(e, ["fit", "--arch", "resnet18", "--num-classes", "3", "--data", str(e.tmp), "--epochs", "two",
                                    "--out", str(e.tmp / "o.pt")]),
                 SystemExit, ("exit status 2", "fcam: error", "--epochs", "'two'")),
            Case("cli-missing-checkpoint", "cli", "explain with a missing checkpoint",
                 "fcam explain --checkpoint missing.pt ...",
                 lambda e: _cli(e, ["explain", "--arch", "resnet18", "--num-classes", "3", "--checkpoint",
                                    str(e.tmp / "missing.pt"), "--images", str(e.tmp), "--out", str(e.tmp / "maps")]),
                 SystemExit, ("exit status 2", "fcam: error", "missing.pt")),
        ]
    return cases


def _segmentation_target() -> Any:
    import numpy as np
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    return SemanticSegmentationTarget(1, np.ones((SIZE, SIZE), dtype=np.float32))


def _torchcam_other_scores(env: Env) -> Any:
    up = FCAMUpscaler(env.model, "torchcam:LayerCAM", config=FCAMConfig(**SMALL))
    up.load_state(env.up.state())
    with up, torch.no_grad():
        env.model(env.x)
        return up(0, torch.zeros(2, NUM_CLASSES))


def _torchcam_before_forward(env: Env) -> Any:
    up = FCAMUpscaler(env.model, "torchcam:LayerCAM", config=FCAMConfig(**SMALL))
    up.load_state(env.up.state())
    with up:
        return up(0, torch.zeros(4, NUM_CLASSES))


def _cli(env: Env, argv: list[str]) -> Any:
    """Run the ``fcam`` command in-process; exit status 2 becomes ``SystemExit(<its stderr line>)``."""
    from fcam_plugin.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main(argv)
    if status != 0:
        lines = err.getvalue().strip().splitlines()
        raise SystemExit(f"exit status {status}: {lines[-1] if lines else ''}")
    return status


ALL_CASES = CASES + _optional_cases()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    return Env(tmp_path_factory.mktemp("bad-inputs"))


def outcome(env: Env, case: Case) -> BaseException | None:
    """Run a case once (memoised), returning the exception it raised (None if it did not raise)."""
    if case.id not in env.results:
        torch.manual_seed(0)
        try:
            case.run(env)
        except BaseException as error:  # noqa: BLE001 - SystemExit is a case outcome too
            if isinstance(error, KeyboardInterrupt):
                raise
            env.results[case.id] = error
        else:
            env.results[case.id] = None
    return env.results[case.id]


def test_table_is_large_and_unique() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)


@pytest.mark.parametrize("case", ALL_CASES, ids=[c.id for c in ALL_CASES])
def test_bad_input(env: Env, case: Case) -> None:
    error = outcome(env, case)
    assert error is not None, f"{case.call} did not raise"
    assert isinstance(error, case.exception), f"{case.call} raised {type(error).__name__}: {error}"
    message = str(error)
    missing = [w for w in case.words if w not in message]
    assert not missing, f"message lacks {missing}: {message}"
    # The library's standard: TypeError / ValueError or subclasses, never bare Exception.
    if case.area != "cli":
        assert isinstance(error, (TypeError, ValueError)), f"{type(error).__name__} is not a TypeError/ValueError"


def test_bad_inputs_leave_no_hooks(env: Env) -> None:
    for case in ALL_CASES:
        outcome(env, case)
    leftovers = [
        name for name, m in env.model.named_modules()
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
    ]
    assert leftovers == []
    assert all(p.requires_grad for p in env.model.parameters())
    assert all(m.training for m in env.model.modules())


# ------------------------------------------------------------------------------ docs page
def _normalise(message: str, env: Env) -> str:
    message = message.replace(str(env.tmp), "<tmp>")
    message = re.sub(r"0x[0-9a-f]+", "0x…", message)
    message = re.sub(r"\b[0-9a-f]{16}\b", "<hash>", message)
    message = " ".join(message.split())
    if len(message) > 320:
        message = message[:317] + "…"
    return message.replace("|", "\\|")


_AREAS = {
    "construct": "Building an upscaler",
    "fit": "Training (`fit`)",
    "inference": "Inference (`up(...)`, `maps`, `cams`)",
    "persistence": "Saving and loading",
    "cli": "Command line (`fcam`)",
}

_HEADER = """\
# Errors and what they mean

Every mistake in a call to fcam-plugin is answered by a `TypeError` or a `ValueError` (or a
subclass: `CheckpointError`, `NotFittedError`, `NoSpatialFeaturesError`) whose message names the
argument, echoes what was received and says what is accepted. The table below is generated from
the test suite (`tests/test_bad_inputs.py`): every row is a test that runs the call and checks the
exception type and the message. Numerical faults are not user mistakes: a non-finite training loss
skips the step with a `RuntimeWarning`, and `max_bad_steps` (default 20) consecutive ones stop
`fit` with a `FloatingPointError`. Checkpoint contents (truncated, foreign, unsafe, mismatched
files) are covered in [Checkpoints](#checkpoints) below.

## Devices

Like pytorch-grad-cam, the upscaler **moves the input to the model's device** silently
(`images.to(model_device)`), in `fit`, `maps`, `cams` and calls. `maps` and `cams` return tensors on
the model's device; a pytorch-grad-cam style call returns a NumPy array (on the CPU). The decoder
lives on the model's device: move the model *before* building the upscaler (or rebuild it with
`FCAMUpscaler.load`). Tested on the `meta` device (the test suite has no GPU).

"""

_CHECKPOINTS = """
## Checkpoints

`FCAMUpscaler.load` and `fit(resume=...)` read files with `torch.load(weights_only=True)`: no code
inside a file is ever executed. Each of these raises `CheckpointError` (a `ValueError`), tested in
`tests/test_checkpoint.py`:

| File | Message says |
|---|---|
| truncated file, random bytes | could not be read safely (weights_only=True) |
| a pickle carrying code | could not be read safely; the code is not run |
| a plain `state_dict` or another torch file | is not an fcam-plugin checkpoint |
| made for another classifier architecture | different classifier architecture |
| same architecture, other weights | different weights; pass `check_weights=False` to load it anyway |
| `load_state` into an upscaler with another decoder config | decoder_channels differ; rebuild with `FCAMUpscaler.load` |
| written by a newer fcam-plugin | newer schema version; upgrade fcam-plugin |
"""


def render_errors_md(env: Env) -> str:
    """The docs page, from the cases and the messages they actually raise."""
    lines = [_HEADER.rstrip("\n"), ""]
    for area, title in _AREAS.items():
        rows = [c for c in ALL_CASES if c.area == area]
        if not rows:
            continue
        lines += [f"## {title}", "", "| Case | Call | Exception | Message |", "|---|---|---|---|"]
        for case in rows:
            error = outcome(env, case)
            name = type(error).__name__ if error is not None else "(no error)"
            if area == "cli":
                name = "exit status 2"
            elif error is not None and not isinstance(error, (TypeError, ValueError)):
                name += f" ({type(error).__mro__[1].__name__})"
            message = _normalise(str(error), env) if error is not None else ""
            call = case.call.replace("|", "\\|")
            lines.append(f"| {case.case} | `{call}` | `{name}` | {message} |")
        lines.append("")
    return "\n".join(lines) + _CHECKPOINTS


def test_errors_doc_is_up_to_date(env: Env) -> None:
    text = render_errors_md(env)
    if os.environ.get("FCAM_UPDATE_DOCS") == "1":
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(text)
    assert DOC.exists(), "docs/errors.md is missing: run FCAM_UPDATE_DOCS=1 pytest tests/test_bad_inputs.py"
    assert DOC.read_text() == text, "docs/errors.md is stale: run FCAM_UPDATE_DOCS=1 pytest tests/test_bad_inputs.py"


# ------------------------------------------------------------------------------ devices
def test_input_is_moved_to_the_model_device() -> None:
    """The documented device rule, checked on the meta device: CPU images go to the model's device.

    A model on ``meta`` stands in for a GPU: ``maps`` must move CPU images there (computing on a
    meta tensor only propagates shapes), and return the map on the model's device.
    """
    model = tiny_cnn().to("meta")
    # No class gate: the wrapped grad-cam method computes its CAM in NumPy, which meta tensors can't reach.
    up = FCAMUpscaler(model, "GradCAM", config=FCAMConfig(**SMALL, cam_gate=False))
    assert up.device.type == "meta" and next(up.decoder.parameters()).device.type == "meta"
    up.fitted = True  # weights are irrelevant on meta: only placement is checked
    maps = up.maps(torch.randn(2, 3, SIZE, SIZE))
    assert maps.device.type == "meta" and tuple(maps.shape) == (2, SIZE, SIZE)
