"""Context heads (ParseNet global, PSPNet pyramid): size, scripting, ONNX, training, loading.

Tolerances. Float32 has a unit roundoff of 2**-24 (6e-8); a sum of n terms of size <= m is
exact to about n * 6e-8 * m. The pooling/upsampling matrices sum at most 13 terms of O(1)
values here, so 1e-5 holds with a wide margin. Scripted and eager models run the same kernels:
``torch.testing.assert_close`` defaults (rtol 1.3e-6, atol 1e-5). ONNX Runtime reorders
the convolutions' K = 9 * 512 term sums: the error grows like sqrt(K) * 6e-8 * |terms|,
about 1e-5 for logits of O(1), well inside the export check's 1e-3.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import fcnseg
from fcnseg.config import load_config
from fcnseg.engine import train
from fcnseg.export import export_onnx, parity_size
from fcnseg.models import FCN, MODELS, build_backbone
from fcnseg.models.context import (
    CONTEXT_HEADS,
    GlobalContext,
    PyramidContext,
    adaptive_pool_matrix,
    bilinear_matrix,
)

CONTEXTS = list(CONTEXT_HEADS)
HEADS = ["fcn32s", "fcn16s", "fcn8s"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def randomize_scores(model: nn.Module) -> nn.Module:
    """Score layers start at zero (the paper); give them values so outputs are informative."""
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name)
        if layer is not None:
            nn.init.normal_(layer.weight, std=0.1)
            nn.init.normal_(layer.bias, std=0.1)
    return model


def build(head: str = "fcn8s", backbone: str = "resnet18", context: str | None = "global"):
    return randomize_scores(
        fcnseg.build_model(head, backbone=backbone, num_classes=3, context=context)
    ).eval()


# ------------------------------------------------------------------ the modules themselves


@pytest.mark.parametrize("bins", [1, 2, 3, 6])
@pytest.mark.parametrize("size", [(1, 4), (5, 13), (7, 6), (12, 11)])
def test_pool_and_upsample_matrices_equal_torchs_ops(bins, size):
    x = torch.randn(2, 4, *size)
    h, w = size
    pooled = adaptive_pool_matrix(h, bins, x) @ x @ adaptive_pool_matrix(w, bins, x).t()
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, bins), atol=1e-5, rtol=0)
    y = torch.randn(2, 4, bins, bins)
    up = bilinear_matrix(h, bins, y) @ y @ bilinear_matrix(w, bins, y).t()
    expected = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, expected, atol=1e-5, rtol=0)


def test_global_context_is_parsenet():
    """L2-normalised local features and pooled vector, each scaled by 10 at init (ParseNet)."""
    module = GlobalContext(6)
    x = torch.rand(2, 6, 5, 7)
    out = module(x)
    assert out.shape == (2, 12, 5, 7) and module.out_channels == 12
    norms = out.norm(dim=1)  # sqrt(10^2 + 10^2): both halves have norm 10 at every pixel
    torch.testing.assert_close(norms, torch.full_like(norms, 200**0.5))
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(
        out[:, 6:], (10 * mean / mean.norm(dim=1, keepdim=True)).expand(-1, -1, 5, 7)
    )
    torch.testing.assert_close(out[:, :6], 10 * x / x.norm(dim=1, keepdim=True))


@pytest.mark.parametrize("context", CONTEXTS)
def test_context_sees_a_far_away_feature(context):
    """Changing one feature pixel changes the context channels at the opposite corner."""
    module = CONTEXT_HEADS[context](8).eval()
    x = torch.rand(1, 8, 9, 11)
    moved = x.clone()
    moved[..., -1, -1] += 5.0
    with torch.no_grad():
        a, b = module(x), module(moved)
    assert torch.equal(a[:, :8, 0, 0], b[:, :8, 0, 0])  # the local channels are local
    assert (a[:, 8:, 0, 0] - b[:, 8:, 0, 0]).abs().max() > 1e-3


def test_pyramid_has_psp_channels_and_bins():
    module = PyramidContext(512)
    assert [level.bins for level in module.levels] == [1, 2, 3, 6]
    assert [level.conv.out_channels for level in module.levels] == [128] * 4
    assert module.out_channels == 1024


# ------------------------------------------------------------------ in the FCN


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("backbone", ["resnet18", "mobilenet_v3_large"])
@pytest.mark.parametrize("head", HEADS)
def test_output_has_the_input_size(head, backbone, context):
    model = fcnseg.build_model(head, backbone=backbone, num_classes=3, context=context).eval()
    assert model.score_fr.in_channels == 2 * model.backbone.taps[32].channels
    with torch.no_grad():
        for h, w in [(37, 61), (1, 1)]:
            assert model(torch.randn(2, 3, h, w)).shape == (2, 3, h, w)


@pytest.fixture(scope="module")
def vgg16():
    """One VGG16 backbone shared by the heads (building its 134 M parameters is the slow part)."""
    return build_backbone("vgg16").eval()


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("head", HEADS)
def test_vgg16_output_has_the_input_size(vgg16, head, context):
    model = FCN(vgg16, 3, context=context, **MODELS[head]).eval()
    assert model.score_fr.in_channels == 2 * 4096
    with torch.no_grad():
        for h, w in [(37, 61), (3, 5)]:
            assert model(torch.randn(1, 3, h, w)).shape == (1, 3, h, w)


def test_shorthands_and_config_carry_the_context():
    assert (
        fcnseg.fcn8s(num_classes=3, backbone="resnet18", context="pyramid").config["context"]
        == "pyramid"
    )
    assert fcnseg.fcn32s(num_classes=3, backbone="resnet18").config["context"] is None
    with pytest.raises(ValueError, match="unknown context 'aspp'"):
        fcnseg.build_model("fcn8s", backbone="resnet18", context="aspp")


def test_no_context_keeps_the_state_dict_keys():
    """context=None is the paper's FCN: old checkpoints load (same keys, same shapes)."""
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3)
    assert model.context is None
    head = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("backbone.")
    }
    assert head == {
        "score_fr.weight": (3, 512, 1, 1), "score_fr.bias": (3,),
        "upscore2.deconv.weight": (3, 3, 3, 3),
        "score_pool4.weight": (3, 256, 1, 1), "score_pool4.bias": (3,),
        "upscore_pool4.deconv.weight": (3, 3, 3, 3),
        "score_pool3.weight": (3, 128, 1, 1), "score_pool3.bias": (3,),
        "upscore.deconv.weight": (3, 3, 15, 15),
    }  # fmt: skip
    with_global = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3, context="global")
    extra = set(with_global.state_dict()) - set(model.state_dict())
    assert extra == {"context.norm_local.weight", "context.norm_global.weight"}


