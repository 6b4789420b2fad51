"""The precision policy (fp32 | bf16 | fp16 | auto): what auto picks on which CPU, that the
inference core and the trainer honour it, and that it is recorded."""

from __future__ import annotations

import pytest
import torch

import fcnseg.accel.precision as policy
from fcnseg.accel.precision import cpu_isa, precision_record, resolve_precision
from fcnseg.inference import Predictor, predict_logits

from ..inference import random_image, tiny_model

AMX = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
AVX512_BF16 = frozenset({"avx2", "avx512f", "avx512_bf16"})
AVX512 = frozenset({"avx2", "avx512f"})
AVX2 = frozenset({"avx2", "fma"})


@pytest.fixture
def cpu(monkeypatch):
    """``cpu(flags, **env)``: pretend this CPU has ``flags``, under these ISA caps."""

    def pretend(flags: frozenset, **env: str) -> None:
        monkeypatch.setattr(policy, "cpu_flags", lambda: flags)
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)

    return pretend


@pytest.mark.parametrize(
    "flags,env,isa,auto",
    [
        (AMX, {}, "AMX", "bf16"),
        (AVX512_BF16, {}, "AVX512-BF16", "bf16"),
        (AVX512, {}, "AVX-512", "fp32"),
        (AVX2, {}, "AVX2", "fp32"),
        # an AMX machine computing as an AVX2 one (the Makefile's AVX2 emulation)
        (AMX, {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}, "AVX2", "fp32"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "AVX-512", "fp32"),
        (AMX, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, "AVX512-BF16", "bf16"),
    ],
)
def test_auto_is_bf16_exactly_where_the_cpu_may_compute_it(cpu, flags, env, isa, auto):
    cpu(flags, **env)
    assert cpu_isa() == isa
    assert resolve_precision("auto", "cpu") == auto
    assert precision_record(resolve_precision("auto", "cpu")) == {
        "precision": auto,
        "device": "cpu",
        "cpu_isa": isa,
    }


def test_explicit_precisions_and_refusals():
    assert resolve_precision(None) == resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"  # asked for: honoured (emulated if need be)
    with pytest.raises(ValueError, match="fp16 is for GPUs"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("int4")


def test_the_core_in_bf16_returns_fp32_scores_close_to_fp32_and_restores_the_model():
    model = tiny_model("fcn8s")
    image = random_image(64, 96, seed=3)
    exact = predict_logits(model, image, device="cpu")[0]
    with Predictor(model, device="cpu", precision="bf16") as core:
        assert core.record["precision"] == "bf16"
        low = core.logits(image[None])[0]
    assert low.dtype == torch.float32 and low.shape == exact.shape
    # bf16 keeps 8 significant bits: logits agree to a few 1/256 of their range, and the
    # argmax wherever the top two classes are further apart than that
    scale = exact.abs().max()
    assert (low - exact).abs().max() < 0.1 * scale
    top2 = exact.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 0.05 * scale
    assert torch.equal(low.argmax(0)[clear], exact.argmax(0)[clear])
    assert not model.training
    assert model.backbone.body.conv1.weight.is_contiguous()  # channels_last undone


def test_auto_keeps_bf16_only_where_it_is_faster_and_agrees(cpu, monkeypatch):
    import fcnseg.inference.core as core_module

    cpu(AMX)  # bf16 hardware: auto tries both on the first batch
    model = tiny_model("fcn8s")
    image = random_image(64, 96, seed=4)
    core = Predictor(model, device="cpu", precision="auto")
    core.logits(image[None])
    choice = core.record["auto"]
    assert set(choice["ms"]) == {"fp32", "bf16"} and choice["chosen"] == core.precision
    faster = min(choice["ms"], key=choice["ms"].get)
    agrees = choice["argmax_agreement"] >= core_module.AUTO_MIN_AGREEMENT
    assert core.precision == (faster if agrees else "fp32")
    core.close()
    # a model whose bf16 labels would disagree keeps fp32, and its memory format
    monkeypatch.setattr(core_module, "AUTO_MIN_AGREEMENT", 1.01)
    core = Predictor(model, device="cpu", precision="auto")
    exact = predict_logits(model, image, device="cpu")[0]
    torch.testing.assert_close(core.logits(image[None])[0], exact, rtol=1e-4, atol=1e-4)
    assert core.precision == "fp32" and core.record["auto"]["chosen"] == "fp32"
    assert model.backbone.body.conv1.weight.is_contiguous()
    cpu(AVX2)  # no bf16 hardware: auto is fp32 at once, nothing tried
    assert Predictor(model, device="cpu", precision="auto").choice is None
