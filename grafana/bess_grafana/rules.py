"""Prometheus recording and alerting rules, built from the instrument table.

Written to ``grafana/rules/*.yaml`` (``python grafana/build.py --write``), the one rules source:
Prometheus loads those files as they are (the e2e test does), and the Helm chart links the folder
and merges the groups into one PrometheusRule. ``grafana/rules_tests/*.yaml`` are the promtool unit
tests (``promtool test rules``), one or more per alert.

Label conventions: recording rules aggregate to one farm, ``by (namespace, job)`` (every shard of a
release is one job); alerts keep ``namespace, job, instance`` (the shard) and, for per-unit
conditions, ``unit_id`` and ``vendor``. No rule sets its own ``interval``: the Prometheus
evaluation interval applies (keep it at or below the scrape interval, see
docs/runbooks/bess-thermal-runaway.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bess_farm.engine.layout import ALARM_NAMES

from . import config as C
from . import metrics as M

FARM_BY = ", ".join(C.FARM_LABELS)
SHARD_BY = ", ".join(C.SHARD_LABELS)


def alarm_bit(name: str, selector: str = "") -> str:
    """PromQL that is 1 where alarm bit ``name`` of a unit is set, 0 where it is clear."""
    bit = ALARM_NAMES.index(name)
    sel = "{" + selector + "}" if selector else ""
    return f"floor({M.UNIT_ALARMS}{sel} / {2 ** bit}) % 2"


# ------------------------------------------------------------------------------ recording rules
def _weighted_mean(metric: str) -> str:
    """Farm mean of a per-shard mean, weighted by the shard's unit count."""
    return (f"sum by ({FARM_BY}) ({metric} * {M.UNITS_SIMULATED})\n"
            f"  / sum by ({FARM_BY}) ({M.UNITS_SIMULATED})")


def recording_rules() -> list[dict]:
    s = lambda metric, *extra: f"sum by ({', '.join(C.FARM_LABELS + extra)}) ({metric})"  # noqa: E731
    rules = [
        (M.R_POWER_RATED, s(M.POWER_RATED)),
        (M.R_ENERGY_CAPACITY, s(M.ENERGY_CAPACITY)),
        (M.R_ENERGY_AVAILABLE, s(M.ENERGY_AVAILABLE)),
        (M.R_ENERGY_STORED, s(M.ENERGY_STORED)),
        (M.R_POWER_AC, s(M.POWER_AC)),
        (M.R_POWER_DC, s(M.POWER_DC)),
        (M.R_POWER_REQUESTED, s(M.POWER_REQUESTED)),
        (M.R_POWER_AUX, s(M.POWER_AUX)),
        (M.R_UNITS, s(M.UNITS_SIMULATED)),
        (M.R_SOC_MEAN, _weighted_mean(M.SOC_MEAN)),
        (M.R_SOH_MEAN, _weighted_mean(M.SOH_MEAN)),
        (M.R_TEMP_MEAN, _weighted_mean(M.TEMP_MEAN)),
        (M.R_EFC_MEAN, _weighted_mean(M.EFC_MEAN)),
        (M.R_TEMP_MAX, f"max by ({FARM_BY}) ({M.TEMP_MAX})"),
        (M.R_TEMP_MIN, f"min by ({FARM_BY}) ({M.TEMP_MIN})"),
        (M.R_UNITS_BY_STATE, s(M.UNITS_BY_STATE, "state")),
        (M.R_UNITS_BY_SOC_BAND, s(M.UNITS_BY_SOC_BAND, "soc_band")),
        (M.R_UNITS_BY_TEMP_BAND, s(M.UNITS_BY_TEMP_BAND, "temperature_band")),
        (M.R_UNITS_ALARMED, s(M.UNITS_ALARMED)),
        # the engine's definition (engine.farm.Aggregates.round_trip_efficiency) over all shards:
        # AC out / (AC in + auxiliary), absent while the denominator is 0
        (M.R_RTE, f"{s(M.E_DISCHARGED)}\n  / ({s(M.E_CHARGED)} + {s(M.E_AUX)} > 0)"),
        # SoH fade per simulated year: d(SoH)/d(sim time), so it reads the same at any --speed
        (M.R_SOH_FADE, f"-(\n  deriv({M.R_SOH_MEAN}[{C.FADE_WINDOW}])\n"
                       f"  / on ({FARM_BY}) max by ({FARM_BY}) (deriv({M.SIM_TIME}[{C.FADE_WINDOW}]) > 0)\n"
                       f") * {C.SECONDS_PER_YEAR}"),
        (M.R_CHAOS_ACTIVE, s(M.CHAOS_ACTIVE, "fault_type")),
        (M.R_CHAOS_INJECTED, s(M.CHAOS_INJECTED, "fault_type")),
    ]
    return [{"record": name, "expr": expr} for name, expr in rules]


