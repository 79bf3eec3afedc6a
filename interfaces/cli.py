"""The ``bess`` command line.

``bess run``           the farm in real time: engine at 10 Hz + Modbus TCP (SunSpec)
``bess simulate``      batch run, faster than real time, with a progress bar and results files
``bess presets``       the vendor presets and every parameter a config may set
``bess check-config``  validate a farm config without running it

Live commands, against a running farm's REST API (``--url``/``BESS_URL``, ``--token``/``BESS_API_TOKEN``;
see docs/api.md): ``bess status``, ``bess units``, ``bess unit ID``, ``bess setpoint``, ``bess reset``,
``bess enable``, ``bess disable``, ``bess mode``. They exit 0 when done, 1 when the farm refuses,
2 on a usage error and 3 when the farm cannot be reached.

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

    r = sub.add_parser("run", help="run the farm in real time: Modbus, REST API, metrics",
                       description="Run the farm in real time: the engine ticks at 10 Hz; SCADA "
                                   "polls and writes it over Modbus TCP (SunSpec, port 5020; "
                                   "docs/modbus.md), operators over the REST API (port 8000; "
                                   "docs/api.md), Prometheus scrapes its metrics (port 9090; "
                                   "docs/telemetry.md). Without --config, the embedded default farm.")
    r.add_argument("--config", type=Path, help="site config (TOML): farm, [modbus], [runtime]")
    r.add_argument("--modbus-host", default=None, help="bind address (default 0.0.0.0)")
    r.add_argument("--modbus-port", type=int, default=None,
                   help="first Modbus port (default 5020; 247 units per port)")
    r.add_argument("--api-host", default=None, help="REST API bind address (default 0.0.0.0)")
    r.add_argument("--api-port", type=int, default=None, help="REST API port (default 8000)")
    r.add_argument("--no-api", action="store_true", help="run without the REST API")
    r.add_argument("--shard", default=None, metavar="INDEX/COUNT",
                   help="run only shard INDEX of COUNT (whole rows of units; default $BESS_SHARD; "
                        "BESS_SHARD_FROM_HOSTNAME=1 takes INDEX from the pod ordinal)")
    r.add_argument("--scenario", default=None, metavar="NAME|FILE",
                   help="start a chaos scenario (a built-in name or a TOML file; docs/chaos.md)")
    r.add_argument("--fresh", action="store_true",
                   help="start from the config, not from the newest checkpoint")
    r.add_argument("--state-dir", type=Path, default=None,
                   help="checkpoint directory (default $BESS_STATE_DIR/<farm> or "
                        "~/.local/state/bess-farm/<farm>)")
    r.add_argument("--checkpoint-interval", type=parse_duration, default=None,
                   help="wall time between checkpoints (default 5m); one is always written at shutdown")
    r.add_argument("--no-checkpoints", action="store_true",
                   help="neither restore nor save checkpoints")
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
    from bess_farm.interfaces.probe import add_parser as add_probe_parser
    add_probe_parser(sub)
    _add_live_commands(sub)
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
        if args.command == "probe":
            from bess_farm.interfaces.probe import run as probe_run
            return probe_run(args)
        if args.command in _LIVE_COMMANDS:
            return _live(args)
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


# ------------------------------------------------------------------------------ live commands
# `bess status|units|unit|setpoint|reset|enable|disable|mode` talk to a running farm's REST API
# through interfaces/client.py (urllib only, so they answer at once). Tables for people, --json for
# scripts; exit codes 0 done, 1 refused by the farm, 2 usage, 3 unreachable.

_LIVE_COMMANDS = ("status", "units", "unit", "setpoint", "reset", "enable", "disable", "mode",
                  "scenario")
_DISPATCH_PROFILES = ("daily-arbitrage", "idle", "constant", "frequency-regulation", "peak-shaving")
_POWER_UNITS = {"": 1.0, "w": 1.0, "kw": 1e3, "mw": 1e6, "gw": 1e9}
_POWER_RE = re.compile(r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([kKmMgG]?[wW])?\s*")
#: what argparse must take for a (negative) power value, not for an option: -500kW, -1.5MW, -2e6
_NEGATIVE_POWER = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*(?:[kKmMgG]?[wW])?$")
_SELECTOR_RE = re.compile(r"\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*")


def parse_power(text: str) -> float:
    """``"1.5MW"``, ``"-500kW"``, ``"2e6"``, ``"750 W"`` -> watts (positive = discharge)."""
    m = _POWER_RE.fullmatch(str(text))
    if not m:
        raise ValueError(f"invalid power {text!r}: use a number of W, kW, MW or GW "
                         f"(e.g. 1.5MW, -500kW, 2e6; positive = discharge)")
    value = float(m.group(1)) * _POWER_UNITS[(m.group(2) or "").lower()]
    if not math.isfinite(value):
        raise ValueError(f"invalid power {text!r}: must be finite")
    return value


def _fraction(text: str) -> float:
    """A SoC bound: ``0.2`` or ``20%``."""
    t = str(text).strip()
    pct = t.endswith("%")
    try:
        v = float(t[:-1] if pct else t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction (0.2) or a percentage (20%)") from None
    v = v / 100 if pct else v
    if not (math.isfinite(v) and 0 <= v <= 1):
        raise argparse.ArgumentTypeError(f"{text!r} is outside 0..1 (or 0%..100%)")
    return v


def _count(lo: int, hi: int | None):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if v < lo or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{v} is outside {lo}..{hi if hi is not None else ''}")
        return v
    return parse


def _selector(text: str) -> str:
    if not _SELECTOR_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"invalid unit list {text!r}: use ids and ranges like 0-9,20")
    return re.sub(r"\s+", "", text)


def _add_live_commands(sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("connection (a running `bess run`; see docs/api.md)")
    g.add_argument("--url", default=None,
                   help="the farm's API (default: $BESS_URL, else http://127.0.0.1:8000)")
    g.add_argument("--token", default=None,
                   help="API token (default: --token-file, $BESS_API_TOKEN, $BESS_API_TOKEN_FILE); "
                        "other users can see command lines, so prefer the file or the environment")
    g.add_argument("--token-file", default=None, help="read the API token from this file")
    g.add_argument("--timeout", type=_positive_float, default=5.0, help="seconds per request (default 5)")
    common.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a table")
    epilog = "exit status: 0 done, 1 refused by the farm, 2 usage error, 3 farm unreachable"

    def add(name, help_, description):
        sp = sub.add_parser(name, help=help_, description=description, parents=[common], epilog=epilog)
        # take -500kW or -1.5MW as a value, not as an unknown option
        sp._negative_number_matcher = _NEGATIVE_POWER
        return sp

    add("status", "a running farm at a glance (REST API)",
        "Farm name, tick, simulated time, units per state, power, SoC/SoH, temperatures, energy, "
        "alarms, dispatch, Modbus ports and tick timing of a running farm (GET /api/v1/farm).")

    u = add("units", "list a running farm's units (filter, page)",
            "A table of units (id, row, state, SoC, SoH, temperature, AC power, alarms), filtered and "
            "paginated by the farm (GET /api/v1/units).")
    u.add_argument("--state", help="comma-separated states, e.g. fault,thermal_runaway")
    u.add_argument("--alarm", help="units with this alarm, e.g. over_temperature")
    u.add_argument("--soc-min", type=_fraction, help="SoC at least this (0.2 or 20%%)")
    u.add_argument("--soc-max", type=_fraction, help="SoC at most this (0.8 or 80%%)")
    u.add_argument("--row", type=_count(0, None), help="units in this row")
    u.add_argument("--limit", type=_count(1, 1000), default=None, help="units per page (default 100, at most 1000)")
    u.add_argument("--offset", type=_count(0, None), default=0, help="skip this many matching units")
    u.add_argument("--all", action="store_true", help="every matching unit (pages through them)")

    one = add("unit", "one unit of a running farm in full",
              "Every published quantity of one unit (GET /api/v1/units/ID); --history adds its recent "
              "samples (units listed in [api] history_units).")
    one.add_argument("id", type=_count(0, None), metavar="ID", help="farm-wide unit id (0-based)")
    one.add_argument("--history", action="store_true", help="also its recent history samples")
    one.add_argument("--last", type=_count(1, None), default=None, help="only the last N history samples")

    sp = add("setpoint", "set farm or unit power, or a dispatch profile",
             "Write a power setpoint (W; suffixes W, kW, MW, GW; positive = discharge). It takes effect "
             "at the next tick. A unit setpoint puts the units in manual mode (`bess mode auto` undoes "
             "it); a farm setpoint replaces the local dispatch profile (`--dispatch` restores one). "
             "Examples: bess setpoint --farm 20MW; bess setpoint --units 0-9 -500kW; "
             "bess setpoint --unit 3 0; bess setpoint --dispatch daily-arbitrage --power 15MW")
    t = sp.add_mutually_exclusive_group(required=True)
    t.add_argument("--farm", action="store_true", help="the farm's AC power setpoint")
    t.add_argument("--unit", type=_count(0, None), metavar="ID", help="one unit")
    t.add_argument("--units", type=_selector, metavar="IDS", help="several units: 0-9,20")
    t.add_argument("--dispatch", choices=_DISPATCH_PROFILES, metavar="PROFILE",
                   help="back to a local dispatch profile: " + ", ".join(_DISPATCH_PROFILES))
    sp.add_argument("power", nargs="?", metavar="POWER", help="W with --farm, --unit, --units: 1.5MW, -500kW, 2e6")
    sp.add_argument("--power", dest="profile_power", metavar="W",
                    help="with --dispatch: the profile's amplitude (default 40%% of the farm rating)")

    def selector_group(parser, what):
        g = parser.add_mutually_exclusive_group(required=True)
        g.add_argument("--unit", type=_count(0, None), metavar="ID", help="one unit")
        g.add_argument("--units", type=_selector, metavar="IDS", help="several units: 0-9,20")
        g.add_argument("--all", action="store_true", help=f"{what} every unit")

    r = add("reset", "alarm reset of units", "Alarm reset (latched faults and trips) of the given units.")
    selector_group(r, "reset")
    e = add("enable", "enable units", "Enable units (they follow their setpoint or the dispatch).")
    selector_group(e, "enable")
    d = add("disable", "disable units", "Disable units (their converters stop; state offline).")
    selector_group(d, "disable")
    m = add("mode", "auto or manual mode of units",
            "auto: the units follow the farm setpoint or dispatch; manual: their own setpoint.")
    m.add_argument("mode", choices=("auto", "manual"))
    selector_group(m, "set the mode of")

    sc = add("scenario", "chaos scenarios of a running farm: list, start, stop, active, events",
             "list: the built-in scenarios and the one running; start NAME|FILE: start a built-in "
             "scenario by name, or send a scenario file (docs/chaos.md); stop: revert every fault; "
             "active: the faults now active; events: fault starts and ends (--since SEQ).")
    sc.add_argument("action", choices=("list", "start", "stop", "active", "events"))
    sc.add_argument("scenario", nargs="?", metavar="NAME|FILE", help="with start")
    sc.add_argument("--since", type=_count(0, None), default=0, help="with events: after this seq")


class _UsageError(Exception):
    """A usage problem found after parsing (exit 2)."""


def _live(args) -> int:
    from bess_farm.interfaces.client import Client, ClientError, resolve_token
    try:
        token = resolve_token(args.token, args.token_file)
        client = Client(args.url, token, args.timeout)
        handler = {"status": _cmd_status, "units": _cmd_units, "unit": _cmd_unit,
                   "setpoint": _cmd_setpoint, "reset": _cmd_write, "enable": _cmd_write,
                   "disable": _cmd_write, "mode": _cmd_write, "scenario": _cmd_scenario}[args.command]
        return handler(client, args)
    except _UsageError as exc:
        return _fail(str(exc))
    except ClientError as exc:
        print(f"bess: error: {exc}", file=sys.stderr)
        return exc.code


def _print_json(obj) -> None:
    import json
    print(json.dumps(obj, indent=2))


# ----------------------------------------------------------------- formatting
def _si(value, unit: str, digits: int = 4) -> str:
    """``-29760000, "W"`` -> ``-29.76 MW``."""
    if value is None:
        return "-"
    v = float(value)
    a = abs(v)
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, "")):
        if a >= scale:
            break
    x = v / scale
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x)))) if x else 0
    decimals = min(decimals, 2)
    return f"{x:.{decimals}f} {prefix}{unit}"


def _pct(x, decimals: int = 1) -> str:
    return "-" if x is None else f"{100 * float(x):.{decimals}f} %"


def _num(x, fmt: str = ".1f") -> str:
    return "-" if x is None else format(float(x), fmt)


def _scaled(x, k: float):
    return None if x is None else float(x) * k


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    s = float(seconds)
    days, rest = divmod(s, 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    text = f"{int(h):02d}:{int(m):02d}:{sec:04.1f}"
    return f"{int(days)}d {text}" if days else text


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max([len(h)] + [len(r[j]) for r in rows]) for j, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.rjust(widths[j]) if j in right else c.ljust(widths[j])
                         for j, c in enumerate(cells)).rstrip()
    return "\n".join([line(headers)] + [line(r) for r in rows])


# ----------------------------------------------------------------- reads
def _cmd_status(client, args) -> int:
    f = client.get("/api/v1/farm")
    if args.json:
        _print_json(f)
        return 0
    a = f.get("aggregates", {})
    kinds = ", ".join(f"{k['units']} x {k['vendor']} {k['model']}" for k in f.get("kinds", []))
    states = a.get("units_per_state", {})
    state_text = ", ".join(f"{n} {s}" for s, n in states.items() if n) or "none"
    mb = f.get("modbus") or {}
    ports = mb.get("ports", 1) or 1
    port_text = (f"{mb.get('port')}" if ports == 1 else f"{mb.get('port')}-{mb.get('port', 0) + ports - 1}")
    rt = f.get("runtime") or {}
    alarms = a.get("units_with_alarms")
    rows = [
        ("farm", f"{f['name']}: {f['units']} units" + (f" ({kinds})" if kinds else "")),
        ("tick", (f"{f['tick']} at {_num(f.get('tick_hz'), 'g')} Hz, speed {_num(f.get('speed'), 'g')}x; "
                  f"simulated time {_duration(f.get('time_s'))}")),
        ("dispatch", f"{f.get('dispatch', '-')}, farm setpoint {_si(f.get('setpoint_w'), 'W')}"),
        ("states", state_text),
        ("power", (f"AC {_si(a.get('p_ac_w'), 'W')} (requested {_si(a.get('p_request_w'), 'W')}), "
                   f"DC {_si(a.get('p_dc_w'), 'W')}, HVAC {_si(a.get('p_hvac_w'), 'W')}")),
        ("headroom", (f"discharge {_si(a.get('headroom_discharge_w'), 'W')}, "
                      f"charge {_si(a.get('headroom_charge_w'), 'W')}")),
        ("SoC", f"mean {_pct(a.get('soc_mean'))} (min {_pct(a.get('soc_min'))}, max {_pct(a.get('soc_max'))})"),
        ("SoH", f"mean {_pct(a.get('soh_mean'))}"),
        ("temperature", (f"mean {_num(a.get('temp_mean_c'))} C (min {_num(a.get('temp_min_c'))} C, "
                         f"max {_num(a.get('temp_max_c'))} C)")),
        ("energy", (f"stored {_si(a.get('e_stored_wh'), 'Wh')} of {_si(a.get('e_capacity_wh'), 'Wh')}, "
                    f"available {_si(a.get('e_available_wh'), 'Wh')}; AC charged "
                    f"{_si(a.get('e_ac_charged_wh'), 'Wh')}, discharged {_si(a.get('e_ac_discharged_wh'), 'Wh')}")),
        ("alarms", f"{int(alarms) if alarms is not None else '-'} unit(s) with alarms"),
        ("modbus", (f"{mb.get('host')}:{port_text}, {mb.get('units_served', '-')} units served, "
                    f"plant device {mb.get('plant_device_id', '-')}" if mb else "-")),
        ("ticks", (f"{int(rt.get('ticks') or 0)} run, {int(rt.get('overruns') or 0)} overruns, "
                   f"{int(rt.get('skipped') or 0)} skipped; tick p50 {_num(rt.get('tick_p50_ms'), '.2f')} ms, "
                   f"p99 {_num(rt.get('tick_p99_ms'), '.2f')} ms; lateness p99 "
                   f"{_num(rt.get('lateness_p99_ms'), '.2f')} ms")),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    return 0


def _cmd_units(client, args) -> int:
    params = {"state": args.state, "alarm": args.alarm, "soc_min": args.soc_min,
              "soc_max": args.soc_max, "row": args.row}
    if args.all:
        limit = args.limit or 1000
        offset, units, first = args.offset, [], None
        while True:
            page = client.get("/api/v1/units", {**params, "offset": offset, "limit": limit})
            first = first or page
            units += page["units"]
            offset += len(page["units"])
            # the farm ticks between pages: stop at the end of what it reports now
            if not page["units"] or offset >= page["total"]:
                break
        result = {"total": page["total"], "offset": args.offset, "limit": len(units),
                  "tick": first.get("tick"), "units": units}
    else:
        result = client.get("/api/v1/units", {**params, "offset": args.offset or None, "limit": args.limit})
    if args.json:
        _print_json(result)
        return 0
    units = result["units"]
    rows = [[str(u["id"]), str(u.get("row", "-")), u["state"], _num(_scaled(u.get("soc"), 100)),
             _num(_scaled(u.get("soh"), 100)), _num(u.get("temp_c")), _num(_scaled(u.get("p_ac_w"), 1e-3)),
             ",".join(u.get("alarms") or []) or "-"] for u in units]
    if rows:
        print(_table(["id", "row", "state", "SoC %", "SoH %", "temp C", "power kW", "alarms"], rows,
                     right={0, 1, 3, 4, 5, 6}))
    total, off = result["total"], result["offset"]
    if not units:
        print(f"no units (of {total} matching) at offset {off}" if total else "no matching units")
    elif off + len(units) < total and not args.all:
        print(f"-- units {off + 1}-{off + len(units)} of {total} matching (tick {result.get('tick')}); "
              f"--offset {off + len(units)} for the next page, --all for every one")
    else:
        print(f"-- {len(units)} of {total} matching (tick {result.get('tick')})")
    return 0


_UNIT_FORMAT = {
    "soc": lambda x: _pct(x, 2), "soc_measured": lambda x: _pct(x, 2), "soh": lambda x: _pct(x, 2),
    "soc_rsv_min": _pct, "soc_rsv_max": _pct,
    "temp_c": lambda x: f"{_num(x, '.2f')} C", "temp_measured_c": lambda x: f"{_num(x, '.2f')} C",
    "voltage_v": lambda x: f"{_num(x, '.1f')} V", "voltage_measured_v": lambda x: f"{_num(x, '.1f')} V",
    "current_a": lambda x: f"{_num(x, '.1f')} A", "capacity_ah": lambda x: f"{_num(x, '.1f')} Ah",
    "efc": lambda x: _num(x, ".4f"), "time_s": lambda x: f"{_duration(x)} ({_num(x, '.1f')} s)",
    "enabled": lambda x: "yes" if x else "no",
    "alarms": lambda x: ", ".join(x) if x else "none",
    "modbus": lambda x: f"port {x['port']}, device id {x['device_id']}" if x else "not served",
}


def _unit_value(key: str, value) -> str:
    if key in _UNIT_FORMAT:
        return _UNIT_FORMAT[key](value)
    if value is None:
        return "-"
    if key.endswith("_wh"):
        return _si(value, "Wh")
    if key.endswith("_w"):
        return _si(value, "W")
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


_HISTORY_COLUMNS = {"time_s": ("time s", ".1f", 1.0), "soc": ("SoC %", ".2f", 100.0),
                    "temp_c": ("temp C", ".2f", 1.0), "p_ac_w": ("power kW", ".1f", 1e-3),
                    "voltage_v": ("voltage V", ".1f", 1.0), "current_a": ("current A", ".1f", 1.0)}


def _cmd_unit(client, args) -> int:
    unit = client.get(f"/api/v1/units/{args.id}")
    hist = client.get(f"/api/v1/units/{args.id}/history") if args.history else None
    if hist is not None and args.last:
        hist = {**hist, "samples": hist["samples"][-args.last:]}
    if args.json:
        _print_json({"unit": unit, "history": hist} if args.history else unit)
        return 0
    width = max(len(k) for k in unit) + 1
    for k, v in unit.items():
        print(f"{k + ':':<{width}} {_unit_value(k, v)}")
    if hist is None:
        return 0
    fields = hist.get("fields") or []
    states = hist.get("states")
    if states is None and "state" in fields:        # the codes' names, in the farm's own order
        states = list(client.get("/api/v1/farm")["aggregates"]["units_per_state"])
    headers, rows = [], []
    for name in fields:
        headers.append(_HISTORY_COLUMNS.get(name, (name,))[0])
    for sample in hist["samples"]:
        row = []
        for name, x in zip(fields, sample):
            if x is None:
                row.append("-")
            elif name == "state":
                code = int(x)
                row.append(states[code] if states and 0 <= code < len(states) else str(code))
            elif name in _HISTORY_COLUMNS:
                _, fmt, scale = _HISTORY_COLUMNS[name]
                row.append(format(x * scale, fmt))
            else:
                row.append(f"{x:g}" if isinstance(x, float) else str(x))
        rows.append(row)
    print()
    print(f"history of unit {unit['id']}: {len(rows)} sample(s), one every {_num(hist.get('interval_s'), 'g')} "
          f"simulated s")
    if rows:
        print(_table(headers, rows, right={j for j, n in enumerate(fields) if n != "state"}))
    return 0


# ----------------------------------------------------------------- writes
def _accepted(what: str, answer: dict, args) -> int:
    if args.json:
        _print_json(answer)
        return 0
    n = answer.get("units")
    more = f" ({n} unit{'s' if n != 1 else ''})" if n is not None else ""
    print(f"{what}: accepted, takes effect at tick {answer['tick']}{more}")
    return 0


def _cmd_setpoint(client, args) -> int:
    if args.dispatch:
        if args.power is not None:
            raise _UsageError(f"with --dispatch, give the amplitude as --power {args.power} (or leave it out)")
        body = {"profile": args.dispatch}
        if args.profile_power is not None:
            body["power_w"] = _power_arg(args.profile_power)
        what = f"dispatch {args.dispatch}" + (f" at {_si(body['power_w'], 'W')}" if "power_w" in body else "")
        return _accepted(what, client.post("/api/v1/farm/dispatch", body), args)
    if args.profile_power is not None:
        raise _UsageError("--power goes with --dispatch; for --farm, --unit or --units give POWER alone")
    if args.power is None:
        raise _UsageError("give the power: e.g. `bess setpoint --farm 20MW` (W, kW, MW or GW; positive = discharge)")
    w = _power_arg(args.power)
    if args.farm:
        return _accepted(f"farm setpoint {_si(w, 'W')}",
                         client.post("/api/v1/farm/setpoint", {"power_w": w}), args)
    if args.unit is not None:
        return _accepted(f"unit {args.unit} setpoint {_si(w, 'W')}",
                         client.post(f"/api/v1/units/{args.unit}/setpoint", {"power_w": w}), args)
    return _accepted(f"units {args.units} setpoint {_si(w, 'W')} each",
                     client.post("/api/v1/units/setpoint", {"units": args.units, "power_w": w}), args)


def _power_arg(text: str) -> float:
    try:
        return parse_power(text)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None


def _cmd_write(client, args) -> int:
    cmd = args.command
    if cmd == "reset":
        if args.unit is not None:
            return _accepted(f"reset of unit {args.unit}", client.post(f"/api/v1/units/{args.unit}/reset", {}), args)
        body = {} if args.all else {"units": args.units}
        what = "reset of all units" if args.all else f"reset of units {args.units}"
        return _accepted(what, client.post("/api/v1/farm/reset", body), args)
    if cmd == "mode":
        key, value, what = "mode", args.mode, f"mode {args.mode}"
    else:
        key, value, what = "enabled", cmd == "enable", cmd
    route = "mode" if cmd == "mode" else "enable"
    if args.unit is not None:
        return _accepted(f"{what} of unit {args.unit}",
                         client.post(f"/api/v1/units/{args.unit}/{route}", {key: value}), args)
    units = args.units
    if args.all:
        n = int(client.get("/api/v1/farm")["units"])
        units = f"0-{n - 1}"
    label = "all units" if args.all else f"units {units}"
    return _accepted(f"{what} of {label}", client.post(f"/api/v1/units/{route}", {"units": units, key: value}),
                     args)


# ----------------------------------------------------------------- chaos scenarios
def _cmd_scenario(client, args) -> int:
    act = args.action
    if act != "start" and args.scenario:
        raise _UsageError(f"scenario {act} takes no NAME|FILE")
    if act == "list":
        r = client.get("/api/v1/scenarios")
        if args.json:
            _print_json(r)
            return 0
        rows = [[b["name"], _duration(b.get("duration_s")) if b.get("duration_s") else "open-ended",
                 (b.get("description") or "")[:70]] for b in r["builtin"]]
        print(_table(["scenario", "duration", "description"], rows, set()))
        st = r["status"]
        print(f"\nrunning: {st['scenario']['name']} ({st['active']} faults active)" if st.get("running")
              else "\nrunning: none")
        return 0
    if act == "start":
        if not args.scenario:
            raise _UsageError("scenario start needs a built-in NAME or a FILE")
        path = Path(args.scenario)
        if path.is_file():
            try:
                body = {"toml": path.read_text(encoding="utf-8")}
            except (OSError, UnicodeDecodeError) as exc:
                raise _UsageError(f"cannot read {path}: {exc}") from None
        else:
            body = {"name": args.scenario}
        r = client.post("/api/v1/scenarios/start", body)
        if args.json:
            _print_json(r)
        else:
            print(f"scenario {r['scenario']['name']!r} accepted, starts at tick {r['tick']}")
        return 0
    if act == "stop":
        r = client.post("/api/v1/scenarios/stop", {})
        if args.json:
            _print_json(r)
        else:
            print(f"stopped: {r['reverted']} fault(s) reverted at tick {r['tick']}")
        return 0
    if act == "active":
        r = client.get("/api/v1/scenarios/active")
        if args.json:
            _print_json(r)
            return 0
        rows = [[str(a.get("id")), a.get("fault", ""), str(a.get("units", "")),
                 _duration(a.get("start_s")), _duration(a.get("end_s")) if a.get("end_s") else "-"]
                for a in r["faults"]]
        print(_table(["id", "fault", "units", "since (sim)", "until (sim)"], rows, {0}) if rows
              else "no active faults")
        return 0
    r = client.get("/api/v1/events", {"since": args.since})
    if args.json:
        _print_json(r)
        return 0
    from bess_farm.interfaces.chaos import event_text
    for e in r["events"]:
        print(f"{e['seq']:>5}  {_duration(e.get('time_s'))}  {event_text(e)}")
    return 0
