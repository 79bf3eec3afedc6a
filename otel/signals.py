"""The runtime's signals as OpenTelemetry instruments, created from the table in :mod:`.instruments`.

Collection cost does not grow with the farm: farm-wide values, and units per state, SoC band and
temperature band, are the engine's own reductions of the published tick (``runtime.pub.agg``,
computed in the same kernel pass as the physics); per-unit series exist only for the capped unit
selection (default: units 0..255), gathered by fancy indexing at collection time. The SDK spends
tens of microseconds per data point, so 9 per-unit gauges x 256 units is the bulk of a scrape.

Consistency: a collection takes one snapshot of the published tick (farm values and the unit
values together) when it starts, so farm power and the sum of unit powers come from one tick.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from typing import Any

import numpy as np
from opentelemetry.metrics import CallbackOptions, Observation

from bess_farm.engine.layout import (CURRENT_A, EFC, K_P_RATED, N_STATES, P_AC_W, SOC, SOH,
                                     STATE_NAMES, TEMP_C, VOLTAGE_V)

from .instruments import (HISTOGRAM, INSTRUMENTS, OBSERVABLE_COUNTER, OBSERVABLE_GAUGE,
                          OBSERVABLE_UPDOWN, PROCESS, soc_band_labels, temperature_band_labels)

#: function codes that get their own label value; anything else a client sends is "other"
#: (so a fuzzing client cannot grow the series count)
KNOWN_FUNCTION_CODES = {3: "3", 4: "4", 6: "6", 16: "16"}
OUTCOMES = ("ok", "exception", "silent")

# rows of the per-unit snapshot, in the order of the per-unit instruments
_UNIT_ROWS = ("bess.unit.soc_ratio", "bess.unit.soh_ratio", "bess.unit.temperature",
              "bess.unit.voltage", "bess.unit.current", "bess.unit.power",
              "bess.unit.equivalent_full_cycles", "bess.unit.state", "bess.unit.alarm_bitmask")
_INT_ROWS = {"bess.unit.state", "bess.unit.alarm_bitmask"}


class _Snapshot:
    __slots__ = ("pub", "agg", "units", "wall")

    def __init__(self, pub, agg, units, wall):
        self.pub, self.agg, self.units, self.wall = pub, agg, units, wall


class Signals:
    """Instruments and callbacks over one runtime (duck-typed: ``pub``, ``farm``, ``devices``,
    ``stats``, ``modbus_stats`` and optionally ``chaos``)."""

    def __init__(self, runtime, settings, meter):
        from .setup import parse_unit_selector
        self.rt = runtime
        self.settings = settings
        farm = runtime.farm
        n = farm.n_units
        if settings.unit_metrics_units:
            sel = parse_unit_selector(settings.unit_metrics_units, n, "telemetry.unit_metrics_units")
        else:
            sel = np.arange(n, dtype=np.int64)
        cap = settings.unit_metrics_cap
        self.unit_idx = np.ascontiguousarray(sel[:cap])
        self.unit_count = int(self.unit_idx.size)
        self.units_omitted = int(sel.size - self.unit_idx.size)
        self.unit_attrs = [{"unit_id": str(int(farm.unit_id[i])), "vendor": str(farm.vendor[i])}
                           for i in self.unit_idx]
        self.rated_w = float(farm.kpar[farm.kind, K_P_RATED].sum())
        self._soc_labels = [{"soc_band": b} for b in soc_band_labels()]
        self._temp_labels = [{"temperature_band": b} for b in temperature_band_labels()]
        self._state_labels = [{"state": s} for s in STATE_NAMES]
        self._lock = threading.Lock()
        self._snap: _Snapshot | None = None
        pub = runtime.pub
        self._rate_prev = (time.monotonic(), float(pub.time_s) if pub is not None else 0.0)
        self._rate = float("nan")
        # Modbus: counts by (fc, model, outcome) kept here (a dict increment per request); the
        # duration histogram is recorded per request
        self._mb_counts: Counter = Counter()
        self._mb_attrs: dict[tuple, dict] = {}
        self.instruments: dict[str, Any] = {}
        callbacks = self._callbacks()
        for inst in INSTRUMENTS:
            if inst.group == PROCESS:
                continue                      # opentelemetry-instrumentation-system-metrics
            kw = dict(unit=inst.unit, description=inst.description)
            if inst.kind == HISTOGRAM:
                obj = meter.create_histogram(inst.name, explicit_bucket_boundaries_advisory=list(inst.buckets),
                                             **kw)
            else:
                make = {OBSERVABLE_GAUGE: meter.create_observable_gauge,
                        OBSERVABLE_COUNTER: meter.create_observable_counter,
                        OBSERVABLE_UPDOWN: meter.create_observable_up_down_counter}[inst.kind]
                obj = make(inst.name, callbacks=[callbacks[inst.name]], **kw)
            self.instruments[inst.name] = obj
        h = self.instruments
        self.tick_duration = h["bess.tick.duration"]
        self.step_duration = h["bess.physics.step.duration"]
        self.publish_duration = h["bess.snapshot.publish.duration"]
        self.tick_lateness = h["bess.tick.lateness"]
        self.modbus_duration = h["bess.modbus.request.duration"]
        self.http_duration = h["http.server.request.duration"]

    # ------------------------------------------------------------------ synchronous hooks
    def record_tick(self, duration_s, lateness_s, step_s=None, publish_s=None) -> None:
        self.tick_duration.record(max(0.0, duration_s))
        self.tick_lateness.record(max(0.0, lateness_s))
        if step_s is not None:
            self.step_duration.record(max(0.0, step_s))
        if publish_s is not None:
            self.publish_duration.record(max(0.0, publish_s))

    def observe_modbus(self, fc: int, model: str, outcome: str, seconds: float) -> None:
        key = (fc, model, outcome)
        attrs = self._mb_attrs.get(key)
        if attrs is None:
            attrs = {"function_code": KNOWN_FUNCTION_CODES.get(fc, "other"),
                     "sunspec_model": str(model), "outcome": outcome if outcome in OUTCOMES else "other"}
            self._mb_attrs[key] = attrs
        self._mb_counts[key] += 1
        self.modbus_duration.record(max(0.0, seconds), attrs)

    # ------------------------------------------------------------------ snapshot
    def begin_collection(self) -> _Snapshot | None:
        """Take the snapshot every callback of this collection reads (the first callback)."""
        _lower_thread_priority()
        rt = self.rt
        pub = rt.pub
        if pub is None or rt.farm is None:
            self._snap = None
            return None
        f = rt.farm
        idx = self.unit_idx
        units = np.empty((len(_UNIT_ROWS), idx.size))
        for _ in range(3):
            pub = rt.pub
            src = pub.src
            if idx.size:
                dyn, out = f.dyn[src], f.out[src]
                units[0] = dyn[SOC, idx]
                pv = rt.devices.upar if getattr(rt, "devices", None) is not None else f.upar
                units[1] = pv[SOH, idx]
                units[2] = dyn[TEMP_C, idx]
                units[3] = out[VOLTAGE_V, idx]
                units[4] = out[CURRENT_A, idx]
                units[5] = out[P_AC_W, idx]
                units[6] = dyn[EFC, idx]
                units[7] = f.status[src, idx]
                units[8] = f.alarms[src, idx]
            # the buffer of ``pub`` is written again only by the step after next: if no step
            # finished while we read, nothing we read was being written
            if f.generation <= pub.generation:
                break
        now = time.monotonic()
        t0, s0 = self._rate_prev
        if now - t0 > 0.05:
            self._rate = (float(pub.time_s) - s0) / (now - t0)
            self._rate_prev = (now, float(pub.time_s))
        snap = _Snapshot(pub, pub.agg, units, now)
        self._snap = snap
        return snap

    def _current(self) -> _Snapshot | None:
        snap = self._snap
        return snap if snap is not None else self.begin_collection()

    # ------------------------------------------------------------------ callbacks
    def _callbacks(self) -> dict[str, Any]:
        cb: dict[str, Any] = {}

        def agg_gauge(name, attr):
            def f(options: CallbackOptions):
                s = self._current()
                if s is None:
                    return []
                v = getattr(s.agg, attr)
                return [] if v is None or not np.isfinite(v) else [Observation(float(v))]
            cb[name] = f

        def first(options: CallbackOptions):
            # the first instrument of the table: every collection starts here
            with self._lock:
                s = self.begin_collection()
            return [] if s is None else [Observation(self.rated_w)]
        cb["bess.farm.power.rated"] = first
        for name, attr in (("bess.farm.energy.capacity_watthours", "e_capacity_wh"),
                           ("bess.farm.energy.available_watthours", "e_available_wh"),
                           ("bess.farm.energy.stored_watthours", "e_stored_wh"),
                           ("bess.farm.power.ac", "p_ac_w"), ("bess.farm.power.dc", "p_dc_w"),
                           ("bess.farm.power.requested", "p_request_w"),
                           ("bess.farm.power.auxiliary", "p_hvac_w"),
                           ("bess.farm.soc.mean_ratio", "soc_mean"),
                           ("bess.farm.soh.mean_ratio", "soh_mean"),
                           ("bess.farm.temperature.max", "temp_max_c"),
                           ("bess.farm.temperature.mean", "temp_mean_c"),
                           ("bess.farm.temperature.min", "temp_min_c"),
                           ("bess.farm.units.alarmed", "units_with_alarms"),
                           ("bess.farm.equivalent_full_cycles.mean", "efc_mean"),
                           ("bess.farm.energy.charged_watthours", "e_ac_charged_wh"),
                           ("bess.farm.energy.discharged_watthours", "e_ac_discharged_wh"),
                           ("bess.farm.energy.dc_charged_watthours", "e_dc_charged_wh"),
                           ("bess.farm.energy.dc_discharged_watthours", "e_dc_discharged_wh"),
                           ("bess.farm.energy.auxiliary_watthours", "e_aux_wh"),
                           ("bess.farm.energy.loss_watthours", "e_loss_wh")):
            agg_gauge(name, attr)

        def rte(options):
            s = self._current()
            if s is None or not s.agg.e_ac_charged_wh > 0:
                return []                    # nothing charged yet: no efficiency to speak of
            v = s.agg.round_trip_efficiency
            return [Observation(float(v))] if np.isfinite(v) else []
        cb["bess.farm.round_trip_efficiency_ratio"] = rte

        def by_state(options):
            s = self._current()
            if s is None:
                return []
            counts = s.agg.units_per_state
            out = []
            for i, name in enumerate(STATE_NAMES):
                v = counts.get(name, counts.get(i, 0)) if isinstance(counts, dict) else counts[i]
                out.append(Observation(int(v), self._state_labels[i]))
            return out
        cb["bess.farm.units.by_state"] = by_state

        def bands(attr, labels):
            def f(options):
                s = self._current()
                if s is None:
                    return []
                return [Observation(int(v), a) for v, a in zip(getattr(s.agg, attr), labels)]
            return f
        cb["bess.farm.units.by_soc_band"] = bands("units_per_soc_band", self._soc_labels)
        cb["bess.farm.units.by_temperature_band"] = bands("units_per_temp_band", self._temp_labels)

        def unit_row(j, integer):
            def f(options):
                s = self._current()
                if s is None or not self.unit_count:
                    return []
                vals = s.units[j].astype(np.int64).tolist() if integer else s.units[j].tolist()
                return [Observation(v, a) for v, a in zip(vals, self.unit_attrs)]
            return f
        for j, name in enumerate(_UNIT_ROWS):
            cb[name] = unit_row(j, name in _INT_ROWS)
        cb["bess.unit_metrics.cap"] = lambda o: [Observation(self.settings.unit_metrics_cap)]
        cb["bess.unit_metrics.units"] = lambda o: [Observation(self.unit_count)]
        cb["bess.unit_metrics.omitted"] = lambda o: [Observation(self.units_omitted)]

        # loop
        def stat(attr):
            def f(options):
                st = getattr(self.rt, "stats", None)
                return [] if st is None else [Observation(int(getattr(st, attr)))]
            return f
        cb["bess.ticks"] = stat("ticks")
        cb["bess.tick.overruns"] = stat("overruns")
        cb["bess.tick.skipped"] = stat("skipped")
        cb["bess.units.simulated"] = lambda o: [Observation(int(self.rt.farm.n_units))]

        def sim_time(options):
            s = self._current()
            return [] if s is None else [Observation(float(s.pub.time_s))]
        cb["bess.sim.time"] = sim_time

        def sim_ratio(options):
            return [Observation(self._rate)] if np.isfinite(self._rate) else []
        cb["bess.sim.time_ratio"] = sim_ratio

        # Modbus
        def mb(attr):
            def f(options):
                st = getattr(self.rt, "modbus_stats", None)
                return [] if st is None else [Observation(int(getattr(st, attr)))]
            return f
        cb["bess.modbus.connections"] = mb("connections")
        cb["bess.modbus.writes_rejected"] = mb("writes_rejected")
        cb["bess.modbus.frames_dropped"] = mb("frames_dropped")

        def requests(options):
            st = getattr(self.rt, "modbus_stats", None)
            if st is not None and not hasattr(st, "observe"):
                # a server without the observe hook: by function code only
                return [Observation(int(c), {"function_code": KNOWN_FUNCTION_CODES.get(fc, "other"),
                                             "sunspec_model": "unknown", "outcome": "unknown"})
                        for fc, c in _merge_other(dict(st.requests)).items()]
            counts = dict(self._mb_counts)
            merged: dict[tuple, int] = {}
            for key, c in counts.items():
                a = self._mb_attrs[key]
                k = (a["function_code"], a["sunspec_model"], a["outcome"])
                merged[k] = merged.get(k, 0) + c
            return [Observation(c, {"function_code": k[0], "sunspec_model": k[1], "outcome": k[2]})
                    for k, c in merged.items()]
        cb["bess.modbus.requests"] = requests

        def exceptions(options):
            st = getattr(self.rt, "modbus_stats", None)
            if st is None:
                return []
            counts = dict(st.exceptions)
            if not counts:
                return [Observation(0)]      # present (at zero) before the first exception
            return [Observation(int(c), {"exception_code": f"{int(code)}"}) for code, c in counts.items()]
        cb["bess.modbus.exceptions"] = exceptions

        # chaos
        def chaos(method):
            def f(options):
                ch = getattr(self.rt, "chaos", None)
                fn = getattr(ch, method, None) if ch is not None else None
                if fn is None:
                    return [Observation(0)]
                data = fn() or {}
                if not data:
                    return [Observation(0)]
                return [Observation(int(v), {"fault_type": str(k)}) for k, v in data.items()]
            return f
        cb["bess.chaos.faults.active"] = chaos("active_by_type")
        cb["bess.chaos.faults.injected"] = chaos("injected_by_type")
        return cb


#: nice value of the threads that collect (the scrape's HTTP thread, the OTLP export thread)
COLLECTION_NICE = 10


def _lower_thread_priority() -> None:
    """Give the collecting thread a lower CPU priority than the engine and the event loop (Linux:
    per-thread nice), so on a busy machine a scrape waits for idle CPU instead of stretching the
    tick. Raising one's own nice value needs no privilege; elsewhere this does nothing."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < COLLECTION_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, COLLECTION_NICE)
    except (AttributeError, OSError):
        pass


def _merge_other(by_fc: dict) -> dict:
    out: dict[Any, int] = {}
    for fc, c in by_fc.items():
        k = fc if fc in KNOWN_FUNCTION_CODES else -1
        out[k] = out.get(k, 0) + c
    return out
