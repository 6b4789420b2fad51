"""Moved to :mod:`fcnseg.accel.onednn` (speed passes live in ``fcnseg.accel``); kept so old
imports work."""

from fcnseg.accel.onednn import (  # noqa: F401
    ConvAsMatmul,
    FusedConv2d,
    available,
    file_backed,
    for_inference,
    release_pages,
    to_onednn,
)
