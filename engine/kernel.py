"""The tick: every unit, every physical domain, with one read of the published state.

Per unit and step: protection latch/reset -> dispatch -> PCS -> current from power with limits ->
RC pairs, SoC and energy accounts -> thermal (HVAC, neighbours, runaway) -> protection and state ->
aging sample -> outputs -> the unit's dispatch headroom for the next step and its share of the farm
aggregates. Tick k reads buffer ``src`` and writes buffer ``1 - src``; nothing else is copied.

Units are processed in fixed blocks of :data:`BLOCK` units (``prange`` over blocks); each block
writes its own row of partial aggregates and the rows are summed in block order afterwards, so
every result is bitwise the same for any number of threads. Within a block, a run of units of one
kind is stepped as short array loops (:func:`_step_run`), or one unit at a time when the run is
short (:func:`_step_run_scalar`); both give bitwise the same unit state.

Dispatch is exact without a second pass: the headroom ``h`` and SoC-balancing weight ``w`` each
unit will have at the start of the next step are summed in this step, and the next step splits the
farm setpoint with them (see :func:`dispatch_coefficients`).
"""

import math

import numba
import numpy as np
from numba import njit, prange

from .aging import (aging_accumulate, aging_relative_capacity, aging_relative_resistance,
                    aging_update, aging_update_due)
from .ambient import ambient_c
from .profiles import profile_value
from .chemistry import ocv_integral, ocv_interp, ocv_slope
from .electrical import current_for_power, pcs_loss_w, rc_update
from .layout import *  # noqa: F403  (field indices are compile-time constants)
from .sensors import apply_fault
from .thermal import (RG_FAILED, hvac_exact, hvac_regime, regime_setpoints, self_heating_w,
                      thermal_update)

BLOCK = 2048
#: Runs shorter than this take the one-unit-at-a-time path (see _step_run_scalar).
SCALAR_RUN_MAX = 16


@njit(cache=True, nogil=True, error_model="numpy")
def dispatch_coefficients(farm_w, agg, disp):
    """Split ``farm_w`` [W] over the farm-dispatched units with the sums from ``agg``.

    With W = sum of SoC-balancing weights (discharge: h * soc; charge: h * (1 - soc)) and
    H = sum of headrooms h:  P <= W: p_i = P w_i / W;  W < P < H: p_i = w_i + (P - W)/(H - W)
    (h_i - w_i);  P >= H: p_i = h_i. The units' requests add up to P exactly whenever P <= H,
    every unit stays within its headroom, and fuller units discharge more (emptier charge more).
    """
    disp[D_SIGN] = 0.0
    disp[D_ALPHA] = 0.0
    disp[D_BETA] = 0.0
    if farm_w > 0.0:
        w = agg[AG_W_DIS]
        h = agg[AG_H_DIS]
        p = farm_w
        disp[D_SIGN] = 1.0
    elif farm_w < 0.0:
        w = agg[AG_W_CHG]
        h = agg[AG_H_CHG]
        p = -farm_w
        disp[D_SIGN] = -1.0
    else:
        return
    if p <= w and w > 0.0:
        disp[D_ALPHA] = p / w
    elif p < h and h > w:
        disp[D_ALPHA] = 1.0
        disp[D_BETA] = (p - w) / (h - w)
    else:
        disp[D_ALPHA] = 1.0
        disp[D_BETA] = 1.0


# Scratch rows of one block (float64 and int64), reused by every block a thread processes. The
# kernel sees each thread's scratch as one flat array and a row as an offset into it that is a
# compile-time constant: the compiler then knows that two rows never overlap, and vectorizes a
# loop that touches many of them (with rows as separate views it has to check every pair at run
# time, and gives up beyond a few). Rows are one cache line longer than a block: with a pitch of
# exactly 16 KiB, element j of every row would fall into the same L1 cache set, and a loop that
# streams more rows than the cache has ways (8) would miss on every access.
_PITCH = BLOCK + 8
(S_OCV0, S_SLOPE, S_F0, S_INVCAP, S_PREQ, S_LOSS, S_CUR, S_SOC1, S_VRCA, S_V1N, S_V2N, S_OCV1,
 S_F1, S_HEAT, S_EDC, S_ELOSS, S_VTERM, S_PAC, S_PDC, S_TNB, S_QRW, S_TEMP1, S_PHVAC,
 S_SEG_X, S_SEG_V0, S_SEG_V1, S_SEG_F) = range(0, 27 * _PITCH, _PITCH)
