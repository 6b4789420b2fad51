"""Training recipes as typed data.

A recipe is a YAML file whose keys are exactly the fields of the dataclasses below
(``model``, ``data``, ``train``, ``eval``, ``out``, ``stages``). Loading is strict: an
unknown key or a value of the wrong type raises :class:`ConfigError` naming the key and
what is allowed. Types are checked against the field annotations themselves, so adding a
field is one line here and nothing else.

    cfg = load_config("configs/camvid_fcn8s_lite0.yaml", ["train.lr=1e-3", "out=runs/try"])

Output paths. A recipe may come from someone else, so it must not make fcnseg write outside
the run folder it names. The rule:

- ``out`` from a recipe file (or any dict given to :func:`config_from_dict`) must be a
  relative path with no ``..`` component, not absolute, not starting with ``~``: it always
  lands below the working folder. An absolute path, or one with ``..``, is accepted only
  when the user gave it explicitly (``--set out=/scratch/run``, which :func:`load_config`
  marks as trusted, or ``config_from_dict(d, trust_out=True)`` from Python code).
- every file name derived from config values (stage names, class names, split names, ...)
  goes through :func:`safe_output_path`, which resolves it (symlinks included) and refuses
  it unless it stays under ``out``. Stage names are single path components (no ``/``,
  ``\\``, ``.`` or ``..``).

Staged training (the paper's FCN-32s -> 16s -> 8s recipe) is a list of ``stages``, each
a partial override of ``model``, ``data``, ``train`` and ``eval`` (a stage may change the
crop, the batch or the evaluation as well as the head and the schedule); :func:`stage_configs`
resolves them into one full :class:`Config` per stage. ``model.init_from: previous`` in a
stage means "start from the previous stage's ``best.pt``".
"""

from __future__ import annotations

import copy
import dataclasses
import re
import types
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

__all__ = [
    "PREVIOUS",
    "Precision",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "StageConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "parse_size",
    "training_precision",
    "safe_output_path",
    "save_config",
    "stage_configs",
]

#: ``model.init_from`` value in a stage: initialise from the previous stage's best.pt.
PREVIOUS = "previous"
_STAGE_SECTIONS = ("model", "data", "train", "eval")  # what a stage may override


#: the precisions of the one precision policy (:mod:`fcnseg.accel.precision` reads them here, so a
#: recipe, ``--precision`` and ``precision=`` accept the same names)
Precision = Literal["fp32", "bf16", "fp16", "auto"]


class ConfigError(ValueError):
    """A recipe key is unknown, missing, or has a value of the wrong type."""


@dataclass
class ModelConfig:
    arch: str = "fcn8s"
    backbone: str = "resnet18"
    num_classes: int = 21
    pad100: bool = False  # Caffe reference geometry (conv1_1 padding 100)
    weights_backbone: str | None = None  # torchvision enum name or a local file
    weights: str | None = None  # full-FCN weights
    learnable_upsampling: bool = False
    context: Literal["global", "pyramid"] | None = None  # ParseNet / PSPNet context head
    init_from: str | None = None  # staged training: checkpoint of the previous stage


@dataclass
class DataConfig:
    dataset: str = "shapes"
    root: str | None = None
    train_split: str = "train"
    val_split: str = "val"
    crop_size: list[int] | None = None  # [H, W]; None = whole images
    batch_size: int = 8
    workers: int = 2
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    hflip: bool = True
    color_jitter: float = 0.2
    base_size: int | None = None
    # refuse images with more pixels (decompression bombs); None = PIL's default (89.5 MP)
    max_image_pixels: int | None = None
    # keep decoded samples in memory (decode once per run, not per epoch; all decoded in
    # threads before training starts): H*W*4 bytes each, fine for CamVid (~320 MB), not for
    # Cityscapes' 2975 2048x1024 images
    cache: bool = False
    options: dict = field(default_factory=dict)  # extra kwargs for build_dataset


