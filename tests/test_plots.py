"""fcnseg.plots (matplotlib charts) and the ``fcnseg plot`` command."""

from __future__ import annotations

import builtins
import json

import pytest
from PIL import Image

from fcnseg.cli import main
from fcnseg.plots import (
    MatplotlibMissing,
    find_runs,
    iou_bar_chart,
    learning_curves,
    read_run_log,
    require_matplotlib,
)

pytest.importorskip("matplotlib")


def _write_log(folder, steps, miou, torn=False):
    folder.mkdir(parents=True)
    lines = [{"event": "init", "step": 0}]
    lines += [{"event": "train", "step": s, "loss": 2.0 / s, "lr": 0.1} for s in steps]
    lines.append({"event": "eval", "step": steps[-1], "mean_iou": miou, "boundary_iou": miou / 2})
    text = "".join(json.dumps(r) + "\n" for r in lines)
    (folder / "metrics.jsonl").write_text(text + ('{"event": "tra' if torn else ""))
    (folder / "config.yaml").write_text("{}\n")
    return folder


def test_read_run_log_keeps_train_and_eval_and_skips_a_torn_line(tmp_path):
    run = _write_log(tmp_path / "run", [10, 20], 0.5, torn=True)
    log = read_run_log(run)
    assert [r["step"] for r in log["train"]] == [10, 20]
    assert [r["mean_iou"] for r in log["eval"]] == [0.5]
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        read_run_log(tmp_path)


def test_learning_curves_of_a_staged_folder_is_one_line_per_stage(tmp_path):
    import os

    root = tmp_path / "staged"
    for i, name in enumerate(("fcn32s", "fcn16s", "fcn8s")):
        run = _write_log(root / name, [10, 20, 30], 0.3 + 0.2 * i)
        os.utime(run / "config.yaml", (1000 + i, 1000 + i))  # the order the stages ran in
    assert list(find_runs(root)) == ["fcn32s", "fcn16s", "fcn8s"]
    out = learning_curves(root, tmp_path / "curves.png")
    with Image.open(out) as img:
        assert img.size == (1000, 400)
    with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
        find_runs(tmp_path / "staged" / "nothing")


def test_iou_bar_chart_size_follows_the_classes(tmp_path):
    few = iou_bar_chart([0.9, None, 0.5], ["a", "b", "c"], tmp_path / "few.png", mean_iou=0.7)
    many = iou_bar_chart([0.5] * 20, [f"c{i}" for i in range(20)], tmp_path / "many.png")
    with Image.open(few) as a, Image.open(many) as b:
        assert a.width == b.width == 700
        assert b.height > a.height >= 250
    with pytest.raises(ValueError, match="3 IoU values for 2"):
        iou_bar_chart([0.1, 0.2, 0.3], ["a", "b"], tmp_path / "x.png")


def test_plot_command_one_folder_several_and_errors(tmp_path, capsys):
    a = _write_log(tmp_path / "a", [5, 10], 0.4)
    b = _write_log(tmp_path / "b", [5, 10], 0.6)
    assert main(["plot", str(a)]) == 0
    assert (a / "curves.png").is_file()
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "ab.png")]) == 0
    with Image.open(tmp_path / "ab.png") as img:
        assert img.size == (1000, 400)
    assert main(["plot", str(a), str(b)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_without_matplotlib_plot_fails_in_one_line(tmp_path, monkeypatch, capsys):
    run = _write_log(tmp_path / "run", [5], 0.4)
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(MatplotlibMissing, match=r"fcnseg\[plots\]"):
        require_matplotlib()
    assert main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install" in err[0]


def test_a_staged_run_is_plotted_stage_by_stage_not_from_its_joined_log(tmp_path):
    from fcnseg.engine.run_log import join_stage_logs

    staged = tmp_path / "staged"
    crops = _write_log(staged / "crops", [5, 10], 0.4, torn=True)
    whole = _write_log(staged / "whole", [5], 0.5)
    joined = join_stage_logs({"crops": crops, "whole": whole}, staged)
    events = [json.loads(line) for line in joined.read_text().splitlines()]
    assert [(e["stage"], e["step"]) for e in events if e["event"] == "train"] == [
        ("crops", 5), ("crops", 10), ("whole", 5),
    ]  # fmt: skip
    assert find_runs(staged) == {"crops": crops, "whole": whole}
    assert find_runs(crops) == {"crops": crops}
