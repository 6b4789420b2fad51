"""int8 inference with ONNX Runtime: static QDQ quantization calibrated on real images.

    report = export_onnx_int8(model, "m.int8.onnx", "calib/", parity_data=("camvid", root, "val"))

The model is exported to float32 ONNX (:func:`fcnseg.export.export_onnx`, parity-checked),
shape-inferred (``quant_pre_process``), then quantized by ONNX Runtime's own
``quantize_static``: QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs around every
quantized op, which ORT fuses into int8 kernels), int8 weights with one scale per output
channel, uint8 activations whose ranges are the min/max seen on the calibration images
(``CalibrationMethod.MinMax``). The float32 graph is kept beside the int8 one (``*.fp32.onnx``)
for comparisons.

Logit distance says little about int8 quality, so the parity check measures what a user
sees: the fraction of pixels whose argmax (the predicted class) is the same in float32 and
int8 ONNX on real images, and, when masks are given, the mean IU of each and its change. It is
written beside the file as ``FILE.parity.json``.

:class:`OnnxRuntimeModel` runs any fcnseg ONNX file (float32 or int8) like a model: it is what
``fcnseg predict --onnx`` and ``fcnseg bench --onnx`` use.

:func:`fcnseg.bench.compare_runtimes` times one model three ways in one run (float32 PyTorch
through ``optimize_for_inference``, float32 ONNX Runtime, int8 ONNX Runtime) at several batch
sizes, beside the int8 parity report: what ``fcnseg bench --int8`` prints.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.data.transforms import Normalize
from fcnseg.export.formats import CONFIG_KEY, ExportedModel, export_onnx, require_onnx
from fcnseg.metrics import class_labels

__all__ = [
    "QUANT_KEY",
    "OnnxRuntimeModel",
    "calibration_images",
    "cpu_has_vnni",
    "export_onnx_int8",
    "format_int8_report",
    "int8_parity",
]

QUANT_KEY = "fcnseg_quantization"


class OnnxRuntimeModel(ExportedModel):
    """An fcnseg ONNX file run by ONNX Runtime's CPU provider, called like the PyTorch model.

    ``forward(images (N, 3, H, W) float32, normalised) -> logits (N, C, H, W)`` (CPU tensors).
    ``config`` (and so ``preprocess``, ``num_classes``, ``class_names``) comes from the file's
    ``fcnseg_config`` metadata. ``threads`` sets ``intra_op_num_threads``.

    Raises:
        ModuleNotFoundError: onnxruntime is not installed (the message names the extra).
        ValueError: the file has no fcnseg config in its metadata.
    """

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        super().__init__()
        onnx, ort = require_onnx()
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such file")
        meta = {
            p.key: p.value
            for p in onnx.load(str(self.path), load_external_data=False).metadata_props
        }
        if CONFIG_KEY not in meta:
            raise ValueError(f"{self.path}: not an fcnseg ONNX export (no {CONFIG_KEY} metadata)")
        self.config = json.loads(meta[CONFIG_KEY])
        self.quantization = json.loads(meta[QUANT_KEY]) if QUANT_KEY in meta else None
        self.num_classes = int(self.config["num_classes"])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(self.path), opts, providers=["CPUExecutionProvider"]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(["logits"], {"images": x})[0])


def cpu_has_vnni() -> bool:
    """Whether this CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX), so
    ONNX Runtime's uint8 x int8 kernels accumulate without int16 saturation (False where the
    flags cannot be read)."""
    from fcnseg.accel.precision import cpu_flags

    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def calibration_images(folder: str | Path, count: int = 32) -> list[Path]:
    """The first ``count`` image files of ``folder`` (sorted; not recursive).

    Raises:
        ValueError: ``folder`` is not a folder, holds no images, or ``count < 1``.
    """
    from fcnseg.inference import expand_inputs

    folder = Path(folder)
    if count < 1:
        raise ValueError(f"calibration count must be >= 1, got {count}")
    if not folder.is_dir():
        raise ValueError(f"--calibration {folder}: not a folder")
    try:
        return expand_inputs([folder])[:count]
    except FileNotFoundError:
        raise ValueError(f"--calibration {folder}: the folder holds no images") from None


def _resized(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """uint8 (3, H, W) -> float (3, h, w) in the same 0..255 range, antialiased bilinear."""
    x = image.float()[None]
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 255).round()


def _calibration_reader(paths: list[Path], preprocess: dict, size: tuple[int, int]):
    """An ORT ``CalibrationDataReader`` feeding each image resized to ``size``, normalised."""
    from onnxruntime.quantization import CalibrationDataReader

    from fcnseg.io.images import load_image

    normalize = Normalize(preprocess)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._paths = iter(paths)

        def get_next(self) -> dict | None:
            path = next(self._paths, None)
            if path is None:
                return None
            x = normalize(_resized(load_image(path), size) / 255.0)[None]
            return {"images": x.numpy().astype(np.float32)}

    return Reader()


def _samples(
    images: list[Path] | None, dataset: tuple[str, str, str] | None, count: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(uint8 image (3, H, W), int64 mask (H, W) or None): a dataset's samples, else images."""
    if dataset is not None:
        from fcnseg.data import build_dataset

        name, root, split = dataset
        ds = build_dataset(name, root=root, split=split)
        for i in range(min(count, len(ds))):
            image, mask = ds[i]
            yield image, mask
    else:
        from fcnseg.io.images import load_image

        for path in (images or [])[:count]:
            yield load_image(path), None


