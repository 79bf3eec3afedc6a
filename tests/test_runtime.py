"""`bess run`: start order, logs, signals, the ticker's clock and overrun policy, config errors."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
import urllib.error

import pytest

from runtime_helpers import RawClient, free_port, running, wait_ticks

BESS = [sys.executable, "-m", "bess_farm"]


def _run(args, timeout=90):
    return subprocess.run(BESS + args, capture_output=True, text=True, timeout=timeout)


def test_bess_run_starts_serves_and_stops_with_json_logs():
    port, api_port = free_port(), free_port()
    proc = subprocess.Popen(BESS + ["run", "--modbus-host", "127.0.0.1", "--modbus-port", str(port),
                                    "--api-host", "127.0.0.1", "--api-port", str(api_port),
                                    "--log-format", "json", "--duration", "6s"],
                            stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        t_end = time.monotonic() + 90
        while time.monotonic() < t_end:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(json.loads(line))
            if lines[-1]["msg"] == "ready":
                break
        msgs = [d["msg"] for d in lines]
        assert msgs[:4] == ["engine started", "modbus listening", "api listening",
                            "api token generated"] and msgs[-1] == "ready", msgs
        assert lines[0]["units"] == 40 and lines[1]["ports"] == str(port)
        assert lines[2]["port"] == api_port and len(lines[3]["token"]) >= 32
        c = RawClient(port)
        assert c.read(1, 40000, 2) == [0x5375, 0x6E53]
        c.close()
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    last = json.loads(rest.strip().splitlines()[-1])
    assert last["msg"] == "stopped" and last["ticks"] >= 20


def test_sigterm_stops_cleanly():
    port = free_port()
    proc = subprocess.Popen(BESS + ["run", "--modbus-host", "127.0.0.1", "--modbus-port", str(port),
                                    "--api-host", "127.0.0.1", "--api-port", str(free_port())],
                            stderr=subprocess.PIPE, text=True)
    try:
        t_end = time.monotonic() + 90
        while time.monotonic() < t_end:
            line = proc.stderr.readline()
            if not line or " ready " in line:
                break
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped" in err
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_bad_config_and_busy_port_fail_with_a_message(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[modbus]\nport = 99999\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 2\n')
    r = _run(["run", "--config", str(bad), "--duration", "1s"])
    assert r.returncode == 2 and "modbus.port: 99999 is out of range" in r.stderr
    bad.write_text('[modbus]\ncolour = 1\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 2\n')
    r = _run(["run", "--config", str(bad), "--duration", "1s"])
    assert r.returncode == 2 and "modbus.colour: unknown key" in r.stderr
    bad.write_text('[modbus]\nplant_device_id = 5\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 2\n')
    r = _run(["run", "--config", str(bad), "--duration", "1s"])
    assert r.returncode == 2 and "collides with unit device ids" in r.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = _run(["run", "--modbus-host", "127.0.0.1", "--modbus-port", str(busy), "--no-api",
                  "--duration", "1s"])
        assert r.returncode == 2 and f"cannot listen for Modbus on 127.0.0.1:{busy}" in r.stderr
        r = _run(["run", "--modbus-host", "127.0.0.1", "--modbus-port", str(free_port()),
                  "--api-host", "127.0.0.1", "--api-port", str(busy), "--duration", "1s"])
        assert r.returncode == 2 and f"cannot listen for HTTP on 127.0.0.1:{busy}" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_ticker_keeps_to_the_wall_clock():
    with running(tick_hz=20.0) as rt:
        wait_ticks(rt, 2)
        t0, k0 = time.monotonic(), rt.farm.tick
        time.sleep(2.0)
        ticks = rt.farm.tick - k0
        elapsed = time.monotonic() - t0
    # catch-up keeps simulated time on the wall clock whatever the scheduling noise
    assert abs(ticks - 20 * elapsed) <= 3


@pytest.mark.parametrize("policy", ["catch-up", "skip"])
def test_overrun_policy(policy):
    with running(tick_hz=10.0) as rt:
        rt.site.run.overrun = policy
        real_step = rt.farm.step

        calls = [0]

        def slow_step(dt, n=1, parallel=None):
            calls[0] += 1
            if calls[0] % 5 == 0:
                time.sleep(0.35)             # every fifth tick takes 3.5 tick periods
            return real_step(dt, n, parallel)
        rt.farm.step = slow_step
        wait_ticks(rt, 1)
        t0, k0 = time.monotonic(), rt.farm.tick
        time.sleep(3.0)
        ticks = rt.farm.tick - k0
        elapsed = time.monotonic() - t0
        assert rt.stats.overruns >= 3
        assert (rt.stats.skipped == 0) if policy == "catch-up" else (rt.stats.skipped > 0)
        rt.farm.step = real_step
    if policy == "catch-up":
        assert abs(ticks - 10 * elapsed) <= 6, "missed ticks are run, simulated time keeps up"
    else:
        assert ticks < 0.8 * 10 * elapsed, "missed slots are dropped"


def test_trips_are_logged(caplog):
    with caplog.at_level(logging.INFO, logger="bess"):
        was = logging.getLogger("bess").propagate
        logging.getLogger("bess").propagate = True
        try:
            with running(tick_hz=10.0, speed=10.0) as rt:
                rt.call(lambda: rt.farm.trigger_runaway([0]))
                wait_ticks(rt, 3)
        finally:
            logging.getLogger("bess").propagate = was
    runaway = [r for r in caplog.records if r.getMessage() == "thermal runaway"]
    assert runaway and runaway[0].fields["unit"] == 0
    assert runaway[0].levelno == logging.CRITICAL


def test_parse_shard(monkeypatch):
    from bess_farm.interfaces.runtime import parse_shard
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    with pytest.raises(ValueError, match="index must be in 0..3"):
        parse_shard("4/4")
    with pytest.raises(ValueError, match="INDEX/COUNT"):
        parse_shard("x/4")
    monkeypatch.setattr(socket, "gethostname", lambda: "bess-farm-3")
    assert parse_shard("/4", from_hostname=True) == (3, 4)
    monkeypatch.setattr(socket, "gethostname", lambda: "laptop")
    with pytest.raises(ValueError, match="pod ordinal"):
        parse_shard("/4", from_hostname=True)


def test_a_shard_serves_its_own_units_by_farm_wide_id(tmp_path):
    import json as _json
    import urllib.request

    from bess_farm.interfaces.runtime import RuntimeThread, load_site_config
    cfg = tmp_path / "site.toml"
    cfg.write_text('[farm]\nunits_per_row = 4\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 16\n')
    site = load_site_config(cfg)
    site.run.checkpoints = False
    site.run.shard = (1, 2)
    site.modbus.host = site.api.host = "127.0.0.1"
    site.modbus.port, site.api.port = free_port(), free_port()
    site.run.duration_s = 60
    with RuntimeThread(site) as th:
        f = th.runtime.farm
        assert f.n_units == 8 and int(f.unit_id[0]) == 8
        c = RawClient(site.modbus.port)
        sn = c.read(1, 40002 + 2 + 48, 16)                   # model 1 SN of device 1
        assert bytes(b for w in sn for b in (w >> 8, w & 0xFF)).rstrip(b"\0").endswith(b"0000008")
        c.close()
        base = f"http://127.0.0.1:{site.api.port}"
        with urllib.request.urlopen(base + "/api/v1/units/9", timeout=10) as r:
            assert _json.loads(r.read())["id"] == 9
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(base + "/api/v1/units/3", timeout=10)
        assert e.value.code == 404 and b"in this shard" in e.value.read()
