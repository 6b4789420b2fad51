import json
from pathlib import Path

import yaml
from PIL import Image

from fcnseg.config import config_from_dict
from fcnseg.engine.demo import DEMO_RECIPE, run_demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_recipe_equals_configs_shapes_demo_yaml():
    on_disk = yaml.safe_load((ROOT / "configs" / "shapes_demo.yaml").read_text())
    assert on_disk == DEMO_RECIPE
    config_from_dict(DEMO_RECIPE)  # a valid recipe


def test_demo_end_to_end_tiny(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(
        out,
        max_steps=1,
        overrides=["data.options={size: [48, 48], length: 4}", "data.crop_size=[48, 48]"],
        progress=False,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"fcn32s", "fcn16s", "fcn8s"}
    for scores in metrics.values():
        assert set(scores) == {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    report = (out / "report.md").read_text()
    assert "FCN-8s" in report and "fcnseg demo" in report and "oarse-to-fine" in report
    with Image.open(out / "figure.png") as fig:
        assert fig.width > 5 * 48  # input | 3 models | ground truth
    assert result["metrics"] == metrics
