"""CamVid end to end on real images (a small subset): the recipes load, a few training steps
lower the loss on a fixed batch, and evaluation on real val images gives metrics in [0, 1].

Skipped when ``shared/data/camvid`` (next to the repository) is absent."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fcnseg.config import config_to_dict, load_config
from fcnseg.engine import Trainer
from fcnseg.engine.evaluation import evaluate

REPO = Path(__file__).resolve().parents[2]
CAMVID = REPO.parent / "shared" / "data" / "camvid"
# the from-scratch ladder (configs/scratch/); the transferred one: tests/test_realtime_recipe.py
RECIPES = {
    arch: REPO / "configs" / "scratch" / f"camvid_{arch}_resnet18.yaml"
    for arch in ("fcn32s", "fcn16s", "fcn8s")
}

needs_camvid = pytest.mark.skipif(
    not (CAMVID / "classes.txt").is_file(),
    reason=f"CamVid is not at {CAMVID} (see shared/data/camvid/README.md)",
)


def test_the_three_recipes_differ_only_in_the_head_and_the_output_folder():
    dicts = {arch: config_to_dict(load_config(path)) for arch, path in RECIPES.items()}
    for arch, d in dicts.items():
        assert d["model"]["arch"] == arch
        assert d["model"]["weights_backbone"] is None  # from scratch: the offline recipe
        assert d["train"]["max_minutes"] == 20.0
        assert d["out"] == f"runs/camvid_{arch}_resnet18"
        d["model"].pop("arch")
        d.pop("out")
    assert dicts["fcn32s"] == dicts["fcn16s"] == dicts["fcn8s"]


@needs_camvid
def test_a_few_steps_on_camvid_lower_the_loss_and_evaluation_runs(tmp_path):
    cfg = load_config(
        RECIPES["fcn8s"],
        [
            f"data.root={CAMVID}",
            "data.options={limit: 8}",  # the first 8 train and 8 val pairs
            "data.crop_size=[96, 128]",
            "data.batch_size=2",
            "data.workers=0",
            "data.color_jitter=0.0",
            "train.lr=0.0003",  # reliable on 8 steps (0.003 overshoots)
            "train.warmup_steps=0",
            "train.schedule=fixed",
            "train.max_steps=8",
            "train.max_minutes=null",
            "train.log_every=1",
            "train.device=cpu",
            "eval.every_steps=null",
            "eval.tta=null",
            f"out={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    assert len(trainer.train_set) == 8 and len(trainer.val_set) == 8
    assert trainer.criterion.weight is not None  # median-frequency weights from the masks

    # a fixed batch: the centre 96x128 of 4 train images at half resolution
    images, masks = [], []
    for i in range(4):
        image, mask = trainer.train_set[i]
        image = torch.nn.functional.interpolate(image[None], scale_factor=0.5, mode="bilinear")
        mask = mask[None, None].float()
        mask = torch.nn.functional.interpolate(mask, scale_factor=0.5, mode="nearest")
        images.append(image[0, :, 42:138, 56:184])
        masks.append(mask[0, 0, 42:138, 56:184].long())
    images, masks = torch.stack(images), torch.stack(masks)

    def loss_on_fixed_batch() -> float:
        trainer.model.train()  # batch statistics: running ones lag after only 8 steps
        with torch.no_grad():
            return trainer.criterion(trainer.model(images), masks).item()

    before = loss_on_fixed_batch()
    assert before == pytest.approx(math.log(11), rel=1e-3)  # zero-started score layers
    summary = trainer.fit()
    assert summary["step"] == 8
    after = loss_on_fixed_batch()
    assert after < before - 0.1, (before, after)

    # the end-of-run evaluation ran on the 8 real val images (whole 360x480 images)
    scores = summary["metrics"]
    for key in ("pixel_acc", "mean_acc", "mean_iou", "fw_iou", "boundary_iou"):
        assert 0.0 <= scores[key] <= 1.0, key
    assert len(scores["iou"]) == 11
    image, mask = trainer.val_set[0]
    assert tuple(image.shape) == (3, 360, 480) and tuple(mask.shape) == (360, 480)
    assert int(mask.max()) <= 10 or int(mask.max()) == 255

    # a reduced-scale evaluation is scored at full label resolution (logits upsampled)
    half = evaluate(trainer.model, trainer.val_set, tta=[0.5], progress=False)
    assert 0.0 <= half["mean_iou"] <= 1.0 and 0.0 <= half["pixel_acc"] <= 1.0
