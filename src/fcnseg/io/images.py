"""The one image reader: dataset samples, ``predict`` inputs and HTTP uploads all come through here.

- One extension list, :data:`IMAGE_EXTENSIONS`, for folders of images (datasets, ``predict DIR``).
- One pixel limit (decompression-bomb guard): PIL's ``Image.MAX_IMAGE_PIXELS`` (default
  89,478,485 pixels, about 9459 x 9459), enforced strictly: an image over the limit is refused,
  where PIL alone would only warn up to twice the limit. :func:`set_max_image_pixels` changes it
  for this process and, through the ``FCNSEG_MAX_IMAGE_PIXELS`` environment variable, for worker
  processes started afterwards (a ``spawn`` DataLoader worker re-imports fcnseg and would
  otherwise see PIL's default again).
- One decoding rule (:func:`to_rgb`) from any PIL mode to RGB ``uint8``: 16-bit grey is scaled
  (``0..65535 -> 0..255``, not clipped), palette images go through RGBA (a transparency entry is
  honoured), alpha is dropped, CMYK / YCbCr / L / 1 / F converted by PIL. Pixels are taken as
  stored (EXIF orientation is not applied), so label maps line up with the stored pixel array.

Every failure is one error naming the file: ``FileNotFoundError`` (no file),
:class:`UnreadableImageError` (not an image, truncated, corrupt) or :class:`ImageTooLargeError`
(over the pixel limit); both of the latter are ``ValueError``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS_ENV",
    "ImageTooLargeError",
    "UnreadableImageError",
    "decode_image",
    "get_max_image_pixels",
    "image_size",
    "is_image_file",
    "load_image",
    "read_image",
    "set_max_image_pixels",
    "to_rgb",
]

#: File name extensions taken as images (lower case; matched case-insensitively).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: PIL's own default limit (``1024 * 1024 * 1024 // 4 // 3`` pixels).
DEFAULT_MAX_IMAGE_PIXELS = 1024 * 1024 * 1024 // 4 // 3
#: Environment variable carrying the limit to worker processes: an integer, or ``none``.
MAX_PIXELS_ENV = "FCNSEG_MAX_IMAGE_PIXELS"

#: What the reader accepts: a file path, encoded bytes, or an open binary file.
ImageSource = str | Path | bytes | io.IOBase


class UnreadableImageError(ValueError):
    """An image or mask file PIL cannot identify or fully decode (the message names the file)."""


class ImageTooLargeError(ValueError):
    """An image with more pixels than the decompression-bomb limit (the message names the file)."""


def is_image_file(path: str | Path) -> bool:
    """``True`` when ``path``'s extension is one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- pixel limit


def get_max_image_pixels() -> int | None:
    """The current limit (``PIL.Image.MAX_IMAGE_PIXELS``); ``None`` = no limit."""
    return Image.MAX_IMAGE_PIXELS


