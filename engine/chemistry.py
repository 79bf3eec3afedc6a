"""Open-circuit voltage tables per chemistry.

Every table is resampled onto one uniform grid of :data:`OCV_POINTS` SoC points so that a lookup is
an index computation, not a search. The kernels also need the integral of the OCV over SoC: the
chemical energy stored in a unit is ``capacity_ah * 3600 * n_series * F(soc)`` with
``F(soc) = integral_0^soc ocv_cell(s) ds`` [1], exact for the piecewise-linear curve.

The built-in curves are representative shapes, not a specific product's measurement: LFP/graphite
has the long flat plateau near 3.3 V, NMC/graphite a sloped curve from 3.0 to 4.18 V [2].

References
----------
[1] G. L. Plett, Battery Management Systems, Vol. 1: Battery Modeling, Artech House, 2015, ch. 2.
[2] NREL BLAST-Lite 1.1.1 model documentation (cell chemistries and voltage windows).
"""

from __future__ import annotations

import numpy as np
from numba import njit

OCV_POINTS = 101
OCV_GRID = np.linspace(0.0, 1.0, OCV_POINTS)

_BUILTIN_SOC = np.linspace(0.0, 1.0, 21)
BUILTIN_OCV = {
    "lfp": np.array([2.500, 3.150, 3.200, 3.220, 3.240, 3.250, 3.260, 3.265, 3.270, 3.275, 3.280,
                     3.285, 3.290, 3.300, 3.310, 3.320, 3.325, 3.330, 3.335, 3.350, 3.450]),
    "nmc": np.array([3.000, 3.350, 3.450, 3.500, 3.550, 3.580, 3.610, 3.630, 3.660, 3.690, 3.720,
                     3.760, 3.800, 3.840, 3.880, 3.920, 3.960, 4.000, 4.050, 4.100, 4.180]),
}


def resample_ocv(soc_points, volts) -> np.ndarray:
    """Resample a piecewise-linear OCV curve onto the uniform grid.

    Exact wherever the given knots fall on the grid (any table with a spacing that is a multiple of
    0.01). Raises ``ValueError`` for a curve that does not span SoC 0..1, is not strictly increasing
    in SoC, or whose voltage falls with SoC.
    """
    soc_points = np.asarray(soc_points, dtype=np.float64)
    volts = np.asarray(volts, dtype=np.float64)
    if soc_points.ndim != 1 or soc_points.shape != volts.shape or soc_points.size < 2:
        raise ValueError("an OCV table needs two lists of equal length (>= 2): soc and volts")
    if not (np.all(np.isfinite(soc_points)) and np.all(np.isfinite(volts))):
        raise ValueError("an OCV table must contain finite numbers only")
    if abs(soc_points[0]) > 1e-12 or abs(soc_points[-1] - 1.0) > 1e-12:
        raise ValueError("an OCV table must span soc = 0 to soc = 1")
    if np.any(np.diff(soc_points) <= 0):
        raise ValueError("OCV table soc points must be strictly increasing")
    if np.any(np.diff(volts) < 0):
        raise ValueError("OCV must not fall as SoC rises")
    if volts[0] <= 0:
        raise ValueError("OCV must be positive")
    return np.interp(OCV_GRID, soc_points, volts)


def ocv_integral_table(ocv_row: np.ndarray) -> np.ndarray:
    """Cumulative trapezoid of the OCV over SoC at the grid points [V] (exact for linear segments)."""
    step = 1.0 / (OCV_POINTS - 1)
    out = np.zeros_like(ocv_row)
    out[1:] = np.cumsum(0.5 * (ocv_row[1:] + ocv_row[:-1]) * step)
    return out


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def ocv_cell(ocv, table, soc):
    """Cell open-circuit voltage [V] at ``soc`` [-] from row ``table`` of ``ocv``; clamped to 0..1."""
    n = ocv.shape[1] - 1
    x = soc * n
    if x <= 0.0:
        return ocv[table, 0]
    if x >= n:
        return ocv[table, n]
    j = int(x)
    f = x - j
    return ocv[table, j] + f * (ocv[table, j + 1] - ocv[table, j])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def ocv_cell_integral(ocv, ocv_int, table, soc):
    """``F(soc) = integral_0^soc ocv_cell(s) ds`` [V], exact for the piecewise-linear table."""
    n = ocv.shape[1] - 1
    x = soc * n
    if x <= 0.0:
        return 0.0
    if x >= n:
        return ocv_int[table, n]
    j = int(x)
    ds = (x - j) / n
    v0 = ocv[table, j]
    v1 = v0 + (x - j) * (ocv[table, j + 1] - v0)
    return ocv_int[table, j] + 0.5 * (v0 + v1) * ds


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def ocv_cell_slope(ocv, table, soc):
    """dOCV/dSoC of the segment that holds ``soc`` [V per unit SoC]."""
    n = ocv.shape[1] - 1
    j = min(max(int(soc * n), 0), n - 1)
    return (ocv[table, j + 1] - ocv[table, j]) * n
