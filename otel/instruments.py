"""Every metric bess-farm exports, declared once.

The table below is the single source of truth for instrument names, kinds, units, descriptions and
attributes: :mod:`.signals` creates the instruments from it, ``docs/telemetry.md`` is generated
from it (``python -m bess_farm.otel.docs --write``; a test checks the file is current), and
dashboards and alert rules should name metrics through :func:`prometheus_name` so that a renamed
metric breaks the build, not a dashboard.

Naming (OpenTelemetry and Prometheus at once)
---------------------------------------------
An OpenTelemetry metric reaches Prometheus through one of two translators: the Python Prometheus
exporter (embedded mode) or the collector's prometheus exporter (sidecar mode). Both replace dots
by underscores, append the unit word they know for the UCUM unit (``s`` -> ``seconds``, ``W`` ->
``watts``, ``Cel`` -> ``celsius``, ``V`` -> ``volts``, ``A`` -> ``amperes``, ``By`` -> ``bytes``) and
``_total`` to counters, and drop units in curly braces (``{unit}``, ``{request}``). They disagree
on two things, so the table avoids them:

* ``Wh`` has no mapping in either (it would become ``_Wh``, which is not snake_case). Energy
  instruments carry the unit word at the end of their name and ``{Wh}`` as their unit, which both
  translators drop: ``bess.farm.energy.available_watthours`` -> ``bess_farm_energy_available_watthours``.
  The word is ``watthours``, not ``watt_hours``: ``promtool check metrics`` reads the name token
  ``hours`` as a time unit and asks for ``seconds`` instead.
* Unit ``1``: the collector appends ``_ratio`` to such gauges, the Python exporter appends nothing.
  Ratio instruments end their name with ``ratio`` (``bess.farm.soc.mean_ratio``), which gives
  ``_ratio`` through both.

Every instrument has a description (``promtool check metrics`` requires HELP text), no
non-histogram name ends in ``_count``/``_sum``/``_bucket``, and no name has a token promtool
takes for a non-base unit (``hours``, ``bits``, ``minutes``...): the alarm word is ``bitmask``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bess_farm.engine.layout import ALARM_NAMES, SOC_BANDS, STATE_NAMES, TEMP_BAND_EDGES_C

# instrument kinds (OpenTelemetry API names)
COUNTER = "counter"                          # synchronous, monotonic
HISTOGRAM = "histogram"                      # synchronous
OBSERVABLE_GAUGE = "observable_gauge"
OBSERVABLE_COUNTER = "observable_counter"    # monotonic, cumulative
OBSERVABLE_UPDOWN = "observable_up_down_counter"
KINDS = (COUNTER, HISTOGRAM, OBSERVABLE_GAUGE, OBSERVABLE_COUNTER, OBSERVABLE_UPDOWN)

# Explicit histogram buckets [s] (Views in :mod:`.setup`).
#: tick and physics step: 1 ms .. 1 s
TICK_BUCKETS_S = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
#: tick lateness: 0.1 ms .. 1 s (a healthy tick starts well under a millisecond late)
LATENESS_BUCKETS_S = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
#: snapshot publish (pointer swap plus a few small copies): 10 us .. 100 ms
PUBLISH_BUCKETS_S = (0.00001, 0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01,
                     0.02, 0.05, 0.1)
#: Modbus request: 0.1 ms .. 100 ms
MODBUS_BUCKETS_S = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1)
#: HTTP request: 1 ms .. 10 s
HTTP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                  5.0, 7.5, 10.0)

# Groups say where a value comes from (and which instruments scale with what).
FARM = "farm"               # engine aggregates of the published tick (numba reductions)
UNIT = "unit"               # per unit, for the capped unit selection
LOOP = "loop"               # simulation loop (TickStats and Telemetry.record_tick)
MODBUS = "modbus"           # ModbusStats and its observe hook
HTTP = "http"               # the ASGI middleware (otel/http.py)
PROCESS = "process"         # opentelemetry-instrumentation-system-metrics
CHAOS = "chaos"             # runtime.chaos, when present
GROUPS = (FARM, UNIT, LOOP, MODBUS, HTTP, PROCESS, CHAOS)


@dataclass(frozen=True)
class Instrument:
    name: str                                 # OpenTelemetry name
    kind: str                                 # one of KINDS
    unit: str                                 # UCUM, or an annotation in braces
    description: str
    group: str
    attributes: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None  # explicit histogram boundaries
    source: str = ""                          # where the value comes from (docs)
    #: for instruments created by a third-party instrumentation: its own name, renamed by a View
    original_name: str | None = None

    @property
    def prometheus_name(self) -> str:
        return prometheus_name(self)


_UNIT_WORDS = {"s": "seconds", "W": "watts", "Cel": "celsius", "V": "volts", "A": "amperes",
               "By": "bytes", "J": "joules", "Hz": "hertz", "1": "ratio"}


def prometheus_name(inst: Instrument) -> str:
    """The metric family name Prometheus shows (without ``_bucket``/``_count``/``_sum``), following
    the OpenTelemetry compatibility rules both translators implement."""
    name = re.sub(r"[^a-zA-Z0-9:]+", "_", inst.name)
    unit = "" if "{" in inst.unit else _UNIT_WORDS.get(inst.unit, inst.unit)
    if unit and not name.endswith("_" + unit):
        name += "_" + unit
    if inst.kind in (COUNTER, OBSERVABLE_COUNTER) and not name.endswith("_total"):
        name += "_total"
    return name


def soc_band_labels() -> tuple[str, ...]:
    w = 1.0 / SOC_BANDS
    return tuple(f"{i * w:.1f}-{(i + 1) * w:.1f}" for i in range(SOC_BANDS))


def temperature_band_labels() -> tuple[str, ...]:
    e = TEMP_BAND_EDGES_C
    return (f"<{e[0]:g}",) + tuple(f"{a:g}-{b:g}" for a, b in zip(e, e[1:])) + (f">={e[-1]:g}",)


def _g(name, unit, description, attributes=(), source="", group=FARM, kind=OBSERVABLE_GAUGE):
    return Instrument(name, kind, unit, description, group, tuple(attributes), source=source)


_STATES = ", ".join(f"{i} {n}" for i, n in enumerate(STATE_NAMES))
_ALARMS = ", ".join(f"bit {i} {n}" for i, n in enumerate(ALARM_NAMES))

INSTRUMENTS: tuple[Instrument, ...] = (
    # ------------------------------------------------------------------ farm (numba reductions)
    _g("bess.farm.power.rated", "W", "Sum of the units' PCS AC power ratings.", source="kpar"),
    _g("bess.farm.energy.capacity_watthours", "{Wh}",
       "Usable energy between each unit's SoC limits at its present capacity.",
       source="agg.e_capacity_wh"),
    _g("bess.farm.energy.available_watthours", "{Wh}",
       "Energy the farm can discharge: stored energy above each unit's minimum SoC.",
       source="agg.e_available_wh"),
    _g("bess.farm.energy.stored_watthours", "{Wh}", "Chemical energy stored in all units.",
       source="agg.e_stored_wh"),
    _g("bess.farm.power.ac", "W", "Farm AC power at the PCS terminals, positive when discharging.",
       source="agg.p_ac_w"),
    _g("bess.farm.power.dc", "W", "Farm DC power at the battery terminals, positive when discharging.",
       source="agg.p_dc_w"),
    _g("bess.farm.power.requested", "W", "AC power the units were asked for after dispatch.",
       source="agg.p_request_w"),
    _g("bess.farm.power.auxiliary", "W", "Auxiliary (HVAC, fans, controls) electric draw of all units.",
       source="agg.p_hvac_w"),
    _g("bess.farm.soc.mean_ratio", "1", "Mean state of charge over all units.", source="agg.soc_mean"),
    _g("bess.farm.soh.mean_ratio", "1", "Mean state of health (relative capacity) over all units.",
       source="agg.soh_mean"),
    _g("bess.farm.round_trip_efficiency_ratio", "1",
       "AC energy discharged over AC energy charged plus auxiliary energy, since start "
       "(absent before anything was charged).", source="agg.round_trip_efficiency"),
    _g("bess.farm.temperature.max", "Cel", "Highest unit cell temperature.", source="agg.temp_max_c"),
    _g("bess.farm.temperature.mean", "Cel", "Mean unit cell temperature.", source="agg.temp_mean_c"),
    _g("bess.farm.temperature.min", "Cel", "Lowest unit cell temperature.", source="agg.temp_min_c"),
    _g("bess.farm.units.by_state", "{unit}", f"Units per operating state ({', '.join(STATE_NAMES)}).",
       ("state",), source="agg.units_per_state"),
    _g("bess.farm.units.by_soc_band", "{unit}", "Units per 10 % state-of-charge band.",
       ("soc_band",), source="agg.units_per_soc_band"),
    _g("bess.farm.units.by_temperature_band", "{unit}",
       "Units per 10 degC cell-temperature band (band edges "
       + ", ".join(f"{e:g}" for e in TEMP_BAND_EDGES_C) + " degC).",
       ("temperature_band",), source="agg.units_per_temp_band"),
    _g("bess.farm.units.alarmed", "{unit}", "Units with at least one alarm bit set.",
       source="agg.units_with_alarms"),
    _g("bess.farm.equivalent_full_cycles.mean", "{cycle}", "Mean equivalent full cycles per unit.",
       source="agg.efc_mean"),
    Instrument("bess.farm.energy.charged_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "AC energy taken from the grid for charging, since start.", FARM,
               source="agg.e_ac_charged_wh"),
    Instrument("bess.farm.energy.discharged_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "AC energy delivered to the grid, since start.", FARM, source="agg.e_ac_discharged_wh"),
    Instrument("bess.farm.energy.dc_charged_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "DC energy into the battery terminals, since start.", FARM, source="agg.e_dc_charged_wh"),
    Instrument("bess.farm.energy.dc_discharged_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "DC energy out of the battery terminals, since start.", FARM,
               source="agg.e_dc_discharged_wh"),
    Instrument("bess.farm.energy.auxiliary_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "Auxiliary (HVAC) electric energy consumed, since start.", FARM, source="agg.e_aux_wh"),
    Instrument("bess.farm.energy.loss_watthours", OBSERVABLE_COUNTER, "{Wh}",
               "PCS, ohmic and coulombic losses, since start.", FARM, source="agg.e_loss_wh"),
    # ------------------------------------------------------------------ per unit (capped)
    _g("bess.unit.soc_ratio", "1", "State of charge of the unit.", ("unit_id", "vendor"),
       "dyn[SOC]", UNIT),
    _g("bess.unit.soh_ratio", "1", "State of health (relative capacity) of the unit.",
       ("unit_id", "vendor"), "upar[SOH] (published copy)", UNIT),
    _g("bess.unit.temperature", "Cel", "Cell temperature of the unit.", ("unit_id", "vendor"),
       "dyn[TEMP_C]", UNIT),
    _g("bess.unit.voltage", "V", "Pack terminal voltage of the unit.", ("unit_id", "vendor"),
       "out[VOLTAGE_V]", UNIT),
    _g("bess.unit.current", "A", "Battery current of the unit, positive when discharging.",
       ("unit_id", "vendor"), "out[CURRENT_A]", UNIT),
    _g("bess.unit.power", "W", "AC power of the unit, positive when discharging.",
       ("unit_id", "vendor"), "out[P_AC_W]", UNIT),
    _g("bess.unit.equivalent_full_cycles", "{cycle}", "Equivalent full cycles of the unit.",
       ("unit_id", "vendor"), "dyn[EFC]", UNIT),
    _g("bess.unit.state", "{state}", f"Operating state code of the unit: {_STATES}.",
       ("unit_id", "vendor"), "status", UNIT),
    _g("bess.unit.alarm_bitmask", "{bitmask}", f"Alarm bits of the unit as an integer: {_ALARMS}.",
       ("unit_id", "vendor"), "alarms", UNIT),
    _g("bess.unit_metrics.cap", "{unit}",
       "Most units that get per-unit series (telemetry.unit_metrics_cap).", source="settings", group=UNIT),
    _g("bess.unit_metrics.units", "{unit}", "Units that have per-unit series now.",
       source="selection", group=UNIT),
    _g("bess.unit_metrics.omitted", "{unit}",
       "Selected units left without per-unit series because of the cap.", source="selection",
       group=UNIT),
    # ------------------------------------------------------------------ simulation loop
    Instrument("bess.tick.duration", HISTOGRAM, "s",
               "Wall time of one tick: the engine step and its hand-over to the event loop.", LOOP,
               buckets=TICK_BUCKETS_S, source="Telemetry.record_tick"),
    Instrument("bess.physics.step.duration", HISTOGRAM, "s",
               "Wall time of the physics kernel call of one tick (Farm.step).", LOOP,
               buckets=TICK_BUCKETS_S, source="Telemetry.record_tick"),
    Instrument("bess.snapshot.publish.duration", HISTOGRAM, "s",
               "Wall time to publish a tick to the adapters (between ticks, on the event loop).", LOOP,
               buckets=PUBLISH_BUCKETS_S, source="Telemetry.record_tick"),
    Instrument("bess.tick.lateness", HISTOGRAM, "s",
               "How late a tick started against its slot on the monotonic clock.", LOOP,
               buckets=LATENESS_BUCKETS_S, source="Telemetry.record_tick"),
    Instrument("bess.ticks", OBSERVABLE_COUNTER, "{tick}", "Engine steps simulated since start.", LOOP,
               source="TickStats.ticks"),
    Instrument("bess.tick.overruns", OBSERVABLE_COUNTER, "{tick}",
               "Ticks that started a whole period or more late.", LOOP, source="TickStats.overruns"),
    Instrument("bess.tick.skipped", OBSERVABLE_COUNTER, "{tick}",
               "Tick slots dropped by the overrun policy.", LOOP, source="TickStats.skipped"),
    _g("bess.units.simulated", "{unit}", "Units the engine steps.", source="farm.n_units", group=LOOP),
    _g("bess.sim.time", "s", "Simulated time since start.", source="pub.time_s", group=LOOP),
    _g("bess.sim.time_ratio", "1",
       "Simulated seconds per wall-clock second, between the last two collections.",
       source="pub.time_s", group=LOOP),
    # ------------------------------------------------------------------ Modbus
    Instrument("bess.modbus.connections", OBSERVABLE_UPDOWN, "{connection}",
               "Open Modbus TCP connections.", MODBUS, source="ModbusStats.connections"),
    Instrument("bess.modbus.requests", OBSERVABLE_COUNTER, "{request}",
               "Modbus requests by function code, SunSpec model and outcome (ok, exception, "
               "silent).", MODBUS, ("function_code", "sunspec_model", "outcome"),
               source="ModbusStats.observe"),
    Instrument("bess.modbus.request.duration", HISTOGRAM, "s",
               "Time to answer one Modbus request, by function code, SunSpec model and outcome.",
               MODBUS, ("function_code", "sunspec_model", "outcome"), buckets=MODBUS_BUCKETS_S,
               source="ModbusStats.observe"),
    Instrument("bess.modbus.exceptions", OBSERVABLE_COUNTER, "{response}",
               "Modbus exception responses by exception code.", MODBUS, ("exception_code",),
               source="ModbusStats.exceptions"),
    Instrument("bess.modbus.writes_rejected", OBSERVABLE_COUNTER, "{request}",
               "Modbus writes refused with an exception (bad address or value).", MODBUS,
               source="ModbusStats.writes_rejected"),
    Instrument("bess.modbus.frames_dropped", OBSERVABLE_COUNTER, "{connection}",
               "Modbus connections closed because of bad framing.", MODBUS,
               source="ModbusStats.frames_dropped"),
    # ------------------------------------------------------------------ HTTP (semantic conventions)
    Instrument("http.server.request.duration", HISTOGRAM, "s",
               "Duration of HTTP server requests (its count is the request count).", HTTP,
               ("http.route", "http.request.method", "http.response.status_code", "url.scheme",
                "error.type"), buckets=HTTP_BUCKETS_S, source="otel.http.instrument_http"),
    # ------------------------------------------------------------------ process
    Instrument("process.cpu.time", OBSERVABLE_COUNTER, "s", "CPU seconds used by the process, by mode.",
               PROCESS, ("type",), source="system-metrics"),
    Instrument("process.memory.usage", OBSERVABLE_UPDOWN, "By",
               "Resident memory (RSS) of the process.", PROCESS, source="system-metrics"),
    Instrument("process.memory.virtual", OBSERVABLE_UPDOWN, "By", "Virtual memory of the process.",
               PROCESS, source="system-metrics"),
    Instrument("process.threads", OBSERVABLE_UPDOWN, "{thread}", "Threads of the process.", PROCESS,
               source="system-metrics", original_name="process.thread.count"),
    Instrument("process.context_switches", OBSERVABLE_COUNTER, "{context_switch}",
               "Context switches of the process, voluntary and involuntary.", PROCESS,
               ("type",), source="system-metrics"),
    Instrument("cpython.gc.collections", OBSERVABLE_COUNTER, "{collection}",
               "Garbage collector runs by generation.", PROCESS, ("cpython.gc.generation", "generation"),
               source="system-metrics"),
    # ------------------------------------------------------------------ chaos
    _g("bess.chaos.faults.active", "{fault}",
       "Chaos faults active now, by fault type (0 without a chaos scenario).", ("fault_type",),
       source="runtime.chaos.active_by_type()", group=CHAOS),
    Instrument("bess.chaos.faults.injected", OBSERVABLE_COUNTER, "{fault}",
               "Chaos faults injected since start, by fault type (0 without a chaos scenario).", CHAOS,
               ("fault_type",), source="runtime.chaos.injected_by_type()"),
)

BY_NAME: dict[str, Instrument] = {i.name: i for i in INSTRUMENTS}
#: the configuration of opentelemetry-instrumentation-system-metrics (its names)
SYSTEM_METRICS_CONFIG: dict[str, list[str] | None] = {
    "process.cpu.time": ["user", "system"],
    "process.memory.usage": None,
    "process.memory.virtual": None,
    "process.thread.count": None,
    "process.context_switches": ["involuntary", "voluntary"],
    "cpython.gc.collections": None,
}
UNIT_INSTRUMENTS = tuple(i for i in INSTRUMENTS if i.group == UNIT and "unit_id" in i.attributes)


def check_table(instruments=INSTRUMENTS) -> list[str]:
    """Problems with the table (a test asserts there are none)."""
    problems = []
    seen: set[str] = set()
    for i in instruments:
        pn = prometheus_name(i)
        if i.kind not in KINDS:
            problems.append(f"{i.name}: unknown kind {i.kind}")
        if i.group not in GROUPS:
            problems.append(f"{i.name}: unknown group {i.group}")
        if not i.description.strip():
            problems.append(f"{i.name}: no description")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", pn):
            problems.append(f"{i.name}: Prometheus name {pn} is not snake_case")
        if pn in seen:
            problems.append(f"{i.name}: Prometheus name {pn} is used twice")
        seen.add(pn)
        if i.kind != HISTOGRAM and re.search(r"_(count|sum|bucket)$", pn):
            problems.append(f"{i.name}: {pn} ends with a histogram suffix")
        if i.unit == "Wh" or ("watthours" in i.name) != (i.unit == "{Wh}"):
            problems.append(f"{i.name}: energy needs the name suffix watthours and unit {{Wh}}")
        if set(pn.split("_")) & {"hours", "minutes", "days", "bits", "milliseconds", "kilowatts"}:
            problems.append(f"{i.name}: {pn} has a token promtool reads as a non-base unit")
        if i.unit == "1" and not pn.endswith("_ratio"):
            problems.append(f"{i.name}: a unit-1 instrument must end with ratio")
        if (i.kind == HISTOGRAM) != (i.buckets is not None):
            problems.append(f"{i.name}: histograms (only) need explicit buckets")
        if i.buckets is not None and list(i.buckets) != sorted(set(i.buckets)):
            problems.append(f"{i.name}: buckets must increase")
    return problems
