"""The `fcam` command line, run in-process through `main([...])` (and once as a subprocess).

Everything runs on tiny generated data (64 px PNGs, resnet18 with random weights) on the CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fcam_plugin.cli import main
from fcam_plugin.data import SyntheticWSOL, save_wsol_folder

SIZE = 64
MODEL = ["--arch", "resnet18", "--num-classes", "2", "--image-size", str(SIZE), "--workers", "0"]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An ImageFolder (6 images, 2 classes), a wsolevaluation folder (masks) and a fitted checkpoint."""
    root = tmp_path_factory.mktemp("cli")
    synthetic = SyntheticWSOL(6, image_size=SIZE, num_classes=2, normalize=False)
    for i in range(len(synthetic)):
        sample = synthetic.render(i)
        folder = root / "folder" / f"class{sample.label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((sample.image * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    # one non-square image, to check that maps come back at the original size
    Image.fromarray(np.full((40, 72, 3), 128, np.uint8)).save(root / "folder" / "class0" / "wide.jpg")
    data, meta = save_wsol_folder(SyntheticWSOL(4, image_size=SIZE, num_classes=2, split="test"), root / "wsol")
    ckpt = root / "fcam.pt"
    code = main(["fit", *MODEL, "--data", str(root / "folder"), "--batch-size", "3", "--epochs", "1",
                 "--out", str(ckpt), "--no-progress"])
    assert code == 0
    return {"root": root, "folder": root / "folder", "data": data, "meta": meta, "ckpt": ckpt}


