"""The engine's Python face: build a farm, step it, command it, read it.

>>> from bess_farm.engine import Farm
>>> farm = Farm.default()                 # 40 LFP containers, daily ambient cycle
>>> farm.set_farm_power(20e6)             # 20 MW discharge, split by headroom and SoC
>>> agg = farm.step(dt=0.1, n=10)         # one simulated second
>>> snap = farm.snapshot()                # read-only views of the published tick
>>> float(snap["soc"].mean()) < 0.5
True

Threading contract. :meth:`Farm.step` runs the kernels with the GIL released and writes the
buffer that is *not* published; when it returns, the new tick becomes the published one and
:attr:`Farm.generation` moves on. Readers in other threads use :meth:`Farm.read`, which calls
their function on the published buffers and retries in the rare case that a publish happened
meanwhile, so a reader never sees half a tick. Commands (setpoints, modes, enable, reset) may be
issued from any thread at any time: they are queued and taken in at the next tick boundary, and
each returns the tick number at which it takes effect.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np

from . import aging
from .ambient import AMBIENT_KINDS, ambient_c
from .chemistry import ocv_integral_table
from .config import FarmConfig, ocv_tables, parse_config, resolve_kind
from .kernel import (BLOCK, N_ISCRATCH, N_SCRATCH, dispatch_coefficients, dispatch_sums, run_steps_parallel,
                     run_steps_serial, stored_energy_wh)
from .layout import *  # noqa: F403
from .profiles import Profile
from .sensors import measure_many
from .layout import (DYN_NAMES, OUT_NAMES, STATE_NAMES, UPAR_NAMES, N_AGG, N_DISP, N_DYN, N_KPAR,
                     N_OUT, N_UPAR)
from .thermal import thermal_factors

#: Farms smaller than this run the serial kernel: below it, waking threads costs more than it saves.
PARALLEL_MIN_UNITS = 4 * BLOCK
MAX_STEP_S = 3600.0


@dataclass(frozen=True)
class Aggregates:
    """Farm-wide numbers of one tick (all from the same pass as the physics)."""
    tick: int
    time_s: float
    n_units: int
    p_ac_w: float
    p_dc_w: float
    p_hvac_w: float
    p_request_w: float
    soc_mean: float
    soc_min: float
    soc_max: float
    soh_mean: float
    temp_mean_c: float
    temp_max_c: float
    temp_min_c: float
    e_stored_wh: float
    e_available_wh: float
    e_capacity_wh: float
    e_ac_charged_wh: float
    e_ac_discharged_wh: float
    e_dc_charged_wh: float
    e_dc_discharged_wh: float
    e_loss_wh: float
    e_aux_wh: float
    efc_mean: float
    headroom_discharge_w: float
    headroom_charge_w: float
    units_with_alarms: int
    units_per_state: dict
    units_per_soc_band: tuple
    units_per_temp_band: tuple

    @property
    def round_trip_efficiency(self) -> float:
        """AC out / AC in including HVAC draw, NaN before anything was charged."""
        inflow = self.e_ac_charged_wh + self.e_aux_wh
        return self.e_ac_discharged_wh / inflow if inflow > 0 else math.nan

    def as_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["round_trip_efficiency"] = self.round_trip_efficiency
        return d


def _ids(units, n) -> np.ndarray:
    """Unit indices from an int, a slice, a range or a sequence; out-of-range ids raise."""
    if isinstance(units, slice):
        idx = np.arange(n)[units]
    else:
        idx = np.atleast_1d(np.asarray(units))
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(f"a boolean unit mask needs {n} entries, got {idx.shape[0]}")
            idx = np.flatnonzero(idx)
        elif idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"unit ids must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        bad = idx[(idx < 0) | (idx >= n)][0]
        raise ValueError(f"unit id {bad} does not exist (the farm has units 0..{n - 1})")
    return idx


def shard_range(n_units: int, units_per_row: int, index: int, count: int) -> range:
    """The units shard ``index`` of ``count`` owns: a contiguous range of whole rows (thermal
    neighbours never straddle two shards), the rows spread as evenly as they go."""
    if not (isinstance(count, int) and count >= 1 and isinstance(index, int) and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    rows = -(-n_units // units_per_row)
    if count > rows:
        raise ValueError(f"{count} shards for {rows} rows of units: at most one shard per row")
    r0, r1 = index * rows // count, (index + 1) * rows // count
    return range(r0 * units_per_row, min(n_units, r1 * units_per_row))


def _zeros_aligned(shape, dtype=np.float64) -> np.ndarray:
    """``np.zeros`` starting on a 64-byte (cache line) boundary.

    numpy aligns to 16 bytes; with the data at 16 mod 64, every other 32-byte vector load or
    store of the kernel crosses a cache line, which costs the streaming loops a few percent at
    1 M units (measured with benchmarks/ab_engine.py)."""
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dt.itemsize
    raw = np.zeros(nbytes + 64, dtype=np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off:off + nbytes].view(dt).reshape(shape)


def _aligned_copy(a: np.ndarray) -> np.ndarray:
    out = _zeros_aligned(a.shape, a.dtype)
    out[...] = a
    return out


class Farm:
    """A farm of battery units stepped by one fused kernel. Build with :meth:`from_config`."""

    def __init__(self, config: FarmConfig, units: range | None = None):
        """``units``: build only this contiguous range of the config's units (a shard), with
        the same parameters, ids and rows they have in the whole farm; ``None``: all of them."""
        self.config = config
        self.kinds = [resolve_kind(g, f"units[{j}]") for j, g in enumerate(config.groups)]
        total = config.n_units
        if units is None:
            units = range(total)
        if not isinstance(units, range) or units.step != 1 or not 0 <= units.start < units.stop <= total:
            raise ValueError(f"units must be a non-empty contiguous range within 0..{total}, got {units!r}")
        self.shard = units
        n = len(units)
        self.n_units = n
        self.tick = 0
        self.time_s = 0.0
        self.generation = 0
        self.seed = config.seed
        self._dt = None
        self._lock = threading.Lock()           # guards the command queue
        self._step_lock = threading.Lock()      # one step at a time
        self._pending: list[Callable[[], bool]] = []
        self._farm_profile = Profile.constant(0.0)
        self._one_shot_flags = False

        self.kind = np.empty(n, dtype=np.int16)
        self.upar = _zeros_aligned((N_UPAR, n), np.float32)
        self.kpar = np.zeros((len(self.kinds), N_KPAR), dtype=np.float64)
        self.ocv, self.ocv_int = ocv_tables(self.kinds)
        start = 0
        for j, (group, p) in enumerate(zip(config.groups, self.kinds)):
            self._fill_kind(j, p)
            lo, hi = max(start, units.start), min(start + group.count, units.stop)
            if lo < hi:      # the part of this group in the shard
                sl = slice(lo - units.start, hi - units.start)
                self.kind[sl] = j
                self._fill_units(sl, j, group, p, slice(lo - start, hi - start))
            start += group.count
        self.unit_id = np.arange(units.start, units.stop, dtype=np.int64)   # farm-wide id
        self.vendor = np.array([p["vendor"] for p in self.kinds])[self.kind]
        self.model = np.array([p["model"] for p in self.kinds])[self.kind]

        self.flags = np.full(n, FLAG_ENABLED, dtype=np.uint16)
        row = self.unit_id // config.units_per_row
        self.row = row.astype(np.int32)
        same_left = np.zeros(n, dtype=bool)
        same_left[1:] = row[1:] == row[:-1]
        self.flags[same_left] |= FLAG_NEIGHBOUR_LEFT
        self.flags[np.flatnonzero(same_left) - 1] |= FLAG_NEIGHBOUR_RIGHT

        self.dyn = _zeros_aligned((2, N_DYN, n))
        self.out = _zeros_aligned((2, N_OUT, n), np.float32)
        self.status = np.full((2, n), STANDBY, dtype=np.uint8)
        self.alarms = np.zeros((2, n), dtype=np.uint32)
        self._src = 0
        self.dyn[:, SOC] = config.initial_soc
        t_amb0 = self.ambient_at(0.0)
        self.dyn[:, TEMP_C] = config.initial_temp_c if config.initial_temp_c is not None else t_amb0
        self.upar[T_MAX_C] = self.dyn[0, TEMP_C]
        self.sensor_faults = np.zeros((n, N_CHANNELS, 4), dtype=np.float32)
        self.aging_acc, self.aging_state = aging.new_aging_arrays(n)
        self.aging_interval_s = config.aging_interval_s
        self._aging_clock = np.zeros(1)
        self._partial = np.zeros((max(1, -(-n // BLOCK)), N_AGG))
        self._new_scratch()
        self._agg = np.zeros(N_AGG)
        self._disp = np.zeros(N_DISP)
        self._prepare_dt(0.1)
        self._refresh_dispatch()
        self._agg_obj = None

    def _new_scratch(self) -> None:
        # one scratch area per worker thread, reused by every block that thread steps
        threads = numba.config.NUMBA_NUM_THREADS
        self._scratch = _zeros_aligned((threads, N_SCRATCH, BLOCK))
        self._iscratch = _zeros_aligned((threads, N_ISCRATCH, BLOCK), np.int64)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: dict | str | Path | FarmConfig | None = None) -> "Farm":
        """Build a farm from a config dict, TOML text, a TOML file path, or ``None`` (default).

        Raises :class:`~bess_farm.engine.config.ConfigError` naming the first bad key.
        """
        if not isinstance(config, FarmConfig):
            config = parse_config(config)
        return cls(config)

    @classmethod
    def default(cls) -> "Farm":
        """The embedded default farm: 40 LFP containers in 4 rows, daily ambient cycle."""
        return cls(parse_config(None))

    def _fill_kind(self, j: int, p: dict) -> None:
        kp = self.kpar[j]
        ns, npar = p["n_series"], p["n_parallel"]
        cap = p["cell_capacity_ah"] * npar
        kp[K_N_SERIES] = ns
        kp[K_N_PARALLEL] = npar
        kp[K_OCV_TABLE] = j
        kp[K_ETA_COULOMB] = p["coulombic_efficiency"]
        kp[K_I_MAX_DIS] = p["c_rate_max_discharge"] * cap
        kp[K_I_MAX_CHG] = p["c_rate_max_charge"] * cap
        kp[K_I_TRIP] = p["c_rate_trip"] * cap
        kp[K_P_RATED] = p["pcs_rated_w"]
        kp[K_PCS_L0], kp[K_PCS_L1], kp[K_PCS_L2] = p["pcs_loss_l0"], p["pcs_loss_l1"], p["pcs_loss_l2"]
        kp[K_V_MAX] = p["cell_v_max"] * ns
        kp[K_V_MIN] = p["cell_v_min"] * ns
        kp[K_V_TRIP_HI] = p["cell_v_trip_high"] * ns
        kp[K_V_TRIP_LO] = p["cell_v_trip_low"] * ns
        kp[K_SOC_MIN], kp[K_SOC_MAX], kp[K_SOC_TAPER] = p["soc_min"], p["soc_max"], p["soc_taper"]
        kp[K_T_DERATE], kp[K_T_TRIP_HI] = p["t_derate_c"], p["t_trip_high_c"]
        kp[K_T_MIN_CHARGE], kp[K_T_TRIP_LO] = p["t_min_charge_c"], p["t_trip_low_c"]
        kp[K_C_TH] = p["heat_capacity_j_per_k"]
        kp[K_G_AMB] = p["conductance_ambient_w_per_k"]
        kp[K_G_NB] = p["conductance_neighbour_w_per_k"]
        kp[K_HVAC_COOL_W], kp[K_HVAC_HEAT_W] = p["hvac_cooling_w"], p["hvac_heating_w"]
        kp[K_HVAC_T_COOL], kp[K_HVAC_T_HEAT] = p["hvac_cool_setpoint_c"], p["hvac_heat_setpoint_c"]
        kp[K_HVAC_GAIN] = p["hvac_gain_w_per_k"]
        kp[K_HVAC_COP_COOL], kp[K_HVAC_COP_HEAT] = p["hvac_cop_cooling"], p["hvac_cop_heating"]
        kp[K_HVAC_BASE_W] = p["hvac_base_w"]
        kp[K_RW_ONSET_C], kp[K_RW_CRIT_C] = p["runaway_onset_c"], p["runaway_critical_c"]
        kp[K_RW_ONSET_W], kp[K_RW_EA_K] = p["runaway_onset_w"], p["runaway_activation_k"]
        f = ocv_integral_table(p["_ocv"])
        rated_wh = cap * ns * f[-1]
        kp[K_RW_ENERGY_J] = p["runaway_energy_factor"] * rated_wh * 3600.0
        kp[K_RW_TAU_S] = p["runaway_tau_s"]
        kp[K_AGING_MODEL] = p["_aging_model"]
        kp[K_TAU1_S] = p["cell_tau1_s"]
        kp[K_TAU2_S] = p["cell_tau2_s"]
        kp[K_F_SOC_MIN] = _ocv_integral_at(p["_ocv"], f, p["soc_min"])
        kp[K_F_SOC_MAX] = _ocv_integral_at(p["_ocv"], f, p["soc_max"])
        kp[K_SIGMA_V], kp[K_SIGMA_T] = p["sensor_noise_v"], p["sensor_noise_c"]
        kp[K_SIGMA_I], kp[K_SIGMA_SOC] = p["sensor_noise_a"], p["sensor_noise_soc"]
        kp[K_INV_P_RATED] = 1.0 / kp[K_P_RATED]
        kp[K_INV_TAPER] = 1.0 / kp[K_SOC_TAPER]
        kp[K_INV_DERATE_SPAN] = 1.0 / (kp[K_T_TRIP_HI] - kp[K_T_DERATE])
        kp[K_INV_COP_COOL] = 1.0 / kp[K_HVAC_COP_COOL]
        kp[K_INV_COP_HEAT] = 1.0 / kp[K_HVAC_COP_HEAT]

    def _fill_units(self, sl: slice, j: int, group, p: dict, part: slice | None = None) -> None:
        # the whole group's draws, so a shard's units get what they have in the whole farm
        rng = np.random.default_rng([self.config.seed, j])
        draws = np.clip(rng.standard_normal((4, group.count)), -3.0, 3.0)
        if part is not None:
            draws = draws[:, part]
        s = group.spread
        ns, npar = p["n_series"], p["n_parallel"]
        cap = p["cell_capacity_ah"] * npar * (1.0 + s.get("capacity", 0.0) * draws[0])
        r0 = p["cell_r0_ohm"] * ns / npar * (1.0 + s.get("r0", 0.0) * draws[1])
        r1 = p["cell_r1_ohm"] * ns / npar * (1.0 + s.get("r1", 0.0) * draws[2])
        r2 = p["cell_r2_ohm"] * ns / npar * (1.0 + s.get("r2", 0.0) * draws[3])
        u = self.upar
        u[CAP_AH, sl] = u[CAP_NOM_AH, sl] = cap
        u[R0_OHM, sl] = u[R0_NOM_OHM, sl] = r0
        u[R1_OHM, sl] = u[R1_NOM_OHM, sl] = r1
        u[R2_OHM, sl] = u[R2_NOM_OHM, sl] = r2
        u[DERATE, sl] = 1.0
        u[AGING_FACTOR, sl] = 1.0
        u[CAP_FACTOR, sl] = 1.0
        u[R_STEP, sl] = 1.0
        u[SOH, sl] = 1.0
        u[SOC_RSV_MIN, sl] = p["soc_min"]
        u[SOC_RSV_MAX, sl] = p["soc_max"]

    def _check_dt(self, dt: float) -> None:
        for kp in self.kpar:
            nb_limit = kp[K_C_TH] / (2.0 * kp[K_G_NB]) if kp[K_G_NB] > 0 else math.inf
            if dt > nb_limit:
                raise ValueError(f"dt = {dt} s is too long for the neighbour coupling of this farm "
                                 f"(stable up to {nb_limit:.0f} s); use a shorter step")

    def _prepare_dt(self, dt: float) -> None:
        """Refresh the per-kind factors that depend on the step length."""
        self._check_dt(dt)
        for kp in self.kpar:
            for tau_i, om_i, av_i in ((K_TAU1_S, K_OM1, K_AV1), (K_TAU2_S, K_OM2, K_AV2)):
                om = -math.expm1(-dt / kp[tau_i])
                kp[om_i] = om
                kp[av_i] = om * kp[tau_i] / dt
            kp[K_TH:K_TH + 3 * TH_SLOTS] = thermal_factors(kp[K_C_TH], kp[K_G_AMB], kp[K_G_NB],
                                                 kp[K_HVAC_GAIN], dt)
        self._dt = dt

    def take(self, units) -> "Farm":
        """A new farm made of the given units, in the given order, with their present state.

        A contiguous range is a shard; a permutation reorders the farm. Two units stay thermal
        neighbours only if they stay adjacent and in the same row. Pending commands stay behind.
        """
        idx = _ids(units, self.n_units)
        if idx.size == 0:
            raise ValueError("a farm needs at least one unit")
        new = object.__new__(Farm)
        new.__dict__.update(self.__dict__)
        new.n_units = int(idx.size)
        new._lock = threading.Lock()
        new._step_lock = threading.Lock()
        new._pending = []
        for name in ("kind", "flags", "row", "vendor", "model", "unit_id"):
            setattr(new, name, getattr(self, name)[idx].copy())
        for name in ("upar",):
            setattr(new, name, _aligned_copy(getattr(self, name)[:, idx]))
        for name in ("dyn", "out"):
            setattr(new, name, _aligned_copy(getattr(self, name)[:, :, idx]))
        for name in ("status", "alarms"):
            setattr(new, name, np.ascontiguousarray(getattr(self, name)[:, idx]))
        for name in ("sensor_faults", "aging_acc", "aging_state"):
            setattr(new, name, np.ascontiguousarray(getattr(self, name)[idx]))
        new._aging_clock = self._aging_clock.copy()
        new._partial = np.zeros((max(1, -(-new.n_units // BLOCK)), N_AGG))
        new._new_scratch()
        new._agg = self._agg.copy()
        new._disp = self._disp.copy()
        new._agg_obj = None
        nb = np.uint16(FLAG_NEIGHBOUR_LEFT | FLAG_NEIGHBOUR_RIGHT)
        new.flags &= ~nb
        adjacent = (np.diff(idx) == 1) & (new.row[1:] == new.row[:-1])
        adjacent &= (self.flags[idx[:-1]] & FLAG_NEIGHBOUR_RIGHT) != 0
        new.flags[1:][adjacent] |= FLAG_NEIGHBOUR_LEFT
        new.flags[:-1][adjacent] |= FLAG_NEIGHBOUR_RIGHT
        ids = new.unit_id
        contiguous = bool(np.all(np.diff(ids) == 1))
        new.shard = range(int(ids[0]), int(ids[-1]) + 1) if contiguous else None
        new._refresh_dispatch()
        return new

    # ------------------------------------------------------------------ ambient
    def ambient_at(self, t_s: float) -> float:
        """Farm ambient temperature [C] at simulated time ``t_s`` [s]."""
        kind, p, ts, vs = self._ambient_args()
        return float(ambient_c(float(t_s), kind, p, ts, vs))

    def _ambient_args(self):
        a = self.config.ambient
        kind = AMBIENT_KINDS[a["kind"]]
        p = np.zeros(4)
        ts = np.zeros(1)
        vs = np.zeros(1)
        if a["kind"] == "constant":
            p[0] = a["value_c"]
        elif a["kind"] == "daily":
            p[:] = (a["mean_c"], a["amplitude_c"], a["peak_hour"], self.config.start_hour)
        else:
            ts, vs = np.asarray(a["times_s"], float), np.asarray(a["values_c"], float)
        return kind, p, ts, vs

    # ------------------------------------------------------------------ stepping
    def step(self, dt: float = 0.1, n: int = 1, parallel: bool | None = None) -> Aggregates:
        """Take in pending commands, then advance ``n`` steps of ``dt`` seconds.

        The kernel runs with the GIL released. Returns the aggregates of the last step.
        ``parallel`` forces the parallel or serial kernel (default: parallel from
        :data:`PARALLEL_MIN_UNITS` units).
        """
        if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not (0.0 < dt <= MAX_STEP_S):
            raise ValueError(f"dt must be a number of seconds in (0, {MAX_STEP_S:g}], got {dt!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive whole number of steps, got {n!r}")
        dt = float(dt)
        if dt != self._dt:
            self._check_dt(dt)            # before anything changes
        with self._step_lock:
            self._apply_commands()
            if dt != self._dt:
                self._prepare_dt(dt)
            if parallel is None:
                parallel = self.n_units >= PARALLEL_MIN_UNITS
            runner = run_steps_parallel if parallel else run_steps_serial
            kind, p, ts, vs = self._ambient_args()
            fk, fp, ft, fv = self._farm_profile.args()
            src = runner(int(n), self._src, dt, self.time_s, fk, fp, ft, fv, kind, p, ts, vs,
                         float(self.aging_interval_s), self._aging_clock, self._disp,
                         self.dyn, self.out, self.status, self.alarms, self.upar, self.flags,
                         self.kind, self.kpar, self.ocv, self.ocv_int, self.sensor_faults,
                         self.aging_acc, self.aging_state, self._partial, self._agg,
                         self._scratch, self._iscratch)
            if self._one_shot_flags:      # resets and runaway triggers are consumed by one tick
                self.flags &= np.uint16(~(FLAG_RESET | FLAG_TRIGGER_RUNAWAY) & 0xFFFF)
                self._one_shot_flags = False
            self.time_s += n * dt
            self.tick += int(n)
            self._src = int(src)
            self._agg_obj = None
            self.generation += 1          # publish: readers now see the new buffer
        return self.aggregates()

    # ------------------------------------------------------------------ commands
    def _enqueue(self, fn: Callable[[], bool]) -> int:
        with self._lock:
            self._pending.append(fn)
            return self.tick + 1

    def _apply_commands(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        changed = False
        for fn in pending:
            changed |= bool(fn())
        if changed:
            self._refresh_dispatch()
        else:
            dispatch_coefficients(self._farm_profile(self.time_s), self._agg, self._disp)

    def _refresh_dispatch(self) -> None:
        dispatch_sums(self._src, self.dyn, self.alarms, self.upar, self.flags, self.kind,
                      self.kpar, self.ocv, self._agg)
        dispatch_coefficients(self._farm_profile(self.time_s), self._agg, self._disp)

    def set_farm_power(self, watts: float) -> int:
        """Farm AC power setpoint [W] (positive = discharge), split over units in auto mode.

        Returns the tick at which it takes effect."""
        return self.set_farm_profile(Profile.constant(_finite(watts, "farm power setpoint")))

    def set_farm_profile(self, profile: Profile) -> int:
        """A farm power profile [W] over simulated time (see :mod:`bess_farm.engine.profiles`),
        evaluated at every step inside the kernel; replaces the constant setpoint."""
        if not isinstance(profile, Profile):
            raise ValueError("set_farm_profile needs a bess_farm.engine.profiles.Profile")
        if not np.all(np.isfinite(profile.vs)) or not np.all(np.isfinite(profile.p)):
            raise ValueError("a farm profile must contain finite numbers only")

        def apply():
            self._farm_profile = profile
            return False
        return self._enqueue(apply)

    def set_unit_power(self, units, watts) -> int:
        """Per-unit AC setpoints [W]; the units switch to manual mode and follow them.

        The setpoint is clamped by the unit's own limits each step, never rejected."""
        idx = _ids(units, self.n_units)
        w = np.broadcast_to(np.asarray(watts, dtype=np.float64), idx.shape).copy()
        if not np.all(np.isfinite(w)):
            raise ValueError("unit power setpoints must be finite numbers of watts")

        def apply():
            self.upar[SETPOINT_W, idx] = w
            self.flags[idx] |= FLAG_MANUAL
            self.flags[idx] &= np.uint16(~FLAG_CURRENT_MODE & 0xFFFF)
            return True
        return self._enqueue(apply)

    def set_unit_current(self, units, amps) -> int:
        """Per-unit DC current setpoints [A] (positive = discharge); the units switch to manual
        mode and follow them within their current, voltage and SoC limits. For cycling studies
        and reference tests; a plant is normally driven by power."""
        idx = _ids(units, self.n_units)
        a = np.broadcast_to(np.asarray(amps, dtype=np.float64), idx.shape).copy()
        if not np.all(np.isfinite(a)):
            raise ValueError("unit current setpoints must be finite numbers of amperes")

        def apply():
            self.upar[SETPOINT_W, idx] = a
            self.flags[idx] |= FLAG_MANUAL | FLAG_CURRENT_MODE
            return True
        return self._enqueue(apply)

    def set_mode(self, units, mode: str) -> int:
        """``"auto"`` (follow the farm dispatch) or ``"manual"`` (follow the unit setpoint)."""
        if mode not in ("auto", "manual"):
            raise ValueError(f"mode must be 'auto' or 'manual', got {mode!r}")
        idx = _ids(units, self.n_units)

        def apply():
            if mode == "manual":
                self.flags[idx] |= FLAG_MANUAL
            else:
                self.flags[idx] &= np.uint16(~FLAG_MANUAL & 0xFFFF)
            return True
        return self._enqueue(apply)

    def set_soc_reserve(self, units, soc_min: float | None = None,
                        soc_max: float | None = None) -> int:
        """Narrow the units' operating SoC window (the reserve SCADA keeps for itself).

        Each bound is a fraction that must lie inside the unit kind's ``[soc_min, soc_max]``,
        with ``soc_min < soc_max`` after the change; ``None`` keeps a bound as it is. The
        units stop discharging at the lower and charging at the upper bound (with the kind's
        taper), exactly as at the kind's own limits; alarms keep to the kind's window."""
        idx = _ids(units, self.n_units)
        new = {}
        for row, value, name in ((SOC_RSV_MIN, soc_min, "soc_min"), (SOC_RSV_MAX, soc_max, "soc_max")):
            if value is None:
                continue
            v = _finite(value, f"reserve {name}")
            k_lo = self.kpar[self.kind[idx], K_SOC_MIN]
            k_hi = self.kpar[self.kind[idx], K_SOC_MAX]
            bad = (v < k_lo - 1e-6) | (v > k_hi + 1e-6)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise ValueError(f"reserve {name} {v:g} is outside unit {int(idx[i])}'s SoC window "
                                 f"[{k_lo[i]:g}, {k_hi[i]:g}]")
            new[row] = np.clip(v, k_lo, k_hi).astype(np.float32)
        lo = new.get(SOC_RSV_MIN, self.upar[SOC_RSV_MIN, idx])
        hi = new.get(SOC_RSV_MAX, self.upar[SOC_RSV_MAX, idx])
        if np.any(lo >= hi):
            i = int(np.flatnonzero(lo >= hi)[0])
            raise ValueError(f"reserve soc_min {float(lo[i]):g} must stay below soc_max "
                             f"{float(hi[i]):g} (unit {int(idx[i])})")

        def apply():
            for row, v in new.items():
                self.upar[row, idx] = v
            return True
        return self._enqueue(apply)

    def set_enabled(self, units, enabled: bool) -> int:
        """Enable or disable units (a disabled unit is OFFLINE: no power, HVAC still runs)."""
        idx = _ids(units, self.n_units)
        on = bool(enabled)

        def apply():
            if on:
                self.flags[idx] |= FLAG_ENABLED
            else:
                self.flags[idx] &= np.uint16(~FLAG_ENABLED & 0xFFFF)
            return True
        return self._enqueue(apply)

    def reset(self, units=slice(None)) -> int:
        """Clear latched trips where the cause has gone (thermal runaway never clears)."""
        idx = _ids(units, self.n_units)

        def apply():
            self.flags[idx] |= FLAG_RESET
            self._one_shot_flags = True
            return True
        return self._enqueue(apply)

    def trigger_runaway(self, units) -> int:
        """Start a thermal runaway in the units at the next tick, whatever their temperature
        (an internal short). Irreversible; the heat reaches the neighbours through the coupling."""
        idx = _ids(units, self.n_units)

        def apply():
            self.flags[idx] |= FLAG_TRIGGER_RUNAWAY
            self._one_shot_flags = True
            return True
        return self._enqueue(apply)

    def set_unit_params(self, units, **values) -> int:
        """Change per-unit modifiers at the next tick: ``derate`` [0..1], ``ambient_offset_c``,
        ``aging_factor``, ``cap_factor``, ``r_step``; and flags ``hvac_failed``, ``comm_fault``,
        ``pcs_trip`` (the converter trips: no power, state fault, alarm ``pcs_fault``).
        Used by chaos scenarios; each change is validated before it is queued."""
        idx = _ids(units, self.n_units)
        ranges = {"derate": (0.0, 1.0), "ambient_offset_c": (-80.0, 80.0),
                  "aging_factor": (0.0, 1e4), "cap_factor": (0.05, 2.0), "r_step": (0.1, 100.0)}
        flag_bits = {"hvac_failed": FLAG_HVAC_FAILED, "comm_fault": FLAG_COMM_FAULT,
                     "pcs_trip": FLAG_PCS_TRIP}
        rows = {"derate": DERATE, "ambient_offset_c": AMBIENT_OFFSET_C, "aging_factor": AGING_FACTOR,
                "cap_factor": CAP_FACTOR, "r_step": R_STEP}
        checked = {}
        for key, v in values.items():
            if key in ranges:
                lo, hi = ranges[key]
                v = _finite(v, key)
                if not lo <= v <= hi:
                    raise ValueError(f"{key} must be within [{lo}, {hi}], got {v}")
                checked[key] = v
            elif key in flag_bits:
                checked[key] = bool(v)
            else:
                raise ValueError(f"unknown unit parameter {key!r}; known: "
                                 f"{', '.join(sorted([*ranges, *flag_bits]))}")

        def apply():
            u = self.upar
            for key, v in checked.items():
                if key in flag_bits:
                    if v:
                        self.flags[idx] |= flag_bits[key]
                    else:
                        self.flags[idx] &= np.uint16(~flag_bits[key] & 0xFFFF)
                    continue
                u[rows[key], idx] = v
                if key in ("cap_factor",):
                    u[CAP_AH, idx] = u[CAP_NOM_AH, idx] * u[SOH, idx] * u[CAP_FACTOR, idx]
                if key == "r_step":
                    r = np.array([aging.aging_relative_resistance(int(self.kpar[self.kind[i], K_AGING_MODEL]),
                                                                  self.aging_state, int(i)) for i in idx])
                    for row, nom in ((R0_OHM, R0_NOM_OHM), (R1_OHM, R1_NOM_OHM), (R2_OHM, R2_NOM_OHM)):
                        u[row, idx] = u[nom, idx] * r * v
            return True
        return self._enqueue(apply)

    def set_sensor_fault(self, units, channel: str, mode: str, a: float = 0.0, b: float = 0.0,
                         t0_s: float | None = None) -> int:
        """Configure a sensor fault (see :mod:`bess_farm.engine.sensors`); ``mode="none"`` clears it."""
        idx = _ids(units, self.n_units)
        if channel not in CHANNEL_NAMES:
            raise ValueError(f"unknown sensor channel {channel!r}; known: {', '.join(CHANNEL_NAMES)}")
        if mode not in SENSOR_FAULT_NAMES:
            raise ValueError(f"unknown sensor fault {mode!r}; known: {', '.join(SENSOR_FAULT_NAMES)}")
        ch = CHANNEL_NAMES.index(channel)
        m = SENSOR_FAULT_NAMES.index(mode)
        a, b = _finite(a, "a"), _finite(b, "b")

        def apply():
            t0 = self.time_s if t0_s is None else t0_s
            self.sensor_faults[idx, ch] = (m, a, b, t0)
            any_fault = (self.sensor_faults[idx, :, SF_MODE] != SF_NONE).any(axis=1)
            self.flags[idx[any_fault]] |= FLAG_SENSOR_FAULT
            self.flags[idx[~any_fault]] &= np.uint16(~FLAG_SENSOR_FAULT & 0xFFFF)
            return False
        return self._enqueue(apply)

    @property
    def pending_commands(self) -> int:
        """Commands queued for the next tick."""
        with self._lock:
            return len(self._pending)

    def call_at_next_tick(self, fn: Callable[[], bool]) -> int:
        """Queue ``fn`` to run at the next tick boundary, after the commands queued before it
        (for controllers that must act between ticks, e.g. chaos faults). ``fn`` returns True
        when it changed something the dispatch depends on. Returns the tick it runs at."""
        return self._enqueue(fn)

    # ------------------------------------------------------------------ reading
    @property
    def farm_profile(self) -> Profile:
        """The farm power profile the dispatch follows (as last set)."""
        return self._farm_profile

    @property
    def farm_power_setpoint_w(self) -> float:
        """The farm setpoint [W] at the present simulated time."""
        return self._farm_profile(self.time_s)

    def _views(self, src: int) -> dict[str, np.ndarray]:
        v: dict[str, np.ndarray] = {}
        for j, name in enumerate(DYN_NAMES):
            v[name] = self.dyn[src, j]
        for j, name in enumerate(OUT_NAMES):
            v[name] = self.out[src, j]
        v["state"] = self.status[src]
        v["alarms"] = self.alarms[src]
        for j, name in enumerate(UPAR_NAMES):
            v.setdefault(name, self.upar[j])
        v["flags"] = self.flags
        return {k: _readonly(a) for k, a in v.items()}

    def snapshot(self, copy: bool = False) -> "Snapshot":
        """The published tick as named arrays (read-only views; ``copy=True`` to keep them)."""
        src = self._src
        views = self._views(src)
        if copy:
            views = {k: np.array(a) for k, a in views.items()}
        return Snapshot(self.tick, self.time_s, self.generation, views)

    def read(self, fn: Callable[["Snapshot"], Any], retries: int = 100) -> Any:
        """Call ``fn`` on the published tick and return its result, never on half a tick.

        For readers in other threads than the one calling :meth:`step`."""
        for _ in range(retries):
            gen = self.generation
            snap = Snapshot(self.tick, self.time_s, gen, self._views(self._src))
            result = fn(snap)
            if self.generation == gen:
                return result
        raise RuntimeError("the engine published faster than the reader could read")

    def measure(self, channel: str, units=slice(None)) -> np.ndarray:
        """What the unit's sensors report for ``channel`` on the published tick.

        ``"voltage"`` [V], ``"temperature"`` [C], ``"current"`` [A] or ``"soc"`` [-]: the truth
        with the unit's sensor fault applied (stuck, offset, drift) plus seeded noise from a
        counter-based hash of (seed, unit, tick, channel), so two readers of one tick see the same
        number and nothing is computed for units nobody reads (see :mod:`.sensors`).
        """
        if channel not in CHANNEL_NAMES:
            raise ValueError(f"unknown sensor channel {channel!r}; known: {', '.join(CHANNEL_NAMES)}")
        idx = _ids(units, self.n_units)
        ch = CHANNEL_NAMES.index(channel)
        truth_name = ("voltage_v", "temp_c", "current_a", "soc")[ch]
        sigma_row = (K_SIGMA_V, K_SIGMA_T, K_SIGMA_I, K_SIGMA_SOC)[ch]

        def fn(snap):
            truth = np.asarray(snap[truth_name][idx], dtype=np.float64)
            sigma = self.kpar[self.kind[idx], sigma_row]
            faulted = (self.flags[idx] & FLAG_SENSOR_FAULT) != 0
            out = np.empty(idx.size)
            measure_many(truth, idx, self.unit_id[idx], sigma, self.sensor_faults, faulted, ch,
                         self.seed, snap.tick, snap.time_s, out)
            return out
        return self.read(fn)

    def aggregates(self) -> Aggregates:
        """Farm aggregates of the published tick."""
        if self._agg_obj is None or self._agg_obj.tick != self.tick:
            self._agg_obj = _aggregates(self._agg, self.tick, self.time_s, self.n_units,
                                        self._src, self)
        return self._agg_obj

    def stored_energy_wh(self) -> np.ndarray:
        """Chemical energy stored per unit [Wh] of the published tick: ``cap n_s F(soc)``."""
        out = np.empty(self.n_units)
        stored_energy_wh(self._src, self.dyn, self.upar, self.kind, self.kpar, self.ocv,
                         self.ocv_int, out)
        return out

    def memory_bytes(self) -> int:
        """Bytes held in per-unit arrays (state, parameters, aging, sensor faults)."""
        arrays = [self.dyn, self.out, self.status, self.alarms, self.upar, self.flags, self.kind,
                  self.sensor_faults, self.aging_acc, self.aging_state, self.row, self._partial]
        return int(sum(a.nbytes for a in arrays))


