"""OpenTelemetry metrics for the engine (arrives with the telemetry issue)."""
