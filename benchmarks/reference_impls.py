"""The engine's per-step physics written twice more, for the speed comparison only.

``PythonFarm``: one Python object per unit with a ``step`` method (how simulators such as DER Twin
are built). ``NumpyFarm``: the same equations on whole numpy arrays, one operation per line.
Both take their parameters from an engine :class:`~bess_farm.engine.Farm` and cover what a tick
of a farm in manual power mode does: PCS loss, the current that delivers the power (step-averaged
voltage), current/voltage/SoC limits, the two RC pairs, SoC and OCV, energy accounts, the thermal
node with HVAC and row neighbours, protection limits and the unit state, and the farm sums.
Left out (not exercised by the benchmark run): farm dispatch, aging samples, runaway heat, sensor
faults. ``benchmarks/test_compare.py`` checks that all three give the same numbers.
"""

from __future__ import annotations

import math

import numpy as np

from bess_farm.engine import layout as L


class _Kind:
    """The per-kind parameters as attributes (from the engine's kpar row)."""

    def __init__(self, farm, k):
        kp = farm.kpar[k]
        self.ns = kp[L.K_N_SERIES]
        self.eta = kp[L.K_ETA_COULOMB]
        self.p_rated = kp[L.K_P_RATED]
        self.l0, self.l1, self.l2 = kp[L.K_PCS_L0], kp[L.K_PCS_L1], kp[L.K_PCS_L2]
        self.i_d, self.i_c = kp[L.K_I_MAX_DIS], kp[L.K_I_MAX_CHG]
        self.v_min, self.v_max = kp[L.K_V_MIN], kp[L.K_V_MAX]
        self.soc_min, self.soc_max, self.taper = kp[L.K_SOC_MIN], kp[L.K_SOC_MAX], kp[L.K_SOC_TAPER]
        self.t_der, self.t_hi, self.t_min_chg = kp[L.K_T_DERATE], kp[L.K_T_TRIP_HI], kp[L.K_T_MIN_CHARGE]
        self.tau1, self.tau2 = kp[L.K_TAU1_S], kp[L.K_TAU2_S]
        self.c_th, self.g_amb, self.g_nb = kp[L.K_C_TH], kp[L.K_G_AMB], kp[L.K_G_NB]
        self.gain, self.t_cool, self.t_heat = kp[L.K_HVAC_GAIN], kp[L.K_HVAC_T_COOL], kp[L.K_HVAC_T_HEAT]
        self.q_cool, self.q_heat = kp[L.K_HVAC_COOL_W], kp[L.K_HVAC_HEAT_W]
        self.cop_c, self.cop_h, self.base_w = kp[L.K_HVAC_COP_COOL], kp[L.K_HVAC_COP_HEAT], kp[L.K_HVAC_BASE_W]
        self.v_trip_hi, self.v_trip_lo = kp[L.K_V_TRIP_HI], kp[L.K_V_TRIP_LO]
        self.t_trip_lo, self.i_trip = kp[L.K_T_TRIP_LO], kp[L.K_I_TRIP]
        self.ocv = list(farm.ocv[int(kp[L.K_OCV_TABLE])])
        self.ocv_int = list(farm.ocv_int[int(kp[L.K_OCV_TABLE])])


def _interp(tab, soc):
    n = len(tab) - 1
    x = min(max(soc, 0.0), 1.0) * n
    j = min(int(x), n - 1)
    return tab[j] + (x - j) * (tab[j + 1] - tab[j])


def _integral(tab, tab_int, soc):
    n = len(tab) - 1
    x = min(max(soc, 0.0), 1.0) * n
    j = min(int(x), n - 1)
    f = x - j
    return tab_int[j] + 0.5 * (2.0 * tab[j] + f * (tab[j + 1] - tab[j])) * f / n


