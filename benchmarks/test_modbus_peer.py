"""The peer for the Modbus performance target: DER Twin (``dertwin`` 0.1.12) under the same load client.

    python -m pytest benchmarks/test_modbus_peer.py --benchmark-only

dertwin runs one Python object and one pymodbus server per battery, all on one asyncio loop. It
needs pymodbus < 3.13, so it lives in its own venv outside the repository (``$BESS_DERTWIN_VENV``,
default ``~/.cache/bess-farm/dertwin-venv``, created on first use); these benchmarks skip when
that venv cannot be made. Measured (shown in the table, never asserted):

- 4 batteries, 8 connections, FC3 reads of 10 and of 50 registers: req/s, p50/p99 latency, and
  whether the 10 Hz tick holds under that load;
- about 400 batteries: the tick rate, compute time per tick and lateness idle and under
  10-register load.

About 1.5 minutes in all (most of it building the 400 pymodbus servers and the load windows).
"""

from __future__ import annotations

import pytest

from .conftest import record
from .dertwin_peer import (
    DERTWIN_VERSION,
    DertwinSite,
    DertwinUnavailable,
    ensure_venv,
    measure_idle,
    measure_load,
)

LOAD_S = 5.0           # measured window per load run (plus 1 s warm-up)
CONNECTIONS = 8


@pytest.fixture(scope="module")
def dertwin_python():
    try:
        return ensure_venv()
    except DertwinUnavailable as e:
        pytest.skip(f"dertwin peer unavailable: {e}")


@pytest.fixture(scope="module")
def site4(dertwin_python):
    with DertwinSite(4, python=dertwin_python, max_seconds=90) as site:
        yield site


def _row(label: str, stats: dict) -> dict:
    lat, ticks = stats["latency_ms"], stats["ticks"]
    nan = float("nan")
    return {"benchmark": label, "req_per_s": stats["req_per_s"], "p50_ms": lat["p50"], "p99_ms": lat["p99"],
            "errors": sum(stats["errors"].values()) + sum(stats["exceptions"].values()),
            "tick_hz": ticks.get("tick_hz", nan), "tick_compute_ms": ticks.get("busy_ms_mean", nan),
            "tick_late_max_ms": ticks.get("late_ms_max", nan)}


@pytest.mark.parametrize("registers", [10, 50])
def test_dertwin_4_batteries(benchmark, site4, registers):
    """8 connections over 4 batteries (2 each), FC3 reads of `registers` at the telemetry block."""
    stats = benchmark.pedantic(measure_load, args=(site4,),
                               kwargs={"registers": registers, "connections": CONNECTIONS, "duration": LOAD_S},
                               rounds=1, iterations=1)
    benchmark.extra_info.update(stats)
    record(**_row(f"dertwin {DERTWIN_VERSION}: 4 batteries, {registers}-reg reads, {CONNECTIONS} conn", stats))


def test_dertwin_400_batteries(benchmark, dertwin_python):
    """Does one asyncio loop with 400 batteries hold 10 Hz, idle and under 10-register load?"""
    with DertwinSite(400, python=dertwin_python, max_seconds=100) as site:
        idle = measure_idle(site, seconds=5.0, settle=1.0)
        stats = benchmark.pedantic(measure_load, args=(site,),
                                   kwargs={"registers": 10, "connections": CONNECTIONS, "duration": LOAD_S},
                                   rounds=1, iterations=1)
        build_s = site.ready["build_s"]
    benchmark.extra_info.update(stats, idle=idle, build_s=build_s)
    record(benchmark=f"dertwin {DERTWIN_VERSION}: 400 batteries, idle", tick_hz=idle.get("tick_hz", float("nan")),
           tick_compute_ms=idle.get("busy_ms_mean", float("nan")),
           tick_late_max_ms=idle.get("late_ms_max", float("nan")))
    record(**_row(f"dertwin {DERTWIN_VERSION}: 400 batteries, 10-reg reads, {CONNECTIONS} conn", stats))
