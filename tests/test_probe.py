"""``bess probe`` (interfaces/probe.py) against a real runtime: /readyz and the SunSpec marker,
and what it says (and exits with) when the farm is not there or not SunSpec."""

from __future__ import annotations

import json
import socket
import threading

import pytest

from bess_farm.interfaces.probe import main, parse_address
from runtime_helpers import free_port, running


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    with running(tmp_path=tmp_path_factory.mktemp("probe")) as rt:
        yield rt


def test_ready_and_sunspec_marker(farm, capsys):
    # --wait: /readyz reports "engine" only once the ticker has run its first tick after start
    code = main(["--api", farm.api_url, "--modbus", f"127.0.0.1:{farm.port}", "--wait", "20"])
    out = capsys.readouterr()
    assert code == 0, out
    assert "/readyz: ready" in out.out and "'SunS'" in out.out


def test_not_ready_names_the_failing_check(farm, capsys):
    """/readyz answers 503 (here: no Modbus listener registered) and the probe names the check."""
    servers = farm.servers
    farm.call(lambda: setattr(farm, "servers", []))
    try:
        code = main(["--api", farm.api_url])
    finally:
        farm.call(lambda: setattr(farm, "servers", servers))
    assert code == 1
    assert "not ready: HTTP 503 (failing: modbus: not listening)" in capsys.readouterr().err


def test_plant_device_and_json(farm, capsys):
    code = main(["--modbus", f"127.0.0.1:{farm.port}", "--device-id", "255", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"] is True
    assert [c["check"] for c in doc["checks"]] == ["sunspec"]


def test_missing_device_is_a_refusal(farm, capsys):
    # device ids 1..40 exist on the default farm's port; 200 does not: Modbus exception 0x0B
    code = main(["--modbus", f"127.0.0.1:{farm.port}", "--device-id", "200"])
    assert code == 1
    assert "exception 0x0b" in capsys.readouterr().err


def test_unreachable(capsys):
    port = free_port()
    code = main(["--api", f"http://127.0.0.1:{port}", "--modbus", f"127.0.0.1:{port}", "--timeout", "1"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.count("cannot connect") == 2


def test_not_sunspec(capsys):
    """A server that answers function 3 with zeros: reachable, but no marker (exit 1)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def serve():
        conn, _ = srv.accept()
        with conn:
            req = conn.recv(12)
            tid = req[:2]
            conn.sendall(tid + b"\x00\x00\x00\x0b" + req[6:7] + b"\x03\x08" + b"\x00" * 8)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        code = main(["--modbus", f"127.0.0.1:{port}", "--timeout", "2"])
    finally:
        t.join(5)
        srv.close()
    assert code == 1
    assert "no SunSpec marker" in capsys.readouterr().err


def test_usage_errors(capsys):
    assert main([]) == 2
    assert main(["--modbus", "host:notaport"]) == 2
    assert main(["--api", "bess:8000"]) == 2
    assert main(["--modbus", "h:1", "--device-id", "256"]) == 2
    assert "error" in capsys.readouterr().err


@pytest.mark.parametrize("text,expected", [("bess:5020", ("bess", 5020)), ("bess", ("bess", 5020)),
                                           ("[::1]:5021", ("::1", 5021)), ("10.0.0.1:502", ("10.0.0.1", 502))])
def test_parse_address(text, expected):
    assert parse_address(text) == expected
