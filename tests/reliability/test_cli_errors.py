"""The command line reports bad input in one line with exit code 2; ``--debug`` shows why.

``fcnseg check-data`` on the bad folder of test_bad_data; ``fcnseg train`` on recipes with an
unknown key, a wrong type, or an ``out`` that escapes the working folder.
"""

from __future__ import annotations

import re

import pytest

from fcnseg.cli import main
from fcnseg.config import ConfigError
from tests.reliability.test_bad_data import (
    good_labels,
    make_bad_folder,
    make_clean_folder,
    write_mask,
)


def check_data(root, *extra: str) -> list[str]:
    return ["check-data", "--dataset", "folder", "--root", str(root), "--no-progress", *extra]


def test_check_data_lists_each_problem_with_counts_and_exits_2(tmp_path, capsys):
    root = tmp_path / "data"
    about = make_bad_folder(root)
    assert main(check_data(root, "--split", "train,val")) == 2
    out = capsys.readouterr().out
    for kind, count in [
        ("unreadable image", 2),
        ("missing mask", 1),
        ("colour mask", 1),
        ("size mismatch", 1),
        ("bad label values", 1),
        ("empty split", 1),
    ]:
        assert re.search(rf"^{kind}\s+{count}$", out, re.MULTILINE), (kind, out)
    assert re.search(r"^train\s+6$", out, re.MULTILINE) and re.search(r"^val\s+0$", out, re.M)
    for path in about.values():
        assert f"  {path}: " in out  # one "file: problem" line per bad file
    assert "7 problems in 6 pairs:" in out


def test_check_data_clean_exits_0(tmp_path, capsys):
    root = make_clean_folder(tmp_path / "clean", splits=("train", "val"))
    assert main(check_data(root)) == 0
    out = capsys.readouterr().out
    assert "no problems in 4 pairs" in out and re.search(r"^total\s+4$", out, re.MULTILINE)


def test_check_data_prints_at_most_20_problem_lines(tmp_path, capsys):
    root = make_clean_folder(tmp_path / "data", n=1)
    for i in range(25):
        (root / "train" / "images" / f"junk{i:02d}.png").write_text("junk")
        write_mask(root / "train" / "masks" / f"junk{i:02d}.png", good_labels())
    assert main(check_data(root, "--split", "train")) == 2
    out = capsys.readouterr().out
    assert "25 problems in 26 pairs (first 20 shown):" in out
    assert len(re.findall(r"^  .*junk\d\d\.png: ", out, re.MULTILINE)) == 20


def test_check_data_on_a_missing_dataset_is_a_problem_not_a_traceback(tmp_path, capsys):
    assert main(check_data(tmp_path / "nowhere", "--split", "train")) == 2
    captured = capsys.readouterr()
    assert "unusable split" in captured.out and "classes.txt" in captured.out
    assert "Traceback" not in captured.out + captured.err


def test_check_data_user_error_is_one_line_and_debug_raises(tmp_path, capsys):
    root = make_clean_folder(tmp_path / "data")
    assert main(check_data(root, "--split", ",")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fcnseg check-data: error: ")
    with pytest.raises(ValueError, match="names no split"):
        main([*check_data(root, "--split", ","), "--debug"])


# --------------------------------------------------------------------------- recipes


def write_recipe(tmp_path, text: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "recipe, message",
    [
        ("train: {lrr: 0.1}\n", "unknown key 'train.lrr' (allowed: optimizer, lr,"),
        ("train: {lr: abc}\n", "train.lr: expected float, got 'abc'"),
        ("data: {batch_size: [8]}\n", "data.batch_size: expected int, got [8]"),
        ("out: ../outside\n", "out: '../outside' has a '..' component"),
        ("out: /tmp/elsewhere\n", "out: '/tmp/elsewhere' is absolute"),
        ("data: {max_image_pixels: 0}\n", "data.max_image_pixels: expected a positive int"),
        ("model: {arch: fcn8s\ntrain: {}\n", "recipe.yaml: not valid YAML (line 2, column"),
    ],
)
def test_train_bad_recipe_is_one_line_exit_2_and_debug_shows_the_traceback(
    tmp_path, capsys, recipe, message
):
    path = write_recipe(tmp_path, recipe)
    assert main(["train", "--config", path]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"fcnseg train: error: {captured.err.split('error: ', 1)[1]}"
    assert message in captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    with pytest.raises(ConfigError, match=re.escape(message)):
        main(["train", "--debug", "--config", path])


def test_train_missing_recipe_file_is_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_dataset_options_meant_for_another_dataset_are_one_line(tmp_path, capsys):
    from tests.reliability.test_bad_data import make_clean_folder

    root = make_clean_folder(tmp_path / "data", splits=("train", "val"))
    path = write_recipe(tmp_path, "data: {dataset: shapes, options: {size: [32, 32]}}\n")
    argv = ["train", "--config", path, "--set", "data.dataset=folder", "--set", f"data.root={root}"]
    assert main([*argv, "--set", f"out={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "dataset 'folder' takes no option 'size' (its options: void_values, palette" in err


def test_train_without_a_recipe_trains_the_embedded_demo_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--no-progress", "--set", "train.max_steps=1", "--set", f"out={out}"]
    assert main(argv) == 0, capsys.readouterr().err
    from fcnseg.engine.checkpoint import read_checkpoint
    from fcnseg.engine.demo import DEMO_RECIPE

    names = [s["name"] for s in DEMO_RECIPE["stages"]]
    for name in names:  # --set train.max_steps wins over each stage's own max_steps
        assert read_checkpoint(out / name / "last.pt")["step"] == 1, name


def test_a_missing_optional_package_names_the_extra(tmp_path, capsys, monkeypatch):
    import sys

    import fcnseg

    ckpt = tmp_path / "m.pt"
    fcnseg.save_model(fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=2), ckpt)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if the export extra were absent
    argv = ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "needs the optional package 'onnx': pip install 'fcnseg[export]'" in err


def test_every_command_parses_without_the_optional_packages(monkeypatch, capsys):
    import sys

    from fcnseg.cli import COMMANDS, build_parser

    for name in ("fastapi", "uvicorn", "multipart", "matplotlib", "onnx", "onnxruntime", "timm"):
        monkeypatch.setitem(sys.modules, name, None)  # as on a plain `pip install fcnseg`
    for name in [k for k in sys.modules if k.startswith(("fcnseg.serve", "fcnseg.cli."))]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh, without the extras
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as done:
            parser.parse_args([command, "--help"])
        assert done.value.code == 0, command
    ckpt_missing = ["serve", "--checkpoint", "nowhere.pt"]
    assert main(ckpt_missing) == 2  # a one-line error, whichever comes first
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fcnseg serve: error: ")
