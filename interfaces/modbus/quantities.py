"""The quantities a Modbus device reports, computed for one device at request time.

A request for a unit's registers asks :func:`unit_quantities` (one compiled call) for that unit's
quantity vector on the published tick: measured values through the sensor layer (noise and sensor
faults, exactly what :meth:`Farm.measure` reports), truth where a BMS reports truth (energy
counters, power), ratings of the unit's kind, and the SunSpec enums and event bits derived from
the engine's state and alarm bits. Register maps (SunSpec or a vendor file) then encode entries of
this vector; :data:`QUANTITIES` is the list a vendor map may name as ``source``.

Nothing here runs per tick: a unit nobody polls costs nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from bess_farm.engine.chemistry import ocv_integral
from bess_farm.engine.layout import (
    ALARM_COMM_FAULT, ALARM_HVAC_FAULT, ALARM_PCS_FAULT, ALARM_OVER_CURRENT, ALARM_OVER_TEMPERATURE,
    ALARM_OVER_VOLTAGE, ALARM_SELF_HEATING, ALARM_SENSOR_FAULT, ALARM_SOC_HIGH, ALARM_SOC_LOW,
    ALARM_TEMPERATURE_DERATE, ALARM_THERMAL_RUNAWAY, ALARM_UNDER_TEMPERATURE, ALARM_UNDER_VOLTAGE,
    CAP_AH, CAP_NOM_AH, CH_CURRENT, CH_SOC, CH_TEMPERATURE, CH_VOLTAGE, CHARGING, CURRENT_A,
    DISCHARGING, E_AC_CHARGED, E_AC_DISCHARGED, EFC, FAULT, FLAG_ENABLED, FLAG_MANUAL,
    FLAG_SENSOR_FAULT, IDLE, K_I_MAX_CHG, K_I_MAX_DIS, K_N_SERIES, K_OCV_TABLE, K_P_RATED,
    K_SIGMA_I, K_SIGMA_SOC, K_SIGMA_T, K_SIGMA_V, K_SOC_MAX, K_SOC_MIN, K_V_MAX, K_V_MIN,
    OFFLINE, P_AC_W, P_DC_W, P_HVAC_W, P_REQUEST_W, SETPOINT_W, SOC,
    SOC_RSV_MAX, SOC_RSV_MIN, SOH, STANDBY, TEMP_C, THERMAL_RUNAWAY, TRIP_MASK, TRIPS, VOLTAGE_V,
)
from bess_farm.engine.sensors import measure_one

# name -> (unit, meaning); the index of a name is its slot in the quantity vector.
_Q = (
    ("soc_pct", "%", "state of charge as the BMS measures it"),
    ("soh_pct", "%", "state of health (present / nominal capacity)"),
    ("efc", "-", "equivalent full cycles"),
    ("voltage_v", "V", "pack voltage as measured"),
    ("current_a", "A", "battery current as measured, positive = discharge"),
    ("temp_c", "C", "cell temperature as measured"),
    ("ambient_c", "C", "ambient temperature at the unit"),
    ("p_ac_w", "W", "AC power at the PCS terminals, positive = discharge"),
    ("p_dc_w", "W", "DC power at the battery terminals, positive = discharge"),
    ("p_hvac_w", "W", "HVAC electric draw"),
    ("p_request_w", "W", "AC power the unit was asked for after dispatch and limits"),
    ("state", "-", "engine state code (0 offline .. 6 thermal runaway)"),
    ("alarms", "-", "engine alarm bits (see docs/modbus.md)"),
    ("e_ac_charged_wh", "Wh", "AC energy taken from the grid"),
    ("e_ac_discharged_wh", "Wh", "AC energy delivered to the grid"),
    ("e_stored_wh", "Wh", "energy stored (chemical, present capacity)"),
    ("e_available_wh", "Wh", "energy above the reserve SoC, available to discharge"),
    ("capacity_ah", "Ah", "present capacity"),
    ("rated_ah", "Ah", "nominal capacity"),
    ("rated_wh", "Wh", "nominal energy"),
    ("p_rated_w", "W", "PCS rating"),
    ("i_max_charge_a", "A", "charge current limit"),
    ("i_max_discharge_a", "A", "discharge current limit"),
    ("v_max_v", "V", "pack voltage limit while charging"),
    ("v_min_v", "V", "pack voltage limit while discharging"),
    ("v_nom_v", "V", "pack nominal voltage"),
    ("cell_v_avg_v", "V", "mean cell voltage (measured pack voltage / cells in series)"),
    ("soc_min_pct", "%", "lower end of the SoC window"),
    ("soc_max_pct", "%", "upper end of the SoC window"),
    ("soc_rsv_min_pct", "%", "reserve: lowest SoC the unit discharges to"),
    ("soc_rsv_max_pct", "%", "reserve: highest SoC the unit charges to"),
    ("enabled", "-", "1 when enabled (contactors may close)"),
    ("manual", "-", "1 when following its own setpoint instead of the farm dispatch"),
    ("setpoint_w", "W", "the unit's own setpoint (manual mode)"),
    ("trips", "-", "protection trips so far"),
    ("heartbeat", "-", "tick counter modulo 65536"),
    ("ac_voltage_v", "V", "AC line-to-line voltage at the PCS"),
    ("ac_current_a", "A", "AC line current"),
    ("grid_hz", "Hz", "grid frequency"),
    ("dod_pct", "%", "depth of discharge (100 - SoC)"),
    ("abs_p_ac_w", "VA", "apparent power (unity power factor)"),
    ("p_ac_w_phase", "W", "AC power per phase"),
    # SunSpec enums and bit fields derived from state and alarms
    ("ss_802_state", "-", "SunSpec 802 State"),
    ("ss_802_chast", "-", "SunSpec 802 ChaSt"),
    ("ss_802_evt1", "-", "SunSpec 802 Evt1 bits"),
    ("ss_802_setop", "-", "SunSpec 802 SetOp (1 connect, 2 disconnect)"),
    ("ss_802_setinvstate", "-", "SunSpec 802 SetInvState (1 stopped, 3 started)"),
    ("ss_713_sta", "-", "SunSpec 713 Sta (0 ok, 1 warning, 2 error)"),
    ("ss_701_st", "-", "SunSpec 701 St (0 off, 1 on)"),
    ("ss_701_invst", "-", "SunSpec 701 InvSt"),
    ("ss_701_connst", "-", "SunSpec 701 ConnSt"),
    ("ss_701_alrm", "-", "SunSpec 701 Alrm bits"),
    # control registers (filled from the Modbus control state, not the engine)
    ("ctl_wset_ena", "-", "704 WSetEna"),
    ("ctl_wset_mod", "-", "704 WSetMod"),
    ("ctl_wset_w", "W", "704 WSet"),
    ("ctl_wset_rvrt_w", "W", "704 WSetRvrt"),
    ("ctl_wset_pct", "%", "704 WSetPct"),
    ("ctl_wset_pct_rvrt", "%", "704 WSetPctRvrt"),
    ("ctl_wset_ena_rvrt", "-", "704 WSetEnaRvrt"),
    ("ctl_rvrt_tms", "s", "704 WSetRvrtTms"),
    ("ctl_rvrt_rem", "s", "704 WSetRvrtRem"),
    ("ctl_hb", "-", "802 CtrlHb as last written"),
)
QUANTITIES = {name: (unit, meaning) for name, unit, meaning in _Q}
QUANTITY_INDEX = {name: j for j, (name, _, _) in enumerate(_Q)}
N_Q = len(_Q)
# slot of each quantity (kept in the order of _Q; a test checks it)
Q_SOC_PCT = 0
Q_SOH_PCT = 1
Q_EFC = 2
Q_VOLTAGE_V = 3
Q_CURRENT_A = 4
Q_TEMP_C = 5
Q_AMBIENT_C = 6
Q_P_AC_W = 7
Q_P_DC_W = 8
Q_P_HVAC_W = 9
Q_P_REQUEST_W = 10
Q_STATE = 11
Q_ALARMS = 12
Q_E_AC_CHARGED_WH = 13
Q_E_AC_DISCHARGED_WH = 14
Q_E_STORED_WH = 15
Q_E_AVAILABLE_WH = 16
Q_CAPACITY_AH = 17
Q_RATED_AH = 18
Q_RATED_WH = 19
Q_P_RATED_W = 20
Q_I_MAX_CHARGE_A = 21
Q_I_MAX_DISCHARGE_A = 22
Q_V_MAX_V = 23
Q_V_MIN_V = 24
Q_V_NOM_V = 25
Q_CELL_V_AVG_V = 26
Q_SOC_MIN_PCT = 27
Q_SOC_MAX_PCT = 28
Q_SOC_RSV_MIN_PCT = 29
Q_SOC_RSV_MAX_PCT = 30
Q_ENABLED = 31
Q_MANUAL = 32
Q_SETPOINT_W = 33
Q_TRIPS = 34
Q_HEARTBEAT = 35
Q_AC_VOLTAGE_V = 36
Q_AC_CURRENT_A = 37
Q_GRID_HZ = 38
Q_DOD_PCT = 39
Q_ABS_P_AC_W = 40
Q_P_AC_W_PHASE = 41
Q_SS_802_STATE = 42
Q_SS_802_CHAST = 43
Q_SS_802_EVT1 = 44
Q_SS_802_SETOP = 45
Q_SS_802_SETINVSTATE = 46
Q_SS_713_STA = 47
Q_SS_701_ST = 48
Q_SS_701_INVST = 49
Q_SS_701_CONNST = 50
Q_SS_701_ALRM = 51
Q_CTL_WSET_ENA = 52
Q_CTL_WSET_MOD = 53
Q_CTL_WSET_W = 54
Q_CTL_WSET_RVRT_W = 55
Q_CTL_WSET_PCT = 56
Q_CTL_WSET_PCT_RVRT = 57
Q_CTL_WSET_ENA_RVRT = 58
Q_CTL_RVRT_TMS = 59
Q_CTL_RVRT_REM = 60
Q_CTL_HB = 61

# SunSpec 802 Evt1 bits (model_802.json symbols)
EVT1_OVER_TEMP_ALARM = 1 << 1
EVT1_UNDER_TEMP_ALARM = 1 << 3
EVT1_OVER_CHARGE_CURRENT_ALARM = 1 << 5
EVT1_OVER_DISCHARGE_CURRENT_ALARM = 1 << 7
EVT1_OVER_VOLT_ALARM = 1 << 9
EVT1_UNDER_VOLT_ALARM = 1 << 11
EVT1_UNDER_SOC_MIN_WARNING = 1 << 13
EVT1_OVER_SOC_MAX_WARNING = 1 << 15
EVT1_COMMUNICATION_ERROR = 1 << 0
EVT1_OVER_TEMP_WARNING = 1 << 2
EVT1_THERMAL_RUNAWAY = 1 << 17
EVT1_OTHER_ALARM = 1 << 21
EVT1_OTHER_WARNING = 1 << 22


@njit(cache=True, nogil=True, error_model="numpy")
def evt1_bits(alarms):
    """SunSpec 802 Evt1 from the engine's alarm bits (what a real BMS reports)."""
    e = 0
    if alarms & ALARM_OVER_TEMPERATURE:
        e |= EVT1_OVER_TEMP_ALARM
    if alarms & (ALARM_TEMPERATURE_DERATE | ALARM_SELF_HEATING):
        e |= EVT1_OVER_TEMP_WARNING
    if alarms & ALARM_UNDER_TEMPERATURE:
        e |= EVT1_UNDER_TEMP_ALARM
    if alarms & ALARM_OVER_CURRENT:
        e |= EVT1_OVER_DISCHARGE_CURRENT_ALARM | EVT1_OVER_CHARGE_CURRENT_ALARM
    if alarms & ALARM_OVER_VOLTAGE:
        e |= EVT1_OVER_VOLT_ALARM
    if alarms & ALARM_UNDER_VOLTAGE:
        e |= EVT1_UNDER_VOLT_ALARM
    if alarms & ALARM_SOC_LOW:
        e |= EVT1_UNDER_SOC_MIN_WARNING
    if alarms & ALARM_SOC_HIGH:
        e |= EVT1_OVER_SOC_MAX_WARNING
    if alarms & ALARM_COMM_FAULT:
        e |= EVT1_COMMUNICATION_ERROR
    if alarms & ALARM_THERMAL_RUNAWAY:
        e |= EVT1_THERMAL_RUNAWAY | EVT1_OVER_TEMP_ALARM
    if alarms & (ALARM_HVAC_FAULT | ALARM_PCS_FAULT):
        e |= EVT1_OTHER_ALARM
    if alarms & ALARM_SENSOR_FAULT:
        e |= EVT1_OTHER_WARNING
    return e