def set_max_image_pixels(n: int | None) -> int | None:
    """Refuse images with more than ``n`` pixels from now on; return the previous limit.

    Args:
        n: a positive pixel count, or ``None`` for no limit (only for trusted data).
            :data:`DEFAULT_MAX_IMAGE_PIXELS` restores PIL's default.

    Sets ``PIL.Image.MAX_IMAGE_PIXELS`` (process-wide: it applies to every PIL reader) and the
    ``FCNSEG_MAX_IMAGE_PIXELS`` environment variable, so worker processes started later use the
    same limit.

    Raises:
        ValueError: ``n`` is not a positive integer or ``None``.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ValueError(f"max image pixels must be a positive integer or None, got {n!r}")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = n
    os.environ[MAX_PIXELS_ENV] = "none" if n is None else str(n)
    return previous


def _limit_from_environment() -> None:
    raw = os.environ.get(MAX_PIXELS_ENV)
    if raw is None:
        return
    value = raw.strip().lower()
    if value == "none":
        Image.MAX_IMAGE_PIXELS = None
    elif value.isdigit() and int(value) > 0:
        Image.MAX_IMAGE_PIXELS = int(value)
    else:
        raise ValueError(f"{MAX_PIXELS_ENV}={raw!r}: expected a positive integer or 'none'")


_limit_from_environment()

# PIL reads its limit from a module global when a file is opened; a per-call limit swaps it for
# the duration of the open, one open at a time (the HTTP server decodes from several threads).
_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _opened(source, limit: int | None, override: bool):
    if not override:
        with Image.open(source) as img:
            yield img
        return
    with _LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit
        try:
            img = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


# --------------------------------------------------------------------------- reading


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _too_large(name: str, what: str, size: str, limit: int | None) -> str:
    return (
        f"{name}: {what} has {size} pixels, over the limit of {limit} (possible decompression "
        "bomb; a file that exceeds the limit is refused: raise it with --max-image-pixels if you "
        "trust the file)"
    )


def _source_and_name(source: ImageSource, name: str | None) -> tuple[object, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(source)), name or "image data"
    if isinstance(source, (str, Path)):
        return source, name or str(source)
    return source, name or str(getattr(source, "name", "image data"))


def read_image(
    source: ImageSource,
    what: str = "image",
    *,
    max_pixels: int | None = None,
    name: str | None = None,
) -> Image.Image:
    """Open and fully decode an image; return the loaded PIL image (file closed), mode as stored.

    Args:
        source: a file path, the encoded bytes (an upload), or an open binary file.
        what: the word used in error messages (``"image"``, ``"mask"``).
        max_pixels: the pixel limit for this call; default the process-wide one
            (:func:`get_max_image_pixels`).
        name: what error messages call the source (default: the path, or ``"image data"``).

    Raises:
        FileNotFoundError: no such file (``"<path>: no such image file"``).
        ImageTooLargeError: more pixels than the limit.
        UnreadableImageError: not an image PIL can identify, truncated, or corrupt data.
    """
    source, name = _source_and_name(source, name)
    override = max_pixels is not None
    limit = int(max_pixels) if override else Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            # PIL only warns between the limit and twice the limit: make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _opened(source, limit, override) as img:
                pixels = img.width * img.height
                if limit is not None and pixels > limit:  # also when the filter above raced
                    size = f"{img.width}x{img.height} = {pixels}"
                    raise ImageTooLargeError(_too_large(name, what, size, limit))
                img.load()  # decode everything now: truncation shows here, not mid-training
                return img
    except ImageTooLargeError:
        raise
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{name}: no such {what} file") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        found = re.search(r"\((\d+) pixels\)", str(e))  # PIL: "Image size (N pixels) exceeds"
        size = found.group(1) if found else "too many"
        raise ImageTooLargeError(_too_large(name, what, size, limit)) from e
    except UnidentifiedImageError as e:
        raise UnreadableImageError(
            f"{name}: unreadable or truncated {what} (not an image file PIL can identify)"
        ) from e
    except Exception as e:  # noqa: BLE001 - PIL's decoders raise many types on corrupt data
        raise UnreadableImageError(
            f"{name}: unreadable or truncated {what} ({_first_line(e)})"
        ) from e


def to_rgb(img: Image.Image, source: str | Path = "PIL image", *, warn: bool = True) -> np.ndarray:
    """The one conversion rule: any PIL image -> ``uint8`` ``(H, W, 3)`` RGB.

    16-bit grey (``I;16*``, ``I``) is scaled ``0..65535 -> 0..255``; palette images go via RGBA so
    a transparency entry is handled; alpha is dropped; every other mode is converted by PIL.

    Args:
        img: a loaded PIL image.
        source: the name a warning gives.
        warn: ``warnings.warn`` (naming ``source``) when the mode was not RGB.
    """
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img)
    if mode.startswith("I;16") or mode == "I":  # 16-bit grey: scale, PIL's convert would clip
        grey = np.asarray(img).astype(np.float64) / 257.0
        grey = np.clip(np.round(grey), 0, 255).astype(np.uint8)
        rgb = np.repeat(grey[:, :, None], 3, axis=2)
    elif mode == "P":  # palette: via RGBA so a transparency entry is handled, then drop alpha
        rgb = np.asarray(img.convert("RGBA").convert("RGB"))
    else:  # L, LA, RGBA, CMYK, YCbCr, 1, F, ...
        rgb = np.asarray(img.convert("RGB"))
    if warn:
        what = "alpha channel dropped" if "A" in mode or "transparency" in img.info else "converted"
        warnings.warn(f"{source}: {mode} image {what} to RGB", stacklevel=3)
    return rgb


def _chw(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1).contiguous()


def load_image(
    source: ImageSource | Image.Image,
    *,
    max_pixels: int | None = None,
    warn: bool = True,
    what: str = "image",
    name: str | None = None,
) -> torch.Tensor:
    """Read an image (PNG, JPEG, WebP, BMP, TIFF, anything PIL reads) as an RGB tensor.

    Args:
        source: a file path, encoded bytes, an open binary file, or a PIL image.
        max_pixels: the pixel limit for this call (default the process-wide one); PIL's global
            limit is left as it was.
        warn: warn (naming the file) when a grey, palette, 16-bit, CMYK or alpha image was
            converted (see :func:`to_rgb`).
        what, name: the words error messages use (see :func:`read_image`).

    Returns:
        ``uint8`` tensor ``(3, H, W)``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a readable image (:class:`UnreadableImageError`), or larger than the
            pixel limit (:class:`ImageTooLargeError`).
    """
    if isinstance(source, Image.Image):
        return _chw(to_rgb(source, name or "PIL image", warn=warn))
    img = read_image(source, what, max_pixels=max_pixels, name=name)
    return _chw(to_rgb(img, name or _source_and_name(source, None)[1], warn=warn))


def decode_image(
    data: bytes, *, name: str = "upload", max_pixels: int | None = None, warn: bool = False
) -> torch.Tensor:
    """Encoded image bytes (an HTTP upload) -> ``uint8`` ``(3, H, W)`` RGB; see :func:`load_image`.

    Raises:
        UnreadableImageError: not an image, truncated or corrupt (the message names ``name``).
        ImageTooLargeError: over the pixel limit.
    """
    return load_image(bytes(data), max_pixels=max_pixels, warn=warn, name=name)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(H, W)`` of an image file from its header (no decoding); ``None`` if unreadable."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