class PyUnit:
    """One battery unit as a Python object."""

    def __init__(self, kind: _Kind, soc, v1, v2, temp, cap, r0, r1, r2, setpoint, left, right):
        self.k = kind
        self.soc, self.v1, self.v2, self.temp = soc, v1, v2, temp
        self.cap, self.r0, self.r1, self.r2 = cap, r0, r1, r2
        self.setpoint = setpoint
        self.left, self.right = left, right
        self.e_ac_c = self.e_ac_d = self.e_loss = self.e_aux = 0.0
        self.voltage = self.current = self.p_ac = self.p_hvac = 0.0
        self.state = L.STANDBY
        self.latched = 0

    def headroom(self, ocv):
        k = self.k
        f_t = 1.0 if self.temp <= k.t_der else max(0.0, (k.t_hi - self.temp) / (k.t_hi - k.t_der))
        f_cold = min(1.0, max(0.0, (self.temp - k.t_min_chg) * 0.1))
        f_dis = min(1.0, max(0.0, (self.soc - k.soc_min) / k.taper))
        f_chg = min(1.0, max(0.0, (k.soc_max - self.soc) / k.taper))
        p_d = min(k.p_rated, k.i_d * (ocv - k.i_d * self.r0))
        p_c = min(k.p_rated, k.i_c * (ocv + k.i_c * self.r0))
        return max(0.0, p_d * f_t * f_dis), max(0.0, p_c * f_t * f_chg * f_cold)

    def step(self, dt, t_amb, t_left, t_right):
        k = self.k
        ocv0 = k.ns * _interp(k.ocv, self.soc)
        h_d, h_c = self.headroom(ocv0)
        req = min(self.setpoint, h_d) if self.setpoint >= 0 else max(self.setpoint, -h_c)
        if self.latched:
            req = 0.0
        om1, om2 = -math.expm1(-dt / k.tau1), -math.expm1(-dt / k.tau2)
        av1, av2 = om1 * k.tau1 / dt, om2 * k.tau2 / dt
        loss = 0.0
        cur = 0.0
        if req != 0.0:
            x = abs(req) / k.p_rated
            loss = k.p_rated * (k.l0 + x * (k.l1 + x * k.l2))
            p_dc = req + loss
            if req < 0 and p_dc > 0:
                p_dc = 0.0
            n = len(k.ocv) - 1
            j = min(max(int(self.soc * n), 0), n - 1)
            d_ocv = k.ns * (k.ocv[j + 1] - k.ocv[j]) * n * 0.5 * dt / 3600.0 / self.cap
            if p_dc < 0:
                d_ocv *= k.eta
            e_avg = ocv0 - self.v1 * av1 - self.v2 * av2
            r_avg = self.r0 + self.r1 * (1 - av1) + self.r2 * (1 - av2) + d_ocv
            disc = e_avg * e_avg - 4 * r_avg * p_dc
            cur = 2 * p_dc / (e_avg + math.sqrt(disc)) if disc >= 0 else e_avg / (2 * r_avg)
        e_src = ocv0 - self.v1 - self.v2
        a_s = self.cap * 3600.0 / dt
        i_hi = max(0.0, min(k.i_d, (e_src - k.v_min) / self.r0, (self.soc - k.soc_min) * a_s))
        i_lo = min(0.0, max(-k.i_c, (e_src - k.v_max) / self.r0, -(k.soc_max - self.soc) * a_s / k.eta))
        c2 = min(max(cur, i_lo), i_hi)
        clamped = c2 != cur
        cur = c2
        dq = cur * dt / 3600.0 / self.cap * (k.eta if cur < 0 else 1.0)
        soc1 = min(1.0, max(0.0, self.soc - dq))
        ocv1 = k.ns * _interp(k.ocv, soc1)
        ds = soc1 - self.soc
        ocv_avg = (k.ns * (_integral(k.ocv, k.ocv_int, soc1) - _integral(k.ocv, k.ocv_int, self.soc)) / ds
                   if ds != 0 else ocv0)
        vi1, vi2 = cur * self.r1, cur * self.r2
        v1n, v2n = vi1 + (self.v1 - vi1) * (1 - om1), vi2 + (self.v2 - vi2) * (1 - om2)
        vra = vi1 + (self.v1 - vi1) * av1 + vi2 + (self.v2 - vi2) * av2
        e_ohm = cur * dt * (cur * self.r0 + vra)
        e_coul = -(1 - k.eta) * cur * dt * ocv_avg if cur < 0 else 0.0
        e_dc = cur * dt * ocv_avg - e_ohm
        p_dc_act = e_dc / dt
        if clamped:
            x = abs(p_dc_act) / k.p_rated
            loss = k.p_rated * (k.l0 + x * (k.l1 + x * k.l2))
        if cur == 0.0:
            loss = 0.0
        p_ac = p_dc_act - loss if cur != 0.0 else 0.0
        # thermal
        n_nb = (t_left is not None) + (t_right is not None)
        t_nb = (t_left or 0.0) + (t_right or 0.0)
        q_sink, t_set, prop = 0.0, 0.0, False
        if self.temp > k.t_cool:
            if k.gain * (self.temp - k.t_cool) >= k.q_cool:
                q_sink = k.q_cool
            else:
                prop, t_set = True, k.t_cool
        elif self.temp < k.t_heat:
            if k.gain * (k.t_heat - self.temp) >= k.q_heat:
                q_sink = -k.q_heat
            else:
                prop, t_set = True, k.t_heat
        g = k.g_amb + n_nb * k.g_nb + (k.gain if prop else 0.0)
        om = -math.expm1(-dt * g / k.c_th)
        av = om * k.c_th / g / dt
        base = (e_ohm + e_coul) / dt + k.g_amb * t_amb + k.g_nb * t_nb
        t_eq = (base + (k.gain * t_set if prop else -q_sink)) / g
        d = self.temp - t_eq
        temp1 = t_eq + d * (1 - om)
        q_hvac = k.gain * (t_eq + d * av - t_set) if prop else q_sink
        p_hvac = (q_hvac / k.cop_c if q_hvac >= 0 else -q_hvac / k.cop_h) + k.base_w
        # protection and state
        v_term = ocv1 - v1n - v2n - cur * self.r0
        if (v_term > k.v_trip_hi or v_term < k.v_trip_lo or temp1 > k.t_hi or temp1 < k.t_trip_lo
                or abs(cur) > k.i_trip):
            self.latched = 1
        self.state = (L.FAULT if self.latched else L.DISCHARGING if p_ac > 0 else L.CHARGING if p_ac < 0
                      else L.IDLE if req != 0 else L.STANDBY)
        self.soc, self.v1, self.v2, self.next_temp = soc1, v1n, v2n, temp1
        self.e_ac_c += max(0.0, -p_ac) * dt / 3600.0
        self.e_ac_d += max(0.0, p_ac) * dt / 3600.0
        self.e_loss += (loss * dt + e_ohm + e_coul) / 3600.0
        self.e_aux += p_hvac * dt / 3600.0
        self.voltage, self.current, self.p_ac, self.p_hvac = v_term, cur, p_ac, p_hvac


