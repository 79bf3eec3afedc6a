"""End to end: the rules and dashboards against a real Prometheus scraping a real `bess run`.

* Prometheus (Debian ``prometheus``, 2.42 here) runs from a temporary directory on 127.0.0.1 with a
  1 s scrape and evaluation interval and the rule files of grafana/rules loaded as they are.
* ``bess run`` (a 20-unit farm, embedded Prometheus exporter on a free port, ``--no-checkpoints``)
  starts the built-in ``thermal-runaway-propagation`` scenario at ``--speed 10``: unit 4 goes into
  thermal runaway 60 simulated seconds in, 6 s of wall time after the start, and the HVAC of units
  3 and 5 fails.
* A background thread makes the traffic the conditional panels need: one Modbus connection held
  open polling good registers plus a read of an illegal address (exception 2) each round, and REST
  requests (200s, an unknown route: 404, a write without the token: 401).

Checked: the thermal runaway alert fires within its stated time (one scrape interval plus one rule
evaluation interval, plus 2 s of slack for a loaded 2-core machine) of the runaway as the bess log
stamps it; the HVAC alert is pending for units 3 and 5 (per-unit alarm bits on real data); and
every query of every dashboard panel, annotation and template variable, with the template
variables resolved the way Grafana would (label_values against this Prometheus), returns data
(at least one series with a non-NaN value). Everything is bounded: ready within 120 s (a cold numba
cache compiles), every wait has a timeout, both processes run in their own process group and are
killed with it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from runtime_helpers import ModbusException, RawClient, free_port

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "grafana" / "rules").glob("*.yaml"))
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
JOB = "bess-farm"
SCRAPE_S = EVAL_S = 1.0
SLACK_S = 2.0
SPEED = 10
RUNAWAY_UNIT = "4"
#: what Grafana puts in for its built-in interval variables (a 1 s scrape: $__rate_interval = 4 scrapes)
RATE_INTERVAL = "10s"

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None,
    reason="prometheus not installed: apt-get install -y --no-install-recommends prometheus")


def _start(cmd, log: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env,
                            start_new_session=True)


def _stop(proc: subprocess.Popen | None, timeout=20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


def _ts(text: str) -> float:
    """RFC 3339 (bess log 'ts', Prometheus 'activeAt', nanoseconds allowed) -> epoch seconds."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    assert m, text
    base = dt.datetime.fromisoformat(m.group(1) + ("+00:00" if m.group(3) == "Z" else m.group(3)))
    return base.timestamp() + float(m.group(2) or 0)


class Prom:
    def __init__(self, tmp: Path, metrics_port: int):
        self.port = free_port()
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            f"global:\n  scrape_interval: {SCRAPE_S:g}s\n  scrape_timeout: 900ms\n"
            f"  evaluation_interval: {EVAL_S:g}s\n"
            "rule_files:\n" + "".join(f"  - {p}\n" for p in RULES) +
            f"scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{metrics_port}']\n")
        (tmp / "tsdb").mkdir()
        self.log = tmp / "prometheus.log"
        self.proc = _start([shutil.which("prometheus"), f"--config.file={cfg}",
                            f"--storage.tsdb.path={tmp / 'tsdb'}",
                            f"--web.listen-address=127.0.0.1:{self.port}"], self.log)

    def api(self, path: str, **params):
        q = urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{q}", timeout=10) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as exc:           # a bad query: say which and why
            raise AssertionError(f"{path} {params}: {exc.code} {exc.read().decode()[:500]}") from None
        assert doc["status"] == "success", doc
        return doc["data"]

    def wait(self, what: str, predicate, timeout: float):
        end, last = time.monotonic() + timeout, None
        while time.monotonic() < end:
            try:
                out = predicate()
                if out:
                    return out
            except (OSError, AssertionError, KeyError, ValueError) as exc:
                last = exc
            time.sleep(0.1)
        raise TimeoutError(f"{what}: not within {timeout} s ({last}); Prometheus log:\n"
                           f"{self.log.read_text()[-2000:]}")


