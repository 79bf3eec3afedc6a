"""Chaos through the running product: what SCADA reads over Modbus, the REST routes, the CLI,
`bess run --scenario` and `bess simulate --scenario`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from bess_farm.interfaces.cli import main
from runtime_helpers import ModbusException, RawClient, free_port, running, wait_ticks

COMM = """
name = "comm test"
seed = 1
[[fault]]
type = "comm_silent"
at = 0
duration = "30s"
units = "0"
[[fault]]
type = "comm_exception"
at = 0
duration = "30s"
units = "1"
[[fault]]
type = "comm_latency"
at = 0
duration = "30s"
units = "2"
distribution = "uniform"
min_ms = 300
max_ms = 400
[[fault]]
type = "sensor_stuck"
at = 0
duration = "30s"
units = "3"
channel = "temperature"
value = 99.0
"""


def _post(rt, path, body):
    req = urllib.request.Request(rt.api_url + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {rt.api_token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(rt, path):
    with urllib.request.urlopen(rt.api_url + path, timeout=10) as r:
        return json.loads(r.read())


def test_comm_and_sensor_faults_as_scada_sees_them():
    with running(tick_hz=10.0, speed=1.0) as rt:
        code, body = _post(rt, "/api/v1/scenarios/start", {"toml": COMM})
        assert code == 200, body
        wait_ticks(rt, 3)
        c = RawClient(rt.port, timeout=1.0)
        with pytest.raises(socket.timeout):
            c.read(1, 40000, 2)                                  # unit 0: silent
        c.close()
        c = RawClient(rt.port, timeout=3.0)
        with pytest.raises(ModbusException) as e:
            c.read(2, 40000, 2)                                  # unit 1: gateway, 0x0B
        assert e.value.code == 0x0B
        def timed(device):
            t = time.monotonic()
            assert c.read(device, 40000, 2) == [0x5375, 0x6E53]
            return time.monotonic() - t
        assert min(timed(3) for _ in range(2)) >= 0.28           # unit 2: 300-400 ms late
        assert min(timed(4) for _ in range(3)) < 0.2             # unit 3: on time
        # unit 3's temperature sensor is stuck at 99 C: SCADA reads 99, the truth stays
        tmp_cab = 40143 + 2 + 34
        sf = c.read(4, 40143 + 2 + 120, 1)[0]
        sf = sf - 0x10000 if sf & 0x8000 else sf
        raw = c.read(4, tmp_cab, 1)[0]
        assert raw * 10.0 ** sf == pytest.approx(99.0, abs=0.11)
        assert rt.farm.snapshot()["temp_c"][3] < 60
        unit = _get(rt, "/api/v1/units/0")
        assert unit["scada"] == {"reachable": False, "comm_fault": "silent"}
        assert _get(rt, "/api/v1/units/2")["scada"]["comm_fault"] == "latency"
        active = _get(rt, "/api/v1/scenarios/active")
        assert {f["fault"] for f in active["faults"]} == {"comm_silent", "comm_exception",
                                                          "comm_latency", "sensor_stuck"}
        code, body = _post(rt, "/api/v1/scenarios/start", {"name": "grid-outage"})
        assert code == 409
        code, body = _post(rt, "/api/v1/scenarios/stop", {})
        assert code == 200 and body["reverted"] == 4
        wait_ticks(rt, 3)
        c2 = RawClient(rt.port, timeout=2.0)
        assert c2.read(1, 40000, 2) == [0x5375, 0x6E53]          # answers again
        c2.close()
        c.close()
        kinds = [e["kind"] for e in _get(rt, "/api/v1/events?since=0")["events"]]
        assert kinds.count("start") == 4 and kinds.count("end") == 4
        assert _get(rt, "/api/v1/events?since=1000")["events"] == []


def test_bad_scenarios_are_refused_with_their_line_and_nothing_runs():
    with running() as rt:
        code, body = _post(rt, "/api/v1/scenarios/start",
                           {"toml": 'name = "x"\n[[fault]]\ntype = "hvac_failure"\nat = 0\nunits = "0-99"\n'})
        assert code == 422 and "request:2:" in body["error"]["message"] and "99" in body["error"]["message"]
        code, body = _post(rt, "/api/v1/scenarios/start", {"name": "../../etc/passwd"})
        assert code == 422 and "must be one of 'accelerated-aging'" in body["error"]["message"]
        assert not _get(rt, "/api/v1/scenarios")["status"]["running"]


def test_cli_scenario_commands(capsys):
    with running() as rt:
        args = ["--url", rt.api_url, "--token", rt.api_token]
        assert main(["scenario", "list", *args]) == 0
        assert "thermal-runaway-propagation" in capsys.readouterr().out
        assert main(["scenario", "start", "grid-outage", *args]) == 0
        assert "accepted" in capsys.readouterr().out
        assert main(["scenario", "start", "grid-outage", *args]) == 1          # already running
        assert "running" in capsys.readouterr().err
        wait_ticks(rt, 2)
        assert main(["scenario", "stop", *args]) == 0
        capsys.readouterr()
        assert main(["scenario", "events", "--json", *args]) == 0
        events = json.loads(capsys.readouterr().out)["events"]
        assert events[0]["kind"] == "scenario_start" and events[-1]["kind"] == "scenario_stop"
        assert main(["scenario", "start", "nope", *args]) == 1
        assert "name: must be one of" in capsys.readouterr().err


def test_bess_run_with_a_scenario_and_a_bad_one(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n\n[[fault]]\ntype = "meteor"\nat = 0\nall = true\n')
    r = subprocess.run([sys.executable, "-m", "bess_farm", "run", "--scenario", str(bad), "--no-api",
                        "--no-checkpoints", "--modbus-host", "127.0.0.1", "--modbus-port", str(free_port()),
                        "--duration", "2s"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"{bad}:4:" in r.stderr and "unknown fault 'meteor'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "bess_farm", "run", "--scenario", "grid-outage", "--no-api",
                        "--no-checkpoints", "--modbus-host", "127.0.0.1", "--modbus-port", str(free_port()),
                        "--speed", "250", "--log-format", "json", "--duration", "6s"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    msgs = [json.loads(x)["msg"] for x in r.stderr.splitlines() if x.startswith("{")]
    assert any("scenario" in m for m in msgs) and any("fault" in m for m in msgs), msgs


def test_simulate_with_a_scenario_is_reproducible(tmp_path):
    outs = []
    for k in range(2):
        out = tmp_path / f"run{k}"
        r = subprocess.run([sys.executable, "-m", "bess_farm", "simulate", "--duration", "6h", "--dt", "10",
                            "--scenario", "random-chaos", "--out", str(out), "--quiet"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    a, b = ((o / "events.csv").read_text() for o in outs)
    assert a == b and a.count("\n") > 3
    assert (outs[0] / "farm.csv").read_text() == (outs[1] / "farm.csv").read_text()
