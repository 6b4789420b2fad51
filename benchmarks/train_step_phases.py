"""Where a training step's time goes, phase by phase, in the trainer as a user runs it:

    python -m benchmarks.train_step_phases [fcnseg train arguments ...]

runs ``fcnseg train`` in this process with four of ``Trainer``'s phases timed (wall clock,
per call): the loader's ``next`` (augmentation and collation), ``_forward_backward``,
``_optimizer_step`` and ``_after_step`` (logging, the stop rule, checkpoints), then prints each
phase's mean per step with the CPU's ISA. The figures behind issue 26's "where a bf16 step goes"
(benchmarks/README.md); e.g. its 40-step command with ``--set train.max_steps=60``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter, defaultdict

from fcnseg.accel.precision import cpu_isa
from fcnseg.cli import main as fcnseg_main
from fcnseg.engine import trainer as trainer_module

PHASES = ("_forward_backward", "_optimizer_step", "_after_step")


def _timed(name, fn, seconds, calls):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - started
            calls[name] += 1

    return wrapper


def main(argv: list[str] | None = None) -> int:
    seconds: dict[str, float] = defaultdict(float)
    calls: Counter = Counter()
    cls = trainer_module.Trainer
    saved = {name: getattr(cls, name) for name in (*PHASES, "_loader")}

    def loader(self):
        batches = iter(saved["_loader"](self))
        next_batch = _timed("loader", lambda: next(batches), seconds, calls)
        while True:
            try:
                yield next_batch()
            except StopIteration:
                return

    try:
        cls._loader = loader
        for name in PHASES:
            setattr(cls, name, _timed(name, saved[name], seconds, calls))
        code = fcnseg_main(["train", *(sys.argv[1:] if argv is None else argv)])
    finally:
        for name, fn in saved.items():
            setattr(cls, name, fn)
    print(f"CPU ISA {cpu_isa()}; mean ms a call (calls):")
    for name in ("loader", *PHASES):
        if calls[name]:
            ms = 1e3 * seconds[name] / calls[name]
            print(f"  {name.strip('_')}: {ms:.1f} ms ({calls[name]})")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
