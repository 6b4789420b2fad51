"""Moved to :mod:`fcnseg.accel.conv_as_matmul`; kept so old imports work."""

from fcnseg.accel.conv_as_matmul import (  # noqa: F401
    Conv2dAsMatmul,
    im2col_rows,
    matmul_available,
    weight_matrix,
)