@dataclass
class TrainConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    schedule: Literal["fixed", "poly", "cosine"] = "poly"
    warmup_steps: int = 0
    poly_power: float = 0.9
    loss_reduction: Literal["mean", "sum"] = "mean"  # "sum" = Caffe's normalize: false
    class_weights: list[float] | Literal["median_freq", "sqrt_median_freq"] | None = None
    # online hard example mining: only pixels whose true-class probability is below the
    # threshold count, and at least ohem_min_kept of the batch's hardest (None: all pixels)
    ohem_thresh: float | None = None
    ohem_min_kept: int = 0
    bias_lr_mult: float = 2.0
    backbone_lr_mult: float = 1.0  # the pretrained backbone's rate, as a fraction of lr
    freeze_bn: bool = False  # keep the backbone's BatchNorm statistics (ImageNet's) fixed
    # fix the weights of the backbone's layers up to this stride (4: stem and first stage, as
    # detectron2's FREEZE_AT=2); their backward is skipped. None: every layer trains
    freeze_backbone_to_stride: int | None = None
    channels_last: bool = False  # NHWC activations: depthwise/1x1 nets (EfficientNet) run faster
    bias_decay: bool = False
    grad_accum: int = 1
    clip_grad_norm: float | None = None
    max_steps: int | None = None
    max_minutes: float | None = None
    epochs: int = 50
    # autocast over fp32 master weights (fcnseg.accel.precision); auto: fp32 where the CPU or
    # GPU has no native bf16, else whichever of the two the first batch runs faster
    precision: Precision = "fp32"
    amp: bool | Literal["bf16", "fp16"] = False  # deprecated: precision (amp: true = fp16)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int | None = None  # steps; None = every epoch
    device: str = "auto"
    sync_bn: bool = False  # DDP: BatchNorm statistics over the global batch (SyncBatchNorm)
    # parameters and images; float64 makes runs that sum in a different order (DDP vs one
    # process, another CPU's kernels) agree to ~1e-12 instead of ~1e-5 (reproducibility checks)
    dtype: Literal["float32", "float64"] = "float32"


@dataclass
class EvalConfig:
    every_steps: int | None = 500
    tta: list | None = None  # e.g. ["flip", 0.75, 1.0, 1.25]
    boundary_dilation: int | None = None


@dataclass
class StageConfig:
    """One stage of a staged recipe: partial overrides of the top-level model/data/train/eval."""

    name: str
    model: dict = field(default_factory=dict, metadata={"partial": ModelConfig})
    data: dict = field(default_factory=dict, metadata={"partial": DataConfig})
    train: dict = field(default_factory=dict, metadata={"partial": TrainConfig})
    eval: dict = field(default_factory=dict, metadata={"partial": EvalConfig})


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out: str = "runs/default"
    stages: list[StageConfig] | None = None


# --------------------------------------------------------------------------- checking


