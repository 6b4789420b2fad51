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
