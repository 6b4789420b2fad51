import importlib.util
import json
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from fcnseg.cli import main
from fcnseg.config import config_from_dict
from fcnseg.engine.checkpoint import read_checkpoint
from fcnseg.engine.demo import DEMO_RECIPE, demo_runs, run_demo

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou"}
# 48x48 images, 8 of them: the demo's recipe end to end in seconds
TINY = ["data.options={size: [48, 48], length: 8}", "data.crop_size=[48, 48]", "data.batch_size=4"]


def test_demo_recipe_equals_configs_shapes_demo_yaml():
    on_disk = yaml.safe_load((ROOT / "configs" / "shapes_demo.yaml").read_text())
    assert on_disk == DEMO_RECIPE
    config_from_dict(DEMO_RECIPE)  # a valid recipe


def test_demo_runs_are_the_staged_line_then_controls_that_mirror_it():
    cfg = config_from_dict(DEMO_RECIPE)
    runs = {r.name: r for r in demo_runs(cfg, controls=("continued", "alone"))}
    assert list(runs) == [
        "fcn32s", "fcn16s", "fcn8s", "fcn32s_continued", "fcn16s_continued", "fcn8s_alone",
    ]  # fmt: skip
    for control, stage in (("fcn32s_continued", "fcn16s"), ("fcn16s_continued", "fcn8s")):
        c, s = runs[control].cfg, runs[stage].cfg
        assert c.model.init_from == s.model.init_from  # the same checkpoint ...
        assert c.train == s.train  # ... steps and schedule ...
        assert c.model.arch == control.split("_")[0]
        assert c.model.arch != s.model.arch  # ... without the skip
        assert runs[control].offset == runs[stage].offset
    alone = runs["fcn8s_alone"].cfg
    line = [runs[n].cfg for n in ("fcn32s", "fcn16s", "fcn8s")]
    assert alone.model.arch == "fcn8s" and alone.model.init_from is None
    assert alone.train.max_steps == sum(c.train.max_steps for c in line)
    assert [r.name for r in demo_runs(cfg, controls=())] == ["fcn32s", "fcn16s", "fcn8s"]
    with pytest.raises(ValueError, match="unknown demo controls"):
        demo_runs(cfg, controls=("bogus",))


def test_demo_end_to_end_tiny(tmp_path):
    out = tmp_path / "demo"
    result = run_demo(out, budget_seconds=None, max_steps=2, overrides=TINY, progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"fcn32s", "fcn16s", "fcn8s", "fcn32s_continued", "fcn16s_continued"}
    for scores in metrics.values():
        assert set(scores) == KEYS
        assert all(0.0 <= v <= 1.0 for v in scores.values())
    # steps count from the start of the line; a control counts like the stage it mirrors
    assert result["steps"] == {
        "fcn32s": 2, "fcn16s": 4, "fcn8s": 6, "fcn32s_continued": 4, "fcn16s_continued": 6,
    }  # fmt: skip
    report = (out / "report.md").read_text()
    for text in ("FCN-8s", "fcnseg demo", "Skip or extra steps", "from the skip", "CPU"):
        assert text in report, text
    with Image.open(out / "figure.png") as fig:
        # input | 3 models | ground truth, 2x enlarged, 3 rows, and a legend below
        assert fig.width == 5 * 96 + 6 * 4 and fig.height > 18 + 3 * (96 + 4) + 18
    if importlib.util.find_spec("matplotlib") is not None:
        with Image.open(out / "curves.png") as img:
            assert img.size == (1000, 400)
        assert "curves.png" in report
    assert result["metrics"] == metrics


def test_demo_ends_on_time_with_every_schedule_finished(tmp_path):
    # a budget far below what the recipe's steps need: each run stops on its share of the
    # clock (at least one second of training), its learning rate decayed to the end
    out = tmp_path / "demo"
    start = time.perf_counter()
    result = run_demo(out, budget_seconds=1.0, controls=(), overrides=TINY, progress=False)
    assert time.perf_counter() - start < 90  # 3 x (1 s + set-up + evaluation), loaded CPU
    assert result["steps"]["fcn8s"] < 240  # the steps did not bound it
    report = (out / "report.md").read_text()
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        last = read_checkpoint(out / name / "last.pt")
        assert last["optimizer"]["param_groups"][0]["lr"] == 0.0, name  # poly at its end
        assert f"{name.replace('fcn', 'FCN-')}: " in report
    assert report.count("max_minutes=") == 3


def test_demo_command_rejects_a_bad_budget(capsys):
    assert main(["demo", "--seconds", "0", "--no-progress"]) == 2
    assert "--seconds" in capsys.readouterr().err
