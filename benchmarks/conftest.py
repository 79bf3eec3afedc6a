"""Benchmark plumbing: a shared results table printed at the end of the run.

Run all benchmarks and print the table:

    python -m pytest benchmarks --benchmark-only

Speed is never asserted: this machine is shared and noisy. Each benchmark records what it
measured in ``benchmark.extra_info`` and in the table below.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit, prange

RESULTS: list[dict] = []


def record(**row) -> None:
    RESULTS.append(row)


@njit(parallel=True, cache=True)
def _triad(a, b, c, s):
    for i in prange(a.shape[0]):
        a[i] = b[i] + s * c[i]


_BANDWIDTH: list[float] = []


def memory_bandwidth_gbs() -> float:
    """Sustained memory bandwidth [GB/s] of a parallel numba triad over 3 x 256 MB arrays
    (best of 5; counts 3 streams of 8 bytes plus the write-allocate read of the target)."""
    if _BANDWIDTH:
        return _BANDWIDTH[0]
    import time
    n = 32_000_000
    a = np.zeros(n)
    b = np.ones(n)
    c = np.ones(n)
    _triad(a, b, c, 3.0)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        _triad(a, b, c, 3.0)
        dt = time.perf_counter() - t
        best = max(best, 4 * 8 * n / dt / 1e9)
    _BANDWIDTH.append(best)
    return best


@pytest.fixture(scope="session")
def bandwidth_gbs() -> float:
    return memory_bandwidth_gbs()


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("bess-farm benchmark table")
    cols = list(dict.fromkeys(k for row in RESULTS for k in row))
    widths = {c: max(len(c), *(len(_fmt(r.get(c, ""))) for r in RESULTS)) for c in cols}
    tr.write_line("  ".join(c.ljust(widths[c]) for c in cols))
    for row in RESULTS:
        tr.write_line("  ".join(_fmt(row.get(c, "")).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    if isinstance(v, float):
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.3g}"
    return str(v)
