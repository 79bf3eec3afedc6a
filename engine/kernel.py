"""The fused tick: every unit, every physical domain, one walk over memory.

Per unit and step: protection latch/reset -> dispatch -> PCS -> current from power with limits ->
RC pairs, SoC and energy accounts -> thermal (HVAC, neighbours, runaway) -> protection and state ->
aging sample -> outputs -> the unit's dispatch headroom for the next step and its share of the farm
aggregates. Tick k reads buffer ``src`` and writes buffer ``1 - src``; nothing else is copied.

Units are processed in fixed blocks of :data:`BLOCK` units; each block writes its own row of
partial aggregates and the rows are summed in block order afterwards, so every result is bitwise
the same for any number of threads.

Dispatch is exact without a second pass: the headroom ``h`` and SoC-balancing weight ``w`` each
unit will have at the start of the next step are summed in this step, and the next step splits the
farm setpoint with them (see :func:`dispatch_coefficients`).
"""

import math

import numpy as np
from numba import njit, prange

from .aging import (aging_accumulate, aging_relative_capacity, aging_relative_resistance,
                    aging_update, aging_update_due)
from .ambient import ambient_c
from .chemistry import OCV_POINTS, ocv_cell, ocv_cell_integral, ocv_cell_slope
from .electrical import current_for_power, pcs_loss_w, rc_update
from .layout import *  # noqa: F403  (field indices are compile-time constants)
from .sensors import apply_fault
from .thermal import self_heating_w, thermal_step

BLOCK = 2048
OCV_SEGMENTS = OCV_POINTS - 1


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def headroom_w(kp, k, soc, temp_c, ocv_v, r0, derate):
    """AC power the unit can deliver (discharge) and absorb (charge) now [W], both >= 0.

    The PCS rating, the current limits at the present OCV, the temperature derating (linear from
    ``t_derate`` to ``t_trip_high``; charging also from ``t_min_charge`` to 10 K above it), the
    SoC taper (linear to zero over ``soc_taper`` at each end of the window) and an external derate.
    """
    p_rated = kp[k, K_P_RATED]
    f_t = 1.0
    if temp_c > kp[k, K_T_DERATE]:
        f_t = max(0.0, (kp[k, K_T_TRIP_HI] - temp_c) * kp[k, K_INV_DERATE_SPAN])
    f_cold = min(1.0, max(0.0, (temp_c - kp[k, K_T_MIN_CHARGE]) * 0.1))
    inv_taper = kp[k, K_INV_TAPER]
    f_dis = min(1.0, max(0.0, (soc - kp[k, K_SOC_MIN]) * inv_taper))
    f_chg = min(1.0, max(0.0, (kp[k, K_SOC_MAX] - soc) * inv_taper))
    i_d = kp[k, K_I_MAX_DIS]
    i_c = kp[k, K_I_MAX_CHG]
    p_d = min(p_rated, i_d * (ocv_v - i_d * r0))
    p_c = min(p_rated, i_c * (ocv_v + i_c * r0))
    f = f_t * derate
    return max(0.0, p_d * f * f_dis), max(0.0, p_c * f * f_chg * f_cold)


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


