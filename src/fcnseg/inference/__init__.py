"""Inference: label whole images of any size, optionally tiled and test-time augmented.

``predict(model, images)`` takes paths, PIL images or tensors and returns one int64 label map
``(H, W)`` per image, at that image's own size: the paper's "whole image in, dense prediction
out" (Section 3), with normalisation taken from the model's stored ``preprocess``.

Two additions the paper does not need on 500x500 VOC images but large photos do:

- **Sliding window** (:func:`sliding_window_logits`): the image is cut into overlapping tiles,
  each tile's logits are computed whole and blended back, equal to whole-image inference for a
  model whose receptive field fits the blending margin (see :mod:`fcnseg.inference.sliding`).
- **Test-time augmentation** through :func:`fcnseg.engine.evaluation.tta_logits` (flip and
  scales averaged in probability space at input resolution), composable with tiling.

One file per idea: ``inputs.py`` (what ``predict`` accepts, batching), ``sliding.py`` (tiles),
``predict.py`` (the loop), ``palette.py`` (the colours of a model's classes). Every name is
importable from ``fcnseg.inference``.
"""

from fcnseg.inference.inputs import expand_inputs
from fcnseg.inference.palette import model_palette
from fcnseg.inference.predict import Prediction, iter_predict, predict, predict_logits
from fcnseg.inference.sliding import _tile_layout as _tile_layout  # tested directly
from fcnseg.inference.sliding import output_stride as output_stride
from fcnseg.inference.sliding import sliding_window_logits
from fcnseg.io.devices import resolve_device
from fcnseg.io.images import IMAGE_EXTENSIONS, load_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "Prediction",
    "expand_inputs",
    "iter_predict",
    "load_image",
    "model_palette",
    "predict",
    "predict_logits",
    "resolve_device",
    "sliding_window_logits",
]
