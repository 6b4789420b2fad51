"""Opt-in speed passes over a plain fcnseg model: same state dict, same logits.

Model definitions (:mod:`fcnseg.models`) hold only torch/torchvision layers; everything that
depends on the machine is applied here, by one function per use:

- :func:`optimize_for_inference` (:mod:`fcnseg.accel.optimize`): oneDNN layers, channels_last,
  frozen TorchScript, timed against each other on an example input; the fastest is kept.
- :func:`for_inference` (:mod:`fcnseg.accel.onednn`): what ``predict``/``evaluate`` run on the
  CPU (the oneDNN copy, cached with the model).
- :func:`for_training` (:mod:`fcnseg.accel.training`): fc6/fc7 as matrix products with their
  own backward, applied by the trainer on the CPU.

Int8 (QDQ ONNX) export lives with the exporter (``fcnseg.export``).
"""

from fcnseg.accel.onednn import for_inference, to_onednn
from fcnseg.accel.optimize import optimize_for_inference
from fcnseg.accel.timing import time_interleaved
from fcnseg.accel.training import for_training

__all__ = [
    "for_inference",
    "for_training",
    "optimize_for_inference",
    "time_interleaved",
    "to_onednn",
]
