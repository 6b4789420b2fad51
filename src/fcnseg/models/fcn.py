"""The FCN: a tapped backbone, 1x1 class scores, and the skip architecture (Figure 3).

    FCN-32s:  score(fc7) -------------------------------------------------> up x32
    FCN-16s:  score(fc7) -> up x2 -(+)- score(pool4) ---------------------> up x16
    FCN-8s:   score(fc7) -> up x2 -(+)- score(pool4) -> up x2 -(+)- score(pool3) -> up x8
    FCN-4s:   ... FCN-8s's fused stride-8 scores -> up x2 -(+)- score(pool2) -> up x4

FCN-4s is ours, not the paper's: one more step down the same ladder, for classes a few pixels
wide (poles, signs) where a stride-8 map is too coarse; the paper stopped at pool3 on VOC,
where the next fusion gave diminishing returns.

Scores are 1x1 convolutions started at zero; in-network 2x upsampling is a transposed
convolution started at bilinear (frozen by default, as in the reference repository; learnable
with ``learnable_upsampling=True``, as in the CVPR paper); the final upsampling is fixed
bilinear. Maps are aligned by cropping, the offsets derived from each map's pixel grid: for
``pad100=True`` this reproduces the reference's crops (19; 5, 27; 5, 9, 31) exactly.

Optionally a context head (``context="global"``: ParseNet, ``"pyramid"``: PSPNet; see
``context.py``) widens the stride-32 map with image-level features before ``score_fr``.
"""

import torch
from torch import nn

from fcnseg.models.backbones import Backbone
from fcnseg.models.context import build_context
from fcnseg.models.upsampling import BilinearUpsample, Grid, crop_offset, kernel_size_for

# Layer names follow the reference (voc-fcn8s/net.py) so converted weights map one to one.
SCORE_NAMES = {32: "score_fr", 16: "score_pool4", 8: "score_pool3", 4: "score_pool2"}
UPSCORE_NAMES = {16: "upscore2", 8: "upscore_pool4", 4: "upscore_pool3"}  # 2x into each skip
SKIP_CHAINS = ((), (16,), (16, 8), (16, 8, 4))  # FCN-32s, 16s, 8s, 4s


