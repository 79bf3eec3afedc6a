"""The instrument table: names, docs generated from it, and what the exporter really shows."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import types

import pytest

from bess_farm.otel import docs
from bess_farm.otel.instruments import (BY_NAME, HISTOGRAM, INSTRUMENTS, PROCESS, UNIT_INSTRUMENTS,
                                        check_table, prometheus_name)
from bess_farm.otel.setup import TelemetrySettings, start_telemetry


def fake_runtime(n_units: int = 12):
    """The parts of a Runtime that telemetry reads, without the ticker or listeners."""
    from bess_farm.engine.farm import Farm
    from bess_farm.interfaces.modbus.server import ModbusStats
    from bess_farm.interfaces.published import Published
    from bess_farm.interfaces.runtime import TickStats
    farm = Farm.from_config({"units": [{"preset": "lfp-3.7mwh-20ft", "count": n_units}]})
    farm.set_farm_power(1e6)
    farm.step(0.1, 3)
    rt = types.SimpleNamespace(farm=farm, pub=Published.of(farm), devices=None, stats=TickStats(),
                               modbus_stats=ModbusStats())
    rt.stats.ticks = 3
    return rt


def test_table_is_consistent():
    assert check_table() == []
    assert len({i.name for i in INSTRUMENTS}) == len(INSTRUMENTS)


def test_names_follow_the_conventions():
    for i in INSTRUMENTS:
        pn = prometheus_name(i)
        assert re.fullmatch(r"[a-z][a-z0-9_]*", pn), pn
        if i.kind in ("counter", "observable_counter"):
            assert pn.endswith("_total")
        if i.unit == "s":
            assert pn.endswith("_seconds") or pn.endswith("_seconds_total")
        if i.unit == "W":
            assert pn.endswith("_watts")
        if i.unit == "Cel":
            assert pn.endswith("_celsius")
    assert prometheus_name(BY_NAME["bess.farm.energy.available_watthours"]) == "bess_farm_energy_available_watthours"
    assert prometheus_name(BY_NAME["http.server.request.duration"]) == "http_server_request_duration_seconds"


def test_histogram_buckets_span_the_issue_ranges():
    def span(name):
        b = BY_NAME[name].buckets
        return b[0], b[-1]
    assert span("bess.tick.duration") == (0.001, 1.0)
    assert span("bess.physics.step.duration") == (0.001, 1.0)
    assert span("bess.modbus.request.duration") == (0.0001, 0.1)
    assert span("http.server.request.duration") == (0.001, 10.0)


def test_docs_table_is_current():
    text = docs.DOC.read_text(encoding="utf-8")
    assert docs.render(text) == text, "docs/telemetry.md is stale: python -m bess_farm.otel.docs --write"
    for i in INSTRUMENTS:
        assert f"`{prometheus_name(i)}`" in text


@pytest.fixture
def telemetry():
    rt = fake_runtime(12)
    s = TelemetrySettings(prometheus_host="127.0.0.1", prometheus_port=0, unit_metrics_cap=8)
    t = start_telemetry(rt, s)
    t.record_tick(0.01, 0.001, 0.008, 0.0001)
    t.observe_modbus(3, "802", "ok", 0.0003)
    time.sleep(0.1)                  # the simulated-time ratio needs a wall-clock interval
    yield rt, t
    t.shutdown()


def families(text: str) -> dict[str, str]:
    """metric family name -> TYPE, from a Prometheus text exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_exporter_names_match_the_table(telemetry):
    rt, t = telemetry
    text = t.collect_text().decode()
    fams = families(text)
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    for i in INSTRUMENTS:
        if i.name == "http.server.request.duration":
            continue                                      # no request was served here
        if i.name == "bess.farm.round_trip_efficiency_ratio" and not rt.pub.agg.e_ac_charged_wh > 0:
            continue
        pn = prometheus_name(i)
        assert pn in fams, f"{i.name} -> {pn} missing; have {sorted(fams)}"
        want = {"histogram": "histogram", "counter": "counter", "observable_counter": "counter"}.get(i.kind, "gauge")
        assert fams[pn] == want, (pn, fams[pn])
        if i.group != PROCESS:
            assert helps[pn] == i.description
    assert "otel_metric_overflow" not in text
    assert len(re.findall(r"^bess_unit_soc_ratio\{", text, re.M)) == 8
    assert re.search(r"^bess_unit_metrics_omitted 4\.0$", text, re.M)


def test_promtool_check_metrics(telemetry):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (apt-get install -y --no-install-recommends prometheus)")
    _, t = telemetry
    p = subprocess.run(["promtool", "check", "metrics"], input=t.collect_text(), capture_output=True,
                       timeout=60)
    assert p.returncode == 0, (p.stdout + p.stderr).decode()


def test_unit_instruments_are_the_nine_per_unit_signals():
    assert [i.name.split(".", 2)[2] for i in UNIT_INSTRUMENTS] == [
        "soc_ratio", "soh_ratio", "temperature", "voltage", "current", "power",
        "equivalent_full_cycles", "state", "alarm_bitmask"]
    assert all(i.attributes == ("unit_id", "vendor") for i in UNIT_INSTRUMENTS)
    assert all(i.kind == HISTOGRAM for i in INSTRUMENTS if i.buckets)
