"""promtool unit tests of every alert and of the recording rules, as data.

Each alert case gives input series, the time its condition starts to hold (``onset``) and the
alerts expected then. The test file says, for every alert:

* silent one evaluation before it should fire (``onset + for - interval``; for an alert without
  ``for`` that is the last evaluation before the condition);
* firing at ``onset + for`` exactly (one evaluation later for an alert on a recorded series: its
  recording group may run after the alert group), with its labels and its rendered annotations;
* silent for the series that do not meet the condition (other shards, units, jobs), and after the
  condition clears where the case says so (``later``).

``python grafana/build.py --write`` renders it to grafana/rules_tests/bess-rules.test.yaml
(``promtool test rules`` runs it; tests/test_rules.py checks every alert is covered both ways).
Expected annotations are rendered from the rules' own templates by :func:`render`, which knows
the few template forms the rules use (and refuses others).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bess_farm.engine.layout import ALARM_NAMES

from . import config as C
from . import metrics as M
from .rules import ALERTS, Alert

T = {"namespace": "bess", "job": "bess-bess-farm-metrics", "instance": "10.0.0.1:9090"}
T2 = {**T, "instance": "10.0.0.2:9090"}
FARM = {"namespace": "bess", "job": "bess-bess-farm-metrics"}


def series(name: str, labels: dict, values: str) -> dict:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def dur(s: str) -> int:
    """'1h30m15s' -> seconds."""
    total, n = 0, ""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    for ch in s:
        if ch.isdigit():
            n += ch
        else:
            total += int(n) * units[ch]
            n = ""
    assert not n, s
    return total


def fmt_dur(seconds: int) -> str:
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{v}{u}" for v, u in ((h, "h"), (m, "m"), (s, "s")) if v) or "0s"


# ------------------------------------------------------------------------------ annotation templates
def go_value(v: float) -> str:
    """Go's %v of a float64 (what ``{{ $value }}`` prints), for the values the cases use."""
    if v == int(v) and abs(v) < 1e21:
        return str(int(v))
    return repr(v)


def humanize_duration(v: float) -> str:
    """Prometheus's humanizeDuration, for values under a minute."""
    if abs(v) >= 1:
        assert abs(v) < 60, v
        return f"{v:.4g}s"
    if v == 0:
        return "0s"
    prefix = ""
    for p in ("m", "u", "n", "p"):
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{v:.4g}{prefix}s"


_FILTERS = {
    "": go_value,
    "humanizePercentage": lambda v: f"{v * 100:.4g}%",
    "humanizeDuration": humanize_duration,
    'printf "%.1f"': lambda v: f"{v:.1f}",
}


def render(template: str, labels: dict, value: float) -> str:
    def one(m):
        expr = m.group(1).strip()
        if expr.startswith("$labels."):
            return labels.get(expr[len("$labels."):], "")
        head, _, filt = (p.strip() for p in expr.partition("|"))
        if head != "$value" or filt not in _FILTERS:
            raise ValueError(f"template form not supported by rules_tests.render: {{{{ {expr} }}}}")
        return _FILTERS[filt](value)
    return re.sub(r"\{\{(.*?)\}\}", one, template)


def template_forms(template: str) -> list[str]:
    return [m.strip() for m in re.findall(r"\{\{(.*?)\}\}", template)]


# ------------------------------------------------------------------------------ cases
@dataclass
class Fire:
    labels: dict          # the alert's labels from its expression (severity and alertname are added)
    value: float          # $value at the firing evaluation


@dataclass
class Case:
    alert: str
    doc: str
    input: list[dict]
    onset: str                                   # first evaluation at which the condition holds
    fires: list[Fire]
    interval: str = "15s"
    later: list[tuple[str, list[Fire]]] = field(default_factory=list)   # (time, alerts) afterwards


def _unit(labels: dict, unit_id: int, vendor: str = "Generic") -> dict:
    return {**labels, "unit_id": str(unit_id), "vendor": vendor}


def _bits(*names: str) -> int:
    return sum(1 << ALARM_NAMES.index(n) for n in names)


HVAC, SENSOR, DERATE, COMM, OVER_V = (_bits("hvac_fault"), _bits("sensor_fault"),
                                      _bits("temperature_derate"), _bits("comm_fault"),
                                      _bits("over_voltage"))
