"""fcnseg checkpoints: ``save_model``, ``read_checkpoint`` and ``load_model``.

The file layer (atomic writes, ``weights_only`` loading, safetensors, ``CheckpointError``) is
:mod:`fcnseg.io.files`. ``load_model`` rebuilds the model from the description stored in the
file (:func:`fcnseg.models.build_model_from_config`), so it sits above :mod:`fcnseg.models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fcnseg.io.files import FORMAT, VERSION, CheckpointError, atomic_save, load_file
from fcnseg.models import build_model_from_config

__all__ = ["load_model", "read_checkpoint", "save_model"]


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
    ``fcnseg.accel.onednn.to_onednn(model, stream_weights=True)`` inference need not keep
    them resident either. Returns the model in eval mode on ``map_location``.
    """
    ckpt = read_checkpoint(path, mmap=mmap)
    cfg = dict(ckpt["config"])
    # Built on the meta device (no memory, no random init), then the file's tensors are
    # assigned as the parameters and buffers: the weights are never held twice.
    with torch.device("meta"):
        model = build_model_from_config(cfg, load_weights=False)
    try:
        model.load_state_dict(ckpt["model"], assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the stored config ({first})") from None
    return model.to(map_location).eval()
