"""Files fcnseg reads and writes: written atomically, read without running code.

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

__all__ = [
    "FORMAT",
    "VERSION",
    "CheckpointError",
    "atomic_save",
    "load_file",
    "load_state_dict_file",
]

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
