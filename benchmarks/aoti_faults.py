"""Page faults and time a call of an AOTInductor package, with glibc's malloc as it is and with
freed memory retained (``AotiModel(path, retain_memory=...)``), each in fresh processes (the
default's behaviour depends on a process's first allocations, so it is run several times):

    python -m benchmarks.aoti_faults rt.pt2 [--processes 3]

The figures behind "A finding on the way" in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

_CHILD = """
import resource, statistics, sys, time, torch
from fcnseg.export import AotiModel
model = AotiModel(sys.argv[1], retain_memory=sys.argv[2] == "retain")
x = torch.randn(*model.size)
for _ in range(10):
    model(x)
faults, times = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, []
for _ in range(50):
    start = time.perf_counter()
    model(x)
    times.append((time.perf_counter() - start) * 1e3)
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 50
print(f"{faults:.1f} {statistics.median(times):.1f}")
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package")
    ap.add_argument("--processes", type=int, default=3)
    args = ap.parse_args(argv)
    for _ in range(args.processes):
        for mode in ("default", "retain"):
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, args.package, mode],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            faults, ms = out.stdout.split()
            print(f"{mode:8s} {faults:>9s} page faults a call, median {ms} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
