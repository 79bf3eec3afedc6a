"""Fault types of the chaos layer: what each one does to the farm, and how it is undone.

A fault type is a name, a category, parameters (unit, range, default), a description, and
``apply(farm, units, params, ctx)`` / ``revert(farm, units, params, ctx)`` written with the
engine's public commands only (``set_unit_params``, ``set_sensor_fault``, ``set_enabled``,
``set_unit_power``, ``set_farm_profile``, ``trigger_runaway``...). Every command takes effect
at the farm's next tick, like any other command.

Faults stack. Two faults that touch the same engine knob of the same unit go through
:class:`FaultState`, which remembers the value the unit had before the first of them and
combines the active ones:

============================  ======================================================
knob                          while several faults are active on a unit
============================  ======================================================
``derate``                    the smallest derate
``ambient_offset_c``          the largest offset
``aging_factor``              the product of the factors
``cap_factor``, ``r_step``    the product of the factors (clipped to the engine range)
``hvac_failed``, comm flag    set while at least one fault holds it (reference count)
sensor fault of a channel     the most recently started fault; the previous one resumes
unit enabled (trip, outage)   off while at least one fault holds it
unit setpoint (stuck)         the most recently started hold
farm power profile            the most recently started override (frequency event)
============================  ======================================================

When the last fault on a knob ends, the knob goes back to the value it had before the first
one. For holds (enable, unit setpoint, farm profile) a command another client sends while the
fault is active is *ignored* (re-asserted at the next tick boundary) but remembered: when the
fault ends the unit or farm follows the most recent such command, as a real device would once
it listens again. (A *disable* of a tripped unit cannot be told apart from the trip itself and
is not remembered.)

Communication faults also record a mode in :class:`CommFaults`, which the Modbus adapter
consults per request (:meth:`CommFaults.comm_behaviour`).

Run ``python -m bess_farm.interfaces.chaos table`` to print the fault table of docs/chaos.md.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bess_farm.engine import layout as L
from bess_farm.engine.profiles import Profile, frequency_regulation

# ---------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One parameter of a fault type."""
    name: str
    unit: str
    default: Any                  # REQUIRED: must be given; None: optional, no value
    doc: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] | None = None

    def check(self, value: Any) -> Any:
        """The value, validated and normalised; raises ``ValueError`` with the reason."""
        if self.choices is not None:
            if not isinstance(value, str) or value not in self.choices:
                raise ValueError(f"parameter {self.name!r} must be one of "
                                 f"{', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"parameter {self.name!r} must be a number, got {value!r}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"parameter {self.name!r} must be finite, got {value!r}")
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise ValueError(f"parameter {self.name!r} = {value!r} is out of range "
                             f"[{self.lo:g}, {self.hi:g}] {self.unit}".rstrip())
        return v

    def describe_range(self) -> str:
        if self.choices is not None:
            return " \\| ".join(self.choices)
        return f"{self.lo:g} .. {self.hi:g}"

    def describe_default(self) -> str:
        if self.default is REQUIRED:
            return "required"
        if self.default is None:
            return "—"
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

CHANNEL = Param("channel", "", REQUIRED, "sensor channel", choices=L.CHANNEL_NAMES)
_CH_UNIT = "V, C, A or SoC fraction (per channel)"


# ---------------------------------------------------------------------------- comm table

COMM_OK = "ok"
COMM_SILENT = "silent"
COMM_LATENCY = "latency"
COMM_EXCEPTION_0B = "exception_0b"


@dataclass
class CommMode:
    """How a unit's Modbus device behaves under a communication fault."""
    mode: str                      # silent | latency | exception_0b
    distribution: str = "lognormal"
    median_ms: float = 200.0
    sigma: float = 0.5
    min_ms: float = 50.0
    max_ms: float = 500.0
    cap_ms: float = 10_000.0
    seed: Any = 0
    _rng: random.Random = field(default=None, repr=False)

    def __post_init__(self):
        self._rng = random.Random(f"bess-chaos-comm:{self.seed}")

    def sample_s(self) -> float:
        """One response delay [s] from the latency distribution (seeded, per fault)."""
        if self.distribution == "uniform":
            ms = self._rng.uniform(self.min_ms, self.max_ms)
        else:
            ms = self.median_ms * math.exp(self.sigma * self._rng.gauss(0.0, 1.0))
        return min(ms, self.cap_ms) / 1000.0


