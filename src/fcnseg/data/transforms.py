"""Joint image / mask transforms and input normalisation.

All geometry goes through ``torchvision.transforms.v2`` on ``tv_tensors.Image`` and
``tv_tensors.Mask``: v2 applies the *same* random parameters to both, resizes masks with
nearest-neighbour interpolation (whatever the image interpolation; here the
centre-aligned ``NEAREST_EXACT``, see :class:`RandomScale`) and leaves masks out of
photometric transforms. The recipe follows torchvision's
``references/segmentation/presets.py`` (random resize, random crop padded with
``fill={Image: 0, Mask: 255}``, horizontal flip), with the random scale taken relative
to each image as in the FCN follow-ups' scale augmentation. Evaluation uses the whole
image, as the FCN paper does (optionally resized to ``base_size``).

Normalisation is described by a *preprocess* dict, stored with every model so training,
evaluation and prediction agree:

- ``DEFAULT_PREPROCESS``: torchvision's ImageNet convention (RGB in ``[0, 1]``, then
  ``(x - mean) / std``).
- ``CAFFE_PREPROCESS``: the Caffe / torchfcn VGG16 convention of the FCN reference
  (``voc_layers.py``: "switch channels RGB -> BGR, subtract mean"): BGR in ``[0, 255]``
  minus the BGR mean ``(104.00698793, 116.66876762, 122.67891434)``, no scaling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "CAFFE_PREPROCESS",
    "DEFAULT_PREPROCESS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalize",
    "RandomScale",
    "RandomScaleCrop",
    "SegmentationTransforms",
    "build_transforms",
    "denormalize",
    "resolve_preprocess",
    "to_tv_pair",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_PREPROCESS: dict[str, Any] = {
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
    "value_scale": 1.0,
    "channel_order": "RGB",
}

# The Caffe FCN reference / torchfcn VGG16 weights: BGR, 0..255, mean subtracted, no std.
CAFFE_PREPROCESS: dict[str, Any] = {
    "mean": [104.00698793, 116.66876762, 122.67891434],
    "std": [1.0, 1.0, 1.0],
    "value_scale": 255.0,
    "channel_order": "BGR",
}


def resolve_preprocess(preprocess: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A complete, validated preprocess dict (missing keys from :data:`DEFAULT_PREPROCESS`).

    Raises:
        ValueError: unknown keys, a mean/std that is not 3 numbers, a zero std, a
            non-positive ``value_scale`` or a ``channel_order`` other than RGB / BGR.
    """
    p = dict(DEFAULT_PREPROCESS)
    if preprocess is not None:
        unknown = set(preprocess) - set(DEFAULT_PREPROCESS)
        if unknown:
            raise ValueError(f"unknown preprocess keys {sorted(unknown)}")
        p.update(preprocess)
    p["mean"] = [float(v) for v in p["mean"]]
    p["std"] = [float(v) for v in p["std"]]
    p["value_scale"] = float(p["value_scale"])
    p["channel_order"] = str(p["channel_order"]).upper()
    if len(p["mean"]) != 3 or len(p["std"]) != 3:
        raise ValueError("preprocess mean and std need 3 values each")
    if any(s == 0 for s in p["std"]):
        raise ValueError("preprocess std must not contain 0")
    if p["value_scale"] <= 0:
        raise ValueError("preprocess value_scale must be positive")
    if p["channel_order"] not in ("RGB", "BGR"):
        raise ValueError(f"channel_order must be 'RGB' or 'BGR', got {p['channel_order']!r}")
    return p


