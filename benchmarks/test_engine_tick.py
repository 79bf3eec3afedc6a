"""The full-physics tick: unit-steps per second, bytes per unit, memory per unit.

    python -m pytest benchmarks/test_engine_tick.py --benchmark-only

Targets from the engine issue (shown here, never asserted): >= 50 M unit-steps/s at 1,000,000
units on 2 cores, <= 1 KiB of memory per unit. The bandwidth ceiling is the measured triad
bandwidth divided by the bytes one tick moves per unit.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

from bess_farm.engine import Farm, parse_config
from bess_farm.engine.layout import N_DYN, N_OUT

from .conftest import record


def bytes_per_unit_step(farm: Farm, dt: float = 0.1) -> float:
    """Bytes one 0.1 s tick moves per unit between memory and the cores.

    Ping-pong state: the source buffer is read, the destination written (a write also reads
    the line first: write-allocate). Per-unit parameters the tick reads (float32): capacity,
    three resistances, derate, manual setpoint, the SoC reserve window (two), ambient offset,
    SoH; flags and kind. Aging accumulators are read and written once per aging interval (10 s
    by default)."""
    dyn = N_DYN * farm.dyn.itemsize * 3
    out = N_OUT * farm.out.itemsize * 2
    status = farm.status.itemsize * 2
    alarms = farm.alarms.itemsize * 3
    upar = 10 * farm.upar.itemsize
    ints = farm.flags.itemsize + farm.kind.itemsize
    aging = 2 * farm.aging_acc.shape[1] * farm.aging_acc.itemsize * dt / farm.aging_interval_s
    return float(dyn + out + status + alarms + upar + ints + aging)


def big_farm(n: int) -> Farm:
    return Farm(parse_config({
        "farm": {"units_per_row": 10, "seed": 1},
        "units": [{"preset": "lfp-3.7mwh-20ft", "count": n,
                   "spread": {"capacity": 0.01, "r0": 0.03, "r1": 0.03, "r2": 0.03}}],
    }))


@pytest.mark.parametrize("n", [1_000, 100_000, 1_000_000])
def test_tick(benchmark, n, bandwidth_gbs):
    """One real-time tick per call (dt = 0.1 s, n = 1): what `bess run` does at 10 Hz."""
    farm = big_farm(n)
    farm.set_farm_power(0.5 * n * 1.86e6)
    farm.step(0.1, 20)                     # compile, settle the dispatch
    rounds = max(5, min(200, 20_000_000 // n))
    benchmark.pedantic(farm.step, args=(0.1, 1), rounds=rounds, iterations=1, warmup_rounds=2)
    per_s = n / benchmark.stats.stats.median
    bpu = bytes_per_unit_step(farm)
    ceiling = bandwidth_gbs * 1e9 / bpu
    mem = farm.memory_bytes() / n
    benchmark.extra_info.update(unit_steps_per_s=per_s, bytes_per_unit_step=bpu,
                                bandwidth_ceiling_unit_steps_per_s=ceiling,
                                memory_bytes_per_unit=mem, threads=numba.get_num_threads())
    record(benchmark=f"engine tick, {n:,} units", unit_steps_per_s=per_s,
           tick_ms=benchmark.stats.stats.median * 1e3,
           pct_of_bandwidth_ceiling=100.0 * per_s / ceiling, bytes_per_unit_step=bpu,
           memory_bytes_per_unit=mem, threads=numba.get_num_threads())
    assert np.isfinite(farm.aggregates().p_ac_w)


def test_memory_bandwidth(benchmark, bandwidth_gbs):
    benchmark.extra_info["triad_gb_per_s"] = bandwidth_gbs
    record(benchmark="memory bandwidth (numba triad)", gb_per_s=bandwidth_gbs)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
