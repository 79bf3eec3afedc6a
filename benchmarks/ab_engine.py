"""Interleaved A/B timing of two (or more) copies of the engine, in one process.

The machine is shared and noisy, so two variants are only comparable when they are timed in the
same run, alternating, with the same farm. Copy ``engine/`` once per variant into one folder
(``cp -r engine /tmp/ab/base``, edit the copy, and so on), then

    python benchmarks/ab_engine.py /tmp/ab 1000000 par 8 base new
    python benchmarks/ab_engine.py /tmp/ab 10000 ser 6 base new

Each copy is imported as its own package (the engine imports only itself, relatively) with its own
kernel cache; each round steps every variant ``reps`` ticks of 0.1 s (order alternating) and keeps
the median tick. Prints min/median/max ns per unit-step over the rounds, and whether every variant
ends in bitwise the same state as the first.
"""

from __future__ import annotations

import importlib
import sys
import time

import numpy as np


def main(folder: str, n: int, mode: str, rounds: int, names: list[str]) -> None:
    sys.path.insert(0, folder)
    par = mode == "par"
    farms = {}
    for name in names:
        eng = importlib.import_module(name)
        f = eng.Farm(eng.parse_config({
            "farm": {"units_per_row": 10, "seed": 1},
            "units": [{"preset": "lfp-3.7mwh-20ft", "count": n,
                       "spread": {"capacity": 0.01, "r0": 0.03, "r1": 0.03, "r2": 0.03}}]}))
        f.set_farm_power(0.5 * n * 1.86e6)
        f.step(0.1, 20, parallel=par)          # compile, settle the dispatch
        farms[name] = f
    reps = max(3, min(200, 2_000_000 // n))
    ticks = {name: [] for name in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            f = farms[name]
            t = []
            for _ in range(reps):
                t0 = time.perf_counter()
                f.step(0.1, 1, parallel=par)
                t.append(time.perf_counter() - t0)
            ticks[name].append(float(np.median(t)))
    for name in names:
        a = np.array(ticks[name]) / n * 1e9
        print(f"{name:12s} {n:>9,} units {mode}: ns per unit-step min {a.min():6.2f} "
              f"median {np.median(a):6.2f} max {a.max():6.2f}  "
              f"(M unit-steps/s {1e3 / a.min():5.1f} best, {1e3 / np.median(a):5.1f} median)")
    first = farms[names[0]]
    for name in names[1:]:
        f = farms[name]
        same = f.tick == first.tick and np.array_equal(f.dyn[f._src], first.dyn[first._src])
        print(f"{name}: state bitwise equal to {names[0]}: {same}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:])
