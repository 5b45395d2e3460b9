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
    monkeypatch.setitem(sys.modules, "fcam_plugin.demo", fake)
    assert main(["demo", "--out", str(tmp_path), "--quick", "--seed", "3", "--device", "cpu"]) == 0
    assert calls == [{"out_dir": str(tmp_path), "quick": True, "seed": 3, "device": torch.device("cpu")}]
    assert str(report) in capsys.readouterr().out


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
