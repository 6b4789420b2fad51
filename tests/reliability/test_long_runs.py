"""Crash safety and long runs, with real processes: ``kill -9`` in the middle of training
loses nothing but the steps since the last checkpoint, and memory does not grow with steps."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from fcnseg.config import load_config, save_config
from fcnseg.engine.checkpoint import read_checkpoint

# A tiny recipe: 32x32 shapes, ResNet-18 FCN-32s, batch 2, a checkpoint after every step.
TINY = [
    "model.arch=fcn32s", "model.backbone=resnet18", "model.num_classes=7",
    "data.dataset=shapes", "data.options={size: [32, 32], length: 16}",
    "data.crop_size=[32, 32]", "data.batch_size=2", "data.workers=0",
    "data.hflip=true", "data.color_jitter=0.2",
    "train.optimizer=sgd", "train.lr=0.01", "train.schedule=poly", "train.seed=3",
    "train.log_every=1", "train.device=cpu", "eval.every_steps=null",
]  # fmt: skip


def train_cmd(out, *overrides, resume=False):
    # TINY over the dataclass defaults, as a recipe file (without --config the command would
    # start from the demo recipe, whose stages and time budget are not what is tested here)
    recipe = out.parent / "tiny.yaml"
    save_config(load_config(None, [*TINY, f"out={out}"]), recipe)
    sets = [a for kv in (f"out={out}", *overrides) for a in ("--set", kv)]
    return [sys.executable, "-m", "fcnseg", "train", "--config", str(recipe), *sets,
            "--no-progress"] + (["--resume"] if resume else [])  # fmt: skip


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}  # the two cores are shared with pytest


def test_kill_9_at_a_random_step_then_resume_gives_the_uninterrupted_weights(tmp_path):
    steps = 24
    full = tmp_path / "full"
    subprocess.run(train_cmd(full, f"train.max_steps={steps}"), check=True, env=env(),
                   capture_output=True)  # fmt: skip

    cut = tmp_path / "cut"
    kill_after = random.Random().randint(3, steps - 6)  # a different step on every run
    proc = subprocess.Popen(
        train_cmd(cut, f"train.max_steps={steps}", "train.checkpoint_every=1"),
        env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    log = cut / "metrics.jsonl"
    # the wait ends as soon as the step is logged; the deadline only guards a hung run (a
    # loaded 2-core machine can take minutes to import torch and reach the step)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        lines = log.read_text().splitlines() if log.exists() else []
        if any(json.loads(line).get("step", 0) >= kill_after for line in lines):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    assert time.time() < deadline, f"step {kill_after} was not reached in 10 minutes"
    proc.send_signal(signal.SIGKILL)  # no clean-up of any kind: whatever was half-written stays
    proc.wait()
    stopped_at = read_checkpoint(cut / "last.pt")["step"]  # the previous checkpoint is intact
    assert 1 <= stopped_at < steps

    subprocess.run(train_cmd(cut, f"train.max_steps={steps}", "train.checkpoint_every=1",
                             resume=True), check=True, env=env(), capture_output=True)  # fmt: skip
    a, b = read_checkpoint(full / "last.pt"), read_checkpoint(cut / "last.pt")
    assert a["step"] == b["step"] == steps
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), f"{key} (killed at {stopped_at})"
    assert not list(cut.glob(".*.tmp")), "a temporary checkpoint file was left behind"


def peak_rss_mib(out, steps):
    """Peak RSS of a whole training run of ``steps`` steps, in a fresh process."""
    code = (
        "import resource, sys; from fcnseg.cli import main; rc = main(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    cmd = train_cmd(out, f"train.max_steps={steps}", "train.log_every=1", "eval.every_steps=50")
    done = subprocess.run([sys.executable, "-c", code, *cmd[3:]], check=True, env=env(),
                          capture_output=True, text=True)  # fmt: skip
    line = [x for x in done.stdout.splitlines() if x.startswith("MAXRSS")][-1]
    return int(line.split()[1]) / 1024


@pytest.mark.slow
def test_memory_stays_flat_over_a_long_run(tmp_path):
    # 25 vs 150 steps, logging every step and evaluating every 50: growth from logs, metric
    # accumulation or held graphs would scale with the steps (6x more of them).
    short = peak_rss_mib(tmp_path / "short", 25)
    long = peak_rss_mib(tmp_path / "long", 150)
    assert long - short < 40, f"peak RSS grew from {short:.0f} to {long:.0f} MiB"