@njit(cache=True, nogil=True, error_model="numpy")
def _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp,
                dyn, out, status, alarms, upar, flags, kind, kp, ocv, ocv_int, sfault,
                acc, ast, partial):
    """Advance units [b*BLOCK, min(n, (b+1)*BLOCK)) by one step and fill ``partial[b]``.

    The block is walked in four short loops (dispatch and current, equivalent circuit, thermal,
    protection and aggregates) rather than one long one: each unit's chain of dependent
    divisions and square roots is long, and short loop bodies let the processor overlap the
    chains of neighbouring units. The intermediate values stay in small scratch arrays that
    live in the L1/L2 cache.
    """
    lo = b * BLOCK
    hi = min(n, lo + BLOCK)
    m = hi - lo
    s_cur = np.empty(m)        # battery current [A]
    s_preq = np.empty(m)       # AC power requested [W]
    s_loss = np.empty(m)       # PCS loss [W]
    s_pac = np.empty(m)        # AC power delivered [W]
    s_heat = np.empty(m)       # heat from R0, RC pairs and side reactions [W]
    s_vterm = np.empty(m)      # terminal voltage at the end of the step [V]
    s_temp1 = np.empty(m)      # temperature at the end of the step [C]
    s_latched = np.empty(m, dtype=np.uint32)
    s_clamped = np.empty(m, dtype=np.bool_)
    d_sign = disp[D_SIGN]
    d_alpha = disp[D_ALPHA]
    d_beta = disp[D_BETA]
    inv3600 = 1.0 / 3600.0
    inv_dt = 1.0 / dt

    # --- 1: protection latch and reset, dispatch, PCS, current with its limits
    for j in range(m):
        i = lo + j
        k = kind[i]
        fl = flags[i]
        soc = dyn[src, SOC, i]
        v1 = dyn[src, V_RC1, i]
        v2 = dyn[src, V_RC2, i]
        latched = alarms[src, i] & TRIP_MASK
        if fl & FLAG_RESET:
            latched &= ALARM_THERMAL_RUNAWAY
        s_latched[j] = latched
        ns = kp[k, K_N_SERIES]
        tbl = int(kp[k, K_OCV_TABLE])
        r0 = np.float64(upar[R0_OHM, i])
        ocv0 = ns * ocv_cell(ocv, tbl, soc)
        e_src = ocv0 - v1 - v2
        p_req = 0.0
        cur = 0.0
        loss = 0.0
        clamped = False
        if (fl & FLAG_ENABLED) and latched == 0:
            current_mode = False
            if fl & FLAG_MANUAL:
                sp = np.float64(upar[SETPOINT_W, i])
                if fl & FLAG_CURRENT_MODE:
                    current_mode = True
                    cur = sp
                    p_req = sp * (e_src - sp * r0)
                    clamped = True
                else:
                    h_dis, h_chg = headroom_w(kp, k, soc, dyn[src, TEMP_C, i], ocv0, r0,
                                              np.float64(upar[DERATE, i]))
                    p_req = min(sp, h_dis) if sp >= 0.0 else max(sp, -h_chg)
            elif d_sign != 0.0:
                h_dis, h_chg = headroom_w(kp, k, soc, dyn[src, TEMP_C, i], ocv0, r0,
                                          np.float64(upar[DERATE, i]))
                if d_sign > 0.0:
                    w = h_dis * soc
                    p_req = d_alpha * w + d_beta * (h_dis - w)
                else:
                    w = h_chg * (1.0 - soc)
                    p_req = -(d_alpha * w + d_beta * (h_chg - w))
            eta = kp[k, K_ETA_COULOMB]
            inv_cap_s = 1.0 / (3600.0 * np.float64(upar[CAP_AH, i]))   # SoC per coulomb
            if (not current_mode) and p_req != 0.0:
                loss = pcs_loss_w(p_req, kp[k, K_P_RATED], kp[k, K_INV_P_RATED],
                                  kp[k, K_PCS_L0], kp[k, K_PCS_L1], kp[k, K_PCS_L2])
                p_dc = p_req + loss
                if p_req < 0.0 and p_dc > 0.0:
                    p_dc = 0.0
                # Solve P = i * v_avg(i) with the terminal voltage averaged over the step, so the
                # energy the step delivers is the setpoint times dt for any dt: the RC voltages
                # and the OCV move linearly with i over the step (exact for the RC pairs, first
                # order in the OCV slope).
                av1 = kp[k, K_AV1]
                av2 = kp[k, K_AV2]
                d_ocv = ns * ocv_cell_slope(ocv, tbl, soc) * 0.5 * dt * inv_cap_s
                if p_dc < 0.0:
                    d_ocv *= eta
                r_avg = (r0 + np.float64(upar[R1_OHM, i]) * (1.0 - av1)
                         + np.float64(upar[R2_OHM, i]) * (1.0 - av2) + d_ocv)
                cur = current_for_power(p_dc, ocv0 - v1 * av1 - v2 * av2, r_avg)
            if cur > 0.0:
                i_hi = min(kp[k, K_I_MAX_DIS], (e_src - kp[k, K_V_MIN]) / r0,
                           (soc - kp[k, K_SOC_MIN]) / (dt * inv_cap_s))
                if cur > i_hi:
                    cur = max(0.0, i_hi)
                    clamped = True
            elif cur < 0.0:
                i_lo = max(-kp[k, K_I_MAX_CHG], (e_src - kp[k, K_V_MAX]) / r0,
                           -(kp[k, K_SOC_MAX] - soc) / (eta * dt * inv_cap_s))
                if cur < i_lo:
                    cur = min(0.0, i_lo)
                    clamped = True
        s_cur[j] = cur
        s_preq[j] = p_req
        s_loss[j] = loss
        s_clamped[j] = clamped

    # --- 2: equivalent circuit, SoC and energy accounts (exact for a held current)
    s_p_ac = s_p_dc = s_p_req = s_soc = s_e_st = s_e_av = s_e_cap = 0.0
    s_ac_c = s_ac_d = s_dc_c = s_dc_d = s_loss_e = s_efc = 0.0
    soc_min = np.inf
    soc_max = -np.inf
    for j in range(m):
        i = lo + j
        k = kind[i]
        cur = s_cur[j]
        soc = dyn[src, SOC, i]
        r0 = np.float64(upar[R0_OHM, i])
        ns = kp[k, K_N_SERIES]
        tbl = int(kp[k, K_OCV_TABLE])
        eta = kp[k, K_ETA_COULOMB]
        v1n, v1a = rc_update(dyn[src, V_RC1, i], cur, np.float64(upar[R1_OHM, i]),
                             kp[k, K_OM1], kp[k, K_AV1])
        v2n, v2a = rc_update(dyn[src, V_RC2, i], cur, np.float64(upar[R2_OHM, i]),
                             kp[k, K_OM2], kp[k, K_AV2])
        cap = np.float64(upar[CAP_AH, i])
        dq = cur * dt * inv3600 / cap
        if cur < 0.0:
            dq *= eta
        soc1 = min(1.0, max(0.0, soc - dq))
        dsoc = soc1 - soc
        ocv1 = ns * ocv_cell(ocv, tbl, soc1)
        f1 = ocv_cell_integral(ocv, ocv_int, tbl, soc1)
        if dsoc == 0.0:
            ocv_avg = ns * ocv_cell(ocv, tbl, soc)
        elif int(soc * OCV_SEGMENTS) == int(soc1 * OCV_SEGMENTS):
            ocv_avg = 0.5 * (ns * ocv_cell(ocv, tbl, soc) + ocv1)   # exact on one linear segment
        else:
            ocv_avg = ns * (f1 - ocv_cell_integral(ocv, ocv_int, tbl, soc)) / dsoc
        e_ohm = cur * dt * (cur * r0 + v1a + v2a)               # [J] into R0 and the RC pairs
        e_dc = cur * dt * ocv_avg - e_ohm                       # [J] out of the terminals
        e_coul = 0.0
        if cur < 0.0:
            e_coul = -(1.0 - eta) * cur * dt * ocv_avg          # [J] charge lost to side reactions
        p_dc_act = e_dc * inv_dt
        loss = s_loss[j]
        if cur == 0.0:
            loss = 0.0
            p_ac = 0.0
        else:
            if s_clamped[j]:
                loss = pcs_loss_w(p_dc_act, kp[k, K_P_RATED], kp[k, K_INV_P_RATED],
                                  kp[k, K_PCS_L0], kp[k, K_PCS_L1], kp[k, K_PCS_L2])
            p_ac = p_dc_act - loss
        s_pac[j] = p_ac
        s_heat[j] = (e_ohm + e_coul) * inv_dt
        v_term = ocv1 - v1n - v2n - cur * r0
        s_vterm[j] = v_term
        e_ac = p_ac * dt * inv3600
        ac_c = dyn[src, E_AC_CHARGED, i]
        ac_d = dyn[src, E_AC_DISCHARGED, i]
        if e_ac >= 0.0:
            ac_d += e_ac
        else:
            ac_c -= e_ac
        dc_c = dyn[src, E_DC_CHARGED, i]
        dc_d = dyn[src, E_DC_DISCHARGED, i]
        if e_dc >= 0.0:
            dc_d += e_dc * inv3600
        else:
            dc_c -= e_dc * inv3600
        e_loss = dyn[src, E_LOSS, i] + (loss * dt + e_ohm + e_coul) * inv3600
        efc = dyn[src, EFC, i] + 0.5 * abs(dsoc)
        dyn[dst, SOC, i] = soc1
        dyn[dst, V_RC1, i] = v1n
        dyn[dst, V_RC2, i] = v2n
        dyn[dst, E_AC_CHARGED, i] = ac_c
        dyn[dst, E_AC_DISCHARGED, i] = ac_d
        dyn[dst, E_DC_CHARGED, i] = dc_c
        dyn[dst, E_DC_DISCHARGED, i] = dc_d
        dyn[dst, E_LOSS, i] = e_loss
        dyn[dst, EFC, i] = efc
        out[dst, CURRENT_A, i] = cur
        out[dst, VOLTAGE_V, i] = v_term
        out[dst, P_AC_W, i] = p_ac
        out[dst, P_DC_W, i] = p_dc_act
        out[dst, P_REQUEST_W, i] = s_preq[j]
        e_scale = ns * cap                      # Wh per volt of F (Ah x V)
        s_p_ac += p_ac
        s_p_dc += p_dc_act
        s_p_req += s_preq[j]
        s_soc += soc1
        soc_min = min(soc_min, soc1)
        soc_max = max(soc_max, soc1)
        s_e_st += e_scale * f1
        s_e_av += e_scale * max(0.0, f1 - kp[k, K_F_SOC_MIN])
        s_e_cap += e_scale * (kp[k, K_F_SOC_MAX] - kp[k, K_F_SOC_MIN])
        s_ac_c += ac_c
        s_ac_d += ac_d
        s_dc_c += dc_c
        s_dc_d += dc_d
        s_loss_e += e_loss
        s_efc += efc

    # --- 3: thermal (HVAC, neighbours from the published snapshot, self-heating, runaway)
    s_p_hvac = s_aux = s_temp = 0.0
    t_max = -np.inf
    t_min = np.inf
    for j in range(m):
        i = lo + j
        k = kind[i]
        fl = flags[i]
        temp = dyn[src, TEMP_C, i]
        n_nb = 0
        t_nb = 0.0
        if fl & FLAG_NEIGHBOUR_LEFT:
            n_nb += 1
            t_nb += dyn[src, TEMP_C, i - 1]
        if fl & FLAG_NEIGHBOUR_RIGHT:
            n_nb += 1
            t_nb += dyn[src, TEMP_C, i + 1]
        q_rw = 0.0
        if s_latched[j] & ALARM_THERMAL_RUNAWAY:
            e_rw = kp[k, K_RW_ENERGY_J]
            rel0 = np.float64(upar[RW_RELEASED_J, i])
            rel1 = e_rw - (e_rw - rel0) * math.exp(-dt / kp[k, K_RW_TAU_S])
            upar[RW_RELEASED_J, i] = rel1
            q_rw = (rel1 - rel0) * inv_dt
        elif temp > kp[k, K_RW_ONSET_C]:
            q_rw = self_heating_w(kp, k, temp)
        temp1, p_hvac = thermal_step(kp, k, temp, s_heat[j] + q_rw,
                                     t_amb + upar[AMBIENT_OFFSET_C, i], n_nb, t_nb,
                                     (fl & FLAG_HVAC_FAILED) == 0)
        e_aux = dyn[src, E_AUX, i] + p_hvac * dt * inv3600
        dyn[dst, TEMP_C, i] = temp1
        dyn[dst, E_AUX, i] = e_aux
        out[dst, P_HVAC_W, i] = p_hvac
        s_temp1[j] = temp1
        s_p_hvac += p_hvac
        s_aux += e_aux
        s_temp += temp1
        t_max = max(t_max, temp1)
        t_min = min(t_min, temp1)

    # --- 4: protection and state, aging sample, next step's dispatch sums, counts
    s_p_man = s_soh = s_alarm = 0.0
    s_h_d = s_h_c = s_w_d = s_w_c = 0.0
    counts = np.zeros(N_STATES + SOC_BANDS + TEMP_BANDS)
    for j in range(m):
        i = lo + j
        k = kind[i]
        fl = flags[i]
        temp1 = s_temp1[j]
        cur = s_cur[j]
        v_term = s_vterm[j]
        latched = s_latched[j]
        v_meas = v_term
        t_meas = temp1
        i_meas = cur
        if fl & FLAG_SENSOR_FAULT:
            v_meas = apply_fault(sfault[i, CH_VOLTAGE], v_term, t_s + dt)
            t_meas = apply_fault(sfault[i, CH_TEMPERATURE], temp1, t_s + dt)
            i_meas = apply_fault(sfault[i, CH_CURRENT], cur, t_s + dt)
        new = 0
        if v_meas > kp[k, K_V_TRIP_HI]:
            new |= ALARM_OVER_VOLTAGE
        if v_meas < kp[k, K_V_TRIP_LO]:
            new |= ALARM_UNDER_VOLTAGE
        if t_meas > kp[k, K_T_TRIP_HI]:
            new |= ALARM_OVER_TEMPERATURE
        if t_meas < kp[k, K_T_TRIP_LO]:
            new |= ALARM_UNDER_TEMPERATURE
        if abs(i_meas) > kp[k, K_I_TRIP]:
            new |= ALARM_OVER_CURRENT
        if ((latched & ALARM_THERMAL_RUNAWAY) or temp1 >= kp[k, K_RW_CRIT_C]
                or (fl & FLAG_TRIGGER_RUNAWAY)):
            new |= ALARM_THERMAL_RUNAWAY
        if (new & ~latched) != 0:
            upar[TRIPS, i] += 1.0
        latched |= new
        soc1 = dyn[dst, SOC, i]
        derate = np.float64(upar[DERATE, i])
        warn = 0
        if soc1 >= kp[k, K_SOC_MAX] - 1e-9:
            warn |= ALARM_SOC_HIGH
        if soc1 <= kp[k, K_SOC_MIN] + 1e-9:
            warn |= ALARM_SOC_LOW
        if temp1 > kp[k, K_T_DERATE] or derate < 1.0:
            warn |= ALARM_TEMPERATURE_DERATE
        if temp1 > kp[k, K_RW_ONSET_C]:
            warn |= ALARM_SELF_HEATING
        if fl & FLAG_HVAC_FAILED:
            warn |= ALARM_HVAC_FAULT
        if fl & FLAG_SENSOR_FAULT:
            warn |= ALARM_SENSOR_FAULT
        if fl & FLAG_COMM_FAULT:
            warn |= ALARM_COMM_FAULT
        p_ac = s_pac[j]
        if latched & ALARM_THERMAL_RUNAWAY:
            state = THERMAL_RUNAWAY
        elif latched != 0:
            state = FAULT
        elif (fl & FLAG_ENABLED) == 0:
            state = OFFLINE
        elif p_ac > 0.0:
            state = DISCHARGING
        elif p_ac < 0.0:
            state = CHARGING
        elif s_preq[j] != 0.0:
            state = IDLE
        else:
            state = STANDBY
        status[dst, i] = state
        alarms[dst, i] = latched | warn

        r0 = np.float64(upar[R0_OHM, i])
        if aging_dt > 0.0:          # sampled every aging interval (sample and hold)
            model = int(kp[k, K_AGING_MODEL])
            efc = dyn[dst, EFC, i]
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
                r0 = np.float64(upar[R0_OHM, i])

        if (fl & FLAG_ENABLED) and latched == 0:
            if fl & FLAG_MANUAL:
                s_p_man += s_preq[j]
            else:
                ocv1 = kp[k, K_N_SERIES] * ocv_cell(ocv, int(kp[k, K_OCV_TABLE]), soc1)
                h_dis1, h_chg1 = headroom_w(kp, k, soc1, temp1, ocv1, r0, derate)
                s_h_d += h_dis1
                s_h_c += h_chg1
                s_w_d += h_dis1 * soc1
                s_w_c += h_chg1 * (1.0 - soc1)
        s_soh += upar[SOH, i]
        if (latched | warn) != 0:
            s_alarm += 1.0
        counts[state] += 1.0
        counts[N_STATES + min(int(soc1 * SOC_BANDS), SOC_BANDS - 1)] += 1.0
        tb = 0                                  # bands: < 0 C, 10 K wide up to 60 C, >= 60 C
        if temp1 >= 0.0:
            tb = min(int(temp1 * 0.1) + 1, TEMP_BANDS - 1)
        counts[N_STATES + SOC_BANDS + tb] += 1.0

    pa = partial[b]
    pa[AG_P_AC] = s_p_ac
    pa[AG_P_DC] = s_p_dc
    pa[AG_P_HVAC] = s_p_hvac
    pa[AG_P_REQUEST] = s_p_req
    pa[AG_P_MANUAL] = s_p_man
    pa[AG_SOC_SUM] = s_soc
    pa[AG_E_STORED_WH] = s_e_st
    pa[AG_E_AVAILABLE_WH] = s_e_av
    pa[AG_E_CAPACITY_WH] = s_e_cap
    pa[AG_E_AC_CHARGED] = s_ac_c
    pa[AG_E_AC_DISCHARGED] = s_ac_d
    pa[AG_E_DC_CHARGED] = s_dc_c
    pa[AG_E_DC_DISCHARGED] = s_dc_d
    pa[AG_E_LOSS] = s_loss_e
    pa[AG_E_AUX] = s_aux
    pa[AG_TEMP_SUM] = s_temp
    pa[AG_TEMP_MAX] = t_max
    pa[AG_TEMP_MIN] = t_min
    pa[AG_SOC_MIN] = soc_min
    pa[AG_SOC_MAX] = soc_max
    pa[AG_SOH_SUM] = s_soh
    pa[AG_EFC_SUM] = s_efc
    pa[AG_N_ALARM] = s_alarm
    pa[AG_H_DIS] = s_h_d
    pa[AG_H_CHG] = s_h_c
    pa[AG_W_DIS] = s_w_d
    pa[AG_W_CHG] = s_w_c
    for j in range(N_STATES):
        pa[AG_STATE + j] = counts[j]
    for j in range(SOC_BANDS):
        pa[AG_SOC_BAND + j] = counts[N_STATES + j]
    for j in range(TEMP_BANDS):
        pa[AG_TEMP_BAND + j] = counts[N_STATES + SOC_BANDS + j]


