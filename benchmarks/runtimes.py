"""float32 PyTorch, float32 ONNX Runtime and int8 side by side, each against its limit (issue 15).

    python -m benchmarks.run --suite int8 [--checkpoint runs/.../best.pt] [--calibration DIR]

Three configurations, each timed by ``fcnseg.bench.compare_runtimes`` (the API under
``fcnseg bench --int8``) at batch 1 and 8 on 2 threads:

- ``realtime``: the real-time model, FCN-8s MobileNetV3-Large with global context, 11 classes,
  with a 360x480 input: trained weights from ``--checkpoint`` (then the parity report has the
  mean-IU change on CamVid val), otherwise random weights (speed does not depend on them);
- ``realtime-half``: the same model as its recipe runs it (``eval.tta: [0.5]``): a 360x480
  image is resized to 180x240, the net runs there, and its logits are resized back to 360x480.
  The net is timed at 180x240; the two resizes are timed apart (PyTorch, bilinear) and added
  for the per-image figure (``pipeline_images_per_s``); parity runs at scale 0.5;
- ``vgg16``: VGG16 FCN-8s, 21 classes, 500x500, random weights.

The limits are measured in the same run: the float32 GEMM peak (``harness.gemm_peak``: the
faster of torch.mm and oneDNN, what the cpu suite uses), ONNX Runtime's float32 ``MatMul``, its
int8 ``MatMulInteger`` and the same int8 product as a 1x1 ``QLinearConv``
(``harness.ort_gemm_peak``), all 2048x2048x2048. Each row gets the model's FLOPs per image
(FlopCounterMode on the PyTorch model, 2 per multiply-add), the operations per second it
achieved, and that as a fraction of the float32 GEMM peak (float32 rows) or of the int8 1x1
convolution (int8 rows: the kernel a QDQ graph's convolutions run on).
Writes ``benchmarks/results/int8-<date>-<isa>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import fcnseg
from benchmarks.harness import count_flops, gemm_peak, machine_info, ort_gemm_peak
from fcnseg.accel.timing import Timer
from fcnseg.bench import compare_runtimes, format_table

RESULTS = Path(__file__).resolve().parent / "results"
CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"

# name -> how it is built and timed (VGG16 at batch 8 is ~2 TFLOP a call: fewer repeats)
REALTIME = dict(arch="fcn8s", backbone="mobilenet_v3_large", num_classes=11, context="global",
                trained=True, repeat=20, warmup=3, calibration=32)  # fmt: skip
MODELS: dict[str, dict[str, Any]] = {
    "realtime": dict(REALTIME, size=(360, 480), parity_scale=1.0),
    "realtime-half": dict(REALTIME, size=(180, 240), parity_scale=0.5, image=(360, 480)),
    "vgg16": dict(arch="fcn8s", backbone="vgg16", num_classes=21, context=None, trained=False,
                  size=(500, 500), repeat=3, warmup=1, calibration=8, parity_scale=1.0),
}  # fmt: skip


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def limits(threads: int) -> dict[str, float]:
    """The machine's dense matrix-product limits in GOP/s, the median of three measurements."""
    torch.set_num_threads(threads)
    runs = [
        {
            "fp32_gemm_peak": gemm_peak("cpu", "fp32"),
            "ort_fp32_matmul": ort_gemm_peak("fp32", threads=threads),
            "ort_int8_matmul": ort_gemm_peak("int8", threads=threads),
            "ort_int8_conv1x1": ort_gemm_peak("int8_conv", threads=threads),
        }
        for _ in range(3)
    ]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def measure_model(
    name: str, spec: dict, checkpoint: str | None, calibration: Path, threads: int
) -> dict:
    """compare_runtimes on one model, each row with its FLOPs (and, for a scaled pipeline, the
    resizes' cost)."""
    if checkpoint and spec["trained"]:
        model = fcnseg.load_model(checkpoint)
        parity = ("camvid", str(CAMVID), "val") if CAMVID.is_dir() else None
    else:
        torch.manual_seed(0)
        model = fcnseg.build_model(
            spec["arch"], backbone=spec["backbone"], num_classes=spec["num_classes"],
            context=spec["context"],
        )  # fmt: skip
        parity = None
    model.eval()
    h, w = spec["size"]
    gflops = count_flops(model, torch.zeros(1, 3, h, w)) / 1e9
    log(f"{name}: {gflops:.2f} GFLOPs per {h}x{w} image; export, calibrate, time")
    result = compare_runtimes(
        model, (h, w), calibration, (1, 8), threads=threads, warmup=spec["warmup"],
        repeat=spec["repeat"], calibration_count=spec["calibration"], parity_data=parity,
        parity_count=101, parity_scale=spec["parity_scale"],
    )  # fmt: skip
    resizes = {  # the whole image's way: resize in, the net, resize out (once per batch size)
        batch: resize_ms(spec["image"], (h, w), batch, spec["num_classes"])
        for batch in {row["batch"] for row in result["rows"]}
        if "image" in spec
    }
    for row in result["rows"]:
        row["gflops"] = gflops
        if row["batch"] in resizes:
            row["image"] = list(spec["image"])
            row["resize_ms"] = resizes[row["batch"]]
            row["pipeline_images_per_s"] = row["batch"] / (
                (row["latency_ms"] + row["resize_ms"]) / 1e3
            )
    return {
        "model": name, "checkpoint": checkpoint if spec["trained"] else None, "gflops": gflops,
        **result,
    }  # fmt: skip


