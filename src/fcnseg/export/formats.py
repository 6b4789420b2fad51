"""Export a trained FCN to ONNX, TorchScript or safetensors, and prove the export is faithful.

Every export is checked: the exported artefact is run (onnxruntime for ONNX, the reloaded
TorchScript module, ``fcnseg.load_model`` for safetensors) next to the PyTorch model on a
random input whose batch size, height and width all differ from the export example, and the
export fails (:class:`ExportParityError`) unless the largest absolute logit difference is below
``atol`` (1e-3) and the argmax agrees on more than ``min_agreement`` (99.9 %) of the pixels.

The exported networks take *normalised* images ``(N, 3, H, W)`` (see the model's
``preprocess``, which the report and the ONNX metadata carry) and return logits
``(N, C, H, W)``. In ONNX the FCN's upsampling path is what the paper describes: ``Pad``
(replicated border), ``ConvTranspose`` (bilinear-initialised deconvolution) and ``Slice`` (the
crop), never a ``Resize``.

ONNX uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): the dynamo
exporter needs the extra ``onnxscript`` package, and the TorchScript one records the crops'
shape arithmetic as ``Shape``/``Gather``/``Slice`` ops, so height, width and batch stay dynamic.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from fcnseg.metrics import class_labels

__all__ = [
    "ExportParityError",
    "ExportedModel",
    "check_parity",
    "export_onnx",
    "export_safetensors",
    "export_torchscript",
    "format_report",
    "parity_size",
    "require_onnx",
]

ATOL = 1e-3
MIN_AGREEMENT = 0.999
CONFIG_KEY = "fcnseg_config"


class ExportedModel(nn.Module):
    """Base of the exported files run like a model (ONNX Runtime, AOTInductor): what the
    model's stored ``config`` says about it. Subclasses set ``config`` and ``num_classes``."""

    config: dict
    num_classes: int

    @property
    def preprocess(self) -> dict:
        return self.config["preprocess"]

    @property
    def class_names(self) -> list[str]:
        return self.config.get("class_names") or [str(i) for i in range(self.num_classes)]


class ExportParityError(ValueError):
    """The exported model does not reproduce the PyTorch model (the message has the figures)."""


def require_onnx():
    """``(onnx, onnxruntime)``, imported.

    Raises:
        ModuleNotFoundError: either is not installed (the command line names the extra).
    """
    import onnx
    import onnxruntime

    return onnx, onnxruntime


def _cpu_copy(model: nn.Module) -> nn.Module:
    """An eval-mode float32 CPU copy (exports never move or alter the caller's model)."""
    return copy.deepcopy(getattr(model, "module", model)).cpu().float().eval()


def _min_size(model: nn.Module) -> int:
    return int(getattr(getattr(model, "backbone", None), "min_input_size", 1) or 1)