# ------------------------------------------------------------------------------ alerts
@dataclass
class Alert:
    name: str
    expr: str
    severity: str
    summary: str
    description: str
    for_: str = "0s"
    runbook: str = ""                     # file name under docs/runbooks (default: from the name)
    extra_labels: dict = field(default_factory=dict)

    @property
    def runbook_file(self) -> str:
        if self.runbook:
            return self.runbook
        # BessThermalRunaway -> bess-thermal-runaway.md
        out = "".join("-" + c.lower() if c.isupper() else c for c in self.name).lstrip("-")
        return out + ".md"

    def rule(self) -> dict:
        r = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0s":
            r["for"] = self.for_
        r["labels"] = {"severity": self.severity, **self.extra_labels}
        r["annotations"] = {"summary": self.summary, "description": self.description,
                            "runbook_url": C.RUNBOOK_BASE + self.runbook_file}
        return r


def _state(state: str) -> str:
    return f'sum by ({SHARD_BY}) ({M.UNITS_BY_STATE}{{state="{state}"}})'


def _pct(x: float) -> str:
    return f"{x * 100:g} %"


SAFETY = [
    Alert("BessThermalRunaway",
          f"{_state('thermal_runaway')} > 0",
          "critical",
          "Thermal runaway in {{ $value }} unit(s) of {{ $labels.job }} ({{ $labels.instance }})",
          "{{ $value }} unit(s) are in thermal runaway (state thermal_runaway): an irreversible "
          "cell fire. Fires on the first scrape that shows it (no `for`). Per-unit series: "
          f"{M.UNIT_STATE} == 6."),
    Alert("BessUnitOverTemperature",
          f"max by ({SHARD_BY}) ({M.TEMP_MAX}) > {C.TEMP_ALERT_C:g}",
          "warning",
          "A unit of {{ $labels.job }} ({{ $labels.instance }}) is at {{ $value | printf \"%.1f\" }} degC",
          f"The hottest unit cell temperature has been above {C.TEMP_ALERT_C:g} degC for 2 minutes "
          "(LFP units derate at 45 and trip at 55 degC, NMC at 40 and 50). It covers every unit of the "
          f"shard (the farm maximum), not only those with per-unit series.",
          for_="2m"),
    Alert("BessUnitHvacFailure",
          f"{alarm_bit('hvac_fault')} == 1",
          "warning",
          "HVAC failure on unit {{ $labels.unit_id }} of {{ $labels.job }}",
          "Unit {{ $labels.unit_id }} ({{ $labels.vendor }}, {{ $labels.instance }}) has raised "
          "hvac_fault (alarm bit 7) for 2 minutes: no cooling; it heats up with its losses and the "
          "ambient. Only units with per-unit series (telemetry.unit_metrics_cap) are covered.",
          for_="2m"),
    Alert("BessUnitTripped",
          f"{_state('fault')} > 0",
          "warning",
          "{{ $value }} unit(s) of {{ $labels.job }} ({{ $labels.instance }}) tripped",
          "{{ $value }} unit(s) have been in state fault (tripped by protection: over/under voltage, "
          "temperature or current) for 1 minute. A tripped unit delivers nothing and needs an alarm "
          "reset once the cause has cleared.",
          for_="1m"),
    Alert("BessUnitSensorFault",
          f"{alarm_bit('sensor_fault')} == 1",
          "warning",
          "Sensor disagreement on unit {{ $labels.unit_id }} of {{ $labels.job }}",
          "Unit {{ $labels.unit_id }} ({{ $labels.instance }}) has raised sensor_fault (alarm bit 8) "
          "for 1 minute: a reading (voltage, temperature, current or SoC) disagrees with the unit's "
          "model, so SCADA may be reading a wrong value and the BMS protection acts on it. Only units "
          "with per-unit series are covered.",
          for_="1m"),
]

