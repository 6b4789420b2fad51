"""Inference: label whole images of any size, optionally tiled and test-time augmented.

``predict(model, images)`` takes paths, PIL images or tensors and returns one int64 label map
``(H, W)`` per image, at that image's own size: the paper's "whole image in, dense prediction
out" (Section 3), with normalisation taken from the model's stored ``preprocess``.

Two additions the paper does not need on 500x500 VOC images but large photos do:

- **Sliding window** (:func:`sliding_window_logits`): the image is cut into overlapping tiles,
  each tile's logits are computed whole and blended back, equal to whole-image inference for a
  model whose receptive field fits the blending margin (see :mod:`fcnseg.inference.sliding`).
- **Test-time augmentation** (:func:`tta_logits`: flip and scales averaged in probability
  space at input resolution), composable with tiling.

One file per idea: ``core.py`` (the one inference core, :class:`Predictor`: normalise ->
precision -> fast path -> TTA / tiles, which predict, evaluate, serve, int8 parity and bench
all run), ``tta.py``, ``sliding.py`` (tiles), ``inputs.py`` (what ``predict`` accepts,
batching), ``predict.py`` (the loop), ``heatmap.py`` (the paper's Figure 2), ``palette.py``
(the colours of a model's classes).
"""

from fcnseg.inference.core import Predictor
from fcnseg.inference.heatmap import ClassHeatmaps, classifier_heatmaps
from fcnseg.inference.inputs import expand_inputs
from fcnseg.inference.palette import model_palette
from fcnseg.inference.predict import Prediction, iter_predict, predict, predict_logits
from fcnseg.inference.sliding import output_stride, sliding_window_logits
from fcnseg.inference.tta import parse_tta, tta_logits

__all__ = [
    "ClassHeatmaps",
    "Prediction",
    "Predictor",
    "classifier_heatmaps",
    "expand_inputs",
    "iter_predict",
    "model_palette",
    "output_stride",
    "parse_tta",
    "predict",
    "predict_logits",
    "sliding_window_logits",
    "tta_logits",
]