class CommFaults:
    """Per-unit communication faults, consulted by the Modbus adapter on every request.

    ``comm_behaviour(unit)`` returns ``(mode, delay_s_sampler)``: ``mode`` is ``"ok"``,
    ``"silent"`` (do not answer), ``"latency"`` (answer after ``delay_s_sampler()`` seconds)
    or ``"exception_0b"`` (answer with Modbus exception 0x0B, gateway target failed to
    respond); the sampler is ``None`` except for ``"latency"``. Lookups are dictionary reads,
    safe from the event loop thread while the engine thread changes the table.
    """

    def __init__(self):
        self._stack: dict[int, list[tuple[int, CommMode]]] = {}
        self._top: dict[int, CommMode] = {}

    def comm_behaviour(self, unit: int) -> tuple[str, Callable[[], float] | None]:
        m = self._top.get(int(unit))
        if m is None:
            return COMM_OK, None
        return m.mode, (m.sample_s if m.mode == COMM_LATENCY else None)

    def mode(self, unit: int) -> str:
        m = self._top.get(int(unit))
        return COMM_OK if m is None else m.mode

    def unreachable(self, unit: int) -> bool:
        """True when SCADA gets no data from the unit (silent or exception 0x0B)."""
        return self.mode(unit) in (COMM_SILENT, COMM_EXCEPTION_0B)

    def units(self) -> dict[int, str]:
        """Every unit with a communication fault and its mode."""
        return {u: m.mode for u, m in sorted(self._top.items())}

    def __len__(self) -> int:
        return len(self._top)

    def push(self, fault_id: int, units: np.ndarray, make: Callable[[int], CommMode]) -> None:
        for u in units.tolist():
            m = make(u)
            self._stack.setdefault(u, []).append((fault_id, m))
            self._top[u] = m

    def pop(self, fault_id: int, units: np.ndarray) -> None:
        for u in units.tolist():
            st = [e for e in self._stack.get(u, []) if e[0] != fault_id]
            if st:
                self._stack[u] = st
                self._top[u] = st[-1][1]
            else:
                self._stack.pop(u, None)
                self._top.pop(u, None)

    def clear(self) -> None:
        self._stack.clear()
        self._top.clear()


# ---------------------------------------------------------------------------- stacking

_KNOB_RANGE = {"derate": (0.0, 1.0), "ambient_offset_c": (-80.0, 80.0),
               "aging_factor": (0.0, 1e4), "cap_factor": (0.05, 2.0), "r_step": (0.1, 100.0)}
_KNOB_ROW = {"derate": L.DERATE, "ambient_offset_c": L.AMBIENT_OFFSET_C,
             "aging_factor": L.AGING_FACTOR, "cap_factor": L.CAP_FACTOR, "r_step": L.R_STEP}
_KNOB_COMBINE = {"derate": "min", "ambient_offset_c": "max", "aging_factor": "prod",
                 "cap_factor": "prod", "r_step": "prod"}


def _group_calls(units: np.ndarray, values: np.ndarray, call: Callable[[np.ndarray, float], Any]):
    """One engine command per distinct value."""
    if units.size == 0:
        return
    vals, inv = np.unique(values, return_inverse=True)
    for j, v in enumerate(vals):
        call(units[inv == j], float(v))


class _Knob:
    """A per-unit float parameter (upar row) shared by stacking faults."""

    def __init__(self, name: str, n: int):
        self.name = name
        self.row = _KNOB_ROW[name]
        self.combine = _KNOB_COMBINE[name]
        self.lo, self.hi = _KNOB_RANGE[name]
        self.baseline = np.full(n, np.nan)          # NaN: not held by any fault
        self.contrib: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, farm, fid: int, units: np.ndarray, values) -> None:
        values = np.broadcast_to(np.asarray(values, dtype=np.float64), units.shape).copy()
        new = units[np.isnan(self.baseline[units])]
        self.baseline[new] = farm.upar[self.row, new].astype(np.float64)
        self.contrib[fid] = (units, values)
        self._push(farm, units)

    def remove(self, farm, fid: int) -> None:
        entry = self.contrib.pop(fid, None)
        if entry is not None:
            self._push(farm, entry[0])

    def _push(self, farm, units: np.ndarray) -> None:
        val = np.full(units.size, np.nan)
        for cu, cv in self.contrib.values():
            mask = np.isin(units, cu, assume_unique=True)
            if not mask.any():
                continue
            where = np.searchsorted(cu, units[mask])
            v = cv[where]
            cur = val[mask]
            if self.combine == "min":
                cur = np.where(np.isnan(cur), v, np.minimum(cur, v))
            elif self.combine == "max":
                cur = np.where(np.isnan(cur), v, np.maximum(cur, v))
            else:
                cur = np.where(np.isnan(cur), v, cur * v)
            val[mask] = cur
        held = ~np.isnan(val)
        base = self.baseline[units]
        if self.combine == "prod":
            val = np.where(held, base * val, base)
        elif self.combine == "max":                # an offset adds to the unit's own offset
            val = np.where(held, base + val, base)
        else:
            val = np.where(held, np.minimum(base, val), base)
        val = np.clip(val, self.lo, self.hi)
        released = units[~held]
        self.baseline[released] = np.nan
        _group_calls(units, val, lambda u, v: farm.set_unit_params(u, **{self.name: v}))


