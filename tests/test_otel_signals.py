"""The runtime's signals over a real runtime (engine + Modbus on 127.0.0.1), telemetry started by
the test itself (start_telemetry with an in-memory reader), so this runs with or without the
runtime's own wiring."""

from __future__ import annotations

import time

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from runtime_helpers import RawClient, ModbusException, running, wait_ticks

from bess_farm.otel.setup import TelemetrySettings, start_telemetry

SITE = """
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 14
[[units]]
preset = "nmc-2.6mwh-20ft"
count = 6
"""
try:                                 # once the runtime reads [telemetry], keep its own exporter off
    from bess_farm.interfaces.runtime import SiteConfig
    if "telemetry" in SiteConfig.__dataclass_fields__:
        SITE += '[telemetry]\nexporter = "none"\n'
except ImportError:
    pass


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(k, raising=False)


def collect(reader) -> dict[str, list[tuple[dict, object]]]:
    out: dict[str, list] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend((dict(p.attributes), p) for p in m.data.data_points)
    return out


def value(points, **attrs):
    vals = [p.value for a, p in points if all(a.get(k) == v for k, v in attrs.items())]
    assert len(vals) == 1, (attrs, points)
    return vals[0]


def start(rt, **kw):
    reader = InMemoryMetricReader()
    s = TelemetrySettings(exporter="none", **kw)
    t = rt.call(lambda: start_telemetry(rt, s, extra_readers=[reader]))
    return t, reader


def test_farm_and_units_from_one_tick(tmp_path):
    with running(SITE, tmp_path=tmp_path, profile="constant") as rt:
        wait_ticks(rt, 3)
        t, reader = start(rt)
        try:
            m = collect(reader)
            units = m["bess.unit.power"]
            assert len(units) == 20
            assert {a["vendor"] for a, _ in units} == set(rt.farm.vendor.tolist())
            farm_p = value(m["bess.farm.power.ac"])
            assert abs(farm_p) > 1e5
            assert sum(p.value for _, p in units) == pytest.approx(farm_p, rel=1e-4)
            assert sum(p.value for _, p in m["bess.farm.units.by_state"]) == 20
            assert sum(p.value for _, p in m["bess.farm.units.by_soc_band"]) == 20
            assert sum(p.value for _, p in m["bess.farm.units.by_temperature_band"]) == 20
            assert value(m["bess.units.simulated"]) == 20
            assert value(m["bess.unit_metrics.units"]) == 20 and value(m["bess.unit_metrics.omitted"]) == 0
            state = {a["unit_id"]: p.value for a, p in m["bess.unit.state"]}
            assert set(state.values()) <= set(range(7)) and isinstance(state["0"], int)
            for a, p in m["bess.unit.soc_ratio"]:
                assert 0 <= p.value <= 1
        finally:
            t.shutdown()


def test_cap_and_selector_and_no_overflow(tmp_path):
    with running(SITE, tmp_path=tmp_path) as rt:
        t, reader = start(rt, unit_metrics_units="2-5,10-19", unit_metrics_cap=8)
        try:
            m = collect(reader)
            for name in ("bess.unit.soc_ratio", "bess.unit.temperature", "bess.unit.alarm_bitmask"):
                ids = sorted(int(a["unit_id"]) for a, _ in m[name])
                assert ids == [2, 3, 4, 5, 10, 11, 12, 13], name
            assert value(m["bess.unit_metrics.cap"]) == 8
            assert value(m["bess.unit_metrics.units"]) == 8
            assert value(m["bess.unit_metrics.omitted"]) == 6
            assert not any("otel.metric.overflow" in a for pts in m.values() for a, _ in pts)
        finally:
            t.shutdown()


def test_modbus_requests_by_model_and_outcome(tmp_path):
    with running(SITE, tmp_path=tmp_path) as rt:
        t, reader = start(rt)
        try:
            c = RawClient(rt.port)
            for _ in range(3):
                c.read(1, 40000, 2)                  # 'SunS' header
                c.read(2, 40072, 20)                 # model 802
            with pytest.raises(ModbusException):
                c.read(1, 100, 2)                    # illegal address
            with pytest.raises(ModbusException):
                c.write(1, 40072, [1])               # a read-only point: write rejected
            c.close()
            time.sleep(0.2)
            m = collect(reader)
            req = m["bess.modbus.requests"]
            assert value(req, function_code="3", sunspec_model="header", outcome="ok") == 3
            assert value(req, function_code="3", sunspec_model="802", outcome="ok") == 3
            assert value(req, function_code="3", sunspec_model="none", outcome="exception") == 1
            assert value(req, function_code="16", sunspec_model="802", outcome="exception") == 1
            dur = {tuple(sorted(a.items())): p for a, p in m["bess.modbus.request.duration"]}
            p = dur[(("function_code", "3"), ("outcome", "ok"), ("sunspec_model", "802"))]
            assert p.count == 3 and 0 < p.sum < 1 and list(p.explicit_bounds)[0] == 0.0001
            assert value(m["bess.modbus.exceptions"], exception_code="2") >= 1
            assert value(m["bess.modbus.writes_rejected"]) == 1
            assert value(m["bess.modbus.connections"]) == 0
        finally:
            t.shutdown()
        assert rt.modbus_stats.observe is None or rt.modbus_stats.observe != t.observe_modbus


def test_chaos_counts_when_present(tmp_path):
    class Chaos:
        running = False              # the runtime's shutdown asks before stopping a scenario

        def active_by_type(self):
            return {"hvac_failure": 2, "sensor_drift": 1}

        def injected_by_type(self):
            return {"hvac_failure": 5, "sensor_drift": 1, "comm_loss": 3}

    with running(SITE, tmp_path=tmp_path) as rt:
        t, reader = start(rt)
        try:
            m = collect(reader)
            assert all(p.value == 0 for _, p in m["bess.chaos.faults.active"])   # no faults: zero
            rt.chaos = Chaos()
            m = collect(reader)
            assert value(m["bess.chaos.faults.active"], fault_type="hvac_failure") == 2
            assert value(m["bess.chaos.faults.injected"], fault_type="comm_loss") == 3
        finally:
            t.shutdown()


def test_tick_hooks_fill_the_histograms(tmp_path):
    with running(SITE, tmp_path=tmp_path) as rt:
        t, reader = start(rt)
        try:
            for i in range(5):
                t.record_tick(0.004 * (i + 1), 0.0002, 0.003, 0.00005)
            m = collect(reader)
            for name in ("bess.tick.duration", "bess.physics.step.duration",
                         "bess.snapshot.publish.duration", "bess.tick.lateness"):
                [(_, p)] = m[name]
                assert p.count == 5, name
            [(_, p)] = m["bess.tick.duration"]
            assert list(p.explicit_bounds)[0] == 0.001 and list(p.explicit_bounds)[-1] == 1.0
            assert value(m["bess.ticks"]) >= 1
        finally:
            t.shutdown()


def test_sunspec_model_labels():
    from bess_farm.interfaces.modbus.server import _sunspec_model_at
    assert _sunspec_model_at(40000) == "header"
    assert _sunspec_model_at(40002) == "1"
    assert _sunspec_model_at(40070) == "802"
    assert _sunspec_model_at(40350) == "704"
    assert _sunspec_model_at(40417) == "end"
    assert _sunspec_model_at(39999) == "none" and _sunspec_model_at(40419) == "none"