STATE = M.UNITS_BY_STATE
REQ = M.MODBUS_REQUESTS
HTTP_LABELS = {"http_request_method": "GET", "url_scheme": "http"}


def _http(labels, route, status):
    return {**labels, **HTTP_LABELS, M.L_ROUTE: route, M.L_STATUS: status}


def _buckets(labels: dict, per_step: dict[str, int], steps: int) -> list[dict]:
    """Cumulative histogram buckets growing by per_step[le] each step (le strings, +Inf last)."""
    return [series(M.HTTP_DURATION, {**labels, "le": le}, f"0+{n}x{steps}") for le, n in per_step.items()]


CASES = [
    Case("BessThermalRunaway",
         "fires at the first evaluation after the scrape that shows a unit in runaway, no `for`; "
         "the other shard stays silent; it keeps firing (runaway is irreversible)",
         [series(STATE, {**T, "state": "thermal_runaway"}, "0x8 1x12"),
          series(STATE, {**T2, "state": "thermal_runaway"}, "0x20"),
          series(STATE, {**T2, "state": "fault"}, "3x20")],
         onset="2m15s", fires=[Fire(T, 1)], later=[("4m", [Fire(T, 1)])]),
    Case("BessUnitOverTemperature",
         "the hottest unit above the threshold for 2 minutes; exactly at the threshold is silent",
         [series(M.TEMP_MAX, T, "30x4 50.25x16"),
          series(M.TEMP_MAX, T2, f"{C.TEMP_ALERT_C:g}x20")],
         onset="1m15s", fires=[Fire(T, 50.25)]),
    Case("BessUnitHvacFailure",
         "hvac_fault on unit 4 for 2 minutes; unit 5 only derating, unit 6 an HVAC fault of 1 minute "
         "that clears: both silent",
         [series(M.UNIT_ALARMS, _unit(T, 4), f"0x4 {HVAC}x16"),
          series(M.UNIT_ALARMS, _unit(T, 5), f"{DERATE}x20"),
          series(M.UNIT_ALARMS, _unit(T, 6), f"{OVER_V}x4 {OVER_V | HVAC}x4 {OVER_V}x11")],
         onset="1m15s", fires=[Fire(_unit(T, 4), 1)]),
    Case("BessUnitTripped",
         "units in state fault for 1 minute; resolved when they are reset",
         [series(STATE, {**T, "state": "fault"}, "0x4 2x10 0x6"),
          series(STATE, {**T2, "state": "fault"}, "0x20")],
         onset="1m15s", fires=[Fire(T, 2)], later=[("4m", [])]),
    Case("BessUnitSensorFault",
         "sensor_fault on unit 3 for 1 minute; unit 8 with only comm_fault is silent; resolved when "
         "the sensor recovers",
         [series(M.UNIT_ALARMS, _unit(T, 3), f"0x2 {SENSOR}x10 0x8"),
          series(M.UNIT_ALARMS, _unit(T, 8), f"{COMM}x20")],
         onset="45s", fires=[Fire(_unit(T, 3), 1)], later=[("4m", [])]),
    Case("BessFarmSocLow",
         "the farm mean is weighted by units per shard: 10 units at 5 % and 30 at 12 % is 10.25 % "
         "(silent, where an unweighted mean, 8.5 %, would fire); the 30 falling to 9 % make 8 %",
         [series(M.SOC_MEAN, T, "0.05x100"), series(M.SOC_MEAN, T2, "0.12x20 0.09x80"),
          series(M.UNITS_SIMULATED, T, "10x100"), series(M.UNITS_SIMULATED, T2, "30x100")],
         onset="5m15s", fires=[Fire(FARM, 0.08)]),
    Case("BessFarmSocHigh",
         "10 units at 95 % and 30 at 88 % is 89.75 % (silent); the 30 rising to 92 % make 92.75 %",
         [series(M.SOC_MEAN, T, "0.95x100"), series(M.SOC_MEAN, T2, "0.88x20 0.92x80"),
          series(M.UNITS_SIMULATED, T, "10x100"), series(M.UNITS_SIMULATED, T2, "30x100")],
         onset="5m15s", fires=[Fire(FARM, 0.9275)]),
    Case("BessUnitSohLow",
         "unit 1 below 80 % SoH for an hour; unit 2 exactly at 80 % is silent",
         [series(M.UNIT_SOH, _unit(T, 1), "0.82 0.81 0.79x20"),
          series(M.UNIT_SOH, _unit(T, 2), "0.8x22")],
         interval="5m", onset="10m", fires=[Fire(_unit(T, 1), 0.79)]),
    Case("BessFarmSohLow",
         "two shards of 10 units: 85 % and 79 % average 82 % (silent); 80 % and 79 % average 79.5 %",
         [series(M.SOH_MEAN, T, "0.85x5 0.8x20"), series(M.SOH_MEAN, T2, "0.79x25"),
          series(M.UNITS_SIMULATED, T, "10x25"), series(M.UNITS_SIMULATED, T2, "10x25")],
         interval="5m", onset="30m", fires=[Fire(FARM, 0.795)]),
    Case("BessModbusServerDown",
         "clients stay connected but requests stop at 2m30s: once the 2-minute rate window holds no "
         "increase (4m30s: Prometheus 2 windows are closed at both ends) and 2 minutes more, it "
         "fires; the shard without clients is silent",
         [series(M.MODBUS_CONNECTIONS, T, "2x40"),
          series(REQ, {**T, "function_code": "3", "sunspec_model": "802", "outcome": "ok"},
                 "0+30x10 300x30"),
          series(M.MODBUS_CONNECTIONS, T2, "0x40")],
         onset="4m30s", fires=[Fire(T, 2)]),
    Case("BessModbusNoClients",
         "no connection for 10 minutes; the shard with clients is silent",
         [series(M.MODBUS_CONNECTIONS, T, "1x10 0x60"), series(M.MODBUS_CONNECTIONS, T2, "3x70")],
         onset="2m45s", fires=[Fire(T, 0)]),
    Case("BessModbusErrorRate",
         "1 exception per 11 requests (9.1 %) for 5 minutes; the other shard's 1 silent request in "
         "51 (2 %) is below the threshold",
         [series(REQ, {**T, "function_code": "3", "sunspec_model": "802", "outcome": "ok"}, "0+100x40"),
          series(REQ, {**T, "function_code": "3", "sunspec_model": "802", "outcome": "exception"},
                 "0+10x40"),
          series(REQ, {**T2, "function_code": "3", "sunspec_model": "802", "outcome": "ok"}, "0+50x40"),
          series(REQ, {**T2, "function_code": "3", "sunspec_model": "802", "outcome": "silent"}, "0+1x40")],
         onset="15s", fires=[Fire(T, 10 / 110)]),
    Case("BessTickOverrun",
         "3 overruns per 150 ticks (2 %) for 5 minutes; 1 per 150 (0.67 %) is silent",
         [series(M.TICKS, T, "0+150x60"), series(M.TICK_OVERRUNS, T, "0+3x60"),
          series(M.TICKS, T2, "0+150x60"), series(M.TICK_OVERRUNS, T2, "0+1x60")],
         onset="15s", fires=[Fire(T, 0.02)]),
    Case("BessTickLoopStalled",
         "the tick counter stops at 2m30s: once the 1-minute rate window is flat (3m30s) and 1 "
         "minute more, it fires; the ticking shard is silent",
         [series(M.TICKS, T, "0+150x10 1500x30"), series(M.TICKS, T2, "0+150x40")],
         onset="3m30s", fires=[Fire(T, 0)]),
    Case("BessApiErrorRate",
         "1 answer in 11 is a 500 for 5 minutes; the other shard's 404s are not server errors",
         [series(M.HTTP_REQUESTS, _http(T, "/api/v1/farm", "200"), "0+100x40"),
          series(M.HTTP_REQUESTS, _http(T, "/api/v1/farm", "500"), "0+10x40"),
          series(M.HTTP_REQUESTS, _http(T2, "/api/v1/farm", "200"), "0+100x40"),
          series(M.HTTP_REQUESTS, _http(T2, "", "404"), "0+50x40")],
         onset="15s", fires=[Fire(T, 10 / 110)]),
    Case("BessApiLatencyHigh",
         "9 requests in 10 take 1-2.5 s for 10 minutes (p99 2.483 s); the other shard's slow "
         "requests are all on the event stream, which is left out",
         _buckets(_http(T, "/api/v1/units", "200"),
                  {"0.5": 1, "1.0": 1, "2.5": 10, "+Inf": 10}, 60)
         + _buckets(_http(T2, "/api/v1/units", "200"), {"0.5": 10, "1.0": 10, "2.5": 10, "+Inf": 10}, 60)
         + _buckets(_http(T2, C.STREAM_ROUTE, "200"), {"0.5": 0, "1.0": 0, "2.5": 0, "+Inf": 1}, 60),
         onset="15s", fires=[Fire(T, 1 + 1.5 * 8.9 / 9)]),
    Case("BessMetricsTargetDown",
         "the bess-farm target's scrapes fail for 2 minutes; another job's failing target is not ours",
         [series("up", T, "1x4 0x16"), series("up", {**T, "job": "node-exporter"}, "0x20")],
         onset="1m15s", fires=[Fire(T, 0)]),
    Case("BessMetricsTargetAbsent",
         "Prometheus has no bess-farm target at all for 5 minutes (absent() carries no labels)",
         [series("up", {**T, "job": "node-exporter"}, "1x30")],
         onset="0s", fires=[Fire({}, 1)]),
    Case("BessMetricsNotExported",
         "the target answers but its bess-farm series go stale at 1m15s; the exporting shard is "
         "silent",
         [series("up", T, "1x20"), series(M.UNITS_SIMULATED, T, "40x4 stale"),
          series("up", T2, "1x20"), series(M.UNITS_SIMULATED, T2, "40x20")],
         onset="1m15s", fires=[Fire(T, 1)]),
]

