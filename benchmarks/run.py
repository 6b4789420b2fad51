"""The comparison suite: ``python -m benchmarks.run --suite cpu|gpu|quick|int8``.

(``--suite int8``: float32 PyTorch, float32 ONNX Runtime and int8 side by side, in
``benchmarks/runtimes.py``.)

Measures fcnseg against its peers (torchfcn, torchvision fcn_resnet50) in one run, on one
machine, checks the figures against the targets of issue 6, prints the tables and writes
``benchmarks/results/<suite>-<date>.json`` and ``.md``.

Every model configuration runs in a fresh process (``run_benchmark(..., isolate=True)``) so
its peak RSS is its own; each of those processes also measures the GEMM peak, so a figure is
always compared with the throughput the machine had at that moment.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import (
    bench_confusion_matrix,
    bench_data_loading,
    bench_onnxruntime,
    format_table,
    gemm_kernels,
    gemm_peak,
    machine_info,
    make_train_step,
    memory_mapped_copy,
    run_benchmark,
    time_interleaved,
)
from benchmarks.peers import build_peer
from fcnseg.accel.optimize import optimize_for_inference
from fcnseg.accel.precision import precision_autocast, resolve_precision
from fcnseg.models import build_model

RESULTS = Path(__file__).resolve().parent / "results"
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "scratch" / "camvid_fcn8s_resnet18.yaml"

# suite -> sizes and repeats (quick: a minute-long sanity run of the whole pipeline)
SUITES: dict[str, dict[str, Any]] = {
    "cpu": dict(device="cpu", size=(500, 500), train=(2, 360, 480), rt=(360, 480), repeat=5,
                train_repeat=3, rt_repeat=20, precision="fp32"),
    "gpu": dict(device="cuda", size=(500, 500), train=(2, 360, 480), rt=(360, 480), repeat=50,
                train_repeat=20, rt_repeat=200, precision="fp32"),
    "quick": dict(device="cpu", size=(128, 128), train=(1, 96, 128), rt=(96, 128), repeat=2,
                  train_repeat=1, rt_repeat=3, precision="fp32"),
}  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def inference_block(s: dict) -> list[dict]:
    """FCN-8s VGG16 at 500x500: fcnseg default / optimized / pad100 vs torchfcn and torchvision."""
    common = dict(
        size=s["size"],
        batch=1,
        device=s["device"],
        precision=s["precision"],
        repeat=2,  # latency comes from the interleaved pass below
        isolate=True,
    )
    configs = [
        ("fcnseg fcn8s vgg16", dict(backbone="vgg16")),
        # the oneDNN candidate alone (what the automatic choice picks, see the interleaved
        # pass): building every candidate would leave their memory in this process's RSS
        ("fcnseg fcn8s vgg16 optimized", dict(backbone="vgg16", optimize="onednn")),
        ("fcnseg fcn8s vgg16 pad100", dict(backbone="vgg16", pad100=True)),
        # weights memory-mapped from a saved checkpoint and streamed (the low-memory mode)
        ("fcnseg fcn8s vgg16 low-memory", dict(backbone="vgg16", optimize="onednn_streamed")),
        (
            "fcnseg fcn8s vgg16 pad100 optimized",
            dict(backbone="vgg16", pad100=True, optimize="onednn"),
        ),
        ("torchfcn FCN8s", dict(peer="torchfcn-fcn8s")),
        ("torchvision fcn_resnet50", dict(peer="tv-fcn_resnet50")),
    ]
    rows = []
    for label, kw in configs:
        log(f"inference (isolated, for RSS and FLOPs): {label}")
        rows.append(run_benchmark("fcn8s", **kw, **common))
    log("inference latency, all configurations interleaved")
    h, w = s["size"]
    x = torch.randn(1, 3, h, w, device=s["device"])
    nets = {
        "fcnseg-fcn8s-vgg16": build_model("fcn8s"),
        "fcnseg-fcn8s-vgg16-opt": build_model("fcn8s"),
        "fcnseg-fcn8s-vgg16-pad100": build_model("fcn8s", pad100=True),
        "fcnseg-fcn8s-vgg16-pad100-opt": build_model("fcn8s", pad100=True),
        "torchfcn-fcn8s": build_peer("torchfcn-fcn8s"),
        "tv-fcn_resnet50": build_peer("tv-fcn_resnet50"),
    }
    nets = {k: v.eval().to(s["device"]) for k, v in nets.items()}
    tmp = tempfile.TemporaryDirectory(prefix="fcnseg-bench-")
    nets["fcnseg-fcn8s-vgg16-lowmem"] = optimize_for_inference(
        memory_mapped_copy(build_model("fcn8s"), tmp.name), candidate="onednn_streamed"
    )
    for name in ("fcnseg-fcn8s-vgg16-opt", "fcnseg-fcn8s-vgg16-pad100-opt"):
        nets[name] = optimize_for_inference(nets[name], example=x)
        for r in rows:
            if r["name"] == name:
                r["optimize_choice_interleaved"] = nets[name].choice
                r["optimize_candidates_ms"] = nets[name].timings_ms
    _interleave(rows, nets, x, s["repeat"], s["device"], s["precision"])
    tmp.cleanup()
    return rows


def _interleave(
    rows: list[dict], nets: dict, x: torch.Tensor, rounds: int, device: str, precision: str
) -> None:
    """Re-time ``rows``' models in alternation and put those latencies in the rows (the
    isolated figures are kept as ``isolated_latency_ms``)."""

    resolved = resolve_precision(precision, device)

    def case(net):
        def fn():
            with torch.inference_mode(), precision_autocast(resolved, device):
                net(x)

        return fn

    n = 2048  # the machine's GEMM throughput, timed in the same rounds as the models
    gemms = {f"gemm {k}": fn for k, fn in gemm_kernels(device, resolved, n).items()}
    cases = {k: case(v) for k, v in nets.items()} | gemms
    timed = time_interleaved(cases, rounds, 1, device)
    rates = {k: 2 * n**3 / (timed[k]["ms"] / 1e3) / 1e9 for k in gemms}
    gemm = max(rates.values())
    for r in rows:
        if r["name"] not in timed:
            continue
        t = timed[r["name"]]
        r["isolated_latency_ms"] = r.get("latency_ms")
        r.update(latency_ms=t["ms"], latency_ms_min=t["ms_min"], timing="interleaved")
        r["images_per_s"] = r["batch"] / (t["ms"] / 1e3)
        if r.get("gflops"):
            r["achieved_gflops_per_s"] = r["gflops"] / (t["ms"] / 1e3)
            r["isolated_gemm_peak_gflops"] = r.get("gemm_peak_gflops")
            r["gemm_peak_gflops"] = gemm
            r["peak_fraction"] = r["achieved_gflops_per_s"] / gemm
            r["gemm_kernels_gflops"] = rates


def training_block(s: dict) -> list[dict]:
    """Training step (forward + backward + SGD), FCN-8s VGG16, N x 360 x 480."""
    n, h, w = s["train"]
    common = dict(
        size=(h, w),
        batch=n,
        device=s["device"],
        precision=s["precision"],
        train=True,
        inference=False,
        train_repeat=1,  # step time comes from the interleaved pass below
        peak=False,
        isolate=True,
    )
    rows = []
    for label, kw in [("fcnseg fcn8s vgg16", {}), ("torchfcn FCN8s", dict(peer="torchfcn-fcn8s"))]:
        log(f"training step: {label}")
        rows.append(run_benchmark("fcn8s", backbone="vgg16", **kw, **common))
    log("training steps, interleaved")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, h, w, generator=gen).to(s["device"])
    target = torch.randint(0, 21, (n, h, w), generator=gen).to(s["device"])
    nets = {
        "fcnseg-fcn8s-vgg16": build_model("fcn8s"),
        "torchfcn-fcn8s": build_peer("torchfcn-fcn8s"),
    }
    steps = {
        k: make_train_step(v.to(s["device"]), x, target, s["precision"]) for k, v in nets.items()
    }
    timed = time_interleaved(steps, s["train_repeat"], 1, s["device"])
    for r in rows:
        t = timed[r["name"]]
        r["isolated_train_step_ms"] = r["train_step_ms"]
        r.update(train_step_ms=t["ms"], train_step_ms_min=t["ms_min"], timing="interleaved")
        r["train_images_per_s"] = n / (t["ms"] / 1e3)
    return rows


def pad100_parity(s: dict) -> dict:
    """torchfcn FCN8s weights (randomised, score layers included) loaded into
    ``build_model("fcn8s", pad100=True, weights=file)``: the max abs difference of the logits."""
    log("pad100 parity with torchfcn")
    torch.manual_seed(0)
    ref = build_peer("torchfcn-fcn8s")
    with torch.no_grad():  # torchfcn zeroes every convolution at init: randomise them all
        for m in ref.modules():
            if type(m) is torch.nn.Conv2d:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                torch.nn.init.normal_(m.bias, std=0.01)
    h, w = s["size"]
    x = torch.randn(1, 3, h, w)
    from fcnseg.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "torchfcn_fcn8s.pth"
        torch.save(ref.state_dict(), path)
        ours = build_model("fcn8s", pad100=True, weights=str(path)).eval()
    with torch.inference_mode():
        a, b = ref(x), ours(x)
    return {
        "name": "pad100 parity",
        "size": [h, w],
        "shape_equal": a.shape == b.shape,
        "max_abs_diff": (a - b).abs().max().item(),
        "max_abs_logit": a.abs().max().item(),
        "max_rel_diff": ((a - b).abs().max() / a.abs().max()).item(),
    }


def realtime_block(s: dict) -> list[dict]:
    """FCN-8s MobileNetV3-Large, batch 1: eager, optimized (channels_last, + freeze), ONNX RT."""
    h, w = s["rt"]
    common = dict(
        backbone="mobilenet_v3_large",
        size=(h, w),
        batch=1,
        device=s["device"],
        precision=s["precision"],
        repeat=s["rt_repeat"],
        warmup=3,
        isolate=True,
    )
    rows = []
    for label, kw in [
        ("eager", {}),
        ("optimized", dict(optimize=True)),
    ]:
        log(f"real-time mobilenet: {label}")
        rows.append(run_benchmark("fcn8s", **kw, **common))
    if s["device"] == "cpu":
        log("real-time mobilenet: onnxruntime")
        from fcnseg.models import build_model

        torch.manual_seed(0)
        net = build_model("fcn8s", backbone="mobilenet_v3_large").eval()
        try:
            rows.append(bench_onnxruntime(net, (h, w), repeat=s["rt_repeat"], warmup=3))
        except ModuleNotFoundError as e:
            rows.append({"name": "onnxruntime-cpu", "error": str(e)})
    return rows


def data_block(s: dict) -> dict:
    """CamVid decode + augment with the resnet18 recipe's transforms and workers, vs that
    recipe's training images/s (model at its crop size and batch)."""
    from fcnseg.config import load_config
    from fcnseg.data import build_dataset, build_transforms, pad_collate
    from fcnseg.data.transforms import DEFAULT_PREPROCESS

    cfg = load_config(RECIPE)
    d, m = cfg.data, cfg.model
    root = CAMVID if CAMVID.is_dir() else Path(d.root)
    ds = build_dataset(d.dataset, root, d.train_split, **dict(d.options))
    ds.transforms = build_transforms(
        train=True,
        crop_size=tuple(d.crop_size),
        scale_range=tuple(d.scale_range),
        hflip=d.hflip,
        color_jitter=d.color_jitter,
        preprocess=DEFAULT_PREPROCESS,
        ignore_index=ds.ignore_index,
        base_size=d.base_size,
    )
    quick = s is SUITES["quick"]
    log(f"data loading: camvid, batch {d.batch_size}, {d.workers} workers")
    loading = bench_data_loading(
        ds,
        d.batch_size,
        d.workers,
        batches=4 if quick else 20,
        collate_fn=functools.partial(pad_collate, ignore_index=ds.ignore_index),
    )
    h, w = (96, 128) if quick else tuple(d.crop_size)
    log(f"data loading: {m.arch}/{m.backbone} training step at {d.batch_size}x{h}x{w}")
    train = run_benchmark(
        m.arch,
        backbone=m.backbone,
        num_classes=m.num_classes,
        size=(h, w),
        batch=d.batch_size,
        device=s["device"],
        train=True,
        inference=False,
        peak=False,
        train_repeat=1 if quick else 3,
        isolate=True,
    )
    return {
        "name": "data loading vs training",
        "recipe": str(RECIPE.name),
        "loading": loading,
        "training": train,
        "ratio": loading["images_per_s"] / train["train_images_per_s"],
    }


