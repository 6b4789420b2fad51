"""The real-time CamVid recipe: MobileNetV3-Large FCN-8s with global context loads and builds."""

from pathlib import Path

import torch
import yaml

import fcnseg
from fcnseg.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_realtime_recipe_loads_builds_and_runs():
    path = CONFIGS / "camvid_realtime.yaml"
    cfg = load_config(path)
    m = cfg.model
    assert (m.arch, m.backbone, m.context, m.num_classes) == (
        "fcn8s", "mobilenet_v3_large", "global", 11,
    )  # fmt: skip
    assert cfg.data.root == "../shared/data/camvid" and cfg.train.max_minutes == 20.0
    # the same keys as the ResNet-18 recipe, section by section (plus model.context)
    ours = yaml.safe_load(path.read_text())
    base = yaml.safe_load((CONFIGS / "camvid_fcn8s_resnet18.yaml").read_text())
    for section in ("data", "train", "eval"):
        assert set(ours[section]) == set(base[section]), section
    assert set(ours["model"]) == set(base["model"]) | {"context"}

    model = fcnseg.build_model(
        m.arch,
        backbone=m.backbone,
        num_classes=m.num_classes,
        pad100=m.pad100,
        weights_backbone=m.weights_backbone,
        learnable_upsampling=m.learnable_upsampling,
        context=m.context,
    ).eval()
    assert model.context is not None
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 61)).shape == (1, 11, 45, 61)
