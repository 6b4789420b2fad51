"""Recipes load strictly, overrides are typed, staged recipes resolve."""

from pathlib import Path

import pytest
import yaml

from fcnseg.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
    stage_configs,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.rglob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    for required in [
        "shapes_demo.yaml",
        "voc_fcn32s_vgg16.yaml",
        "voc_fcn16s_vgg16.yaml",
        "voc_fcn8s_vgg16.yaml",
        "voc_fcn_staged_vgg16.yaml",
        "voc_fcn8s_atonce_vgg16.yaml",
        "camvid_fcn8s_lite0.yaml",
        "camvid_fcn16s_lite0.yaml",
        "camvid_fcn32s_lite0.yaml",
        "camvid_staged_lite0.yaml",
        "camvid_realtime.yaml",
        "camvid_fcn8s_resnet18.yaml",  # from scratch, in configs/scratch/
        "cityscapes_fcn8s_resnet50.yaml",
    ]:
        assert required in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads_strictly_and_round_trips(path):
    assert path.read_text().startswith("#"), "a recipe starts with a comment saying what it is"
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    assert config_from_dict(config_to_dict(cfg)) == cfg
    # The file spells out every top-level section with the dataclass keys.
    raw = yaml.safe_load(path.read_text())
    assert set(raw) >= {"model", "data", "train", "eval", "out"}


def test_defaults_without_a_file():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.model.arch == "fcn8s" and cfg.data.scale_range == [0.5, 2.0]
    assert stage_configs(cfg) == [("main", cfg)]


def test_overrides_are_typed():
    cfg = load_config(
        CONFIGS / "scratch" / "camvid_fcn8s_resnet18.yaml",
        [
            "train.lr=1e-10",  # PyYAML reads this as a string; the float field takes it
            "data.crop_size=[64,64]",
            "model.weights_backbone=null",
            "train.max_steps=4",
            "train.amp=bf16",
            "data.hflip=false",
            "data.options.size=[32, 32]",
            "out=runs/try",
        ],
    )
    assert cfg.train.lr == 1e-10 and isinstance(cfg.train.lr, float)
    assert cfg.data.crop_size == [64, 64]
    assert cfg.model.weights_backbone is None
    assert cfg.train.max_steps == 4 and cfg.train.amp == "bf16" and cfg.data.hflip is False
    assert cfg.data.options == {"size": [32, 32]}
    assert cfg.out == "runs/try"


def test_ints_are_accepted_for_floats():
    cfg = config_from_dict({"train": {"lr": 1, "max_minutes": 5}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.train.max_minutes, float)


def test_apply_overrides_does_not_mutate_and_indexes_lists():
    d = {"train": {"lr": 0.1}, "stages": [{"name": "a", "train": {}}]}
    out = apply_overrides(d, ["train.lr=0.5", "stages.0.train.lr=1e-3", "eval.every_steps=7"])
    assert d == {"train": {"lr": 0.1}, "stages": [{"name": "a", "train": {}}]}
    assert out["train"]["lr"] == 0.5 and out["eval"] == {"every_steps": 7}
    assert out["stages"][0]["train"]["lr"] == "1e-3"  # typed later, by config_from_dict
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.lr"])


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.lrr=0.1"], "'train.lrr'"),
        (["modle.arch=fcn8s"], "'modle'"),
        (["stages=[{name: a, model: {arhc: fcn8s}}]"], "'stages[0].model.arhc'"),
    ],
)
def test_unknown_key_is_an_error_naming_it(overrides, key):
    with pytest.raises(ConfigError, match="unknown key") as err:
        load_config(None, overrides)
    assert key in str(err.value) and "allowed:" in str(err.value)


