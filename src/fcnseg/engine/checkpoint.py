"""Checkpoint files: written atomically, read without running code.

One file holds the model config (enough to rebuild the model), its state dict, and, for
training checkpoints, optimiser/scheduler/scaler state, step and metrics. Files are written to
a temporary name, fsync'ed, then renamed over the target, so a crash or a full disk at any
moment leaves the previous checkpoint intact. They are read with ``weights_only=True``: a
pickle that would execute code is refused.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "fcnseg"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint or weight file that cannot be used (the message names the file)."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` via temp file + fsync + rename (never a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-save
        stale.unlink(missing_ok=True)
    return path


def load_file(path: str | Path, mmap: bool = False) -> Any:
    """Load a ``torch.save`` file safely (``weights_only=True``) on the CPU.

    ``mmap=True`` maps the tensors from the file instead of reading them (``torch.load``'s
    mmap): nothing is read until used, and the pages are the page cache's. Safetensors files
    are read as usual.

    Raises:
        CheckpointError: missing file, truncated/corrupt file, or a pickle that would run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain "
            f"data (it could run code when unpickled): {first}"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first})") from None


def _load_safetensors(path: Path) -> dict:
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        state = {k: f.get_tensor(k) for k in f.keys()}
    if "fcnseg_config" in meta:
        return {"format": FORMAT, "config": json.loads(meta["fcnseg_config"]), "model": state}
    return state


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A plain state dict from ``path`` (a raw state dict, or one wrapped under a usual key)."""
    obj = load_file(path)
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"{path}: holds no state dict")


def save_model(model: torch.nn.Module, path: str | Path, **extra: Any) -> Path:
    """Write ``model`` (weights + the config that rebuilds it, no optimiser state) to ``path``.

    ``extra`` entries (e.g. ``metrics=...``) are stored beside them. Atomic.
    """
    config = getattr(model, "config", None)
    if not config:
        raise ValueError("save_model needs a model built by fcnseg (it has no .config)")
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": FORMAT, "version": VERSION, "config": dict(config)}
    payload["model"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload.update(extra)
    return atomic_save(payload, path)


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict:
    """The dict of an fcnseg checkpoint (``config``, ``model``, ...); clear error otherwise."""
    obj = load_file(path, mmap=mmap)
    if not (isinstance(obj, dict) and obj.get("format") == FORMAT and "config" in obj):
        raise CheckpointError(f"{path}: not an fcnseg checkpoint (no fcnseg config inside)")
    return obj


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False
) -> torch.nn.Module:
    """Rebuild the model stored in an fcnseg checkpoint (or safetensors export) and load it.

    ``mmap=True`` (CPU): the parameters *are* the file's tensors, memory-mapped (no copy, read
    when first used; see ``load_file``), so loading never holds the weights twice; with
    ``fcnseg.models.onednn.to_onednn(model, stream_weights=True)`` inference need not keep
    them resident either. Returns the model in eval mode on ``map_location``.
    """
    from fcnseg.models import build_model

    ckpt = read_checkpoint(path, mmap=mmap)
    cfg = dict(ckpt["config"])
    # Built on the meta device (no memory, no random init), then the file's tensors are
    # assigned as the parameters and buffers: the weights are never held twice.
    with torch.device("meta"):
        model = build_model(
            cfg.pop("arch"),
            backbone=cfg.pop("backbone"),
            num_classes=cfg.pop("num_classes"),
            pad100=cfg.pop("pad100", False),
            learnable_upsampling=cfg.pop("learnable_upsampling", False),
            class_names=cfg.pop("class_names", None),
            palette=cfg.pop("palette", None),
            preprocess=cfg.pop("preprocess", None),
            context=cfg.pop("context", None),
        )
    try:
        model.load_state_dict(ckpt["model"], assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the stored config ({first})") from None
    return model.to(map_location).eval()