class _FlagCount:
    """A per-unit flag held by a reference count (hvac_failed, comm_fault)."""

    def __init__(self, name: str, bit: int, n: int):
        self.name, self.bit = name, bit
        self.count = np.zeros(n, dtype=np.int32)
        self.was_set = np.zeros(n, dtype=bool)

    def add(self, farm, units: np.ndarray) -> None:
        new = units[self.count[units] == 0]
        self.was_set[new] = (farm.flags[new] & self.bit) != 0
        self.count[units] += 1
        to_set = new[~self.was_set[new]]
        if to_set.size:
            farm.set_unit_params(to_set, **{self.name: True})

    def remove(self, farm, units: np.ndarray) -> None:
        self.count[units] = np.maximum(self.count[units] - 1, 0)
        gone = units[self.count[units] == 0]
        to_clear = gone[~self.was_set[gone]]
        if to_clear.size:
            farm.set_unit_params(to_clear, **{self.name: False})


class _SensorStack:
    """Sensor-fault table rows per (unit, channel): the latest fault wins."""

    def __init__(self):
        self.stack: dict[tuple[int, int], list[tuple[int, tuple]]] = {}
        self.baseline: dict[tuple[int, int], tuple] = {}

    def add(self, farm, fid: int, units: np.ndarray, ch: int, rows: list[tuple]) -> None:
        for u, row in zip(units.tolist(), rows):
            key = (u, ch)
            if key not in self.stack:
                b = farm.sensor_faults[u, ch]
                self.baseline[key] = (int(b[L.SF_MODE]), float(b[L.SF_A]), float(b[L.SF_B]),
                                      float(b[L.SF_T0]))
            self.stack.setdefault(key, []).append((fid, row))
        self._write(farm, units, ch, rows)

    def remove(self, farm, fid: int, units: np.ndarray, ch: int) -> None:
        rows = []
        for u in units.tolist():
            key = (u, ch)
            st = [e for e in self.stack.get(key, []) if e[0] != fid]
            if st:
                self.stack[key] = st
                rows.append(st[-1][1])
            else:
                self.stack.pop(key, None)
                rows.append(self.baseline.pop(key, (L.SF_NONE, 0.0, 0.0, 0.0)))
        self._write(farm, units, ch, rows)

    @staticmethod
    def _write(farm, units: np.ndarray, ch: int, rows: list[tuple]) -> None:
        groups: dict[tuple, list[int]] = {}
        for u, row in zip(units.tolist(), rows):
            groups.setdefault(row, []).append(u)
        name = L.CHANNEL_NAMES[ch]
        for (mode, a, b, t0), us in groups.items():
            farm.set_sensor_fault(np.asarray(us, dtype=np.int64), name, L.SENSOR_FAULT_NAMES[mode],
                                  a, b, t0)


class _ForceOff:
    """Units held disabled (inverter trip, grid outage) by a reference count."""

    def __init__(self, n: int):
        self.count = np.zeros(n, dtype=np.int32)
        self.desired = np.zeros(n, dtype=bool)      # enabled state to restore
        self.held = np.zeros(0, dtype=np.int64)
        self.tick = 0

    def add(self, farm, units: np.ndarray) -> None:
        new = units[self.count[units] == 0]
        self.desired[new] = (farm.flags[new] & L.FLAG_ENABLED) != 0
        self.count[units] += 1
        self.held = np.flatnonzero(self.count > 0)
        if new.size:
            self.tick = farm.set_enabled(new, False)

    def remove(self, farm, units: np.ndarray) -> None:
        self.count[units] = np.maximum(self.count[units] - 1, 0)
        gone = units[self.count[units] == 0]
        self.held = np.flatnonzero(self.count > 0)
        back = gone[self.desired[gone]]
        if back.size:
            farm.set_enabled(back, True)

    def observe(self, farm) -> np.ndarray:
        """Held units another client enabled: remember the wish."""
        re = self.held[(farm.flags[self.held] & L.FLAG_ENABLED) != 0]
        self.desired[re] = True
        return re

    def reassert(self, farm, units=None) -> None:
        units = self.held if units is None else units
        if units.size:
            self.tick = farm.set_enabled(units, False)


class _Hold:
    """Unit setpoints held at a value (setpoint ignored); the latest hold wins."""

    def __init__(self):
        self.stack: dict[int, list[tuple[int, float]]] = {}
        self.desired: dict[int, tuple[int, float]] = {}    # unit -> (flags, setpoint) to restore
        self.tick = 0

    @staticmethod
    def _command(farm, u: int, flags: int, sp: float) -> int:
        if not flags & L.FLAG_MANUAL:
            return farm.set_mode(u, "auto")
        if flags & L.FLAG_CURRENT_MODE:
            return farm.set_unit_current(u, sp)
        return farm.set_unit_power(u, sp)

    def add(self, farm, fid: int, units: np.ndarray, watts: np.ndarray) -> None:
        for u in units[[int(x) not in self.desired for x in units]].tolist():
            self.desired[u] = (int(farm.flags[u]), float(farm.upar[L.SETPOINT_W, u]))
        for u, w in zip(units.tolist(), watts.tolist()):
            self.stack.setdefault(u, []).append((fid, w))
        if units.size:
            self.tick = farm.set_unit_power(units, watts)

    def remove(self, farm, fid: int, units: np.ndarray) -> None:
        for u in units.tolist():
            st = [e for e in self.stack.get(u, []) if e[0] != fid]
            if st:
                self.stack[u] = st
                self.tick = farm.set_unit_power(u, st[-1][1])
            else:
                self.stack.pop(u, None)
                fl, sp = self.desired.pop(u)
                self._command(farm, u, fl, sp)

    def observe(self, farm) -> list[int]:
        """Held units whose mode or setpoint another client changed: remember the command."""
        changed = []
        mask = L.FLAG_MANUAL | L.FLAG_CURRENT_MODE
        for u, st in self.stack.items():
            fl = int(farm.flags[u])
            sp = float(farm.upar[L.SETPOINT_W, u])
            if (fl & mask) != L.FLAG_MANUAL or sp != float(np.float32(st[-1][1])):
                self.desired[u] = (fl, sp)
                changed.append(u)
        return changed

    def reassert(self, farm, units=None) -> None:
        units = list(self.stack) if units is None else list(units)
        if units:
            self.tick = farm.set_unit_power(np.asarray(units, dtype=np.int64),
                                            [self.stack[u][-1][1] for u in units])


