"""Keep freed buffers in the process for the next call, instead of handing them back to the
kernel on every free (glibc's malloc).

glibc serves a block above its mmap threshold with a fresh ``mmap`` and unmaps it on free, and
gives the heap's top back above its trim threshold. Both start at 128 KiB and rise only as
large blocks are freed, so whether a model's per-call buffers get reused or are faulted in
again, zeroed, on every call depends on the order of its first calls' allocations: the same
AOTInductor package can run twice as slowly in one process as in the next (figures in
``benchmarks/README.md``). :func:`retain_freed_memory` fixes both
thresholds high, so freed buffers stay in the heap. This is process-wide, as choosing
jemalloc or tcmalloc is (PyTorch's CPU performance guide); the cost is that memory freed by
the process is returned to the system later (the heap's top above ``trim_mib`` still is).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3


def retain_freed_memory(mmap_mib: int = 256, trim_mib: int = 512) -> bool:
    """Serve blocks below ``mmap_mib`` from the heap and keep up to ``trim_mib`` of freed
    memory at its top. Both thresholds are set together: setting either alone stops glibc's
    adaptation of both, which leaves the other at 128 KiB.

    Returns True where glibc took both settings, False elsewhere (another C library, another
    system: nothing is changed there).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl, or no glibc
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    trim_ok = mallopt(_M_TRIM_THRESHOLD, trim_mib << 20) == 1
    return bool(trim_ok and mallopt(_M_MMAP_THRESHOLD, mmap_mib << 20) == 1)
