#!/usr/bin/env python3
"""Build the bess-farm Grafana dashboards and Prometheus rules (docs/dashboards.md).

    python grafana/build.py --write    # regenerate grafana/dashboards/*.json and grafana/rules/*.yaml
    python grafana/build.py --check    # exit 1 when a generated file is stale (what CI runs)
    python grafana/build.py --lint     # the dashboard linter (ids, queries, descriptions, datasource)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bess_grafana.build import GRAFANA, stale, write  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true", help="regenerate the files")
    g.add_argument("--check", action="store_true", help="fail when a file is stale")
    g.add_argument("--lint", action="store_true", help="lint the generated dashboards and rules")
    args = ap.parse_args(argv)
    if args.write:
        for p in write():
            print(f"wrote {p.relative_to(GRAFANA.parent)}")
        return 0
    if args.check:
        problems = stale()
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print("run: python grafana/build.py --write", file=sys.stderr)
        return 1 if problems else 0
    from bess_grafana.lint import lint_all
    problems = lint_all()
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
