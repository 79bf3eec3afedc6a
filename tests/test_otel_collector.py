"""The collector sidecar's configuration (otel/collector.yaml).

There is no OpenTelemetry Collector binary on these machines (none installs from PyPI, Debian or
npm, and Go modules cannot be fetched), so ``otelcol validate`` cannot run here: the file is checked
for YAML syntax, for the pipeline the design asks for, and for component names against the
otelcol-contrib components listed in bess_farm.otel.collector.CONTRIB_COMPONENTS.
"""

from __future__ import annotations

import yaml

from bess_farm.otel.collector import (CONTRIB_COMPONENTS, check_collector_config, collector_config_path,
                                      load_collector_config)


def test_parses_and_names_only_contrib_components():
    text = collector_config_path().read_text(encoding="utf-8")
    cfg = yaml.safe_load(text)
    assert isinstance(cfg, dict)
    assert check_collector_config(cfg) == []


def test_the_sidecar_pipeline():
    cfg = load_collector_config()
    http = cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http in ("localhost:4318", "127.0.0.1:4318")
    prom = cfg["exporters"]["prometheus"]
    assert prom["endpoint"].endswith(":9090")
    assert prom["resource_to_telemetry_conversion"]["enabled"] is True
    assert "health_check" in cfg["extensions"] and cfg["service"]["extensions"] == ["health_check"]
    p = cfg["service"]["pipelines"]["metrics"]
    assert p["receivers"] == ["otlp"] and p["exporters"] == ["prometheus"]
    assert p["processors"][0] == "memory_limiter" and "batch" in p["processors"]


def test_the_checker_catches_mistakes():
    cfg = load_collector_config()
    cfg["exporters"]["promethus"] = {}
    cfg["service"]["pipelines"]["metrics"]["processors"].append("groupbyattrs")
    problems = check_collector_config(cfg)
    assert any("'promethus' is not an otelcol-contrib component" in p for p in problems)
    assert any("'groupbyattrs' is not declared" in p for p in problems)
    assert "memory_limiter" in CONTRIB_COMPONENTS["processors"]
