"""The live commands (`bess status|units|unit|setpoint|reset|enable|disable|mode`) against a real
runtime on 127.0.0.1: tables and --json, writes that show at the next tick, and the exit codes
(1 refused, 2 usage, 3 unreachable)."""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from bess_farm.interfaces.cli import main, parse_power
from runtime_helpers import free_port, running

SITE = """
[farm]
name = "cli-test"
units_per_row = 4
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 12
[api]
history_units = "0-3"
history_interval_s = 0.1
history_length = 50
"""


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with running(SITE, tmp_path=tmp_path_factory.mktemp("cli"), profile="idle", timeout=300) as rt:
        assert rt.api_url and rt.api_token
        yield rt


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("BESS_URL", "BESS_API_TOKEN", "BESS_API_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def bess(*argv) -> int:
    """`bess ARGV` in this process; argparse's own exits become return codes."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return int(exc.code or 0)


def accepted_tick(out: str) -> int:
    m = re.search(r"accepted, takes effect at tick (\d+)", out)
    assert m, out
    return int(m.group(1))


def wait_for_tick(rt, tick: int, timeout: float = 10.0) -> None:
    t_end = time.monotonic() + timeout
    while rt.farm.tick < tick:
        assert time.monotonic() < t_end, f"tick {tick} not reached (at {rt.farm.tick})"
        time.sleep(0.005)


# ------------------------------------------------------------------ reads
def test_status_table_and_json(rt, capsys):
    assert bess("status", "--url", rt.api_url) == 0
    out = capsys.readouterr().out
    assert "cli-test: 12 units (12 x Generic LFP-3.7MWh-20ft)" in out
    for label in ("tick", "dispatch", "states", "power", "SoC", "SoH", "temperature", "energy",
                  "alarms", "modbus", "ticks"):
        assert re.search(rf"^{label}\s", out, re.MULTILINE), (label, out)
    assert f"127.0.0.1:{rt.port}" in out and "idle" in out
    assert bess("status", "--url", rt.api_url, "--json") == 0
    farm = json.loads(capsys.readouterr().out)
    assert farm["name"] == "cli-test" and farm["units"] == 12
    assert sum(farm["aggregates"]["units_per_state"].values()) == 12


def test_status_from_environment_in_a_subprocess(rt, monkeypatch):
    monkeypatch.setenv("BESS_URL", rt.api_url.removeprefix("http://"))     # host:port is enough
    r = subprocess.run([sys.executable, "-m", "bess_farm", "status"], capture_output=True, check=False,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "cli-test: 12 units" in r.stdout and r.stderr == ""


def test_units_table_filters_pages_and_json(rt, capsys):
    assert bess("units", "--url", rt.api_url, "--limit", 5) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["id", "row", "state", "SoC", "%", "SoH", "%", "temp", "C", "power",
                              "kW", "alarms"]
    assert [line.split()[0] for line in out[1:6]] == ["0", "1", "2", "3", "4"]
    assert "units 1-5 of 12 matching" in out[6] and "--offset 5" in out[6]

    assert bess("units", "--url", rt.api_url, "--all", "--limit", 5, "--json") == 0
    every = json.loads(capsys.readouterr().out)
    assert [u["id"] for u in every["units"]] == list(range(12)) and every["total"] == 12

    assert bess("units", "--url", rt.api_url, "--row", 1, "--soc-min", "10%", "--json") == 0
    row1 = json.loads(capsys.readouterr().out)
    assert [u["id"] for u in row1["units"]] == [4, 5, 6, 7]
    assert all(u["row"] == 1 and u["soc"] >= 0.1 for u in row1["units"])

    assert bess("units", "--url", rt.api_url, "--state", "fault") == 0
    assert "no matching units" in capsys.readouterr().out
    assert bess("units", "--url", rt.api_url, "--state", "sleeping") == 1       # the farm refuses
    assert "state" in capsys.readouterr().err
    assert bess("units", "--url", rt.api_url, "--soc-max", "120%") == 2         # usage
    assert "outside 0..1" in capsys.readouterr().err


def test_unit_in_full_and_its_history(rt, capsys):
    assert bess("unit", 3, "--url", rt.api_url) == 0
    out = capsys.readouterr().out
    fields = dict(re.match(r"(\w+):\s+(.*)", line).groups() for line in out.splitlines())
    assert fields["id"] == "3" and fields["row"] == "0" and fields["mode"] == "auto"
    assert fields["soc"].endswith(" %") and fields["modbus"] == f"port {rt.port}, device id 4"

    time.sleep(0.3)                                  # a few history samples (every 0.1 s)
    assert bess("unit", 3, "--url", rt.api_url, "--history", "--last", 2) == 0
    out = capsys.readouterr().out
    head, _, table = out.partition("history of unit 3: 2 sample(s)")
    assert "id:" in head and table, out
    rows = table.strip().splitlines()[1:]
    assert rows[0].split()[0] == "time" and len(rows) == 3
    assert rows[1].split()[-1] in ("idle", "standby", "charging", "discharging")

    assert bess("unit", 2, "--url", rt.api_url, "--history", "--json") == 0
    both = json.loads(capsys.readouterr().out)
    assert both["unit"]["id"] == 2 and both["history"]["fields"][0] == "time_s"
    assert bess("unit", 11, "--url", rt.api_url, "--history") == 1        # keeps no history
    assert "history_units" in capsys.readouterr().err
    assert bess("unit", 99, "--url", rt.api_url) == 1
    assert "unit 99 does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ writes
def test_setpoints_take_effect_at_the_announced_tick(rt, capsys, monkeypatch, tmp_path):
    url, token = rt.api_url, rt.api_token
    assert bess("setpoint", "--url", url, "--token", token, "--unit", 2, "-300kW") == 0
    tick = accepted_tick(capsys.readouterr().out)
    wait_for_tick(rt, tick)
    assert rt.farm.read(lambda s: float(s["p_request_w"][2])) == pytest.approx(-300e3, rel=1e-4)

    monkeypatch.setenv("BESS_URL", url)
    monkeypatch.setenv("BESS_API_TOKEN", token)
    assert bess("setpoint", "--units", "4-5", "0.2MW") == 0
    out = capsys.readouterr().out
    assert "(2 units)" in out
    wait_for_tick(rt, accepted_tick(out))
    assert rt.farm.read(lambda s: list(s["p_request_w"][4:7])) == pytest.approx([2e5, 2e5, 0.0], abs=1)
    assert bess("unit", 4, "--json") == 0
    unit = json.loads(capsys.readouterr().out)
    assert unit["mode"] == "manual" and unit["setpoint_w"] == pytest.approx(2e5)

    monkeypatch.delenv("BESS_API_TOKEN")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    assert bess("setpoint", "--farm", "-1.5MW", "--token-file", token_file, "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["accepted"] is True
    wait_for_tick(rt, answer["tick"])
    assert bess("status", "--json") == 0
    farm = json.loads(capsys.readouterr().out)
    assert farm["setpoint_w"] == pytest.approx(-1.5e6) and farm["dispatch"] == "setpoint"

    monkeypatch.setenv("BESS_API_TOKEN", token)
    assert bess("setpoint", "--dispatch", "idle") == 0
    assert "dispatch idle: accepted" in capsys.readouterr().out
    assert bess("mode", "auto", "--all") == 0
    assert "mode auto of all units: accepted" in capsys.readouterr().out
    assert bess("disable", "--unit", 7) == 0
    wait_for_tick(rt, accepted_tick(capsys.readouterr().out))
    assert bess("enable", "--units", "7") == 0
    wait_for_tick(rt, accepted_tick(capsys.readouterr().out))
    assert bess("reset", "--all") == 0
    assert "(12 units)" in capsys.readouterr().out
    assert bess("unit", 4, "--json") == 0
    unit = json.loads(capsys.readouterr().out)
    assert unit["mode"] == "auto" and unit["enabled"] is True


def test_refusals_exit_1_with_the_farms_message(rt, capsys):
    assert bess("setpoint", "--url", rt.api_url, "--token", "not-the-token-at-all", "--farm", "1MW") == 1
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "token was not accepted" in err
    assert bess("setpoint", "--url", rt.api_url, "--farm", "1MW") == 1            # no token at all
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "--token" in err and "BESS_API_TOKEN" in err
    assert bess("setpoint", "--url", rt.api_url, "--token", rt.api_token, "--unit", 1, "50MW") == 1
    assert "HTTP 422" in capsys.readouterr().err                                  # above its rating


def test_usage_errors_exit_2(rt, capsys):
    tok = ("--url", rt.api_url, "--token", rt.api_token)
    assert bess("setpoint", *tok, "--unit", 1, "12 parsecs") == 2
    assert "invalid power '12 parsecs'" in capsys.readouterr().err
    assert bess("setpoint", *tok, "--farm") == 2
    assert "give the power" in capsys.readouterr().err
    assert bess("setpoint", *tok, "5MW") == 2                       # which target?
    assert "--farm" in capsys.readouterr().err
    assert bess("setpoint", *tok, "--units", "a-b", "1MW") == 2
    assert "invalid unit list" in capsys.readouterr().err
    assert bess("reset", *tok) == 2                                 # never all units by default
    capsys.readouterr()
    assert bess("status", "--url", "ftp://127.0.0.1") == 2
    assert "invalid URL" in capsys.readouterr().err
    assert bess("status", "--url", rt.api_url, "--token-file", "/nonexistent/token") == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("text, watts", [("1.5MW", 1.5e6), ("-500kW", -5e5), ("2e6", 2e6), ("750 W", 750.0),
                                         ("-1.2gw", -1.2e9), ("+.5MW", 5e5), ("0", 0.0)])
def test_parse_power(text, watts):
    assert parse_power(text) == pytest.approx(watts)


@pytest.mark.parametrize("text", ["", "MW", "1.5 MWh", "5 parsecs", "1e999", "nan", "1,5MW"])
def test_parse_power_rejects(text):
    with pytest.raises(ValueError, match="power"):
        parse_power(text)


# ------------------------------------------------------------------ unreachable or not a farm
def test_unreachable_exits_3(capsys):
    port = free_port()                                  # nothing listens there
    assert bess("status", "--url", f"http://127.0.0.1:{port}") == 3
    err = capsys.readouterr().err
    assert f"cannot reach the farm at http://127.0.0.1:{port}: connection refused" in err
    assert "BESS_URL" in err


def test_silent_server_times_out_with_exit_3(capsys):
    with socket.socket() as srv:                        # accepts (backlog) but never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        assert bess("units", "--url", f"127.0.0.1:{port}", "--timeout", "0.3") == 3
        assert time.monotonic() - t0 < 5
    assert "no answer within 0.3 s" in capsys.readouterr().err


def test_an_http_server_that_is_not_the_farm(capsys):
    class Html(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status = 200 if self.path == "/api/v1/farm" else 404
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert bess("status", "--url", url) == 1
        assert "text/html, not JSON" in capsys.readouterr().err
        assert bess("unit", 1, "--url", url) == 1
        assert "HTTP 404" in capsys.readouterr().err
    finally:
        srv.shutdown()
        srv.server_close()