def _unit_state(farm):
    s = farm.snapshot()
    return s, farm.upar


class PythonFarm:
    """A farm as a list of :class:`PyUnit`, stepped unit by unit."""

    def __init__(self, farm):
        s, u = _unit_state(farm)
        kinds = [_Kind(farm, k) for k in range(farm.kpar.shape[0])]
        fl = farm.flags
        self.units = [
            PyUnit(kinds[farm.kind[i]], float(s["soc"][i]), float(s["v_rc1_v"][i]), float(s["v_rc2_v"][i]),
                   float(s["temp_c"][i]), float(u[L.CAP_AH, i]), float(u[L.R0_OHM, i]), float(u[L.R1_OHM, i]),
                   float(u[L.R2_OHM, i]), float(u[L.SETPOINT_W, i]),
                   bool(fl[i] & L.FLAG_NEIGHBOUR_LEFT), bool(fl[i] & L.FLAG_NEIGHBOUR_RIGHT))
            for i in range(farm.n_units)]
        self.t_amb = farm.ambient_at(0.0)

    def step(self, dt):
        units = self.units
        for i, u in enumerate(units):
            u.step(dt, self.t_amb, units[i - 1].temp if u.left else None,
                   units[i + 1].temp if u.right else None)
        p = 0.0
        soc = 0.0
        for u in units:
            u.temp = u.next_temp
            p += u.p_ac
            soc += u.soc
        return p, soc / len(units)


