"""Ambient temperature profiles: constant, daily sinusoid, or a time series.

    daily:  T(t) = mean + amplitude * cos(2 pi (hour(t) - peak_hour) / 24)
    series: linear interpolation in time, held constant before the first and after the last point

``hour(t)`` counts from the farm's start time of day, so a run that starts at 06:00 sees the
morning minimum first.
"""

import math

from numba import njit

from .profiles import series_value

AMBIENT_CONSTANT = 0
AMBIENT_DAILY = 1
AMBIENT_SERIES = 2
AMBIENT_KINDS = {"constant": AMBIENT_CONSTANT, "daily": AMBIENT_DAILY, "series": AMBIENT_SERIES}


@njit(cache=True, nogil=True, error_model="numpy")
def ambient_c(t_s, kind, p, ts_t, ts_v):
    """Ambient temperature [C] at simulated time ``t_s`` [s].

    ``p`` = (value or mean [C], amplitude [K], peak hour [h], start hour of day [h]).
    """
    if kind == AMBIENT_DAILY:
        hour = (p[3] + t_s / 3600.0) % 24.0
        return p[0] + p[1] * math.cos(2.0 * math.pi * (hour - p[2]) / 24.0)
    if kind == AMBIENT_SERIES:
        return series_value(t_s, ts_t, ts_v, False)
    return p[0]
