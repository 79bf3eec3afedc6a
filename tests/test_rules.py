"""The Prometheus rules (grafana/rules, generated from grafana/bess_grafana/rules.py).

* ``promtool check rules`` on every rules file;
* ``promtool test rules`` on grafana/rules_tests/bess-rules.test.yaml: every alert fires on its
  condition at the right time (silent one evaluation before ``onset + for``, firing at it, with its
  labels and rendered annotations) and stays silent otherwise (other shards, units and jobs, a
  quiet farm, after the condition clears); the recording rules add shards up, weight means by
  units, and compute round-trip efficiency and fade rate;
* every alert the issue asks for exists, with severity, summary, description and a runbook_url to a
  docs/runbooks file that names it; no runbook is orphaned.
Skipped without promtool (apt-get install -y --no-install-recommends prometheus).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
pytest.importorskip("grafana_foundation_sdk", reason="pip install 'grafana-foundation-sdk==1769699379!11.6.0'")

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
RULES = sorted((GRAFANA / "rules").glob("*.yaml"))
TESTS = GRAFANA / "rules_tests" / "bess-rules.test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks"
sys.path.insert(0, str(GRAFANA))

from bess_grafana import config as C  # noqa: E402
from bess_grafana.lint import lint_rules  # noqa: E402
from bess_grafana.rules import ALERTS  # noqa: E402
from bess_grafana.rules_tests import CASES, _FILTERS, coverage, dur, template_forms  # noqa: E402

#: what the issue asks for -> the alert(s) that do it
REQUIRED = {
    "thermal runaway (critical, within one scrape)": ["BessThermalRunaway"],
    "unit over-temperature": ["BessUnitOverTemperature"],
    "HVAC failure": ["BessUnitHvacFailure"],
    "unit tripped": ["BessUnitTripped"],
    "farm SoC low/high": ["BessFarmSocLow", "BessFarmSocHigh"],
    "SoH below threshold": ["BessUnitSohLow", "BessFarmSohLow"],
    "Modbus server down or without clients": ["BessModbusServerDown", "BessModbusNoClients"],
    "Modbus error rate": ["BessModbusErrorRate"],
    "tick loop overrunning or stalled": ["BessTickOverrun", "BessTickLoopStalled"],
    "API error rate and latency": ["BessApiErrorRate", "BessApiLatencyHigh"],
    "metrics pipeline down (collector or target absent)": ["BessMetricsTargetDown", "BessMetricsTargetAbsent",
                                                           "BessMetricsNotExported"],
    "sensor disagreement": ["BessUnitSensorFault"],
}


def promtool() -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.skip("promtool missing: apt-get install -y --no-install-recommends prometheus")
    return exe


def rule_docs() -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in RULES}


def alerts() -> dict[str, dict]:
    return {r["alert"]: r for doc in rule_docs().values() for g in doc["groups"] for r in g["rules"]
            if "alert" in r}


def test_promtool_check_rules():
    assert [p.name for p in RULES] == ["bess-alerts.yaml", "bess-recording.yaml"]
    r = subprocess.run([promtool(), "check", "rules", *map(str, RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_unit_tests():
    r = subprocess.run([promtool(), "test", "rules", TESTS.name], cwd=TESTS.parent, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_every_alert_is_tested_firing_and_silent():
    doc = yaml.safe_load(TESTS.read_text())
    cov = coverage(doc)
    assert set(cov) == set(alerts()), set(cov) ^ set(alerts())
    for name, c in cov.items():
        assert c["firing"] >= 1 and c["silent"] >= 2, (name, c)     # before, and on a quiet farm
    assert sorted(c.alert for c in CASES) == sorted(alerts())


def test_firing_time_is_onset_plus_for():
    """The test file checks the boundary: silent one evaluation before onset + for, firing at it
    (one evaluation later for an alert on a recorded series: the recording group may run after
    the alert group in the same evaluation)."""
    doc = yaml.safe_load(TESTS.read_text())
    rules = alerts()
    for case, test in zip(CASES, doc["tests"], strict=False):
        assert test["name"].startswith(case.alert)
        checks = test["alert_rule_test"]
        first_firing = next(c for c in checks if c["exp_alerts"])
        expect = dur(case.onset) + dur(rules[case.alert].get("for", "0s"))
        lag = 15 if ":" in rules[case.alert]["expr"] else 0
        assert dur(first_firing["eval_time"]) == expect + lag, case.alert
        before = [c for c in checks if dur(c["eval_time"]) == expect - dur(case.interval)]
        assert expect - dur(case.interval) < 0 or (before and before[0]["exp_alerts"] == []), case.alert


def test_required_alerts_with_severity_annotations_and_runbooks():
    have = alerts()
    for what, names in REQUIRED.items():
        for n in names:
            assert n in have, f"{what}: {n} missing"
    assert set(have) == {n for ns in REQUIRED.values() for n in ns}
    runaway = have["BessThermalRunaway"]
    assert runaway["labels"]["severity"] == "critical" and "for" not in runaway
    assert not lint_rules(rule_docs()), lint_rules(rule_docs())
    for name, r in have.items():
        url = r["annotations"]["runbook_url"]
        assert url.startswith(C.RUNBOOK_BASE)
        text = (RUNBOOKS / url[len(C.RUNBOOK_BASE):]).read_text()
        assert name in text
        for heading in ("## Meaning", "## Impact", "## Diagnosis", "## Mitigation"):
            assert heading in text, (name, heading)


def test_no_orphan_runbooks():
    used = {a.runbook_file for a in ALERTS}
    files = {p.name for p in RUNBOOKS.glob("*.md")} - {"README.md"}
    assert files == used, files ^ used


def test_annotation_templates_are_ones_the_test_renderer_knows():
    """Expected annotations in the promtool tests are rendered in Python: rules may only use the
    template forms rules_tests.render supports."""
    for a in ALERTS:
        for text in a.rule()["annotations"].values():
            for form in template_forms(text):
                head, _, filt = (p.strip() for p in form.partition("|"))
                assert head.startswith("$labels.") or (head == "$value" and filt in _FILTERS), (a.name, form)


def test_no_rule_sets_its_own_interval():
    """The stated alert delays assume the Prometheus evaluation interval (docs/dashboards.md)."""
    for doc in rule_docs().values():
        for g in doc["groups"]:
            assert "interval" not in g, g["name"]
