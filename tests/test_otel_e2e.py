"""End to end: `bess run` exporting to a real Prometheus (pull) and to an OTLP/HTTP receiver (push).

* Prometheus: the Debian package ``prometheus`` (2.42 here), started by the test on 127.0.0.1 with
  a temporary data dir and a 1 s scrape of two ``bess run`` processes (one with more units than its
  per-unit cap, one under it). Skipped with an install hint when the binary is missing.
* OTLP: ``bess run`` in sidecar mode (``OTEL_METRICS_EXPORTER=otlp``) pushing to a small OTLP/HTTP
  receiver in this file that decodes the protobuf with opentelemetry-proto. There is no
  OpenTelemetry Collector binary on these machines, so the collector itself is not in the loop
  (its configuration is checked in test_otel_collector.py).

Both skip with "telemetry not wired into the runtime yet" while ``bess run`` does not read the
``[telemetry]`` section / start telemetry. Everything listens on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import gzip
import http.server
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from runtime_helpers import RawClient, free_port

from bess_farm.otel.instruments import (BY_NAME, HISTOGRAM, HTTP, INSTRUMENTS, UNIT_INSTRUMENTS,
                                        prometheus_name)

NOT_WIRED = "telemetry not wired into the runtime yet"
BESS = [sys.executable, "-m", "bess_farm", "run"]


def clean_env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(extra)
    return env


class Bess:
    """One `bess run` subprocess with Modbus, REST and telemetry on 127.0.0.1."""

    def __init__(self, tmp_path: Path, name: str, units: int, telemetry: str, env=None, profile="frequency-regulation"):
        self.modbus_port = free_port()
        self.api_port = free_port()
        self.metrics_port = free_port()
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'[farm]\nname = "{name}"\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = {units}\n'
                       f'[telemetry]\n{telemetry.format(metrics_port=self.metrics_port)}\n')
        self.log = tmp_path / f"{name}.log"
        self.proc = subprocess.Popen(
            BESS + ["--config", str(cfg), "--modbus-host", "127.0.0.1", "--modbus-port", str(self.modbus_port),
                    "--api-host", "127.0.0.1", "--api-port", str(self.api_port), "--profile", profile,
                    "--duration", "120s", "--log-format", "json"],
            stderr=open(self.log, "w"), stdout=subprocess.DEVNULL, env=env or clean_env(),
            text=True)

    def wait_ready(self, timeout=120.0) -> list[dict]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            lines = self.lines()
            if any(d.get("msg") == "ready" for d in lines):
                if not any(d.get("msg") == "telemetry started" for d in lines):
                    self.stop()
                    pytest.skip(NOT_WIRED)
                return lines
            if self.proc.poll() is not None:
                text = self.log.read_text()
                if "unknown key 'telemetry'" in text:
                    pytest.skip(NOT_WIRED)
                raise AssertionError(f"bess run exited {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"bess run not ready in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def traffic(self) -> None:
        """Some Modbus and HTTP requests, so the request instruments have points."""
        c = RawClient(self.modbus_port)
        for _ in range(5):
            c.read(1, 40000, 2)
            c.read(1, 40072, 30)
        c.close()
        for path in ("/healthz", "/api/v1/farm", "/api/v1/units/1", "/no-such-route"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.api_port}{path}", timeout=10).read()
            except urllib.error.HTTPError:
                pass

    def stop(self, timeout=30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


# ------------------------------------------------------------------------------------ Prometheus
class Prometheus:
    def __init__(self, tmp_path: Path, targets: dict[str, int]):
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.skip("prometheus not installed: apt-get install -y --no-install-recommends prometheus")
        self.port = free_port()
        cfg = tmp_path / "prometheus.yml"
        jobs = "\n".join(f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']"
                         for job, port in targets.items())
        cfg.write_text(f"global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
                       f"  evaluation_interval: 1s\nscrape_configs:\n{jobs}\n")
        data = tmp_path / "tsdb"
        data.mkdir()
        self.log = tmp_path / "prometheus.log"
        self.proc = subprocess.Popen([exe, f"--config.file={cfg}", f"--storage.tsdb.path={data}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def api(self, path: str, **params):
        q = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/{path}?{q}", timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str):
        return self.api("query", query=expr)["result"]

    def scalar(self, expr: str) -> float:
        r = self.query(expr)
        assert len(r) == 1, (expr, r)
        return float(r[0]["value"][1])

    def wait(self, predicate, timeout=60.0):
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            try:
                if predicate():
                    return
            except (OSError, AssertionError, KeyError) as exc:
                last = exc
            time.sleep(0.5)
        raise TimeoutError(f"Prometheus condition not met in {timeout} s ({last}); log:\n"
                           f"{self.log.read_text()[-2000:]}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_prometheus_scrapes_every_instrument(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed: apt-get install -y --no-install-recommends prometheus")
    tel = 'prometheus_host = "127.0.0.1"\nprometheus_port = {metrics_port}\n'
    capped = Bess(tmp_path, "capped", 80, tel + "unit_metrics_cap = 64\n")
    whole = Bess(tmp_path, "whole", 40, tel)
    prom = None
    try:
        capped.wait_ready()
        whole.wait_ready()
        prom = Prometheus(tmp_path, {"capped": capped.metrics_port, "whole": whole.metrics_port})
        capped.traffic()
        whole.traffic()
        prom.wait(lambda: prom.scalar('count(up{job=~"capped|whole"} == 1)') == 2)
        # a few scrapes after the traffic
        prom.wait(lambda: prom.scalar('sum(bess_modbus_requests_total{job="whole"})') >= 10)
        prom.wait(lambda: prom.scalar('sum(http_server_request_duration_seconds_count{job="whole"})') >= 4)
        prom.wait(lambda: len(prom.query('bess_farm_round_trip_efficiency_ratio{job="whole"}')) == 1)

        names = set(prom.api("label/__name__/values"))
        missing = []
        for inst in INSTRUMENTS:
            pn = prometheus_name(inst)
            want = [pn + "_bucket", pn + "_count", pn + "_sum"] if inst.kind == HISTOGRAM else [pn]
            missing += [w for w in want if w not in names]
        assert not missing, f"not in Prometheus: {missing}"
        assert "target_info" in names

        # per-unit series: exactly the cap when the farm is larger, all units when it is smaller
        for inst in UNIT_INSTRUMENTS:
            pn = prometheus_name(inst)
            assert prom.scalar(f'count({pn}{{job="capped"}})') == 64, pn
            assert prom.scalar(f'count({pn}{{job="whole"}})') == 40, pn
        assert prom.scalar('bess_unit_metrics_cap{job="capped"}') == 64
        assert prom.scalar('bess_unit_metrics_omitted{job="capped"}') == 16
        assert not prom.query('{__name__=~".+", otel_metric_overflow!=""}')

        # farm power is the sum of the unit powers (one scrape: one tick)
        farm = prom.scalar('bess_farm_power_ac_watts{job="whole"}')
        units = prom.scalar('sum(bess_unit_power_watts{job="whole"})')
        assert abs(farm) > 1e5
        assert units == pytest.approx(farm, rel=1e-3, abs=1.0)
        assert prom.scalar('sum(bess_farm_units_by_soc_band{job="capped"})') == 80

        # histograms have their buckets (the table's, plus +Inf)
        for inst in INSTRUMENTS:
            if inst.kind != HISTOGRAM or inst.group == HTTP:
                continue
            pn = prometheus_name(inst)
            les = {float(s["metric"]["le"]) for s in prom.query(f'{pn}_bucket{{job="whole"}}')}
            assert set(inst.buckets) | {float("inf")} <= les, (pn, sorted(les))
        les = {float(s["metric"]["le"]) for s in prom.query(
            'http_server_request_duration_seconds_bucket{job="whole",http_route="/api/v1/units/{unit_id}"}')}
        assert set(BY_NAME["http.server.request.duration"].buckets) <= les
        assert prom.scalar('sum(bess_modbus_requests_total{job="whole",sunspec_model="802",outcome="ok"})') >= 5
        # the tick histogram yields a quantile (how fast ticks are is for benchmarks/)
        p99 = prom.scalar('histogram_quantile(0.99, sum by (le) (rate(bess_tick_duration_seconds_bucket{job="whole"}[10s])))')
        assert math.isfinite(p99) and p99 > 0
    finally:
        if prom is not None:
            prom.stop()
        for b in (capped, whole):
            b.stop()


# ------------------------------------------------------------------------------------ OTLP
class OtlpReceiver:
    """OTLP/HTTP metrics receiver: decodes ExportMetricsServiceRequest bodies."""

    def __init__(self):
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
            ExportMetricsServiceRequest, ExportMetricsServiceResponse)
        self.requests: list = []
        self.paths: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                req = ExportMetricsServiceRequest()
                req.ParseFromString(body)
                owner.requests.append(req)
                owner.paths.append(self.path)
                out = ExportMetricsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def metrics(self) -> dict[str, tuple[dict, object]]:
        """name -> (resource attributes, Metric) of everything received."""
        out = {}
        for req in list(self.requests):
            for rm in req.resource_metrics:
                res = {a.key: a.value.string_value or a.value.int_value for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        out[m.name] = (res, m)
        return out

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_otlp_sidecar_mode(tmp_path):
    pytest.importorskip("opentelemetry.proto")
    rx = OtlpReceiver()
    env = clean_env(OTEL_METRICS_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{rx.port}",
                    OTEL_METRIC_EXPORT_INTERVAL="1000", OTEL_SERVICE_NAME="bess-e2e",
                    OTEL_RESOURCE_ATTRIBUTES="bess.shard=3,service.instance.id=pod-3,deployment.environment=test")
    # the section says prometheus: the environment wins (and no port is opened)
    b = Bess(tmp_path, "sidecar", 30, 'exporter = "prometheus"\nprometheus_port = {metrics_port}\n', env=env)
    try:
        lines = b.wait_ready()
        started = [d for d in lines if d.get("msg") == "telemetry started"][0]
        assert started["exporter"] == "otlp"
        b.traffic()
        end = time.monotonic() + 60
        want = {i.name for i in INSTRUMENTS} - {"bess.farm.round_trip_efficiency_ratio"}
        while time.monotonic() < end and not want <= set(rx.metrics()):
            time.sleep(0.5)
        got = rx.metrics()
        assert want <= set(got), f"missing over OTLP: {sorted(want - set(got))}"
        assert rx.paths and all(p == "/v1/metrics" for p in rx.paths)
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{b.metrics_port}/metrics", timeout=2)
        res, _ = got["bess.farm.power.ac"]
        assert res["service.name"] == "bess-e2e" and res["bess.shard"] == "3"
        assert res["service.instance.id"] == "pod-3" and res["deployment.environment"] == "test"
        assert res["service.version"]
        for name in ("bess.unit.soc_ratio", "bess.unit.power"):
            _, m = got[name]
            assert len(m.gauge.data_points) == 30
        _, m = got["bess.tick.duration"]
        assert list(m.histogram.data_points[0].explicit_bounds) == list(BY_NAME["bess.tick.duration"].buckets)
        assert m.unit == "s"
        _, m = got["bess.farm.energy.discharged_watthours"]
        assert m.sum.is_monotonic
        n_before = len(rx.requests)
        assert b.stop() == 0
        assert len(rx.requests) > n_before, "no final export at graceful shutdown"
    finally:
        b.stop()
        rx.close()