class Traffic(threading.Thread):
    """Modbus and REST requests every 0.25 s until stopped."""

    def __init__(self, modbus_port: int, api_port: int):
        super().__init__(daemon=True)
        self.modbus_port, self.api_port = modbus_port, api_port
        self.halt = threading.Event()
        self.rounds = 0
        self.errors: list[str] = []

    def _get(self, path, method="GET", body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", method=method, data=body,
                                     headers={"Content-Type": "application/json"} if body else {})
        try:
            urllib.request.urlopen(req, timeout=5).read()
        except urllib.error.HTTPError:
            pass

    def run(self):
        client = None
        while not self.halt.is_set():
            try:
                client = client or RawClient(self.modbus_port)
                client.read(1, 40000, 2)
                client.read(1, 40072, 30)
                try:
                    client.read(1, 0, 2)                      # illegal data address: exception 2
                except ModbusException:
                    pass
                for path in ("/healthz", "/api/v1/farm", f"/api/v1/units/{RUNAWAY_UNIT}", "/no-such-route"):
                    self._get(path)
                self._get("/api/v1/farm/reset", "POST", b"{}")    # no token: 401
                self.rounds += 1
            except Exception as exc:                           # keep going; reported at the end
                self.errors.append(repr(exc))
                if client is not None:
                    client.close()
                client = None
            self.halt.wait(0.25)
        if client is not None:
            client.close()


# ------------------------------------------------------------------------------ template variables
def resolve_variables(prom: Prom, dashboard: dict, chosen: dict[str, str]) -> dict[str, str]:
    """Grafana's job: run each query variable's label_values() in order and pick a value (the
    one in ``chosen`` when offered, else the first; All -> the variable's allValue when nothing
    is offered, as for ``namespace`` outside Kubernetes)."""
    values: dict[str, str] = {}
    for v in dashboard["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"] if isinstance(v["query"], str) else v["query"]["query"]
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", q)
        assert m, q
        selector, label = substitute(m.group(1), values), m.group(2)
        series = prom.api("series", **{"match[]": selector, "start": time.time() - 300, "end": time.time()})
        offered = sorted({s[label] for s in series if label in s})
        if not offered:
            assert v.get("includeAll") and v.get("allValue"), f"variable {v['name']}: nothing offered by {q}"
            values[v["name"]] = v["allValue"]
        else:
            values[v["name"]] = chosen.get(v["name"]) if chosen.get(v["name"]) in offered else offered[0]
    return values


def substitute(expr: str, values: dict[str, str], range_s: int = 60) -> str:
    builtins = {"__rate_interval": RATE_INTERVAL, "__interval": "1s", "__range": f"{range_s}s"}

    def one(m):
        name = m.group(1) or m.group(2)
        if name in builtins:
            return builtins[name]
        assert name in values, f"${name} unresolved in {expr}"
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def _has_value(result) -> bool:
    for s in result:
        vals = s.get("values") or [s.get("value")]
        if any(v is not None and not math.isnan(float(v[1])) for v in vals):
            return True
    return False


