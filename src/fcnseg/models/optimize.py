"""Moved to :mod:`fcnseg.accel.optimize`; kept so old imports work."""

from fcnseg.accel.optimize import (  # noqa: F401
    CANDIDATES,
    LOW_MEMORY,
    NAMED,
    Candidate,
    OptimizedModel,
    optimize_for_inference,
)
