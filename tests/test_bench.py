"""Smoke test of the benchmark harness: it runs on a tiny model and reports its figures.

No timing assertions: benchmarks are not tests (see benchmarks/README.md)."""

from __future__ import annotations

import json

import torch
from torch import nn

from benchmarks.harness import bench_confusion_matrix, format_table, run_benchmark
from fcnseg.accel.optimize import optimize_for_inference
from fcnseg.config import parse_size


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))


def test_run_benchmark_reports_the_figures():
    r = run_benchmark(
        module=_tiny(), size="16x24", batch=2, num_classes=3, train=True, warmup=0, repeat=2
    )
    for key in (
        "params",
        "gflops",
        "latency_ms",
        "latency_ms_min",
        "images_per_s",
        "achieved_gflops_per_s",
        "gemm_peak_gflops",
        "peak_fraction",
        "train_step_ms",
        "train_images_per_s",
        "peak_rss_mib",
        "machine",
    ):
        assert key in r, key
    assert r["params"] == 3 * 4 * 9 + 4 + 4 * 3 + 3
    assert r["gflops"] > 0 and r["latency_ms"] > 0 and r["peak_rss_mib"] > 0
    assert "latency" in format_table([r, r]).splitlines()[-2]  # the ratio table


def test_parse_size_and_confusion_matrix_bench():
    assert parse_size("360x480") == (360, 480) and parse_size("64") == (64, 64)
    assert bench_confusion_matrix(num_classes=3, shape=(1, 8, 8), repeat=1)["mpixels_per_s"] > 0


def test_optimize_for_inference_keeps_outputs():
    net = _tiny().eval()
    x = torch.randn(1, 3, 16, 16)
    small = x[:, :, :8]
    with torch.no_grad():
        ref, ref_small = net(x), net(small)
    fast = optimize_for_inference(net, freeze=True, example=x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast(small), ref_small, rtol=1e-4, atol=1e-5)  # eager fallback


def test_bench_cli_builds_the_context_head_it_is_asked_for(tmp_path):
    # fcnseg bench --context: the row is the model with that head (its name, its parameters),
    # so a context head's cost is timed the way users time the plain FCN
    from fcnseg.cli import main

    rows = {}
    for context in ("none", "pyramid"):
        path = tmp_path / f"{context}.json"
        argv = ["bench", "--backbone", "resnet18", "--num-classes", "3", "--size", "64x64"]
        argv += ["--context", context, "--warmup", "0", "--repeat", "1", "--json", str(path)]
        assert main(argv) == 0
        rows[context] = json.loads(path.read_text())[0]
    assert rows["none"]["name"] == "fcnseg-fcn8s-resnet18" and rows["none"]["context"] is None
    assert rows["pyramid"]["name"] == "fcnseg-fcn8s-resnet18-pyramid"
    # PSP: four 1x1 convs 512 -> 128 (with bias); score_fr takes 1024 inputs instead of 512
    extra = 4 * (512 * 128 + 128) + 512 * 3
    assert rows["pyramid"]["params"] - rows["none"]["params"] == extra