def int8_parity(
    fp32: nn.Module,
    int8: nn.Module,
    samples: Iterable[tuple[torch.Tensor, torch.Tensor | None]],
    preprocess: dict,
    num_classes: int,
    ignore_index: int = 255,
    scale: float = 1.0,
) -> dict:
    """Compare float32 and int8 predictions on real images, each at its own size.

    Args:
        fp32, int8: modules ``(1, 3, H, W) normalised -> (1, C, H, W) logits`` (e.g.
            :class:`OnnxRuntimeModel`), run through :class:`fcnseg.inference.Predictor`.
        samples: ``(uint8 image (3, H, W), mask (H, W) int64 or None)``; masks use
            ``ignore_index`` for void.
        scale: run the networks on each image resized by this factor and score the result
            upsampled to the image's size, as ``fcnseg eval --tta SCALE`` does (a recipe that
            evaluates at half scale is compared at 0.5); the logit figures are then those of
            the log-probabilities (:func:`fcnseg.inference.tta_logits`).

    Returns:
        ``images``, ``pixels``, ``argmax_agreement`` (fraction of pixels with the same class),
        ``max_abs_logit_diff``, ``mean_abs_logit_diff``; with masks also ``fp32_mean_iou``,
        ``int8_mean_iou`` and ``mean_iou_change`` (int8 - fp32), fractions in [0, 1]
        (``None`` without masks).

    Raises:
        ValueError: no samples.
    """
    from fcnseg.inference import Predictor
    from fcnseg.metrics import ConfusionMatrix

    if not scale > 0:
        raise ValueError(f"parity scale must be > 0, got {scale}")
    normalize = Normalize(preprocess)
    # both runtimes through the inference core, at the recipe's scale, as fcnseg eval runs them
    cores = [Predictor(net, device="cpu", tta=[scale], fast=False) for net in (fp32, int8)]
    cms = {k: ConfusionMatrix(num_classes, ignore_index=ignore_index) for k in ("fp32", "int8")}
    images = pixels = agree = 0
    max_diff, sum_diff, with_masks = 0.0, 0.0, False
    with torch.no_grad():
        for image, mask in samples:
            x = normalize(image)[None]
            a, b = (core.logits(x, normalized=True) for core in cores)
            pa, pb = class_labels(a)[0], class_labels(b)[0]
            images += 1
            pixels += pa.numel()
            agree += int((pa == pb).sum())
            diff = (a - b).abs()
            max_diff = max(max_diff, float(diff.max()))
            sum_diff += float(diff.mean()) * pa.numel()
            if mask is not None:
                with_masks = True
                cms["fp32"].update(pa, mask)
                cms["int8"].update(pb, mask)
    if not images:
        raise ValueError("int8 parity: no images to compare on")
    report: dict = {
        "images": images,
        "scale": scale,
        "pixels": pixels,
        "argmax_agreement": agree / pixels,
        "max_abs_logit_diff": max_diff,
        "mean_abs_logit_diff": sum_diff / pixels,
        "fp32_mean_iou": None,
        "int8_mean_iou": None,
        "mean_iou_change": None,
    }
    if with_masks:
        fp, q = (float(cms[k].compute()["mean_iou"]) for k in ("fp32", "int8"))
        report.update(fp32_mean_iou=fp, int8_mean_iou=q, mean_iou_change=q - fp)
    return report