#: alerts silent when their condition never holds (an extra group each: nothing must fire at all)
QUIET_INPUT = [
    series(STATE, {**T, "state": "thermal_runaway"}, "0x40"),
    series(STATE, {**T, "state": "fault"}, "0x40"),
    series(M.TEMP_MAX, T, "25x40"),
    series(M.UNIT_ALARMS, _unit(T, 1), "0x40"),
    series(M.SOC_MEAN, T, "0.5x40"), series(M.SOH_MEAN, T, "0.98x40"),
    series(M.UNIT_SOH, _unit(T, 1), "0.98x40"),
    series(M.UNITS_SIMULATED, T, "40x40"),
    series(M.MODBUS_CONNECTIONS, T, "1x40"),
    series(REQ, {**T, "function_code": "3", "sunspec_model": "802", "outcome": "ok"}, "0+30x40"),
    series(M.TICKS, T, "0+150x40"), series(M.TICK_OVERRUNS, T, "0x40"),
    series(M.HTTP_REQUESTS, _http(T, "/api/v1/farm", "200"), "0+10x40"),
    *_buckets(_http(T, "/api/v1/farm", "200"), {"0.005": 9, "0.01": 10, "+Inf": 10}, 40),
    series("up", T, "1x40"),
]


# ------------------------------------------------------------------------------ promtool test file
def _by_name() -> dict[str, Alert]:
    return {a.name: a for a in ALERTS}


