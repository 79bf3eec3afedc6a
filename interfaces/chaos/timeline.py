"""The chaos engine: runs a scenario's timeline (and its random process) against a farm.

The runtime calls :meth:`ChaosEngine.advance` with the farm's simulated time on the stepping
thread *between* steps (before ``farm.step``). Every start, end and setpoint whose time has come
(``time <= t``) is applied then, in time order (ends before setpoints before starts at equal
times, then in file order), with the engine's commands, so it takes effect at the next tick.
Granularity is therefore the step: with a step of ``dt`` a fault at time ``T`` takes effect in
the first step that begins at or after ``T`` (``bess simulate`` with large steps: see
:meth:`ChaosEngine.steps_until_due` to cut a batch at the next change). The same scenario, seed
and step sequence give the same faults at the same ticks.

:meth:`start` validates the whole scenario against the farm first (nothing is applied on an
error) and schedules it relative to the farm's present time; :meth:`stop` reverts every active
fault at once (commands are queued; they take effect at the next tick). Both may be called from
any thread; :meth:`advance` must run on the stepping thread.

Visibility: every start/end is a log record on logger ``bess.chaos`` (``extra={"fields": ...}``
as the runtime's formatter expects), an entry of :attr:`events` (bounded, each with a ``seq``
number for paging), a call of ``on_event(record)``, and counts in :meth:`active_by_type` /
:meth:`injected_by_type`.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from bess_farm.engine.layout import K_P_RATED, THERMAL_RUNAWAY
from bess_farm.engine.profiles import (
    Profile,
    daily_arbitrage,
    frequency_regulation,
    peak_shaving,
)

from .faults import FAULT_TYPES, CommFaults, FaultContext, FaultState
from .scenario import FaultSpec, Scenario, ScenarioError, SetpointSpec, format_units

log = logging.getLogger("bess.chaos")

#: a change scheduled at T is due when the farm's time is >= T - EPS_S (float sums of dt)
EPS_S = 1e-6
_END, _SETPOINT, _START = 0, 1, 2


class ChaosError(RuntimeError):
    """A request the chaos engine refuses (a scenario is already running, ...)."""


@dataclass
class ActiveFault:
    """One fault instance that has started."""
    id: int
    type: str
    units: np.ndarray
    params: dict
    start_s: float                 # scheduled start (simulated time)
    end_s: float | None            # scheduled end, None: until stopped
    scenario: str
    source: str                    # "scenario" | "random"
    selector: str
    ctx: FaultContext
    tick: int = 0                  # tick at which the start took effect
    draw: int | None = None        # index of the random draw

    def as_dict(self) -> dict:
        return {"id": self.id, "fault": self.type, "units": format_units(self.units),
                "n_units": int(self.units.size), "selector": self.selector,
                "params": _jsonable(self.params), "start_s": self.start_s, "end_s": self.end_s,
                "tick": self.tick, "scenario": self.scenario, "source": self.source,
                "draw": self.draw}


@dataclass(order=True)
class _Item:
    time_s: float
    phase: int
    seq: int
    kind: str = field(compare=False)          # start | end | setpoint | draw
    payload: Any = field(compare=False)


class _RandomProcess:
    """Seeded Poisson arrivals of faults (superposed per type), drawn lazily in time order."""

    def __init__(self, spec, t0: float, n_units: int):
        self.spec = spec
        self.t0 = t0
        self.n = n_units
        self.types = sorted(k for k, v in spec.rates_per_hour.items() if v > 0)
        rates = np.array([spec.rates_per_hour[k] for k in self.types]) / 3600.0
        self.total = float(rates.sum())
        self.p = rates / self.total if self.total > 0 else rates
        self.rng = np.random.default_rng([int(spec.seed), 0xC4A05])
        self.t = t0 + spec.from_s
        self.k = 0

    def next(self) -> dict | None:
        if self.total <= 0:
            return None
        self.t += float(self.rng.exponential(1.0 / self.total))
        if self.spec.until_s is not None and self.t > self.t0 + self.spec.until_s:
            return None
        j = int(self.rng.choice(len(self.types), p=self.p)) if len(self.types) > 1 else 0
        ftype = self.types[j]
        ft = FAULT_TYPES[ftype]
        if ft.scope == "farm":
            units = np.arange(self.n, dtype=np.int64)
        else:
            k = min(self.spec.units_per_fault, self.n)
            units = np.sort(self.rng.choice(self.n, size=k, replace=False)).astype(np.int64)
        lo, hi = self.spec.duration_range(ftype)
        dur = None if ft.instant else float(self.rng.uniform(lo, hi))
        draw = {"draw": self.k, "time_s": self.t, "fault": ftype, "units": units,
                "duration_s": dur, "params": dict(self.spec.params.get(ftype, {}))}
        self.k += 1
        return draw


class ChaosEngine:
    """Faults and scenarios against one farm. See the module docstring for the threading rules."""

    def __init__(self, farm, scenario: Scenario | None = None, *, log: logging.Logger | None = None,
                 on_event: Callable[[dict], None] | None = None, max_events: int = 2000,
                 watch_runaway: bool = True):
        self.farm = farm
        self.log = log or globals()["log"]
        self.on_event = on_event
        self.state = FaultState(farm)
        self.comm: CommFaults = self.state.comm
        self._lock = self.state.lock
        self._events: deque[dict] = deque(maxlen=max_events)
        self._seq = itertools.count(1)
        self._event_seq = 0
        self._ids = itertools.count(1)
        self._heap: list[_Item] = []
        self._active: dict[int, ActiveFault] = {}
        self._injected: Counter = Counter()
        self._random: _RandomProcess | None = None
        self._random_active: set[int] = set()
        self.draws: list[dict] = []                 # every random draw, applied or skipped
        self.scenario: Scenario | None = None
        self.started_s: float | None = None
        self._pending_start: tuple[Scenario, float | None] | None = None
        self._watch_runaway = watch_runaway
        self._runaway_count = 0
        self._runaway_seen = np.zeros(farm.n_units, dtype=bool)
        self._triggered = np.zeros(farm.n_units, dtype=bool)
        if scenario is not None:
            self.start(scenario, t0=farm.time_s)

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self.scenario is not None or self._pending_start is not None

    def start(self, scenario: Scenario, t0: float | None = None) -> dict:
        """Validate ``scenario`` against the farm and schedule it from ``t0`` (default: the time
        of the next :meth:`advance`). Raises :class:`ScenarioError` (nothing applied) or
        :class:`ChaosError` when a scenario is already running."""
        scenario.check(self.farm)
        with self._lock:
            if self.running:
                raise ChaosError(f"scenario {self.scenario.name if self.scenario else '?'!r} is "
                                 f"running; stop it first")
            self._pending_start = (scenario, t0)
            return scenario.summary()

    def stop(self, reason: str = "stopped") -> int:
        """Revert every active fault and drop what is still scheduled; returns how many faults
        were reverted. Safe from any thread (only queues engine commands)."""
        with self._lock:
            n = 0
            t = self.farm.time_s
            for af in sorted(self._active.values(), key=lambda a: -a.id):
                self._end(af, t, reason=reason)
                n += 1
            self._heap.clear()
            self._random = None
            self._random_active.clear()
            if self.scenario is not None or self._pending_start is not None:
                name = self.scenario.name if self.scenario else self._pending_start[0].name
                self._record("scenario_stop", t, scenario=name, reason=reason, reverted=n)
            self.scenario = None
            self._pending_start = None
            self.started_s = None
            return n

    def advance(self, t_s: float | None = None) -> list[dict]:
        """Apply every change due by simulated time ``t_s`` (default: the farm's time); call on
        the stepping thread before each ``farm.step``. Returns the event records it produced."""
        t = self.farm.time_s if t_s is None else float(t_s)
        with self._lock:
            first = self._event_seq
            if self._pending_start is not None:
                sc, t0 = self._pending_start
                self._pending_start = None
                self._begin(sc, t if t0 is None else float(t0))
            guarded = self.state.guard()
            for what, units in guarded.items():
                self._record("override_ignored", t, what=what,
                             units=format_units(units) if isinstance(units, np.ndarray) else "farm",
                             level=logging.INFO)
            while self._heap and self._heap[0].time_s <= t + EPS_S:
                item = heapq.heappop(self._heap)
                try:
                    self._do(item, t)
                except Exception as exc:                 # never take the runtime down
                    self._record("error", t, what=item.kind, error=str(exc), level=logging.ERROR)
            if self.scenario is not None and not self._heap and not self._active \
                    and self._random is None:
                self._record("scenario_end", t, scenario=self.scenario.name)
                self.scenario = None
                self.started_s = None
            if self._watch_runaway:
                self._watch(t)
            return [e for e in self._events if e["seq"] > first]

    def next_due_s(self) -> float | None:
        """Simulated time of the next scheduled change (None: nothing scheduled)."""
        with self._lock:
            if self._pending_start is not None:
                return self.farm.time_s
            return self._heap[0].time_s if self._heap else None

    def steps_until_due(self, dt: float, max_steps: int) -> int:
        """How many steps of ``dt`` a batch may take before the next change is due (>= 1)."""
        due = self.next_due_s()
        if due is None:
            return max_steps
        k = math.ceil((due - self.farm.time_s - EPS_S) / dt)
        return int(min(max_steps, max(1, k)))

    # ------------------------------------------------------------------ reading
    def active(self) -> list[dict]:
        with self._lock:
            return [a.as_dict() for a in sorted(self._active.values(), key=lambda a: a.id)]

    @property
    def events(self) -> list[dict]:
        with self._lock:
            return list(self._events)

    def events_since(self, seq: int = 0, limit: int | None = None) -> list[dict]:
        """Events with ``seq`` greater than ``seq`` (REST paging / Grafana annotations)."""
        with self._lock:
            out = [e for e in self._events if e["seq"] > seq]
        return out[:limit] if limit else out

    def active_by_type(self) -> dict[str, int]:
        """Active fault instances per fault type (every type present, 0 when none)."""
        with self._lock:
            out = {k: 0 for k in FAULT_TYPES}
            for a in self._active.values():
                out[a.type] += 1
            return out

    def active_units_by_type(self) -> dict[str, int]:
        with self._lock:
            out = {k: 0 for k in FAULT_TYPES}
            for a in self._active.values():
                out[a.type] += int(a.units.size)
            return out

    def injected_by_type(self) -> dict[str, int]:
        """Fault instances started since this engine was made, per type (a counter)."""
        with self._lock:
            return {k: int(self._injected.get(k, 0)) for k in FAULT_TYPES}

    def status(self) -> dict:
        with self._lock:
            sc = self.scenario or (self._pending_start[0] if self._pending_start else None)
            return {"running": self.running, "scenario": sc.summary() if sc else None,
                    "started_s": self.started_s, "next_due_s": self.next_due_s(),
                    "active": len(self._active), "comm_faults": len(self.comm),
                    "random": self._random is not None, "draws": len(self.draws)}

    # ------------------------------------------------------------------ scheduling
    def _push(self, time_s: float, phase: int, kind: str, payload) -> None:
        heapq.heappush(self._heap, _Item(time_s, phase, next(self._seq), kind, payload))

    def _begin(self, sc: Scenario, t0: float) -> None:
        self.scenario = sc
        self.started_s = t0
        self._record("scenario_start", t0, scenario=sc.name, source=sc.source, seed=sc.seed)
        for spec in sc.setpoints:
            self._push(t0 + spec.at_s, _SETPOINT, "setpoint", spec)
        for spec in sc.faults:
            self._push(t0 + spec.at_s, _START, "start", spec)
        if sc.random is not None:
            self._random = _RandomProcess(sc.random, t0, self.farm.n_units)
            self._schedule_draw()

    def _schedule_draw(self) -> None:
        d = self._random.next() if self._random is not None else None
        if d is None:
            self._random = None
            return
        self._push(d["time_s"], _START, "draw", d)

    def _do(self, item: _Item, t: float) -> None:
        if item.kind == "end":
            af = self._active.get(item.payload)
            if af is not None:
                self._end(af, t, scheduled_s=item.time_s)
        elif item.kind == "setpoint":
            self._setpoint(item.payload, item.time_s, t)
        elif item.kind == "start":
            spec: FaultSpec = item.payload
            sc = self.scenario
            units = spec.selector.resolve(self.farm.n_units, self.farm.row,
                                          salt=[sc.seed if sc else 0, spec.index])
            seed = [spec.selector.seed if spec.selector.seed is not None else (sc.seed if sc else 0),
                    spec.index]
            end = None if spec.duration_s is None else item.time_s + spec.duration_s
            self._start(spec.type, units, spec.params, item.time_s, end, t, "scenario",
                        str(spec.selector), seed)
        elif item.kind == "draw":
            self._draw(item.payload, t)

    def _draw(self, d: dict, t: float) -> None:
        rs = self.scenario.random if self.scenario else None
        live = sum(1 for i in self._random_active if i in self._active)
        entry = {"draw": d["draw"], "at_s": d["time_s"], "fault": d["fault"],
                 "units": format_units(d["units"]), "duration_s": d["duration_s"],
                 "params": _jsonable(d["params"])}
        if rs is not None and live >= rs.max_active:
            entry["applied"] = False
            entry["reason"] = f"max_active ({rs.max_active}) faults active"
            self.draws.append(entry)
            self._record("draw", t, **entry)
        else:
            entry["applied"] = True
            self.draws.append(entry)
            self._record("draw", t, **entry)
            end = None if d["duration_s"] is None else d["time_s"] + d["duration_s"]
            seed = [rs.seed if rs else 0, 0xD4A3, d["draw"]]
            af = self._start(d["fault"], d["units"], d["params"], d["time_s"], end, t, "random",
                             "random", seed, draw=d["draw"])
            if af is not None and af.end_s is not None:
                self._random_active.add(af.id)
        self._schedule_draw()

    def _start(self, ftype: str, units: np.ndarray, params: dict, start_s: float,
               end_s: float | None, t: float, source: str, selector: str, seed,
               draw: int | None = None) -> ActiveFault | None:
        ft = FAULT_TYPES[ftype]
        fid = next(self._ids)
        ctx = FaultContext(self.state, fid, t, seed)
        units = np.unique(np.asarray(units, dtype=np.int64))
        ft.apply(self.farm, units, params, ctx)
        tick = self.farm.tick + 1
        self._injected[ftype] += 1
        name = self.scenario.name if self.scenario else ""
        af = ActiveFault(fid, ftype, units, params, start_s, end_s, name, source, selector, ctx,
                         tick, draw)
        if ft.instant:
            self._triggered[units] = True
            self._record("inject", t, **af.as_dict(), level=logging.WARNING)
            return af
        self._active[fid] = af
        self._record("start", t, **af.as_dict(), level=logging.WARNING)
        if end_s is not None:
            self._push(end_s, _END, "end", fid)
        return af

    def _end(self, af: ActiveFault, t: float, scheduled_s: float | None = None,
             reason: str = "duration") -> None:
        self._active.pop(af.id, None)
        self._random_active.discard(af.id)
        FAULT_TYPES[af.type].revert(self.farm, af.units, af.params, af.ctx)
        d = af.as_dict()
        d["tick"] = self.farm.tick + 1
        d["start_tick"] = af.tick
        d["reason"] = reason
        if scheduled_s is not None:
            d["end_s"] = scheduled_s
        self._record("end", t, **d, level=logging.WARNING)

    def _setpoint(self, spec: SetpointSpec, at_s: float, t: float) -> None:
        prof = setpoint_profile(self.farm, spec)
        tick = self.state.profile.set_base(self.farm, prof)
        self._record("setpoint", t, scheduled_s=at_s, setpoint=spec.describe(), tick=tick,
                     scenario=self.scenario.name if self.scenario else "",
                     deferred=bool(self.state.profile.stack))

    # ------------------------------------------------------------------ runaway watch
    def _watch(self, t: float) -> None:
        f = self.farm
        try:
            count = f.aggregates().units_per_state.get("thermal_runaway", 0)
        except Exception:                                # before the first step
            return
        if count == self._runaway_count:
            return
        self._runaway_count = count
        st = f.snapshot()["state"]
        new = np.flatnonzero((st == THERMAL_RUNAWAY) & ~self._runaway_seen)
        self._runaway_seen[new] = True
        for u in new.tolist():
            cause = "triggered" if self._triggered[u] else "spread"
            self._record("runaway", t, unit=int(f.unit_id[u]), cause=cause, tick=f.tick,
                         neighbours=_neighbours(f, u), level=logging.CRITICAL)

    # ------------------------------------------------------------------ records
    def _record(self, kind: str, t: float, level: int = logging.INFO, **fields) -> dict:
        self._event_seq = next(self._seq)
        rec = {"seq": self._event_seq, "kind": kind, "time_s": float(t)}
        rec.setdefault("tick", self.farm.tick + 1)
        rec.update(fields)
        self._events.append(rec)
        msg = {"start": "fault start", "end": "fault end", "inject": "fault injected",
               "draw": "random fault draw", "setpoint": "scenario setpoint",
               "scenario_start": "scenario start", "scenario_end": "scenario end",
               "scenario_stop": "scenario stop", "runaway": "thermal runaway",
               "override_ignored": "command ignored by a fault",
               "error": "fault error"}.get(kind, kind)
        self.log.log(level, msg, extra={"fields": {k: v for k, v in rec.items() if k != "seq"}})
        if self.on_event is not None:
            try:
                self.on_event(rec)
            except Exception:                            # a broken sink must not stop faults
                self.log.exception("chaos on_event callback failed")
        return rec


def setpoint_profile(farm, spec: SetpointSpec) -> Profile:
    """The farm profile of a scenario setpoint entry."""
    rated = float(farm.kpar[farm.kind, K_P_RATED].sum())
    power = spec.power_w if spec.power_w is not None else (spec.power_fraction or 0.0) * rated
    sh = farm.config.start_hour
    if spec.profile == "idle":
        return Profile.constant(0.0, name="idle")
    if spec.profile == "constant":
        return Profile.constant(power)
    if spec.profile == "daily-arbitrage":
        return daily_arbitrage(power, start_hour=sh)
    if spec.profile == "peak-shaving":
        return peak_shaving(power, start_hour=sh)
    return frequency_regulation(power, seed=spec.seed)


def event_text(rec: dict) -> str:
    """One line for a Grafana annotation or a CLI listing of an event record."""
    k = rec["kind"]
    if k in ("start", "end", "inject"):
        verb = {"start": "started", "end": "ended", "inject": "injected"}[k]
        why = f" ({rec['reason']})" if k == "end" and rec.get("reason") != "duration" else ""
        return f"{rec['fault']} {verb} on units {rec['units']}{why}"
    if k == "runaway":
        return f"thermal runaway in unit {rec['unit']} ({rec['cause']})"
    if k == "draw":
        state = "applied" if rec.get("applied") else f"skipped: {rec.get('reason', '')}"
        return f"random draw {rec['draw']}: {rec['fault']} on units {rec['units']} ({state})"
    if k == "setpoint":
        return f"farm setpoint: {rec['setpoint']}" + (" (deferred)" if rec.get("deferred") else "")
    if k in ("scenario_start", "scenario_end", "scenario_stop"):
        return f"scenario {rec['scenario']} {k.split('_')[1]}"
    if k == "override_ignored":
        return f"command ignored by a fault ({rec['what']}, units {rec['units']})"
    return f"{k}: {rec.get('error', '')}"


def _neighbours(farm, u: int) -> list[int]:
    from bess_farm.engine.layout import FLAG_NEIGHBOUR_LEFT, FLAG_NEIGHBOUR_RIGHT
    out = []
    if farm.flags[u] & FLAG_NEIGHBOUR_LEFT:
        out.append(int(farm.unit_id[u - 1]))
    if farm.flags[u] & FLAG_NEIGHBOUR_RIGHT:
        out.append(int(farm.unit_id[u + 1]))
    return out


def _jsonable(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out


def run_scenario(farm, scenario: Scenario, dt: float, duration_s: float,
                 engine: ChaosEngine | None = None, **kw) -> ChaosEngine:
    """Batch helper (``bess simulate``, tests): step ``farm`` for ``duration_s`` with the
    scenario applied at step granularity, cutting batches at every scheduled change."""
    eng = engine or ChaosEngine(farm, **kw)
    eng.start(scenario, t0=farm.time_s)
    total = int(round(duration_s / dt))
    done = 0
    while done < total:
        eng.advance(farm.time_s)
        n = eng.steps_until_due(dt, total - done)
        farm.step(dt, n)
        done += n
    eng.advance(farm.time_s)
    return eng


__all__ = [
    "EPS_S",
    "ActiveFault",
    "ChaosEngine",
    "ChaosError",
    "ScenarioError",
    "event_text",
    "run_scenario",
    "setpoint_profile",
]
