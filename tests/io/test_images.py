"""The one image reader: datasets, predict and uploads decode the same file to the same pixels."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import fcnseg.data.base
import fcnseg.inference
from fcnseg.data.base import SegmentationDataset
from fcnseg.io.images import (
    IMAGE_EXTENSIONS,
    ImageTooLargeError,
    UnreadableImageError,
    decode_image,
    load_image,
    read_image,
)


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_one_extension_list_everywhere():
    assert fcnseg.data.base.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"} == set(IMAGE_EXTENSIONS)


def test_16_bit_grey_is_scaled_the_same_for_datasets_predict_and_uploads(tmp_path):
    grey = np.array([[0, 257, 65535], [32896, 1000, 65278]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    expected = np.round(grey / 257.0).astype(np.uint8)  # 0..65535 -> 0..255, not clipped
    with pytest.warns(UserWarning, match="deep.png"):
        from_predict = load_image(path)
    from_dataset = SegmentationDataset.load_image(path)  # silent: datasets read many files
    from_upload = decode_image(path.read_bytes())
    for img in (from_predict, from_dataset, from_upload):
        assert img.dtype == torch.uint8 and img.shape == (3, 2, 3)
        assert np.array_equal(img[0].numpy(), expected) and torch.equal(img[0], img[2])
    assert torch.equal(from_predict, from_dataset) and torch.equal(from_predict, from_upload)


def test_palette_transparency_and_cmyk_become_rgb():
    pal = Image.new("P", (4, 3), 1)
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.info["transparency"] = 1
    with pytest.warns(UserWarning, match="alpha channel dropped"):
        rgb = load_image(pal)
    assert rgb[:, 0, 0].tolist() == [10, 20, 30]
    cmyk = Image.new("CMYK", (2, 2), (0, 0, 0, 0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load_image(cmyk)[:, 0, 0].tolist() == [255, 255, 255]


def test_bytes_decoder_errors_name_the_upload():
    with pytest.raises(UnreadableImageError, match="^photo.jpg: unreadable or truncated image"):
        decode_image(b"not an image", name="photo.jpg")
    data = _png_bytes(Image.new("RGB", (40, 30)))
    with pytest.raises(
        ImageTooLargeError, match="^upload: image has .*1200 pixels, over the limit of 1000"
    ):
        decode_image(data, max_pixels=1000)
    default = Image.MAX_IMAGE_PIXELS
    assert decode_image(data, max_pixels=1200).shape == (3, 30, 40)
    assert Image.MAX_IMAGE_PIXELS == default  # a per-call limit leaves the process-wide one
    assert read_image(data).size == (40, 30)