def _exp(alert: Alert, fires: list[Fire]) -> list[dict]:
    out = []
    for f in fires:
        labels = {**f.labels, "severity": alert.severity, **alert.extra_labels}
        ann = {k: render(v, labels, f.value) for k, v in alert.rule()["annotations"].items()}
        out.append({"exp_labels": labels, "exp_annotations": ann})
    return out


def recording_tests() -> dict:
    """The recording rules over two shards: sums, the unit-weighted means, the maximum, the
    round-trip efficiency from the energy counters, and the fade rate in simulated time."""
    lab = lambda t, **kw: {**t, **kw}  # noqa: E731
    inp = [
        series(M.POWER_AC, T, "1e6x20"), series(M.POWER_AC, T2, "-2.5e5x20"),
        series(M.UNITS_SIMULATED, T, "10x20"), series(M.UNITS_SIMULATED, T2, "30x20"),
        series(M.SOC_MEAN, T, "0.2x20"), series(M.SOC_MEAN, T2, "0.6x20"),
        series(M.TEMP_MAX, T, "31x20"), series(M.TEMP_MAX, T2, "42x20"),
        series(STATE, lab(T, state="discharging"), "10x20"), series(STATE, lab(T2, state="discharging"), "28x20"),
        series(STATE, lab(T2, state="thermal_runaway"), "2x20"),
        series(M.E_DISCHARGED, T, "0+90x20"), series(M.E_CHARGED, T, "0+80x20"), series(M.E_AUX, T, "0+10x20"),
        series(M.E_DISCHARGED, T2, "0+0x20"), series(M.E_CHARGED, T2, "0+10x20"), series(M.E_AUX, T2, "0+0x20"),
        # SoH falls by 1e-6 per 15 s of wall time while simulated time runs at 60x (900 s per step)
        series(M.SOH_MEAN, T, "0.99-0.000001x20"), series(M.SOH_MEAN, T2, "0.99-0.000001x20"),
        series(M.SIM_TIME, T, "0+900x20"), series(M.SIM_TIME, T2, "0+900x20"),
    ]
    fade = 1e-6 / 900 * C.SECONDS_PER_YEAR
    return {
        "interval": "15s",
        "input_series": inp,
        "promql_expr_test": [
            {"expr": M.R_POWER_AC, "eval_time": "1m",
             "exp_samples": [{"labels": _sel(M.R_POWER_AC, FARM), "value": 750000}]},
            {"expr": M.R_SOC_MEAN, "eval_time": "1m",
             "exp_samples": [{"labels": _sel(M.R_SOC_MEAN, FARM), "value": 0.5}]},
            {"expr": M.R_TEMP_MAX, "eval_time": "1m",
             "exp_samples": [{"labels": _sel(M.R_TEMP_MAX, FARM), "value": 42}]},
            {"expr": M.R_UNITS_BY_STATE, "eval_time": "1m",
             "exp_samples": [{"labels": _sel(M.R_UNITS_BY_STATE, {**FARM, "state": "discharging"}), "value": 38},
                             {"labels": _sel(M.R_UNITS_BY_STATE, {**FARM, "state": "thermal_runaway"}),
                              "value": 2}]},
            {"expr": M.R_RTE, "eval_time": "1m",            # 360 / (320 + 40 + 40)
             "exp_samples": [{"labels": _sel(M.R_RTE, FARM), "value": 0.9}]},
            {"expr": f"round({M.R_SOH_FADE}, 0.0001)", "eval_time": "4m",
             "exp_samples": [{"labels": _sel(None, FARM), "value": round(fade, 4)}]},
        ],
    }


