"""`fcam demo` end to end at a tiny size, and the guided-filter rival of the comparison."""

from __future__ import annotations

import json

import pytest
import torch

from fcam_plugin.compare import CompareSettings, guided_filter
from fcam_plugin.demo import QUICK, run_demo

TINY = CompareSettings(
    train_images=32, test_images=8, image_size=32, classifier_epochs=1, fcam_epochs=1, batch_size=16,
    seed_methods=("gradcampp",), baselines=("gradcampp", "layercam", "refinecam_torchcam"), figure_images=2,
    progress=False,
)


@pytest.mark.timeout(120)
def test_demo_writes_report_metrics_and_figure(tmp_path) -> None:
    from PIL import Image

    result = run_demo(tmp_path / "demo", seed=1, device="cpu", settings=TINY)
    files = result["files"]
    for name in ("report", "metrics", "figure"):
        assert (tmp_path / "demo" / {"report": "report.md", "metrics": "metrics.json", "figure": "comparison.png"}[name]).is_file()
    with open(files["metrics"]) as fh:
        metrics = json.load(fh)
    assert {"settings", "classifier", "metrics", "labels", "summary", "timings", "machine"} <= set(metrics)
    assert metrics["settings"]["seed"] == 1
    assert 0.0 <= metrics["classifier"]["test_accuracy"] <= 1.0
    for key in ("gradcampp", "layercam", "refinecam_torchcam", "guided_gradcampp", "guided_layercam", "fcam_gradcampp"):
        assert {"pxap", "maxboxacc", "maxboxaccv2"} <= set(metrics["metrics"][key]), key
        assert 0.0 <= metrics["metrics"][key]["pxap"] <= 1.0
    assert "fcam_gradcampp" in metrics["summary"]["gains"]
    report = (tmp_path / "demo" / "report.md").read_text()
    assert "Classifier test accuracy" in report and "| method | PxAP" in report
    with Image.open(files["figure"]) as image:
        assert image.size[0] > 100 and image.size[1] > 50


def test_quick_settings_are_ci_sized() -> None:
    assert QUICK.train_images <= 256 and QUICK.fcam_epochs <= 2 and QUICK.classifier_epochs <= 4


def test_run_demo_rejects_bad_settings(tmp_path) -> None:
    with pytest.raises(TypeError, match="settings"):
        run_demo(tmp_path, settings={"train_images": 8})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed_methods"):
        CompareSettings(seed_methods=("nope",))


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
