"""The dashboards as code (grafana/): current, linted, built from the instrument table.

* ``python grafana/build.py --check``: the JSON in grafana/dashboards, the rules in grafana/rules and
  the promtool tests in grafana/rules_tests are what the code renders now.
* The linter (grafana/bess_grafana/lint.py): unique panel ids, no panel without a query or a
  description, the datasource always the variable, variables defined, metrics from the table.
* Every query (variables substituted) is valid PromQL for promtool.
* A renamed instrument breaks the build, not a dashboard.
* Conventions: seven dashboards with stable UIDs and the template variables; SoC on a fixed
  0-100 % axis; the temperature/SoC/SoH colour zones of config.py; band heatmaps in band order.
The end-to-end check that every query returns data is tests/test_alerts_e2e.py.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("grafana_foundation_sdk",
                    reason="pip install 'grafana-foundation-sdk==1769699379!11.6.0'")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
sys.path.insert(0, str(GRAFANA))

from bess_grafana import config as C  # noqa: E402
from bess_grafana import metrics as M  # noqa: E402
from bess_grafana.build import render, stale  # noqa: E402
from bess_grafana.lint import known_metrics, lint_all, lint_dashboard, metric_names  # noqa: E402

from bess_farm.otel.instruments import soc_band_labels, temperature_band_labels  # noqa: E402


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def panels(d: dict):
    for p in d["panels"]:
        if p["type"] != "row":
            yield p


def _steps(d: dict) -> list[tuple]:
    steps = d.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    return [(s["color"], s.get("value")) for s in steps]


# ------------------------------------------------------------------------------ build
def test_sdk_is_the_grafana_11_build():
    """The unpinned package resolves to the Grafana 10.1 build (a timestamp epoch): pinned."""
    version = importlib.metadata.version("grafana-foundation-sdk")
    assert version.split("!")[-1].startswith("11."), version
    assert {d["schemaVersion"] for d in dashboards().values()} == {41}


def test_generated_files_are_current():
    problems = stale()
    assert not problems, "\n".join(problems) + "\nrun: python grafana/build.py --write"


def test_build_script_check_mode():
    r = subprocess.run([sys.executable, str(GRAFANA / "build.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_lint_clean():
    problems = lint_all()
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------------------------ the linter itself
def test_linter_catches_what_it_should():
    d = copy.deepcopy(dashboards()[f"{C.UIDS['overview']}.json"])
    ps = [p for p in d["panels"] if p["type"] != "row"]
    ps[1]["id"] = ps[0]["id"]                                              # duplicate id
    ps[2]["description"] = ""                                              # no description
    ps[3]["datasource"] = {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"}   # a hard-coded datasource
    ps[4]["targets"] = []                                                  # no query
    ps[5]["targets"][0]["expr"] = "sum(bess_farm_power_ac_watt)"           # a metric not in the table
    ps[6]["targets"][0]["expr"] = 'sum(bess_farm_units_alarmed{shard=~"$shard"})'   # unknown variable
    problems = "\n".join(lint_dashboard(d, "x"))
    for needle in (f"id {ps[0]['id']} also used", "no description", "P1809F7CD0C75ACF3", "no query",
                   "metric bess_farm_power_ac_watt is neither", "$shard is not a variable"):
        assert needle in problems, (needle, problems)


@pytest.mark.parametrize("expr,names", [
    ('sum by (le) (rate(a_bucket{x="y"}[$__rate_interval]))', {"a_bucket"}),
    ("label_values(bess_unit_soc_ratio{namespace=~\"$namespace\"}, unit_id)", {"bess_unit_soc_ratio"}),
    ("-1 * deriv(x[1d]) / on (a, b) group_left () (deriv(y[1d]) > 0) * 31557600", {"x", "y"}),
    ('count(ALERTS{alertstate="firing"}) or vector(0)', {"ALERTS"}),
    ("floor(m / 1024) % 2 == 1 and bool 1e-3", {"m"}),
    ('namespace_job:bess_farm_power_ac_watts:sum{job=~"$job"} offset 5m',
     {"namespace_job:bess_farm_power_ac_watts:sum"}),
])
def test_metric_name_extraction(expr, names):
    assert metric_names(expr) == names


# ------------------------------------------------------------------------------ names from the table
def test_a_renamed_instrument_breaks_the_build(monkeypatch):
    from bess_farm.otel import instruments
    by_name = dict(instruments.BY_NAME)
    del by_name["bess.farm.power.ac"]                     # as if it had been renamed
    monkeypatch.setattr(instruments, "BY_NAME", by_name)
    try:
        with pytest.raises(KeyError, match="bess.farm.power.ac"):
            importlib.reload(M)
    finally:
        monkeypatch.undo()
        importlib.reload(M)


def test_every_metric_in_a_query_is_known():
    known = known_metrics()
    used = set()
    for d in dashboards().values():
        for p in panels(d):
            for t in p["targets"]:
                used |= metric_names(t["expr"])
    assert used <= known, sorted(used - known)
    # the dashboards use per-unit, loop, Modbus, HTTP and chaos instruments, and the recording rules
    for name in (M.UNIT_SOC, M.TICK_DURATION, M.MODBUS_DURATION, M.HTTP_DURATION, M.R_CHAOS_ACTIVE,
                 M.R_SOC_MEAN, M.R_RTE, "ALERTS"):
        assert name in used, name


def test_every_query_is_valid_promql(tmp_path):
    """Each panel, annotation and variable query with the variables filled in, as a recording rule
    for `promtool check rules` (which parses PromQL offline)."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool missing (apt-get install -y --no-install-recommends prometheus)")
    fill = {"__rate_interval": "1m", "__interval": "15s", "__range": "6h"}
    rules = []
    for name, d in dashboards().items():
        exprs = [t["expr"] for p in panels(d) for t in p["targets"]]
        exprs += [a["expr"] for a in d["annotations"]["list"] if not a.get("builtIn")]
        exprs += [re.fullmatch(r"label_values\((.*), \w+\)", v["query"]).group(1)
                  for v in d["templating"]["list"] if v["type"] == "query"]
        for i, e in enumerate(exprs):
            e = re.sub(r"\$\{?(\w+)\}?", lambda m: fill.get(m.group(1), ".*"), e)
            rules.append({"record": f"check:{name.split('.')[0].replace('-', '_')}:q{i}", "expr": e})
    f = tmp_path / "queries.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rules) > 100