I_LATCHED, I_CLAMPED, I_NNB, I_STATE, I_ALARMS, I_SOC_BAND, I_TEMP_BAND = range(0, 7 * _PITCH, _PITCH)
I_SEG = I_STATE          # an OCV table segment index, in phases 1 and 2 (I_STATE is set in phase 4)
I_SEG1 = I_SOC_BAND      # the end-of-step segment, in phase 2 (I_SOC_BAND is set in phase 4)
# what the farm allocates per thread, in rows of BLOCK elements (Farm._new_scratch)
N_SCRATCH = -(-27 * _PITCH // BLOCK)
N_ISCRATCH = -(-7 * _PITCH // BLOCK)

_INLINE = dict(cache=True, nogil=True, error_model="numpy", inline="always")
# Sums may be reassociated (vectorized): a compiled kernel adds in one fixed order, so a run is
# still bitwise the same for the same seed, whatever the thread count.
_REDUCE = dict(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"})


@njit(**_REDUCE)
def _sum(x):
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j]
    return s


@njit(**_REDUCE)
def _dot(x, y):
    s = 0.0
    for j in range(x.shape[0]):
        s += x[j] * y[j]
    return s


@njit(**_INLINE)
def _min_max(x):
    lo0 = lo1 = np.inf
    hi0 = hi1 = -np.inf
    m = x.shape[0]
    j = 0
    while j + 2 <= m:
        lo0 = min(lo0, x[j])
        hi0 = max(hi0, x[j])
        lo1 = min(lo1, x[j + 1])
        hi1 = max(hi1, x[j + 1])
        j += 2
    if j < m:
        lo0 = min(lo0, x[j])
        hi0 = max(hi0, x[j])
    return min(lo0, lo1), max(hi0, hi1)


@njit(**_INLINE)
def _ocv_segment(tab, soc):
    """The OCV table segment ``j`` that holds ``soc`` and the position ``x - j`` in it.

    Exactly what :func:`~.chemistry.ocv_interp`, :func:`~.chemistry.ocv_integral` and (for any
    finite SoC) :func:`~.chemistry.ocv_slope` compute before they read the table; with
    :func:`_ocv_at` it splits a lookup into the table reads, which cannot be vectorized, and the
    arithmetic (a division among it), which can. tests/test_engine_properties.py holds the pair
    bitwise to the chemistry helpers.
    """
    n = tab.shape[0] - 1
    x = min(max(soc, 0.0), 1.0) * n
    j = min(int(x), n - 1)
    return j, x - j


@njit(**_INLINE)
def _ocv_segment_v(n, soc):
    """:func:`_ocv_segment` for a table of ``n`` segments, with an int32 conversion (it
    vectorizes, where the int64 one does not): the same segment and position for any SoC."""
    x = min(max(soc, 0.0), 1.0) * n
    j = max(np.int32(0), min(np.int32(x), np.int32(n - 1)))   # (the lower bound: a NaN SoC)
    return j, x - j


@njit(**_INLINE)
def _count_bins(v, pa, off):
    """Add to ``pa[off + c]`` the number of entries of ``v`` equal to ``c``, for every ``c``.

    Nearly all units of a run share a state and a band, so the entries span a bin or two: count
    them with vectorized compare-and-add passes over ``[min(v), max(v)]`` instead of a scalar
    histogram (a chain of read-modify-writes of the same bin)."""
    lo = v[0]
    hi = v[0]
    for j in range(v.shape[0]):
        lo = min(lo, v[j])
        hi = max(hi, v[j])
    for c in range(lo, hi + 1):
        cnt = 0
        for j in range(v.shape[0]):
            cnt += 1 if v[j] == c else 0
        pa[off + c] += cnt


@njit(**_INLINE)
def _ocv_at(v0, v1, f_j, x, n):
    """OCV, slope dOCV/dSoC and integral F from a segment's table values (``v0 = tab[j]``,
    ``v1 = tab[j + 1]``, ``f_j = tab_int[j]``) and the position ``x`` in it (n segments):
    the expressions of ocv_interp, ocv_slope and ocv_integral, operation for operation."""
    return v0 + x * (v1 - v0), (v1 - v0) * n, f_j + 0.5 * (2.0 * v0 + x * (v1 - v0)) * x / n


@njit(**_INLINE)
def _headroom(soc, temp_c, ocv_v, r0, derate, p_rated, t_der, t_hi, inv_span, t_min_chg,
              soc_min, soc_max, inv_taper, i_d, i_c):
    """AC power the unit can deliver (discharge) and absorb (charge) now [W], both >= 0.

    The PCS rating, the current limits at the present OCV, the temperature derating (linear from
    ``t_derate`` to ``t_trip_high``; charging also from ``t_min_charge`` to 10 K above it), the
    SoC taper (linear to zero over ``soc_taper`` at each end of the window) and an external derate.
    """
    f_t = 1.0
    if temp_c > t_der:
        f_t = max(0.0, (t_hi - temp_c) * inv_span)
    f_cold = min(1.0, max(0.0, (temp_c - t_min_chg) * 0.1))
    f_dis = min(1.0, max(0.0, (soc - soc_min) * inv_taper))
    f_chg = min(1.0, max(0.0, (soc_max - soc) * inv_taper))
    p_d = min(p_rated, i_d * (ocv_v - i_d * r0))
    p_c = min(p_rated, i_c * (ocv_v + i_c * r0))
    f = f_t * derate
    return max(0.0, p_d * f * f_dis), max(0.0, p_c * f * f_chg * f_cold)


@njit(**_INLINE)
def _ocv_reads_moved(tab, tab_int, si, sc, m):
    """:func:`_ocv_reads` for the units whose segment ``si[I_SEG1:]`` differs from the one in
    ``si[I_SEG:]`` (whose table values are in the S_SEG rows already); a scalar loop whose branch
    is nearly never taken."""
    one = np.uint64(1)
    for j in range(m):
        if si[I_SEG1 + j] != si[I_SEG + j]:
            g = np.uint64(si[I_SEG1 + j])
            sc[S_SEG_V0 + j] = tab[g]
            sc[S_SEG_V1 + j] = tab[g + one]
            sc[S_SEG_F + j] = tab_int[g]


@njit(**_INLINE)
def _ocv_reads(tab, tab_int, si, sc, m):
    """The table values of the segments in ``si[I_SEG:]``: loads only (they do not vectorize).
    Unsigned indices: no check for a negative index (wraparound) per read."""
    one = np.uint64(1)
    for j in range(m):
        g = np.uint64(si[I_SEG + j])
        sc[S_SEG_V0 + j] = tab[g]
        sc[S_SEG_V1 + j] = tab[g + one]
        sc[S_SEG_F + j] = tab_int[g]


@njit(**_INLINE)
def _hvac_step(kp, k, regimes, temp, fl, sc, si, m):
    """Temperatures at the end of the step and HVAC draws (``S_TEMP1``, ``S_PHVAC``) of a run
    from the held heat ``S_TNB`` and the neighbour counts ``I_NNB``; ``regimes`` is the OR of
    the units' :func:`~.thermal.hvac_regime` bits. Nearly always every unit of a run is in one
    working regime: then its constants are scalars, the factors of each unit's neighbour count
    are selected rather than read at a computed slot, and the loop vectorizes. Otherwise each
    unit takes :func:`~.thermal.thermal_update` (a scalar loop). Both compute with
    :func:`~.thermal.hvac_exact`: bitwise the same."""
    if (regimes & (regimes - 1)) == 0 and regimes != RG_FAILED:
        prop, t_set, q_sink = regime_setpoints(kp, k, regimes)
        gain = kp[k, K_HVAC_GAIN]
        base = kp[k, K_HVAC_BASE_W]
        inv_cop_c = kp[k, K_INV_COP_COOL]
        inv_cop_h = kp[k, K_INV_COP_HEAT]
        s0 = K_TH + (3 if prop else 0)
        s1 = s0 + TH_SLOTS
        s2 = s1 + TH_SLOTS
        om0, om1, om2 = 1.0 - kp[k, s0], 1.0 - kp[k, s1], 1.0 - kp[k, s2]
        av0, av1, av2 = kp[k, s0 + 1], kp[k, s1 + 1], kp[k, s2 + 1]
        gi0, gi1, gi2 = kp[k, s0 + 2], kp[k, s1 + 2], kp[k, s2 + 2]
        for j in range(m):
            nb = si[I_NNB + j]
            two = nb == 2
            one = nb == 1
            sc[S_TEMP1 + j], sc[S_PHVAC + j] = hvac_exact(
                temp[j], sc[S_TNB + j], prop, t_set, q_sink,
                om2 if two else (om1 if one else om0), av2 if two else (av1 if one else av0),
                gi2 if two else (gi1 if one else gi0), gain, inv_cop_c, inv_cop_h, base)
    else:
        for j in range(m):
            sc[S_TEMP1 + j], sc[S_PHVAC + j] = thermal_update(
                kp, k, temp[j], sc[S_TNB + j], si[I_NNB + j], (fl[j] & FLAG_HVAC_FAILED) == 0)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp,
                dyn, out, status, alarms, upar, flags, kind, kp, ocv, ocv_int, sfault,
                acc, ast, partial, sc, si):
    """Advance units [b*BLOCK, min(n, (b+1)*BLOCK)) by one step and fill ``partial[b]``.

    The block is cut into runs of units of one kind (a farm lists its kinds as contiguous
    groups, so a block holds one run, rarely two), and each run is stepped by :func:`_step_run`.
    """
    lo = b * BLOCK
    hi = min(n, lo + BLOCK)
    pa = partial[b]
    pa[:] = 0.0
    pa[AG_TEMP_MAX] = -np.inf
    pa[AG_TEMP_MIN] = np.inf
    pa[AG_SOC_MIN] = np.inf
    pa[AG_SOC_MAX] = -np.inf
    k0 = kind[lo]
    same = 0
    for j in range(lo, hi):                 # (a count, not a search: it vectorizes)
        same += 1 if kind[j] == k0 else 0
    a = lo
    while a < hi:
        k = kind[a]
        e = hi if same == hi - lo else a + 1    # the usual case: the block is one run
        while e < hi and kind[e] == k:
            e += 1
        if e - a < SCALAR_RUN_MAX:
            _step_run_scalar(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out,
                             status, alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast, pa)
        else:
            _step_run(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status,
                      alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast,
                      sc.reshape(N_SCRATCH * BLOCK), si.reshape(N_ISCRATCH * BLOCK), pa)
        a = e


@njit(cache=True, nogil=True, error_model="numpy")
def _step_run(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
              upar, flags, kp, ocv, ocv_int, sfault, acc, ast, sc, si, pa):
    """Step units [a, e), all of kind ``k``, and add their share to the block partials ``pa``.

    Written as a sequence of loops over the run, each doing a piece of the physics for every
    unit (array in, array out, with the kind's parameters as scalars), rather than one long loop
    that does everything for one unit: one long loop is bound by each unit's chain of dependent
    divisions, square roots and table lookups, where these loops are vectorized by the compiler
    (or, the table lookups, overlap across units). Intermediate values live in the per-thread
    scratch rows ``sc``/``si`` (flat, see ``S_*``), which stay in L2 cache. Every pass over them
    costs time, so a loop does all that needs the same inputs, as long as the compiler still
    vectorizes it: a loop may write to many scratch rows but to only two or three rows of the
    state or output arrays (their distances are not known at compile time, and the compiler
    gives up on vectorizing when it would have to check too many pairs of them at run time).
    Conditions are selects on values loaded unconditionally, combined with ``&``/``|`` rather
    than ``and``/``or``: a load or store behind a branch becomes a masked move in vector code,
    which this processor executes very slowly.
    """
    m = e - a
    # --- views of this run's state and parameters
    soc = dyn[src, SOC, a:e]
    v1 = dyn[src, V_RC1, a:e]
    v2 = dyn[src, V_RC2, a:e]
    temp = dyn[src, TEMP_C, a:e]
    fl = flags[a:e]
    al = alarms[src, a:e]
    cap = upar[CAP_AH, a:e]
    r0 = upar[R0_OHM, a:e]
    r1 = upar[R1_OHM, a:e]
    r2 = upar[R2_OHM, a:e]
    der = upar[DERATE, a:e]
    sp = upar[SETPOINT_W, a:e]
    rlo = upar[SOC_RSV_MIN, a:e]
    rhi = upar[SOC_RSV_MAX, a:e]
    tab = ocv[int(kp[k, K_OCV_TABLE])]
    tab_int = ocv_int[int(kp[k, K_OCV_TABLE])]
    # --- the kind's parameters
    ns = kp[k, K_N_SERIES]
    eta = kp[k, K_ETA_COULOMB]
    p_rated = kp[k, K_P_RATED]
    inv_p_rated = kp[k, K_INV_P_RATED]
    l0 = kp[k, K_PCS_L0]
    l1 = kp[k, K_PCS_L1]
    l2 = kp[k, K_PCS_L2]
    i_d = kp[k, K_I_MAX_DIS]
    i_c = kp[k, K_I_MAX_CHG]
    v_min = kp[k, K_V_MIN]
    v_max = kp[k, K_V_MAX]
    soc_min = kp[k, K_SOC_MIN]
    soc_max = kp[k, K_SOC_MAX]
    inv_taper = kp[k, K_INV_TAPER]
    t_der = kp[k, K_T_DERATE]
    t_hi = kp[k, K_T_TRIP_HI]
    inv_span = kp[k, K_INV_DERATE_SPAN]
    t_min_chg = kp[k, K_T_MIN_CHARGE]
    om1 = kp[k, K_OM1]
    av1 = kp[k, K_AV1]
    om2 = kp[k, K_OM2]
    av2 = kp[k, K_AV2]
    onset = kp[k, K_RW_ONSET_C]
    d_sign = disp[D_SIGN]
    d_alpha = disp[D_ALPHA]
    d_beta = disp[D_BETA]
    inv_dt = 1.0 / dt
    h_per_s = 1.0 / 3600.0
    soc_per_as = dt / 3600.0           # SoC moved by 1 A over the step, times capacity [Ah]
    as_per_soc = 3600.0 / dt
    inv_eta = 1.0 / eta

    # ============ 1: protection latch and reset, dispatch, PCS, current and its limits
    # The OCV table segment of the start-of-step SoC. Table reads do not vectorize, so they get
    # a loop of their own, of nothing but loads and stores; the segment index and position are
    # computed in a vectorized pass before it (into I_SEG, a row that is free until phase 4),
    # the arithmetic of the lookup in the next, vectorized, loop.
    n_seg = tab.shape[0] - 1
    for j in range(m):
        g, x = _ocv_segment_v(n_seg, soc[j])
        si[I_SEG + j] = g
        sc[S_SEG_X + j] = x
    _ocv_reads(tab, tab_int, si, sc, m)
    # Latch and reset, headroom and dispatch: the AC power each unit is asked for. Also notes
    # (as bit masks, which vectorize) whether any unit needs one of the rare paths below.
    any_flags = 0
    hot = 0
    for j in range(m):
        sc[S_INVCAP + j] = 1.0 / np.float64(cap[j])
        f = fl[j]
        lat = al[j] & TRIP_MASK
        if f & FLAG_RESET:
            lat &= ALARM_THERMAL_RUNAWAY
        si[I_LATCHED + j] = lat
        any_flags |= f
        hot |= lat | (ALARM_THERMAL_RUNAWAY if temp[j] > onset else 0)
        # the OCV, its slope and its integral at the start-of-step SoC
        o, sl, f0 = _ocv_at(sc[S_SEG_V0 + j], sc[S_SEG_V1 + j], sc[S_SEG_F + j],
                            sc[S_SEG_X + j], n_seg)
        ocv0 = ns * o
        sc[S_OCV0 + j] = ocv0
        sc[S_SLOPE + j] = ns * sl
        sc[S_F0 + j] = f0
        hdis, hchg = _headroom(soc[j], temp[j], ocv0, np.float64(r0[j]), np.float64(der[j]),
                               p_rated, t_der, t_hi, inv_span, t_min_chg, np.float64(rlo[j]),
                               np.float64(rhi[j]), inv_taper, i_d, i_c)
        s = np.float64(sp[j])
        if d_sign > 0.0:
            w = hdis * soc[j]
            auto = d_alpha * w + d_beta * (hdis - w)
        elif d_sign < 0.0:
            w = hchg * (1.0 - soc[j])
            auto = -(d_alpha * w + d_beta * (hchg - w))
        else:
            auto = 0.0
        manual = min(s, hdis) if s >= 0.0 else max(s, -hchg)
        by_current = s * (ocv0 - v1[j] - v2[j] - s * np.float64(r0[j]))
        req = by_current if (f & FLAG_CURRENT_MODE) != 0 else manual
        req = req if (f & FLAG_MANUAL) != 0 else auto
        sc[S_PREQ + j] = 0.0 if ((f & RUN_MASK) != FLAG_ENABLED) | (lat != 0) else req
    hot &= ALARM_THERMAL_RUNAWAY            # a unit in runaway, or one above the onset
    # The current and its limits, and what it does over the step: SoC and the RC pairs.
    for j in range(m):
        # Solve P = i * v_avg(i) with the terminal voltage averaged over the step, so a step
        # delivers the setpoint's energy for any dt: the RC voltages and the OCV move linearly
        # with i over the step (exact for the RC pairs, first order in the OCV slope).
        req = sc[S_PREQ + j]
        ocv0 = sc[S_OCV0 + j]
        inv_cap = sc[S_INVCAP + j]
        ls = pcs_loss_w(req, p_rated, inv_p_rated, l0, l1, l2)
        p_dc = req + ls
        if req < 0.0 and p_dc > 0.0:
            p_dc = 0.0
        d_ocv = sc[S_SLOPE + j] * 0.5 * soc_per_as * inv_cap
        if p_dc < 0.0:
            d_ocv *= eta
        e_avg = ocv0 - v1[j] * av1 - v2[j] * av2
        r_avg = r0[j] + r1[j] * (1.0 - av1) + r2[j] * (1.0 - av2) + d_ocv
        c = current_for_power(p_dc, e_avg, r_avg)
        # limits: pack current, the voltage window, the unit's SoC window (never overshot)
        f = fl[j]
        s = np.float64(sp[j])
        cm = ((f & FLAG_MANUAL) != 0) & ((f & FLAG_CURRENT_MODE) != 0)
        c = s if cm else c
        ls = 0.0 if cm else ls
        c = 0.0 if ((f & RUN_MASK) != FLAG_ENABLED) | (si[I_LATCHED + j] != 0) else c
        e_src = ocv0 - v1[j] - v2[j]
        inv_r0 = 1.0 / r0[j]
        a_s = np.float64(cap[j]) * as_per_soc           # ampere-steps per unit of SoC
        i_hi = max(0.0, min(i_d, (e_src - v_min) * inv_r0, (soc[j] - np.float64(rlo[j])) * a_s))
        i_lo = min(0.0, max(-i_c, (e_src - v_max) * inv_r0,
                            -(np.float64(rhi[j]) - soc[j]) * a_s * inv_eta))
        c2 = min(max(c, i_lo), i_hi)
        si[I_CLAMPED + j] = 1 if cm | (c2 != c) else 0
        sc[S_CUR + j] = c2
        sc[S_LOSS + j] = ls
        # ============ 2: equivalent circuit, SoC, OCV and energy accounts
        dq = c2 * soc_per_as * inv_cap
        if c2 < 0.0:
            dq *= eta
        sc[S_SOC1 + j] = min(1.0, max(0.0, soc[j] - dq))
        v1n, v1a = rc_update(v1[j], c2, r1[j], om1, av1)
        v2n, v2a = rc_update(v2[j], c2, r2[j], om2, av2)
        sc[S_V1N + j] = v1n
        sc[S_V2N + j] = v2n
        sc[S_VRCA + j] = v1a + v2a
    # The OCV table segment of the end-of-step SoC. A step moves the SoC by a small fraction of
    # a segment, so nearly every unit is still in the segment whose table values are in the
    # S_SEG rows: only the units that left it read the table again.
    moved = 0
    for j in range(m):
        g, x = _ocv_segment_v(n_seg, sc[S_SOC1 + j])
        moved += 1 if g != si[I_SEG + j] else 0
        si[I_SEG1 + j] = g
        sc[S_SEG_X + j] = x
    if moved:
        _ocv_reads_moved(tab, tab_int, si, sc, m)
    # energy accounts, the unit's powers and terminal voltage
    for j in range(m):
        c = sc[S_CUR + j]
        soc1 = sc[S_SOC1 + j]
        ds = soc1 - soc[j]
        # the OCV and its integral at the end-of-step SoC
        o, _, f1 = _ocv_at(sc[S_SEG_V0 + j], sc[S_SEG_V1 + j], sc[S_SEG_F + j],
                           sc[S_SEG_X + j], n_seg)
        ocv1 = ns * o
        sc[S_OCV1 + j] = ocv1
        sc[S_F1 + j] = f1
        # the exact mean OCV over the step: the integral's difference over the SoC moved
        ocv0 = sc[S_OCV0 + j]
        f0 = sc[S_F0 + j]
        ocv_avg = ns * (f1 - f0) / ds if ds != 0.0 else ocv0
        e_ohm = c * dt * (c * r0[j] + sc[S_VRCA + j])   # [J] into R0 and the RC pairs
        e_coul = -(1.0 - eta) * c * dt * ocv_avg if c < 0.0 else 0.0   # side reactions
        edc = c * dt * ocv_avg - e_ohm                   # [J] out of the terminals
        sc[S_EDC + j] = edc
        sc[S_HEAT + j] = (e_ohm + e_coul) * inv_dt
        sc[S_ELOSS + j] = e_ohm + e_coul
        p_dc = edc * inv_dt
        ls = sc[S_LOSS + j]
        ls = pcs_loss_w(p_dc, p_rated, inv_p_rated, l0, l1, l2) if si[I_CLAMPED + j] != 0 else ls
        ls = 0.0 if c == 0.0 else ls
        sc[S_PAC + j] = p_dc - ls if c != 0.0 else 0.0
        sc[S_PDC + j] = p_dc
        sc[S_LOSS + j] = ls
        sc[S_VTERM + j] = ocv1 - sc[S_V1N + j] - sc[S_V2N + j] - c * r0[j]
    # the next state and the outputs, two or three rows per loop (see above)
    dst_1 = dyn[dst, V_RC1, a:e]
    dst_2 = dyn[dst, V_RC2, a:e]
    for j in range(m):
        dst_1[j] = sc[S_V1N + j]
        dst_2[j] = sc[S_V2N + j]
    src_c = dyn[src, E_AC_CHARGED, a:e]
    dst_c = dyn[dst, E_AC_CHARGED, a:e]
    src_d = dyn[src, E_AC_DISCHARGED, a:e]
    dst_d = dyn[dst, E_AC_DISCHARGED, a:e]
    for j in range(m):
        dst_c[j] = src_c[j] + max(0.0, -sc[S_PAC + j]) * dt * h_per_s
        dst_d[j] = src_d[j] + max(0.0, sc[S_PAC + j]) * dt * h_per_s
    src_dcc = dyn[src, E_DC_CHARGED, a:e]
    dst_dcc = dyn[dst, E_DC_CHARGED, a:e]
    src_dcd = dyn[src, E_DC_DISCHARGED, a:e]
    dst_dcd = dyn[dst, E_DC_DISCHARGED, a:e]
    for j in range(m):
        dst_dcc[j] = src_dcc[j] + max(0.0, -sc[S_EDC + j]) * h_per_s
        dst_dcd[j] = src_dcd[j] + max(0.0, sc[S_EDC + j]) * h_per_s
    src_l = dyn[src, E_LOSS, a:e]
    dst_l = dyn[dst, E_LOSS, a:e]
    for j in range(m):
        dst_l[j] = src_l[j] + (sc[S_LOSS + j] * dt + sc[S_ELOSS + j]) * h_per_s
    src_f = dyn[src, EFC, a:e]
    dst_f = dyn[dst, EFC, a:e]
    dst_s = dyn[dst, SOC, a:e]
    for j in range(m):
        dst_f[j] = src_f[j] + 0.5 * abs(sc[S_SOC1 + j] - soc[j])
        dst_s[j] = sc[S_SOC1 + j]
    o_i = out[dst, CURRENT_A, a:e]
    o_v = out[dst, VOLTAGE_V, a:e]
    for j in range(m):
        o_i[j] = sc[S_CUR + j]
        o_v[j] = sc[S_VTERM + j]
    o_ac = out[dst, P_AC_W, a:e]
    o_dc = out[dst, P_DC_W, a:e]
    o_rq = out[dst, P_REQUEST_W, a:e]
    for j in range(m):
        o_ac[j] = sc[S_PAC + j]
        o_dc[j] = sc[S_PDC + j]
        o_rq[j] = sc[S_PREQ + j]

    # ============ 3: thermal (neighbours from the published snapshot, HVAC, self-heating, runaway)
    temp_all = dyn[src, TEMP_C]
    # interior units read both neighbours unconditionally and mask by the flags (branch-free);
    # the first and last unit of the farm have no neighbour on the outer side
    j0 = 1 if a == 0 else 0
    j1 = m - 1 if e == n else m
    # (through views indexed from 0: an index that may be negative, as a + j - 1 is to the
    # compiler, is checked for wraparound unit by unit, and the loop no longer vectorizes)
    t_left = temp_all[a + j0 - 1:a + j1 - 1]
    t_right = temp_all[a + j0 + 1:a + j1 + 1]
    for jj in range(j1 - j0):
        j = j0 + jj
        f = fl[j]
        left = (f & FLAG_NEIGHBOUR_LEFT) != 0
        right = (f & FLAG_NEIGHBOUR_RIGHT) != 0
        tl = t_left[jj]
        tr = t_right[jj]
        sc[S_TNB + j] = (tl if left else 0.0) + (tr if right else 0.0)
        si[I_NNB + j] = (1 if left else 0) + (1 if right else 0)
    for j in (0, m - 1):
        if (j == 0 and j0 == 1) or (j == m - 1 and j1 == m - 1):
            f = fl[j]
            t = 0.0
            c = 0
            if f & FLAG_NEIGHBOUR_LEFT:
                t += temp_all[a + j - 1]
                c += 1
            if f & FLAG_NEIGHBOUR_RIGHT:
                t += temp_all[a + j + 1]
                c += 1
            sc[S_TNB + j] = t
            si[I_NNB + j] = c
    if hot:                       # rare: self-heating above onset, or a unit in runaway
        e_rw = kp[k, K_RW_ENERGY_J]
        decay = math.exp(-dt / kp[k, K_RW_TAU_S])
        for j in range(m):
            sc[S_QRW + j] = 0.0
            if si[I_LATCHED + j] & ALARM_THERMAL_RUNAWAY:
                rel0 = np.float64(upar[RW_RELEASED_J, a + j])
                rel1 = e_rw - (e_rw - rel0) * decay
                upar[RW_RELEASED_J, a + j] = rel1
                sc[S_QRW + j] = (rel1 - rel0) * inv_dt
            elif temp[j] > onset:
                sc[S_QRW + j] = self_heating_w(kp, k, temp[j])
    # the heat held over the step: Q + G_amb T_amb + G_nb sum T_j (S_TNB is free afterwards)
    amb_off = upar[AMBIENT_OFFSET_C, a:e]
    g_amb = kp[k, K_G_AMB]
    g_nb = kp[k, K_G_NB]
    # Also the HVAC regime of every unit, as one bit per regime (see thermal.hvac_regime).
    gain = kp[k, K_HVAC_GAIN]
    t_cool = kp[k, K_HVAC_T_COOL]
    t_heat = kp[k, K_HVAC_T_HEAT]
    q_cool = kp[k, K_HVAC_COOL_W]
    q_heat = kp[k, K_HVAC_HEAT_W]
    regimes = 0
    for j in range(m):
        q = sc[S_QRW + j] if hot else 0.0
        t_amb_j = t_amb + amb_off[j]
        sc[S_TNB + j] = sc[S_HEAT + j] + q + g_amb * t_amb_j + g_nb * sc[S_TNB + j]
        regimes |= hvac_regime(temp[j], (fl[j] & FLAG_HVAC_FAILED) == 0, gain, t_cool, t_heat,
                               q_cool, q_heat)
    # HVAC and the exact update
    _hvac_step(kp, k, regimes, temp, fl, sc, si, m)
    dst_t = dyn[dst, TEMP_C, a:e]
    src_x = dyn[src, E_AUX, a:e]
    dst_x = dyn[dst, E_AUX, a:e]
    for j in range(m):
        dst_t[j] = sc[S_TEMP1 + j]
        dst_x[j] = src_x[j] + sc[S_PHVAC + j] * dt * h_per_s
    o = out[dst, P_HVAC_W, a:e]
    for j in range(m):
        o[j] = sc[S_PHVAC + j]

    # ============ 4: protection and unit state
    v_hi = kp[k, K_V_TRIP_HI]
    v_lo = kp[k, K_V_TRIP_LO]
    t_lo = kp[k, K_T_TRIP_LO]
    i_trip = kp[k, K_I_TRIP]
    t_crit = kp[k, K_RW_CRIT_C]
    tripped = 0
    for j in range(m):
        vt = sc[S_VTERM + j]
        t1 = sc[S_TEMP1 + j]
        new = 0
        if vt > v_hi:
            new |= ALARM_OVER_VOLTAGE
        if vt < v_lo:
            new |= ALARM_UNDER_VOLTAGE
        if t1 > t_hi:
            new |= ALARM_OVER_TEMPERATURE
        if t1 < t_lo:
            new |= ALARM_UNDER_TEMPERATURE
        if abs(sc[S_CUR + j]) > i_trip:
            new |= ALARM_OVER_CURRENT
        if t1 >= t_crit:
            new |= ALARM_THERMAL_RUNAWAY
        si[I_ALARMS + j] = new
        tripped |= new & ~si[I_LATCHED + j]
    if any_flags & (FLAG_SENSOR_FAULT | FLAG_TRIGGER_RUNAWAY):
        # rare: the BMS acts on faulted sensors; triggered runaways
        t_meas_at = t_s + dt
        tripped = 0
        for j in range(m):
            f = fl[j]
            if f & FLAG_TRIGGER_RUNAWAY:
                si[I_ALARMS + j] |= ALARM_THERMAL_RUNAWAY
            if f & FLAG_SENSOR_FAULT:
                i = a + j
                vm = apply_fault(sfault[i, CH_VOLTAGE], sc[S_VTERM + j], t_meas_at)
                tm = apply_fault(sfault[i, CH_TEMPERATURE], sc[S_TEMP1 + j], t_meas_at)
                im = apply_fault(sfault[i, CH_CURRENT], sc[S_CUR + j], t_meas_at)
                new = si[I_ALARMS + j] & ALARM_THERMAL_RUNAWAY
                if vm > v_hi:
                    new |= ALARM_OVER_VOLTAGE
                if vm < v_lo:
                    new |= ALARM_UNDER_VOLTAGE
                if tm > t_hi:
                    new |= ALARM_OVER_TEMPERATURE
                if tm < t_lo:
                    new |= ALARM_UNDER_TEMPERATURE
                if abs(im) > i_trip:
                    new |= ALARM_OVER_CURRENT
                si[I_ALARMS + j] = new
            tripped |= si[I_ALARMS + j] & ~si[I_LATCHED + j]
    if tripped:                   # rare: count the new trips
        for j in range(m):
            if (si[I_ALARMS + j] & ~si[I_LATCHED + j]) != 0:
                upar[TRIPS, a + j] += 1.0
    # latch (a latched runaway stays: it is in the latch already), warnings, unit state
    n_alarm = 0
    for j in range(m):
        f = fl[j]
        soc1 = sc[S_SOC1 + j]
        t1 = sc[S_TEMP1 + j]
        lat = si[I_LATCHED + j] | si[I_ALARMS + j]
        dr = der[j]
        req = sc[S_PREQ + j]
        warn = ((ALARM_SOC_HIGH if soc1 >= soc_max - 1e-9 else 0)
                | (ALARM_SOC_LOW if soc1 <= soc_min + 1e-9 else 0)
                | (ALARM_TEMPERATURE_DERATE if (t1 > t_der) | (dr < 1.0) else 0)
                | (ALARM_SELF_HEATING if t1 > onset else 0)
                | (ALARM_HVAC_FAULT if (f & FLAG_HVAC_FAILED) != 0 else 0)
                | (ALARM_SENSOR_FAULT if (f & FLAG_SENSOR_FAULT) != 0 else 0)
                | (ALARM_COMM_FAULT if (f & FLAG_COMM_FAULT) != 0 else 0)
                | (ALARM_PCS_FAULT if (f & FLAG_PCS_TRIP) != 0 else 0))
        p = sc[S_PAC + j]
        st = DISCHARGING if p > 0.0 else (CHARGING if p < 0.0 else
                                            (IDLE if req != 0.0 else STANDBY))
        st = st if (f & FLAG_ENABLED) != 0 else OFFLINE
        st = st if (f & RUN_MASK) != RUN_MASK else FAULT       # enabled, converter tripped
        st = st if lat == 0 else FAULT
        st = THERMAL_RUNAWAY if (lat & ALARM_THERMAL_RUNAWAY) != 0 else st
        si[I_STATE + j] = st
        si[I_LATCHED + j] = lat
        # the unit's SoC and temperature band for the tallies (int32 conversions vectorize)
        si[I_SOC_BAND + j] = N_STATES + min(np.int32(soc1 * SOC_BANDS), SOC_BANDS - 1)
        tb = min(np.int32(t1 * 0.1) + 1, TEMP_BANDS - 1) if t1 >= 0.0 else 0   # < 0 C: band 0
        si[I_TEMP_BAND + j] = N_STATES + SOC_BANDS + tb
        si[I_ALARMS + j] = lat | warn
        n_alarm += 1 if (lat | warn) != 0 else 0
    so = status[dst, a:e]
    ao = alarms[dst, a:e]
    for j in range(m):
        so[j] = si[I_STATE + j]
        ao[j] = si[I_ALARMS + j]

    # ============ aging, sampled every aging interval (sample and hold)
    if aging_dt > 0.0:
        model = int(kp[k, K_AGING_MODEL])
        for j in range(m):
            i = a + j
            efc = dst_f[j]
            t1 = sc[S_TEMP1 + j]
            aging_accumulate(model, acc, i, aging_dt, sc[S_SOC1 + j], t1, efc)
            if t1 > upar[T_MAX_C, i]:
                upar[T_MAX_C, i] = t1
            if aging_update_due(model, acc, i, efc):
                aging_update(model, acc, ast, i, efc, np.float64(upar[AGING_FACTOR, i]))
                q = aging_relative_capacity(model, ast, i)
                r = aging_relative_resistance(model, ast, i) * upar[R_STEP, i]
                upar[SOH, i] = q
                upar[CAP_AH, i] = upar[CAP_NOM_AH, i] * q * upar[CAP_FACTOR, i]
                upar[R0_OHM, i] = upar[R0_NOM_OHM, i] * r
                upar[R1_OHM, i] = upar[R1_NOM_OHM, i] * r
                upar[R2_OHM, i] = upar[R2_NOM_OHM, i] * r

    # ============ the next step's dispatch sums and this run's share of the aggregates
    # (rows of phase 1 are free again and hold the masked per-unit terms)
    S_HD, S_HC, S_PMAN, S_EAV = S_OCV0, S_SLOPE, S_INVCAP, S_F0
    f_lo = kp[k, K_F_SOC_MIN]
    for j in range(m):
        soc1 = sc[S_SOC1 + j]
        hd, hc = _headroom(soc1, sc[S_TEMP1 + j], sc[S_OCV1 + j], np.float64(r0[j]),
                           np.float64(der[j]), p_rated, t_der, t_hi, inv_span, t_min_chg,
                           np.float64(rlo[j]), np.float64(rhi[j]), inv_taper, i_d, i_c)
        f = fl[j]
        req = sc[S_PREQ + j]
        on = ((f & RUN_MASK) == FLAG_ENABLED) & (si[I_LATCHED + j] == 0)
        auto = on & ((f & FLAG_MANUAL) == 0)
        sc[S_HD + j] = hd if auto else 0.0
        sc[S_HC + j] = hc if auto else 0.0
        sc[S_PMAN + j] = req if on & ((f & FLAG_MANUAL) != 0) else 0.0
        sc[S_EAV + j] = np.float64(cap[j]) * max(0.0, sc[S_F1 + j] - f_lo)
    hdis = sc[S_HD:S_HD + m]
    hchg = sc[S_HC:S_HC + m]
    soc1 = sc[S_SOC1:S_SOC1 + m]
    temp1 = sc[S_TEMP1:S_TEMP1 + m]
    f1 = sc[S_F1:S_F1 + m]
    h_c = _sum(hchg)
    pa[AG_H_DIS] += _sum(hdis)
    pa[AG_H_CHG] += h_c
    pa[AG_W_DIS] += _dot(hdis, soc1)
    pa[AG_W_CHG] += h_c - _dot(hchg, soc1)
    pa[AG_P_MANUAL] += _sum(sc[S_PMAN:S_PMAN + m])
    pa[AG_P_AC] += _sum(sc[S_PAC:S_PAC + m])
    pa[AG_P_DC] += _sum(sc[S_PDC:S_PDC + m])
    pa[AG_P_REQUEST] += _sum(sc[S_PREQ:S_PREQ + m])
    pa[AG_P_HVAC] += _sum(sc[S_PHVAC:S_PHVAC + m])
    pa[AG_SOC_SUM] += _sum(soc1)
    lo_, hi_ = _min_max(soc1)
    pa[AG_SOC_MIN] = min(pa[AG_SOC_MIN], lo_)
    pa[AG_SOC_MAX] = max(pa[AG_SOC_MAX], hi_)
    pa[AG_TEMP_SUM] += _sum(temp1)
    lo_, hi_ = _min_max(temp1)
    pa[AG_TEMP_MIN] = min(pa[AG_TEMP_MIN], lo_)
    pa[AG_TEMP_MAX] = max(pa[AG_TEMP_MAX], hi_)
    pa[AG_E_STORED_WH] += ns * _dot(cap, f1)
    pa[AG_E_AVAILABLE_WH] += ns * _sum(sc[S_EAV:S_EAV + m])
    pa[AG_E_CAPACITY_WH] += ns * _sum(cap) * (kp[k, K_F_SOC_MAX] - kp[k, K_F_SOC_MIN])
    pa[AG_E_AC_CHARGED] += _sum(dst_c)
    pa[AG_E_AC_DISCHARGED] += _sum(dst_d)
    pa[AG_E_DC_CHARGED] += _sum(dst_dcc)
    pa[AG_E_DC_DISCHARGED] += _sum(dst_dcd)
    pa[AG_E_LOSS] += _sum(dst_l)
    pa[AG_E_AUX] += _sum(dst_x)
    pa[AG_EFC_SUM] += _sum(dst_f)
    pa[AG_SOH_SUM] += _sum(upar[SOH, a:e])
    pa[AG_N_ALARM] += n_alarm
    # Counts per state, SoC band and temperature band (see _count_bins).
    _count_bins(si[I_STATE:I_STATE + m], pa, AG_STATE)
    _count_bins(si[I_SOC_BAND:I_SOC_BAND + m], pa, AG_STATE)
    _count_bins(si[I_TEMP_BAND:I_TEMP_BAND + m], pa, AG_STATE)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_run_scalar(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status,
                     alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast, pa):
    """:func:`_step_run` for a few units: the same equations, one unit at a time.

    The short-loop form carries a fixed cost of about a microsecond per run (some thirty loops),
    which dominates a farm of one or a few units (ten years of one unit are five million steps).
    Every per-unit expression here is written as in :func:`_step_run`, so both give bitwise the
    same unit state; tests/test_engine_properties.py holds them to it.
    """
    tab = ocv[int(kp[k, K_OCV_TABLE])]
    tab_int = ocv_int[int(kp[k, K_OCV_TABLE])]
    ns = kp[k, K_N_SERIES]
    eta = kp[k, K_ETA_COULOMB]
    p_rated = kp[k, K_P_RATED]
    inv_p_rated = kp[k, K_INV_P_RATED]
    l0 = kp[k, K_PCS_L0]
    l1 = kp[k, K_PCS_L1]
    l2 = kp[k, K_PCS_L2]
    i_d = kp[k, K_I_MAX_DIS]
    i_c = kp[k, K_I_MAX_CHG]
    v_min = kp[k, K_V_MIN]
    v_max = kp[k, K_V_MAX]
    soc_min = kp[k, K_SOC_MIN]
    soc_max = kp[k, K_SOC_MAX]
    inv_taper = kp[k, K_INV_TAPER]
    t_der = kp[k, K_T_DERATE]
    t_hi = kp[k, K_T_TRIP_HI]
    inv_span = kp[k, K_INV_DERATE_SPAN]
    t_min_chg = kp[k, K_T_MIN_CHARGE]
    om1 = kp[k, K_OM1]
    av1 = kp[k, K_AV1]
    om2 = kp[k, K_OM2]
    av2 = kp[k, K_AV2]
    d_sign = disp[D_SIGN]
    d_alpha = disp[D_ALPHA]
    d_beta = disp[D_BETA]
    inv_dt = 1.0 / dt
    h_per_s = 1.0 / 3600.0
    soc_per_as = dt / 3600.0
    as_per_soc = 3600.0 / dt
    inv_eta = 1.0 / eta
    onset = kp[k, K_RW_ONSET_C]
    g_amb = kp[k, K_G_AMB]
    g_nb = kp[k, K_G_NB]
    v_hi = kp[k, K_V_TRIP_HI]
    v_lo = kp[k, K_V_TRIP_LO]
    t_lo = kp[k, K_T_TRIP_LO]
    i_trip = kp[k, K_I_TRIP]
    t_crit = kp[k, K_RW_CRIT_C]
    f_lo = kp[k, K_F_SOC_MIN]
    f_hi = kp[k, K_F_SOC_MAX]
    model = int(kp[k, K_AGING_MODEL])
    s_hd = s_hc = s_wd = s_wc = s_man = s_pac = s_pdc = s_preq = s_phvac = s_soc = 0.0
    s_temp = s_est = s_eav = s_ecap = s_acc = s_acd = s_dcc = s_dcd = s_loss = s_aux = 0.0
    s_efc = s_soh = s_alarm = 0.0
    soc_lo = t_lo_ = np.inf
    soc_hi = t_hi_ = -np.inf
    for i in range(a, e):
        f = flags[i]
        soc = dyn[src, SOC, i]
        v1 = dyn[src, V_RC1, i]
        v2 = dyn[src, V_RC2, i]
        temp = dyn[src, TEMP_C, i]
        cap = upar[CAP_AH, i]
        r0 = upar[R0_OHM, i]
        r1 = upar[R1_OHM, i]
        r2 = upar[R2_OHM, i]
        der = upar[DERATE, i]
        sp = np.float64(upar[SETPOINT_W, i])
        rlo = np.float64(upar[SOC_RSV_MIN, i])
        rhi = np.float64(upar[SOC_RSV_MAX, i])
        # 1: latch and reset, dispatch, PCS, current and its limits
        inv_cap = 1.0 / np.float64(cap)
        lat = alarms[src, i] & TRIP_MASK
        if f & FLAG_RESET:
            lat &= ALARM_THERMAL_RUNAWAY
        latched = lat
        ocv0 = ns * ocv_interp(tab, soc)
        slope = ns * ocv_slope(tab, soc)
        hdis, hchg = _headroom(soc, temp, ocv0, np.float64(r0), np.float64(der), p_rated, t_der,
                               t_hi, inv_span, t_min_chg, rlo, rhi, inv_taper, i_d, i_c)
        if d_sign > 0.0:
            w = hdis * soc
            auto = d_alpha * w + d_beta * (hdis - w)
        elif d_sign < 0.0:
            w = hchg * (1.0 - soc)
            auto = -(d_alpha * w + d_beta * (hchg - w))
        else:
            auto = 0.0
        manual = min(sp, hdis) if sp >= 0.0 else max(sp, -hchg)
        by_current = sp * (ocv0 - v1 - v2 - sp * np.float64(r0))
        req = auto
        if f & FLAG_MANUAL:
            req = by_current if f & FLAG_CURRENT_MODE else manual
        if (f & RUN_MASK) != FLAG_ENABLED or latched != 0:
            req = 0.0
        preq = req
        ls = pcs_loss_w(req, p_rated, inv_p_rated, l0, l1, l2)
        p_dc = req + ls
        if req < 0.0 and p_dc > 0.0:
            p_dc = 0.0
        d_ocv = slope * 0.5 * soc_per_as * inv_cap
        if p_dc < 0.0:
            d_ocv *= eta
        e_avg = ocv0 - v1 * av1 - v2 * av2
        r_avg = r0 + r1 * (1.0 - av1) + r2 * (1.0 - av2) + d_ocv
        c = current_for_power(p_dc, e_avg, r_avg)
        loss = ls
        cm = (f & FLAG_MANUAL) != 0 and (f & FLAG_CURRENT_MODE) != 0
        if cm:
            c = sp
            loss = 0.0
        if (f & RUN_MASK) != FLAG_ENABLED or latched != 0:
            c = 0.0
        e_src = ocv0 - v1 - v2
        inv_r0 = 1.0 / r0
        a_s = np.float64(cap) * as_per_soc
        i_hi = max(0.0, min(i_d, (e_src - v_min) * inv_r0, (soc - rlo) * a_s))
        i_lo = min(0.0, max(-i_c, (e_src - v_max) * inv_r0, -(rhi - soc) * a_s * inv_eta))
        c2 = min(max(c, i_lo), i_hi)
        clamped = cm or c2 != c
        cur = c2
        # 2: equivalent circuit, SoC, OCV, energy accounts
        dq = cur * soc_per_as * inv_cap
        if cur < 0.0:
            dq *= eta
        soc1 = min(1.0, max(0.0, soc - dq))
        ocv1 = ns * ocv_interp(tab, soc1)
        f1 = ocv_integral(tab, tab_int, soc1)
        f0 = ocv_integral(tab, tab_int, soc)
        ds = soc1 - soc
        ocv_avg = ns * (f1 - f0) / ds if ds != 0.0 else ocv0
        v1n, vrca = rc_update(v1, cur, r1, om1, av1)
        v2n, v2a = rc_update(v2, cur, r2, om2, av2)
        vrca += v2a
        e_ohm = cur * dt * (cur * r0 + vrca)
        e_coul = -(1.0 - eta) * cur * dt * ocv_avg if cur < 0.0 else 0.0
        edc = cur * dt * ocv_avg - e_ohm
        heat = (e_ohm + e_coul) * inv_dt
        eloss = e_ohm + e_coul
        pdc = edc * inv_dt
        if clamped:
            loss = pcs_loss_w(pdc, p_rated, inv_p_rated, l0, l1, l2)
        if cur == 0.0:
            loss = 0.0
        pac = pdc - loss if cur != 0.0 else 0.0
        vterm = ocv1 - v1n - v2n - cur * r0
        dyn[dst, V_RC1, i] = v1n
        dyn[dst, V_RC2, i] = v2n
        dyn[dst, E_AC_CHARGED, i] = dyn[src, E_AC_CHARGED, i] + max(0.0, -pac) * dt * h_per_s
        dyn[dst, E_AC_DISCHARGED, i] = dyn[src, E_AC_DISCHARGED, i] + max(0.0, pac) * dt * h_per_s
        dyn[dst, E_DC_CHARGED, i] = dyn[src, E_DC_CHARGED, i] + max(0.0, -edc) * h_per_s
        dyn[dst, E_DC_DISCHARGED, i] = dyn[src, E_DC_DISCHARGED, i] + max(0.0, edc) * h_per_s
        dyn[dst, E_LOSS, i] = dyn[src, E_LOSS, i] + (loss * dt + eloss) * h_per_s
        efc = dyn[src, EFC, i] + 0.5 * abs(soc1 - soc)
        dyn[dst, EFC, i] = efc
        dyn[dst, SOC, i] = soc1
        out[dst, CURRENT_A, i] = cur
        out[dst, VOLTAGE_V, i] = vterm
        out[dst, P_AC_W, i] = pac
        out[dst, P_DC_W, i] = pdc
        out[dst, P_REQUEST_W, i] = preq
        # 3: thermal
        tnb = 0.0
        nnb = 0
        if f & FLAG_NEIGHBOUR_LEFT:
            tnb += dyn[src, TEMP_C, i - 1]
            nnb += 1
        if f & FLAG_NEIGHBOUR_RIGHT:
            tnb += dyn[src, TEMP_C, i + 1]
            nnb += 1
        qrw = 0.0
        if latched & ALARM_THERMAL_RUNAWAY:
            e_rw = kp[k, K_RW_ENERGY_J]
            rel0 = np.float64(upar[RW_RELEASED_J, i])
            rel1 = e_rw - (e_rw - rel0) * math.exp(-dt / kp[k, K_RW_TAU_S])
            upar[RW_RELEASED_J, i] = rel1
            qrw = (rel1 - rel0) * inv_dt
        elif temp > onset:
            qrw = self_heating_w(kp, k, temp)
        tamb = t_amb + upar[AMBIENT_OFFSET_C, i]
        tbase = heat + qrw + g_amb * tamb + g_nb * tnb
        temp1, phvac = thermal_update(kp, k, temp, tbase, nnb, (f & FLAG_HVAC_FAILED) == 0)
        dyn[dst, TEMP_C, i] = temp1
        e_aux = dyn[src, E_AUX, i] + phvac * dt * h_per_s
        dyn[dst, E_AUX, i] = e_aux
        out[dst, P_HVAC_W, i] = phvac
        # 4: protection and unit state
        new = 0
        vm = vterm
        tm = temp1
        im = cur
        if f & FLAG_SENSOR_FAULT:
            vm = apply_fault(sfault[i, CH_VOLTAGE], vterm, t_s + dt)
            tm = apply_fault(sfault[i, CH_TEMPERATURE], temp1, t_s + dt)
            im = apply_fault(sfault[i, CH_CURRENT], cur, t_s + dt)
        if vm > v_hi:
            new |= ALARM_OVER_VOLTAGE
        if vm < v_lo:
            new |= ALARM_UNDER_VOLTAGE
        if tm > t_hi:
            new |= ALARM_OVER_TEMPERATURE
        if tm < t_lo:
            new |= ALARM_UNDER_TEMPERATURE
        if abs(im) > i_trip:
            new |= ALARM_OVER_CURRENT
        if temp1 >= t_crit or (f & FLAG_TRIGGER_RUNAWAY) or (latched & ALARM_THERMAL_RUNAWAY):
            new |= ALARM_THERMAL_RUNAWAY
        if (new & ~latched) != 0:
            upar[TRIPS, i] += 1.0
        lat = latched | new
        warn = ((ALARM_SOC_HIGH if soc1 >= soc_max - 1e-9 else 0)
                | (ALARM_SOC_LOW if soc1 <= soc_min + 1e-9 else 0)
                | (ALARM_TEMPERATURE_DERATE if (temp1 > t_der or der < 1.0) else 0)
                | (ALARM_SELF_HEATING if temp1 > onset else 0)
                | (ALARM_HVAC_FAULT if (f & FLAG_HVAC_FAILED) != 0 else 0)
                | (ALARM_SENSOR_FAULT if (f & FLAG_SENSOR_FAULT) != 0 else 0)
                | (ALARM_COMM_FAULT if (f & FLAG_COMM_FAULT) != 0 else 0)
                | (ALARM_PCS_FAULT if (f & FLAG_PCS_TRIP) != 0 else 0))
        st = DISCHARGING if pac > 0.0 else (CHARGING if pac < 0.0 else
                                              (IDLE if preq != 0.0 else STANDBY))
        st = st if (f & FLAG_ENABLED) != 0 else OFFLINE
        st = st if (f & RUN_MASK) != RUN_MASK else FAULT       # enabled, converter tripped
        st = st if lat == 0 else FAULT
        st = THERMAL_RUNAWAY if (lat & ALARM_THERMAL_RUNAWAY) != 0 else st
        status[dst, i] = st
        alarms[dst, i] = lat | warn
        # aging sample
        if aging_dt > 0.0:
            aging_accumulate(model, acc, i, aging_dt, soc1, temp1, efc)
            if temp1 > upar[T_MAX_C, i]:
                upar[T_MAX_C, i] = temp1
            if aging_update_due(model, acc, i, efc):
                aging_update(model, acc, ast, i, efc, np.float64(upar[AGING_FACTOR, i]))
                q = aging_relative_capacity(model, ast, i)
                r = aging_relative_resistance(model, ast, i) * upar[R_STEP, i]
                upar[SOH, i] = q
                upar[CAP_AH, i] = upar[CAP_NOM_AH, i] * q * upar[CAP_FACTOR, i]
                upar[R0_OHM, i] = upar[R0_NOM_OHM, i] * r
                upar[R1_OHM, i] = upar[R1_NOM_OHM, i] * r
                upar[R2_OHM, i] = upar[R2_NOM_OHM, i] * r
        # the next step's dispatch sums and the aggregates
        hd, hc = _headroom(soc1, temp1, ocv1, np.float64(upar[R0_OHM, i]), np.float64(der),
                           p_rated, t_der, t_hi, inv_span, t_min_chg, rlo, rhi,
                           inv_taper, i_d, i_c)
        on = (f & RUN_MASK) == FLAG_ENABLED and lat == 0
        if on and (f & FLAG_MANUAL) == 0:
            s_hd += hd
            s_hc += hc
            s_wd += hd * soc1
            s_wc += hc - hc * soc1
        if on and (f & FLAG_MANUAL) != 0:
            s_man += preq
        s_pac += pac
        s_pdc += pdc
        s_preq += preq
        s_phvac += phvac
        s_soc += soc1
        soc_lo = min(soc_lo, soc1)
        soc_hi = max(soc_hi, soc1)
        s_temp += temp1
        t_lo_ = min(t_lo_, temp1)
        t_hi_ = max(t_hi_, temp1)
        s_est += ns * (np.float64(cap) * f1)
        s_eav += ns * (np.float64(cap) * max(0.0, f1 - f_lo))
        s_ecap += ns * np.float64(cap) * (f_hi - f_lo)
        s_acc += dyn[dst, E_AC_CHARGED, i]
        s_acd += dyn[dst, E_AC_DISCHARGED, i]
        s_dcc += dyn[dst, E_DC_CHARGED, i]
        s_dcd += dyn[dst, E_DC_DISCHARGED, i]
        s_loss += dyn[dst, E_LOSS, i]
        s_aux += e_aux
        s_efc += efc
        s_soh += upar[SOH, i]
        if (lat | warn) != 0:
            s_alarm += 1.0
        pa[AG_STATE + st] += 1.0
        pa[AG_SOC_BAND + min(int(soc1 * SOC_BANDS), SOC_BANDS - 1)] += 1.0
        tb = 0
        if temp1 >= 0.0:
            tb = min(int(temp1 * 0.1) + 1, TEMP_BANDS - 1)
        pa[AG_TEMP_BAND + tb] += 1.0
    pa[AG_H_DIS] += s_hd
    pa[AG_H_CHG] += s_hc
    pa[AG_W_DIS] += s_wd
    pa[AG_W_CHG] += s_wc
    pa[AG_P_MANUAL] += s_man
    pa[AG_P_AC] += s_pac
    pa[AG_P_DC] += s_pdc
    pa[AG_P_REQUEST] += s_preq
    pa[AG_P_HVAC] += s_phvac
    pa[AG_SOC_SUM] += s_soc
    pa[AG_SOC_MIN] = min(pa[AG_SOC_MIN], soc_lo)
    pa[AG_SOC_MAX] = max(pa[AG_SOC_MAX], soc_hi)
    pa[AG_TEMP_SUM] += s_temp
    pa[AG_TEMP_MIN] = min(pa[AG_TEMP_MIN], t_lo_)
    pa[AG_TEMP_MAX] = max(pa[AG_TEMP_MAX], t_hi_)
    pa[AG_E_STORED_WH] += s_est
    pa[AG_E_AVAILABLE_WH] += s_eav
    pa[AG_E_CAPACITY_WH] += s_ecap
    pa[AG_E_AC_CHARGED] += s_acc
    pa[AG_E_AC_DISCHARGED] += s_acd
    pa[AG_E_DC_CHARGED] += s_dcc
    pa[AG_E_DC_DISCHARGED] += s_dcd
    pa[AG_E_LOSS] += s_loss
    pa[AG_E_AUX] += s_aux
    pa[AG_EFC_SUM] += s_efc
    pa[AG_SOH_SUM] += s_soh
    pa[AG_N_ALARM] += s_alarm


@njit(cache=True, nogil=True, error_model="numpy")
def _reduce(partial, agg):
    """Sum the block partials in block order (max/min where the field is an extreme)."""
    if partial.shape[0] == 1:
        agg[:] = partial[0]
        return
    agg[:] = 0.0
    agg[AG_TEMP_MAX] = -np.inf
    agg[AG_TEMP_MIN] = np.inf
    agg[AG_SOC_MIN] = np.inf
    agg[AG_SOC_MAX] = -np.inf
    for b in range(partial.shape[0]):
        for f in range(partial.shape[1]):
            v = partial[b, f]
            if f == AG_TEMP_MAX or f == AG_SOC_MAX:
                agg[f] = max(agg[f], v)
            elif f == AG_TEMP_MIN or f == AG_SOC_MIN:
                agg[f] = min(agg[f], v)
            else:
                agg[f] += v


@njit(cache=True, nogil=True, error_model="numpy")
def _aging_due(clock, dt, interval):
    """Advance the aging clock; return the sample duration [s] when a sample is due, else 0."""
    clock[0] += dt
    if clock[0] >= interval - 1e-9:
        d = clock[0]
        clock[0] = 0.0
        return d
    return 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def _finish_step(farm_w, partial, agg, disp):
    """Reduce the block partials, then split the next step's farm setpoint ``farm_w``."""
    _reduce(partial, agg)
    dispatch_coefficients(farm_w, agg, disp)


# The two runners differ only in prange/range. They are written out twice on purpose: numba's
# cache keys a function by its qualified name, so one factory-made closure would share one cache
# entry between the parallel and the serial variant.
@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def run_steps_parallel(n_steps, src, dt, t0, fp_kind, fp_p, fp_t, fp_v, amb_kind, amb_p, amb_t, amb_v,
                       aging_interval, aging_clock, disp, dyn, out, status, alarms, upar, flags,
                       kind, kp, ocv, ocv_int, sfault, acc, ast, partial, agg, scratch, iscratch):
    """Advance ``n_steps`` steps with the blocks spread over threads; returns the new buffer."""
    n = flags.shape[0]
    for s in range(n_steps):
        t_s = t0 + s * dt
        t_amb = ambient_c(t_s, amb_kind, amb_p, amb_t, amb_v)
        aging_dt = _aging_due(aging_clock, dt, aging_interval)
        dst = 1 - src
        for b in prange(partial.shape[0]):
            tid = numba.get_thread_id()     # valid inside the parallel region only
            _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
                        upar, flags, kind, kp, ocv, ocv_int, sfault, acc, ast, partial,
                        scratch[tid], iscratch[tid])
        _finish_step(profile_value(t_s + dt, fp_kind, fp_p, fp_t, fp_v), partial, agg, disp)
        src = dst
    return src


