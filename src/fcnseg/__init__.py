"""fcnseg: Fully Convolutional Networks for semantic segmentation.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 / PAMI 2016. The names below are the stable public API; docs/architecture.md
describes the layers (io, data, models, accel, engine, inference, cli) they come from.
"""

from fcnseg import data, metrics
from fcnseg.accel.optimize import optimize_for_inference
from fcnseg.engine.checkpoint import load_model, save_model
from fcnseg.inference import predict
from fcnseg.models import (
    FCN,
    build_model,
    convolutionalize,
    fcn4s,
    fcn8s,
    fcn8s_atonce,
    fcn16s,
    fcn32s,
    list_backbones,
    list_models,
)

__version__ = "0.1.0"

__all__ = [
    "FCN",
    "build_model",
    "convolutionalize",
    "data",
    "fcn4s",
    "fcn8s",
    "fcn8s_atonce",
    "fcn16s",
    "fcn32s",
    "list_backbones",
    "list_models",
    "load_model",
    "metrics",
    "optimize_for_inference",
    "predict",
    "save_model",
]
