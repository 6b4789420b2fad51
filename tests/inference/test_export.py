"""fcnseg.export: ONNX (dynamic sizes, no Resize), TorchScript and safetensors, with parity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import fcnseg
from fcnseg.export import (
    ATOL,
    MIN_AGREEMENT,
    ExportParityError,
    check_parity,
    export_onnx,
    export_safetensors,
    export_torchscript,
    format_report,
    parity_size,
)

from . import tiny_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

EXAMPLE = (1, 3, 64, 96)


@pytest.fixture(scope="module")
def model():
    return tiny_model("fcn8s")


def _assert_parity(parity: dict, size) -> None:
    assert parity["size"] == list(size)
    assert parity["passed"]
    assert parity["max_abs_diff"] < ATOL
    assert parity["argmax_agreement"] > MIN_AGREEMENT


def test_onnx_dynamic_sizes_no_resize_and_parity(model, tmp_path):
    path = tmp_path / "m.onnx"
    report = export_onnx(model, path, EXAMPLE)
    _assert_parity(report["parity"], parity_size(EXAMPLE))
    assert report["parity"]["size"][2:] != list(EXAMPLE[2:])  # checked at another size

    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert "Resize" not in ops and "Upsample" not in ops
    assert {"ConvTranspose", "Slice", "Pad"} <= ops  # the paper's deconvolution + crop
    meta = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(meta["fcnseg_config"])["arch"] == "fcn8s"
    dims = [d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]

    # A third size, checked by hand: batch 3, odd sizes, not multiples of 32.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 77, 131)
    got = session.run(None, {"images": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape == (3, 3, 77, 131)
    assert np.abs(got - expected).max() < ATOL
    assert "parity at 2x3x101x149" in format_report(report)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_parity_at_another_size(model, tmp_path):
    path = tmp_path / "m.pt"
    report = export_torchscript(model, path, EXAMPLE)
    assert report["method"] in ("script", "trace")
    if report["method"] == "trace":
        assert report["script_error"]  # why scripting was not used is reported
    assert report["dynamic_shapes"] is True
    _assert_parity(report["parity"], parity_size(EXAMPLE))
    loaded = torch.jit.load(str(path))
    x = torch.randn(1, 3, 83, 71)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)


def test_torchscript_fcn32s_scripts(tmp_path):
    report = export_torchscript(tiny_model("fcn32s"), tmp_path / "m32.pt", EXAMPLE)
    _assert_parity(report["parity"], parity_size(EXAMPLE))
    assert report["dynamic_shapes"] is True


def test_safetensors_round_trip_via_load_model(model, tmp_path):
    path = tmp_path / "m.safetensors"
    report = export_safetensors(model, path)
    assert report["parity"]["max_abs_diff"] == 0.0
    loaded = fcnseg.load_model(path)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["fcnseg_config"])["backbone"] == "resnet18"


def test_check_parity_raises_on_mismatch(model):
    def wrong(x):
        with torch.no_grad():
            return model(x) + 0.01

    with pytest.raises(ExportParityError, match="max abs logit difference"):
        check_parity(model, wrong, (1, 3, 64, 64))
    report = check_parity(model, wrong, (1, 3, 64, 64), raise_on_failure=False)
    assert not report["passed"] and report["max_abs_diff"] == pytest.approx(0.01, abs=1e-5)

    def cropped(x):
        with torch.no_grad():
            return model(x)[..., :-1]

    with pytest.raises(ExportParityError, match="output shape"):
        check_parity(model, cropped, (1, 3, 64, 64))


def test_export_refuses_bad_example_size(model, tmp_path):
    with pytest.raises(ValueError, match="example_size"):
        export_onnx(model, tmp_path / "x.onnx", (1, 64, 64))