def current_farm_profile(farm) -> Profile:
    """The farm's present dispatch profile (``Farm.farm_profile`` once the engine has it)."""
    p = getattr(type(farm), "farm_profile", None)
    return farm.farm_profile if p is not None else farm._farm_profile


def pending_commands(farm) -> int:
    """Commands queued for the next tick (``Farm.pending_commands`` once the engine has it)."""
    p = getattr(type(farm), "pending_commands", None)
    return farm.pending_commands if p is not None else len(farm._pending)


class _ProfileOverride:
    """The farm dispatch profile overridden by farm-level faults; the latest override wins."""

    def __init__(self):
        self.stack: list[tuple[int, Profile]] = []
        self.desired: Profile | None = None
        self.tick = 0

    def add(self, farm, fid: int, profile: Profile) -> None:
        if not self.stack:
            self.desired = current_farm_profile(farm)
        self.stack.append((fid, profile))
        self.tick = farm.set_farm_profile(profile)

    def remove(self, farm, fid: int) -> None:
        had = bool(self.stack)
        self.stack = [e for e in self.stack if e[0] != fid]
        if self.stack:
            self.tick = farm.set_farm_profile(self.stack[-1][1])
        elif had and self.desired is not None:
            farm.set_farm_profile(self.desired)
            self.desired = None

    def set_base(self, farm, profile: Profile) -> int:
        """A scheduled setpoint: applied now, or remembered while an override holds."""
        if self.stack:
            self.desired = profile
            return farm.tick + 1
        return farm.set_farm_profile(profile)

    def base_profile(self, farm) -> Profile:
        return self.desired if self.stack else current_farm_profile(farm)

    def observe(self, farm) -> bool:
        """True when another client replaced the override (remembered as the dispatch to resume)."""
        now = current_farm_profile(farm)
        if now is not self.stack[-1][1]:
            self.desired = now
            return True
        return False

    def reassert(self, farm) -> None:
        self.tick = farm.set_farm_profile(self.stack[-1][1])


class FaultState:
    """The shared tables through which faults change a farm (see the module docstring)."""

    def __init__(self, farm):
        self.farm = farm
        n = farm.n_units
        self.comm = CommFaults()
        self.knobs = {name: _Knob(name, n) for name in _KNOB_ROW}
        self.flags = {"hvac_failed": _FlagCount("hvac_failed", L.FLAG_HVAC_FAILED, n),
                      "comm_fault": _FlagCount("comm_fault", L.FLAG_COMM_FAULT, n)}
        if getattr(L, "FLAG_PCS_TRIP", None) is not None:   # see docs/chaos.md, engine support
            self.flags["pcs_trip"] = _FlagCount("pcs_trip", L.FLAG_PCS_TRIP, n)
        self.sensors = _SensorStack()
        self.force_off = _ForceOff(n)
        self.hold = _Hold()
        self.profile = _ProfileOverride()
        self.lock = threading.RLock()
        self._observed: dict[str, Any] = {}

    def active_holds(self) -> bool:
        return bool(self.force_off.held.size or self.hold.stack or self.profile.stack)

    def _observe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.force_off.held.size:
            re = self.force_off.observe(self.farm)
            if re.size:
                out["enable_ignored"] = re
        if self.hold.stack:
            ch = self.hold.observe(self.farm)
            if ch:
                out["setpoint_ignored"] = np.asarray(ch, dtype=np.int64)
        if self.profile.stack and self.profile.observe(self.farm):
            out["farm_setpoint_ignored"] = True
        return out

    def _probe(self) -> bool:
        """Runs at the tick boundary after the commands queued before it (engine thread)."""
        with self.lock:
            for k, v in self._observe().items():
                old = self._observed.get(k)
                if isinstance(v, np.ndarray) and isinstance(old, np.ndarray):
                    v = np.union1d(old, v)
                self._observed[k] = v
        return False

    def guard(self) -> dict[str, Any]:
        """Keep holds (trip, outage, stuck setpoint, frequency response) in force against other
        clients' commands, remembering those commands for when the fault ends. Call between
        ticks on the stepping thread; returns what was overridden since the last call.

        Commands already applied are seen in the farm's state and undone at the next tick;
        commands still queued are observed by a probe queued after them, and the holds are
        queued again behind them, so they never take effect."""
        with self.lock:
            out, self._observed = self._observed, {}
            if not self.active_holds():
                return out
            farm = self.farm
            pending = pending_commands(farm) > 0
            found = {}
            if farm.tick >= max(self.force_off.tick, self.hold.tick, self.profile.tick):
                found = self._observe()
                if "enable_ignored" in found:
                    self.force_off.reassert(farm, found["enable_ignored"])
                if "setpoint_ignored" in found:
                    self.hold.reassert(farm, found["setpoint_ignored"].tolist())
                if found.get("farm_setpoint_ignored"):
                    self.profile.reassert(farm)
            for k, v in found.items():
                old = out.get(k)
                out[k] = np.union1d(old, v) if isinstance(v, np.ndarray) and isinstance(old, np.ndarray) else v
            if pending:
                at_next_tick(farm, self._probe)
                self.force_off.reassert(farm)
                if self.hold.stack:
                    self.hold.reassert(farm)
                if self.profile.stack:
                    self.profile.reassert(farm)
            return out