def upsampling_share(s: dict) -> dict:
    """Share of the FCN-8s VGG16 forward spent in the head's upsampling path (profiler)."""
    from fcnseg.models import build_model

    log("upsampling share (profiler)")
    h, w = s["size"]
    net = build_model("fcn8s").eval()
    x = torch.randn(1, 3, h, w)
    with torch.inference_mode():
        net(x)
        with torch.profiler.profile() as prof:
            net(x)
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    ups = sum(
        e.self_cpu_time_total
        for e in prof.key_averages()
        if e.key in ("aten::slow_conv_transpose2d", "aten::replication_pad2d")
        or "transpose" in e.key
    )
    # the deconvolutions are dispatched through aten::_convolution (self time, not mkldnn)
    conv_self = sum(
        e.self_cpu_time_total for e in prof.key_averages() if e.key == "aten::_convolution"
    )
    return {
        "name": "upsampling share",
        "total_ms": total / 1e3,
        "deconv_and_pad_ms": (ups + conv_self) / 1e3,
        "share": (ups + conv_self) / total if total else None,
    }


def check_targets(res: dict) -> list[dict]:
    """Issue 6's targets against the measured figures (CPU suite)."""
    inf = {r["name"]: r for r in res["inference"]}
    default = inf.get("fcnseg-fcn8s-vgg16")
    best = min(
        (
            r
            for r in res["inference"]
            if r["name"].startswith("fcnseg-fcn8s-vgg16") and not r.get("pad100")
        ),
        key=lambda r: r["latency_ms"],
    )
    pad = min(
        (r for r in res["inference"] if r["name"].startswith("fcnseg") and r.get("pad100")),
        key=lambda r: r["latency_ms"],
    )
    pad_eager = inf.get("fcnseg-fcn8s-vgg16-pad100")
    tf = inf.get("torchfcn-fcn8s")
    tr = {r["name"]: r for r in res["training"]}
    rt = res["realtime"]
    out = []

    def add(target: str, value: str, ok: bool) -> None:
        out.append({"target": target, "measured": value, "met": bool(ok)})

    speedup = tf["latency_ms"] / best["latency_ms"]
    add(
        "FCN-8s VGG16 default 500x500 >= 2.5x faster than torchfcn FCN8s",
        f"{speedup:.2f}x ({best['name']} {best['latency_ms']:.0f} ms vs "
        f"{tf['latency_ms']:.0f} ms; FLOPs {best['gflops']:.0f} vs {tf['gflops']:.0f} G)",
        speedup >= 2.5,
    )
    add(
        "... and >= 85 % of the fp32 GEMM peak",
        f"{best['peak_fraction']:.0%} ({best['achieved_gflops_per_s']:.0f} of "
        f"{best['gemm_peak_gflops']:.0f} GFLOP/s); default eager {default['peak_fraction']:.0%}",
        best["peak_fraction"] >= 0.85,
    )
    add(
        "FCN-8s VGG16 pad100 no slower than torchfcn",
        f"{tf['latency_ms'] / pad['latency_ms']:.2f}x ({pad['name']} {pad['latency_ms']:.0f} ms "
        f"vs {tf['latency_ms']:.0f} ms); eager {tf['latency_ms'] / pad_eager['latency_ms']:.2f}x",
        pad["latency_ms"] <= tf["latency_ms"] * 1.02,
    )
    par = res["pad100_parity"]
    add(
        "pad100 outputs equal torchfcn's given its weights (max abs diff < 1e-3)",
        f"{par['max_abs_diff']:.2e} (logits up to {par['max_abs_logit']:.1f})",
        par["shape_equal"] and par["max_abs_diff"] < 1e-3,
    )
    ours, theirs = tr["fcnseg-fcn8s-vgg16"], tr["torchfcn-fcn8s"]
    ratio = ours["train_images_per_s"] / theirs["train_images_per_s"]
    add(
        "training step FCN-8s VGG16 2x360x480 >= 2x torchfcn images/s",
        f"{ratio:.2f}x ({ours['train_step_ms'] / 1e3:.1f} s vs "
        f"{theirs['train_step_ms'] / 1e3:.1f} s per step)",
        ratio >= 2.0,
    )
    fps = {r["name"] + ("" if "images_per_s" in r else ""): r.get("images_per_s") for r in rt}
    best_rt = max(v for v in fps.values() if v)
    add(
        "real-time FCN-8s mobilenet_v3_large 360x480 >= 20 images/s",
        ", ".join(f"{k} {v:.1f}" for k, v in fps.items() if v),
        best_rt >= 20,
    )
    dl = res["data"]
    add(
        "data loading >= 3x the resnet18 recipe's training images/s",
        f"{dl['ratio']:.1f}x ({dl['loading']['images_per_s']:.1f} vs "
        f"{dl['training']['train_images_per_s']:.2f} img/s)",
        dl["ratio"] >= 3,
    )
    cm = res["confusion_matrix"]
    add(
        "ConfusionMatrix.update >= 200 M pixels/s",
        f"{cm['mpixels_per_s']:.0f} M pixels/s",
        cm["mpixels_per_s"] >= 200,
    )
    opt = inf.get("fcnseg-fcn8s-vgg16-opt", {})
    low = inf.get("fcnseg-fcn8s-vgg16-lowmem", {})
    modes = [r for r in (default, opt, low) if r.get("peak_rss_mib")]
    leanest = min(modes, key=lambda r: r["peak_rss_mib"])
    rss = leanest["peak_rss_mib"] / tf["peak_rss_mib"]

    def grown(r: dict) -> float:  # what inference added on top of the loaded process
        return r["peak_rss_mib"] - r["rss_before_mib"]

    add(
        "peak inference RSS FCN-8s VGG16 500x500 <= 0.7x torchfcn's",
        f"{rss:.2f}x ({leanest['name']} {leanest['peak_rss_mib']:.0f} vs "
        f"{tf['peak_rss_mib']:.0f} MiB, {leanest['latency_ms']:.0f} ms); "
        + ", ".join(
            f"{r['name']} {r['peak_rss_mib']:.0f} MiB (inference adds {grown(r):.0f})"
            for r in modes
        )
        + f"; torchfcn's inference adds {grown(tf):.0f}",
        rss <= 0.7,
    )
    return out


