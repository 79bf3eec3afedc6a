"""Telemetry configuration and lifetime: the ``[telemetry]`` section, readers, views, resource.

Integration (the runtime does this)::

    settings = parse_telemetry_settings(site_toml.get("telemetry", {}), source)   # at config load
    telemetry = start_telemetry(runtime, settings)      # once the runtime is ready
    telemetry.record_tick(duration_s, lateness_s, step_s, publish_s)              # every tick
    app = instrument_http(build_app(api), lambda: runtime.telemetry)             # REST app
    telemetry.shutdown()                                # at graceful shutdown (flushes OTLP)

Precedence: the standard ``OTEL_*`` environment variables over the ``[telemetry]`` section over
the defaults (docs/telemetry.md lists them).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

log = logging.getLogger("bess.telemetry")

EXPORTERS = ("prometheus", "otlp", "none")
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
MAX_UNIT_CAP = 10_000         # 10,000 units x 9 gauges is ~5 s per scrape: no further


class TelemetryConfigError(ValueError):
    """A ``[telemetry]`` section or an ``OTEL_*`` variable that cannot be used."""


@dataclass
class TelemetrySettings:
    exporter: str = "prometheus"               # prometheus | otlp | none
    prometheus_host: str = "0.0.0.0"
    prometheus_port: int = 9090                # 0: any free port (tests)
    otlp_endpoint: str = DEFAULT_OTLP_ENDPOINT  # base URL; /v1/metrics is appended
    otlp_metrics_endpoint: str | None = None   # full URL (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT)
    export_interval_s: float = 10.0            # OTLP push period
    unit_metrics_cap: int = 256                # most units with per-unit series
    unit_metrics_units: str | None = None      # unit selector "0-99,200"; None: all (up to the cap)
    service_name: str = "bess-farm"
    service_instance_id: str | None = None     # default: host name
    shard: str | None = None                   # resource attribute bess.shard
    resource_attributes: dict[str, str] = field(default_factory=dict)
    process_metrics: bool = True               # CPU, memory, threads, GC
    #: where each setting that is not a default came from: "config" or the variable's name
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def metrics_url(self) -> str:
        """The OTLP/HTTP metrics URL."""
        if self.otlp_metrics_endpoint:
            return self.otlp_metrics_endpoint
        base = self.otlp_endpoint.rstrip("/")
        return base if base.endswith("/v1/metrics") else base + "/v1/metrics"

    def resource(self) -> dict[str, str]:
        """Resource attributes: the configured ones, then service and shard identity."""
        from bess_farm import __version__
        attrs = dict(self.resource_attributes)
        attrs["service.name"] = self.service_name
        attrs["service.version"] = __version__
        attrs["service.instance.id"] = self.service_instance_id or socket.gethostname()
        attrs.setdefault("service.namespace", "bess-farm")
        if self.shard is not None:
            attrs["bess.shard"] = self.shard
        return attrs


_KEYS = {"exporter", "prometheus_host", "prometheus_port", "otlp_endpoint", "export_interval_s",
         "unit_metrics_cap", "unit_metrics_units", "service_name", "service_instance_id", "shard",
         "resource_attributes", "process_metrics"}


def parse_telemetry_settings(table: Mapping[str, Any] | None, source: str,
                             environ: Mapping[str, str] | None = None) -> TelemetrySettings:
    """Validate a ``[telemetry]`` table, then apply the ``OTEL_*`` environment over it.

    Errors name the file and key (or the variable) and the rule, e.g.
    ``site.toml: telemetry.exporter: must be one of prometheus, otlp, none``.
    """
    env = os.environ if environ is None else environ
    s = TelemetrySettings()
    table = {} if table is None else table
    if not isinstance(table, Mapping):
        raise TelemetryConfigError(f"{source}: telemetry: expected a table")
    for key, value in table.items():
        where = f"{source}: telemetry.{key}"
        if key not in _KEYS:
            raise TelemetryConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(_KEYS))}")
        s.origin[key] = "config"
        if key == "exporter":
            s.exporter = _exporter(value, where)
        elif key in ("prometheus_host", "service_name", "service_instance_id"):
            if not isinstance(value, str) or not value.strip():
                raise TelemetryConfigError(f"{where}: expected a non-empty string")
            setattr(s, key, value.strip())
        elif key == "shard":
            if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
                raise TelemetryConfigError(f"{where}: expected a string or a whole number")
            s.shard = str(value).strip()
        elif key == "otlp_endpoint":
            s.otlp_endpoint = _url(value, where)
        elif key == "prometheus_port":
            s.prometheus_port = _num(value, where, 0, 65535, True)
        elif key == "export_interval_s":
            s.export_interval_s = _num(value, where, 0.1, 86400, False)
        elif key == "unit_metrics_cap":
            s.unit_metrics_cap = _num(value, where, 0, MAX_UNIT_CAP, True)
        elif key == "unit_metrics_units":
            if not isinstance(value, str):
                raise TelemetryConfigError(f"{where}: expected a unit selector such as \"0-99,200\"")
            parse_unit_selector(value, None, where)         # syntax now, range at start
            s.unit_metrics_units = value
        elif key == "process_metrics":
            if not isinstance(value, bool):
                raise TelemetryConfigError(f"{where}: expected true or false")
            s.process_metrics = value
        elif key == "resource_attributes":
            if not isinstance(value, Mapping):
                raise TelemetryConfigError(f"{where}: expected a table of names to strings")
            for k, v in value.items():
                if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                    raise TelemetryConfigError(f"{where}.{k}: expected a string")
                s.resource_attributes[str(k)] = str(v)
    _apply_env(s, env)
    return s


def _apply_env(s: TelemetrySettings, env: Mapping[str, str]) -> None:
    def get(name):
        v = env.get(name)
        return v.strip() if v is not None and v.strip() != "" else None

    if (v := get("OTEL_SDK_DISABLED")) is not None and v.lower() == "true":
        s.exporter, s.origin["exporter"] = "none", "OTEL_SDK_DISABLED"
    elif (v := get("OTEL_METRICS_EXPORTER")) is not None:
        values = [x.strip() for x in v.split(",") if x.strip()]
        if len(values) != 1:
            raise TelemetryConfigError(f"OTEL_METRICS_EXPORTER={v!r}: give exactly one of "
                                       f"{', '.join(EXPORTERS)}")
        s.exporter = _exporter(values[0], "OTEL_METRICS_EXPORTER")
        s.origin["exporter"] = "OTEL_METRICS_EXPORTER"
    if (v := get("OTEL_EXPORTER_PROMETHEUS_HOST")) is not None:
        s.prometheus_host, s.origin["prometheus_host"] = v, "OTEL_EXPORTER_PROMETHEUS_HOST"
    if (v := get("OTEL_EXPORTER_PROMETHEUS_PORT")) is not None:
        s.prometheus_port = _num(_int_text(v, "OTEL_EXPORTER_PROMETHEUS_PORT"),
                                 "OTEL_EXPORTER_PROMETHEUS_PORT", 0, 65535, True)
        s.origin["prometheus_port"] = "OTEL_EXPORTER_PROMETHEUS_PORT"
    if (v := get("OTEL_EXPORTER_OTLP_ENDPOINT")) is not None:
        s.otlp_endpoint = _url(v, "OTEL_EXPORTER_OTLP_ENDPOINT")
        s.origin["otlp_endpoint"] = "OTEL_EXPORTER_OTLP_ENDPOINT"
    if (v := get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) is not None:
        s.otlp_metrics_endpoint = _url(v, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        s.origin["otlp_endpoint"] = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    for name in ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        if (v := get(name)) is not None:
            if v != "http/protobuf":
                raise TelemetryConfigError(f"{name}={v!r}: only http/protobuf is supported "
                                           f"(OTLP/HTTP to the collector sidecar on port 4318)")
            break
    if (v := get("OTEL_METRIC_EXPORT_INTERVAL")) is not None:
        ms = _num(_int_text(v, "OTEL_METRIC_EXPORT_INTERVAL"), "OTEL_METRIC_EXPORT_INTERVAL",
                  100, 86_400_000, True)
        s.export_interval_s, s.origin["export_interval_s"] = ms / 1000.0, "OTEL_METRIC_EXPORT_INTERVAL"
    if (v := get("OTEL_RESOURCE_ATTRIBUTES")) is not None:
        attrs = _resource_attributes(v)
        if "service.name" in attrs:
            s.service_name, s.origin["service_name"] = attrs.pop("service.name"), "OTEL_RESOURCE_ATTRIBUTES"
        if "service.instance.id" in attrs:
            s.service_instance_id = attrs.pop("service.instance.id")
            s.origin["service_instance_id"] = "OTEL_RESOURCE_ATTRIBUTES"
        if "bess.shard" in attrs:
            s.shard, s.origin["shard"] = attrs.pop("bess.shard"), "OTEL_RESOURCE_ATTRIBUTES"
        attrs.pop("service.version", None)          # the program's own version
        s.resource_attributes.update(attrs)
        if attrs:
            s.origin["resource_attributes"] = "OTEL_RESOURCE_ATTRIBUTES"
    if (v := get("OTEL_SERVICE_NAME")) is not None:
        s.service_name, s.origin["service_name"] = v, "OTEL_SERVICE_NAME"


def _resource_attributes(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise TelemetryConfigError(f"OTEL_RESOURCE_ATTRIBUTES: {item.strip()!r} is not key=value")
        k, v = item.split("=", 1)
        k = urllib.parse.unquote(k.strip())
        if not k:
            raise TelemetryConfigError(f"OTEL_RESOURCE_ATTRIBUTES: {item.strip()!r} has an empty key")
        out[k] = urllib.parse.unquote(v.strip())
    return out


def _exporter(value, where):
    if value not in EXPORTERS:
        raise TelemetryConfigError(f"{where}: {value!r}: must be one of {', '.join(EXPORTERS)}")
    return value


def _url(value, where):
    if not isinstance(value, str):
        raise TelemetryConfigError(f"{where}: expected a URL such as {DEFAULT_OTLP_ENDPOINT}")
    u = urllib.parse.urlparse(value.strip())
    if u.scheme not in ("http", "https") or not u.hostname:
        raise TelemetryConfigError(f"{where}: {value!r}: expected an http:// or https:// URL such as "
                                   f"{DEFAULT_OTLP_ENDPOINT}")
    try:
        u.port
    except ValueError:
        raise TelemetryConfigError(f"{where}: {value!r}: bad port") from None
    return value.strip()


def _int_text(v: str, where: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise TelemetryConfigError(f"{where}={v!r}: expected a whole number") from None


def _num(value, where, lo, hi, integer):
    from bess_farm.engine.config import check_number
    return check_number(value, where, lo, hi, integer=integer, error=TelemetryConfigError)


def parse_unit_selector(text: str, n_units: int | None, where: str = "unit_metrics_units"):
    """``"0-99,200,300-301"`` -> sorted unique unit indices (numpy int64). With ``n_units``,
    indices past the farm raise; ``"all"`` or ``""`` selects every unit."""
    import numpy as np
    text = text.strip()
    if text in ("", "all", "*"):
        return None if n_units is None else np.arange(n_units, dtype=np.int64)
    parts = []
    for item in text.split(","):
        item = item.strip()
        try:
            if "-" in item:
                a, b = (int(x) for x in item.split("-", 1))
            else:
                a = b = int(item)
        except ValueError:
            raise TelemetryConfigError(f"{where}: {item!r} is not a unit number or range a-b") from None
        if a < 0 or b < a:
            raise TelemetryConfigError(f"{where}: {item!r}: ranges go from low to high, from 0")
        if n_units is not None and b >= n_units:
            raise TelemetryConfigError(f"{where}: {item!r}: the farm has units 0..{n_units - 1}")
        parts.append((a, b))
    if n_units is None:
        return None
    return np.unique(np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in parts]))


# ------------------------------------------------------------------------------------ lifetime
class Telemetry:
    """A running telemetry pipeline: the meter provider, its reader and the runtime's signals.

    Use :func:`start_telemetry`. ``meter`` is public for other adapters (``instrument_http``).
    """

    def __init__(self, runtime, settings: TelemetrySettings):
        self.runtime = runtime
        self.settings = settings
        self.provider = None
        self.meter = None
        self.reader = None
        self.registry = None
        self.prometheus_address: tuple[str, int] | None = None
        self.signals = None
        self._http_server = None
        self._http_thread = None
        self._system = None
        self._closed = False
        self._lock = threading.Lock()

    # per tick, from the runtime's loop (cheap: four histogram records)
    def record_tick(self, duration_s: float, lateness_s: float, step_s: float | None = None,
                    publish_s: float | None = None) -> None:
        if self.signals is not None:
            self.signals.record_tick(duration_s, lateness_s, step_s, publish_s)

    def observe_modbus(self, fc: int, model: str, outcome: str, seconds: float) -> None:
        """``ModbusStats.observe``: one answered (or unanswered) request."""
        if self.signals is not None:
            self.signals.observe_modbus(fc, model, outcome, seconds)

    def collect_text(self) -> bytes:
        """The Prometheus exposition, as a scrape would get it (prometheus exporter only)."""
        from prometheus_client import generate_latest
        if self.registry is None:
            raise RuntimeError("the prometheus exporter is not configured")
        return generate_latest(self.registry)

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush (the OTLP reader exports once more) and stop; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        stats = getattr(self.runtime, "modbus_stats", None)
        if stats is not None and getattr(stats, "observe", None) == self.observe_modbus:
            stats.observe = None
        if self._system is not None:
            try:
                self._system.uninstrument()
            except Exception:          # noqa: BLE001  (best effort at exit)
                log.debug("system metrics: uninstrument failed", exc_info=True)
        if self.provider is not None:
            try:
                self.provider.shutdown(timeout_millis=timeout_s * 1000)
            except Exception:          # noqa: BLE001
                log.warning("telemetry: shutdown of the meter provider failed", exc_info=True)
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(timeout_s)
        self.signals = None


def build_views(settings: TelemetrySettings):
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    from .instruments import HISTOGRAM, INSTRUMENTS, UNIT
    views = []
    for inst in INSTRUMENTS:
        if inst.kind == HISTOGRAM:
            views.append(View(instrument_name=inst.original_name or inst.name, name=inst.name,
                              aggregation=ExplicitBucketHistogramAggregation(list(inst.buckets))))
        elif inst.original_name is not None:
            views.append(View(instrument_name=inst.original_name, name=inst.name))
        elif inst.group == UNIT and "unit_id" in inst.attributes:
            # per-unit series never reach the SDK's silent overflow: the selection is capped
            # before the SDK sees it, and this limit is above the cap
            views.append(View(instrument_name=inst.name,
                              aggregation_cardinality_limit=max(settings.unit_metrics_cap, 1) + 1))
    return views


def start_telemetry(runtime, settings: TelemetrySettings, *, extra_readers=()) -> Telemetry:
    """Start exporting the runtime's metrics; call once the runtime is ready (``runtime.pub``,
    ``runtime.farm``, ``runtime.devices`` and ``runtime.modbus_stats`` set).

    * ``prometheus``: an HTTP server on ``prometheus_host:prometheus_port`` serving ``/metrics``
      (OSError naming the address if it cannot listen).
    * ``otlp``: OTLP/HTTP protobuf pushed every ``export_interval_s`` to the collector.
    * ``none``: instruments exist (record_tick and the hooks are cheap no-ops), nothing exports.

    It sets ``runtime.modbus_stats.observe`` (Modbus request durations) when that hook exists.
    ``extra_readers``: more MetricReaders (tests pass an InMemoryMetricReader).
    """
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.resources import Resource

    from bess_farm import __version__

    from .signals import Signals
    t = Telemetry(runtime, settings)
    resource = Resource({"telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry",
                         "telemetry.sdk.version": _sdk_version(), **settings.resource()})
    readers = []
    if settings.exporter == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import CollectorRegistry
        # its own registry: /metrics shows exactly the instrument table (and target_info), not
        # prometheus_client's default process/platform collectors
        t.registry = CollectorRegistry(auto_describe=False)
        t.reader = PrometheusMetricReader(registry=t.registry, scope_info_enabled=False)
        readers.append(t.reader)
    elif settings.exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        exporter = OTLPMetricExporter(endpoint=settings.metrics_url, timeout=10)
        t.reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=settings.export_interval_s * 1000,
            export_timeout_millis=max(1000.0, min(30_000.0, settings.export_interval_s * 1000)))
        readers.append(t.reader)
    readers.extend(extra_readers)
    t.provider = MeterProvider(metric_readers=readers, resource=resource, views=build_views(settings),
                               exemplar_filter=AlwaysOffExemplarFilter())
    t.meter = t.provider.get_meter("bess_farm", __version__)
    try:
        t.signals = Signals(runtime, settings, t.meter)
        stats = getattr(runtime, "modbus_stats", None)
        if stats is not None and hasattr(stats, "observe"):
            stats.observe = t.observe_modbus
        if settings.process_metrics:
            from opentelemetry.instrumentation.system_metrics import SystemMetricsInstrumentor

            from .instruments import SYSTEM_METRICS_CONFIG
            t._system = SystemMetricsInstrumentor(config=dict(SYSTEM_METRICS_CONFIG))
            if t._system.is_instrumented_by_opentelemetry:      # a previous Telemetry in-process
                t._system.uninstrument()
            t._system.instrument(meter_provider=t.provider, skip_dep_check=True)
        if settings.exporter == "prometheus":
            _serve_prometheus(t)
    except BaseException:
        t.shutdown()
        raise
    log.info("telemetry started", extra={"fields": _describe(t)})
    return t


def _serve_prometheus(t: Telemetry) -> None:
    from prometheus_client import start_http_server
    s = t.settings
    try:
        server, thread = start_http_server(s.prometheus_port, addr=s.prometheus_host, registry=t.registry)
    except OSError as exc:
        raise OSError(f"cannot listen for metrics on {s.prometheus_host}:{s.prometheus_port} "
                      f"({exc.strerror or exc}; set telemetry.prometheus_port or "
                      f"OTEL_EXPORTER_PROMETHEUS_PORT)") from None
    t._http_server, t._http_thread = server, thread
    t.prometheus_address = (s.prometheus_host, server.server_address[1])


def _describe(t: Telemetry) -> dict:
    s = t.settings
    d: dict[str, Any] = {"exporter": s.exporter, "service": s.service_name}
    if s.exporter == "prometheus" and t.prometheus_address:
        d["metrics"] = f"http://{t.prometheus_address[0]}:{t.prometheus_address[1]}/metrics"
    elif s.exporter == "otlp":
        d["endpoint"] = s.metrics_url
        d["interval_s"] = s.export_interval_s
    if t.signals is not None:
        d["unit_series"] = int(t.signals.unit_count)
        d["unit_cap"] = s.unit_metrics_cap
    if s.origin:
        d["from_env"] = ",".join(sorted({v for v in s.origin.values() if v != "config"})) or None
    return d


def _sdk_version() -> str:
    try:
        from importlib.metadata import version
        return version("opentelemetry-sdk")
    except Exception:                  # noqa: BLE001
        return "unknown"


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds (tests and tools)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