def test_unknown_key_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"train": {"lrr": 0.1}})
    assert "unknown key 'train.lrr' (allowed: optimizer, lr," in str(err.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.lr=abc"], "train.lr: expected float, got 'abc'"),
        (["train.epochs=2.5"], "train.epochs: expected int"),
        (["train.max_steps=many"], "train.max_steps: expected int or null"),
        (["data.hflip=1"], "data.hflip: expected bool"),
        (["data.crop_size=[64, x]"], "data.crop_size[1]: expected int"),
        (["train.optimizer=adam"], "train.optimizer: expected one of 'sgd', 'adamw'"),
        (["train.schedule=step"], "train.schedule: expected one of 'fixed', 'poly', 'cosine'"),
        (["train.loss_reduction=none"], "train.loss_reduction: expected one of 'mean', 'sum'"),
        (["train.amp=fp32"], "train.amp: expected bool or one of 'bf16', 'fp16'"),
        (["train.class_weights=inverse"], "train.class_weights"),
        (["model=fcn8s"], "model: expected mapping"),
        (["stages=[{name: a, train: {lr: fast}}]"], "stages[0].train.lr: expected float"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_class_weights_accepts_list_or_median_freq():
    assert load_config(None, ["train.class_weights=[1, 2.5]"]).train.class_weights == [1.0, 2.5]
    cfg = load_config(None, ["train.class_weights=median_freq"])
    assert cfg.train.class_weights == "median_freq"


def test_save_and_load_round_trip(tmp_path):
    cfg = load_config(CONFIGS / "voc_fcn_staged_vgg16.yaml", ["train.lr=1e-12"])
    save_config(cfg, tmp_path / "sub" / "config.yaml")
    assert load_config(tmp_path / "sub" / "config.yaml") == cfg


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_reference_voc_hyper_parameters():
    """The Caffe reference voc-fcn{32,16,8}s/solver.prototxt values."""
    for name, arch, lr, init_from in [
        ("voc_fcn32s_vgg16", "fcn32s", 1e-10, None),
        ("voc_fcn16s_vgg16", "fcn16s", 1e-12, "runs/voc_fcn32s_vgg16/best.pt"),
        ("voc_fcn8s_vgg16", "fcn8s", 1e-14, "runs/voc_fcn16s_vgg16/best.pt"),
        ("voc_fcn8s_atonce_vgg16", "fcn8s_atonce", 1e-10, None),
    ]:
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert (cfg.model.arch, cfg.train.lr, cfg.model.init_from) == (arch, lr, init_from)
        assert cfg.model.backbone == "vgg16" and cfg.model.pad100 is True
        assert cfg.train.optimizer == "sgd" and cfg.train.schedule == "fixed"
        assert (cfg.train.momentum, cfg.train.weight_decay) == (0.99, 0.0005)
        assert cfg.train.loss_reduction == "sum" and cfg.data.batch_size == 1
        assert cfg.data.crop_size is None
        assert (cfg.data.dataset, cfg.data.train_split, cfg.data.val_split) == (
            "sbd",
            "train",
            "seg11valid",
        )
        assert cfg.train.max_steps == (300000 if "atonce" in name else 100000)


def test_staged_recipe_resolves_three_chained_stages():
    cfg = load_config(CONFIGS / "voc_fcn_staged_vgg16.yaml", ["out=runs/staged"])
    stages = stage_configs(cfg)
    assert [name for name, _ in stages] == ["fcn32s", "fcn16s", "fcn8s"]
    archs = [c.model.arch for _, c in stages]
    assert archs == ["fcn32s", "fcn16s", "fcn8s"]
    assert [c.train.lr for _, c in stages] == [1e-10, 1e-12, 1e-14]
    assert [c.out for _, c in stages] == [
        "runs/staged/fcn32s",
        "runs/staged/fcn16s",
        "runs/staged/fcn8s",
    ]
    assert [c.model.init_from for _, c in stages] == [
        None,
        "runs/staged/fcn32s/best.pt",
        "runs/staged/fcn16s/best.pt",
    ]
    for _, c in stages:
        assert c.stages is None
        assert c.train.momentum == 0.99 and c.train.loss_reduction == "sum"
    assert stages[0][1].model.weights_backbone == "IMAGENET1K_V1"


def test_stage_errors():
    with pytest.raises(ConfigError, match="first stage"):
        config_from_dict({"stages": [{"name": "a", "model": {"init_from": "previous"}}]})
    with pytest.raises(ConfigError, match="unique"):
        config_from_dict({"stages": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ConfigError, match="missing key 'stages\\[0\\].name'"):
        config_from_dict({"stages": [{"model": {}}]})
    with pytest.raises(ConfigError, match="only meaningful inside stages"):
        config_from_dict({"model": {"init_from": "previous"}})


def test_command_line_wins_over_every_stage_and_a_stage_key_after_it_over_that_stage():
    recipe = CONFIGS / "voc_fcn_staged_vgg16.yaml"
    cfg = load_config(recipe, ["out=runs/s", "train.max_steps=4", "train.lr=0.5"])
    stages = stage_configs(cfg)
    assert [c.train.max_steps for _, c in stages] == [4, 4, 4]
    assert [c.train.lr for _, c in stages] == [0.5, 0.5, 0.5]  # each stage sets its own lr
    cfg = load_config(recipe, ["out=runs/s", "train.max_steps=4", "stages.2.train.max_steps=9"])
    assert [c.train.max_steps for _, c in stage_configs(cfg)] == [4, 4, 9]
    # a model key keeps "previous" chains intact when the command line does not name it
    assert stage_configs(cfg)[1][1].model.init_from == "runs/s/fcn32s/best.pt"


def test_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  arch: fcn8s\n  backbone: [resnet18\ntrain: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line \d+, column \d+"):
        load_config(path)
    path.write_bytes(b"model: {arch: \xff\xfe}\n")
    with pytest.raises(ConfigError, match="broken.yaml: not a text"):
        load_config(path)


def test_default_recipe_is_used_without_a_file():
    base = {"model": {"num_classes": 7}, "out": "runs/x"}
    cfg = load_config(None, ["train.lr=0.2"], default=base)
    assert cfg.model.num_classes == 7 and cfg.train.lr == 0.2 and cfg.out == "runs/x"
    assert base == {"model": {"num_classes": 7}, "out": "runs/x"}  # not mutated


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("camvid_*.yaml")), ids=lambda p: p.stem)
def test_camvid_recipes_budget_wall_time_not_steps(recipe):
    # a step budget tuned on one CPU ends undecayed (slower CPU) or early (faster one)
    t = load_config(recipe).train
    assert t.max_steps is None and t.max_minutes == 20.0 and t.schedule in ("poly", "cosine")


def test_a_stage_may_change_the_crop_and_the_evaluation_and_the_command_line_still_wins(tmp_path):
    # e.g. most of the budget on small crops, then a short stage on whole images
    d = {
        "data": {"crop_size": [176, 240], "batch_size": 8},
        "eval": {"tta": [0.75, 1.0, "flip"]},
        "out": "runs/p",
        "stages": [
            {"name": "crops"},
            {
                "name": "whole",
                "model": {"init_from": "previous"},
                "data": {"crop_size": [360, 480], "batch_size": 2},
                "eval": {"tta": None},
            },
        ],
    }
    stages = stage_configs(config_from_dict(d))
    assert [c.data.crop_size for _, c in stages] == [[176, 240], [360, 480]]
    assert [c.data.batch_size for _, c in stages] == [8, 2]
    assert [c.eval.tta for _, c in stages] == [[0.75, 1.0, "flip"], None]
    with pytest.raises(ConfigError, match=r"unknown key .stages\[1\]\.data\.crop."):
        config_from_dict({**d, "stages": [{"name": "a"}, {"name": "b", "data": {"crop": 1}}]})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(d))
    cfg = load_config(path, ["data.batch_size=4"])
    assert [c.data.batch_size for _, c in stage_configs(cfg)] == [4, 4]
