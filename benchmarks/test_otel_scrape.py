"""Telemetry collection cost against farm size: a /metrics scrape while `bess run` ticks.

    python -m pytest benchmarks/test_otel_scrape.py --benchmark-only

For 100,000 and 1,000,000 units ticking at 10 Hz (constant dispatch: every unit works), with the
default per-unit cap (256 units x 9 gauges): scrape time of /metrics (p50, max over 10 scrapes one
second apart, like Prometheus), and the runtime's tick duration p99 without scrapes and while
scraping every second. Targets (issue): a scrape under 300 ms at 1,000,000 units; tick p99 unchanged
within noise. Farm-wide values are the engine's reductions, so only the capped per-unit series
cost per data point; the scrape does not grow with the farm.

If the runtime does not start telemetry itself yet, the benchmark starts it (same code path:
start_telemetry on the runtime's loop). Nothing is asserted: this machine is shared and noisy.
"""

from __future__ import annotations

import time
import urllib.request

import numpy as np
import pytest

from bess_farm.interfaces.runtime import RuntimeThread, load_site_config
from bess_farm.otel.setup import TelemetrySettings, start_telemetry

from .conftest import record

WINDOW_S = 10.0


def _free_port() -> int:
    import socket
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def _site(units: int):
    site = load_site_config(None)
    site.farm.groups[0].count = units
    site.modbus.host = "127.0.0.1"
    site.modbus.port = _free_port()
    site.modbus.max_ports = 1
    site.api.enabled = False
    site.run.profile = "constant"
    site.run.duration_s = 600
    if getattr(site, "telemetry", None) is not None:
        site.telemetry.exporter = "prometheus"
        site.telemetry.prometheus_host = "127.0.0.1"
        site.telemetry.prometheus_port = 0
    return site


def _tick_p99(rt, since_calls: int) -> float:
    d = list(rt.stats.durations)[-(rt.stats.calls - since_calls):]
    return 1e3 * float(np.percentile(d, 99)) if d else float("nan")


def measure(units: int) -> dict:
    th = RuntimeThread(_site(units), ready_timeout=600)
    with th:
        rt = th.runtime
        t = getattr(rt, "telemetry", None)
        own = t is None
        if own:
            s = TelemetrySettings(prometheus_host="127.0.0.1", prometheus_port=0)
            t = th.call(lambda: start_telemetry(rt, s), timeout=60)
        url = f"http://127.0.0.1:{t.prometheus_address[1]}/metrics"
        urllib.request.urlopen(url, timeout=30).read()          # first scrape creates the series
        time.sleep(2.0)
        c0 = rt.stats.calls
        time.sleep(WINDOW_S)                                     # ticks without scrapes
        quiet_p99 = _tick_p99(rt, c0)
        c1 = rt.stats.calls
        scrapes, size = [], 0
        end = time.monotonic() + WINDOW_S
        while time.monotonic() < end:
            t0 = time.perf_counter()
            body = urllib.request.urlopen(url, timeout=30).read()
            scrapes.append(time.perf_counter() - t0)
            size = len(body)
            time.sleep(max(0.0, 1.0 - scrapes[-1]))
        busy_p99 = _tick_p99(rt, c1)
        series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        if own:
            th.call(t.shutdown, timeout=30)
    return {"benchmark": f"otel scrape {units:,} units", "units": units,
            "scrape_p50_ms": 1e3 * float(np.median(scrapes)), "scrape_max_ms": 1e3 * max(scrapes),
            "scrapes": len(scrapes), "series": series, "bytes": size,
            "tick_p99_ms_quiet": quiet_p99, "tick_p99_ms_scraped": busy_p99}


@pytest.mark.parametrize("units", [100_000, 1_000_000])
def test_scrape_time_and_tick_p99(benchmark, units):
    row = benchmark.pedantic(measure, args=(units,), rounds=1, iterations=1)
    benchmark.extra_info.update(row)
    record(**row)