def test_help_as_module() -> None:
    out = subprocess.run([sys.executable, "-m", "fcam_plugin", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for command in ("demo", "fit", "explain", "eval"):
        assert command in out.stdout


@pytest.mark.parametrize("command", ["fit", "explain", "eval", "demo"])
def test_command_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    assert "--" in capsys.readouterr().out


def test_fit_writes_loadable_checkpoint(work: dict[str, Path]) -> None:
    from fcam_plugin.checkpoint import read_checkpoint

    state = read_checkpoint(work["ckpt"])
    assert state["fitted"] is True
    assert state["method"]["name"] == "GradCAMPlusPlus"
    assert state["training"]["global_step"] == 2  # 7 images, batch 3, drop_last


def test_fit_resume(work: dict[str, Path], tmp_path: Path) -> None:
    from fcam_plugin.checkpoint import read_checkpoint

    out = tmp_path / "resumable.pt"
    args = ["fit", *MODEL, "--data", str(work["folder"]), "--batch-size", "3", "--epochs", "1",
            "--out", str(out), "--no-progress"]
    assert main([*args, "--max-steps", "1"]) == 0  # "interrupted" after one step
    assert read_checkpoint(out)["training"]["global_step"] == 1
    assert main([*args, "--resume"]) == 0  # continues from --out
    assert read_checkpoint(out)["training"]["global_step"] == 2


def test_explain_writes_npy_and_png(work: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "maps"
    code = main(["explain", *MODEL, "--checkpoint", str(work["ckpt"]), "--images", str(work["folder"]),
                 "--out", str(out), "--batch-size", "3"])
    assert code == 0
    npys = sorted(out.rglob("*.npy"))
    assert len(npys) == 7 and len(list(out.rglob("*.png"))) == 7
    wide = np.load(out / "class0" / "wide.npy")
    assert wide.shape == (40, 72) and wide.dtype == np.float32
    assert 0.0 <= wide.min() and wide.max() <= 1.0
    with Image.open(out / "class0" / "wide.png") as overlay:
        assert overlay.size == (72, 40)


def test_explain_gallery_and_overlays(work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from fcam_plugin import overlay

    out = tmp_path / "maps"
    code = main(["explain", *MODEL, "--checkpoint", str(work["ckpt"]), "--images", str(work["folder"]),
                 "--out", str(out), "--batch-size", "4", "--alpha", "0.3"])
    assert code == 0
    assert "gallery" in capsys.readouterr().out
    page = (out / "index.html").read_text()
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert len(pngs) == 7 and all(f'src="{p}"' in page for p in pngs)
    assert page.count("<figure>") == 7 and "top-1 class" in page
    # the PNG is exactly fcam_plugin.overlay of the original image and the saved map
    with Image.open(work["folder"] / "class1" / "img1.png") as image:
        expected = overlay(np.asarray(image.convert("RGB")), np.load(out / "class1" / "img1.npy"), image_weight=0.3)
    with Image.open(out / "class1" / "img1.png") as written:
        assert np.array_equal(np.asarray(written), expected)


def test_checkpoint_for_other_num_classes_names_the_head_and_the_flag(
    work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = ["--arch", "resnet18", "--num-classes", "3", "--image-size", str(SIZE), "--workers", "0"]
    code = main(["explain", *model, "--checkpoint", str(work["ckpt"]), "--images", str(work["folder"]),
                 "--out", str(tmp_path / "maps"), "--no-progress"])
    assert code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcam: error")][0]
    assert "different classifier architecture" in error
    assert "fc.weight [2, 512] vs [3, 512]" in error and "2 outputs in the checkpoint vs 3 here" in error
    assert "pass --num-classes 2" in error


def test_checkpoint_for_other_arch_names_the_flag(work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--arch", "resnet34", "--num-classes", "2", "--image-size", str(SIZE), "--workers", "0"]
    code = main(["explain", *model, "--checkpoint", str(work["ckpt"]), "--images", str(work["folder"]),
                 "--out", str(tmp_path / "maps"), "--no-progress"])
    assert code == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcam: error")][0]
    assert "torchvision.models.resnet.ResNet" in error and "not --arch resnet34" in error


def test_fit_with_skip_and_target_layers(work: dict[str, Path], tmp_path: Path) -> None:
    from fcam_plugin.checkpoint import read_checkpoint

    out = tmp_path / "layers.pt"
    code = main(["fit", *MODEL, "--data", str(work["folder"]), "--batch-size", "3", "--max-steps", "1",
                 "--target-layer", "layer3", "--skip-layer", "relu", "--skip-layer", "layer2", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    assert [name for name, _, _ in read_checkpoint(out)["taps"]] == ["relu", "layer2"]


def test_fit_with_predicted_labels(work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "predicted.pt"
    code = main(["fit", *MODEL, "--data", str(work["folder"]), "--labels", "predicted", "--batch-size", "3",
                 "--max-steps", "1", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "labels: the classifier's top-1 class of each image" in capsys.readouterr().out
    assert main(["fit", *MODEL, "--wsol-data", str(work["data"]), "--wsol-metadata", str(work["meta"]),
                 "--labels", "predicted", "--out", str(out)]) == 2


SHARED_MODEL = """
import torch
from torch import nn

class Net(nn.Module):  # one activation module at the stem and at the head (lukemelas EfficientNet layout)
    def __init__(self):
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU()) for _ in range(4)])
        self.head, self.bn1, self.act, self.fc = nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.SiLU(), nn.Linear(16, 2)

    def forward(self, x):
        x = self.blocks(self.act(self.bn0(self.stem(x))))
        return self.fc(self.act(self.bn1(self.head(x))).mean((2, 3)))

def build():
    torch.manual_seed(0)
    return Net()
"""


def test_fit_model_with_a_shared_activation(
    work: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shared_model.py").write_text(SHARED_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    args = ["fit", "--model", "shared_model:build", "--image-size", str(SIZE), "--workers", "0",
            "--data", str(work["folder"]), "--batch-size", "3", "--max-steps", "1", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "auto.pt")]) == 0  # found automatically, without `act`
    capsys.readouterr()
    assert main([*args, "--target-layer", "act", "--out", str(tmp_path / "bad.pt")]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("fcam: error")][0]
    assert "--target-layer entry 'act' (SiLU) runs 2 times per forward pass" in error
    assert "(1, 8, 128, 128) and (1, 16, 8, 8)" in error and "['bn0', 'bn1']" in error
    assert main([*args, "--skip-layer", "bn0", "--skip-layer", "act", "--out", str(tmp_path / "bad.pt")]) == 2
    assert "--skip-layer entry 'act'" in capsys.readouterr().err


def test_explain_with_model_callable(work: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models.py").write_text(
        "import torch, torchvision\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    return torchvision.models.resnet18(num_classes=2)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["explain", "--model", "my_models:build", "--image-size", str(SIZE), "--workers", "0",
                 "--checkpoint", str(work["ckpt"]), "--images", str(work["folder"] / "class1"),
                 "--out", str(tmp_path / "maps"), "--no-png", "--no-progress", "--no-weights-check"])
    assert code == 0
    assert list((tmp_path / "maps").glob("*.npy")) and not list((tmp_path / "maps").glob("*.png"))


def test_eval_table_and_json(work: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "metrics.json"
    code = main(["eval", *MODEL, "--checkpoint", str(work["ckpt"]), "--wsol-data", str(work["data"]),
                 "--wsol-metadata", str(work["meta"]), "--split", "test", "--baseline",
                 "--num-thresholds", "50", "--out", str(report), "--no-progress"])
    assert code == 0
    table = capsys.readouterr().out
    assert "PxAP" in table and "MaxBoxAccV2" in table and "F-CAM" in table and "bilinear" in table
    result = json.loads(report.read_text())
    assert result["dataset"]["images"] == 4
    assert len(result["metrics"]) == 2
    for summary in result["metrics"].values():
        for key in ("pxap", "maxboxacc", "maxboxaccv2"):
            assert 0.0 <= summary[key] <= 1.0


def test_demo_calls_run_demo(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = []
    report = tmp_path / "report.md"
    fake = types.ModuleType("fcam_plugin.demo")
    fake.run_demo = lambda **kwargs: calls.append(kwargs) or {"files": {"report": report}}  # type: ignore[attr-defined]
    fake.preset = lambda name, **changes: (name, changes)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fcam_plugin.demo", fake)
    assert main(["demo", "--out", str(tmp_path), "--quick", "--seed", "3", "--device", "cpu"]) == 0
    assert calls == [{"out_dir": str(tmp_path), "quick": True, "seed": 3, "device": torch.device("cpu")}]
    assert str(report) in capsys.readouterr().out


def test_demo_preset_and_variant_reach_run_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from fcam_plugin import demo

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kwargs: calls.append(kwargs) or {})
    assert main(["demo", "--out", str(tmp_path), "--preset", "224", "--variant", "textures"]) == 0
    settings = calls[0]["settings"]
    assert (settings.image_size, settings.variant, settings.train_images) == (224, "textures", demo.PRESETS["224"].train_images)
    assert main(["demo", "--out", str(tmp_path), "--quick", "--variant", "small"]) == 0
    assert calls[1]["settings"].variant == "small" and calls[1]["settings"].train_images == demo.PRESETS["quick"].train_images
    assert main(["demo", "--out", str(tmp_path), "--quick", "--preset", "224"]) == 2


def test_demo_choices_match_the_presets_and_variants() -> None:
    from fcam_plugin import cli, demo
    from fcam_plugin.data import VARIANTS

    assert cli.DEMO_PRESETS == tuple(demo.PRESETS) and cli.DEMO_VARIANTS == tuple(VARIANTS)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], "a command is required"),
        (["nope"], "invalid choice"),
        (["fit", "--epochs", "0"], "--epochs"),
        (["fit", "--arch", "resnet18"], "--data"),
        (["fit", "--arch", "resnet18", "--data", "does/not/exist"], "does/not/exist"),
        (["fit", "--arch", "resnet18", "--data", "x", "--model", "m:f"], "not allowed with"),
        (["fit", "--data", "{folder}", "--arch", "not_a_model"], "not_a_model"),
        (["fit", *MODEL, "--data", "{folder}", "--method", "NoSuchCAM"], "NoSuchCAM"),
        (["fit", *MODEL, "--data", "{folder}", "--set", "no_such_key=1"], "no_such_key"),
        (["fit", *MODEL, "--data", "{folder}", "--weights", "{missing}"], "--weights"),
        (["explain", *MODEL, "--checkpoint", "{missing}", "--images", "{folder}"], "does not exist"),
        (["explain", *MODEL, "--checkpoint", "{junk}", "--images", "{folder}"], "could not be read"),
        (["eval", *MODEL, "--checkpoint", "{ckpt}"], "--wsol-data"),
        (["fit", *MODEL, "--data", "{folder}", "--device", "nonsense"], "--device"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv: list[str], expected: str, work: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (work["root"] / "junk.pt").write_bytes(b"not a checkpoint")
    paths = {"folder": work["folder"], "ckpt": work["ckpt"], "missing": work["root"] / "missing.pt",
             "junk": work["root"] / "junk.pt"}
    argv = [a.format(**{k: str(v) for k, v in paths.items()}) for a in argv]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("fcam: warning")]
    assert len(errors) == 1, errors
    assert errors[0].startswith("fcam: error: ") and expected in errors[0]


def test_debug_shows_the_exception(work: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="does/not/exist"):
        main(["--debug", "fit", "--arch", "resnet18", "--data", "does/not/exist"])
