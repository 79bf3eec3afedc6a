"""The ``bess`` command line.

``bess run``           the farm in real time: engine at 10 Hz + Modbus TCP (SunSpec)
``bess simulate``      batch run, faster than real time, with a progress bar and results files
``bess presets``       the vendor presets and every parameter a config may set
``bess check-config``  validate a farm config without running it

The engine is imported lazily so that ``bess --help`` answers at once.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

from bess_farm import __version__

_UNITS = {"s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0, "y": 365.0 * 86400.0}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"24h"``, ``"7d"``, ``"10y"`` or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|m|min|h|d|y)?\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number with s, m, h, d or y (e.g. 90s, 24h, 10y)")
    value = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return value


def _number(text: str, positive: bool) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or (positive and v <= 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a {'positive' if positive else 'finite'} number")
    return v


def _positive_float(text: str) -> float:
    return _number(text, positive=True)


def _finite_float(text: str) -> float:
    return _number(text, positive=False)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bess", description="Battery energy storage farm simulator.")
    p.add_argument("--version", action="version", version=f"bess-farm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    r = sub.add_parser("run", help="run the farm in real time with its Modbus server",
                       description="Run the farm in real time: the engine ticks at 10 Hz and SCADA "
                                   "polls and writes it over Modbus TCP (SunSpec; see docs/modbus.md). "
                                   "Without --config, the embedded default farm.")
    r.add_argument("--config", type=Path, help="site config (TOML): farm, [modbus], [runtime]")
    r.add_argument("--modbus-host", default=None, help="bind address (default 0.0.0.0)")
    r.add_argument("--modbus-port", type=int, default=None,
                   help="first Modbus port (default 5020; 247 units per port)")
    r.add_argument("--api-host", default=None, help="REST API bind address (default 0.0.0.0)")
    r.add_argument("--api-port", type=int, default=None, help="REST API port (default 8000)")
    r.add_argument("--no-api", action="store_true", help="run without the REST API")
    r.add_argument("--speed", type=_positive_float, default=None,
                   help="simulated seconds per real second (default 1)")
    r.add_argument("--overrun", choices=("catch-up", "skip"), default=None,
                   help="when a tick is late: run the missed ticks at once (default) or drop them")
    r.add_argument("--profile", choices=("daily-arbitrage", "idle", "constant", "frequency-regulation",
                                         "peak-shaving"), default=None,
                   help="farm dispatch while SCADA does not control the plant (default daily-arbitrage)")
    r.add_argument("--duration", type=parse_duration, default=None,
                   help="stop after this much wall time (default: run until SIGINT/SIGTERM)")
    r.add_argument("--log-format", choices=("plain", "json"), default="plain")
    r.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")

    s = sub.add_parser("simulate", help="run a farm faster than real time and write results",
                       description="Run a farm in batch, faster than real time, and stream the "
                                   "results into --out (see 'Outputs' in docs/simulate.md).")
    from bess_farm.interfaces.simulate import add_arguments
    add_arguments(s, parse_duration, _positive_float, _finite_float)

    pr = sub.add_parser("presets", help="list vendor presets and config parameters")
    pr.add_argument("name", nargs="?", help="show one preset's values")

    c = sub.add_parser("check-config", help="validate a farm config file")
    c.add_argument("config", type=Path)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "run":
            from bess_farm.interfaces.runtime import main as run_main
            return run_main(args)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "presets":
            return _presets(args)
        if args.command == "check-config":
            return _check_config(args)
    except KeyboardInterrupt:
        print("bess: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


def _fail(msg: str) -> int:
    print(f"bess: error: {msg}", file=sys.stderr)
    return 2


def _check_config(args) -> int:
    """Validate a farm or site config: the farm, [modbus], [runtime] and any vendor maps."""
    from bess_farm.engine import Farm
    from bess_farm.interfaces.modbus.vendor import VendorMapError, load_vendor_maps
    from bess_farm.interfaces.runtime import SiteConfigError, load_site_config
    try:
        site = load_site_config(args.config)
        farm = Farm(site.farm)
        load_vendor_maps(site.vendor_maps, farm)
    except (SiteConfigError, VendorMapError) as exc:
        return _fail(str(exc))
    print(f"{args.config}: ok, {farm.n_units} units in {len(farm.kinds)} kind(s)")
    return 0


def _presets(args) -> int:
    from bess_farm.engine import PARAMETERS, PRESETS
    if args.name:
        if args.name not in PRESETS:
            return _fail(f"unknown preset {args.name!r}; known presets: {', '.join(sorted(PRESETS))}")
        for key, value in PRESETS[args.name].items():
            unit = PARAMETERS[key][0]
            print(f"{key:32s} {value!s:>24s} {unit}")
        return 0
    print("presets:")
    for name, p in PRESETS.items():
        print(f"  {name:20s} {p['vendor']} {p['model']} ({p['chemistry'].upper()})")
    print("\nparameters (any of them can be overridden per [[units]] group in [units.params]):")
    for key, (unit, meaning) in PARAMETERS.items():
        print(f"  {key:32s} [{unit or '-'}] {meaning}")
    return 0


def _simulate(args) -> int:
    from bess_farm.interfaces.simulate import SimulateError, run
    if not args.quiet and sys.stderr.isatty():
        print("bess: loading the engine ...", file=sys.stderr)
    try:
        return run(args)
    except SimulateError as exc:
        return _fail(str(exc))
