"""The engine against the same physics as plain Python objects and as numpy arrays.

    python -m pytest benchmarks/test_compare.py --benchmark-only

All three run one 0.1-s tick of the same farm (every unit in manual mode at its own setpoint, so
the work is identical; tests/test_reference_impls.py checks they give the same numbers). The plain
Python loop runs only the small farms: at 1 M units one tick would take minutes.
"""

from __future__ import annotations

import numpy as np
import pytest

from bess_farm.engine import Farm, parse_config

from .conftest import record
from .reference_impls import NumpyFarm, PythonFarm

RATES: dict[tuple[str, int], float] = {}


def manual_farm(n: int) -> Farm:
    f = Farm(parse_config({
        "farm": {"units_per_row": 10, "seed": 2, "aging_interval_s": 3600.0},
        "units": [{"preset": "lfp-3.7mwh-20ft", "count": n, "spread": {"capacity": 0.01, "r0": 0.03}}],
    }))
    f.set_unit_power(np.arange(n), np.linspace(-1.5e6, 1.5e6, n))
    f.step(0.1, 2)
    return f


def _record(kind: str, n: int, seconds: float) -> None:
    rate = n / seconds
    RATES[(kind, n)] = rate
    row = {"benchmark": f"{kind} tick, {n:,} units", "unit_steps_per_s": rate}
    eng = RATES.get(("engine", n))
    if kind != "engine" and eng:
        row["engine_speedup"] = eng / rate
    record(**row)


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_engine(benchmark, n):
    f = manual_farm(n)
    benchmark.pedantic(f.step, args=(0.1, 1), rounds=max(5, min(100, 10_000_000 // n)), iterations=1,
                       warmup_rounds=1)
    _record("engine", n, benchmark.stats.stats.median)


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_numpy(benchmark, n):
    ref = NumpyFarm(manual_farm(n))
    benchmark.pedantic(ref.step, args=(0.1,), rounds=max(3, min(50, 2_000_000 // n)), iterations=1,
                       warmup_rounds=1)
    _record("numpy", n, benchmark.stats.stats.median)


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_python_objects(benchmark, n):
    ref = PythonFarm(manual_farm(n))
    benchmark.pedantic(ref.step, args=(0.1,), rounds=3, iterations=1, warmup_rounds=1)
    _record("python objects", n, benchmark.stats.stats.median)
