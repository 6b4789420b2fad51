"""Uploaded bytes -> an RGB ``uint8`` image tensor, with the limits checked before decoding.

The conversion is :func:`fcnseg.io.images.to_rgb`, the one every reader uses: pixels as
stored (EXIF orientation not applied), grey, palette, 16-bit, CMYK and alpha images converted
to RGB (alpha dropped). Only bytes are read; nothing a client names is opened. The steps are
the server's own so each failure maps to its HTTP status (415, 413, 400).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fcnseg.io.images import to_rgb

__all__ = ["ACCEPTED_FORMATS", "CorruptImage", "ImageTooLarge", "NotAnImage", "decode_image"]

# PIL plugins tried on uploads: the common photo and label formats, nothing exotic
# (MPO: the multi-picture JPEG phones write; WebP only where PIL was built with it)
Image.init()
ACCEPTED_FORMATS = tuple(
    f for f in ("PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF") if f in Image.OPEN
)


class NotAnImage(ValueError):
    """The bytes are not in an accepted image format (HTTP 415)."""


class CorruptImage(ValueError):
    """An image header was recognised but the pixels cannot be decoded (HTTP 400)."""


class ImageTooLarge(ValueError):
    """More pixels than the limit (HTTP 413)."""


def decode_image(data: bytes, max_pixels: int) -> torch.Tensor:
    """Decode one uploaded image.

    Args:
        data: the file's bytes.
        max_pixels: refuse images with more pixels (width x height), judged from the header
            before any pixel is decoded (a small file can declare a huge image).

    Returns:
        ``uint8`` tensor ``(3, H, W)``.

    Raises:
        NotAnImage: empty, or not an accepted image format.
        ImageTooLarge: over ``max_pixels``.
        CorruptImage: truncated or corrupt pixel data.
    """
    if not data:
        raise NotAnImage("empty upload: send an image file")
    try:
        with warnings.catch_warnings():
            # the explicit pixel check below replaces PIL's decompression-bomb warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except UnidentifiedImageError:
        raise NotAnImage(
            f"not an image (accepted: {', '.join(f.lower() for f in ACCEPTED_FORMATS)})"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(str(e)) from None
    except (OSError, SyntaxError, ValueError) as e:  # a header PIL recognised but cannot parse
        raise CorruptImage(f"corrupt image header ({e})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
            )
        if width < 1 or height < 1:
            raise CorruptImage(f"image has no pixels ({width}x{height})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img.load()
                rgb = to_rgb(img, warn=False)  # the package's one conversion rule
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(str(e)) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
            raise CorruptImage(f"corrupt or truncated image ({e})") from None
    return torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1).contiguous()
