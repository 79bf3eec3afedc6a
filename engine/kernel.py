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
from .thermal import self_heating_w, thermal_update

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


# Scratch rows of one block (float64 and int64), reused by every block a thread processes.
S_OCV0, S_HDIS, S_HCHG, S_PREQ, S_LOSS, S_CUR, S_SLOPE, S_SOC1, S_OCV1, S_F0, S_F1 = range(11)
S_OCVAVG, S_VRCA, S_EDC, S_ELOSS, S_HEAT, S_VTERM, S_PAC, S_PDC, S_TEMP1, S_PHVAC = range(11, 21)
S_QRW, S_TNB, S_TAMB, S_INVCAP, S_BASE = range(21, 26)
N_SCRATCH = 26
I_LATCHED, I_CLAMPED, I_NNB, I_STATE, I_ALARMS = range(5)
N_ISCRATCH = 5

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
    a = lo
    while a < hi:
        k = kind[a]
        e = a + 1
        while e < hi and kind[e] == k:
            e += 1
        if e - a < SCALAR_RUN_MAX:
            _step_run_scalar(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out,
                             status, alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast, pa)
        else:
            _step_run(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status,
                      alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast, sc, si, pa)
        a = e


@njit(cache=True, nogil=True, error_model="numpy")
def _step_run(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
              upar, flags, kp, ocv, ocv_int, sfault, acc, ast, sc, si, pa):
    """Step units [a, e), all of kind ``k``, and add their share to the block partials ``pa``.

    Written as a sequence of short loops over the run, each doing one piece of the physics for
    every unit (array in, array out, with the kind's parameters as scalars), rather than one long
    loop that does everything for one unit: short, mostly branch-free loops are vectorized by the
    compiler and keep the processor's pipelines full, where one long loop is bound by each unit's
    chain of dependent divisions, square roots and table lookups. Intermediate values live in
    per-thread scratch rows that stay in L1/L2 cache.
    """
    m = e - a
    # --- views of this run's state, parameters and scratch
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
    ocv0 = sc[S_OCV0, :m]
    hdis = sc[S_HDIS, :m]
    hchg = sc[S_HCHG, :m]
    preq = sc[S_PREQ, :m]
    loss = sc[S_LOSS, :m]
    cur = sc[S_CUR, :m]
    slope = sc[S_SLOPE, :m]
    soc1 = sc[S_SOC1, :m]
    ocv1 = sc[S_OCV1, :m]
    f0 = sc[S_F0, :m]
    f1 = sc[S_F1, :m]
    ocv_avg = sc[S_OCVAVG, :m]
    vrca = sc[S_VRCA, :m]
    edc = sc[S_EDC, :m]
    eloss = sc[S_ELOSS, :m]
    heat = sc[S_HEAT, :m]
    vterm = sc[S_VTERM, :m]
    pac = sc[S_PAC, :m]
    pdc = sc[S_PDC, :m]
    temp1 = sc[S_TEMP1, :m]
    phvac = sc[S_PHVAC, :m]
    qrw = sc[S_QRW, :m]
    tnb = sc[S_TNB, :m]
    tamb = sc[S_TAMB, :m]
    inv_cap = sc[S_INVCAP, :m]
    tbase = sc[S_BASE, :m]
    latched = si[I_LATCHED, :m]
    clamped = si[I_CLAMPED, :m]
    nnb = si[I_NNB, :m]
    state = si[I_STATE, :m]
    alarm = si[I_ALARMS, :m]
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
    d_sign = disp[D_SIGN]
    d_alpha = disp[D_ALPHA]
    d_beta = disp[D_BETA]
    inv_dt = 1.0 / dt
    h_per_s = 1.0 / 3600.0
    soc_per_as = dt / 3600.0           # SoC moved by 1 A over the step, times capacity [Ah]
    as_per_soc = 3600.0 / dt
    inv_eta = 1.0 / eta

    # ============ 1: protection latch and reset, dispatch, PCS, current and its limits
    for j in range(m):
        inv_cap[j] = 1.0 / np.float64(cap[j])
    for j in range(m):
        lat = al[j] & TRIP_MASK
        if fl[j] & FLAG_RESET:
            lat &= ALARM_THERMAL_RUNAWAY
        latched[j] = lat
    for j in range(m):
        ocv0[j] = ns * ocv_interp(tab, soc[j])
    for j in range(m):
        slope[j] = ns * ocv_slope(tab, soc[j])
    for j in range(m):
        hdis[j], hchg[j] = _headroom(soc[j], temp[j], ocv0[j], np.float64(r0[j]),
                                     np.float64(der[j]), p_rated, t_der, t_hi, inv_span,
                                     t_min_chg, np.float64(rlo[j]), np.float64(rhi[j]),
                                     inv_taper, i_d, i_c)
    for j in range(m):
        f = fl[j]
        s = np.float64(sp[j])
        if d_sign > 0.0:
            w = hdis[j] * soc[j]
            auto = d_alpha * w + d_beta * (hdis[j] - w)
        elif d_sign < 0.0:
            w = hchg[j] * (1.0 - soc[j])
            auto = -(d_alpha * w + d_beta * (hchg[j] - w))
        else:
            auto = 0.0
        manual = min(s, hdis[j]) if s >= 0.0 else max(s, -hchg[j])
        by_current = s * (ocv0[j] - v1[j] - v2[j] - s * np.float64(r0[j]))
        req = auto
        if f & FLAG_MANUAL:
            req = by_current if f & FLAG_CURRENT_MODE else manual
        if (f & FLAG_ENABLED) == 0 or latched[j] != 0:
            req = 0.0
        preq[j] = req
    for j in range(m):
        # Solve P = i * v_avg(i) with the terminal voltage averaged over the step, so a step
        # delivers the setpoint's energy for any dt: the RC voltages and the OCV move linearly
        # with i over the step (exact for the RC pairs, first order in the OCV slope).
        req = preq[j]
        ls = pcs_loss_w(req, p_rated, inv_p_rated, l0, l1, l2)
        p_dc = req + ls
        if req < 0.0 and p_dc > 0.0:
            p_dc = 0.0
        d_ocv = slope[j] * 0.5 * soc_per_as * inv_cap[j]
        if p_dc < 0.0:
            d_ocv *= eta
        e_avg = ocv0[j] - v1[j] * av1 - v2[j] * av2
        r_avg = r0[j] + r1[j] * (1.0 - av1) + r2[j] * (1.0 - av2) + d_ocv
        loss[j] = ls
        cur[j] = current_for_power(p_dc, e_avg, r_avg)
    for j in range(m):
        f = fl[j]
        c = cur[j]
        cm = (f & FLAG_MANUAL) != 0 and (f & FLAG_CURRENT_MODE) != 0
        if cm:
            c = np.float64(sp[j])
            loss[j] = 0.0
        if (f & FLAG_ENABLED) == 0 or latched[j] != 0:
            c = 0.0
        e_src = ocv0[j] - v1[j] - v2[j]
        inv_r0 = 1.0 / r0[j]
        a_s = np.float64(cap[j]) * as_per_soc           # ampere-steps per unit of SoC
        i_hi = max(0.0, min(i_d, (e_src - v_min) * inv_r0, (soc[j] - np.float64(rlo[j])) * a_s))
        i_lo = min(0.0, max(-i_c, (e_src - v_max) * inv_r0,
                            -(np.float64(rhi[j]) - soc[j]) * a_s * inv_eta))
        c2 = min(max(c, i_lo), i_hi)
        clamped[j] = 1 if (cm or c2 != c) else 0
        cur[j] = c2

    # ============ 2: equivalent circuit, SoC, OCV and energy accounts (exact for a held current)
    for j in range(m):
        c = cur[j]
        dq = c * soc_per_as * inv_cap[j]
        if c < 0.0:
            dq *= eta
        soc1[j] = min(1.0, max(0.0, soc[j] - dq))
    for j in range(m):
        ocv1[j] = ns * ocv_interp(tab, soc1[j])
    for j in range(m):
        f1[j] = ocv_integral(tab, tab_int, soc1[j])
    for j in range(m):
        f0[j] = ocv_integral(tab, tab_int, soc[j])
    for j in range(m):
        ds = soc1[j] - soc[j]
        # the exact mean OCV over the step: the integral's difference over the SoC moved
        ocv_avg[j] = ns * (f1[j] - f0[j]) / ds if ds != 0.0 else ocv0[j]
    v1o = dyn[dst, V_RC1, a:e]
    v2o = dyn[dst, V_RC2, a:e]
    for j in range(m):
        v1o[j], vrca[j] = rc_update(v1[j], cur[j], r1[j], om1, av1)
    for j in range(m):
        v2n, v2a = rc_update(v2[j], cur[j], r2[j], om2, av2)
        v2o[j] = v2n
        vrca[j] += v2a
    for j in range(m):
        c = cur[j]
        e_ohm = c * dt * (c * r0[j] + vrca[j])          # [J] into R0 and the RC pairs
        e_coul = -(1.0 - eta) * c * dt * ocv_avg[j] if c < 0.0 else 0.0   # side reactions
        edc[j] = c * dt * ocv_avg[j] - e_ohm             # [J] out of the terminals
        heat[j] = (e_ohm + e_coul) * inv_dt
        eloss[j] = e_ohm + e_coul
    for j in range(m):
        p_dc = edc[j] * inv_dt
        ls = loss[j]
        if clamped[j]:
            ls = pcs_loss_w(p_dc, p_rated, inv_p_rated, l0, l1, l2)
        if cur[j] == 0.0:
            ls = 0.0
        pac[j] = p_dc - ls if cur[j] != 0.0 else 0.0
        pdc[j] = p_dc
        loss[j] = ls
    for j in range(m):
        vterm[j] = ocv1[j] - v1o[j] - v2o[j] - cur[j] * r0[j]
    # energy counters [Wh], state and outputs
    src_c = dyn[src, E_AC_CHARGED, a:e]
    dst_c = dyn[dst, E_AC_CHARGED, a:e]
    for j in range(m):
        dst_c[j] = src_c[j] + max(0.0, -pac[j]) * dt * h_per_s
    src_d = dyn[src, E_AC_DISCHARGED, a:e]
    dst_d = dyn[dst, E_AC_DISCHARGED, a:e]
    for j in range(m):
        dst_d[j] = src_d[j] + max(0.0, pac[j]) * dt * h_per_s
    src_c = dyn[src, E_DC_CHARGED, a:e]
    dst_c = dyn[dst, E_DC_CHARGED, a:e]
    for j in range(m):
        dst_c[j] = src_c[j] + max(0.0, -edc[j]) * h_per_s
    src_d = dyn[src, E_DC_DISCHARGED, a:e]
    dst_d = dyn[dst, E_DC_DISCHARGED, a:e]
    for j in range(m):
        dst_d[j] = src_d[j] + max(0.0, edc[j]) * h_per_s
    src_l = dyn[src, E_LOSS, a:e]
    dst_l = dyn[dst, E_LOSS, a:e]
    for j in range(m):
        dst_l[j] = src_l[j] + (loss[j] * dt + eloss[j]) * h_per_s
    src_f = dyn[src, EFC, a:e]
    dst_f = dyn[dst, EFC, a:e]
    for j in range(m):
        dst_f[j] = src_f[j] + 0.5 * abs(soc1[j] - soc[j])
    dst_s = dyn[dst, SOC, a:e]
    for j in range(m):
        dst_s[j] = soc1[j]
    o = out[dst, CURRENT_A, a:e]
    for j in range(m):
        o[j] = cur[j]
    o = out[dst, VOLTAGE_V, a:e]
    for j in range(m):
        o[j] = vterm[j]
    o = out[dst, P_AC_W, a:e]
    for j in range(m):
        o[j] = pac[j]
    o = out[dst, P_DC_W, a:e]
    for j in range(m):
        o[j] = pdc[j]
    o = out[dst, P_REQUEST_W, a:e]
    for j in range(m):
        o[j] = preq[j]

    # ============ 3: thermal (neighbours from the published snapshot, HVAC, self-heating, runaway)
    temp_all = dyn[src, TEMP_C]
    # interior units read both neighbours unconditionally and mask by the flags (branch-free);
    # the first and last unit of the farm have no neighbour on the outer side
    j0 = 1 if a == 0 else 0
    j1 = m - 1 if e == n else m
    for j in range(j0, j1):
        f = fl[j]
        left = (f & FLAG_NEIGHBOUR_LEFT) != 0
        right = (f & FLAG_NEIGHBOUR_RIGHT) != 0
        tl = temp_all[a + j - 1]
        tr = temp_all[a + j + 1]
        tnb[j] = (tl if left else 0.0) + (tr if right else 0.0)
        nnb[j] = (1 if left else 0) + (1 if right else 0)
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
            tnb[j] = t
            nnb[j] = c
    onset = kp[k, K_RW_ONSET_C]
    hot = False
    for j in range(m):
        qrw[j] = 0.0
        hot |= temp[j] > onset or (latched[j] & ALARM_THERMAL_RUNAWAY) != 0
    if hot:                       # rare: self-heating above onset, or a unit in runaway
        e_rw = kp[k, K_RW_ENERGY_J]
        decay = math.exp(-dt / kp[k, K_RW_TAU_S])
        for j in range(m):
            if latched[j] & ALARM_THERMAL_RUNAWAY:
                rel0 = np.float64(upar[RW_RELEASED_J, a + j])
                rel1 = e_rw - (e_rw - rel0) * decay
                upar[RW_RELEASED_J, a + j] = rel1
                qrw[j] = (rel1 - rel0) * inv_dt
            elif temp[j] > onset:
                qrw[j] = self_heating_w(kp, k, temp[j])
    amb_off = upar[AMBIENT_OFFSET_C, a:e]
    for j in range(m):
        tamb[j] = t_amb + amb_off[j]
    g_amb = kp[k, K_G_AMB]
    g_nb = kp[k, K_G_NB]
    for j in range(m):
        tbase[j] = heat[j] + qrw[j] + g_amb * tamb[j] + g_nb * tnb[j]
    for j in range(m):
        temp1[j], phvac[j] = thermal_update(kp, k, temp[j], tbase[j], nnb[j],
                                            (fl[j] & FLAG_HVAC_FAILED) == 0)
    dst_t = dyn[dst, TEMP_C, a:e]
    for j in range(m):
        dst_t[j] = temp1[j]
    src_x = dyn[src, E_AUX, a:e]
    dst_x = dyn[dst, E_AUX, a:e]
    for j in range(m):
        dst_x[j] = src_x[j] + phvac[j] * dt * h_per_s
    o = out[dst, P_HVAC_W, a:e]
    for j in range(m):
        o[j] = phvac[j]

    # ============ 4: protection and unit state
    v_hi = kp[k, K_V_TRIP_HI]
    v_lo = kp[k, K_V_TRIP_LO]
    t_lo = kp[k, K_T_TRIP_LO]
    i_trip = kp[k, K_I_TRIP]
    t_crit = kp[k, K_RW_CRIT_C]
    any_fault = False
    for j in range(m):
        new = 0
        if vterm[j] > v_hi:
            new |= ALARM_OVER_VOLTAGE
        if vterm[j] < v_lo:
            new |= ALARM_UNDER_VOLTAGE
        if temp1[j] > t_hi:
            new |= ALARM_OVER_TEMPERATURE
        if temp1[j] < t_lo:
            new |= ALARM_UNDER_TEMPERATURE
        if abs(cur[j]) > i_trip:
            new |= ALARM_OVER_CURRENT
        if temp1[j] >= t_crit:
            new |= ALARM_THERMAL_RUNAWAY
        alarm[j] = new
        any_fault |= (fl[j] & (FLAG_SENSOR_FAULT | FLAG_TRIGGER_RUNAWAY)) != 0
    if any_fault:                 # rare: the BMS acts on faulted sensors; triggered runaways
        t_meas_at = t_s + dt
        for j in range(m):
            f = fl[j]
            if f & FLAG_TRIGGER_RUNAWAY:
                alarm[j] |= ALARM_THERMAL_RUNAWAY
            if f & FLAG_SENSOR_FAULT:
                i = a + j
                vm = apply_fault(sfault[i, CH_VOLTAGE], vterm[j], t_meas_at)
                tm = apply_fault(sfault[i, CH_TEMPERATURE], temp1[j], t_meas_at)
                im = apply_fault(sfault[i, CH_CURRENT], cur[j], t_meas_at)
                new = alarm[j] & ALARM_THERMAL_RUNAWAY
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
                alarm[j] = new
    tripped = False
    for j in range(m):
        lat = latched[j]
        if lat & ALARM_THERMAL_RUNAWAY:
            alarm[j] |= ALARM_THERMAL_RUNAWAY
        tripped |= (alarm[j] & ~lat) != 0
    if tripped:
        for j in range(m):
            if (alarm[j] & ~latched[j]) != 0:
                upar[TRIPS, a + j] += 1.0
    rw_onset = kp[k, K_RW_ONSET_C]
    for j in range(m):
        f = fl[j]
        lat = latched[j] | alarm[j]
        warn = ((ALARM_SOC_HIGH if soc1[j] >= soc_max - 1e-9 else 0)
                | (ALARM_SOC_LOW if soc1[j] <= soc_min + 1e-9 else 0)
                | (ALARM_TEMPERATURE_DERATE if (temp1[j] > t_der or der[j] < 1.0) else 0)
                | (ALARM_SELF_HEATING if temp1[j] > rw_onset else 0)
                | (ALARM_HVAC_FAULT if (f & FLAG_HVAC_FAILED) != 0 else 0)
                | (ALARM_SENSOR_FAULT if (f & FLAG_SENSOR_FAULT) != 0 else 0)
                | (ALARM_COMM_FAULT if (f & FLAG_COMM_FAULT) != 0 else 0))
        p = pac[j]
        st = DISCHARGING if p > 0.0 else (CHARGING if p < 0.0 else
                                            (IDLE if preq[j] != 0.0 else STANDBY))
        st = st if (f & FLAG_ENABLED) != 0 else OFFLINE
        st = st if lat == 0 else FAULT
        st = THERMAL_RUNAWAY if (lat & ALARM_THERMAL_RUNAWAY) != 0 else st
        state[j] = st
        latched[j] = lat
        alarm[j] = lat | warn
    so = status[dst, a:e]
    for j in range(m):
        so[j] = state[j]
    ao = alarms[dst, a:e]
    for j in range(m):
        ao[j] = alarm[j]

    # ============ aging, sampled every aging interval (sample and hold)
    if aging_dt > 0.0:
        model = int(kp[k, K_AGING_MODEL])
        for j in range(m):
            i = a + j
            efc = dst_f[j]
            aging_accumulate(model, acc, i, aging_dt, soc1[j], temp1[j], efc)
            if temp1[j] > upar[T_MAX_C, i]:
                upar[T_MAX_C, i] = temp1[j]
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
    # (scratch rows of phase 1 are free again and hold the masked per-unit terms)
    for j in range(m):
        hd, hc = _headroom(soc1[j], temp1[j], ocv1[j], np.float64(r0[j]), np.float64(der[j]),
                           p_rated, t_der, t_hi, inv_span, t_min_chg, np.float64(rlo[j]),
                           np.float64(rhi[j]), inv_taper, i_d, i_c)
        f = fl[j]
        auto = (f & FLAG_ENABLED) != 0 and latched[j] == 0 and (f & FLAG_MANUAL) == 0
        hdis[j] = hd if auto else 0.0
        hchg[j] = hc if auto else 0.0
    for j in range(m):
        f = fl[j]
        manual = (f & FLAG_ENABLED) != 0 and latched[j] == 0 and (f & FLAG_MANUAL) != 0
        loss[j] = preq[j] if manual else 0.0            # reused: manual-mode requests
    for j in range(m):
        slope[j] = np.float64(cap[j]) * max(0.0, f1[j] - kp[k, K_F_SOC_MIN])   # reused
    h_c = _sum(hchg)
    pa[AG_H_DIS] += _sum(hdis)
    pa[AG_H_CHG] += h_c
    pa[AG_W_DIS] += _dot(hdis, soc1)
    pa[AG_W_CHG] += h_c - _dot(hchg, soc1)
    pa[AG_P_MANUAL] += _sum(loss)
    pa[AG_P_AC] += _sum(pac)
    pa[AG_P_DC] += _sum(pdc)
    pa[AG_P_REQUEST] += _sum(preq)
    pa[AG_P_HVAC] += _sum(phvac)
    pa[AG_SOC_SUM] += _sum(soc1)
    lo_, hi_ = _min_max(soc1)
    pa[AG_SOC_MIN] = min(pa[AG_SOC_MIN], lo_)
    pa[AG_SOC_MAX] = max(pa[AG_SOC_MAX], hi_)
    pa[AG_TEMP_SUM] += _sum(temp1)
    lo_, hi_ = _min_max(temp1)
    pa[AG_TEMP_MIN] = min(pa[AG_TEMP_MIN], lo_)
    pa[AG_TEMP_MAX] = max(pa[AG_TEMP_MAX], hi_)
    pa[AG_E_STORED_WH] += ns * _dot(cap, f1)
    pa[AG_E_AVAILABLE_WH] += ns * _sum(slope)
    pa[AG_E_CAPACITY_WH] += ns * _sum(cap) * (kp[k, K_F_SOC_MAX] - kp[k, K_F_SOC_MIN])
    pa[AG_E_AC_CHARGED] += _sum(dyn[dst, E_AC_CHARGED, a:e])
    pa[AG_E_AC_DISCHARGED] += _sum(dyn[dst, E_AC_DISCHARGED, a:e])
    pa[AG_E_DC_CHARGED] += _sum(dyn[dst, E_DC_CHARGED, a:e])
    pa[AG_E_DC_DISCHARGED] += _sum(dyn[dst, E_DC_DISCHARGED, a:e])
    pa[AG_E_LOSS] += _sum(dst_l)
    pa[AG_E_AUX] += _sum(dst_x)
    pa[AG_EFC_SUM] += _sum(dst_f)
    pa[AG_SOH_SUM] += _sum(upar[SOH, a:e])
    n_alarm = 0
    for j in range(m):
        n_alarm += 1 if alarm[j] != 0 else 0
    pa[AG_N_ALARM] += n_alarm
    # Counts per state, SoC band and temperature band. Four interleaved tallies, because nearly
    # all units land in the same bin: one tally would make every unit wait for the previous one.
    tally = np.zeros((4, N_STATES + SOC_BANDS + TEMP_BANDS), dtype=np.int64)
    for j in range(m):
        t = tally[j & 3]
        t[state[j]] += 1
        t[N_STATES + min(int(soc1[j] * SOC_BANDS), SOC_BANDS - 1)] += 1
        tb = 0                                  # bands: < 0 C, 10 K wide up to 60 C, >= 60 C
        if temp1[j] >= 0.0:
            tb = min(int(temp1[j] * 0.1) + 1, TEMP_BANDS - 1)
        t[N_STATES + SOC_BANDS + tb] += 1
    for c in range(N_STATES + SOC_BANDS + TEMP_BANDS):
        pa[AG_STATE + c] += tally[0, c] + tally[1, c] + tally[2, c] + tally[3, c]


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _step_run_scalar(a, e, k, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status,
                     alarms, upar, flags, kp, ocv, ocv_int, sfault, acc, ast, pa):
    """:func:`_step_run` for a few units: the same equations, one unit at a time.

    The short-loop form carries a fixed cost of about a microsecond per run (some fifty loops),
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
        if (f & FLAG_ENABLED) == 0 or latched != 0:
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
        if (f & FLAG_ENABLED) == 0 or latched != 0:
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
                | (ALARM_COMM_FAULT if (f & FLAG_COMM_FAULT) != 0 else 0))
        st = DISCHARGING if pac > 0.0 else (CHARGING if pac < 0.0 else
                                              (IDLE if preq != 0.0 else STANDBY))
        st = st if (f & FLAG_ENABLED) != 0 else OFFLINE
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
        on = (f & FLAG_ENABLED) != 0 and lat == 0
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
        if (fl & FLAG_ENABLED) == 0 or latched != 0 or (fl & FLAG_MANUAL):
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
