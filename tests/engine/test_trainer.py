import hashlib
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image

import fcnseg
from fcnseg.cli import main
from fcnseg.engine import Trainer, TrainingDiverged, train
from fcnseg.engine.checkpoint import read_checkpoint


def _loss_on(trainer, images, masks):
    with torch.no_grad():
        return trainer.criterion(trainer.model(images), masks).item()


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(tiny_cfg):
    trainer = Trainer(tiny_cfg("model.arch=fcn8s", "train.max_steps=3"), progress=False)
    images, masks = map(torch.stack, zip(*[trainer.train_set[i] for i in range(4)], strict=True))
    before = _loss_on(trainer, images, masks)
    assert before == pytest.approx(math.log(7), rel=1e-4)  # zero-started score layers
    summary = trainer.fit()
    assert summary["step"] == 3
    after = _loss_on(trainer, images, masks)
    assert after < before - 0.1
    out = trainer.out
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "metrics.csv"):
        assert (out / name).is_file(), name
    if importlib.util.find_spec("matplotlib") is not None:  # the learning curves
        with Image.open(out / "curves.png") as img:
            assert img.size == (1000, 400)
    # training checkpoints load as models
    model = fcnseg.load_model(out / "best.pt")
    assert model.config["arch"] == "fcn8s"
    ckpt = read_checkpoint(out / "last.pt")
    assert ckpt["step"] == 3 and ckpt["train_config"]["model"]["arch"] == "fcn8s"
    assert {"optimizer", "scheduler", "scaler", "rng", "epoch", "metrics"} <= set(ckpt)