@njit(cache=True, nogil=True, error_model="numpy")
def run_steps_serial(n_steps, src, dt, t0, fp_kind, fp_p, fp_t, fp_v, amb_kind, amb_p, amb_t, amb_v,
                     aging_interval, aging_clock, disp, dyn, out, status, alarms, upar, flags,
                     kind, kp, ocv, ocv_int, sfault, acc, ast, partial, agg, scratch, iscratch):
    """Advance ``n_steps`` steps on the calling thread; returns the new buffer."""
    n = flags.shape[0]
    for s in range(n_steps):
        t_s = t0 + s * dt
        t_amb = ambient_c(t_s, amb_kind, amb_p, amb_t, amb_v)
        aging_dt = _aging_due(aging_clock, dt, aging_interval)
        dst = 1 - src
        for b in range(partial.shape[0]):
            _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
                        upar, flags, kind, kp, ocv, ocv_int, sfault, acc, ast, partial,
                        scratch[0], iscratch[0])
        _finish_step(profile_value(t_s + dt, fp_kind, fp_p, fp_t, fp_v), partial, agg, disp)
        src = dst
    return src


@njit(cache=True, nogil=True, error_model="numpy")
def dispatch_sums(src, dyn, alarms, upar, flags, kind, kp, ocv, agg):
    """Recompute the dispatch sums of ``agg`` from the published state (after a command)."""
    agg[AG_H_DIS] = 0.0
    agg[AG_H_CHG] = 0.0
    agg[AG_W_DIS] = 0.0
    agg[AG_W_CHG] = 0.0
    for i in range(flags.shape[0]):
        fl = flags[i]
        latched = alarms[src, i] & TRIP_MASK
        if fl & FLAG_RESET:
            latched &= ALARM_THERMAL_RUNAWAY
        if (fl & RUN_MASK) != FLAG_ENABLED or latched != 0 or (fl & FLAG_MANUAL):
            continue
        k = kind[i]
        soc = dyn[src, SOC, i]
        ocv0 = kp[k, K_N_SERIES] * ocv_interp(ocv[int(kp[k, K_OCV_TABLE])], soc)
        h_d, h_c = _headroom(soc, dyn[src, TEMP_C, i], ocv0, np.float64(upar[R0_OHM, i]),
                             np.float64(upar[DERATE, i]), kp[k, K_P_RATED], kp[k, K_T_DERATE],
                             kp[k, K_T_TRIP_HI], kp[k, K_INV_DERATE_SPAN], kp[k, K_T_MIN_CHARGE],
                             np.float64(upar[SOC_RSV_MIN, i]), np.float64(upar[SOC_RSV_MAX, i]),
                             kp[k, K_INV_TAPER],
                             kp[k, K_I_MAX_DIS], kp[k, K_I_MAX_CHG])
        agg[AG_H_DIS] += h_d
        agg[AG_H_CHG] += h_c
        agg[AG_W_DIS] += h_d * soc
        agg[AG_W_CHG] += h_c - h_c * soc


@njit(cache=True, nogil=True, error_model="numpy")
def stored_energy_wh(src, dyn, upar, kind, kp, ocv, ocv_int, out):
    """Chemical energy stored per unit [Wh]: ``cap_ah * n_series * F(soc)``."""
    for i in range(kind.shape[0]):
        k = kind[i]
        t = int(kp[k, K_OCV_TABLE])
        f = ocv_integral(ocv[t], ocv_int[t], dyn[src, SOC, i])
        out[i] = np.float64(upar[CAP_AH, i]) * kp[k, K_N_SERIES] * f
