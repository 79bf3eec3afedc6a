"""``python -m bess_farm.interfaces.chaos table|list|check FILE``: docs table, built-ins, validation."""

import sys

from . import list_builtin, load_scenario, markdown_table
from .scenario import ScenarioError


def main(argv: list[str]) -> int:
    cmd = argv[0] if argv else "table"
    if cmd == "table":
        print(markdown_table())
        return 0
    if cmd == "list":
        for s in list_builtin():
            print(f"{s['name']:32s} {s['title']}")
        return 0
    if cmd == "check" and len(argv) == 2:
        try:
            sc = load_scenario(argv[1])
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"{sc.source}: ok ({len(sc.faults)} faults, {len(sc.setpoints)} setpoints"
              f"{', random process' if sc.random else ''})")
        return 0
    print("usage: python -m bess_farm.interfaces.chaos table|list|check FILE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