def _sel(name: str | None, labels: dict) -> str:
    inner = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return f"{name or ''}{{{inner}}}"


def test_file(rule_paths: list[str]) -> dict:
    by_name = _by_name()
    tests = []
    for case in CASES:
        a = by_name[case.alert]
        step, onset, for_s = dur(case.interval), dur(case.onset), dur(a.for_)
        fire_at = onset + for_s
        # An alert on a recorded series may see it one evaluation late: recording and alert rules
        # are separate groups, which Prometheus (and promtool, in no fixed order) evaluates
        # independently. Such an alert is checked silent before its time and firing one
        # evaluation after it, which holds whichever group runs first.
        lag = 15 if ":" in a.expr else 0
        checks = [(fire_at - step, []), (fire_at + lag, case.fires)] + [(t, f) for t, f in case.later]
        if fire_at - step < 0:
            checks = checks[1:]
        tests.append({
            "name": f"{case.alert}: {case.doc}",
            "interval": case.interval,
            "input_series": case.input,
            "alert_rule_test": [{"eval_time": fmt_dur(t if isinstance(t, int) else dur(t)),
                                 "alertname": case.alert, "exp_alerts": _exp(a, f)} for t, f in checks],
        })
    tests.append({
        "name": "quiet farm: no alert fires while every value is normal",
        "interval": "15s",
        "input_series": QUIET_INPUT,
        "alert_rule_test": [{"eval_time": t, "alertname": a.name, "exp_alerts": []}
                            for a in ALERTS for t in ("5m", "9m45s")],
    })
    tests.append({"name": "recording rules", **recording_tests()})
    return {"rule_files": rule_paths, "evaluation_interval": "15s", "tests": tests}


def coverage(doc: dict) -> dict[str, dict[str, int]]:
    """alert -> {'firing': n, 'silent': n} over a promtool test document."""
    out: dict[str, dict[str, int]] = {a.name: {"firing": 0, "silent": 0} for a in ALERTS}
    for t in doc["tests"]:
        for check in t.get("alert_rule_test", []):
            key = "firing" if check.get("exp_alerts") else "silent"
            out.setdefault(check["alertname"], {"firing": 0, "silent": 0})[key] += 1
    return out
