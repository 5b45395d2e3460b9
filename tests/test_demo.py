"""`fcam demo` end to end at a tiny size, its report and figures, and the guided-filter rival."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from fcam_plugin.demo import PRESETS, DemoSettings, preset, run_demo
from fcam_plugin.demo.rivals import guided_filter

TINY = DemoSettings(
    train_images=32, test_images=8, image_size=32, classifier_epochs=1, fcam_epochs=2, batch_size=16,
    rivals=("layercam_l234", "refinecam_torchcam"), figure_images=2, multi_images=3, progress=False,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return run_demo(tmp_path_factory.mktemp("demo"), seed=1, device="cpu", settings=TINY)


def test_demo_writes_report_metrics_and_figures(demo) -> None:
    files = demo["files"]
    with open(files["metrics"]) as fh:
        metrics = json.load(fh)
    assert metrics["settings"]["seed"] == 1 and metrics["mode"] == "custom"
    assert 0.0 <= metrics["classifier"]["test_accuracy"] <= 1.0
    for key in ("gradcampp", "layercam_l234", "refinecam_torchcam", "guided_gradcampp", "fcam_gradcampp"):
        assert {"pxap", "maxboxacc", "maxboxaccv2", "histogram"} <= set(metrics["metrics"][key]), key
        assert 0.0 <= metrics["metrics"][key]["pxap"] <= 1.0
        assert sum(metrics["metrics"][key]["histogram"]) == pytest.approx(1.0)
    curve = metrics["learning_curves"]["gradcampp"]
    assert [row["epoch"] for row in curve] == [1, 2]
    assert {"pce", "total", "pxap", "binary_share"} <= set(curve[0])
    assert curve[-1]["pxap"] == metrics["metrics"]["fcam_gradcampp"]["pxap"]
    assert 0.0 <= metrics["seed_precision"]["gradcampp"]["fg_precision"] <= 1.0
    assert all(v["cpu_s"] >= 0 for v in metrics["timings"].values())
    for name in ("comparison", "curve", "epochs", "per_class"):
        with Image.open(files[name]) as image:
            assert image.size[0] > 200 and image.size[1] > 100


def test_demo_scores_one_map_per_class_on_multi_object_images(demo) -> None:
    multi = demo["multi_object"]
    assert set(multi) == {"cam", "refinecam", "fcam_agnostic", "fcam"}
    assert all(0.0 <= row["pxap"] <= 1.0 and 0.0 <= row["right_object"] <= 1.0 for row in multi.values())
    report = open(demo["files"]["report"]).read()
    assert "## Several objects per image: one map per class" in report and "per_class_maps.png" in report


def test_report_names_the_measured_winner_in_words(demo) -> None:
    report = open(demo["files"]["report"]).read()
    summary = demo["summary"]
    winner = summary["best"]["pxap"]
    assert demo["labels"][winner] in summary["verdict"] and summary["verdict"] in report
    assert "target" not in report.lower()  # a user report compares methods, not development targets
    assert "refinecam_torchcam" not in report  # labels, not raw keys
    assert "| epoch |" in report and "nan" not in report


def test_presets_are_sized_for_their_use() -> None:
    assert PRESETS["quick"].train_images <= 256 and PRESETS["quick"].fcam_epochs <= 2
    assert PRESETS["224"].image_size == 224
    assert preset("224", variant="shapes").classes == 5


def test_bad_settings_are_refused(tmp_path) -> None:
    with pytest.raises(TypeError, match="settings"):
        run_demo(tmp_path, settings={"train_images": 8})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed_methods"):
        DemoSettings(seed_methods=("nope",))
    with pytest.raises(ValueError, match="variant"):
        DemoSettings(variant="photos")
    with pytest.raises(ValueError, match="multi_images"):
        DemoSettings(multi_images=-1)


def test_guided_filter_keeps_constants_and_follows_edges() -> None:
    guide = torch.zeros(1, 3, 24, 24)
    guide[..., :, 12:] = 1.0  # a vertical edge
    const = torch.full((1, 1, 24, 24), 0.3)
    assert torch.allclose(guided_filter(guide, const, radius=3, eps=1e-3), const, atol=1e-5)
    blurry = torch.linspace(0, 1, 24).view(1, 1, 1, 24).expand(1, 1, 24, 24)  # a ramp across the edge
    out = guided_filter(guide, blurry, radius=4, eps=1e-4)[0, 0]
    # with a small eps the smooth ramp gets a sharp step where the guide has its edge
    ramp_step = float(blurry[0, 0, 0, 1] - blurry[0, 0, 0, 0])
    assert float((out[:, 12] - out[:, 11]).min()) > 3 * ramp_step
    assert float((out[:, 1:11] - out[:, :10]).abs().max()) < 1.5 * ramp_step
