"""The farm as Modbus devices: addressing, reads from the published tick, validated writes.

Addressing (docs/modbus.md): unit ``k`` is device id ``k % 247 + 1`` on port
``base_port + k // 247`` (``units_per_port`` configurable); the plant answers on every port at
``plant_device_id`` (default 255, the Modbus/TCP "the endpoint itself" id). Every device presents
the SunSpec map of its class (:mod:`.sunspec`), or a vendor map (:mod:`.vendor`) for units a
config assigns one.

Control (SunSpec 704 and 802): ``WSetEna``/``WSetMod``/``WSet``/``WSetPct`` drive a unit's own
setpoint (the unit leaves the farm dispatch while enabled) or, on the plant, the farm setpoint;
``WSetRvrtTms`` is the control heartbeat: a device that hears no control write (704 ``WSet*`` or
802 ``CtrlHb``) for that long reverts to ``WSetRvrt``/``WSetPctRvrt`` with ``WSetEnaRvrt``, in
simulated time. The revert time is ``modbus.revert_timeout_s`` until SCADA writes its own.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bess_farm import __version__
from bess_farm.engine.layout import (AMBIENT_OFFSET_C, CAP_AH, CAP_NOM_AH, CURRENT_A, FLAG_COMM_FAULT,
                                     K_I_MAX_CHG, K_I_MAX_DIS, K_I_TRIP, K_N_SERIES, K_OCV_TABLE,
                                     K_P_RATED, K_SOC_MAX, K_SOC_MIN, K_V_MAX, SETPOINT_W, SOH,
                                     SOC_RSV_MAX, SOC_RSV_MIN, TRIPS, VOLTAGE_V)
from ..published import Published
from .quantities import (N_Q, Q_SOC_RSV_MAX_PCT, Q_SOC_RSV_MIN_PCT, QUANTITY_INDEX, sunspec_enums,
                         unit_quantities)
from .registers import GATEWAY_NO_RESPONSE, ILLEGAL_VALUE, ModbusError, RegisterMap
from . import sunspec

log = logging.getLogger("bess.modbus")

MAX_UNITS_PER_PORT = 247
#: per-unit parameter rows that requests read (unit_quantities and the plant's sums)
PUBLISHED_ROWS = (CAP_AH, CAP_NOM_AH, SOH, SETPOINT_W, TRIPS, SOC_RSV_MIN, SOC_RSV_MAX,
                  AMBIENT_OFFSET_C)
_Q = QUANTITY_INDEX
_CTL = ("ctl_wset_ena", "ctl_wset_mod", "ctl_wset_w", "ctl_wset_rvrt_w", "ctl_wset_pct",
        "ctl_wset_pct_rvrt", "ctl_wset_ena_rvrt", "ctl_rvrt_tms", "ctl_rvrt_rem", "ctl_hb")


@dataclass
class ModbusSettings:
    host: str = "0.0.0.0"
    port: int = 5020
    units_per_port: int = MAX_UNITS_PER_PORT
    max_ports: int = 64
    plant_device_id: int = 255
    revert_timeout_s: float = 60.0
    ac_voltage_v: float = 690.0
    grid_hz: float = 50.0
    max_connections: int = 2000


class Controls:
    """SunSpec control registers of every device (units 0..n-1, the plant at n)."""

    def __init__(self, n: int, revert_s: float):
        m = n + 1
        self.wset_ena = np.zeros(m, dtype=np.uint8)
        self.wset_mod = np.ones(m, dtype=np.uint8)          # WATTS
        self.wset_w = np.zeros(m)
        self.wset_rvrt_w = np.zeros(m)
        self.wset_pct = np.zeros(m)
        self.wset_pct_rvrt = np.zeros(m)
        self.wset_ena_rvrt = np.ones(m, dtype=np.uint8)     # revert keeps control, at 0 W
        self.rvrt_tms = np.full(m, float(revert_s))
        self.deadline = np.full(m, np.inf)
        self.hb = np.zeros(m, dtype=np.uint16)
        self._heap: list[tuple[float, int]] = []

    def fill(self, d: int, q: np.ndarray, now: float) -> None:
        q[_Q["ctl_wset_ena"]] = self.wset_ena[d]
        q[_Q["ctl_wset_mod"]] = self.wset_mod[d]
        q[_Q["ctl_wset_w"]] = self.wset_w[d]
        q[_Q["ctl_wset_rvrt_w"]] = self.wset_rvrt_w[d]
        q[_Q["ctl_wset_pct"]] = self.wset_pct[d]
        q[_Q["ctl_wset_pct_rvrt"]] = self.wset_pct_rvrt[d]
        q[_Q["ctl_wset_ena_rvrt"]] = self.wset_ena_rvrt[d]
        q[_Q["ctl_rvrt_tms"]] = self.rvrt_tms[d]
        dl = self.deadline[d]
        q[_Q["ctl_rvrt_rem"]] = math.ceil(max(0.0, dl - now)) if math.isfinite(dl) else 0.0
        q[_Q["ctl_hb"]] = self.hb[d]

    _SAVED = ("wset_ena", "wset_mod", "wset_w", "wset_rvrt_w", "wset_pct", "wset_pct_rvrt",
              "wset_ena_rvrt", "rvrt_tms", "deadline", "hb")

    def export(self) -> dict[str, np.ndarray]:
        """Copies of the control registers, for a checkpoint."""
        return {f"modbus_{k}": np.array(getattr(self, k)) for k in self._SAVED}

    def restore(self, arrays: dict[str, np.ndarray], now: float) -> None:
        """Take the control registers back from a checkpoint (ignored if its size differs)."""
        for k in self._SAVED:
            a = arrays.get(f"modbus_{k}")
            if a is not None and a.shape == getattr(self, k).shape:
                getattr(self, k)[:] = a
        self._heap = [(float(t), int(d)) for d, t in enumerate(self.deadline) if np.isfinite(t)]
        heapq.heapify(self._heap)

    def arm(self, d: int, now: float) -> None:
        """A control write was heard: (re)start the device's revert timer."""
        if self.wset_ena[d] and self.rvrt_tms[d] > 0:
            self.deadline[d] = now + self.rvrt_tms[d]
            heapq.heappush(self._heap, (self.deadline[d], d))
        else:
            self.deadline[d] = np.inf

    def due(self, now: float) -> list[int]:
        """Devices whose revert timer ran out by ``now`` (each once)."""
        out = []
        while self._heap and self._heap[0][0] <= now:
            t, d = heapq.heappop(self._heap)
            if self.deadline[d] == t:          # not renewed since
                self.deadline[d] = np.inf
                out.append(d)
        return out