class Normalize:
    """Image tensor -> network input, following a preprocess dict.

    ``x = image / 255 * value_scale`` (uint8) or ``image * value_scale`` (float in
    ``[0, 1]``), reordered to BGR if asked (the mean and std are then in BGR order), then
    ``(x - mean) / std``. Works on ``(3, H, W)`` or batched ``(..., 3, H, W)`` tensors on
    any device; returns a plain float tensor (float32 unless the input is a wider float).
    """

    def __init__(self, preprocess: Mapping[str, Any] | None = None) -> None:
        self.preprocess = resolve_preprocess(preprocess)
        self.mean = torch.tensor(self.preprocess["mean"], dtype=torch.float32)
        self.std = torch.tensor(self.preprocess["std"], dtype=torch.float32)
        self.value_scale = self.preprocess["value_scale"]
        self.bgr = self.preprocess["channel_order"] == "BGR"

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"Normalize expects a tensor, got {type(image).__name__}")
        if x.ndim < 3 or x.shape[-3] != 3:
            raise ValueError(f"expected (..., 3, H, W), got shape {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = x.to(torch.float32) * (self.value_scale / 255.0)
        elif x.is_floating_point():
            x = x * self.value_scale if self.value_scale != 1.0 else x
        else:
            raise TypeError(f"expected a uint8 or float image, got {x.dtype}")
        if self.bgr:
            x = x.flip(-3)
        shape = (3, 1, 1)
        mean = self.mean.to(device=x.device, dtype=x.dtype).view(shape)
        std = self.std.to(device=x.device, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of ``__call__``: network input -> ``uint8`` RGB ``(..., 3, H, W)``."""
        x = x.as_subclass(torch.Tensor).detach().float()
        shape = (3, 1, 1)
        x = x * self.std.to(x.device).view(shape) + self.mean.to(x.device).view(shape)
        if self.bgr:
            x = x.flip(-3)
        x = x * (255.0 / self.value_scale)
        return x.round().clamp(0, 255).to(torch.uint8)

    def __repr__(self) -> str:
        return f"Normalize({self.preprocess})"


def denormalize(tensor: torch.Tensor, preprocess: Mapping[str, Any] | None = None) -> torch.Tensor:
    """Undo :class:`Normalize` for display: ``(..., 3, H, W)`` float -> ``uint8`` RGB."""
    return Normalize(preprocess).denormalize(tensor)


class RandomScale(v2.Transform):
    """Resize by a random factor ``s ~ U(scale_range)`` (same ``s`` for image and mask).

    The factor applies to the image's own size, or, with ``base_size``, maps the shorter
    side to ``s * base_size`` (torchvision's reference ``RandomResize`` semantics). Images
    use bilinear (antialiased) interpolation, ``tv_tensors.Mask`` nearest (centre-aligned).
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (0.5, 2.0),
        base_size: int | None = None,
        interpolation: v2.InterpolationMode = v2.InterpolationMode.BILINEAR,
        antialias: bool = True,
    ) -> None:
        super().__init__()
        lo, hi = float(scale_range[0]), float(scale_range[1])
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range must satisfy 0 < lo <= hi, got {scale_range}")
        self.scale_range = (lo, hi)
        self.base_size = base_size
        self.interpolation = interpolation
        self.antialias = antialias

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        sizes = [
            tuple(x.shape[-2:])
            for x in flat_inputs
            if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))
        ]
        if not sizes:
            raise TypeError("RandomScale needs a tv_tensors.Image or tv_tensors.Mask input")
        h, w = sizes[0]
        lo, hi = self.scale_range
        s = float(torch.empty(()).uniform_(lo, hi)) if hi > lo else lo
        if self.base_size is not None:
            s = s * self.base_size / min(h, w)
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        # Masks: NEAREST_EXACT samples the source pixel under each output pixel's centre,
        # the same sampling grid as the image's (align_corners=False) bilinear; v2's
        # default NEAREST (torch "nearest", floor(i * in/out)) would shift the labels
        # by up to half an output pixel against the image.
        mask = isinstance(inpt, tv_tensors.Mask)
        return self._call_kernel(
            F.resize,
            inpt,
            params["size"],
            interpolation=v2.InterpolationMode.NEAREST_EXACT if mask else self.interpolation,
            antialias=self.antialias,
        )


class RandomScaleCrop(v2.Transform):
    """:class:`RandomScale` then a random ``crop_size`` crop, computed on the crop's own window.

    The same pairs in distribution as ``RandomScale(scale_range)`` followed by
    ``v2.RandomCrop(crop_size, pad_if_needed=True)``: a factor ``s ~ U(scale_range)``, then a
    crop offset uniform over the scaled image. Where the crop fits inside the scaled image,
    only the source window under the crop (plus the pixel that rounding needs) is resized, not
    the whole image (at CamVid's 0.75-1.25x to 176x240: 43k output pixels instead of 97k-270k),
    a cost every training step pays on its critical path. Image and mask sample the same
    centre-aligned grid (bilinear / ``NEAREST_EXACT``), so they stay aligned. Where the scaled
    image is smaller than the crop, the whole image is resized and padded (0 for images,
    ``fill_mask`` for masks) as ``RandomCrop`` does.
    """

    def __init__(
        self,
        scale_range: tuple[float, float],
        crop_size: tuple[int, int],
        base_size: int | None = None,
        fill_mask: int = 255,
    ) -> None:
        super().__init__()
        self.scale = RandomScale(scale_range, base_size=base_size)
        self.crop_size = _pair(crop_size)
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: fill_mask}
        self._pad_crop = v2.RandomCrop(self.crop_size, pad_if_needed=True, fill=fill)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = next(
            tuple(x.shape[-2:])
            for x in flat_inputs
            if isinstance(x, (tv_tensors.Image, tv_tensors.Mask))
        )
        sh, sw = self.scale.make_params(flat_inputs)["size"]
        ch, cw = self.crop_size
        if sh < ch or sw < cw:
            return {"size": [sh, sw], "window": None}
        window = []
        for full, scaled, crop in ((h, sh, ch), (w, sw, cw)):
            start = int(torch.randint(0, scaled - crop + 1, ()))  # RandomCrop's offset
            ratio = scaled / full
            lo = start / ratio  # the crop's edges in source pixels
            a, b = int(lo), min(full, int(np.ceil((start + crop) / ratio)))
            offset = round((lo - a) * ratio)
            out = max(round((b - a) * ratio), offset + crop)
            window.append((a, b, out, offset))
        return {"size": [sh, sw], "window": window}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if not isinstance(inpt, (tv_tensors.Image, tv_tensors.Mask)):
            return inpt
        window = params["window"]
        if window is None:  # smaller than the crop: the whole image, then pad and crop
            return self.scale.transform(inpt, {"size": params["size"]})
        (y0, y1, oh, oy), (x0, x1, ow, ox) = window
        window = tv_tensors.wrap(inpt[..., y0:y1, x0:x1], like=inpt)  # slicing unwraps
        part = self.scale.transform(window, {"size": [oh, ow]})
        ch, cw = self.crop_size
        return tv_tensors.wrap(part[..., oy : oy + ch, ox : ox + cw], like=inpt)

    def forward(self, *inputs: Any) -> Any:
        out = super().forward(*inputs)
        flat = out if isinstance(out, tuple) else (out,)
        if any(tuple(x.shape[-2:]) != self.crop_size for x in flat if isinstance(x, torch.Tensor)):
            return self._pad_crop(*flat) if isinstance(out, tuple) else self._pad_crop(out)
        return out