# ------------------------------------------------------------------------------ conventions
def test_seven_dashboards_with_stable_uids_and_variables():
    ds = dashboards()
    assert set(ds) == {f"{uid}.json" for uid in C.UIDS.values()}
    titles = set()
    for name, d in ds.items():
        assert d["uid"] == name[:-5] and d["title"] not in titles and d["refresh"] == C.REFRESH
        titles.add(d["title"])
        names = [v["name"] for v in d["templating"]["list"]]
        want = ["datasource", "namespace", "job", "instance"] + (["unit"] if d["uid"] == C.UIDS["unit"] else [])
        assert names == want, (name, names)
        for v in d["templating"]["list"][1:]:
            assert v["includeAll"] and v["allValue"] == C.ALL_VALUE
        assert any(lk["type"] == "dashboards" and lk["tags"] == C.SCHEMA_TAGS for lk in d["links"])


def test_issue_panels_are_there():
    """The panels the issue asks for, by dashboard (titles)."""
    want = {
        "overview": ["Usable capacity", "Energy available", "Mean SoC", "Farm power",
                     "Power distribution over units", "Units per state", "SoC bands over time",
                     "Temperature bands over time", "Round-trip efficiency", "Active alerts"],
        "unit": ["State of charge", "State of health", "Cell temperature", "Pack voltage", "Current",
                 "AC power", "Equivalent full cycles", "Operating state", "Alarm bits"],
        "protocol": ["Modbus connections", "Requests by function code", "Exceptions by code",
                     "Modbus latency", "Tick duration", "Tick lateness", "Overruns and skipped ticks"],
        "api": ["Latency p50 per route", "Latency p90 per route", "Latency p99 per route",
                "Request rate per route", "Error rate by status"],
        "chaos": ["Active faults by type", "Injected since start", "Faults injected"],
        "degradation": ["SoH across the farm", "Equivalent full cycles", "Fade rate", "Lowest SoH"],
        "alerts": ["Firing alerts", "Incident timeline"],
    }
    ds = dashboards()
    for key, titles in want.items():
        have = {p["title"] for p in panels(ds[f"{C.UIDS[key]}.json"])}
        assert set(titles) <= have, (key, set(titles) - have)
    chaos = ds[f"{C.UIDS['chaos']}.json"]
    assert {a["name"] for a in chaos["annotations"]["list"]} >= {"Chaos fault injected", "Chaos fault active",
                                                                 "Thermal runaway"}