def _describe(tp: Any) -> str:
    """Human-readable name of an annotation: 'float', 'list[int] or null', ..."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_describe(a) for a in args)}]"
    return "mapping" if dataclasses.is_dataclass(tp) else tp.__name__


def _type_error(key: str, tp: Any, value: Any) -> ConfigError:
    return ConfigError(f"{key}: expected {_describe(tp)}, got {value!r}")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against annotation ``tp``; return it (ints widened to float)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        nested = None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as e:  # keep an error from inside the value: it is precise
                nested = nested or (None if str(e).startswith(f"{key}: expected") else e)
        raise nested or _type_error(key, tp, value)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return _from_dict(tp, value, key)
    elif tp is list or origin is list:
        if isinstance(value, list | tuple):
            if not args:
                return list(value)
            return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # PyYAML (YAML 1.1) reads "1e-10" (no dot) as a string: accept numeric strings.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    else:
        raise TypeError(f"unsupported annotation {tp!r} for {key}")
    raise _type_error(key, tp, value)


def _join(prefix: str, name: object) -> str:
    return f"{prefix}.{name}" if prefix else str(name)


def _checked_items(cls: type, d: dict, prefix: str) -> dict:
    """Coerce each key of ``d`` against the fields of ``cls``; unknown keys are errors."""
    hints = get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name, value in d.items():
        key = _join(prefix, name)
        if name not in known:
            raise ConfigError(f"unknown key '{key}' (allowed: {', '.join(known)})")
        partial = known[name].metadata.get("partial")
        if partial is not None:  # a dict of overrides for another dataclass
            if not isinstance(value, dict | type(None)):
                raise ConfigError(f"{key}: expected mapping of {partial.__name__} keys")
            out[name] = _checked_items(partial, value or {}, key)
        else:
            out[name] = _coerce(value, hints[name], key)
    return out


def _from_dict(cls: type, d: dict, prefix: str) -> Any:
    kwargs = _checked_items(cls, d, prefix)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in kwargs:
            raise ConfigError(f"missing key '{_join(prefix, f.name)}'")
    return cls(**kwargs)


# --------------------------------------------------------------------------- output paths


def _check_out(out: str) -> None:
    """``out`` from a recipe: relative, no ``..``, not absolute, not ``~`` (see module doc)."""
    parts = out.replace("\\", "/").split("/")
    if not out.strip():
        raise ConfigError("out: must name a folder, got an empty string")
    if Path(out).is_absolute() or out.startswith(("/", "\\", "~")) or re.match(r"[A-Za-z]:", out):
        reason = "is absolute" if not out.startswith("~") else "starts with '~'"
    elif ".." in parts:
        reason = "has a '..' component"
    else:
        return
    raise ConfigError(
        f"out: {out!r} {reason}; a recipe may only write below the working folder (a relative "
        "path without '..'); give such a path explicitly with --set out=PATH"
    )


def safe_output_path(out_dir: str | Path, name: str | Path) -> Path:
    """``out_dir / name``, refused unless it stays inside ``out_dir``.

    Use it for every output file whose name comes from config values or data (stage, class,
    split or image names). ``name`` may have sub-folders; it is resolved together with
    ``out_dir`` (``..`` and symlinks followed) and must end strictly below ``out_dir``.

    Returns:
        ``Path(out_dir) / <the normalised relative name>``.

    Raises:
        ConfigError: ``name`` is empty, absolute, or resolves outside ``out_dir``
            (``"output name '../x' escapes the run folder runs/a"``).
    """
    text = str(name)
    if not text.strip() or "\x00" in text or "\x00" in str(out_dir):
        raise ConfigError(f"output name {text!r} is empty or not a valid file name")
    if Path(text).is_absolute() or text.startswith(("/", "\\")):
        raise ConfigError(f"output name {text!r} is absolute; it must be inside {out_dir}")
    base = Path(out_dir).resolve()
    target = (base / text).resolve()
    if target == base or base not in target.parents:
        raise ConfigError(f"output name {text!r} escapes the run folder {out_dir}")
    return Path(out_dir) / target.relative_to(base)


# --------------------------------------------------------------------------- public API


def config_from_dict(d: dict, *, trust_out: bool = False) -> Config:
    """Build a :class:`Config` from a plain (YAML-loaded) dict, strictly.

    Missing keys take their defaults. Raises :class:`ConfigError` on an unknown key
    (``unknown key 'train.lrr' (allowed: ...)``), a wrong type
    (``train.lr: expected float, got 'abc'``), an unresolvable stage list, or an ``out``
    that could write outside the working folder (absolute, ``..``, ``~``) unless
    ``trust_out`` (the caller, not a recipe file, chose ``out``: see the module docstring).
    """
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping, got {type(d).__name__}")
    cfg = _from_dict(Config, d, "")
    if not trust_out:
        _check_out(cfg.out)
    pixels = cfg.data.max_image_pixels
    if pixels is not None and pixels <= 0:
        raise ConfigError(f"data.max_image_pixels: expected a positive int or null, got {pixels}")
    if cfg.stages:
        names = [s.name for s in cfg.stages]
        for i, name in enumerate(names):
            bad = not name or name in (".", "..") or "/" in name or "\\" in name
            if bad or names.index(name) != i:
                raise ConfigError(
                    f"stages[{i}].name: {name!r} must be unique, non-empty, one path component "
                    "(no '/', '\\', '.' or '..')"
                )
        stage_configs(cfg)  # resolve once so errors surface at load time
    elif cfg.model.init_from == PREVIOUS:
        raise ConfigError(f"model.init_from: {PREVIOUS!r} is only meaningful inside stages")
    return cfg


def config_to_dict(cfg: Config) -> dict:
    """Plain nested dict (lists, dicts, scalars) that :func:`config_from_dict` reads back."""
    return dataclasses.asdict(cfg)


def apply_overrides(d: dict, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Return a copy of ``d`` with ``"a.b=value"`` overrides applied.

    Values are parsed with ``yaml.safe_load`` ("null", "true", "[360, 480]", "1e-10");
    missing intermediate mappings are created; a numeric path part indexes a list
    (``stages.1.train.lr=1e-12``). Key validity is checked later by :func:`config_from_dict`.
    """
    d = copy.deepcopy(d)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{key}: cannot parse value {raw!r}: {e}") from None
        *parents, last = key.split(".")
        _set_key(d, key, parents, last, value)
        # The command line wins over the recipe file: a top-level section's value also
        # replaces the value a stage sets for the same key.
        if len(parents) == 1 and parents[0] in _STAGE_SECTIONS:
            stages = d.get("stages") if isinstance(d.get("stages"), list) else []
            for stage in stages:
                section = stage.get(parents[0]) if isinstance(stage, dict) else None
                if isinstance(section, dict) and last in section:
                    section[last] = copy.deepcopy(value)
    return d


