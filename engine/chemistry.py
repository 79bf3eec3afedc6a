"""Open-circuit voltage tables per chemistry.

Every table is resampled onto one uniform grid of :data:`OCV_POINTS` SoC points so that a lookup is
an index computation, not a search. The kernels also need the integral of the OCV over SoC: the
chemical energy stored in a unit is ``capacity_ah * 3600 * n_series * F(soc)`` with
``F(soc) = integral_0^soc ocv(s) ds`` [1], exact for the piecewise-linear curve.

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
def ocv_interp(tab, soc):
    """Cell OCV [V] at ``soc`` [-] from one table row; SoC clamped to 0..1, branch-free."""
    n = tab.shape[0] - 1
    x = min(max(soc, 0.0), 1.0) * n
    j = min(int(x), n - 1)
    return tab[j] + (x - j) * (tab[j + 1] - tab[j])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def ocv_integral(tab, tab_int, soc):
    """``F(soc) = integral_0^soc ocv(s) ds`` [V], exact for the piecewise-linear table row."""
    n = tab.shape[0] - 1
    x = min(max(soc, 0.0), 1.0) * n
    j = min(int(x), n - 1)
    f = x - j
    v0 = tab[j]
    return tab_int[j] + 0.5 * (2.0 * v0 + f * (tab[j + 1] - v0)) * f / n


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def ocv_slope(tab, soc):
    """dOCV/dSoC of the segment that holds ``soc`` [V per unit SoC]."""
    n = tab.shape[0] - 1
    j = min(max(int(soc * n), 0), n - 1)
    return (tab[j + 1] - tab[j]) * n