def export_onnx_int8(
    model: nn.Module,
    path: str | Path,
    calibration: str | Path,
    example_size: tuple[int, int, int, int] = (1, 3, 256, 256),
    *,
    calibration_count: int = 32,
    parity_data: tuple[str, str, str] | None = None,
    parity_count: int = 32,
    parity_scale: float = 1.0,
    reduce_range: bool | None = None,
    opset: int = 17,
    threads: int = 2,
) -> dict:
    """Export ``model`` as a statically quantized (QDQ, per-channel int8) ONNX file.

    Args:
        model: an fcnseg model.
        path: the int8 file; ``<stem>.fp32.onnx`` (the float32 export) and
            ``<path>.parity.json`` (the parity report) are written beside it.
        calibration: a folder of images; the first ``calibration_count`` (sorted) are
            resized to the example's H x W, normalised with the model's ``preprocess``, and
            their activation ranges (min/max) set the activation scales.
        example_size: ``(1, 3, H, W)`` of the export example and of the calibration images.
            The exported graphs keep dynamic batch, height and width.
        parity_data: ``(dataset, root, split)`` with masks (``("folder", DIR, "val")``,
            ``("camvid", root, "val")`` ...) for the parity check; default: the calibration
            images, without masks (argmax agreement only).
        parity_count: at most this many parity images, each at its own size.
        parity_scale: the scale the parity images are run at (see :func:`int8_parity`).
        reduce_range: 7-bit weights (ONNX Runtime's ``reduce_range``). Without VNNI, x86
            int8 kernels multiply uint8 by int8 pairs into saturating int16 sums
            (``vpmaddubsw``), which 8-bit weights can overflow; 7-bit weights cannot.
            ``None``: on when the exporting CPU has no VNNI (:func:`cpu_has_vnni`).
        threads: ONNX Runtime ``intra_op_num_threads`` for the parity runs.

    Returns:
        A report: ``format`` (``"onnx-int8"``), ``path``, ``fp32_path``, ``example_size``,
        ``quantization`` (settings, calibration folder and image count), ``ops`` (op type ->
        count of the int8 graph), ``fp32_parity`` (the float32 export's check, see
        :func:`fcnseg.export.check_parity`), ``parity`` (:func:`int8_parity`, plus ``source``)
        and ``parity_file``.

    Raises:
        ValueError: the calibration folder is missing or holds no images; a bad example size.
        ModuleNotFoundError: onnx / onnxruntime missing (``pip install 'fcnseg[export]'``).
        ExportParityError: the float32 export does not reproduce the model.
    """
    onnx, _ = require_onnx()
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    paths = calibration_images(calibration, calibration_count)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fp32_path = path.with_name(path.name.removesuffix(".onnx").removesuffix(".int8") + ".fp32.onnx")
    fp32_report = export_onnx(model, fp32_path, example_size, opset=opset)
    size = tuple(int(v) for v in example_size[2:])
    preprocess = dict(model.config["preprocess"])
    if reduce_range is None:
        reduce_range = not cpu_has_vnni()
    settings = {
        "format": "QDQ",
        "per_channel": True,
        "reduce_range": bool(reduce_range),
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "calibrate_method": "MinMax",
        "calibration_dir": str(calibration),
        "calibration_images": len(paths),
        "calibration_size": list(size),
    }
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # ONNX shape inference + graph clean-up, so every tensor's type is known. The
            # symbolic pass is skipped: it cannot finish on dynamic H, W (the crops' min()).
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            settings["pre_process"] = True
        except Exception as e:  # keep going on the raw graph: it quantizes, maybe less fully
            prepared = fp32_path
            settings["pre_process"] = f"skipped: {str(e).splitlines()[0][:200]}"
        quantize_static(
            str(prepared),
            str(path),
            _calibration_reader(paths, preprocess, size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            reduce_range=bool(reduce_range),
        )
    graph = onnx.load(str(path))
    meta = {p.key: p for p in graph.metadata_props}
    for key, value in ((CONFIG_KEY, json.dumps(model.config, sort_keys=True)),
                       (QUANT_KEY, json.dumps(settings, sort_keys=True))):  # fmt: skip
        entry = meta[key] if key in meta else graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(path))
    ops: dict[str, int] = {}
    for node in graph.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1

    fp32_rt, int8_rt = OnnxRuntimeModel(fp32_path, threads), OnnxRuntimeModel(path, threads)
    samples = _samples(paths, parity_data, parity_count)
    parity = int8_parity(
        fp32_rt, int8_rt, samples, preprocess, int(model.config["num_classes"]),
        scale=parity_scale,
    )  # fmt: skip
    parity["source"] = (
        {"dataset": parity_data[0], "root": str(parity_data[1]), "split": parity_data[2]}
        if parity_data
        else {"calibration_dir": str(calibration)}
    )
    parity_file = Path(str(path) + ".parity.json")
    parity_file.write_text(json.dumps(parity, indent=2))
    return {
        "format": "onnx-int8",
        "path": str(path),
        "fp32_path": str(fp32_path),
        "example_size": list(example_size),
        "opset": opset,
        "quantization": settings,
        "ops": dict(sorted(ops.items())),
        "fp32_parity": fp32_report["parity"],
        "parity": parity,
        "parity_file": str(parity_file),
    }