def _set_key(d: dict, key: str, parents: list[str], last: str, value: Any) -> None:
    """Set ``d[parents...][last] = value``, creating mappings and indexing lists."""
    node: Any = d
    for i, part in enumerate(parents):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{'.'.join(parents[:i])}' is not a mapping")
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise ConfigError(f"cannot set '{key}': '{'.'.join(parents)}' is not a mapping")


def _yaml_problem(e: yaml.YAMLError) -> str:
    """'line 3, column 7: mapping values are not allowed here' from a PyYAML error."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    default: dict | None = None,
) -> Config:
    """Read a YAML recipe, apply overrides, validate.

    ``path=None`` starts from ``default`` (a recipe dict; ``None``: the dataclass defaults).
    An override of a top-level ``model.*``/``train.*`` key wins over every stage that sets
    the same key (``stages.N.train.max_steps=...`` after it sets one stage only).

    Raises :class:`ConfigError` if the file is missing, is not UTF-8 YAML, is not a mapping,
    or fails :func:`config_from_dict`. An ``out=...`` override is the user's explicit choice
    and may be absolute or contain ``..``; ``out`` from the file may not (see the module
    docstring).
    """
    d: Any = copy.deepcopy(default) if default is not None else {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            d = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text (UTF-8) file ({e.reason})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(e)})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    out_given = any(item.partition("=")[0].strip() == "out" for item in overrides)
    return config_from_dict(apply_overrides(d, overrides), trust_out=out_given)


def save_config(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` as YAML (keys in dataclass order), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


def stage_configs(cfg: Config) -> list[tuple[str, Config]]:
    """Resolve a staged recipe into ``[(stage_name, Config), ...]``.

    Without ``stages``: ``[("main", cfg)]``. Otherwise each stage starts from the top-level
    recipe, applies its ``model``/``data``/``train``/``eval`` overrides, writes to
    ``<out>/<stage name>``, and ``model.init_from: previous`` becomes the previous stage's
    ``<out>/best.pt``.
    The resolved configs have ``stages = None``.
    """
    if not cfg.stages:
        return [("main", cfg)]
    base = config_to_dict(cfg)
    base["stages"] = None
    resolved: list[tuple[str, Config]] = []
    previous_out: str | None = None
    for i, stage in enumerate(cfg.stages):
        d = copy.deepcopy(base)
        for section in _STAGE_SECTIONS:
            d[section].update(getattr(stage, section))
        d["out"] = str(Path(cfg.out) / stage.name)
        if d["model"]["init_from"] == PREVIOUS:
            if previous_out is None:
                raise ConfigError(f"stages[{i}].model.init_from: the first stage has no previous")
            d["model"]["init_from"] = str(Path(previous_out) / "best.pt")
        # cfg.out was checked when cfg was built and stage names are single components
        resolved.append((stage.name, config_from_dict(d, trust_out=True)))
        previous_out = d["out"]
    return resolved


def training_precision(train: TrainConfig) -> str:
    """``train.precision``, or what the deprecated ``train.amp`` meant (``true``: fp16 on a GPU,
    as before; ``bf16`` / ``fp16``) when a recipe still sets it.

    Raises:
        ConfigError: both set to different things.
    """
    if train.amp is False or train.amp is None:
        return train.precision
    legacy = "fp16" if train.amp is True else train.amp
    if train.precision not in ("fp32", legacy):
        raise ConfigError(
            f"train.amp={train.amp!r} and train.precision={train.precision!r}: set one"
        )
    return legacy


def parse_size(text: str | Iterable[int], name: str = "size") -> tuple[int, int]:
    """``"500x500"``, ``"360x480"`` (height x width), ``"512"`` or ``(h, w)`` -> ``(h, w)``.

    ``name`` (e.g. the command-line flag) starts the error message.
    """
    if not isinstance(text, str):
        h, w = text
        return int(h), int(w)
    parts = text.lower().replace(",", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"{name}: expected HxW such as 500x500, got {text!r}") from None
    if len(dims) == 1:
        dims = dims * 2
    if len(dims) != 2 or min(dims) < 1:
        raise ValueError(f"{name}: expected HxW with positive sides, got {text!r}")
    return dims[0], dims[1]
