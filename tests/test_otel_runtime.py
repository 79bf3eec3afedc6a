"""The runtime's wiring of telemetry (in-process): skipped until ``Runtime`` has ``telemetry``."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from runtime_helpers import running, wait_ticks

NOT_WIRED = "telemetry not wired into the runtime yet"
SITE = """
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 12
[telemetry]
exporter = "prometheus"
prometheus_host = "127.0.0.1"
prometheus_port = 0
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for k in ("OTEL_METRICS_EXPORTER", "OTEL_SDK_DISABLED", "OTEL_EXPORTER_PROMETHEUS_PORT",
              "OTEL_EXPORTER_PROMETHEUS_HOST"):
        monkeypatch.delenv(k, raising=False)


def test_runtime_records_ticks_http_and_shuts_down(tmp_path):
    from bess_farm.interfaces.runtime import SiteConfig
    if "telemetry" not in SiteConfig.__dataclass_fields__:
        pytest.skip(NOT_WIRED)
    with running(SITE, tmp_path=tmp_path) as rt:
        t = getattr(rt, "telemetry", None)
        if t is None:
            pytest.skip(NOT_WIRED)
        wait_ticks(rt, 5)
        if rt.api_url:
            urllib.request.urlopen(rt.api_url + "/healthz", timeout=10).read()
        time.sleep(0.3)
        url = f"http://127.0.0.1:{t.prometheus_address[1]}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        count = float(re.search(r"^bess_tick_duration_seconds_count (\S+)$", text, re.M).group(1))
        assert count >= 5
        assert re.search(r"^bess_physics_step_duration_seconds_count [1-9]", text, re.M)
        assert re.search(r"^bess_snapshot_publish_duration_seconds_count [1-9]", text, re.M)
        if rt.api_url:
            assert 'http_route="/healthz"' in text
        assert rt.modbus_stats.observe is not None
    # stopped: the metrics port is closed
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)