class NumpyFarm:
    """The same physics on whole numpy arrays (every operation a temporary array)."""

    def __init__(self, farm):
        assert farm.kpar.shape[0] == 1, "the numpy comparison covers single-kind farms"
        s, u = _unit_state(farm)
        self.k = _Kind(farm, 0)
        self.tab = np.asarray(self.k.ocv)
        self.tab_int = np.asarray(self.k.ocv_int)
        self.soc = s["soc"].astype(float)
        self.v1 = s["v_rc1_v"].astype(float)
        self.v2 = s["v_rc2_v"].astype(float)
        self.temp = s["temp_c"].astype(float)
        self.cap = u[L.CAP_AH].astype(float)
        self.r0, self.r1, self.r2 = (u[r].astype(float) for r in (L.R0_OHM, L.R1_OHM, L.R2_OHM))
        self.setpoint = u[L.SETPOINT_W].astype(float)
        self.left = (farm.flags & L.FLAG_NEIGHBOUR_LEFT) != 0
        self.right = (farm.flags & L.FLAG_NEIGHBOUR_RIGHT) != 0
        self.n_nb = self.left.astype(int) + self.right.astype(int)
        self.latched = np.zeros(farm.n_units, dtype=bool)
        self.e_ac_c = np.zeros(farm.n_units)
        self.e_ac_d = np.zeros(farm.n_units)
        self.e_loss = np.zeros(farm.n_units)
        self.e_aux = np.zeros(farm.n_units)
        self.t_amb = farm.ambient_at(0.0)

    def _interp(self, soc):
        n = self.tab.size - 1
        x = np.clip(soc, 0.0, 1.0) * n
        j = np.minimum(x.astype(np.int64), n - 1)
        return self.tab[j] + (x - j) * (self.tab[j + 1] - self.tab[j]), j, x

    def _integral(self, soc):
        v, j, x = self._interp(soc)
        n = self.tab.size - 1
        f = x - j
        return self.tab_int[j] + 0.5 * (2.0 * self.tab[j] + f * (self.tab[j + 1] - self.tab[j])) * f / n

    def step(self, dt):
        k = self.k
        ocv0c, j0, _ = self._interp(self.soc)
        ocv0 = k.ns * ocv0c
        f_t = np.where(self.temp <= k.t_der, 1.0, np.maximum(0.0, (k.t_hi - self.temp) / (k.t_hi - k.t_der)))
        f_cold = np.clip((self.temp - k.t_min_chg) * 0.1, 0.0, 1.0)
        f_dis = np.clip((self.soc - k.soc_min) / k.taper, 0.0, 1.0)
        f_chg = np.clip((k.soc_max - self.soc) / k.taper, 0.0, 1.0)
        h_d = np.maximum(0.0, np.minimum(k.p_rated, k.i_d * (ocv0 - k.i_d * self.r0)) * f_t * f_dis)
        h_c = np.maximum(0.0, np.minimum(k.p_rated, k.i_c * (ocv0 + k.i_c * self.r0)) * f_t * f_chg * f_cold)
        req = np.where(self.setpoint >= 0, np.minimum(self.setpoint, h_d), np.maximum(self.setpoint, -h_c))
        req = np.where(self.latched, 0.0, req)
        om1, om2 = -math.expm1(-dt / k.tau1), -math.expm1(-dt / k.tau2)
        av1, av2 = om1 * k.tau1 / dt, om2 * k.tau2 / dt
        x = np.abs(req) / k.p_rated
        loss = np.where(req != 0, k.p_rated * (k.l0 + x * (k.l1 + x * k.l2)), 0.0)
        p_dc = req + loss
        p_dc = np.where((req < 0) & (p_dc > 0), 0.0, p_dc)
        n = self.tab.size - 1
        js = np.clip((self.soc * n).astype(np.int64), 0, n - 1)
        d_ocv = k.ns * (self.tab[js + 1] - self.tab[js]) * n * 0.5 * dt / 3600.0 / self.cap
        d_ocv = np.where(p_dc < 0, d_ocv * k.eta, d_ocv)
        e_avg = ocv0 - self.v1 * av1 - self.v2 * av2
        r_avg = self.r0 + self.r1 * (1 - av1) + self.r2 * (1 - av2) + d_ocv
        disc = e_avg * e_avg - 4 * r_avg * p_dc
        cur = np.where(disc >= 0, 2 * p_dc / (e_avg + np.sqrt(np.maximum(disc, 0.0))), e_avg / (2 * r_avg))
        cur = np.where(req != 0, cur, 0.0)
        e_src = ocv0 - self.v1 - self.v2
        a_s = self.cap * 3600.0 / dt
        i_hi = np.maximum(0.0, np.minimum(np.minimum(k.i_d, (e_src - k.v_min) / self.r0),
                                          (self.soc - k.soc_min) * a_s))
        i_lo = np.minimum(0.0, np.maximum(np.maximum(-k.i_c, (e_src - k.v_max) / self.r0),
                                          -(k.soc_max - self.soc) * a_s / k.eta))
        c2 = np.minimum(np.maximum(cur, i_lo), i_hi)
        clamped = c2 != cur
        cur = c2
        dq = cur * dt / 3600.0 / self.cap * np.where(cur < 0, k.eta, 1.0)
        soc1 = np.clip(self.soc - dq, 0.0, 1.0)
        ocv1 = k.ns * self._interp(soc1)[0]
        ds = soc1 - self.soc
        with np.errstate(divide="ignore", invalid="ignore"):
            ocv_avg = np.where(ds != 0, k.ns * (self._integral(soc1) - self._integral(self.soc)) / ds, ocv0)
        vi1, vi2 = cur * self.r1, cur * self.r2
        v1n = vi1 + (self.v1 - vi1) * (1 - om1)
        v2n = vi2 + (self.v2 - vi2) * (1 - om2)
        vra = vi1 + (self.v1 - vi1) * av1 + (vi2 + (self.v2 - vi2) * av2)
        e_ohm = cur * dt * (cur * self.r0 + vra)
        e_coul = np.where(cur < 0, -(1 - k.eta) * cur * dt * ocv_avg, 0.0)
        e_dc = cur * dt * ocv_avg - e_ohm
        p_dc_act = e_dc / dt
        xa = np.abs(p_dc_act) / k.p_rated
        loss = np.where(clamped, k.p_rated * (k.l0 + xa * (k.l1 + xa * k.l2)), loss)
        loss = np.where(cur == 0, 0.0, loss)
        p_ac = np.where(cur != 0, p_dc_act - loss, 0.0)
        t_nb = np.zeros_like(self.temp)
        t_nb[1:] += np.where(self.left[1:], self.temp[:-1], 0.0)
        t_nb[:-1] += np.where(self.right[:-1], self.temp[1:], 0.0)
        cooling = self.temp > k.t_cool
        heating = (~cooling) & (self.temp < k.t_heat)
        cool_sat = cooling & (k.gain * (self.temp - k.t_cool) >= k.q_cool)
        heat_sat = heating & (k.gain * (k.t_heat - self.temp) >= k.q_heat)
        prop = (cooling & ~cool_sat) | (heating & ~heat_sat)
        t_set = np.where(cooling, k.t_cool, k.t_heat)
        q_sink = np.where(cool_sat, k.q_cool, np.where(heat_sat, -k.q_heat, 0.0))
        g = k.g_amb + self.n_nb * k.g_nb + np.where(prop, k.gain, 0.0)
        om = -np.expm1(-dt * g / k.c_th)
        av = om * k.c_th / g / dt
        base = (e_ohm + e_coul) / dt + k.g_amb * self.t_amb + k.g_nb * t_nb
        t_eq = (base + np.where(prop, k.gain * t_set, -q_sink)) / g
        d = self.temp - t_eq
        temp1 = t_eq + d * (1 - om)
        q_hvac = np.where(prop, k.gain * (t_eq + d * av - t_set), q_sink)
        p_hvac = np.where(q_hvac >= 0, q_hvac / k.cop_c, -q_hvac / k.cop_h) + k.base_w
        v_term = ocv1 - v1n - v2n - cur * self.r0
        self.latched |= ((v_term > k.v_trip_hi) | (v_term < k.v_trip_lo) | (temp1 > k.t_hi)
                         | (temp1 < k.t_trip_lo) | (np.abs(cur) > k.i_trip))
        self.state = np.where(self.latched, L.FAULT, np.where(p_ac > 0, L.DISCHARGING, np.where(
            p_ac < 0, L.CHARGING, np.where(req != 0, L.IDLE, L.STANDBY))))
        self.soc, self.v1, self.v2, self.temp = soc1, v1n, v2n, temp1
        self.e_ac_c += np.maximum(0.0, -p_ac) * dt / 3600.0
        self.e_ac_d += np.maximum(0.0, p_ac) * dt / 3600.0
        self.e_loss += (loss * dt + e_ohm + e_coul) / 3600.0
        self.e_aux += p_hvac * dt / 3600.0
        self.voltage, self.current, self.p_ac, self.p_hvac = v_term, cur, p_ac, p_hvac
        return float(p_ac.sum()), float(soc1.mean())
