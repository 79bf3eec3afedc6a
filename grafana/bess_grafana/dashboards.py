"""The bess-farm Grafana dashboards, as code.

Seven dashboards (config.UIDS): farm overview, unit drill-down, protocol health, API performance,
chaos, degradation, alerts. Metric names come from the instrument table (metrics.py), farm
aggregates from the recording rules (rules.py), selectors, thresholds and UIDs from config.py.
``python grafana/build.py --write`` writes them to grafana/dashboards/<uid>.json.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import dashboard as dm

from bess_farm.engine.layout import ALARM_NAMES, STATE_NAMES
from bess_farm.otel.instruments import soc_band_labels, temperature_band_labels

from . import config as C
from . import metrics as M
from .panels import DS, Q, band_heatmap, bars, gauge_, hist, row, stat_, table_, timeline, ts, value_map

FARM, SHARD, UNIT, RATE = C.FARM_SEL, C.SHARD_SEL, C.UNIT_SEL, C.RATE
QUANTILES = (0.5, 0.9, 0.99)
STATE_COLOURS = {"offline": "gray", "standby": "blue", "idle": "super-light-green", "charging": "green",
                 "discharging": "purple", "fault": "orange", "thermal_runaway": "red"}


# ------------------------------------------------------------------------------ variables
class Var:
    """A query variable ``label_values(<metric>{<selector>}, <label>)``."""

    def __init__(self, name, label, metric, selector, label_name, multi, description, sort=1,
                 default_all=True):
        self.name, self.label, self.metric, self.selector = name, label, metric, selector
        self.label_name, self.multi, self.description, self.sort = label_name, multi, description, sort
        self.default_all = default_all

    @property
    def query(self) -> str:
        sel = "{" + self.selector + "}" if self.selector else ""
        return f"label_values({self.metric}{sel}, {self.label_name})"

    def builder(self) -> db.QueryVariable:
        v = (db.QueryVariable(self.name).label(self.label).description(self.description)
             .datasource(DS).query(self.query).refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
             .sort(dm.VariableSort(self.sort)).multi(self.multi).include_all(True)
             .all_value(C.ALL_VALUE))
        if self.default_all:       # the unit variable starts on its first unit, not on all of them
            v = v.current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        return v


VARIABLES = [
    Var(C.VAR_NAMESPACE, "Namespace", M.UNITS_SIMULATED, "", "namespace", False,
        "Kubernetes namespace of the farm (All also matches series without the label)."),
    Var(C.VAR_JOB, "Farm (job)", M.UNITS_SIMULATED, f'namespace=~"${C.VAR_NAMESPACE}"', "job", True,
        "Scrape job: one bess-farm release, all its shards."),
    Var(C.VAR_INSTANCE, "Shard (instance)", M.UNITS_SIMULATED,
        f'namespace=~"${C.VAR_NAMESPACE}", job=~"${C.VAR_JOB}"', "instance", True,
        "Scrape target: one shard (pod) of the farm. Farm-wide panels add all shards up."),
    Var(C.VAR_UNIT, "Unit", M.UNIT_SOC, C.SHARD_SEL, "unit_id", True,
        "Unit id (farm-wide numbering), among the units with per-unit series "
        "(telemetry.unit_metrics_cap).", sort=3, default_all=False),
]


def datasource_variable() -> db.DatasourceVariable:
    return (db.DatasourceVariable(C.DATASOURCE_VAR).label("Data source").type("prometheus")
            .description("The Prometheus that scrapes bess-farm (every panel queries it)."))


# ------------------------------------------------------------------------------ annotations
class _PromAnnotation(dm.AnnotationQuery):
    """AnnotationQuery plus the Prometheus annotation fields the SDK model does not carry."""

    def __init__(self, title_format: str, text_format: str, step: str, tag_keys: str, **kw):
        super().__init__(**kw)
        self.title_format, self.text_format, self.step, self.tag_keys = (title_format, text_format,
                                                                          step, tag_keys)

    def to_json(self) -> dict[str, object]:
        out = super().to_json()
        out.update({"titleFormat": self.title_format, "textFormat": self.text_format,
                    "step": self.step, "tagKeys": self.tag_keys, "useValueForTime": False})
        return out


def annotation(name, expr, colour, title, text="", tags="", step="30s") -> _PromAnnotation:
    return _PromAnnotation(name=name, datasource=DS, enable=True, icon_color=colour, expr=expr,
                           title_format=title, text_format=text, step=step, tag_keys=tags)


def fault_annotations() -> list[_PromAnnotation]:
    return [
        annotation("Chaos fault injected",
                   f"sum by (fault_type) (increase({M.CHAOS_INJECTED}{{{FARM}}}[2m])) > 0",
                   "orange", "{{fault_type}} injected", "chaos: a fault of type {{fault_type}} started",
                   "fault_type"),
        annotation("Chaos fault active", f"sum by (fault_type) ({M.CHAOS_ACTIVE}{{{FARM}}}) > 0",
                   "yellow", "{{fault_type}} active", "chaos: {{fault_type}} faults active", "fault_type"),
        annotation("Thermal runaway",
                   f'sum by (job) ({M.UNITS_BY_STATE}{{{FARM}, state="thermal_runaway"}}) > 0',
                   "red", "thermal runaway", "units in thermal runaway", "job"),
    ]


def alert_annotation() -> _PromAnnotation:
    return annotation("Alerts firing", f'ALERTS{{{C.ALERTS_SEL}, alertstate="firing"}}', "red",
                      "{{alertname}}", "{{alertname}} ({{severity}}) firing", "alertname,severity")


# ------------------------------------------------------------------------------ the board
class Board:
    """A dashboard under construction: ids are assigned in order, rows group panels."""

    def __init__(self, key: str, title: str, description: str, *, unit_var=False,
                 annotations: list | None = None):
        self.key = key
        self.uid = C.UIDS[key]
        self.next_id = 1
        self.d = (db.Dashboard(title).uid(self.uid).description(description).tags(C.SCHEMA_TAGS)
                  .refresh(C.REFRESH).time(C.TIME_FROM, C.TIME_TO).timezone(C.TIMEZONE).editable()
                  .tooltip(dm.DashboardCursorSync.CROSSHAIR)
                  .link(db.DashboardLink("BESS dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                        .tags(C.SCHEMA_TAGS).as_dropdown(True).include_vars(True).keep_time(True)))
        self.d = self.d.with_variable(datasource_variable())
        for v in VARIABLES:
            if v.name != C.VAR_UNIT or unit_var:
                self.d = self.d.with_variable(v.builder())
        self.annotations = list(annotations or [])

    def row(self, title: str) -> "Board":
        self.d = self.d.with_row(row(title).id(self.next_id))
        self.next_id += 1
        return self

    def add(self, *panels) -> "Board":
        for p in panels:
            self.d = self.d.with_panel(p.id(self.next_id))
            self.next_id += 1
        return self

    def build(self) -> dm.Dashboard:
        dash = self.d.build()
        builtin = dm.AnnotationQuery(name="Annotations & Alerts", datasource=dm.DataSourceRef(
            type_val="grafana", uid="-- Grafana --"), enable=True, hide=True,
            icon_color="rgba(0, 211, 255, 1)", type_val="dashboard", built_in=1)
        dash.annotations = dm.AnnotationContainer(list_val=[builtin] + self.annotations)
        return dash


# ------------------------------------------------------------------------------ 1. farm overview
def overview() -> Board:
    b = Board("overview", "BESS farm overview",
              "The whole farm (all shards of the selected jobs): capacity, energy, state of charge, "
              "power, units per state, temperature and SoC bands, round-trip efficiency, alerts.",
              annotations=fault_annotations() + [alert_annotation()])
    b.row("Now")
    b.add(
        stat_("Rated power", "Sum of the units' PCS AC power ratings over all shards "
              f"(recording rule {M.R_POWER_RATED}).", [Q(f"{M.R_POWER_RATED}{{{FARM}}}", "{{job}}")],
              unit="watt", graph=False, w=3),
        stat_("Usable capacity", "Usable energy between each unit's SoC limits at its present "
              "capacity (falls as the units age).", [Q(f"{M.R_ENERGY_CAPACITY}{{{FARM}}}", "{{job}}")],
              unit="watth", w=3),
        stat_("Energy available", "Energy the farm can discharge now: stored energy above each "
              "unit's minimum SoC.", [Q(f"{M.R_ENERGY_AVAILABLE}{{{FARM}}}", "{{job}}")], unit="watth", w=3),
        gauge_("Mean SoC", "Mean state of charge over all units of all shards (weighted by units "
               "per shard). Red below 10 % and above 90 % (alert thresholds).",
               [Q(f"{M.R_SOC_MEAN}{{{FARM}}}", "{{job}}")], unit="percentunit", lo=0, hi=1,
               steps=C.SOC_STEPS, w=3),
        stat_("Farm AC power", "AC power at the PCS terminals of all units, positive when "
              "discharging.", [Q(f"{M.R_POWER_AC}{{{FARM}}}", "{{job}}")], unit="watt", w=3),
        stat_("Round-trip efficiency", "AC energy out over AC energy in plus auxiliary (HVAC) "
              "energy since start, all shards (the engine's definition). Empty before any energy "
              "came in.", [Q(f"{M.R_RTE}{{{FARM}}}", "{{job}}")], unit="percentunit",
              steps=C.RTE_STEPS, decimals=1, w=3),
        stat_("Units with alarms", "Units with at least one alarm bit set.",
              [Q(f"{M.R_UNITS_ALARMED}{{{FARM}}}", "{{job}}")], steps=(("green", None), ("orange", 1)), w=3),
        stat_("Active alerts", "bess-farm alerts firing now (Prometheus ALERTS series); see the "
              "Alerts dashboard.", [Q(f'count(ALERTS{{{C.ALERTS_SEL}, alertstate="firing"}}) or vector(0)',
                                      "firing")],
              steps=(("green", None), ("red", 1)), graph=False, w=3),
    )
    b.row("Power and energy")
    b.add(
        ts("Farm power", "AC and DC power of all units (positive: discharging), the power the units "
           "were asked for after dispatch, and the auxiliary (HVAC) draw.",
           [Q(f"sum({M.R_POWER_AC}{{{FARM}}})", "AC"), Q(f"sum({M.R_POWER_DC}{{{FARM}}})", "DC"),
            Q(f"sum({M.R_POWER_REQUESTED}{{{FARM}}})", "requested"),
            Q(f"sum({M.R_POWER_AUX}{{{FARM}}})", "auxiliary")], unit="watt"),
        ts("Energy", "Usable capacity, energy available to discharge, and chemical energy stored.",
           [Q(f"sum({M.R_ENERGY_CAPACITY}{{{FARM}}})", "capacity"),
            Q(f"sum({M.R_ENERGY_AVAILABLE}{{{FARM}}})", "available"),
            Q(f"sum({M.R_ENERGY_STORED}{{{FARM}}})", "stored")], unit="watth", lo=0),
        ts("Power per shard", "Farm AC power of each selected shard (positive: discharging).",
           [Q(f"sum by (instance) ({M.POWER_AC}{{{SHARD}}})", "{{instance}}")], unit="watt", w=8),
        hist("Power distribution over units", "How the AC power is spread over the units with "
             "per-unit series now (positive: discharging): a narrow peak is an even dispatch.",
             [Q(f"{M.UNIT_POWER}{{{SHARD}}}", "unit {{unit_id}}", instant=True)], unit="watt", w=8),
        ts("Round-trip efficiency over time", "AC energy out over AC energy in plus auxiliary energy, since "
           "start (all shards).", [Q(f"{M.R_RTE}{{{FARM}}}", "{{job}}")], unit="percentunit",
           steps=C.RTE_STEPS, lo=0, w=8),
    )
    b.row("State of charge and units")
    b.add(
        ts("Mean SoC over time", "Mean state of charge (all units, all shards), on a fixed 0-100 % axis with "
           "the alert zones.", [Q(f"{M.R_SOC_MEAN}{{{FARM}}}", "{{job}}")], unit="percentunit",
           lo=0, hi=1, steps=C.SOC_STEPS, threshold_zones=True),
        ts("Units per state", "Units in each operating state over time (stacked): offline, standby, "
           "idle, charging, discharging, fault, thermal_runaway.",
           [Q(f"sum by (state) ({M.R_UNITS_BY_STATE}{{{FARM}}})", "{{state}}")], stack=True, lo=0,
           decimals=0, colours=STATE_COLOURS),
        bars("Units per state now", "Units in each operating state now.",
             [Q(f"sum by (state) ({M.R_UNITS_BY_STATE}{{{FARM}}})", "{{state}}", instant=True)],
             decimals=0, w=8, colours=STATE_COLOURS),
        band_heatmap("SoC bands over time", "Units per 10 % state-of-charge band over time (rows "
                     "0-10 % at the bottom to 90-100 % at the top; colour: unit count).",
                     [Q(f'sum({M.R_UNITS_BY_SOC_BAND}{{{FARM}, soc_band="{band}"}})', band)
                      for band in soc_band_labels()], w=8),
        band_heatmap("Temperature bands over time", "Units per 10 degC cell-temperature band over "
                     "time (rows from below 0 degC at the bottom to 60 degC and above at the top).",
                     [Q(f'sum({M.R_UNITS_BY_TEMP_BAND}{{{FARM}, temperature_band="{band}"}})', band)
                      for band in temperature_band_labels()], w=8),
    )
    b.row("Temperature")
    b.add(
        ts("Cell temperature", "Lowest, mean and highest unit cell temperature over all shards, "
           "with the colour zones (LFP derates at 45 and trips at 55 degC).",
           [Q(f"min({M.R_TEMP_MIN}{{{FARM}}})", "min"), Q(f"max({M.R_TEMP_MEAN}{{{FARM}}})", "mean"),
            Q(f"max({M.R_TEMP_MAX}{{{FARM}}})", "max")], unit="celsius", steps=C.TEMP_STEPS,
           threshold_zones=True, w=24),
    )
    return b


# ------------------------------------------------------------------------------ 2. unit drill-down
def unit() -> Board:
    b = Board("unit", "BESS unit drill-down",
              "The chosen unit(s): SoC, SoH, temperature, voltage, current, power, equivalent full "
              "cycles, state and alarm bits. Only units with per-unit series "
              "(telemetry.unit_metrics_cap) can be chosen.", unit_var=True,
              annotations=fault_annotations())
    leg = "unit {{unit_id}}"
    b.row("Unit values")
    b.add(
        ts("State of charge", "State of charge of the unit (model truth, not the sensor reading), "
           "fixed 0-100 % axis.", [Q(f"{M.UNIT_SOC}{{{UNIT}}}", leg)], unit="percentunit", lo=0, hi=1,
           steps=C.SOC_STEPS, threshold_zones=True, w=8),
        ts("State of health", "Relative capacity of the unit (1 = new).",
           [Q(f"{M.UNIT_SOH}{{{UNIT}}}", leg)], unit="percentunit", hi=1, steps=C.SOH_STEPS,
           threshold_zones=True, decimals=2, w=8),
        ts("Cell temperature", "Cell temperature of the unit, with the colour zones.",
           [Q(f"{M.UNIT_TEMP}{{{UNIT}}}", leg)], unit="celsius", steps=C.TEMP_STEPS,
           threshold_zones=True, w=8),
        ts("Pack voltage", "Pack terminal voltage of the unit.", [Q(f"{M.UNIT_VOLTAGE}{{{UNIT}}}", leg)],
           unit="volt", w=8),
        ts("Current", "Battery current of the unit, positive when discharging.",
           [Q(f"{M.UNIT_CURRENT}{{{UNIT}}}", leg)], unit="amp", w=8),
        ts("AC power", "AC power of the unit, positive when discharging.",
           [Q(f"{M.UNIT_POWER}{{{UNIT}}}", leg)], unit="watt", w=8),
        ts("Equivalent full cycles", "Equivalent full cycles of the unit (sum of |dSoC| / 2).",
           [Q(f"{M.UNIT_EFC}{{{UNIT}}}", leg)], decimals=2, w=8),
        table_("Alarm bitmask now", "The unit's alarm bits as an integer (bit 0 over_voltage ... "
               "bit 12 self_heating); the timeline below decodes them.",
               [Q(f"{M.UNIT_ALARMS}{{{UNIT}}}", leg, instant=True, table=True)], w=16,
               transformations=[("organize", {"excludeByName": {"Time": True, "__name__": True}})]),
    )
    b.row("State and alarms")
    b.add(
        timeline("Operating state", "Operating state of the unit over time.",
                 [Q(f"{M.UNIT_STATE}{{{UNIT}}}", leg)],
                 mappings=value_map({i: (n, STATE_COLOURS[n]) for i, n in enumerate(STATE_NAMES)}), h=6),
        timeline("Alarm bits", "Each alarm bit of the unit over time (red: set).",
                 [Q(f"{alarm_bit_expr(name)}", f"{{{{unit_id}}}} {name}") for name in ALARM_NAMES],
                 mappings=value_map({0: ("clear", "transparent"), 1: ("set", "red")}), h=14,
                 row_height=0.8),
    )
    return b


def alarm_bit_expr(name: str) -> str:
    return f"floor({M.UNIT_ALARMS}{{{UNIT}}} / {2 ** ALARM_NAMES.index(name)}) % 2"


# ------------------------------------------------------------------------------ 3. protocol health
def _quantiles(bucket: str, sel: str, by: str = "", legend: str = "") -> list[Q]:
    by_ = f"le, {by}" if by else "le"
    return [Q(f"histogram_quantile({q}, sum by ({by_}) (rate({bucket}{{{sel}}}[{RATE}])))",
              f"{legend}p{q * 100:g}") for q in QUANTILES]


def protocol() -> Board:
    b = Board("protocol", "BESS protocol health",
              "Modbus TCP (connections, requests by function code, errors by exception code, "
              "latency) and the simulation loop (tick duration, lateness, overruns) per shard.")
    b.row("Modbus")
    b.add(
        ts("Modbus connections", "Open Modbus TCP connections per shard.",
           [Q(f"sum by (instance) ({M.MODBUS_CONNECTIONS}{{{SHARD}}})", "{{instance}}")], lo=0,
           decimals=0, w=8),
        ts("Requests by function code", "Modbus requests per second by function code (3, 4, 6, 16; "
           "others are 'other').", [Q(f"sum by (function_code) (rate({M.MODBUS_REQUESTS}{{{SHARD}}}[{RATE}]))",
                                      "fc {{function_code}}")], unit="reqps", lo=0, w=8),
        ts("Requests by outcome", "Modbus requests per second by outcome: ok, exception (an "
           "exception response) or silent (left unanswered: comm fault).",
           [Q(f"sum by (outcome) (rate({M.MODBUS_REQUESTS}{{{SHARD}}}[{RATE}]))", "{{outcome}}")],
           unit="reqps", lo=0, w=8),
        ts("Exceptions by code", "Modbus exception responses per second by exception code (1 "
           "illegal function, 2 illegal address, 3 illegal value, 4 device failure, 11 gateway "
           "target failed to respond).",
           [Q(f"sum by (exception_code) (rate({M.MODBUS_EXCEPTIONS}{{{SHARD}}}[{RATE}]))",
              "code {{exception_code}}")], unit="reqps", lo=0, w=8),
        ts("Rejected writes and dropped frames", "Writes refused with an exception, and connections "
           "closed because of bad framing, per second.",
           [Q(f"sum(rate({M.MODBUS_WRITES_REJECTED}{{{SHARD}}}[{RATE}]))", "writes rejected"),
            Q(f"sum(rate({M.MODBUS_FRAMES_DROPPED}{{{SHARD}}}[{RATE}]))", "frames dropped")],
           unit="reqps", lo=0, w=8),
        ts("Modbus latency", "Time to answer one Modbus request: p50, p90, p99 over the selected "
           "shards (deliberate comm-fault latency included).",
           _quantiles(M.MODBUS_DURATION, SHARD), unit="s", lo=0, w=8),
        ts("Modbus p99 latency by SunSpec model", "p99 time to answer a Modbus request, by the "
           "SunSpec model the start address falls in.",
           [Q(f"histogram_quantile(0.99, sum by (le, sunspec_model) "
              f"(rate({M.MODBUS_DURATION}{{{SHARD}}}[{RATE}])))", "model {{sunspec_model}}")],
           unit="s", lo=0, w=24),
    )
    b.row("Tick loop")
    b.add(
        ts("Tick duration", "Wall time of one tick (the engine step and its hand-over): p50, p90, "
           "p99. The tick period is 100 ms at 10 Hz.",
           _quantiles(M.TICK_DURATION, SHARD), unit="s", lo=0,
           steps=(("green", None), ("orange", 0.05), ("red", 0.1)), threshold_zones=True, w=8),
        ts("Physics step and publish", "p99 of the physics kernel call and of publishing a tick "
           "to the adapters.",
           [Q(f"histogram_quantile(0.99, sum by (le) (rate({M.STEP_DURATION}{{{SHARD}}}[{RATE}])))",
              "physics step p99"),
            Q(f"histogram_quantile(0.99, sum by (le) (rate({M.PUBLISH_DURATION}{{{SHARD}}}[{RATE}])))",
              "publish p99")], unit="s", lo=0, w=8),
        ts("Tick lateness", "How late a tick started against its slot: p50, p90, p99.",
           _quantiles(M.TICK_LATENESS, SHARD), unit="s", lo=0, w=8),
        ts("Overruns and skipped ticks", "Ticks per second that started a whole period or more "
           "late, and tick slots dropped by the overrun policy.",
           [Q(f"sum(rate({M.TICK_OVERRUNS}{{{SHARD}}}[{RATE}]))", "overruns"),
            Q(f"sum(rate({M.TICK_SKIPPED}{{{SHARD}}}[{RATE}]))", "skipped")], unit="short", lo=0, w=8),
        ts("Tick rate", "Engine steps per second per shard (nominal 10).",
           [Q(f"sum by (instance) (rate({M.TICKS}{{{SHARD}}}[{RATE}]))", "{{instance}}")],
           unit="hertz", lo=0, w=8),
        ts("Simulation speed", "Simulated seconds per wall-clock second per shard (--speed).",
           [Q(f"{M.SIM_TIME_RATIO}{{{SHARD}}}", "{{instance}}")], lo=0, w=8),
    )
    b.row("Process")
    b.add(
        ts("CPU", "CPU cores used by each shard's process (user + system).",
           [Q(f"sum by (instance) (rate({M.PROCESS_CPU}{{{SHARD}}}[{RATE}]))", "{{instance}}")],
           unit="short", lo=0),
        ts("Memory", "Resident memory (RSS) of each shard's process.",
           [Q(f"{M.PROCESS_RSS}{{{SHARD}}}", "{{instance}}")], unit="bytes", lo=0),
    )
    return b


# ------------------------------------------------------------------------------ 4. API performance
def api() -> Board:
    b = Board("api", "BESS API performance",
              "The REST API per route template: latency percentiles, request rate, errors by "
              "status. The server-sent event stream (/api/v1/stream) is left out of the latency "
              "panels: its duration is the connection's lifetime.")
    lat_sel = f'{SHARD}, {M.L_ROUTE}!="{C.STREAM_ROUTE}"'
    b.row("Latency")
    b.add(*[
        ts(f"Latency p{q * 100:g} per route", f"p{q * 100:g} of the request duration per route "
           "template (unmatched paths have an empty route).",
           [Q(f"histogram_quantile({q}, sum by (le, {M.L_ROUTE}) (rate({M.HTTP_DURATION}{{{lat_sel}}}[{RATE}])))",
              f"{{{{{M.L_ROUTE}}}}}")], unit="s", lo=0, w=8)
        for q in QUANTILES])
    b.row("Traffic and errors")
    b.add(
        ts("Request rate per route", "Requests per second per route template and method.",
           [Q(f"sum by ({M.L_ROUTE}, {M.L_METHOD}) (rate({M.HTTP_REQUESTS}{{{SHARD}}}[{RATE}]))",
              f"{{{{{M.L_METHOD}}}}} {{{{{M.L_ROUTE}}}}}")], unit="reqps", lo=0, w=12),
        ts("Requests by status", "Requests per second by HTTP status code (stacked).",
           [Q(f"sum by ({M.L_STATUS}) (rate({M.HTTP_REQUESTS}{{{SHARD}}}[{RATE}]))",
              f"{{{{{M.L_STATUS}}}}}")], unit="reqps", lo=0, stack=True, w=12),
        ts("Error rate by status", "4xx and 5xx answers per second by status code (4xx: the "
           "client's request; 5xx: the server).",
           [Q(f'sum by ({M.L_STATUS}) (rate({M.HTTP_REQUESTS}{{{SHARD}, {M.L_STATUS}=~"4..|5.."}}[{RATE}]))',
              f"{{{{{M.L_STATUS}}}}}")], unit="reqps", lo=0, w=12),
        stat_("5xx ratio", f"Share of requests answered 5xx (alert above "
              f"{C.API_ERROR_RATIO * 100:g} % for 5 minutes).",
              [Q(f'(sum(rate({M.HTTP_REQUESTS}{{{SHARD}, {M.L_STATUS}=~"5.."}}[{RATE}])) or vector(0))'
                 f" / sum(rate({M.HTTP_REQUESTS}{{{SHARD}}}[{RATE}]))", "5xx")],
              unit="percentunit", steps=(("green", None), ("orange", 0.01), ("red", C.API_ERROR_RATIO)),
              decimals=2, w=6, h=8),
        stat_("4xx ratio", "Share of requests answered 4xx (bad requests, unknown routes or units, "
              "missing token).",
              [Q(f'(sum(rate({M.HTTP_REQUESTS}{{{SHARD}, {M.L_STATUS}=~"4.."}}[{RATE}])) or vector(0))'
                 f" / sum(rate({M.HTTP_REQUESTS}{{{SHARD}}}[{RATE}]))", "4xx")],
              unit="percentunit", decimals=2, w=6, h=8),
    )
    return b


# ------------------------------------------------------------------------------ 5. chaos
def chaos() -> Board:
    b = Board("chaos", "BESS chaos",
              "Chaos faults (docs/chaos.md): active faults by type over time, faults injected, and "
              "what the farm did meanwhile. Annotations mark injections, active faults and thermal "
              "runaway.", annotations=fault_annotations() + [alert_annotation()])
    b.row("Faults")
    b.add(
        ts("Active faults by type", "Fault instances active per fault type over time (stacked; "
           "instantaneous faults such as thermal_runaway are never active).",
           [Q(f"sum by (fault_type) ({M.R_CHAOS_ACTIVE}{{{FARM}}})", "{{fault_type}}")], stack=True,
           lo=0, decimals=0, legend_calcs=("lastNotNull", "max")),
        ts("Faults injected", "Fault instances started per fault type in each interval.",
           [Q(f"sum by (fault_type) (increase({M.CHAOS_INJECTED}{{{SHARD}}}[{RATE}]))", "{{fault_type}}")],
           bars=True, lo=0, decimals=0),
        bars("Active faults now", "Fault instances active now, per fault type.",
             [Q(f"sum by (fault_type) ({M.R_CHAOS_ACTIVE}{{{FARM}}})", "{{fault_type}}", instant=True)],
             decimals=0, w=8, h=10, steps=(("green", None), ("orange", 1))),
        bars("Injected since start", "Fault instances injected since each process started, per type.",
             [Q(f"sum by (fault_type) ({M.R_CHAOS_INJECTED}{{{FARM}}})", "{{fault_type}}", instant=True)],
             decimals=0, w=8, h=10),
        table_("Injected in the time range", "Fault instances injected per type within the "
               "dashboard's time range.",
               [Q(f"sum by (fault_type) (increase({M.CHAOS_INJECTED}{{{SHARD}}}[$__range]))",
                  "{{fault_type}}", instant=True, table=True)], decimals=0, w=8, h=10,
               transformations=[("organize", {"excludeByName": {"Time": True}})]),
    )
    b.row("Effect on the farm")
    b.add(
        ts("Units offline, tripped, in runaway", "Units in the states chaos faults lead to.",
           [Q(f'sum by (state) ({M.R_UNITS_BY_STATE}{{{FARM}, state=~"offline|fault|thermal_runaway"}})',
              "{{state}}")], lo=0, decimals=0, w=8, colours=STATE_COLOURS),
        ts("Units with alarms", "Units with at least one alarm bit set.",
           [Q(f"sum({M.R_UNITS_ALARMED}{{{FARM}}})", "units alarmed")], lo=0, decimals=0, w=8),
        ts("Hottest unit", "Highest unit cell temperature, with the colour zones.",
           [Q(f"max({M.R_TEMP_MAX}{{{FARM}}})", "max")], unit="celsius", steps=C.TEMP_STEPS,
           threshold_zones=True, w=8),
        ts("Farm power vs request", "Farm AC power against the power the units were asked for: a "
           "gap shows tripped, derated, stuck or disconnected units.",
           [Q(f"sum({M.R_POWER_AC}{{{FARM}}})", "AC"),
            Q(f"sum({M.R_POWER_REQUESTED}{{{FARM}}})", "requested")], unit="watt", w=12),
        ts("Modbus outcomes", "Modbus requests per second by outcome (comm faults: exception, "
           "silent).", [Q(f"sum by (outcome) (rate({M.MODBUS_REQUESTS}{{{SHARD}}}[{RATE}]))",
                          "{{outcome}}")], unit="reqps", lo=0, w=12),
    )
    return b


# ------------------------------------------------------------------------------ 6. degradation
def degradation() -> Board:
    b = Board("degradation", "BESS degradation",
              "State of health and equivalent full cycles across the farm, the fade rate per "
              "simulated year, and the weakest units.", annotations=fault_annotations())
    year = C.SECONDS_PER_YEAR
    unit_fade = (f"-1 * deriv({M.UNIT_SOH}{{{SHARD}}}[{C.FADE_WINDOW}])"
                 f" / on (namespace, job, instance) group_left ()"
                 f" (deriv({M.SIM_TIME}{{{SHARD}}}[{C.FADE_WINDOW}]) > 0) * {year}")
    b.row("Now")
    b.add(
        stat_("Mean SoH", "Mean state of health of all units of all shards.",
              [Q(f"{M.R_SOH_MEAN}{{{FARM}}}", "{{job}}")], unit="percentunit", steps=C.SOH_STEPS,
              decimals=2, w=6),
        stat_("Mean equivalent full cycles", "Mean equivalent full cycles per unit.",
              [Q(f"{M.R_EFC_MEAN}{{{FARM}}}", "{{job}}")], decimals=2, w=6),
        stat_("Fade rate", f"Loss of mean SoH per simulated year, from the slope over "
              f"{C.FADE_WINDOW} of wall time (the same at any --speed).",
              [Q(f"{M.R_SOH_FADE}{{{FARM}}}", "{{job}}")], unit="percentunit", decimals=2, w=6),
        stat_("Units below the SoH threshold", f"Units (with per-unit series) below "
              f"{C.SOH_ALERT * 100:g} % state of health.",
              [Q(f"count({M.UNIT_SOH}{{{SHARD}}} < {C.SOH_ALERT:g}) or vector(0)", "units")],
              steps=(("green", None), ("orange", 1)), graph=False, w=6),
    )
    b.row("Trends")
    b.add(
        ts("SoH across the farm", "Mean SoH of the farm (all units), and the lowest, 10th "
           "percentile and highest SoH of the units with per-unit series.",
           [Q(f"avg({M.R_SOH_MEAN}{{{FARM}}})", "farm mean"),
            Q(f"min({M.UNIT_SOH}{{{SHARD}}})", "min"),
            Q(f"quantile(0.1, {M.UNIT_SOH}{{{SHARD}}})", "p10"),
            Q(f"max({M.UNIT_SOH}{{{SHARD}}})", "max")], unit="percentunit", hi=1, steps=C.SOH_STEPS,
           threshold_zones=True, decimals=2),
        ts("Equivalent full cycles", "Mean EFC of the farm, and the highest and lowest EFC of the "
           "units with per-unit series.",
           [Q(f"avg({M.R_EFC_MEAN}{{{FARM}}})", "farm mean"),
            Q(f"max({M.UNIT_EFC}{{{SHARD}}})", "max"), Q(f"min({M.UNIT_EFC}{{{SHARD}}})", "min")],
           decimals=2),
        ts("Fade rate over time", "Loss of mean SoH per simulated year (recording rule "
           f"{M.R_SOH_FADE}).", [Q(f"{M.R_SOH_FADE}{{{FARM}}}", "{{job}}")], unit="percentunit",
           decimals=2, w=8),
        hist("SoH distribution", "SoH of the units with per-unit series now: a wide spread is "
             "uneven aging.", [Q(f"{M.UNIT_SOH}{{{SHARD}}}", "unit {{unit_id}}", instant=True)],
             unit="percentunit", w=8),
        hist("EFC distribution", "Equivalent full cycles of the units with per-unit series now.",
             [Q(f"{M.UNIT_EFC}{{{SHARD}}}", "unit {{unit_id}}", instant=True)], w=8),
    )
    b.row("Weakest units")
    organize = [("organize", {"excludeByName": {"Time": True, "__name__": True}})]
    b.add(
        table_("Lowest SoH", "The ten units with the lowest state of health now.",
               [Q(f"bottomk(10, {M.UNIT_SOH}{{{SHARD}}})", "", instant=True, table=True)],
               unit="percentunit", steps=C.SOH_STEPS, decimals=3, transformations=organize),
        table_("Fastest fade", "The ten units losing SoH fastest (per simulated year).",
               [Q(f"topk(10, {unit_fade})", "", instant=True, table=True)],
               unit="percentunit", decimals=3, transformations=organize),
    )
    return b


# ------------------------------------------------------------------------------ 7. alerts
def alerts() -> Board:
    b = Board("alerts", "BESS alerts",
              "bess-farm alerts from Prometheus's ALERTS series: what fires now, and the incident "
              "timeline (pending and firing). Rules: grafana/rules; runbooks: docs/runbooks.",
              annotations=[alert_annotation()])
    firing = f'ALERTS{{{C.ALERTS_SEL}, alertstate="firing"}}'
    pending = f'ALERTS{{{C.ALERTS_SEL}, alertstate="pending"}}'
    b.row("Now")
    b.add(
        stat_("Firing by severity", "Alerts firing now, per severity.",
              [Q(f"count by (severity) ({firing})", "{{severity}}")], no_value="0",
              steps=(("green", None), ("red", 1)), graph=False, w=8),
        stat_("Pending", "Alerts whose condition holds but whose `for` has not elapsed yet.",
              [Q(f"count({pending}) or vector(0)", "pending")], steps=(("green", None), ("yellow", 1)),
              graph=False, w=4),
        table_("Firing alerts", "Every alert firing now with its labels (unit, shard, severity); "
               "its runbook is linked from the rule's runbook_url.",
               [Q(firing, "", instant=True, table=True)], w=12,
               transformations=[("organize", {"excludeByName": {"Time": True, "__name__": True,
                                                                "Value": True, "alertstate": True}})]),
    )
    b.row("Timeline")
    b.add(
        timeline("Incident timeline", "Each alert over time: pending (yellow) then firing (red).",
                 [Q(f"max by (alertname, severity) (({firing} * 2) or {pending})",
                    "{{alertname}} ({{severity}})")],
                 mappings=value_map({1: ("pending", "yellow"), 2: ("firing", "red")}), h=10),
        ts("Firing alerts by severity", "Alerts firing over time, per severity.",
           [Q(f"count by (severity) ({firing})", "{{severity}}")], bars=True, lo=0, decimals=0, w=24),
    )
    return b


BOARDS = (overview, unit, protocol, api, chaos, degradation, alerts)


def build_all() -> dict[str, dm.Dashboard]:
    """File name -> dashboard model."""
    out = {}
    for make in BOARDS:
        b = make()
        out[f"{b.uid}.json"] = b.build()
    return out