def test_soc_temperature_soh_zones_and_axes():
    soc = [(c, v) for c, v in C.SOC_STEPS]
    temp = [(c, v) for c, v in C.TEMP_STEPS]
    soh = [(c, v) for c, v in C.SOH_STEPS]
    seen = {"soc": 0, "temp": 0, "soh": 0}
    for d in dashboards().values():
        for p in panels(d):
            exprs = " ".join(t["expr"] for t in p["targets"])
            defaults = p.get("fieldConfig", {}).get("defaults", {})
            soc_expr = re.search(rf"\b({M.UNIT_SOC}|{re.escape(M.R_SOC_MEAN)})\b", exprs)
            if p["type"] in ("timeseries", "gauge") and soc_expr:
                assert defaults["unit"] == "percentunit" and defaults["min"] == 0 and defaults["max"] == 1, p["title"]
                assert _steps(p) == soc, p["title"]
                seen["soc"] += 1
            if p["type"] == "timeseries" and re.search(rf"\b({M.UNIT_TEMP}|{re.escape(M.R_TEMP_MAX)})\b", exprs):
                assert defaults["unit"] == "celsius" and _steps(p) == temp, p["title"]
                seen["temp"] += 1
            if p["type"] == "timeseries" and re.search(rf"\b({M.UNIT_SOH}|{re.escape(M.R_SOH_MEAN)})\b", exprs):
                assert defaults["unit"] == "percentunit" and _steps(p) == soh, p["title"]
                seen["soh"] += 1
    assert all(seen.values()), seen


def test_band_heatmaps_follow_band_order():
    ov = dashboards()[f"{C.UIDS['overview']}.json"]
    maps = {p["title"]: p for p in panels(ov) if p["type"] == "heatmap"}
    assert [t["legendFormat"] for t in maps["SoC bands over time"]["targets"]] == list(soc_band_labels())
    assert ([t["legendFormat"] for t in maps["Temperature bands over time"]["targets"]]
            == list(temperature_band_labels()))
    for p in maps.values():
        assert p["options"]["calculate"] is False


def test_farm_panels_use_the_recording_rules_and_shard_panels_the_instance():
    """Farm-wide figures come from the recording rules (all shards added up); per-shard,
    per-unit and protocol panels select $instance."""
    for d in dashboards().values():
        for p in panels(d):
            for t in p["targets"]:
                e = t["expr"]
                raw_farm = re.findall(r"\b(bess_farm_[a-z_]+)\{", e)
                if raw_farm and 'instance=~"$instance"' not in e:
                    assert "units_by_state" in e or "chaos" in e, (p["title"], e)   # annotations only
                if re.search(r"\bbess_(unit|modbus|tick|physics|snapshot)_", e) or "http_server" in e:
                    assert 'instance=~"$instance"' in e, (p["title"], e)


def test_rendering_is_deterministic():
    a = {p: t for p, t in render().items()}
    b = {p: t for p, t in render().items()}
    assert a == b


def test_docs_name_every_dashboard_and_alert():
    from bess_grafana.rules import ALERTS
    text = (ROOT / "docs" / "dashboards.md").read_text()
    for uid in C.UIDS.values():
        assert f"`{uid}`" in text, uid
    for a in ALERTS:
        assert a.name in text, a.name