def at_next_tick(farm, fn: Callable[[], bool]) -> int:
    """Run ``fn`` at the next tick boundary after the commands queued before it
    (``Farm.call_at_next_tick`` once the engine has it)."""
    hook = getattr(farm, "call_at_next_tick", None)
    return hook(fn) if hook is not None else farm._enqueue(fn)


@dataclass
class FaultContext:
    """What a fault's apply/revert gets besides the farm, its units and its parameters."""
    state: FaultState
    fault_id: int
    time_s: float
    seed: Any                         # seeds anything random inside the fault
    memo: dict = field(default_factory=dict)   # saved by apply for revert

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(_seed_words(self.seed))


def _seed_words(seed) -> list[int]:
    if isinstance(seed, (list, tuple)):
        return [int(s) & 0xFFFFFFFFFFFFFFFF for s in seed]
    return [int(seed) & 0xFFFFFFFFFFFFFFFF]


# ---------------------------------------------------------------------------- fault types

@dataclass(frozen=True)
class FaultType:
    name: str
    category: str
    description: str
    params: tuple[Param, ...]
    apply: Callable[[Any, np.ndarray, dict, FaultContext], None]
    revert: Callable[[Any, np.ndarray, dict, FaultContext], None]
    reports: str = ""                 # what the unit reports (alarm bits, SunSpec)
    scope: str = "units"              # "units": a selector picks units; "farm": the whole farm
    instant: bool = False             # True: irreversible, no duration, never "active"

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def check_params(self, given: dict) -> dict:
        """Defaults filled in and every value checked; ``ValueError`` names the first problem."""
        known = {p.name for p in self.params}
        for k in given:
            if k not in known:
                raise ValueError(f"fault {self.name!r} has no parameter {k!r}"
                                 + (f"; known: {', '.join(sorted(known))}" if known
                                    else " (it takes none)"))
        out = {}
        for p in self.params:
            if p.name in given:
                out[p.name] = p.check(given[p.name])
            elif p.default is REQUIRED:
                raise ValueError(f"fault {self.name!r} needs parameter {p.name!r} ({p.doc})")
            else:
                out[p.name] = p.default
        return out


FAULT_TYPES: dict[str, FaultType] = {}


#: keys of a scenario's [[fault]] entry; no parameter may take one of these names
ENTRY_KEYS = frozenset({"type", "at", "duration", "units", "row", "fraction", "all", "seed", "note"})


def register(ft: FaultType) -> FaultType:
    if ft.name in FAULT_TYPES:
        raise ValueError(f"fault type {ft.name!r} is registered twice")
    clash = ENTRY_KEYS & {p.name for p in ft.params}
    if clash:
        raise ValueError(f"fault type {ft.name!r}: parameter name {sorted(clash)[0]!r} is a scenario key")
    FAULT_TYPES[ft.name] = ft
    return ft


def fault_type(name: str) -> FaultType:
    try:
        return FAULT_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(sorted(FAULT_TYPES))}") from None


def _noop(farm, units, params, ctx):
    return None


# --- thermal
def _runaway_apply(farm, units, params, ctx):
    farm.trigger_runaway(units)


register(FaultType(
    "thermal_runaway", "thermal",
    "Internal short: the units go into thermal runaway at the next tick, whatever their "
    "temperature. Irreversible; the heat reaches row neighbours only through the engine's "
    "thermal coupling (`conductance_neighbour_w_per_k`).",
    (), _runaway_apply, _noop, instant=True,
    reports="thermal_runaway (+ self_heating, over_temperature as it heats); 802 Evt1 "
            "THERMAL_RUNAWAY + OVER_TEMP_ALARM, State FAULT"))