class FarmDevices:
    """Everything Modbus sees of one farm. Methods run on the event loop thread only."""

    def __init__(self, farm, settings: ModbusSettings, *, local_profile=None,
                 vendor_maps: dict[int, RegisterMap] | None = None,
                 on_event: Callable[[str, dict], None] | None = None):
        self.farm = farm
        self.s = settings
        n = farm.n_units
        self.n = n
        self.controls = Controls(n, settings.revert_timeout_s)
        # The kernel changes some per-unit parameters in place during a step (SoH and capacity
        # at aging samples, trip counts) and commands change others at the tick boundary, on
        # the engine's thread. Requests read a published copy of the rows they use instead:
        # the engine thread fills the spare copy after a step that changed them
        # (prepare_refresh) and the loop thread swaps it in between requests (publish_refresh),
        # so a request never mixes two ticks and the loop never copies.
        self._pv = np.array(farm.upar)
        self._pv_next = np.array(farm.upar)
        self._flags = np.array(farm.flags)
        self._flags_next = np.array(farm.flags)
        self._next_ready = False
        self.pub: Published | None = None          # set by the runtime; None: read the farm live
        self.comm = None                            # chaos CommFaults (set by the runtime)
        self.delay_s = 0.0                          # set by read/write: answer this much later
        self.local_profile = local_profile          # farm dispatch when the plant is not in control
        self.on_event = on_event or (lambda kind, fields: None)
        ports_needed = max(1, -(-n // settings.units_per_port))
        self.n_ports = min(ports_needed, settings.max_ports)
        self.units_served = min(n, self.n_ports * settings.units_per_port)
        self._q = np.zeros(N_Q)
        self._pq = np.zeros(N_Q)
        self._plant_gen = -1
        self._vendor = vendor_maps or {}
        self._vendor_maps_by_unit: dict[int, RegisterMap] = self._vendor
        self._kind_maps = [self._unit_map(j) for j in range(len(farm.kinds))]
        self.plant_map = self._plant_map()
        self._sn_prefix = farm.config.name[:23]

    # ---------------------------------------------------------------- maps
    def _strings(self, vendor: str, model: str) -> dict[str, str]:
        return {"Mn": vendor, "Md": model, "Opt": "bess-farm simulator", "Vr": __version__}

    def _unit_ratings(self, j: int) -> dict[str, float]:
        kp = self.farm.kpar[j]
        p = self.farm.kinds[j]
        rated_ah = p["cell_capacity_ah"] * p["n_parallel"] * 1.15
        ocv = self.farm.ocv[int(kp[K_OCV_TABLE])]
        ac_a = kp[K_P_RATED] / (math.sqrt(3) * self.s.ac_voltage_v)
        return {"p_rated_w": kp[K_P_RATED], "rated_ah": rated_ah,
                "rated_wh": rated_ah * kp[K_N_SERIES] * float(ocv.max()),
                "v_max_v": kp[K_V_MAX] * 1.2,
                "i_max_a": max(kp[K_I_MAX_DIS], kp[K_I_MAX_CHG], kp[K_I_TRIP]) * 1.5,
                "ac_current_a": ac_a * 1.2, "ac_voltage_v": self.s.ac_voltage_v * 1.2}

    def _unit_map(self, j: int) -> RegisterMap:
        kp = self.farm.kpar[j]
        p = self.farm.kinds[j]
        rated = kp[K_P_RATED]
        lim = _write_limits(rated, 100 * kp[K_SOC_MIN], 100 * kp[K_SOC_MAX])
        return sunspec.build_map(f"unit kind {j}", self._unit_ratings(j),
                                 self._strings(p["vendor"], p["model"]), lim)

    def _plant_map(self) -> RegisterMap:
        f = self.farm
        counts = np.bincount(f.kind, minlength=len(f.kinds)).astype(float)
        tot: dict[str, float] = {}
        for j in range(len(f.kinds)):
            for key, v in self._unit_ratings(j).items():
                if key == "v_max_v" or key == "ac_voltage_v":
                    tot[key] = max(tot.get(key, 0.0), v)
                else:
                    tot[key] = tot.get(key, 0.0) + v * counts[j]
        rated = float((f.kpar[f.kind, K_P_RATED]).sum())
        soc_lo = float(f.kpar[:, K_SOC_MIN].max()) * 100
        soc_hi = float(f.kpar[:, K_SOC_MAX].min()) * 100
        return sunspec.build_map("plant", tot, {"Mn": "bess-farm", "Md": f.config.name,
                                                "Opt": "plant controller", "Vr": __version__},
                                 _write_limits(rated, soc_lo, soc_hi))

    # ---------------------------------------------------------------- addressing
    def device(self, port_index: int, dev_id: int) -> int | None:
        """Device index (unit 0..n-1, the plant n) at a port and device id, or None."""
        if dev_id == self.s.plant_device_id:
            return self.n
        if not 1 <= dev_id <= self.s.units_per_port:
            return None
        k = port_index * self.s.units_per_port + dev_id - 1
        return k if k < self.units_served else None

    def address_of(self, unit: int) -> tuple[int, int]:
        """(port, device id) of a unit."""
        return (self.s.port + unit // self.s.units_per_port, unit % self.s.units_per_port + 1)

    def map_of(self, d: int) -> RegisterMap:
        if d == self.n:
            return self.plant_map
        m = self._vendor_maps_by_unit.get(d)
        return m if m is not None else self._kind_maps[self.farm.kind[d]]

    # ---------------------------------------------------------------- reads
    def tick(self) -> Published:
        """The published tick (the farm's own when no runtime publishes, e.g. in tests)."""
        return self.pub if self.pub is not None else Published.of(self.farm)

    @property
    def upar(self) -> np.ndarray:
        """Published per-unit parameters (the rows in PUBLISHED_ROWS are current)."""
        return self._pv

    @property
    def flags(self) -> np.ndarray:
        return self._flags

    def quantities(self, d: int) -> np.ndarray:
        f = self.farm
        t = self.tick()
        if d == self.n:
            q = self._plant_quantities(t)
        else:
            q = self._q
            amb = f.ambient_at(t.time_s) + float(self._pv[AMBIENT_OFFSET_C, d])
            unit_quantities(d, t.src, t.tick, t.time_s, f.seed, int(f.unit_id[d]), amb,
                            self.s.ac_voltage_v, self.s.grid_hz, f.dyn, f.out, f.status,
                            f.alarms, self._pv, self._flags, f.kind, f.kpar, f.ocv,
                            f.ocv_int, f.sensor_faults, q)
        self.controls.fill(d, q, t.time_s)
        return q

    def prepare_refresh(self) -> None:
        """On the engine thread, after a step: copy the rows readers use into the spare copy."""
        for r in PUBLISHED_ROWS:
            np.copyto(self._pv_next[r], self.farm.upar[r])
        np.copyto(self._flags_next, self.farm.flags)
        self._next_ready = True

    def publish_refresh(self, pub: Published | None = None) -> None:
        """On the loop thread, between requests: publish the tick and, when prepared, the
        copy of the per-unit parameters."""
        if pub is not None:
            self.pub = pub
        if self._next_ready:
            self._pv, self._pv_next = self._pv_next, self._pv
            self._flags, self._flags_next = self._flags_next, self._flags
            self._next_ready = False
            self._plant_gen = -1

    def refresh(self) -> None:
        """Republish at once (when no step runs, e.g. at start)."""
        self.prepare_refresh()
        self.publish_refresh()

    def read(self, port_index: int, dev_id: int, address: int, count: int) -> np.ndarray:
        d = self.device(port_index, dev_id)
        if d is None:
            raise ModbusError(GATEWAY_NO_RESPONSE, f"no device {dev_id} on this port")
        if d < self.n and not self._reachable(d):
            return None                                  # the unit's comms are down: no answer
        rm = self.map_of(d)
        regs = rm.read(self.quantities(d), address, count)
        if rm.sn_offset is not None:
            off, size = rm.sn_offset
            a = address - rm.base
            if a < off + size and off < a + count:
                sn = sunspec.sn_words(self.serial(d), size)
                for j in range(max(a, off), min(a + count, off + size)):
                    regs[j - a] = sn[j - off]
        return regs

    def _reachable(self, d: int) -> bool:
        """Whether unit ``d`` answers; sets :attr:`delay_s` for a late answer and raises
        exception 0x0B for a gateway that cannot reach it (chaos communication faults)."""
        self.delay_s = 0.0
        if self.comm is not None and len(self.comm):
            mode, delay = self.comm.comm_behaviour(d)
            if mode == "silent":
                return False
            if mode == "exception_0b":
                raise ModbusError(GATEWAY_NO_RESPONSE, f"unit {int(self.farm.unit_id[d])}: no "
                                                       f"response from the device (communication fault)")
            if mode == "latency" and delay is not None:
                self.delay_s = float(delay())
            return True
        return not (self._flags[d] & FLAG_COMM_FAULT)

    def serial(self, d: int) -> str:
        if d == self.n:
            return f"{self._sn_prefix}-PLANT"
        return f"{self._sn_prefix}-{int(self.farm.unit_id[d]):07d}"

    def _plant_quantities(self, t: Published) -> np.ndarray:
        f = self.farm
        q = self._pq
        if self._plant_gen == t.generation:
            return q
        a = t.agg
        src = t.src
        q[:] = np.nan
        kp = f.kpar[f.kind]
        q[_Q["soc_pct"]] = 100 * a.soc_mean
        q[_Q["soh_pct"]] = 100 * a.soh_mean
        q[_Q["efc"]] = a.efc_mean
        q[_Q["voltage_v"]] = float(f.out[src, VOLTAGE_V].mean())
        q[_Q["current_a"]] = float(f.out[src, CURRENT_A].sum(dtype=np.float64))
        q[_Q["temp_c"]] = a.temp_max_c
        q[_Q["ambient_c"]] = f.ambient_at(t.time_s)
        q[_Q["p_ac_w"]] = a.p_ac_w
        q[_Q["p_dc_w"]] = a.p_dc_w
        q[_Q["p_hvac_w"]] = a.p_hvac_w
        q[_Q["p_request_w"]] = a.p_request_w
        alarms = int(np.bitwise_or.reduce(f.alarms[src])) if f.n_units else 0
        q[_Q["alarms"]] = alarms
        q[_Q["e_ac_charged_wh"]] = a.e_ac_charged_wh
        q[_Q["e_ac_discharged_wh"]] = a.e_ac_discharged_wh
        q[_Q["e_stored_wh"]] = a.e_stored_wh
        q[_Q["e_available_wh"]] = a.e_available_wh
        q[_Q["capacity_ah"]] = float(self._pv[CAP_AH].sum(dtype=np.float64))
        q[_Q["rated_ah"]] = float(self._pv[CAP_NOM_AH].sum(dtype=np.float64))
        q[_Q["rated_wh"]] = a.e_capacity_wh / max(1e-9, a.soh_mean) if a.soh_mean > 0 else np.nan
        q[_Q["p_rated_w"]] = float(kp[:, K_P_RATED].sum())
        q[_Q["i_max_charge_a"]] = float(kp[:, K_I_MAX_CHG].sum())
        q[_Q["i_max_discharge_a"]] = float(kp[:, K_I_MAX_DIS].sum())
        q[_Q["v_max_v"]] = float(kp[:, K_V_MAX].max())
        q[_Q["soc_min_pct"]] = 100 * float(kp[:, K_SOC_MIN].max())
        q[_Q["soc_max_pct"]] = 100 * float(kp[:, K_SOC_MAX].min())
        q[Q_SOC_RSV_MIN_PCT] = 100 * float(self._pv[SOC_RSV_MIN].max())
        q[Q_SOC_RSV_MAX_PCT] = 100 * float(self._pv[SOC_RSV_MAX].min())
        st = a.units_per_state
        enabled = st["offline"] < f.n_units
        if st["offline"] == f.n_units:
            state = 0
        elif a.p_ac_w > 1e3:
            state = 4
        elif a.p_ac_w < -1e3:
            state = 3
        elif st["fault"] + st["thermal_runaway"] == f.n_units:
            state = 5
        else:
            state = 1
        q[_Q["state"]] = state
        q[_Q["enabled"]] = 1.0 if enabled else 0.0
        q[_Q["manual"]] = 0.0
        q[_Q["setpoint_w"]] = f.farm_power_setpoint_w
        q[_Q["heartbeat"]] = t.tick % 65536
        q[_Q["ac_voltage_v"]] = self.s.ac_voltage_v
        q[_Q["ac_current_a"]] = abs(a.p_ac_w) / (math.sqrt(3) * self.s.ac_voltage_v)
        q[_Q["grid_hz"]] = self.s.grid_hz
        q[_Q["dod_pct"]] = 100 - q[_Q["soc_pct"]]
        q[_Q["abs_p_ac_w"]] = abs(a.p_ac_w)
        q[_Q["p_ac_w_phase"]] = a.p_ac_w / 3
        # plant-level enums from the plant state; event bits are the OR of every unit's
        sunspec_enums(state, alarms, enabled, a.soc_mean, float(kp[:, K_SOC_MIN].max()),
                      float(kp[:, K_SOC_MAX].min()), a.p_ac_w, q)
        self._plant_gen = t.generation
        return q

    # ---------------------------------------------------------------- writes
    def write(self, port_index: int, dev_id: int, address: int, words: list[int]) -> bool:
        """Validate and apply a write; raises ModbusError; False when the device is silent."""
        d = self.device(port_index, dev_id)
        if d is None:
            raise ModbusError(GATEWAY_NO_RESPONSE, f"no device {dev_id} on this port")
        if d < self.n and not self._reachable(d):
            return False
        rm = self.map_of(d)
        changes = {p.target: v for p, v in rm.decode_write(address, words)}
        self._apply(d, changes)
        return True

    # SunSpec points with the same meaning as a vendor-map write target
    _ALIASES = {"802.SoCRsvMin": "soc_rsv_min_pct", "802.SocRsvMax": "soc_rsv_max_pct",
                "802.CtrlHb": "heartbeat", "802.AlmRst": "alarm_reset"}
    _CONTROL = {"704.WSetEna": "wset_ena", "704.WSetMod": "wset_mod", "704.WSet": "wset_w",
                "704.WSetRvrt": "wset_rvrt_w", "704.WSetPct": "wset_pct",
                "704.WSetPctRvrt": "wset_pct_rvrt", "704.WSetEnaRvrt": "wset_ena_rvrt",
                "704.WSetRvrtTms": "rvrt_tms", "control_enable": "wset_ena"}

    def _apply(self, d: int, changes: dict[str, float]) -> None:
        """Apply validated point changes. The one check that spans points (the reserve window)
        runs first, so a refused write changes nothing."""
        f = self.farm
        ch = {self._ALIASES.get(k, k): v for k, v in changes.items()}
        units = slice(None) if d == self.n else d
        lo = ch.get("soc_rsv_min_pct")
        hi = ch.get("soc_rsv_max_pct")
        if lo is not None or hi is not None:
            try:       # validates in full before anything is queued
                f.set_soc_reserve(units, None if lo is None else lo / 100.0,
                                  None if hi is None else hi / 100.0)
            except ValueError as exc:
                raise ModbusError(ILLEGAL_VALUE, str(exc)) from None
        c = self.controls
        heard = drive = False
        for key, v in ch.items():
            if key == "heartbeat":
                c.hb[d] = int(v) & 0xFFFF
                heard = True
            elif key == "alarm_reset":
                if v >= 1:
                    f.reset(units)
                    self.on_event("alarm_reset", {"device": self.name(d)})
            elif key == "802.SetOp":
                f.set_enabled(units, v == 1)
            elif key == "802.SetInvState":
                f.set_enabled(units, v != 1)
            elif key == "enable":
                f.set_enabled(units, v >= 1)
            elif key == "setpoint_w":
                c.wset_w[d], c.wset_mod[d], c.wset_ena[d] = v, 1, 1
                heard = drive = True
            elif key in self._CONTROL:
                getattr(c, self._CONTROL[key])[d] = v
                heard = True
                drive |= key != "704.WSetRvrtTms"
        if drive:
            self._drive(d)
        if heard:
            c.arm(d, self.tick().time_s)

    def _drive(self, d: int) -> None:
        """Make the engine follow device ``d``'s 704 control state."""
        f = self.farm
        c = self.controls
        if d == self.n:
            rated = float(f.kpar[f.kind, K_P_RATED].sum())
            if c.wset_ena[d]:
                w = c.wset_w[d] if c.wset_mod[d] == 1 else c.wset_pct[d] / 100.0 * rated
                f.set_farm_power(w)
            elif self.local_profile is not None:
                f.set_farm_profile(self.local_profile)
            else:
                f.set_farm_power(0.0)
            return
        if c.wset_ena[d]:
            rated = float(f.kpar[f.kind[d], K_P_RATED])
            w = c.wset_w[d] if c.wset_mod[d] == 1 else c.wset_pct[d] / 100.0 * rated
            f.set_unit_power(d, w)
        else:
            f.set_mode(d, "auto")

    def revert_due(self) -> list[int]:
        """Revert the devices whose control heartbeat ran out (call after each tick)."""
        c = self.controls
        due = c.due(self.tick().time_s)
        for d in due:
            c.wset_w[d] = c.wset_rvrt_w[d]
            c.wset_pct[d] = c.wset_pct_rvrt[d]
            c.wset_ena[d] = c.wset_ena_rvrt[d]
            self._drive(d)
            self.on_event("control_revert", {"device": self.name(d), "setpoint_w": float(c.wset_w[d]),
                                             "enabled": bool(c.wset_ena[d])})
        return due

    def name(self, d: int) -> str:
        return "plant" if d == self.n else f"unit {int(self.farm.unit_id[d])}"


def _write_limits(rated_w: float, soc_lo_pct: float, soc_hi_pct: float) -> dict[str, tuple[float, float]]:
    return {
        "802.SocRsvMax": (soc_lo_pct, soc_hi_pct), "802.SoCRsvMin": (soc_lo_pct, soc_hi_pct),
        "802.CtrlHb": (0, 65535), "802.AlmRst": (0, 1), "802.SetOp": (1, 2),
        "802.SetInvState": (1, 3),
        "704.WSetEna": (0, 1), "704.WSetMod": (0, 1), "704.WSet": (-rated_w, rated_w),
        "704.WSetRvrt": (-rated_w, rated_w), "704.WSetPct": (-100, 100),
        "704.WSetPctRvrt": (-100, 100), "704.WSetEnaRvrt": (0, 1),
        "704.WSetRvrtTms": (0, 7 * 86400),
    }