ENERGY = [
    Alert("BessFarmSocLow",
          f"{M.R_SOC_MEAN} < {C.SOC_LOW_ALERT:g}",
          "warning",
          "Farm {{ $labels.job }} mean SoC is {{ $value | humanizePercentage }}",
          f"The farm's mean state of charge has been below {_pct(C.SOC_LOW_ALERT)} for 15 minutes: "
          "little energy is left to discharge and units start to hit their SoC floor.",
          for_="15m"),
    Alert("BessFarmSocHigh",
          f"{M.R_SOC_MEAN} > {C.SOC_HIGH_ALERT:g}",
          "warning",
          "Farm {{ $labels.job }} mean SoC is {{ $value | humanizePercentage }}",
          f"The farm's mean state of charge has been above {_pct(C.SOC_HIGH_ALERT)} for 15 minutes: "
          "little headroom is left to absorb charge (frequency response, curtailment).",
          for_="15m"),
    Alert("BessUnitSohLow",
          f"{M.UNIT_SOH} < {C.SOH_ALERT:g}",
          "warning",
          "Unit {{ $labels.unit_id }} of {{ $labels.job }} SoH is {{ $value | humanizePercentage }}",
          f"Unit {{{{ $labels.unit_id }}}} ({{{{ $labels.vendor }}}}) has a state of health below "
          f"{_pct(C.SOH_ALERT)} (end-of-life threshold). Only units with per-unit series are covered; "
          "BessFarmSohLow covers the farm mean.",
          for_="1h"),
    Alert("BessFarmSohLow",
          f"{M.R_SOH_MEAN} < {C.SOH_ALERT:g}",
          "warning",
          "Farm {{ $labels.job }} mean SoH is {{ $value | humanizePercentage }}",
          f"The farm's mean state of health is below {_pct(C.SOH_ALERT)}: the fleet is near end of "
          "life and its usable energy is reduced accordingly.",
          for_="1h"),
]

PROTOCOL = [
    Alert("BessModbusServerDown",
          f"sum by ({SHARD_BY}) ({M.MODBUS_CONNECTIONS}) > 0\n"
          f"unless on ({SHARD_BY})\n"
          f"sum by ({SHARD_BY}) (rate({M.MODBUS_REQUESTS}[2m])) > 0",
          "critical",
          "Modbus server of {{ $labels.job }} ({{ $labels.instance }}) answers nothing",
          "SCADA clients are connected but the Modbus server has handled no request for 2 minutes "
          "(polling clients send several per second): the server is stuck or its event loop is blocked. "
          "A server that is not listening at all shows as BessModbusNoClients (and /readyz fails).",
          for_="2m"),
    Alert("BessModbusNoClients",
          f"sum by ({SHARD_BY}) ({M.MODBUS_CONNECTIONS}) == 0",
          "warning",
          "No Modbus client connected to {{ $labels.job }} ({{ $labels.instance }})",
          "No Modbus TCP connection has been open for 10 minutes: SCADA lost the farm, or the Modbus "
          "listener is down.",
          for_="10m"),
    Alert("BessModbusErrorRate",
          f"sum by ({SHARD_BY}) (rate({M.MODBUS_REQUESTS}{{outcome!=\"ok\"}}[5m]))\n"
          f"  / sum by ({SHARD_BY}) (rate({M.MODBUS_REQUESTS}[5m]))\n"
          f"> {C.MODBUS_ERROR_RATIO:g}",
          "warning",
          "{{ $value | humanizePercentage }} of Modbus requests to {{ $labels.job }} fail",
          f"More than {_pct(C.MODBUS_ERROR_RATIO)} of Modbus requests have been answered with an "
          "exception or not at all (outcome exception or silent) for 5 minutes.",
          for_="5m"),
    Alert("BessTickOverrun",
          f"sum by ({SHARD_BY}) (rate({M.TICK_OVERRUNS}[5m]))\n"
          f"  / sum by ({SHARD_BY}) (rate({M.TICKS}[5m]))\n"
          f"> {C.TICK_OVERRUN_RATIO:g}",
          "warning",
          "The tick loop of {{ $labels.job }} ({{ $labels.instance }}) overruns",
          f"More than {_pct(C.TICK_OVERRUN_RATIO)} of ticks have started a whole period or more late "
          "for 5 minutes ({{ $value | humanizePercentage }}): the engine cannot keep real time, so "
          "simulated time lags and Modbus/REST values are stale.",
          for_="5m"),
    Alert("BessTickLoopStalled",
          f"sum by ({SHARD_BY}) (rate({M.TICKS}[1m])) < {C.TICK_STALLED_HZ:g}",
          "critical",
          "The tick loop of {{ $labels.job }} ({{ $labels.instance }}) has stalled",
          f"The engine has stepped fewer than {C.TICK_STALLED_HZ:g} tick per second for 1 minute "
          "(nominal 10) while the process still answers scrapes: the farm is frozen, Modbus and "
          "REST serve the last tick.",
          for_="1m"),
    Alert("BessApiErrorRate",
          f"sum by ({SHARD_BY}) (rate({M.HTTP_REQUESTS}{{{M.L_STATUS}=~\"5..\"}}[5m]))\n"
          f"  / sum by ({SHARD_BY}) (rate({M.HTTP_REQUESTS}[5m]))\n"
          f"> {C.API_ERROR_RATIO:g}",
          "warning",
          "{{ $value | humanizePercentage }} of REST requests to {{ $labels.job }} fail with 5xx",
          f"More than {_pct(C.API_ERROR_RATIO)} of REST API requests have been answered 5xx for 5 "
          "minutes (500: a bug, its traceback is in the log; 503: the engine not ready).",
          for_="5m"),
    Alert("BessApiLatencyHigh",
          f"histogram_quantile(0.99,\n"
          f"  sum by ({SHARD_BY}, le) (rate({M.HTTP_DURATION}{{{M.L_ROUTE}!=\"{C.STREAM_ROUTE}\"}}[5m]))\n"
          f") > {C.API_P99_S:g}",
          "warning",
          "REST p99 latency of {{ $labels.job }} is {{ $value | humanizeDuration }}",
          f"The 99th percentile of REST API request duration (the {C.STREAM_ROUTE} event stream "
          f"excluded) has been above {C.API_P99_S:g} s for 10 minutes.",
          for_="10m"),
]

