"""The bottom layer: files, checkpoints, images and devices (imports nothing of fcnseg above).

- :mod:`fcnseg.io.files`: atomic ``torch.save``, safe loading (``weights_only=True``, mmap,
  safetensors), plain state dicts, :class:`~fcnseg.io.files.CheckpointError`.
- :mod:`fcnseg.io.images`: the one image reader (datasets, ``predict`` and the HTTP server), its
  extension list and its pixel limit.
- :mod:`fcnseg.io.devices`: the one device rule (``resolve_device``).
"""

from fcnseg.io.devices import resolve_device
from fcnseg.io.files import CheckpointError, atomic_save, load_file, load_state_dict_file
from fcnseg.io.images import (
    IMAGE_EXTENSIONS,
    decode_image,
    load_image,
    read_image,
    set_max_image_pixels,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "CheckpointError",
    "atomic_save",
    "decode_image",
    "load_file",
    "load_image",
    "load_state_dict_file",
    "read_image",
    "resolve_device",
    "set_max_image_pixels",
]
