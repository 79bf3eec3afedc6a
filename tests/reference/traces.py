"""Synthetic aging input traces shared by the BLAST-Lite reference generator and the tests.

Imports only numpy, so it runs both in the main interpreter (tests) and in the
``/opt/blast-venv`` interpreter (``blast_reference.py``).  Every trace is a periodic
one-day profile; ``day_trace(case, dt_s)`` returns the samples of one day
*including the closing sample* at ``t = 86400 s``, which equals the first one, so
BLAST-Lite can repeat the day without losing the join between days.

Cases (all defined on a minute clock ``m = (t_s mod 86400) / 60``):

``daily_full_cycle_25c``
    One full cycle per day at a constant 25 C cell temperature::

        m in [   0,  120)  rest at SoC 0
        m in [ 120,  376)  charge    SoC = (m - 120) / 256     (0.234 C, 256 min)
        m in [ 376,  856)  rest at SoC 1
        m in [ 856, 1112)  discharge SoC = 1 - (m - 856) / 256 (0.234 C)
        m in [1112, 1440)  rest at SoC 0

    The ramp of 1/256 per minute is exact in binary floating point, so the
    throughput of one day is exactly 1.0 equivalent full cycle (EFC) at a 60 s step.

``storage_100soc_35c``
    Storage at SoC 1.0 and a constant 35 C.

``three_cycles_60dod_var_temp`` (extra case: exercises BLAST-Lite's EFC chunk rule)
    Three cycles per day between SoC 0.2 and 0.8 with rests, 0.3 C, and a daily
    temperature swing ``T = 25 + 10 sin(2 pi t / 1 day)`` [C]; 1.8 EFC per day.  With
    more than one EFC per day BLAST-Lite chunks at SoC turning points, so chunks do not
    align with days and the reference is generated from a one-year series
    (``INPUT_DAYS``) rather than one repeated day::

        p = m mod 480:  [0, 120) SoC = 0.2 + 0.6 p / 120,  [120, 240) 0.8,
                        [240, 360) SoC = 0.8 - 0.6 (p - 240) / 120,  [360, 480) 0.2
"""

from __future__ import annotations

import numpy as np

DAY_S = 86400.0
CASES = ("daily_full_cycle_25c", "storage_100soc_35c", "three_cycles_60dod_var_temp")
# Days of input series handed to BLAST-Lite per case (BLAST-Lite repeats it up to the horizon).
INPUT_DAYS = {"daily_full_cycle_25c": 1, "storage_100soc_35c": 1, "three_cycles_60dod_var_temp": 365}

# Breakpoints of the daily full cycle [min]
_REST0_END_MIN = 120.0
_RAMP_MIN = 256.0
_REST1_END_MIN = 856.0


def soc_daily_full_cycle(t_s):
    """SoC [-] of the ``daily_full_cycle_25c`` profile at time ``t_s`` [s] (periodic, 1 day)."""
    m = np.mod(np.asarray(t_s, dtype=np.float64), DAY_S) / 60.0
    charge_end = _REST0_END_MIN + _RAMP_MIN
    discharge_end = _REST1_END_MIN + _RAMP_MIN
    soc = np.zeros_like(m)
    up = (m >= _REST0_END_MIN) & (m < charge_end)
    soc[up] = (m[up] - _REST0_END_MIN) / _RAMP_MIN
    soc[(m >= charge_end) & (m < _REST1_END_MIN)] = 1.0
    down = (m >= _REST1_END_MIN) & (m < discharge_end)
    soc[down] = 1.0 - (m[down] - _REST1_END_MIN) / _RAMP_MIN
    return soc


def soc_three_cycles(t_s):
    """SoC [-] of the ``three_cycles_60dod_var_temp`` profile at ``t_s`` [s] (period 480 min)."""
    p = np.mod(np.asarray(t_s, dtype=np.float64), 480.0 * 60.0) / 60.0
    soc = np.full_like(p, 0.2)
    up = p < 120.0
    soc[up] = 0.2 + 0.6 * p[up] / 120.0
    soc[(p >= 120.0) & (p < 240.0)] = 0.8
    down = (p >= 240.0) & (p < 360.0)
    soc[down] = 0.8 - 0.6 * (p[down] - 240.0) / 120.0
    return soc


def case_signals(case: str, t_s):
    """Return ``(soc [-], temp_c [C])`` arrays of ``case`` at times ``t_s`` [s]."""
    t_s = np.asarray(t_s, dtype=np.float64)
    if case == "daily_full_cycle_25c":
        return soc_daily_full_cycle(t_s), np.full_like(t_s, 25.0)
    if case == "storage_100soc_35c":
        return np.ones_like(t_s), np.full_like(t_s, 35.0)
    if case == "three_cycles_60dod_var_temp":
        return soc_three_cycles(t_s), 25.0 + 10.0 * np.sin(2.0 * np.pi * t_s / DAY_S)
    raise ValueError(f"unknown case {case!r}; known: {', '.join(CASES)}")


def day_trace(case: str, dt_s: float = 60.0, n_days: int = 1):
    """``n_days`` days of ``case`` sampled every ``dt_s`` [s]: ``(t_s, soc, temp_c)``.

    ``t_s`` runs from 0 to ``n_days * 86400`` s inclusive (``n_days * 86400 / dt_s + 1``
    samples); the last sample repeats the first (all cases are periodic in one day),
    which lets BLAST-Lite repeat the series without losing the join.  A sample-and-hold
    consumer (the engine) uses all samples but the last, each held for ``dt_s``.
    """
    n = int(round(n_days * DAY_S / dt_s))
    if abs(n * dt_s - n_days * DAY_S) > 1e-6 or abs(DAY_S / dt_s - round(DAY_S / dt_s)) > 1e-9:
        raise ValueError("dt_s must divide one day")
    t_s = np.arange(n + 1, dtype=np.float64) * dt_s
    soc, temp_c = case_signals(case, t_s)
    return t_s, soc, temp_c