def parity_size(example_size: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """A check size differing from ``example_size`` in batch, height and width.

    Height and width grow by 37 and 53 pixels (odd, not multiples of the stride), so a
    graph that froze the example's shape or assumed divisibility by 32 shows up.
    """
    n, c, h, w = example_size
    return (n + 1, c, h + 37, w + 53)


def _example(size: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*size, generator=g)


def check_parity(
    reference: nn.Module,
    run_exported,
    size: tuple[int, int, int, int],
    *,
    atol: float = ATOL,
    min_agreement: float = MIN_AGREEMENT,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> dict:
    """Compare an exported model with the PyTorch one on a random input of ``size``.

    Args:
        reference: the PyTorch model (eval mode, CPU).
        run_exported: callable ``(N, 3, H, W) float32 tensor -> logits tensor``.
        size: ``(N, 3, H, W)`` of the random (standard normal) input.
        atol: largest allowed absolute logit difference.
        min_agreement: smallest allowed fraction of pixels with the same argmax.
        raise_on_failure: raise :class:`ExportParityError` when a threshold is missed.

    Returns:
        ``{"size": [N, 3, H, W], "max_abs_diff": float, "argmax_agreement": float,
        "passed": bool}``.
    """
    x = _example(tuple(size), seed)
    with torch.no_grad():
        expected = reference(x).float()
    got = torch.as_tensor(run_exported(x)).float()
    if got.shape != expected.shape:
        report = {
            "size": list(size),
            "max_abs_diff": float("inf"),
            "argmax_agreement": 0.0,
            "passed": False,
            "error": f"output shape {tuple(got.shape)} != expected {tuple(expected.shape)}",
        }
    else:
        diff = float((got - expected).abs().max())
        agreement = float((class_labels(got) == class_labels(expected)).float().mean())
        report = {
            "size": list(size),
            "max_abs_diff": diff,
            "argmax_agreement": agreement,
            "passed": diff < atol and agreement > min_agreement,
        }
    if raise_on_failure and not report["passed"]:
        detail = report.get("error") or (
            f"max abs logit difference {report['max_abs_diff']:.3g} (limit {atol}), argmax "
            f"agreement {100 * report['argmax_agreement']:.3f} % (needs > {100 * min_agreement} %)"
        )
        raise ExportParityError(f"parity check failed at input {tuple(size)}: {detail}")
    return report


def _check_sizes(model: nn.Module, example_size) -> tuple[tuple[int, ...], tuple[int, ...]]:
    example_size = tuple(int(v) for v in example_size)
    if len(example_size) != 4 or example_size[1] != 3:
        raise ValueError(f"example_size must be (N, 3, H, W), got {example_size}")
    if min(example_size[2:]) < _min_size(model):
        raise ValueError(
            f"example size {example_size[2]}x{example_size[3]} is below the backbone's "
            f"minimum input of {_min_size(model)} px"
        )
    return example_size, parity_size(example_size)


def _config_json(model: nn.Module) -> str:
    return json.dumps(dict(getattr(model, "config", {}) or {}), sort_keys=True)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_size: tuple[int, int, int, int] = (1, 3, 256, 256),
    *,
    opset: int = 17,
    atol: float = ATOL,
    min_agreement: float = MIN_AGREEMENT,
) -> dict:
    """Export to ONNX with dynamic batch, height and width, then check it with onnxruntime.

    The graph's input is ``images`` (normalised, float32 ``(N, 3, H, W)``), its output
    ``logits``; the model config (with ``preprocess``) is stored in the ONNX metadata under
    ``fcnseg_config``.

    Returns:
        A report: ``format``, ``path``, ``example_size``, ``opset``, ``ops`` (op type ->
        count), ``dynamic_axes``, ``preprocess`` and ``parity`` (see :func:`check_parity`,
        measured at :func:`parity_size` of the example).

    Raises:
        ExportParityError: onnxruntime's logits differ from PyTorch's beyond the thresholds.
        ValueError: a bad example size.
        ModuleNotFoundError: ``onnx`` or ``onnxruntime`` is not installed
            (``pip install 'fcnseg[export]'``).
    """
    onnx, ort = require_onnx()

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    example_size, check_size = _check_sizes(net, example_size)
    dims = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The tracer warns about Python ints taken from shapes (the crops' min()); the parity
        # check at a different size is what shows whether that mattered.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (_example(example_size, seed=1),),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": dims, "logits": dims},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph)
    meta = graph.metadata_props.add()
    meta.key, meta.value = CONFIG_KEY, _config_json(model)
    onnx.save(graph, str(path))
    ops = dict(sorted(Counter(node.op_type for node in graph.graph.node).items()))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])

    parity = check_parity(net, run, check_size, atol=atol, min_agreement=min_agreement)
    return {
        "format": "onnx",
        "path": str(path),
        "example_size": list(example_size),
        "opset": opset,
        "dynamic_axes": {"images": dims, "logits": dims},
        "ops": ops,
        "preprocess": (getattr(model, "config", {}) or {}).get("preprocess"),
        "parity": parity,
    }


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    example_size: tuple[int, int, int, int] = (1, 3, 256, 256),
    *,
    atol: float = ATOL,
    min_agreement: float = MIN_AGREEMENT,
) -> dict:
    """Export to TorchScript: ``torch.jit.script`` if it compiles, else ``torch.jit.trace``.

    A traced module replays the recorded ops; shapes read in Python may be frozen at the
    example size. The saved module is therefore reloaded and checked at a *different* size; if
    it fails there but passes at the example size, the export is kept and the report says
    ``"dynamic_shapes": False`` with the one size it supports (``fixed_size``).

    Returns:
        A report: ``format``, ``path``, ``method`` (``"script"`` or ``"trace"``),
        ``script_error`` (why scripting failed, when it did), ``dynamic_shapes``, ``parity``
        and, for a frozen trace, ``fixed_size`` and ``note``.

    Raises:
        ExportParityError: the module disagrees with PyTorch even at the example size.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    example_size, check_size = _check_sizes(net, example_size)
    report: dict = {"format": "torchscript", "path": str(path), "example_size": list(example_size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jit deprecation notices and tracer warnings
        try:
            module = torch.jit.script(net)
            report["method"] = "script"
        except Exception as e:  # any compile failure: fall back to tracing
            report["method"] = "trace"
            report["script_error"] = str(e).strip().splitlines()[0][:300]
            with torch.no_grad():
                module = torch.jit.trace(net, _example(example_size, seed=1), check_trace=False)
        torch.jit.save(module, str(path))
        loaded = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loaded(x)

    try:
        parity = check_parity(net, run, check_size, atol=atol, min_agreement=min_agreement)
        report["dynamic_shapes"] = True
    except (ExportParityError, RuntimeError) as e:
        if report["method"] == "script":
            raise
        # Traced graphs can freeze sizes: check the example size itself.
        parity = check_parity(net, run, example_size, atol=atol, min_agreement=min_agreement)
        report["dynamic_shapes"] = False
        report["fixed_size"] = list(example_size)
        report["note"] = (
            f"the traced module only reproduces the model at the example size "
            f"{example_size[2]}x{example_size[3]} (batch {example_size[0]}); at "
            f"{check_size[2]}x{check_size[3]} it failed: {str(e).splitlines()[0][:200]}"
        )
    report["parity"] = parity
    return report


def export_safetensors(model: nn.Module, path: str | Path) -> dict:
    """Write the weights as safetensors, the JSON config in the metadata (``fcnseg_config``).

    The file loads back with ``fcnseg.load_model(path)``; the report's parity compares the
    reloaded model with the original (expected: identical).
    """
    from safetensors.torch import save_file

    from fcnseg.engine.checkpoint import load_model

    config = getattr(model, "config", None)
    if not config:
        raise ValueError("export_safetensors needs a model built by fcnseg (it has no .config)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = _cpu_copy(model)
    # clone: safetensors refuses tensors that share storage
    state = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: _config_json(net), "format": "pt"})
    reloaded = load_model(path)
    size = (1, 3, max(_min_size(net), 64) + 5, max(_min_size(net), 64) + 37)
    parity = check_parity(net, lambda x: reloaded(x).detach(), size)
    return {
        "format": "safetensors",
        "path": str(path),
        "tensors": len(state),
        "bytes": path.stat().st_size,
        "parity": parity,
    }


def format_report(report: dict) -> str:
    """A few human-readable lines for the ``fcnseg export`` command."""
    lines = [f"exported {report['format']} -> {report['path']}"]
    if report.get("method"):
        how = report["method"]
        if report.get("script_error"):
            how += f" (torch.jit.script failed: {report['script_error']})"
        lines.append(f"  method: {how}")
    if report.get("ops"):
        lines.append("  ops: " + ", ".join(f"{k} {v}" for k, v in report["ops"].items()))
    if report.get("isa"):
        lines.append(
            f"  compiled in {report['compile_s']} s, {report.get('precision', 'fp32')}, for the "
            f"{report['isa']!r} vector ISA, "
            f"{report['threads']} threads ({report['bytes'] / 2**20:.1f} MiB)"
        )
    if "dynamic_shapes" in report:
        lines.append(f"  dynamic shapes: {'yes' if report['dynamic_shapes'] else 'NO'}")
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    p = report["parity"]
    n, _, h, w = p["size"]
    lines.append(
        f"  parity at {n}x3x{h}x{w}: max abs logit diff {p['max_abs_diff']:.3g}, "
        f"argmax agreement {100 * p['argmax_agreement']:.3f} % "
        f"({'PASS' if p['passed'] else 'FAIL'})"
    )
    return "\n".join(lines)