# ------------------------------------------------------------------------------ the test
def test_thermal_runaway_alert_and_every_dashboard_query(tmp_path):
    assert RULES and DASHBOARDS, "run python grafana/build.py --write"
    modbus_port, api_port, metrics_port = free_port(), free_port(), free_port()
    cfg = tmp_path / "farm.toml"
    cfg.write_text('[farm]\nname = "e2e-alerts"\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 20\n'
                   f'[telemetry]\nprometheus_host = "127.0.0.1"\nprometheus_port = {metrics_port}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_METRICS_EXPORTER="prometheus", BESS_API_TOKEN=secrets.token_hex(16))
    prom = bess = traffic = None
    bess_log = tmp_path / "bess.log"
    try:
        # Prometheus first, so it already scrapes when the runaway happens
        prom = Prom(tmp_path, metrics_port)
        prom.wait("Prometheus ready", lambda: prom.api("status/buildinfo"), 30)
        assert {g["name"] for g in prom.api("rules")["groups"]} >= {"bess-farm.recording", "bess-farm.safety"}
        t_start = time.time()
        bess = _start([sys.executable, "-m", "bess_farm", "run", "--config", str(cfg),
                       "--modbus-host", "127.0.0.1", "--modbus-port", str(modbus_port),
                       "--api-host", "127.0.0.1", "--api-port", str(api_port), "--no-checkpoints",
                       "--scenario", "thermal-runaway-propagation", "--speed", str(SPEED),
                       "--duration", "300s", "--log-format", "json"], bess_log, env=env)

        def log_lines():
            out = []
            for line in bess_log.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
            if bess.poll() is not None:
                raise AssertionError(f"bess run exited {bess.returncode}:\n{bess_log.read_text()[-3000:]}")
            return out

        def ready():
            return any(d.get("msg") == "ready" for d in log_lines())
        prom.wait("bess run ready", ready, 120)
        traffic = Traffic(modbus_port, api_port)
        traffic.start()

        # ---- the thermal runaway alert: fires within one scrape + one evaluation of the runaway
        def runaway():
            return [d for d in log_lines() if d.get("msg") == "thermal runaway"]
        rec = prom.wait("the scenario's thermal runaway", runaway, 60)[0]
        assert str(rec.get("unit")) == RUNAWAY_UNIT, rec
        t_runaway = _ts(rec["ts"])

        def firing():
            return [a for a in prom.api("alerts")["alerts"]
                    if a["labels"]["alertname"] == "BessThermalRunaway" and a["state"] == "firing"]
        alert = prom.wait("BessThermalRunaway firing", firing, 30)[0]
        t_seen = time.time()
        delay = _ts(alert["activeAt"]) - t_runaway
        bound = SCRAPE_S + EVAL_S + SLACK_S
        assert delay <= bound, (f"BessThermalRunaway active {delay:.2f} s after the runaway "
                                f"(stated: one scrape {SCRAPE_S:g} s + one evaluation {EVAL_S:g} s; "
                                f"slack {SLACK_S:g} s)")
        assert alert["labels"]["severity"] == "critical" and alert["labels"]["job"] == JOB
        assert alert["annotations"]["runbook_url"].endswith("/docs/runbooks/bess-thermal-runaway.md")
        assert float(alert["value"]) >= 1
        print(f"thermal runaway at {t_runaway - t_start:.2f} s, alert active {delay:.2f} s later, "
              f"seen firing {t_seen - t_runaway:.2f} s later")
        # the same through the ALERTS series the Alerts dashboard reads
        prom.wait("ALERTS series", lambda: prom.api(
            "query", query='ALERTS{alertname="BessThermalRunaway", alertstate="firing"}')["result"], 10)
        # per-unit alarm bits on real data: the neighbours' HVAC failure is pending (for: 2m)
        hvac = prom.wait("BessUnitHvacFailure pending", lambda: {
            a["labels"]["unit_id"] for a in prom.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "BessUnitHvacFailure"} >= {"3", "5"}, 20)
        assert hvac

        # ---- every dashboard query returns data, with real variable values
        end = time.monotonic() + 30                 # rates need a few scrapes of traffic
        while time.monotonic() < end and (traffic.rounds < 40 or time.time() - t_runaway < 12):
            time.sleep(0.5)
        assert traffic.rounds >= 20, traffic.errors[-5:]
        now = time.time()
        range_s = int(now - t_start) + 5
        empty: list[str] = []
        n_queries = 0
        for path in DASHBOARDS:
            d = json.loads(path.read_text())
            values = resolve_variables(prom, d, {"unit": RUNAWAY_UNIT})
            assert values.get("job") == JOB and values.get("instance") == f"127.0.0.1:{metrics_port}", values
            if "unit" in values:
                assert values["unit"] == RUNAWAY_UNIT, values
            queries = []
            for p in d["panels"]:
                for t in p.get("targets", []):
                    queries.append((f"{p['title']} {t['refId']}", t["expr"], t.get("instant", False)))
            for a in d["annotations"]["list"]:
                if not a.get("builtIn"):
                    queries.append((f"annotation {a['name']}", a["expr"], False))
            for where, expr, instant in queries:
                q = substitute(expr, values, range_s)
                n_queries += 1
                try:
                    if instant:
                        result = prom.api("query", query=q, time=now)["result"]
                    else:
                        result = prom.api("query_range", query=q, start=now - range_s, end=now,
                                          step="1s")["result"]
                except AssertionError as exc:
                    empty.append(f"{path.name}: {where}: {exc}")
                    continue
                if not _has_value(result):
                    empty.append(f"{path.name}: {where}: {q}")
        assert not empty, "queries failing or without data:\n" + "\n".join(empty)
        assert n_queries > 100
        assert not [e for e in traffic.errors if "Timeout" not in e][:1], traffic.errors[:5]
    finally:
        if traffic is not None:
            traffic.halt.set()
            traffic.join(10)
        _stop(bess)
        _stop(prom.proc if prom is not None else None)