class _Interrupt(Exception):
    pass


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tiny_cfg, tmp_path):
    # SGD + momentum + poly with warm-up, flips and colour jitter: every piece of state counts.
    # 8 images / batch 2 = 4 steps per epoch: 6 steps cross an epoch boundary; the checkpoint
    # at step 2 is mid-epoch.
    common = (
        "train.optimizer=sgd", "train.lr=0.01", "train.schedule=poly", "train.warmup_steps=2",
        "train.max_steps=6", "train.checkpoint_every=2", "data.hflip=true",
        "data.color_jitter=0.3", "model.arch=fcn32s",
    )  # fmt: skip
    full = train(tiny_cfg(*common, f"out={tmp_path / 'full'}"), progress=False)
    assert full["step"] == 6

    def stop_at_3(trainer):
        if trainer.step == 3:
            raise _Interrupt  # killed after step 3: last.pt holds step 2

    cfg = tiny_cfg(*common, f"out={tmp_path / 'cut'}")
    with pytest.raises(_Interrupt):
        train(cfg, progress=False, callbacks=[stop_at_3])
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 2
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["step"] == 6

    a = read_checkpoint(tmp_path / "full" / "last.pt")
    b = read_checkpoint(tmp_path / "cut" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert a["epoch"] == b["epoch"] == 1


def test_resume_without_a_checkpoint_is_a_clear_error(tiny_cfg):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        Trainer(tiny_cfg(), resume=True, progress=False)


def test_nan_loss_stops_the_run_and_keeps_last_checkpoint(tiny_cfg):
    trainer = Trainer(
        tiny_cfg("model.arch=fcn32s", "train.max_steps=5", "train.checkpoint_every=1"),
        progress=False,
    )
    criterion = trainer.criterion
    trainer.criterion = lambda logits, masks: (
        criterion(logits, masks) * (math.nan if trainer.step >= 2 else 1.0)
    )
    digest = {}
    trainer.callbacks.append(
        lambda t: digest.update(last=hashlib.sha256((t.out / "last.pt").read_bytes()).hexdigest())
    )
    with pytest.raises(TrainingDiverged, match="step 3") as info:
        trainer.fit()
    assert "learning rate" in str(info.value) and "last.pt" in str(info.value)
    last = trainer.out / "last.pt"
    assert hashlib.sha256(last.read_bytes()).hexdigest() == digest["last"]
    assert read_checkpoint(last)["step"] == 2


def test_cli_train_divergence_exits_2_with_the_step(tiny_cfg, tmp_path, capsys):
    cfg_file = tmp_path / "recipe.yaml"
    from fcnseg.config import save_config

    save_config(tiny_cfg("model.arch=fcn32s"), cfg_file)
    rc = main([
        "train", "--config", str(cfg_file), "--no-progress",
        "--set", "train.optimizer=sgd", "--set", "train.lr=1e12",
        "--set", "train.loss_reduction=sum", "--set", "train.max_steps=4",
        "--set", f"out={tmp_path / 'diverge'}",  # an absolute out must be given explicitly
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2
    assert "loss is" in err and "at step" in err and "sum-reduced" in err


def test_staged_init_copies_backbone_and_score_fr(tiny_cfg, tmp_path):
    src = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=7)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    fcnseg.save_model(src, tmp_path / "fcn32s.pt")
    trainer = Trainer(
        tiny_cfg("model.arch=fcn16s", f"model.init_from={tmp_path / 'fcn32s.pt'}"), progress=False
    )
    dst = trainer.model.state_dict()
    for key, value in src.state_dict().items():
        if key.startswith(("backbone.", "score_fr.")):
            assert torch.equal(dst[key], value), key
    assert torch.count_nonzero(dst["score_pool4.weight"]) == 0  # the new skip starts at zero
    assert any(k.startswith("backbone.") for k in trainer.init_copied)


def test_num_classes_mismatch_is_a_user_error(tiny_cfg):
    with pytest.raises(ValueError, match="num_classes"):
        Trainer(tiny_cfg("model.num_classes=4"), progress=False)


def test_a_run_stopped_by_max_minutes_ends_with_a_decayed_rate_and_logs_it(tiny_cfg):
    # far more steps than the time allows: the clock stops the run and finishes the schedule
    cfg = tiny_cfg(
        "train.max_steps=100000", "train.max_minutes=0.005", "train.log_every=1000",
        "train.schedule=poly", "train.warmup_steps=0",
    )  # fmt: skip
    trainer = Trainer(cfg, progress=False)
    summary = trainer.fit()
    assert summary["stop_reason"].startswith("max_minutes") and summary["step"] >= 1
    assert trainer.optimizer.param_groups[0]["lr"] == 0.0  # (1 - 1) ** 0.9
    events = [json.loads(line) for line in (trainer.out / "metrics.jsonl").open()]
    train_events = [e for e in events if e["event"] == "train"]
    # the last (partial) logging window is written although no log_every boundary was met
    assert train_events and train_events[-1]["step"] == summary["step"]


def test_a_staged_recipe_trains_each_stage_on_its_own_data_and_leaves_its_result_at_out(
    tiny_cfg,
):
    # crops first, then whole images at another batch: the shape of a fine-tuning stage
    cfg = tiny_cfg(
        "train.max_steps=2",
        "stages=[{name: crops, data: {crop_size: [32, 32]}},"
        " {name: whole, model: {init_from: previous}, data: {batch_size: 1}}]",
    )
    train(cfg, progress=False)
    out = tiny_cfg().out
    crops, whole = (read_checkpoint(f"{out}/{name}/best.pt") for name in ("crops", "whole"))
    assert crops["train_config"]["data"]["crop_size"] == [32, 32]
    assert whole["train_config"]["data"]["crop_size"] == [64, 64]
    assert whole["train_config"]["data"]["batch_size"] == 1
    final = read_checkpoint(f"{out}/best.pt")
    for key, value in whole["model"].items():
        assert torch.equal(final["model"][key], value), key
    events = [json.loads(line) for line in open(f"{out}/metrics.jsonl")]
    assert {e["stage"] for e in events} == {"crops", "whole"}
    assert [e["step"] for e in events if e["event"] == "train" and e["stage"] == "whole"] == [1, 2]
    assert not any(k.endswith(".tmp") for k in map(str, Path(out).iterdir()))


def test_freeze_backbone_to_stride_keeps_the_first_layers_and_trains_the_rest(tiny_cfg):
    trainer = Trainer(tiny_cfg("train.freeze_backbone_to_stride=4"), progress=False)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    after = dict(trainer.model.named_parameters())
    assert "backbone.body.layer1.0.conv1.weight" in trainer.frozen
    assert all(torch.equal(before[n], after[n]) for n in trainer.frozen)
    assert not torch.equal(
        before["backbone.body.layer2.0.conv1.weight"], after["backbone.body.layer2.0.conv1.weight"]
    )
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert not any(id(after[n]) in in_optimizer for n in trainer.frozen)
    events = [json.loads(line) for line in (trainer.out / "metrics.jsonl").open()]
    freeze = next(e for e in events if e["event"] == "freeze")
    assert freeze["to_stride"] == 4 and freeze["parameters"] == len(trainer.frozen)


@pytest.mark.parametrize("stride", [0, 3])
def test_a_freeze_stride_that_cannot_be_is_refused_before_training(tiny_cfg, stride):
    with pytest.raises(ValueError, match="power of two"):
        Trainer(tiny_cfg(f"train.freeze_backbone_to_stride={stride}"), progress=False)
