"""Which ONNX Runtime static-quantization settings make int8 fastest on this CPU (issue 15).

Exports one model to float32 ONNX, quantizes it several ways with ONNX Runtime's own
``quantize_static`` (calibrated on real images), and times each graph with the same
ONNX Runtime session settings as ``fcnseg bench --onnx``, batch 1 and 8:

    python -m benchmarks.int8_settings --backbone mobilenet_v3_large --context global \
        --size 360x480 --calibration ../shared/data/camvid/train/images

Random weights unless ``--checkpoint`` (speed does not depend on the values; argmax agreement
with float32 is printed too, on the calibration images, as a sanity check only).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import fcnseg
from fcnseg.bench import bench_onnx_file, machine_info
from fcnseg.export import export_onnx
from fcnseg.export.int8 import _calibration_reader, calibration_images

SETTINGS = {
    "QDQ, every op": {"format": "QDQ"},
    "QDQ, Conv only": {"format": "QDQ", "op_types": ["Conv"]},
    "QOperator, every op": {"format": "QOperator"},
    "QDQ, every op, reduce_range": {"format": "QDQ", "reduce_range": True},
    # depthwise (grouped) convolutions stay float32: int8 only where the work is dense GEMM
    "QDQ, reduce_range, depthwise float": {
        "format": "QDQ",
        "reduce_range": True,
        "exclude_grouped": True,
    },
}


def grouped_convs(path: Path) -> list[str]:
    """Names of the Conv nodes with ``group > 1`` (depthwise ones) in an ONNX file."""
    import onnx

    out = []
    for node in onnx.load(str(path)).graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Conv" and group > 1:
            out.append(node.name)
    return out


def quantize(fp32: Path, out: Path, images: list[Path], preprocess, size, setting: dict) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out.with_suffix(".prep.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        _calibration_reader(images, preprocess, size),
        quant_format=QuantFormat.QDQ if setting["format"] == "QDQ" else QuantFormat.QOperator,
        op_types_to_quantize=setting.get("op_types"),
        nodes_to_exclude=grouped_convs(prepared) if setting.get("exclude_grouped") else None,
        per_channel=True,
        reduce_range=setting.get("reduce_range", False),
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="fcn8s")
    p.add_argument("--backbone", default="mobilenet_v3_large")
    p.add_argument("--context", default=None)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--size", default="360x480")
    p.add_argument("--calibration", required=True)
    p.add_argument("--count", type=int, default=16, help="calibration images")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", default=None, help="setting names to run")
    a = p.parse_args(argv)
    h, w = (int(v) for v in a.size.split("x"))
    if a.checkpoint:
        model = fcnseg.load_model(a.checkpoint)
    else:
        model = fcnseg.build_model(
            a.arch, backbone=a.backbone, num_classes=a.num_classes, context=a.context
        )
    model.eval()
    images = calibration_images(a.calibration, a.count)
    info = machine_info()
    print(f"# {info.get('cpu')} | {info.get('isa', '')} | torch {torch.__version__}")
    batches = [int(b) for b in a.batches.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, (1, 3, h, w))
        rows = [("float32", fp32)]
        for name, setting in SETTINGS.items():
            if a.only and name not in a.only:
                continue
            out = Path(tmp) / f"int8_{len(rows)}.onnx"
            quantize(fp32, out, images, model.config["preprocess"], (h, w), setting)
            rows.append((name, out))
        base = {}
        for name, path in rows:
            for b in batches:
                r = bench_onnx_file(path, (h, w), batch=b, threads=a.threads, repeat=8)
                base.setdefault(b, r["latency_ms"])
                print(
                    f"| {name} | {b} | {r['latency_ms']:.1f} ms | {r['images_per_s']:.1f} img/s "
                    f"| x{base[b] / r['latency_ms']:.2f} vs fp32 |",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
