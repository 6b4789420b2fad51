"""DistributedDataParallel on the CPU (gloo, 2 processes): the run is defined by its global
batch, so 2 processes and 1 process give the same weights, the same metrics and resume into
each other; a failing rank ends the whole job.

One module-scoped fixture runs every training once (two processes spawned once, a handful of
one-process runs here) and the tests check its results. The model is FCN-16s on ResNet-18
with ``train.sync_bn=true``: with per-rank BatchNorm statistics a 2-process run is NOT the
1-process computation, with synchronised statistics it is (up to float summation order).
Random scales in [0.5, 1.5] pad the 64x64 crops with ignore pixels, a different number per
image, so the ranks hold unequal numbers of valid pixels.

The runs train in float64 (``train.dtype=float64``). Two processes sum the gradients, the
BatchNorm statistics and the loss in another order than one process, and another CPU's
kernels (AVX2 vs AVX-512) sum in another order again: in float32 that leaves differences of
~1e-5 after a few steps, which a fixed tolerance either hides bugs behind or trips over. In
float64 the same reorderings cost at most n * u relative per reduction (n <= 4 * 64 * 64 =
16384 terms, u = 2**-53 = 1.1e-16: 1.8e-12), so ``ATOL`` = 1e-9 leaves a factor of ~500 for
growth over the 4 steps, while a real fault (a per-rank mean instead of the global pixel
mean, a gradient not averaged) moves the weights by more than 1e-5.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from fcnseg.config import load_config
from fcnseg.engine import Trainer, train
from fcnseg.engine.checkpoint import read_checkpoint
from fcnseg.engine.distributed import shard_indices

WORLD = 2
BASE = [
    "model.arch=fcn16s",
    "model.backbone=resnet18",
    "model.num_classes=7",
    "data.dataset=shapes",
    "data.options={size: [64, 64], length: 9}",  # 9 train (2 batches of 4), 9 val (odd)
    "data.crop_size=[64, 64]",
    "data.batch_size=4",  # the GLOBAL batch: 2 images per rank with 2 processes
    "data.workers=0",
    "data.scale_range=[0.5, 1.5]",
    "data.hflip=true",
    "data.color_jitter=0.2",
    "train.optimizer=sgd",
    "train.lr=0.01",
    "train.momentum=0.9",
    "train.schedule=poly",
    "train.warmup_steps=1",
    "train.max_steps=4",  # two epochs
    "train.checkpoint_every=2",
    "train.log_every=1",
    "train.device=cpu",
    "train.sync_bn=true",
    "train.dtype=float64",
    "eval.every_steps=null",
]
ATOL = 1e-9  # float64 summation-order bound: see the module docstring


class _Interrupt(Exception):
    pass


def _stop_after_3(trainer: Trainer) -> None:
    if trainer.step == 3:
        raise _Interrupt  # killed after step 3: last.pt holds step 2


def _cfg(out: Path, *extra: str):
    return load_config(None, [*BASE, *extra, f"out={out}"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nan_equal(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _loss_check(trainer: Trainer, rank: int) -> dict:
    """The rank loss vs the single-process loss of the global batch, ignore pixels unevenly
    spread (rank 0's half is mostly ignore)."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 7, 8, 8, generator=g)
    masks = torch.randint(0, 7, (4, 8, 8), generator=g)
    masks[:2, :6] = 255  # rank 0's images: 75% ignore; rank 1's: none
    full = logits.clone().requires_grad_(True)
    single = trainer.criterion(full, masks)
    single.backward()
    per = 4 // WORLD
    part = logits[rank * per : (rank + 1) * per].clone().requires_grad_(True)
    loss = trainer._loss(part, masks[rank * per : (rank + 1) * per])
    (loss / WORLD).backward()  # DDP divides the summed gradients by the world size
    naive = trainer.criterion(part.detach(), masks[rank * per : (rank + 1) * per])
    torch.distributed.all_reduce(naive)
    return {
        "grad_err": float((part.grad - full.grad[rank * per : (rank + 1) * per]).abs().max()),
        "value": trainer._global_value(loss),
        "single": float(single),
        "naive_mean_of_means": float(naive) / WORLD,
    }


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), FCNSEG_DIST_TIMEOUT="120",
    )  # fmt: skip
    torch.set_num_threads(1)
    from fcnseg.engine.evaluation import evaluate_with_matrix

    root = Path(root)
    report = {}
    # 2-process uninterrupted run: the trainer joins the group from the environment.
    trainer = Trainer(_cfg(root / "two"), progress=False)
    summary = trainer.fit()
    torch.save(trainer.model.state_dict(), root / f"two_rank{rank}.pt")
    scores, cm = evaluate_with_matrix(trainer.model, trainer.val_set, progress=False)
    single, single_cm = evaluate_with_matrix(
        trainer.model, trainer.val_set, progress=False, distributed=False
    )
    report.update(
        dist_metrics=summary["metrics"], dist_scores=scores, single_scores=single,
        cm_equal=bool(torch.equal(cm.mat, single_cm.mat)), cm_total=int(cm.mat.sum()),
        loss=_loss_check(trainer, rank), world=trainer.world_size,
    )  # fmt: skip
    # 2-process run killed after step 3 (resumed by 1 process in the test).
    try:
        train(_cfg(root / "two_to_one"), progress=False, callbacks=[_stop_after_3])
    except _Interrupt:
        pass
    # 1-process run killed after step 3 (made by the test), resumed here by 2 processes.
    resumed = train(_cfg(root / "one_to_two"), resume=True, progress=False)
    report["one_to_two_step"] = resumed["step"]
    (root / f"report{rank}.json").write_text(json.dumps(report))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each spawned rank: same kernels, same summation order
    try:
        t0 = time.perf_counter()
        one = train(_cfg(root / "one"), progress=False)
        with pytest.raises(_Interrupt):
            train(_cfg(root / "one_to_two"), progress=False, callbacks=[_stop_after_3])
        mp.spawn(_worker, args=(_free_port(), str(root)), nprocs=WORLD, join=True)
        two_to_one = train(_cfg(root / "two_to_one"), resume=True, progress=False)
        elapsed = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)
    reports = [json.loads((root / f"report{r}.json").read_text()) for r in range(WORLD)]
    yield {
        "root": root, "one": one, "two_to_one": two_to_one, "reports": reports,
        "elapsed": elapsed,
    }  # fmt: skip
    shutil.rmtree(root, ignore_errors=True)  # eight ~180 MB checkpoints; free them for the rest


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def _assert_close(a: dict, b: dict, atol: float = ATOL) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)
        else:
            assert torch.equal(a[key], b[key]), key


