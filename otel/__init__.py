"""OpenTelemetry metrics of bess-farm: the instrument table, readers and views, the runtime's
signals, HTTP server metrics, and the collector sidecar's configuration (docs/telemetry.md).

The runtime wires it with :func:`~.setup.parse_telemetry_settings`, :func:`~.setup.start_telemetry`,
:meth:`~.setup.Telemetry.record_tick`, :func:`~.http.instrument_http` and
:meth:`~.setup.Telemetry.shutdown`. Importing this package does not import the SDK.
"""

from __future__ import annotations

__all__ = ["TelemetrySettings", "TelemetryConfigError", "parse_telemetry_settings", "start_telemetry",
           "Telemetry", "instrument_http", "INSTRUMENTS", "prometheus_name", "collector_config_path"]


def __getattr__(name):
    if name in ("TelemetrySettings", "TelemetryConfigError", "parse_telemetry_settings",
                "start_telemetry", "Telemetry"):
        from . import setup
        return getattr(setup, name)
    if name == "instrument_http":
        from .http import instrument_http
        return instrument_http
    if name in ("INSTRUMENTS", "prometheus_name"):
        from . import instruments
        return getattr(instruments, name)
    if name == "collector_config_path":
        from .collector import collector_config_path
        return collector_config_path
    raise AttributeError(name)