@njit(cache=True, nogil=True, error_model="numpy")
def sunspec_enums(state, alarms, enabled, soc, soc_lo, soc_hi, p_ac, q):
    """Fill the SunSpec enums of ``q`` from an engine state code and alarm bits."""
    # 802 State: DISCONNECTED 1, CONNECTED 3, STANDBY 4, SOC PROTECTION 5, FAULT 99
    if state == FAULT or state == THERMAL_RUNAWAY:
        st = 99
    elif state == OFFLINE:
        st = 1
    elif state == STANDBY:
        st = 4
    elif state == IDLE:
        st = 5 if (soc <= soc_lo + 1e-3 or soc >= soc_hi - 1e-3) else 3
    else:
        st = 3
    q[Q_SS_802_STATE] = st
    # 802 ChaSt: OFF 1, EMPTY 2, DISCHARGING 3, CHARGING 4, FULL 5, HOLDING 6
    if state == OFFLINE or state == FAULT or state == THERMAL_RUNAWAY:
        cs = 1
    elif state == DISCHARGING:
        cs = 3
    elif state == CHARGING:
        cs = 4
    elif soc <= soc_lo + 1e-3:
        cs = 2
    elif soc >= soc_hi - 1e-3:
        cs = 5
    else:
        cs = 6
    q[Q_SS_802_CHAST] = cs
    q[Q_SS_802_EVT1] = evt1_bits(alarms)
    q[Q_SS_802_SETOP] = 1 if enabled else 2
    q[Q_SS_802_SETINVSTATE] = 3 if enabled else 1
    if alarms & TRIP_MASK:
        sta = 2
    elif alarms:
        sta = 1
    else:
        sta = 0
    q[Q_SS_713_STA] = sta
    on = state == CHARGING or state == DISCHARGING or state == IDLE or state == STANDBY
    q[Q_SS_701_ST] = 1 if on else 0
    # 701 InvSt: OFF 0, RUNNING 3, THROTTLED 4, FAULT 6, STANDBY 7
    if state == FAULT or state == THERMAL_RUNAWAY:
        inv = 6
    elif state == OFFLINE:
        inv = 0
    elif state == STANDBY:
        inv = 7
    elif state == IDLE or (alarms & ALARM_TEMPERATURE_DERATE):
        inv = 4
    else:
        inv = 3
    q[Q_SS_701_INVST] = inv
    q[Q_SS_701_CONNST] = 1 if (state == CHARGING or state == DISCHARGING or state == IDLE) else 0
    a = 0
    if state == OFFLINE:
        a |= 1 << 6          # MANUAL_SHUTDOWN
    if alarms & (ALARM_OVER_TEMPERATURE | ALARM_THERMAL_RUNAWAY):
        a |= 1 << 7          # OVER_TEMP
    if alarms & ALARM_OVER_VOLTAGE:
        a |= 1 << 1          # DC_OVER_VOLT
    if state == FAULT or state == THERMAL_RUNAWAY:
        a |= 1 << 3          # DC_DISCONNECT
    if alarms & ALARM_PCS_FAULT:
        a |= 1 << 2          # AC_DISCONNECT: the converter tripped
    q[Q_SS_701_ALRM] = a


