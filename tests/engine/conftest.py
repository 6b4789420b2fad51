"""Tiny recipes for the engine tests: 64x64 shapes, ResNet-18, a handful of steps on CPU."""

from __future__ import annotations

import pytest

from fcnseg.config import load_config


@pytest.fixture
def tiny_cfg(tmp_path):
    """``tiny_cfg(*overrides)`` -> a Config training on 8 shapes images of 64x64 into tmp."""

    def make(*overrides: str):
        base = [
            "model.arch=fcn16s",
            "model.backbone=resnet18",
            "model.num_classes=7",
            "data.dataset=shapes",
            "data.options={size: [64, 64], length: 8}",
            "data.crop_size=[64, 64]",
            "data.batch_size=2",
            "data.workers=0",
            "data.scale_range=[1.0, 1.0]",
            "train.optimizer=adamw",
            "train.lr=0.001",
            "train.max_steps=3",
            "train.log_every=1",
            "train.device=cpu",
            "eval.every_steps=null",
            f"out={tmp_path / 'run'}",
        ]
        return load_config(None, [*base, *overrides])

    return make