def _zero_conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def _crop(x: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return x[:, :, top : top + height, left : left + width]


class FCN(nn.Module):
    """A fully convolutional network: ``forward(images (N, 3, H, W)) -> logits (N, C, H, W)``.

    Args:
        backbone: a tapped backbone (see ``backbones.build_backbone``).
        num_classes: output channels C.
        skips: the finer strides fused in, coarse to fine: ``()`` FCN-32s, ``(16,)`` FCN-16s,
            ``(16, 8)`` FCN-8s, ``(16, 8, 4)`` FCN-4s.
        skip_scales: multiply a tap before its score layer (the "at-once" variant scales
            pool4 by 0.01 and pool3 by 1e-4, `voc-fcn8s-atonce/net.py`).
        learnable_upsampling: train the in-network 2x deconvolutions (else frozen bilinear).
        replicate_pad: pad each map by one replicated pixel before upsampling so borders
            interpolate instead of fading (default geometry); ``False`` is the reference.
        context: ``None`` (the paper's FCN), ``"global"`` or ``"pyramid"``: a context head
            applied to the stride-32 map before ``score_fr`` (which then takes its channels).
        config: the build arguments, stored so checkpoints can rebuild the model.
    """

    # Python-side metadata that TorchScript need not (and cannot) compile.
    __jit_ignored_attributes__ = ["config"]
    __jit_unused_properties__ = ["preprocess", "class_names", "palette"]
    # typed here so TorchScript compiles them even when empty (this module therefore keeps
    # real annotation objects: no `from __future__ import annotations`)
    skip_scales: dict[int, float]
    crops: dict[int, tuple[int, int]]

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        skips: tuple[int, ...] = (16, 8),
        skip_scales: dict[int, float] | None = None,
        learnable_upsampling: bool = False,
        replicate_pad: bool = True,
        context: str | None = None,
        config: dict | None = None,
    ) -> None:
        super().__init__()
        if tuple(skips) not in SKIP_CHAINS:
            raise ValueError(f"skips must be one of {SKIP_CHAINS}, got {tuple(skips)}")
        missing = [s for s in (32, *skips) if s not in backbone.taps]
        if missing:
            raise ValueError(f"backbone has no tap at stride(s) {missing}")
        self.backbone = backbone
        self.num_classes = num_classes
        self.skips = tuple(skips)
        self.skip_scales = {s: float(v) for s, v in (skip_scales or {}).items()}
        self.config = dict(config or {})
        self.backbone_name: str = self.config.get("backbone", type(backbone).__name__)
        self.min_input_size: int = backbone.min_input_size
        pad = 1 if replicate_pad else 0

        # Image-level context on the stride-32 map (None: the paper's FCN, same state dict).
        top_channels = backbone.taps[32].channels
        self.context = build_context(context, top_channels)
        if self.context is not None:
            top_channels = self.context.out_channels
        self.score_fr = _zero_conv1x1(top_channels, num_classes)
        grid = backbone.taps[32].grid
        # Each skip: a 2x upsampler into the finer grid, a zero-started score layer, and the
        # crops that put both maps on one grid (the shift is derived, never hard-coded).
        self.crops: dict[int, tuple[int, int]] = {}  # stride -> (crop of upsampled, crop of skip)
        for stride in (16, 8, 4):
            if stride not in self.skips:
                self.add_module(UPSCORE_NAMES[stride], None)
                self.add_module(SCORE_NAMES[stride], None)
                continue
            tap = backbone.taps[stride]
            factor = grid.stride // stride
            kernel = kernel_size_for(factor, grid, tap.grid)
            up = BilinearUpsample(
                num_classes, factor, kernel, grid, pad=pad, learnable=learnable_upsampling
            )
            self.add_module(UPSCORE_NAMES[stride], up)
            self.add_module(SCORE_NAMES[stride], _zero_conv1x1(tap.channels, num_classes))
            shift = crop_offset(up.out_grid, tap.grid)  # > 0: the upsampled map starts earlier
            self.crops[stride] = (max(shift, 0), max(-shift, 0))
            grid = tap.grid if shift >= 0 else up.out_grid

        # Final upsampling onto the input's pixel grid (stride 1, pixel x centred at x).
        image_grid = Grid(1, 0.0)
        kernel = kernel_size_for(grid.stride, grid, image_grid)
        self.upscore = BilinearUpsample(num_classes, grid.stride, kernel, grid, pad=pad)
        self.final_crop = crop_offset(self.upscore.out_grid, image_grid)
        if self.final_crop < 0:
            raise ValueError("geometry error: the upsampled map starts inside the image")

    def _fuse(
        self, coarse: torch.Tensor, skip: torch.Tensor, crop_up: int, crop_skip: int
    ) -> torch.Tensor:
        """Sum two maps on the same grid, each cropped to the region both cover."""
        h = min(coarse.shape[-2] - crop_up, skip.shape[-2] - crop_skip)
        w = min(coarse.shape[-1] - crop_up, skip.shape[-1] - crop_skip)
        return _crop(coarse, crop_up, crop_up, h, w) + _crop(skip, crop_skip, crop_skip, h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2], images.shape[-1]
        if min(height, width) < self.min_input_size:
            raise ValueError(
                f"input {height}x{width} is smaller than the {self.min_input_size} px "
                f"the {self.backbone_name} backbone can take"
            )
        features = self.backbone(images)
        top = features[32]
        if self.context is not None:  # ParseNet / PSPNet context, on the same grid
            top = self.context(top)
        score = self.score_fr(top)  # stride 32
        if self.score_pool4 is not None:  # FCN-16s and FCN-8s: fuse pool4 (stride 16)
            pool4 = features[16] * self.skip_scales[16] if 16 in self.skip_scales else features[16]
            crop_up, crop_skip = self.crops[16]
            score = self._fuse(self.upscore2(score), self.score_pool4(pool4), crop_up, crop_skip)
        if self.score_pool3 is not None:  # FCN-8s: fuse pool3 (stride 8)
            pool3 = features[8] * self.skip_scales[8] if 8 in self.skip_scales else features[8]
            crop_up, crop_skip = self.crops[8]
            score = self._fuse(
                self.upscore_pool4(score), self.score_pool3(pool3), crop_up, crop_skip
            )
        if self.score_pool2 is not None:  # FCN-4s: fuse pool2 (stride 4)
            pool2 = features[4] * self.skip_scales[4] if 4 in self.skip_scales else features[4]
            crop_up, crop_skip = self.crops[4]
            score = self._fuse(
                self.upscore_pool3(score), self.score_pool2(pool2), crop_up, crop_skip
            )
        out = self.upscore(score)
        return _crop(out, self.final_crop, self.final_crop, height, width)

    @property
    def preprocess(self) -> dict:
        """How images must be normalised for this model's weights (see ``fcnseg.data``)."""
        return self.config["preprocess"]

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        """One ``(r, g, b)`` per class, stored with the model (see ``build_model``)."""
        return [tuple(c) for c in self.config["palette"]]

    @property
    def class_names(self) -> list[str]:
        return self.config.get("class_names") or [str(i) for i in range(self.num_classes)]
