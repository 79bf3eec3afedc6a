"""The collector sidecar's configuration (``otel/collector.yaml``) and what it may name.

There is no OpenTelemetry Collector binary on these machines (TOOLS.md): the configuration is
checked for shape and for component names against :data:`CONTRIB_COMPONENTS`, a subset of the
components of the ``otelcol-contrib`` distribution (its ``manifest.yaml`` in
opentelemetry-collector-releases, 0.135.0: otlpreceiver, memorylimiterprocessor, batchprocessor,
resourceprocessor, attributesprocessor, filterprocessor, transformprocessor, prometheusexporter,
prometheusremotewriteexporter, otlpexporter, otlphttpexporter, debugexporter,
healthcheckextension, pprofextension, zpagesextension).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLLECTOR_CONFIG = Path(__file__).with_name("collector.yaml")

#: component *types* (the part of a component id before an optional "/name") by kind
CONTRIB_COMPONENTS: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp", "prometheus", "hostmetrics", "filelog"}),
    "processors": frozenset({"memory_limiter", "batch", "resource", "attributes", "filter",
                             "transform", "resourcedetection", "k8sattributes"}),
    "exporters": frozenset({"prometheus", "prometheusremotewrite", "otlp", "otlphttp", "debug",
                            "file"}),
    "extensions": frozenset({"health_check", "pprof", "zpages"}),
}


def collector_config_path() -> Path:
    return COLLECTOR_CONFIG


def load_collector_config(path: Path | None = None) -> dict[str, Any]:
    import yaml
    return yaml.safe_load(Path(path or COLLECTOR_CONFIG).read_text(encoding="utf-8"))


def check_collector_config(cfg: dict[str, Any]) -> list[str]:
    """Problems: unknown component types, pipeline references to undeclared components."""
    problems = []
    for kind, known in CONTRIB_COMPONENTS.items():
        for cid in (cfg.get(kind) or {}):
            ctype = cid.split("/", 1)[0]
            if ctype not in known:
                problems.append(f"{kind}: {cid!r} is not an otelcol-contrib component this project uses")
    service = cfg.get("service") or {}
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            problems.append(f"service.extensions: {ext!r} is not declared under extensions")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("service.pipelines: none")
    for name, p in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for cid in p.get(kind) or []:
                if cid not in (cfg.get(kind) or {}):
                    problems.append(f"service.pipelines.{name}.{kind}: {cid!r} is not declared")
        if not p.get("receivers") or not p.get("exporters"):
            problems.append(f"service.pipelines.{name}: needs receivers and exporters")
    return problems