def format_int8_report(report: dict) -> str:
    """A few human-readable lines for ``fcnseg export --int8``."""
    q, p, f = report["quantization"], report["parity"], report["fp32_parity"]
    lines = [
        f"exported int8 onnx ({q['format']}, per-channel {q['weight_type']} weights"
        f"{' in 7 bits (reduce_range)' if q.get('reduce_range') else ''}, "
        f"{q['activation_type']} activations) -> {report['path']}",
        f"  float32 graph: {report['fp32_path']} (parity max abs diff {f['max_abs_diff']:.3g}, "
        f"{'PASS' if f['passed'] else 'FAIL'})",
        f"  calibration: {q['calibration_images']} image(s) from {q['calibration_dir']} at "
        f"{q['calibration_size'][0]}x{q['calibration_size'][1]}",
        f"  int8 vs float32 on {p['images']} image(s): argmax agreement "
        f"{100 * p['argmax_agreement']:.2f} %, mean abs logit diff {p['mean_abs_logit_diff']:.3g}"
        + (f" (net at scale {p['scale']:g})" if p.get("scale", 1.0) != 1.0 else ""),
    ]
    if p.get("fp32_mean_iou") is not None:
        lines.append(
            f"  mean IU: float32 {100 * p['fp32_mean_iou']:.2f} %, int8 "
            f"{100 * p['int8_mean_iou']:.2f} % (change {100 * p['mean_iou_change']:+.2f} points)"
        )
    lines.append(f"  parity report: {report['parity_file']}")
    return "\n".join(lines)
