"""The held-out runner's table: every figure benchmarks/camvid.md quotes comes from it."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import camvid_heldout
from fcnseg.config import load_config, stage_configs


def _scores(mean_iou: float) -> dict:
    return {
        "mean_iou": mean_iou,
        "pixel_acc": 0.8,
        "boundary_iou": 0.25,
        "iou": [0.5] * 10 + [0.02],
    }


def _row(name: str, **extra) -> dict:
    return {
        "name": name, "sets": [], "steps": 877, "held_out": "0006R0",
        "val": _scores(0.576), "heldout": _scores(0.38), **extra,
    }  # fmt: skip


def test_table_prints_speed_boundary_iou_and_worst_class():
    line = camvid_heldout.table([_row("run", images_per_s=5.87)]).splitlines()[2]
    assert line == (
        "| run | 0006R0 | (recipe) | 877 | 5.9 | 57.6 | **38.0** | 80.0 | 25.0 | Bicyclist 2.0 |"
    )


def test_table_reads_speed_of_older_rows_from_their_run_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(camvid_heldout, "ROOT", tmp_path)
    (tmp_path / "old").mkdir()
    events = [
        {"event": "train", "step": s, "images_per_s": r}
        for s, r in ((10, 4.0), (20, 6.0), (30, 5.0))
    ]
    (tmp_path / "old" / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in events))
    lines = camvid_heldout.table([_row("old"), _row("gone")]).splitlines()
    assert "| 877 | 5.0 |" in lines[2]  # the median of the logged windows
    assert "| 877 | - |" in lines[3]  # no run folder left: unknown, not made up


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_staged_recipe_is_scored_on_its_last_stage_and_a_plain_one_on_its_out(tmp_path):
    staged = camvid_heldout.stage_folders(
        str(CONFIGS / "camvid_staged_lite0.yaml"), [f"out={tmp_path / 'S'}"]
    )
    assert staged == [tmp_path / "S" / name for name in ("fcn32s", "fcn16s", "fcn8s")]
    two = camvid_heldout.stage_folders(
        str(CONFIGS / "camvid_fcn8s_lite0.yaml"), [f"out={tmp_path / 'T'}"]
    )
    assert two == [tmp_path / "T" / "crops", tmp_path / "T" / "whole"]
    plain = camvid_heldout.stage_folders(
        str(CONFIGS / "scratch" / "camvid_fcn8s_resnet18.yaml"), [f"out={tmp_path / 'P'}"]
    )
    assert plain == [tmp_path / "P"]


def test_the_minutes_are_the_whole_budget_shared_by_a_staged_recipe_s_stages():
    staged = str(CONFIGS / "camvid_staged_lite0.yaml")  # its stages: 7, 6 and 7 minutes
    sets = camvid_heldout.budget_overrides(staged, ["out=runs/x"], 10.0)
    assert sets == [f"stages.{i}.train.max_minutes={m}" for i, m in enumerate((3.5, 3, 3.5))]
    minutes = [
        stage.train.max_minutes
        for _, stage in stage_configs(load_config(staged, ["train.max_minutes=20", *sets]))
    ]
    assert minutes == [3.5, 3.0, 3.5]  # not 20 each, as a top-level value alone gives
    two = str(CONFIGS / "camvid_fcn8s_lite0.yaml")  # crops 16, whole 4
    assert camvid_heldout.budget_overrides(two, [], 10.0) == [
        "stages.0.train.max_minutes=8", "stages.1.train.max_minutes=2",
    ]  # fmt: skip
    one = ["stages=null"]  # the same recipe in one stage
    assert camvid_heldout.budget_overrides(two, one, 10.0) == ["train.max_minutes=10.0"]