class Snapshot:
    """One published tick: ``snap["soc"]``, ``snap.tick``; arrays are read-only."""

    def __init__(self, tick: int, time_s: float, generation: int, arrays: dict[str, np.ndarray]):
        self.tick = tick
        self.time_s = time_s
        self.generation = generation
        self._arrays = arrays

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._arrays[name]
        except KeyError:
            raise KeyError(f"no array {name!r}; known: {', '.join(sorted(self._arrays))}") from None

    def names(self) -> list[str]:
        return sorted(self._arrays)


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _finite(value, what) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return v


def _ocv_integral_at(ocv_row: np.ndarray, f: np.ndarray, soc: float) -> float:
    n = ocv_row.size - 1
    x = soc * n
    j = min(int(x), n - 1)
    v0 = ocv_row[j]
    v1 = v0 + (x - j) * (ocv_row[j + 1] - v0)
    return float(f[j] + 0.5 * (v0 + v1) * (x - j) / n)


def _aggregates(agg, tick, time_s, n, src, farm) -> Aggregates:
    n = max(n, 1)
    return Aggregates(
        tick=tick, time_s=time_s, n_units=farm.n_units,
        p_ac_w=agg[AG_P_AC], p_dc_w=agg[AG_P_DC], p_hvac_w=agg[AG_P_HVAC],
        p_request_w=agg[AG_P_REQUEST], soc_mean=agg[AG_SOC_SUM] / n,
        soc_min=agg[AG_SOC_MIN], soc_max=agg[AG_SOC_MAX], soh_mean=agg[AG_SOH_SUM] / n,
        temp_mean_c=agg[AG_TEMP_SUM] / n, temp_max_c=agg[AG_TEMP_MAX], temp_min_c=agg[AG_TEMP_MIN],
        e_stored_wh=agg[AG_E_STORED_WH], e_available_wh=agg[AG_E_AVAILABLE_WH],
        e_capacity_wh=agg[AG_E_CAPACITY_WH], e_ac_charged_wh=agg[AG_E_AC_CHARGED],
        e_ac_discharged_wh=agg[AG_E_AC_DISCHARGED], e_dc_charged_wh=agg[AG_E_DC_CHARGED],
        e_dc_discharged_wh=agg[AG_E_DC_DISCHARGED], e_loss_wh=agg[AG_E_LOSS],
        e_aux_wh=agg[AG_E_AUX], efc_mean=agg[AG_EFC_SUM] / n,
        headroom_discharge_w=agg[AG_H_DIS], headroom_charge_w=agg[AG_H_CHG],
        units_with_alarms=int(agg[AG_N_ALARM]),
        units_per_state={STATE_NAMES[s]: int(agg[AG_STATE + s]) for s in range(N_STATES)},
        units_per_soc_band=tuple(int(x) for x in agg[AG_SOC_BAND:AG_SOC_BAND + SOC_BANDS]),
        units_per_temp_band=tuple(int(x) for x in agg[AG_TEMP_BAND:AG_TEMP_BAND + TEMP_BANDS]),
    )