def _flag_fault(flag):
    def apply(farm, units, params, ctx):
        ctx.state.flags[flag].add(farm, units)

    def revert(farm, units, params, ctx):
        ctx.state.flags[flag].remove(farm, units)
    return apply, revert


register(FaultType(
    "hvac_failure", "thermal",
    "The units' HVAC stops (no cooling or heating, no electric draw beyond the engine's "
    "model); the units heat up with their losses and the ambient.",
    (), *_flag_fault("hvac_failed"),
    reports="hvac_fault; 802 Evt1 OTHER_ALARM"))


def _knob_fault(knob, pname):
    def apply(farm, units, params, ctx):
        ctx.state.knobs[knob].add(farm, ctx.fault_id, units, params[pname])

    def revert(farm, units, params, ctx):
        ctx.state.knobs[knob].remove(farm, ctx.fault_id)
    return apply, revert


register(FaultType(
    "heat_wave", "thermal",
    "Local ambient raised by `offset_c` (a heat wave on a row or the site). Overlapping heat "
    "waves on a unit: the largest offset applies.",
    (Param("offset_c", "K", 10.0, "ambient temperature offset", 0.0, 40.0),),
    *_knob_fault("ambient_offset_c", "offset_c"),
    reports="nothing directly; temperature_derate / over_temperature as the units heat"))


# --- sensors
def _sensor_fault(mode: int):
    def apply(farm, units, params, ctx):
        ch = L.CHANNEL_NAMES.index(params["channel"])
        t0 = float(ctx.time_s)
        if mode == L.SF_STUCK:
            if params.get("value") is None:
                vals = farm.measure(params["channel"], units)       # the last reading
                rows = [(mode, float(np.float32(v)), 0.0, t0) for v in vals]
            else:
                rows = [(mode, float(np.float32(params["value"])), 0.0, t0)] * units.size
        elif mode == L.SF_OFFSET:
            rows = [(mode, float(np.float32(params["offset"])), 0.0, t0)] * units.size
        elif mode == L.SF_DRIFT:
            rows = [(mode, float(np.float32(params["offset"])), float(np.float32(params["rate_per_s"])),
                     float(np.float32(t0)))] * units.size
        else:
            rows = [(mode, float(np.float32(params["sigma"])), 0.0, t0)] * units.size
        ctx.state.sensors.add(farm, ctx.fault_id, units, ch, rows)

    def revert(farm, units, params, ctx):
        ch = L.CHANNEL_NAMES.index(params["channel"])
        ctx.state.sensors.remove(farm, ctx.fault_id, units, ch)
    return apply, revert


_SENSOR_REPORTS = ("sensor_fault; 802 Evt1 OTHER_WARNING; SCADA reads the faulted value on "
                   "Modbus/REST while the truth keeps its course (the BMS protection acts on "
                   "the faulted value, so a bad reading can trip the unit)")
register(FaultType(
    "sensor_stuck", "sensor",
    "The channel's reading freezes at `value`, or at the unit's last reading when no value "
    "is given; no noise.",
    (CHANNEL, Param("value", _CH_UNIT, None, "stuck reading (default: the last reading)",
                    -1e6, 1e6)),
    *_sensor_fault(L.SF_STUCK), reports=_SENSOR_REPORTS))
register(FaultType(
    "sensor_offset", "sensor", "The channel reads the truth plus `offset`.",
    (CHANNEL, Param("offset", _CH_UNIT, REQUIRED, "added to the reading", -1e6, 1e6)),
    *_sensor_fault(L.SF_OFFSET), reports=_SENSOR_REPORTS))
register(FaultType(
    "sensor_drift", "sensor",
    "The channel reads the truth plus `offset + rate_per_s * (t - start)`.",
    (CHANNEL, Param("rate_per_s", _CH_UNIT + " per s", REQUIRED, "drift rate", -1e3, 1e3),
     Param("offset", _CH_UNIT, 0.0, "offset at the start", -1e6, 1e6)),
    *_sensor_fault(L.SF_DRIFT), reports=_SENSOR_REPORTS))
register(FaultType(
    "sensor_noise", "sensor", "Extra Gaussian noise of standard deviation `sigma` on the channel.",
    (CHANNEL, Param("sigma", _CH_UNIT, REQUIRED, "extra noise standard deviation", 0.0, 1e6)),
    *_sensor_fault(L.SF_NOISE), reports=_SENSOR_REPORTS))


# --- communication
def _comm_fault(mode: str):
    def apply(farm, units, params, ctx):
        ctx.state.flags["comm_fault"].add(farm, units)
        p = params

        def make(u):
            return CommMode(mode, p.get("distribution", "lognormal"), p.get("median_ms", 0.0),
                            p.get("sigma", 0.0), p.get("min_ms", 0.0), p.get("max_ms", 0.0),
                            p.get("cap_ms", 10_000.0), seed=(_seed_words(ctx.seed), u))
        ctx.state.comm.push(ctx.fault_id, units, make)

    def revert(farm, units, params, ctx):
        ctx.state.comm.pop(ctx.fault_id, units)
        ctx.state.flags["comm_fault"].remove(farm, units)
    return apply, revert