@njit(cache=True, nogil=True, error_model="numpy")
def unit_quantities(i, src, tick, t_s, seed, uid, t_amb, ac_v, grid_hz, dyn, out, status, alarms,
                    upar, flags, kind, kp, ocv, ocv_int, faults, q):
    """Fill ``q`` with unit ``i``'s quantities on the published buffer ``src``."""
    k = kind[i]
    f = flags[i]
    faulted = (f & FLAG_SENSOR_FAULT) != 0
    ns = kp[k, K_N_SERIES]
    soc = dyn[src, SOC, i]
    soc_m = measure_one(faults, i, CH_SOC, soc, kp[k, K_SIGMA_SOC], faulted, seed, uid, tick, t_s)
    v_m = measure_one(faults, i, CH_VOLTAGE, np.float64(out[src, VOLTAGE_V, i]), kp[k, K_SIGMA_V],
                   faulted, seed, uid, tick, t_s)
    t_m = measure_one(faults, i, CH_TEMPERATURE, dyn[src, TEMP_C, i], kp[k, K_SIGMA_T], faulted,
                   seed, uid, tick, t_s)
    i_m = measure_one(faults, i, CH_CURRENT, np.float64(out[src, CURRENT_A, i]), kp[k, K_SIGMA_I],
                   faulted, seed, uid, tick, t_s)
    q[Q_SOC_PCT] = 100.0 * min(1.0, max(0.0, soc_m))
    q[Q_SOH_PCT] = 100.0 * upar[SOH, i]
    q[Q_EFC] = dyn[src, EFC, i]
    q[Q_VOLTAGE_V] = v_m
    q[Q_CURRENT_A] = i_m
    q[Q_TEMP_C] = t_m
    q[Q_AMBIENT_C] = t_amb
    p_ac = np.float64(out[src, P_AC_W, i])
    q[Q_P_AC_W] = p_ac
    q[Q_P_DC_W] = out[src, P_DC_W, i]
    q[Q_P_HVAC_W] = out[src, P_HVAC_W, i]
    q[Q_P_REQUEST_W] = out[src, P_REQUEST_W, i]
    st = status[src, i]
    al = alarms[src, i]
    q[Q_STATE] = st
    q[Q_ALARMS] = al
    q[Q_E_AC_CHARGED_WH] = dyn[src, E_AC_CHARGED, i]
    q[Q_E_AC_DISCHARGED_WH] = dyn[src, E_AC_DISCHARGED, i]
    t = int(kp[k, K_OCV_TABLE])
    cap = np.float64(upar[CAP_AH, i])
    f_now = ocv_integral(ocv[t], ocv_int[t], soc)
    lo = np.float64(upar[SOC_RSV_MIN, i])
    hi = np.float64(upar[SOC_RSV_MAX, i])
    f_lo = ocv_integral(ocv[t], ocv_int[t], lo)
    q[Q_E_STORED_WH] = cap * ns * f_now
    q[Q_E_AVAILABLE_WH] = cap * ns * max(0.0, f_now - f_lo)
    q[Q_CAPACITY_AH] = cap
    q[Q_RATED_AH] = upar[CAP_NOM_AH, i]
    q[Q_RATED_WH] = np.float64(upar[CAP_NOM_AH, i]) * ns * ocv_integral(ocv[t], ocv_int[t], 1.0)
    q[Q_P_RATED_W] = kp[k, K_P_RATED]
    q[Q_I_MAX_CHARGE_A] = kp[k, K_I_MAX_CHG]
    q[Q_I_MAX_DISCHARGE_A] = kp[k, K_I_MAX_DIS]
    q[Q_V_MAX_V] = kp[k, K_V_MAX]
    q[Q_V_MIN_V] = kp[k, K_V_MIN]
    q[Q_V_NOM_V] = ns * ocv[t, ocv.shape[1] // 2]
    q[Q_CELL_V_AVG_V] = v_m / ns
    q[Q_SOC_MIN_PCT] = 100.0 * kp[k, K_SOC_MIN]
    q[Q_SOC_MAX_PCT] = 100.0 * kp[k, K_SOC_MAX]
    q[Q_SOC_RSV_MIN_PCT] = 100.0 * lo
    q[Q_SOC_RSV_MAX_PCT] = 100.0 * hi
    enabled = (f & FLAG_ENABLED) != 0
    q[Q_ENABLED] = 1.0 if enabled else 0.0
    q[Q_MANUAL] = 1.0 if (f & FLAG_MANUAL) else 0.0
    q[Q_SETPOINT_W] = upar[SETPOINT_W, i]
    q[Q_TRIPS] = upar[TRIPS, i]
    q[Q_HEARTBEAT] = tick % 65536
    q[Q_AC_VOLTAGE_V] = ac_v
    q[Q_AC_CURRENT_A] = abs(p_ac) / (1.7320508075688772 * ac_v)
    q[Q_GRID_HZ] = grid_hz
    q[Q_DOD_PCT] = 100.0 - q[Q_SOC_PCT]
    q[Q_ABS_P_AC_W] = abs(p_ac)
    q[Q_P_AC_W_PHASE] = p_ac / 3.0
    sunspec_enums(st, al, enabled, soc, lo, hi, p_ac, q)