_JOB = f'job=~"{C.JOB_REGEX}"'
PIPELINE = [
    Alert("BessMetricsTargetDown",
          f"up{{{_JOB}}} == 0",
          "critical",
          "Prometheus cannot scrape {{ $labels.job }} ({{ $labels.instance }})",
          "The scrape of a bess-farm metrics endpoint (the embedded exporter, or the collector "
          "sidecar) has failed for 2 minutes: the process or the collector is down, or the port is "
          "unreachable. Every other bess-farm alert of that shard is blind meanwhile.",
          for_="2m"),
    Alert("BessMetricsTargetAbsent",
          f"absent(up{{{_JOB}}})",
          "critical",
          "No bess-farm scrape target in Prometheus",
          f"Prometheus has had no target whose job matches {C.JOB_REGEX} for 5 minutes: the "
          "ServiceMonitor/PodMonitor is not picked up, the metrics Service has no endpoints, or the "
          "farm is not deployed. Every other bess-farm alert is blind meanwhile.",
          for_="5m"),
    Alert("BessMetricsNotExported",
          f"up{{{_JOB}}} == 1\nunless on ({SHARD_BY})\n{M.UNITS_SIMULATED}",
          "critical",
          "{{ $labels.job }} ({{ $labels.instance }}) is scraped but exports no farm metrics",
          "The target answers scrapes but has had no bess-farm series for 2 minutes: in sidecar mode "
          "the collector is up but bess does not push to it (bess down, OTLP endpoint wrong); in "
          "embedded mode the exporter serves nothing.",
          for_="2m"),
]

GROUPS = {"bess-farm.safety": SAFETY, "bess-farm.energy": ENERGY,
          "bess-farm.protocol": PROTOCOL, "bess-farm.pipeline": PIPELINE}
ALERTS = [a for alerts in GROUPS.values() for a in alerts]


def rule_files() -> dict[str, dict]:
    """File name -> rules document (``groups:``)."""
    return {
        "bess-recording.yaml": {"groups": [{"name": "bess-farm.recording",
                                            "rules": recording_rules()}]},
        "bess-alerts.yaml": {"groups": [{"name": name, "rules": [a.rule() for a in alerts]}
                                        for name, alerts in GROUPS.items()]},
    }


def recorded_names() -> set[str]:
    return {r["record"] for r in recording_rules()}