def resize_ms(image: tuple[int, int], size: tuple[int, int], batch: int, classes: int) -> float:
    """Median ms of the two bilinear resizes around a scaled net: ``batch`` RGB images from
    ``image`` to ``size``, and their ``classes`` logit maps back (``tta_logits``' resizes)."""
    x = torch.rand(batch, 3, *image)
    logits = torch.randn(batch, classes, *size)

    def both() -> None:
        F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        F.interpolate(logits, size=image, mode="bilinear", align_corners=False)

    return statistics.median(Timer(torch.device("cpu")).time(both, 3, 20))


def add_fractions(res: dict) -> None:
    lim = res["limits"]
    for block in res["models"]:
        for row in block["rows"]:
            row["gops_per_s"] = row["gflops"] * row["images_per_s"]
            key = "ort_int8_conv1x1" if row["runtime"].endswith("int8") else "fp32_gemm_peak"
            row["limit"] = key
            row["peak_fraction"] = row["gops_per_s"] / lim[key]


def to_markdown(res: dict) -> str:
    m, lim = res["machine"], res["limits"]
    lines = [
        f"# fcnseg benchmarks: suite `int8`, {res['date']}",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cpu_count']} cores, {res['threads']} threads, vector ISA "
        f"{m.get('isa')} (CPU with AVX-512: {m.get('cpu_avx512')}; oneDNN cap "
        f"{m.get('onednn_max_isa') or 'none'}, MKL cap {m.get('mkl_instructions') or 'none'}), "
        f"torch {m['torch']}, onnxruntime {res['onnxruntime']}. Load average "
        f"{res['load_before']:.2f} before, {res['load_after']:.2f} after. "
        f"Wall time {res['wall_s'] / 60:.1f} min.",
        "",
        "Limits (2048x2048, median of 3): float32 GEMM peak "
        f"{lim['fp32_gemm_peak']:.0f} GFLOP/s; ONNX Runtime float32 MatMul "
        f"{lim['ort_fp32_matmul']:.0f} GFLOP/s; ONNX Runtime int8: MatMulInteger "
        f"{lim['ort_int8_matmul']:.0f} GOP/s, the same product as a 1x1 QLinearConv (the "
        f"int8 rows' limit) {lim['ort_int8_conv1x1']:.0f} GOP/s.",
        "",
        "| model | net input | runtime | batch | ms / batch | img/s | x PyTorch fp32 | GOP/s "
        "| % of limit | 360x480 images/s (with resizes) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for block in res["models"]:
        for r in block["rows"]:
            pipeline = r.get("pipeline_images_per_s")
            lines.append(
                f"| {block['model']} | {r['size'][0]}x{r['size'][1]} | {r['runtime']} "
                f"| {r['batch']} | {r['latency_ms']:.1f} | {r['images_per_s']:.1f} "
                f"| {r['speedup_vs_pytorch']:.2f} | {r['gops_per_s']:.0f} "
                f"| {r['peak_fraction']:.0%} of {r['limit']} "
                f"| {f'{pipeline:.1f}' if pipeline else '-'} |"
            )
    lines += ["", "int8 parity (ONNX Runtime int8 vs float32 on real images):", ""]
    for block in res["models"]:
        p = block["export"]["parity"]
        miou = (
            f", mean IU {100 * p['fp32_mean_iou']:.2f} -> {100 * p['int8_mean_iou']:.2f} "
            f"({100 * p['mean_iou_change']:+.2f} points)"
            if p.get("fp32_mean_iou") is not None
            else " (random weights: agreement only)"
        )
        lines.append(
            f"- {block['model']}: {p['images']} images from {p['source']} (net at scale "
            f"{p.get('scale', 1.0):g}), argmax agreement "
            f"{100 * p['argmax_agreement']:.2f} %{miou}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="the trained real-time model")
    p.add_argument("--calibration", type=Path, default=CAMVID / "train" / "images")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    import onnxruntime

    t0 = time.time()
    res: dict[str, Any] = {
        "suite": "int8",
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python -m benchmarks.run --suite int8 "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(),
        "threads": a.threads,
        "onnxruntime": onnxruntime.__version__,
        "load_before": os.getloadavg()[0],
    }
    res["limits"] = limits(a.threads)
    log(f"limits {res['limits']}")
    res["models"] = [
        measure_model(name, MODELS[name], a.checkpoint, a.calibration, a.threads)
        for name in a.models
    ]
    res["load_after"] = os.getloadavg()[0]
    res["wall_s"] = time.time() - t0
    add_fractions(res)
    for block in res["models"]:
        print(format_table(block["rows"]) + "\n")
    a.out.mkdir(parents=True, exist_ok=True)
    isa = str(res["machine"].get("isa") or "cpu").lower()
    stem = f"int8-{dt.date.today().isoformat()}-{isa}"
    (a.out / f"{stem}.json").write_text(json.dumps(res, indent=2, default=str))
    (a.out / f"{stem}.md").write_text(to_markdown(res))
    print(to_markdown(res))
    log(f"wrote {a.out / stem}.json and .md ({res['wall_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