@njit(cache=True, nogil=True, error_model="numpy")
def _reduce(partial, agg):
    """Sum the block partials in block order (max/min where the field is an extreme)."""
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
    _reduce(partial, agg)
    dispatch_coefficients(farm_w, agg, disp)


# The two runners differ only in prange/range. They are written out twice on purpose: numba's
# cache keys a function by its qualified name, so one factory-made closure would share one cache
# entry between the parallel and the serial variant.
@njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def run_steps_parallel(n_steps, src, dt, t0, farm_w, amb_kind, amb_p, amb_t, amb_v,
                       aging_interval, aging_clock, disp, dyn, out, status, alarms, upar, flags,
                       kind, kp, ocv, ocv_int, sfault, acc, ast, partial, agg):
    """Advance ``n_steps`` steps with the blocks spread over threads; returns the new buffer."""
    n = flags.shape[0]
    for s in range(n_steps):
        t_s = t0 + s * dt
        t_amb = ambient_c(t_s, amb_kind, amb_p, amb_t, amb_v)
        aging_dt = _aging_due(aging_clock, dt, aging_interval)
        dst = 1 - src
        for b in prange(partial.shape[0]):
            _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
                        upar, flags, kind, kp, ocv, ocv_int, sfault, acc, ast, partial)
        _finish_step(farm_w, partial, agg, disp)
        src = dst
    return src


