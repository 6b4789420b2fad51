"""Training under the precision policy: bf16 runs, is recorded, and resumes across precisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fcnseg.accel.precision import cpu_isa
from fcnseg.engine import train
from fcnseg.engine.checkpoint import read_checkpoint


def test_bf16_training_runs_records_its_precision_and_resumes_across_precisions(tiny_cfg):
    cfg = tiny_cfg("train.precision=bf16", "train.max_steps=2")
    summary = train(cfg, progress=False)
    ckpt = read_checkpoint(summary["last"])
    assert ckpt["config"]["trained_precision"]["precision"] == "bf16"
    assert ckpt["config"]["trained_precision"]["cpu_isa"] == cpu_isa()
    assert all(v.dtype != torch.bfloat16 for v in ckpt["model"].values())  # fp32 master weights
    lines = (Path(summary["out"]) / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert {r["precision"] for r in logged if r["event"] == "train"} == {"bf16"}
    # the same run continued in fp32: a bf16 checkpoint is an ordinary fp32 one
    cfg = tiny_cfg("train.precision=fp32", "train.max_steps=4")
    resumed = train(cfg, resume=True, progress=False)
    assert resumed["step"] == 4
    assert read_checkpoint(resumed["last"])["config"]["trained_precision"]["precision"] == "fp32"


def test_the_deprecated_amp_key_means_what_it_meant(tiny_cfg):
    from fcnseg.config import ConfigError, training_precision

    assert training_precision(tiny_cfg("train.amp=bf16").train) == "bf16"
    assert training_precision(tiny_cfg("train.amp=true").train) == "fp16"
    assert training_precision(tiny_cfg().train) == "fp32"
    with pytest.raises(ConfigError, match="set one"):
        training_precision(tiny_cfg("train.amp=fp16", "train.precision=bf16").train)


@pytest.mark.parametrize("faster", ["fp32", "bf16"])
def test_auto_on_bf16_hardware_keeps_the_precision_the_first_batch_runs_faster(
    tiny_cfg, monkeypatch, faster
):
    import fcnseg.accel.precision as policy
    import fcnseg.engine.trainer as trainer_module

    monkeypatch.setattr(policy, "cpu_has_bf16", lambda: True)  # any CPU: bf16 is native here

    def timed(cases, rounds, device):  # each case runs (as measured), the clock is ours
        for run in cases.values():
            run()
        return {p: {"ms": 10.0 if p == faster else 20.0} for p in cases}

    monkeypatch.setattr(trainer_module, "time_interleaved", timed)
    trainer = trainer_module.Trainer(tiny_cfg("train.precision=auto", "train.max_steps=1"))
    assert trainer.precision == "bf16" and trainer._auto_pending
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    images, masks = next(iter(trainer._loader()))
    trainer.model.train()
    timings = trainer._choose_precision(images, masks)
    assert timings == {
        "fp32": 10.0 if faster == "fp32" else 20.0,
        "bf16": 10.0 if faster == "bf16" else 20.0,
    }
    assert trainer.precision == faster and not trainer._auto_pending
    assert trainer.model.config["trained_precision"]["precision"] == faster
    # the trial left the model as it was: weights, BatchNorm statistics, no gradients
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in trainer.model.parameters())


def test_an_auto_run_logs_its_choice_and_trains_in_it(tiny_cfg, monkeypatch):
    import fcnseg.accel.precision as policy
    import fcnseg.engine.trainer as trainer_module

    monkeypatch.setattr(policy, "cpu_has_bf16", lambda: True)

    def timed(cases, rounds, device):
        return {p: {"ms": 5.0 if p == "fp32" else 9.0} for p in cases}

    monkeypatch.setattr(trainer_module, "time_interleaved", timed)
    summary = train(tiny_cfg("train.precision=auto", "train.max_steps=2"), progress=False)
    lines = (Path(summary["out"]) / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    auto = [r for r in logged if r["event"] == "auto_precision"]
    assert len(auto) == 1 and auto[0]["chosen"] == "fp32" and auto[0]["ms"]["bf16"] == 9.0
    assert {r["precision"] for r in logged if r["event"] == "train"} == {"fp32"}
    assert read_checkpoint(summary["last"])["config"]["trained_precision"]["precision"] == "fp32"
