"""[telemetry] settings: validation with errors naming the key, and OTEL_* precedence."""

from __future__ import annotations

import pytest

from bess_farm.otel.setup import (TelemetryConfigError, TelemetrySettings, parse_telemetry_settings,
                                  parse_unit_selector)


def parse(table=None, **env):
    return parse_telemetry_settings(table or {}, "site.toml", environ=env)


def test_defaults_are_the_embedded_prometheus_exporter():
    s = parse()
    assert (s.exporter, s.prometheus_host, s.prometheus_port) == ("prometheus", "0.0.0.0", 9090)
    assert s.unit_metrics_cap == 256 and s.unit_metrics_units is None
    assert s.metrics_url == "http://localhost:4318/v1/metrics"
    r = s.resource()
    assert r["service.name"] == "bess-farm" and r["service.version"] and r["service.instance.id"]
    assert "bess.shard" not in r


def test_a_full_section():
    s = parse({"exporter": "otlp", "otlp_endpoint": "http://127.0.0.1:14318", "export_interval_s": 2,
               "unit_metrics_cap": 10, "unit_metrics_units": "0-4,100", "service_name": "site-a",
               "service_instance_id": "pod-1", "shard": 3, "process_metrics": False,
               "resource_attributes": {"deployment.environment": "lab"},
               "prometheus_host": "127.0.0.1", "prometheus_port": 0})
    assert s.exporter == "otlp" and s.metrics_url == "http://127.0.0.1:14318/v1/metrics"
    assert s.export_interval_s == 2.0 and s.unit_metrics_cap == 10 and s.prometheus_port == 0
    r = s.resource()
    assert r["service.name"] == "site-a" and r["service.instance.id"] == "pod-1"
    assert r["bess.shard"] == "3" and r["deployment.environment"] == "lab"
    assert s.origin["exporter"] == "config"


@pytest.mark.parametrize("table, message", [
    ({"exporter": "statsd"}, "site.toml: telemetry.exporter: 'statsd': must be one of prometheus, otlp, none"),
    ({"colour": 1}, "site.toml: telemetry.colour: unknown key"),
    ({"prometheus_port": 70000}, "telemetry.prometheus_port: 70000 is out of range"),
    ({"prometheus_port": 90.5}, "telemetry.prometheus_port: expected a whole number"),
    ({"otlp_endpoint": "localhost:4318"}, "telemetry.otlp_endpoint: 'localhost:4318': expected an http://"),
    ({"export_interval_s": 0}, "telemetry.export_interval_s: 0 is out of range"),
    ({"unit_metrics_cap": -1}, "telemetry.unit_metrics_cap: -1 is out of range"),
    ({"unit_metrics_cap": 1_000_000}, "telemetry.unit_metrics_cap: 1000000 is out of range"),
    ({"unit_metrics_units": "0-x"}, "telemetry.unit_metrics_units: '0-x' is not a unit number"),
    ({"unit_metrics_units": "9-3"}, "telemetry.unit_metrics_units: '9-3': ranges go from low to high"),
    ({"process_metrics": "yes"}, "telemetry.process_metrics: expected true or false"),
    ({"resource_attributes": "a=b"}, "telemetry.resource_attributes: expected a table"),
    ({"shard": True}, "telemetry.shard: expected a string or a whole number"),
    ({"service_name": ""}, "telemetry.service_name: expected a non-empty string"),
])
def test_errors_name_the_key(table, message):
    with pytest.raises(TelemetryConfigError) as e:
        parse(table)
    assert message in str(e.value)


def test_not_a_table():
    with pytest.raises(TelemetryConfigError, match="site.toml: telemetry: expected a table"):
        parse_telemetry_settings(["x"], "site.toml", environ={})


def test_environment_takes_precedence_over_the_section():
    table = {"exporter": "prometheus", "otlp_endpoint": "http://config:4318", "export_interval_s": 30,
             "service_name": "from-config", "shard": "1", "prometheus_port": 9100}
    s = parse(table, OTEL_METRICS_EXPORTER="otlp", OTEL_EXPORTER_OTLP_ENDPOINT="http://sidecar:4318/",
              OTEL_METRIC_EXPORT_INTERVAL="1500", OTEL_SERVICE_NAME="from-env",
              OTEL_RESOURCE_ATTRIBUTES="bess.shard=7,deployment.environment=prod%20eu,service.name=ignored",
              OTEL_EXPORTER_PROMETHEUS_PORT="9464")
    assert s.exporter == "otlp" and s.origin["exporter"] == "OTEL_METRICS_EXPORTER"
    assert s.metrics_url == "http://sidecar:4318/v1/metrics"
    assert s.export_interval_s == 1.5 and s.prometheus_port == 9464
    r = s.resource()
    assert r["service.name"] == "from-env"                 # OTEL_SERVICE_NAME wins over both
    assert r["bess.shard"] == "7" and r["deployment.environment"] == "prod eu"


def test_signal_specific_endpoint_and_resource_service_name():
    s = parse(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT="http://c:4318/custom/path",
              OTEL_RESOURCE_ATTRIBUTES="service.name=res-name,service.instance.id=i-9")
    assert s.metrics_url == "http://c:4318/custom/path"
    assert s.resource()["service.name"] == "res-name" and s.resource()["service.instance.id"] == "i-9"


def test_sdk_disabled_and_none():
    assert parse(OTEL_SDK_DISABLED="true").exporter == "none"
    assert parse({"exporter": "otlp"}, OTEL_METRICS_EXPORTER="none").exporter == "none"
    assert parse(OTEL_METRICS_EXPORTER="").exporter == "prometheus"      # empty = unset


@pytest.mark.parametrize("env, message", [
    ({"OTEL_METRICS_EXPORTER": "console"}, "OTEL_METRICS_EXPORTER: 'console': must be one of"),
    ({"OTEL_METRICS_EXPORTER": "otlp,prometheus"}, "OTEL_METRICS_EXPORTER='otlp,prometheus': give exactly one"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "1s"}, "OTEL_METRIC_EXPORT_INTERVAL='1s': expected a whole number"),
    ({"OTEL_METRIC_EXPORT_INTERVAL": "5"}, "OTEL_METRIC_EXPORT_INTERVAL: 5 is out of range"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "sidecar:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT: 'sidecar:4318'"),
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': only http/protobuf"),
    ({"OTEL_RESOURCE_ATTRIBUTES": "novalue"}, "OTEL_RESOURCE_ATTRIBUTES: 'novalue' is not key=value"),
    ({"OTEL_EXPORTER_PROMETHEUS_PORT": "x"}, "OTEL_EXPORTER_PROMETHEUS_PORT='x': expected a whole number"),
])
def test_environment_errors_name_the_variable(env, message):
    with pytest.raises(TelemetryConfigError) as e:
        parse(**env)
    assert message in str(e.value)


def test_unit_selector():
    assert parse_unit_selector("0-2, 5,4", 10).tolist() == [0, 1, 2, 4, 5]
    assert parse_unit_selector("all", 3).tolist() == [0, 1, 2]
    with pytest.raises(TelemetryConfigError, match="the farm has units 0..9"):
        parse_unit_selector("8-10", 10)


def test_settings_dataclass_is_plain():
    s = TelemetrySettings(exporter="none")
    assert s.exporter == "none" and s.origin == {}
