"""Export: a trained model as files other runtimes load, each proven faithful.

- :mod:`fcnseg.export.formats`: ONNX (dynamic sizes, no Resize op), TorchScript and
  safetensors, each checked for parity at a second input size;
- :mod:`fcnseg.export.aoti`: an AOTInductor ``.pt2`` package, compiled ahead of time for one
  input size and the CPU's vector ISA (checked at load), run by :class:`AotiModel`;
- :mod:`fcnseg.export.int8`: int8 QDQ ONNX (ONNX Runtime static quantization, calibrated on real
  images), its argmax / mean-IU parity, and :class:`OnnxRuntimeModel` to run any fcnseg ONNX
  file like a model.
"""

from fcnseg.export.aoti import AotiError, AotiModel, export_aoti
from fcnseg.export.formats import (
    ATOL,
    CONFIG_KEY,
    MIN_AGREEMENT,
    ExportParityError,
    check_parity,
    export_onnx,
    export_safetensors,
    export_torchscript,
    format_report,
    parity_size,
    require_onnx,
)
from fcnseg.export.int8 import (
    QUANT_KEY,
    OnnxRuntimeModel,
    calibration_images,
    cpu_has_vnni,
    export_onnx_int8,
    format_int8_report,
    int8_parity,
)

__all__ = [
    "ATOL",
    "CONFIG_KEY",
    "MIN_AGREEMENT",
    "QUANT_KEY",
    "AotiError",
    "AotiModel",
    "ExportParityError",
    "OnnxRuntimeModel",
    "calibration_images",
    "check_parity",
    "export_aoti",
    "cpu_has_vnni",
    "export_onnx",
    "export_onnx_int8",
    "export_safetensors",
    "export_torchscript",
    "format_int8_report",
    "format_report",
    "int8_parity",
    "parity_size",
    "require_onnx",
]