_COMM_REPORTS = ("comm_fault (REST, truth side); 802 Evt1 COMMUNICATION_ERROR when readable; "
                 "REST marks the unit unreachable from SCADA's side")
register(FaultType(
    "comm_silent", "comm",
    "The unit's Modbus device stops answering (requests time out).",
    (), *_comm_fault(COMM_SILENT), reports=_COMM_REPORTS))
register(FaultType(
    "comm_latency", "comm",
    "The unit's Modbus device answers late: each response is delayed by a draw from a "
    "lognormal (`median_ms`, `sigma`) or uniform (`min_ms`..`max_ms`) distribution, capped at "
    "`cap_ms`; seeded per fault and unit.",
    (Param("distribution", "", "lognormal", "latency distribution", choices=("lognormal", "uniform")),
     Param("median_ms", "ms", 200.0, "lognormal median", 0.0, 600_000.0),
     Param("sigma", "-", 0.5, "lognormal shape (standard deviation of the log)", 0.0, 5.0),
     Param("min_ms", "ms", 50.0, "uniform lower bound", 0.0, 600_000.0),
     Param("max_ms", "ms", 500.0, "uniform upper bound", 0.0, 600_000.0),
     Param("cap_ms", "ms", 10_000.0, "no delay is longer", 0.0, 600_000.0)),
    *_comm_fault(COMM_LATENCY), reports=_COMM_REPORTS))
register(FaultType(
    "comm_exception", "comm",
    "The unit's Modbus device answers every request with exception 0x0B (gateway target "
    "device failed to respond).",
    (), *_comm_fault(COMM_EXCEPTION_0B), reports=_COMM_REPORTS))


# --- power electronics
def _force_off_apply(farm, units, params, ctx):
    ctx.state.force_off.add(farm, units)


def _force_off_revert(farm, units, params, ctx):
    ctx.state.force_off.remove(farm, units)


def _trip_apply(farm, units, params, ctx):
    if "pcs_trip" in ctx.state.flags:          # the engine has a PCS-fault state
        ctx.state.flags["pcs_trip"].add(farm, units)
    else:
        ctx.state.force_off.add(farm, units)


def _trip_revert(farm, units, params, ctx):
    if "pcs_trip" in ctx.state.flags:
        ctx.state.flags["pcs_trip"].remove(farm, units)
    else:
        ctx.state.force_off.remove(farm, units)


register(FaultType(
    "inverter_trip", "power",
    "The units' PCS trips: no power, out of the farm dispatch (HVAC keeps running); the units "
    "come back when the fault ends.",
    (), _trip_apply, _trip_revert,
    reports="state fault with alarm `pcs_fault`: 802 State FAULT and Evt1 other alarm, 701 InvSt "
            "FAULT with AC disconnect"))


def _hold_apply(farm, units, params, ctx):
    if params.get("value_w") is None:
        w = np.asarray(farm.snapshot()["p_request_w"][units], dtype=np.float64)
    else:
        w = np.full(units.size, params["value_w"])
    ctx.state.hold.add(farm, ctx.fault_id, units, w)


def _hold_revert(farm, units, params, ctx):
    ctx.state.hold.remove(farm, ctx.fault_id, units)


register(FaultType(
    "setpoint_stuck", "power",
    "The PCS ignores new setpoints and holds its last one (the power it was asked for at the "
    "start, or `value_w`), still within its limits; the unit leaves the farm dispatch. Commands "
    "sent meanwhile are ignored, the latest is followed once the fault ends.",
    (Param("value_w", "W", None, "held AC setpoint (default: the last one)", -1e9, 1e9),),
    _hold_apply, _hold_revert,
    reports="nothing (a stuck PCS does not know it); SCADA sees the power not follow"))
register(FaultType(
    "power_derate", "power",
    "The units' available power is limited to `factor` of their rating. Overlapping derates: "
    "the smallest factor applies.",
    (Param("factor", "-", 0.5, "fraction of the rated power left", 0.0, 1.0),),
    *_knob_fault("derate", "factor"),
    reports="temperature_derate (the engine's derate warning); 802 Evt1 OVER_TEMP_WARNING, "
            "701 InvSt THROTTLED"))


# --- cells
register(FaultType(
    "aging_acceleration", "cells",
    "Degradation increments multiplied by `factor` (capacity fade and resistance growth run "
    "faster); overlapping factors multiply. Aging persists after the fault ends.",
    (Param("factor", "-", 10.0, "aging rate multiplier", 0.0, 1e4),),
    *_knob_fault("aging_factor", "factor"),
    reports="nothing directly; SoH falls faster (802 SoH, 713 SoH)"))


def _imbalance_apply(farm, units, params, ctx):
    f = np.full(units.size, params["factor"])
    if params["spread"] > 0:
        z = np.clip(ctx.rng().standard_normal(units.size), -3.0, 3.0)
        f = f * (1.0 + params["spread"] * z)
    f = np.clip(f, 0.05, 2.0)
    ctx.state.knobs["cap_factor"].add(farm, ctx.fault_id, units, f)


