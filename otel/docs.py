"""Generate the instrument table of ``docs/telemetry.md`` from :mod:`.instruments`.

    python -m bess_farm.otel.docs --write      # rewrite the table in docs/telemetry.md
    python -m bess_farm.otel.docs --check      # exit 1 if the file is not current (tests do this)

Only the text between the two marker lines is generated; the rest of the page is written by hand.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .instruments import GROUPS, INSTRUMENTS, prometheus_name

BEGIN = "<!-- BEGIN GENERATED INSTRUMENT TABLE (python -m bess_farm.otel.docs --write) -->"
END = "<!-- END GENERATED INSTRUMENT TABLE -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "telemetry.md"

_TITLES = {"farm": "Farm (engine reductions of the published tick)",
           "unit": "Per unit (capped selection)",
           "loop": "Simulation loop", "modbus": "Modbus", "http": "HTTP (semantic conventions)",
           "process": "Process (opentelemetry-instrumentation-system-metrics)",
           "chaos": "Chaos"}
_KIND = {"counter": "Counter", "histogram": "Histogram", "observable_gauge": "Gauge",
         "observable_counter": "Counter (async)", "observable_up_down_counter": "UpDownCounter (async)"}


def table() -> str:
    lines = []
    for g in GROUPS:
        rows = [i for i in INSTRUMENTS if i.group == g]
        if not rows:
            continue
        lines += [f"### {_TITLES[g]}", "",
                  "| OpenTelemetry name | Prometheus name | kind | unit | attributes | description |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for i in rows:
            attrs = ", ".join(f"`{a}`" for a in i.attributes) or "-"
            name = f"`{i.name}`" + (f" (from `{i.original_name}`)" if i.original_name else "")
            pn = f"`{prometheus_name(i)}`"
            if i.buckets:
                pn += "<br>buckets " + ", ".join(f"{b:g}" for b in i.buckets) + " s"
            desc = i.description.replace("|", "\\|")
            lines.append(f"| {name} | {pn} | {_KIND[i.kind]} | `{i.unit}` | {attrs} | {desc} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def render(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{table()}\n{END}{tail}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if "--write" in argv:
        if new != text:
            DOC.write_text(new, encoding="utf-8")
        return 0
    if "--check" in argv:
        if new != text:
            print(f"{DOC} is out of date: run python -m bess_farm.otel.docs --write", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