def to_tv_pair(image: Any, mask: Any) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """Wrap an ``(image, mask)`` pair as ``tv_tensors`` (``Image`` uint8/float, ``Mask`` uint8
    or int64: uint8 labels stay uint8, other integer types become int64).

    Accepts PIL images, numpy arrays (image ``(H, W, 3)``, mask ``(H, W)``) and tensors
    (image ``(3, H, W)``, mask ``(H, W)`` or ``(1, H, W)``).
    """
    if not isinstance(image, tv_tensors.Image):
        if isinstance(image, PILImage.Image):
            image = F.pil_to_tensor(image.convert("RGB"))
        elif isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        image = tv_tensors.Image(image)
    if isinstance(mask, PILImage.Image):
        mask = np.asarray(mask)
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask.astype(np.int64))
    mask = mask.as_subclass(torch.Tensor)
    if mask.ndim == 3 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {tuple(mask.shape)}")
    if mask.dtype not in (torch.uint8, torch.int64):
        mask = mask.to(torch.int64)
    return image, tv_tensors.Mask(mask)


class SegmentationTransforms:
    """``callable(image, mask) -> (float (3, H, W), int64 (H, W))``, picklable for workers.

    Wraps the inputs as ``tv_tensors``, runs a ``v2`` pipeline jointly on both, then
    :class:`Normalize` on the image. Returns plain tensors.
    """

    def __init__(self, pipeline: v2.Transform, normalize: Normalize) -> None:
        self.pipeline = pipeline
        self.normalize = normalize

    def __call__(self, image: Any, mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = to_tv_pair(image, mask)
        image, mask = self.pipeline(image, mask)
        image = self.normalize(image)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).to(torch.int64)

    def __repr__(self) -> str:
        return f"SegmentationTransforms(\n  {self.pipeline!r},\n  {self.normalize!r}\n)"


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def build_transforms(
    train: bool,
    crop_size: tuple[int, int] | int | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    hflip: bool = True,
    color_jitter: float = 0.2,
    preprocess: Mapping[str, Any] | None = None,
    ignore_index: int = 255,
    base_size: int | None = None,
) -> SegmentationTransforms:
    """The joint transforms for training or evaluation.

    Train: random scale (``scale_range``, relative to the image, or to ``base_size`` for
    the shorter side) -> random crop to ``crop_size`` padding the image with 0 and the
    mask with ``ignore_index`` where the scaled image is smaller (both at once, on the
    crop's window: :class:`RandomScaleCrop`) -> random horizontal flip -> float ->
    brightness / contrast / saturation jitter of strength ``color_jitter`` (image only)
    -> :class:`Normalize`.

    Eval: the whole image (shorter side resized to ``base_size`` if given, mask nearest)
    -> float -> :class:`Normalize`.

    Returns:
        ``callable(image, mask) -> (float32 (3, H, W), int64 (H, W))``.
    """
    steps: list[v2.Transform] = []
    if train:
        scaled = (scale_range is not None and tuple(scale_range) != (1.0, 1.0)) or base_size
        scale_range = tuple(scale_range or (1.0, 1.0))
        if scaled and crop_size is not None:
            steps.append(RandomScaleCrop(scale_range, _pair(crop_size), base_size, ignore_index))
        elif scaled:
            steps.append(RandomScale(scale_range, base_size=base_size))
        elif crop_size is not None:
            fill = {tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}
            steps.append(v2.RandomCrop(_pair(crop_size), pad_if_needed=True, fill=fill))
        if hflip:
            steps.append(v2.RandomHorizontalFlip(0.5))
    elif base_size is not None:
        steps.append(RandomScale((1.0, 1.0), base_size=int(base_size)))
    # jitter after the float conversion: the same transform, without a uint8 round trip
    # between brightness, contrast and saturation (and half the time)
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if train and color_jitter and color_jitter > 0:
        cj = float(color_jitter)
        steps.append(v2.ColorJitter(brightness=cj, contrast=cj, saturation=cj))
    return SegmentationTransforms(v2.Compose(steps), Normalize(preprocess))
