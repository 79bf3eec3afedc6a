"""The dashboard and rules linter.

Dashboards: unique panel ids, every panel (rows aside) has a title, a description and at least one
query with an expression, unique ref ids, the datasource of every panel, query, query variable and
annotation is the datasource variable, template variables used are defined, panels lie on the
24-column grid, UIDs are the configured ones. Dashboards and rules: every metric a PromQL
expression names is an instrument of otel/instruments.py (or a recording rule, ``ALERTS``, ``up``).
Rules: severity, summary, description and a runbook_url to an existing docs/runbooks file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from bess_farm.otel.instruments import HISTOGRAM, INSTRUMENTS, prometheus_name

from . import config as C
from .rules import recorded_names

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "docs" / "runbooks"
SEVERITIES = {"critical", "warning", "info"}
GRAFANA_BUILTIN_VARS = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms",
                        "__all"}
PROMETHEUS_BUILTIN_METRICS = {"ALERTS", "ALERTS_FOR_STATE", "up", "target_info"}
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
             "bool", "offset", "inf", "nan", "atan2"}


def known_metrics() -> set[str]:
    names = set(PROMETHEUS_BUILTIN_METRICS) | recorded_names()
    for inst in INSTRUMENTS:
        pn = prometheus_name(inst)
        names |= {pn + s for s in ("_bucket", "_count", "_sum")} if inst.kind == HISTOGRAM else {pn}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) selects."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)   # strings
    e = re.sub(r"\$\{?\w+\}?", "", e)                                       # template variables
    e = re.sub(r"\{[^{}]*\}", " ", e)                                       # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                                       # ranges, subqueries
    e = re.sub(r"\boffset\s+-?\w+|@\s*[\w.()]+", " ", e)                      # offset, @ modifiers
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    m = re.match(r"\s*label_values\s*\((.*),\s*\w+\s*\)\s*$", e)          # Grafana variable query
    if m:
        e = m.group(1)
    e = re.sub(r"(?<![\w:.])\d+(\.\d+)?([eE][+-]?\d+)?\b", " ", e)          # numbers
    out = set()
    for tok in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e):
        name = tok.group(0)
        rest = e[tok.end():].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue                                                        # a function or keyword
        out.add(name)
    return out


def _exprs_of_dashboard(d: dict):
    """(where, expr) of every query, variable query and annotation."""
    for p in _panels(d):
        for t in p.get("targets", []) or []:
            yield f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t.get("expr", "")
    for v in d.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            yield f"variable {v.get('name')}", q.get("query", "") if isinstance(q, dict) else q
    for a in d.get("annotations", {}).get("list", []):
        if not a.get("builtIn"):
            yield f"annotation {a.get('name')!r}", a.get("expr", "")


def _panels(d: dict):
    for p in d.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:                                 # collapsed rows
            yield q


def lint_dashboard(d: dict, name: str = "", metrics: set[str] | None = None) -> list[str]:
    metrics = known_metrics() if metrics is None else metrics
    where = name or d.get("uid", "?")
    problems: list[str] = []
    bad = lambda msg: problems.append(f"{where}: {msg}")  # noqa: E731
    if d.get("uid") not in C.UIDS.values():
        bad(f"uid {d.get('uid')!r} is not one of config.UIDS")
    if not d.get("description"):
        bad("no dashboard description")
    variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    dsv = variables.get(C.DATASOURCE_VAR)
    if not dsv or dsv.get("type") != "datasource" or dsv.get("query") != "prometheus":
        bad(f"no Prometheus datasource variable ${C.DATASOURCE_VAR}")
    for v in variables.values():
        if v.get("type") == "query" and v.get("datasource") != C.DATASOURCE:
            bad(f"variable {v.get('name')}: datasource is {v.get('datasource')}, not ${C.DATASOURCE_VAR}")
    ids: dict[int, str] = {}
    titles: set[str] = set()
    for p in _panels(d):
        pid, title = p.get("id"), p.get("title", "")
        label = f"panel {pid} {title!r}"
        if pid is None:
            bad(f"{label}: no id")
        elif pid in ids:
            bad(f"{label}: id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = title
        if p.get("datasource") != C.DATASOURCE:
            bad(f"{label}: datasource is {p.get('datasource')}, not the variable ${C.DATASOURCE_VAR}")
        g = p.get("gridPos") or {}
        if not g or g.get("x", 0) + g.get("w", 0) > 24 or g.get("w", 0) <= 0 or g.get("h", 0) <= 0:
            bad(f"{label}: gridPos {g} is off the 24-column grid")
        if p.get("type") == "row":
            continue
        if not title:
            bad(f"panel {pid}: no title")
        elif title in titles:
            bad(f"{label}: title used twice")
        titles.add(title)
        if not (p.get("description") or "").strip():
            bad(f"{label}: no description")
        targets = p.get("targets") or []
        if not targets:
            bad(f"{label}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            bad(f"{label}: ref ids {refs} are not unique")
        for t in targets:
            if not (t.get("expr") or "").strip():
                bad(f"{label} {t.get('refId')}: empty query")
            if t.get("datasource") != C.DATASOURCE:
                bad(f"{label} {t.get('refId')}: datasource is {t.get('datasource')}, not ${C.DATASOURCE_VAR}")
    for a in d.get("annotations", {}).get("list", []):
        if not a.get("builtIn") and a.get("datasource") != C.DATASOURCE:
            bad(f"annotation {a.get('name')!r}: datasource is not ${C.DATASOURCE_VAR}")
    for loc, expr in _exprs_of_dashboard(d):
        for var in re.findall(r"\$\{?(\w+)", expr):
            if var not in variables and var not in GRAFANA_BUILTIN_VARS:
                bad(f"{loc}: ${var} is not a variable of the dashboard")
        for m in sorted(metric_names(expr) - metrics):
            bad(f"{loc}: metric {m} is neither an instrument of otel/instruments.py nor a recording rule")
    return problems


def lint_rules(docs: dict[str, dict], metrics: set[str] | None = None) -> list[str]:
    metrics = known_metrics() if metrics is None else metrics
    problems: list[str] = []
    seen: set[str] = set()
    for fname, doc in docs.items():
        for g in doc.get("groups", []):
            for r in g.get("rules", []):
                name = r.get("alert") or r.get("record")
                where = f"{fname}: {g.get('name')}: {name}"
                for m in sorted(metric_names(r.get("expr", "")) - metrics):
                    problems.append(f"{where}: metric {m} is not an instrument of otel/instruments.py "
                                    "nor a recording rule")
                if "record" in r:
                    if not re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", r["record"]):
                        problems.append(f"{where}: recording rule name is not level:metric:operation")
                    continue
                if name in seen:
                    problems.append(f"{where}: alert defined twice")
                seen.add(name)
                if r.get("labels", {}).get("severity") not in SEVERITIES:
                    problems.append(f"{where}: severity must be one of {sorted(SEVERITIES)}")
                ann = r.get("annotations", {})
                for key in ("summary", "description", "runbook_url"):
                    if not (ann.get(key) or "").strip():
                        problems.append(f"{where}: no {key}")
                url = ann.get("runbook_url", "")
                if url:
                    if not url.startswith(C.RUNBOOK_BASE):
                        problems.append(f"{where}: runbook_url does not start with {C.RUNBOOK_BASE}")
                    else:
                        rb = RUNBOOKS / url[len(C.RUNBOOK_BASE):]
                        if not rb.is_file():
                            problems.append(f"{where}: runbook {rb.relative_to(ROOT)} does not exist")
                        elif name not in rb.read_text():
                            problems.append(f"{where}: runbook {rb.relative_to(ROOT)} does not name the alert")
    return problems


def lint_all() -> list[str]:
    """Lint what the code renders (the files are checked to equal it by build --check)."""
    import yaml

    from .build import render
    metrics = known_metrics()
    problems: list[str] = []
    for path, text in render().items():
        if path.suffix == ".json":
            problems += lint_dashboard(json.loads(text), path.name, metrics)
    docs = {p.name: yaml.safe_load(t) for p, t in render().items() if p.parent.name == "rules"}
    return problems + lint_rules(docs, metrics)