def test_all_ranks_hold_identical_parameters(runs):
    root = runs["root"]
    assert runs["reports"][0]["world"] == WORLD
    r0 = torch.load(root / "two_rank0.pt", weights_only=True)
    r1 = torch.load(root / "two_rank1.pt", weights_only=True)
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key  # bit for bit, BN statistics included
    _assert_close(r0, _weights(root / "two" / "last.pt"), atol=0)  # rank 0 wrote them


def test_two_processes_give_the_weights_of_one_with_the_same_global_batch(runs):
    root = runs["root"]
    assert runs["one"]["step"] == 4
    one, two = _weights(root / "one" / "last.pt"), _weights(root / "two" / "last.pt")
    assert all(v.dtype == torch.float64 for v in two.values() if v.is_floating_point())
    _assert_close(one, two)
    assert read_checkpoint(root / "two" / "last.pt")["epoch"] == 2


def test_mean_loss_is_the_global_pixel_mean_with_uneven_ignore_pixels(runs):
    for report in runs["reports"]:
        loss = report["loss"]
        assert loss["grad_err"] < 1e-7
        assert loss["value"] == pytest.approx(loss["single"], rel=1e-6)
        # averaging per-rank means would be a different loss: the check can tell them apart
        assert abs(loss["naive_mean_of_means"] - loss["single"]) > 1e-3


def test_distributed_eval_equals_single_process_eval_on_an_odd_val_set(runs):
    for report in runs["reports"]:
        assert report["cm_equal"]
        assert report["cm_total"] == 9 * 64 * 64  # 9 images: none dropped, none repeated
        assert _nan_equal(report["dist_scores"], report["single_scores"])
        assert _nan_equal(report["dist_metrics"], report["single_scores"])  # the trainer's eval


def test_resume_from_two_processes_in_one(runs):
    root = runs["root"]
    assert read_checkpoint(root / "two_to_one" / "last.pt")["step"] == 4
    assert runs["two_to_one"]["step"] == 4
    _assert_close(_weights(root / "one" / "last.pt"), _weights(root / "two_to_one" / "last.pt"))


def test_resume_from_one_process_in_two(runs):
    root = runs["root"]
    assert runs["reports"][0]["one_to_two_step"] == 4
    _assert_close(_weights(root / "one" / "last.pt"), _weights(root / "one_to_two" / "last.pt"))


