"""The one configuration every dashboard and rule is built from.

Datasource variable, label selectors, refresh, time range, stable UIDs, thresholds and colour
zones, the recording-rule naming, the runbook location. Change a value here and run
``python grafana/build.py --write``: every dashboard JSON and rules file follows.
"""

from __future__ import annotations

# ------------------------------------------------------------------------------ Grafana
#: The datasource template variable: every panel, target, variable and annotation uses it.
DATASOURCE_VAR = "datasource"
DATASOURCE = {"type": "prometheus", "uid": "${" + DATASOURCE_VAR + "}"}
REFRESH = "30s"
TIME_FROM, TIME_TO = "now-6h", "now"
SCHEMA_TAGS = ["bess-farm"]
TIMEZONE = "browser"

#: Stable dashboard UIDs (Grafana links and the Helm ConfigMap names depend on them) and file names.
UIDS = {
    "overview": "bess-farm-overview",
    "unit": "bess-unit-drilldown",
    "protocol": "bess-protocol-health",
    "api": "bess-api-performance",
    "chaos": "bess-chaos",
    "degradation": "bess-degradation",
    "alerts": "bess-alerts",
}

# Template variables: name -> (label, the label it selects on). Order = the dashboard's order.
VAR_NAMESPACE, VAR_JOB, VAR_INSTANCE, VAR_UNIT = "namespace", "job", "instance", "unit"
#: ``All`` of a variable is this regex, so a label that is absent (no ``namespace`` outside
#: Kubernetes) still matches.
ALL_VALUE = ".*"

#: Label selectors (inside ``{}``), from the widest to the narrowest.
FARM_SEL = f'namespace=~"${VAR_NAMESPACE}", job=~"${VAR_JOB}"'
SHARD_SEL = f'{FARM_SEL}, instance=~"${VAR_INSTANCE}"'
UNIT_SEL = f'{SHARD_SEL}, unit_id=~"${VAR_UNIT}"'
#: ALERTS carries the labels of the alert's expression: namespace (when in Kubernetes), job,
#: instance... but pipeline alerts (absent targets) have no job. Alerts select on namespace only.
ALERTS_SEL = f'alertname=~"Bess.*", namespace=~"${VAR_NAMESPACE}"'

#: The window of rate() and histogram_quantile() in panels (Grafana fills it in).
RATE = "$__rate_interval"

# ------------------------------------------------------------------------------ Prometheus
#: Labels that identify one farm (all shards of one release): recording rules aggregate to them.
FARM_LABELS = ("namespace", "job")
#: ... and one shard (one scrape target): alerts keep them, so a page names the shard.
SHARD_LABELS = ("namespace", "job", "instance")
#: Recording-rule level prefix (Prometheus convention level:metric:operations).
LEVEL = "namespace_job"
#: The scrape jobs of bess-farm (the chart's ServiceMonitor job is `<release>-bess-farm-metrics`,
#: its PodMonitor's `<namespace>/<release>-bess-farm`; the e2e test names its job `bess-farm`).
JOB_REGEX = ".*bess-farm.*"

RUNBOOK_BASE = "https://github.com/bess-farm/bess-farm/blob/main/docs/runbooks/"

# ------------------------------------------------------------------------------ thresholds
# Colour zones (Grafana threshold steps: (colour, from value); the first has no lower bound).
# SoC as a fraction 0..1 (panels show percent, 0-100 % fixed axis).
SOC_LOW_ALERT, SOC_HIGH_ALERT = 0.10, 0.90
SOC_STEPS = (("red", None), ("orange", SOC_LOW_ALERT), ("green", 0.20), ("orange", 0.80),
             ("red", SOC_HIGH_ALERT))
# Cell temperature, degC: LFP derates at 45 and trips at 55; NMC at 40 / 50 (engine presets).
TEMP_WARN_C, TEMP_ALERT_C, TEMP_TRIP_C = 35.0, 45.0, 55.0
TEMP_STEPS = (("blue", None), ("green", 10.0), ("yellow", TEMP_WARN_C), ("orange", TEMP_ALERT_C),
              ("red", TEMP_TRIP_C))
# State of health (relative capacity): end of life is usually 70-80 %.
SOH_ALERT = 0.80
SOH_STEPS = (("red", None), ("orange", SOH_ALERT), ("yellow", 0.85), ("green", 0.90))
# Round-trip efficiency.
RTE_STEPS = (("red", None), ("orange", 0.75), ("green", 0.85))

# Alert thresholds (the rules and their runbooks quote them).
MODBUS_ERROR_RATIO = 0.05       # non-ok Modbus answers over all answers
API_ERROR_RATIO = 0.05          # 5xx over all HTTP requests
API_P99_S = 1.0                 # p99 HTTP latency (the SSE stream excluded)
TICK_OVERRUN_RATIO = 0.01       # overrun ticks over all ticks
TICK_STALLED_HZ = 1.0           # ticks per second below which the loop counts as stalled
#: The long-lived SSE route: its "latency" is the connection's lifetime.
STREAM_ROUTE = "/api/v1/stream"
#: Window of the fade-rate derivative (SoH moves slowly: a long window).
FADE_WINDOW = "1d"
SECONDS_PER_YEAR = 31_557_600   # Julian year
