import importlib.util
import json

import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.data import build_dataset, build_transforms
from fcnseg.engine import evaluate, train
from fcnseg.engine.evaluation import json_safe
from fcnseg.inference import parse_tta, tta_logits


def test_cli_eval_reproduces_evaluate_from_a_checkpoint(tiny_cfg, tmp_path, capsys):
    summary = train(tiny_cfg("model.arch=fcn32s", "train.max_steps=2"), progress=False)
    best = summary["best"]
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", best, "--out", str(out), "--no-progress"]) == 0
    assert "mean IoU" in capsys.readouterr().out
    written = json.loads((out / "metrics.json").read_text())
    assert (out / "confusion_matrix.png").is_file()
    if importlib.util.find_spec("matplotlib") is not None:  # per-class IoU bars beside it
        with Image.open(out / "iou.png") as img:
            assert img.width == 700 and img.height >= 250

    model = fcnseg.load_model(best)
    val = build_dataset(
        "shapes", split="val", size=(64, 64), length=8,
        transforms=build_transforms(train=False, preprocess=model.preprocess),
    )  # fmt: skip
    expected = json_safe(evaluate(model, val, progress=False))
    assert written == expected
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou"):
        assert 0.0 <= written[key] <= 1.0
    # the training run's own last evaluation saw the same data
    assert summary["metrics"]["mean_iou"] == pytest.approx(written["mean_iou"])


def test_evaluate_normalises_raw_images_and_pads_batches():
    model = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=7).eval()
    with torch.no_grad():
        model.score_fr.bias.copy_(torch.tensor([0.0, 1.0, 0, 0, 0, 0, 0]))  # predicts "disk"
    raw = build_dataset("shapes", split="val", size=(48, 48), length=3)
    scores = evaluate(model, raw, batch_size=2, progress=False)
    assert scores["iou"][0] == 0.0 and scores["acc"][1] == pytest.approx(1.0)
    assert set(scores) >= {"pixel_acc", "mean_acc", "mean_iou", "fw_iou", "iou", "acc",
                           "boundary_iou", "boundary_iou_per_class"}  # fmt: skip


def test_tta_logits():
    torch.manual_seed(0)
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3).eval()
    for p in (model.score_fr, model.score_pool4, model.score_pool3):
        torch.nn.init.normal_(p.weight, std=0.1)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(tta_logits(model, x), model(x))
        flipped = tta_logits(model, x, flip=True)
        probs = (model(x).softmax(1) + model(x.flip(-1)).flip(-1).softmax(1)) / 2
        assert torch.allclose(flipped.softmax(1), probs, atol=1e-5)
        multi = tta_logits(model, x, scales=(0.75, 1.0, 1.25), flip=True)
    assert multi.shape == (1, 3, 64, 80)
    assert parse_tta("flip,0.75,1.0") == ((0.75, 1.0), True)
    assert parse_tta(["flip"]) == ((1.0,), True)
    with pytest.raises(ValueError):
        parse_tta("mirror")


def test_eval_data_options_are_yaml_values_and_bad_ones_are_one_line_errors():
    from fcnseg.cli.evaluate import _parse_options

    assert _parse_options(["sequences=[0001TP]", "limit=8"]) == {
        "sequences": ["0001TP"],
        "limit": 8,
    }
    with pytest.raises(ValueError, match="must look like key=value"):
        _parse_options(["sequences"])
    with pytest.raises(ValueError, match="cannot parse the value"):
        _parse_options(["sequences=[0001TP"])
