"""Sensor layer: what SCADA and the BMS see instead of the truth.

    measured = fault(truth) + sigma * z(seed, unit, tick, channel)

``z`` is a standard normal drawn from a counter-based hash (SplitMix64 [1] + Box-Muller), so a
measurement is reproducible, costs nothing for units nobody reads, and two readers of the same
tick see the same number. Faults per unit and channel come from the sensor-fault table
(``float32[n, N_CHANNELS, 4]``: mode, a, b, t0):

    stuck:  measured = a
    offset: measured = truth + a
    drift:  measured = truth + a + b * max(0, t - t0)
    noise:  sigma += a

The engine's protection acts on the faulted (noise-free) value, as a real BMS acts on its sensors.

References
----------
[1] G. L. Steele, D. Lea, C. H. Flood, "Fast splittable pseudorandom number generators",
    OOPSLA 2014 (SplitMix64).
"""

import math

import numpy as np
from numba import njit

from .layout import SF_A, SF_B, SF_DRIFT, SF_MODE, SF_NOISE, SF_OFFSET, SF_STUCK, SF_T0

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, nogil=True, error_model="numpy")
def _mix(x):
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


@njit(cache=True, nogil=True, error_model="numpy")
def standard_normal(seed, unit, tick, channel):
    """A standard normal number determined by (seed, unit, tick, channel) alone."""
    h = _mix(np.uint64(seed))
    h = _mix(h ^ np.uint64(unit))
    h = _mix(h ^ np.uint64(tick))
    h = _mix(h ^ np.uint64(channel))
    u1 = ((h >> np.uint64(11)) + np.uint64(1)) * (1.0 / 9007199254740993.0)   # (0, 1]
    h2 = _mix(h)
    u2 = (h2 >> np.uint64(11)) * (1.0 / 9007199254740992.0)                  # [0, 1)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


@njit(cache=True, nogil=True, error_model="numpy")
def apply_fault(fault_row, truth, t_s):
    """Truth with the channel's stuck/offset/drift fault applied (no noise)."""
    mode = int(fault_row[SF_MODE])
    if mode == SF_STUCK:
        return float(fault_row[SF_A])
    if mode == SF_OFFSET:
        return truth + fault_row[SF_A]
    if mode == SF_DRIFT:
        return truth + fault_row[SF_A] + fault_row[SF_B] * max(0.0, t_s - fault_row[SF_T0])
    return truth


@njit(cache=True, nogil=True, error_model="numpy")
def measure_many(truth, units, ids, sigma, faults, faulted, channel, seed, tick, t_s, out):
    """Measured values of one channel for the listed units.

    Parameters
    ----------
    truth : float[:]   true values of the listed units (same order as ``units``)
    units : int64[:]   unit indices (rows of ``faults``)
    ids : int64[:]     farm-wide unit ids, which seed the noise (a shard sees the same numbers)
    sigma : float64[:] noise standard deviation per listed unit (channel units)
    faults : float32[n, channels, 4] sensor-fault table
    faulted : bool[:]  True where the unit has a sensor fault configured
    out : float64[:]   written in place
    """
    for j in range(units.shape[0]):
        out[j] = measure_one(faults, units[j], channel, truth[j], sigma[j], faulted[j], seed, ids[j],
                             tick, t_s)


@njit(cache=True, nogil=True, error_model="numpy")
def measure_one(faults, i, channel, truth, sigma, faulted, seed, uid, tick, t_s):
    """The measured value of one unit's channel (see :func:`measure_many`): ``i`` is its row in
    ``faults``, ``uid`` its farm-wide id."""
    s = sigma
    v = truth
    if faulted:
        row = faults[i, channel]
        v = apply_fault(row, v, t_s)
        if int(row[SF_MODE]) == SF_NOISE:
            s += row[SF_A]
        if int(row[SF_MODE]) == SF_STUCK:
            s = 0.0
    if s > 0.0:
        v += s * standard_normal(seed, uid, tick, channel)
    return v