def _imbalance_revert(farm, units, params, ctx):
    ctx.state.knobs["cap_factor"].remove(farm, ctx.fault_id)


register(FaultType(
    "capacity_imbalance", "cells",
    "The units' capacity is multiplied by `factor` (weak cells limit the string), each unit "
    "drawn around it with a relative `spread` (seeded). SoC stays a fraction of the present "
    "capacity.",
    (Param("factor", "-", 0.9, "capacity multiplier", 0.05, 2.0),
     Param("spread", "-", 0.0, "relative standard deviation per unit (clipped at 3 sigma)", 0.0, 0.3)),
    _imbalance_apply, _imbalance_revert,
    reports="nothing directly; capacity (802 AHRtg stays, 713 WHAvail, SoC moves faster)"))
register(FaultType(
    "resistance_step", "cells",
    "The units' internal resistances (R0, R1, R2) step up by `factor` on top of aging.",
    (Param("factor", "-", 1.5, "resistance multiplier", 0.1, 100.0),),
    *_knob_fault("r_step", "factor"),
    reports="nothing directly; lower voltage under load, more heat, earlier limits"))


# --- grid
register(FaultType(
    "grid_outage", "grid",
    "Loss of the grid: every unit disconnects (anti-islanding) and delivers nothing; the farm "
    "setpoint is kept and followed again when the grid returns.",
    (), _force_off_apply, _force_off_revert, scope="farm",
    reports="every unit offline (as inverter_trip)"))


def _farm_rating_w(farm) -> float:
    return float(farm.kpar[farm.kind, L.K_P_RATED].sum())


def frequency_response_profile(farm, params: dict, t0_s: float, base: Profile) -> Profile:
    """The farm dispatch of a frequency event starting at ``t0_s`` (absolute simulated time)."""
    rated = _farm_rating_w(farm)
    frac = -params["delta_hz"] / (params["droop_pct"] / 100.0 * params["nominal_hz"])
    power = float(np.clip(frac, -1.0, 1.0)) * rated
    if params["signal"] == "regulation":
        return frequency_regulation(abs(power), seed=int(params["signal_seed"]))
    if params["ramp_s"] <= 0:
        return Profile.constant(power, name="frequency-event")
    p0 = base(t0_s)
    return Profile.series([t0_s, t0_s + params["ramp_s"]], [p0, power], name="frequency-event")


def _freq_apply(farm, units, params, ctx):
    base = ctx.state.profile.base_profile(farm)
    prof = frequency_response_profile(farm, params, ctx.time_s, base)
    ctx.state.profile.add(farm, ctx.fault_id, prof)


def _freq_revert(farm, units, params, ctx):
    ctx.state.profile.remove(farm, ctx.fault_id)


register(FaultType(
    "frequency_event", "grid",
    "A grid frequency excursion of `delta_hz`: the farm dispatch is replaced by the droop "
    "response `P = -delta_hz / (droop_pct/100 * nominal_hz) * farm rating` (clipped to the "
    "rating), reached in `ramp_s`; or, with `signal = \"regulation\"`, by a RegD-like signal "
    "of that amplitude. The previous dispatch (or the latest one sent meanwhile) resumes after.",
    (Param("delta_hz", "Hz", -0.5, "frequency deviation (negative: under-frequency, discharge)",
           -5.0, 5.0),
     Param("droop_pct", "%", 4.0, "droop", 0.1, 20.0),
     Param("nominal_hz", "Hz", 50.0, "nominal frequency", 45.0, 65.0),
     Param("ramp_s", "s", 2.0, "time to full response", 0.0, 600.0),
     Param("signal", "", "step", "response shape", choices=("step", "regulation")),
     Param("signal_seed", "-", 0.0, "seed of the regulation signal", 0.0, 2.0**31)),
    _freq_apply, _freq_revert, scope="farm",
    reports="nothing (a dispatch change); SCADA sees the farm power follow the response"))


# ---------------------------------------------------------------------------- docs

TABLE_START = "<!-- fault-table:start (generated: python -m bess_farm.interfaces.chaos table) -->"
TABLE_END = "<!-- fault-table:end -->"


def markdown_table() -> str:
    """The fault-type tables of docs/chaos.md, generated from the registry."""
    lines = ["| fault | category | scope | what it does | parameters | what the unit reports |",
             "|---|---|---|---|---|---|"]
    for ft in FAULT_TYPES.values():
        params = "<br>".join(
            f"`{p.name}` ({p.unit or '-'}; {p.describe_range()}; default {p.describe_default()}): {p.doc}"
            for p in ft.params) or "—"
        scope = "farm" if ft.scope == "farm" else ("units, instant" if ft.instant else "units")
        lines.append(f"| `{ft.name}` | {ft.category} | {scope} | {ft.description} | {params} "
                     f"| {ft.reports} |")
    return "\n".join(lines)