def test_shards_cover_every_index_once():
    for n in range(0, 8):
        for world in (1, 2, 3):
            got = sorted(i for r in range(world) for i in shard_indices(n, r, world))
            assert got == list(range(n))


def test_global_batch_must_divide_by_the_world_size(tmp_path):
    from fcnseg.engine.sampling import EpochBatches

    with pytest.raises(ValueError, match="divisible"):
        EpochBatches(9, 3, 2, seed=0, epoch=0, rank=0, world_size=2)
    halves = [list(EpochBatches(9, 4, 2, 0, 0, rank=r, world_size=2)) for r in range(2)]
    whole = list(EpochBatches(9, 4, 2, 0, 0))
    assert [a + b for a, b in zip(*halves, strict=True)] == whole


# --------------------------------------------------------------------------- failures

_SCRIPT = """
import sys, time
from fcnseg.config import load_config
from fcnseg.engine import train

mode, out = sys.argv[1], sys.argv[2]
base = {base!r}

def fault(trainer):
    if trainer.rank == 1 and trainer.step == 1:
        if mode == "raise":
            raise RuntimeError("injected failure on rank 1")
        time.sleep(600)  # a hung rank

train(load_config(None, [*base, "train.max_steps=8", "out=" + out]), progress=False,
      callbacks=[fault])
"""


def _torchrun(tmp_path: Path, mode: str, timeout_s: str) -> tuple[int, str, float]:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(_SCRIPT.format(base=BASE)))
    env = {**os.environ, "FCNSEG_DIST_TIMEOUT": timeout_s, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node=2", str(script), mode, str(tmp_path / "run"),
        ],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, time.perf_counter() - t0


def test_a_rank_that_raises_ends_the_job(tmp_path):
    rc, output, elapsed = _torchrun(tmp_path, "raise", "120")
    assert rc != 0
    assert "injected failure on rank 1" in output
    assert elapsed < 120  # torchrun's agent ended rank 0 at once: no wait for the timeout


def test_a_rank_that_hangs_fails_the_job_within_the_timeout(tmp_path):
    rc, output, elapsed = _torchrun(tmp_path, "hang", "5")
    assert rc != 0
    assert "timed out" in output.lower() or "timeout" in output.lower(), output[-3000:]
    assert elapsed < 90


def test_cli_nproc_launches_torchrun_and_rank0_writes_once(tmp_path):
    from fcnseg.config import save_config

    recipe = tmp_path / "recipe.yaml"
    save_config(_cfg(tmp_path / "run", "train.max_steps=2", "train.checkpoint_every=null"), recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable, "-m", "fcnseg", "train", "--nproc", "2", "--config", str(recipe),
            "--no-progress", "--set", f"out={tmp_path / 'run'}",
        ],
        capture_output=True, text=True, env=env, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: step 2") == 1  # rank 0 only
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["train_config"]["train"]["sync_bn"] is True
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["event"] == "train" for line in lines) == 2  # not twice


def test_dist_timeout_reads_the_environment(monkeypatch):
    from fcnseg.engine.distributed import dist_timeout

    monkeypatch.delenv("FCNSEG_DIST_TIMEOUT", raising=False)
    assert dist_timeout().total_seconds() == 600
    monkeypatch.setenv("FCNSEG_DIST_TIMEOUT", "7.5")
    assert dist_timeout().total_seconds() == 7.5
    for bad in ("0", "soon"):
        monkeypatch.setenv("FCNSEG_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="FCNSEG_DIST_TIMEOUT"):
            dist_timeout()


def test_sync_bn_conversion_shares_parameters_and_keeps_the_state_dict():
    import fcnseg
    from fcnseg.engine.distributed import SyncBatchNorm2d, convert_sync_batchnorm

    model = fcnseg.build_model("fcn32s", backbone="resnet18", num_classes=3)
    params = dict(model.named_parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 32, 32)
    expected = model.train()(x)
    model.load_state_dict(before)  # undo the running-statistics update
    convert_sync_batchnorm(model, "cpu")
    assert any(isinstance(m, SyncBatchNorm2d) for m in model.modules())
    assert not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    assert model.state_dict().keys() == before.keys()
    assert all(p is params[k] for k, p in model.named_parameters())  # optimiser stays valid
    torch.testing.assert_close(model.train()(x), expected)  # no process group: plain BN