@pytest.mark.parametrize("context", CONTEXTS)
def test_a_far_away_region_changes_the_output_only_with_context(context):
    """Beyond ResNet-18's receptive field (435 px) only the context branch carries information.

    FCN-32s output column c depends on input columns within about c +- (217 + 32 + 32) px
    without context, so columns [0, 64) cannot see an edit at columns >= 704 of a 960-px-wide
    image: the plain FCN's output there is unchanged (the control), the context FCN's is not.
    """
    x = torch.randn(1, 3, 64, 960)
    edited = x.clone()
    edited[..., 704:] = torch.randn(1, 3, 64, 256) + 2.0
    for ctx, should_change in ((None, False), (context, True)):
        model = build("fcn32s", context=ctx)
        with torch.no_grad():
            a, b = model(x)[..., :64], model(edited)[..., :64]
        change = float((a - b).abs().max())
        scale = float(a.abs().max())
        if should_change:
            assert change > 1e-3 * scale
        else:
            assert change <= 1e-6 * scale


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("context", CONTEXTS)
def test_torchscript_gives_the_same_output(context):
    model = build("fcn8s", context=context)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        for size in [(45, 67), (64, 33)]:  # sizes are not frozen in the compiled graph
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(scripted(x), model(x))


@pytest.mark.parametrize("context", CONTEXTS)
def test_onnx_export_without_resize_and_parity_at_another_size(context, tmp_path):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    example = (1, 3, 64, 96)
    report = export_onnx(build("fcn8s", context=context), tmp_path / "m.onnx", example)
    parity = report["parity"]
    assert parity["passed"] and parity["size"] == list(parity_size(example))
    assert parity["max_abs_diff"] < 1e-3 and parity["argmax_agreement"] > 0.999
    ops = {node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node}
    assert "Resize" not in ops and "Upsample" not in ops
    # global: the unpooled vector is an Expand; pyramid: pooling/upsampling are MatMuls
    assert ("Expand" if context == "global" else "MatMul") in ops


@pytest.mark.parametrize("context", CONTEXTS)
def test_training_steps_reach_the_context_parameters(context):
    """Step 1 moves only the zero-started score layer (the start is the plain FCN's, which is
    what keeps training from scratch stable); from step 2 gradients reach the context head."""
    model = fcnseg.build_model("fcn8s", backbone="resnet18", num_classes=3, context=context)
    model.train()
    before = {k: v.detach().clone() for k, v in model.context.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, target = torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))
    for step in range(2):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), target)
        assert torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in model.context.parameters()]
        if step == 1:
            assert all(
                g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads
            )
        optimizer.step()
    for name, p in model.context.named_parameters():
        assert not torch.equal(p, before[name]), name


@pytest.mark.parametrize("context", CONTEXTS)
def test_save_load_round_trip(context, tmp_path):
    model = build("fcn16s", backbone="mobilenet_v3_large", context=context)
    fcnseg.save_model(model, tmp_path / "m.pt")
    loaded = fcnseg.load_model(tmp_path / "m.pt")
    assert loaded.config["context"] == context and loaded.config == model.config
    x = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_recipe_trains_and_resumes_with_global_context(tmp_path):
    """``model.context`` in a recipe reaches the trainer, its checkpoints and the resume."""
    overrides = [
        "model.arch=fcn32s", "model.backbone=resnet18", "model.num_classes=7",
        "model.context=global", "data.dataset=shapes", "data.options={size: [64, 64], length: 4}",
        "data.crop_size=[64, 64]", "data.batch_size=2", "data.workers=0",
        "data.scale_range=[1.0, 1.0]", "train.optimizer=adamw", "train.lr=0.001",
        "train.max_steps=2", "train.checkpoint_every=1", "train.device=cpu",
        "eval.every_steps=null", f"out={tmp_path / 'run'}",
    ]  # fmt: skip
    assert train(load_config(None, overrides), progress=False)["step"] == 2
    resumed = train(
        load_config(None, [*overrides, "train.max_steps=3"]), resume=True, progress=False
    )
    assert resumed["step"] == 3
    model = fcnseg.load_model(tmp_path / "run" / "last.pt")
    assert model.config["context"] == "global" and model.context is not None