@njit(cache=True, nogil=True, error_model="numpy")
def run_steps_serial(n_steps, src, dt, t0, farm_w, amb_kind, amb_p, amb_t, amb_v,
                     aging_interval, aging_clock, disp, dyn, out, status, alarms, upar, flags,
                     kind, kp, ocv, ocv_int, sfault, acc, ast, partial, agg):
    """Advance ``n_steps`` steps on the calling thread; returns the new buffer."""
    n = flags.shape[0]
    for s in range(n_steps):
        t_s = t0 + s * dt
        t_amb = ambient_c(t_s, amb_kind, amb_p, amb_t, amb_v)
        aging_dt = _aging_due(aging_clock, dt, aging_interval)
        dst = 1 - src
        for b in range(partial.shape[0]):
            _step_block(b, n, src, dst, dt, t_s, t_amb, aging_dt, disp, dyn, out, status, alarms,
                        upar, flags, kind, kp, ocv, ocv_int, sfault, acc, ast, partial)
        _finish_step(farm_w, partial, agg, disp)
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
        ocv0 = kp[k, K_N_SERIES] * ocv_cell(ocv, int(kp[k, K_OCV_TABLE]), soc)
        h_d, h_c = headroom_w(kp, k, soc, dyn[src, TEMP_C, i], ocv0,
                              np.float64(upar[R0_OHM, i]), np.float64(upar[DERATE, i]))
        agg[AG_H_DIS] += h_d
        agg[AG_H_CHG] += h_c
        agg[AG_W_DIS] += h_d * soc
        agg[AG_W_CHG] += h_c * (1.0 - soc)


@njit(cache=True, nogil=True, error_model="numpy")
def stored_energy_wh(src, dyn, upar, kind, kp, ocv, ocv_int, out):
    """Chemical energy stored per unit [Wh]: ``cap_ah * n_series * F(soc)``."""
    for i in range(kind.shape[0]):
        k = kind[i]
        f = ocv_cell_integral(ocv, ocv_int, int(kp[k, K_OCV_TABLE]), dyn[src, SOC, i])
        out[i] = np.float64(upar[CAP_AH, i]) * kp[k, K_N_SERIES] * f