def to_markdown(res: dict) -> str:
    m = res["machine"]
    lines = [
        f"# fcnseg benchmarks: suite `{res['suite']}`, {res['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads, "
        f"vector ISA {m.get('isa')} (CPU with AVX-512: {m.get('cpu_avx512')}; oneDNN cap "
        f"{m.get('onednn_max_isa') or 'none'}, MKL cap {m.get('mkl_instructions') or 'none'}), "
        f"torch {m['torch']}" + (f", {m['gpu']}" if m.get("gpu") else "") + ". "
        f"Load average {res['load_before']:.2f} before, {res['load_after']:.2f} after "
        f"(other processes {'were' if res['load_before'] > 0.5 else 'were not'} running). "
        f"fp32 GEMM peak {res['gemm_peak_gflops']:.0f} GFLOP/s (2048x2048, median, the faster of "
        + ", ".join(f"{k} {v:.0f}" for k, v in res["gemm_kernels_gflops"].items())
        + "). "
        f"Wall time {res['wall_s'] / 60:.1f} min.",
        "",
        "## Inference, batch 1",
        "",
        format_table(res["inference"], markdown=True),
        "",
        "## Training step",
        "",
        format_table(res["training"], markdown=True),
        "",
        "## Real time: FCN-8s MobileNetV3-Large",
        "",
    ]
    for r in res["realtime"]:
        if "error" in r:
            lines.append(f"- {r['name']}: {r['error']}")
            continue
        extra = (
            f", max abs diff vs torch {r['max_abs_diff_vs_torch']:.1e}"
            if ("max_abs_diff_vs_torch" in r)
            else ""
        )
        lines.append(
            f"- {r['name']}{' (optimized)' if r.get('optimize') else ''}: "
            f"{r['latency_ms']:.1f} ms median, {r['latency_ms_min']:.1f} ms min, "
            f"{r['images_per_s']:.1f} images/s{extra}"
        )
    if "targets" in res:
        lines += ["", "## Targets (issue 6)", "", "| target | measured | met |", "|---|---|---|"]
        lines += [
            f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |"
            for t in res["targets"]
        ]
    lines += [
        "",
        "Other figures:",
        "",
        "```",
        json.dumps(
            {
                k: res[k]
                for k in ("pad100_parity", "confusion_matrix", "data", "upsampling")
                if k in res
            },
            indent=1,
            default=str,
        )[:6000],
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=[*SUITES, "int8"], default="cpu")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args, rest = parser.parse_known_args(argv)
    if args.suite == "int8":  # float32 vs int8 runtimes: its own options (--checkpoint ...)
        from benchmarks.runtimes import main as runtimes_main

        return runtimes_main([*rest, "--out", str(args.out)])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    s = SUITES[args.suite]
    t0 = time.time()
    load_before = os.getloadavg()[0]
    res: dict[str, Any] = {
        "suite": args.suite,
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "machine": machine_info(),
        "load_before": load_before,
        "command": "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    peaks = [gemm_peak(s["device"], s["precision"], detail=True) for _ in range(3)]
    res["gemm_kernels_gflops"] = {k: statistics.median(p[k] for p in peaks) for k in peaks[0]}
    res["gemm_peak_gflops"] = max(res["gemm_kernels_gflops"].values())
    log(f"GEMM peak {res['gemm_peak_gflops']:.0f} GFLOP/s")
    args.out.mkdir(parents=True, exist_ok=True)
    # the vector ISA in the name: an AVX2 run (ATEN_CPU_CAPABILITY=avx2 ...) keeps its own file
    isa = str(res["machine"].get("isa") or "cpu").lower()
    stem = f"{args.suite}-{dt.date.today().isoformat()}-{isa}"

    def save() -> None:  # after every block, so a crash late in the run keeps the figures
        (args.out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str))

    blocks = [
        ("inference", inference_block),
        ("pad100_parity", pad100_parity),
        ("training", training_block),
        ("realtime", realtime_block),
        ("data", data_block),
        ("confusion_matrix", lambda s: bench_confusion_matrix(device=s["device"])),
        ("upsampling", upsampling_share),
    ]
    res["load"] = {}
    for key, block in blocks:
        res["load"][key] = os.getloadavg()[0]  # 1-minute load average as the block starts
        res[key] = block(s)
        save()
    res["load_after"] = os.getloadavg()[0]
    res["wall_s"] = time.time() - t0
    res["targets"] = check_targets(res)
    save()
    print()
    print(format_table(res["inference"]))
    print()
    print(format_table(res["training"]))
    print()
    for t in res["targets"]:
        print(f"[{'met' if t['met'] else 'NOT MET'}] {t['target']}: {t['measured']}")
    (args.out / f"{stem}.md").write_text(to_markdown(res))
    log(f"wrote {args.out / stem}.json and .md ({res['wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
