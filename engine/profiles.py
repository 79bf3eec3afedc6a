"""Setpoint profiles: a value as a function of simulated time, evaluated inside the kernel.

A profile is four plain arrays so that the multi-step kernel evaluates it at every step without
returning to Python: ``kind``, ``p`` (4 scalars), ``ts`` and ``vs``.

- constant: ``p[0]``
- series: linear interpolation of ``(ts, vs)`` (``p[1] = 1``: step, hold the last value),
  held before the first and after the last point; ``p[0] > 0`` repeats it with that period [s].
- sines: ``p[0] * sum_k a_k sin(2 pi f_k t + phi_k)`` with ``ts = f_k`` [Hz] and
  ``vs = (a_1..a_K, phi_1..phi_K)``: a smooth, bounded, seeded signal (frequency regulation).

Built-in dispatch profiles (farm power, positive = discharge) are made by the functions below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

PROFILE_CONSTANT = 0
PROFILE_SERIES = 1
PROFILE_SINES = 2


@njit(cache=True, nogil=True, error_model="numpy")
def profile_value(t_s, kind, p, ts, vs):
    """Value of a profile at simulated time ``t_s`` [s]."""
    if kind == PROFILE_CONSTANT:
        return p[0]
    if kind == PROFILE_SINES:
        k = ts.shape[0]
        s = 0.0
        for j in range(k):
            s += vs[j] * math.sin(2.0 * math.pi * ts[j] * t_s + vs[k + j])
        return p[0] * s
    t = t_s
    if p[0] > 0.0:
        t = t_s % p[0]
    return series_value(t, ts, vs, p[1] != 0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def series_value(t, ts, vs, step):
    """Linear (``step``: hold) interpolation of ``(ts, vs)`` at ``t``, held beyond the ends."""
    n = ts.shape[0]
    if t <= ts[0]:
        return vs[0]
    if t >= ts[n - 1]:
        return vs[n - 1]
    lo = 0
    hi = n - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ts[mid] <= t:
            lo = mid
        else:
            hi = mid
    if step:
        return vs[lo]
    return vs[lo] + (t - ts[lo]) / (ts[hi] - ts[lo]) * (vs[hi] - vs[lo])


@dataclass(frozen=True)
class Profile:
    """A setpoint profile (see the module docstring); build it with the class methods."""
    kind: int
    p: np.ndarray
    ts: np.ndarray
    vs: np.ndarray
    name: str = ""

    @classmethod
    def constant(cls, value: float, name: str = "constant") -> "Profile":
        return cls(PROFILE_CONSTANT, np.array([float(value), 0.0, 0.0, 0.0]), np.zeros(1),
                   np.zeros(1), name)

    @classmethod
    def series(cls, times_s, values, *, period_s: float = 0.0, step: bool = False,
               name: str = "series") -> "Profile":
        """Linear (or step) interpolation of a time series; raises ``ValueError`` on bad input."""
        t = np.asarray(times_s, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if t.ndim != 1 or t.shape != v.shape or t.size == 0:
            raise ValueError("a profile needs times and values of equal length (at least one)")
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v))):
            raise ValueError("profile times and values must be finite numbers")
        if np.any(np.diff(t) <= 0):
            bad = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 1
            raise ValueError(f"profile times must increase strictly (row {bad + 1}: {t[bad]} after {t[bad - 1]})")
        if period_s < 0 or not math.isfinite(period_s):
            raise ValueError("profile period must be a positive number of seconds (or 0 for none)")
        return cls(PROFILE_SERIES, np.array([float(period_s), 1.0 if step else 0.0, 0.0, 0.0]),
                   t, v, name)

    @classmethod
    def sines(cls, freqs_hz, amplitudes, phases, scale: float, name: str = "sines") -> "Profile":
        f = np.asarray(freqs_hz, dtype=np.float64)
        a = np.asarray(amplitudes, dtype=np.float64)
        ph = np.asarray(phases, dtype=np.float64)
        if not (f.shape == a.shape == ph.shape) or f.size == 0:
            raise ValueError("sines need frequencies, amplitudes and phases of equal length")
        return cls(PROFILE_SINES, np.array([float(scale), 0.0, 0.0, 0.0]), f,
                   np.concatenate([a, ph]), name)

    def __call__(self, t_s: float) -> float:
        return float(profile_value(float(t_s), self.kind, self.p, self.ts, self.vs))

    def args(self):
        return self.kind, self.p, self.ts, self.vs


def daily_arbitrage(power_w: float, start_hour: float = 0.0, charge=(1.0, 5.0),
                    discharge=(17.0, 21.0)) -> Profile:
    """Charge at ``power_w`` between the charge hours, discharge between the discharge hours,
    idle otherwise; repeats daily. Hours are local time of day; the run starts at ``start_hour``."""
    hours = np.arange(0.0, 24.0, 0.25)
    values = np.zeros_like(hours)
    values[(hours >= charge[0]) & (hours < charge[1])] = -abs(power_w)
    values[(hours >= discharge[0]) & (hours < discharge[1])] = abs(power_w)
    t = ((hours - start_hour) % 24.0) * 3600.0
    order = np.argsort(t)
    return Profile.series(t[order], values[order], period_s=86400.0, step=True,
                          name="daily-arbitrage")


def frequency_regulation(power_w: float, seed: int = 0) -> Profile:
    """A RegD-like regulation signal: zero-mean, within +-``power_w``, periods from 20 s to 15 min.

    A sum of 24 sines with seeded frequencies and phases, scaled so its peak over a day stays
    within the power. Deterministic for a seed."""
    rng = np.random.default_rng([int(seed), 20260101])
    k = 24
    freqs = 1.0 / rng.uniform(20.0, 900.0, k)
    amps = rng.uniform(0.5, 1.0, k) / np.sqrt(k)
    phases = rng.uniform(0.0, 2.0 * np.pi, k)
    t = np.arange(0.0, 86400.0, 2.0)
    peak = np.max(np.abs((amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)))
    return Profile.sines(freqs, amps / peak, phases, abs(power_w), name="frequency-regulation")


def site_load_shape(hour: np.ndarray) -> np.ndarray:
    """A commercial site's load relative to its peak: night base, morning ramp, evening peak."""
    morning = np.exp(-0.5 * ((hour - 9.0) / 2.0) ** 2)
    evening = np.exp(-0.5 * ((hour - 18.5) / 1.8) ** 2)
    return 0.35 + 0.45 * morning + 0.65 * evening


def peak_shaving(power_w: float, start_hour: float = 0.0, threshold: float = 0.75,
                 valley: float = 0.45) -> Profile:
    """Discharge to hold a synthetic site load (see :func:`site_load_shape`) under ``threshold``
    of its peak, recharge when it falls under ``valley``; ``power_w`` is the farm power at the
    deepest shave. Repeats daily."""
    hours = np.arange(0.0, 24.0, 0.25)
    load = site_load_shape(hours)
    load = load / load.max()
    over = np.clip(load - threshold, 0.0, None)
    under = np.clip(valley - load, 0.0, None)
    values = abs(power_w) * (over / max(over.max(), 1e-12) - under / max(under.max(), 1e-12))
    t = ((hours - start_hour) % 24.0) * 3600.0
    order = np.argsort(t)
    return Profile.series(t[order], values[order], period_s=86400.0, name="peak-shaving")
