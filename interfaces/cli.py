"""The ``bess`` command line.

``bess simulate``      batch run, faster than real time, with a progress bar and results files
``bess presets``       the vendor presets and every parameter a config may set
``bess check-config``  validate a farm config without running it

The engine is imported lazily so that ``bess --help`` answers at once.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import sys
import time
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


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return v


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} must be finite")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bess", description="Battery energy storage farm simulator.")
    p.add_argument("--version", action="version", version=f"bess-farm {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("simulate", help="run a farm faster than real time and write results",
                       description="Run a farm in batch, faster than real time. Writes farm.csv "
                                   "(farm aggregates at every output interval) and units.csv "
                                   "(per-unit end-of-run summary) into --out.")
    s.add_argument("--config", type=Path, help="farm config (TOML); default: the embedded farm")
    s.add_argument("--duration", type=parse_duration, default=parse_duration("24h"),
                   help="simulated time, e.g. 90s, 24h, 10y (default 24h)")
    s.add_argument("--dt", type=_positive_float, default=1.0, help="step length [s] (default 1)")
    s.add_argument("--output-interval", type=parse_duration, default=None,
                   help="farm.csv row interval (default: 60 s, or dt if longer)")
    s.add_argument("--profile", choices=("constant", "daily-arbitrage"), default="daily-arbitrage",
                   help="farm dispatch: a constant --power, or charge 01-05 h and discharge "
                        "17-21 h at --power (default)")
    s.add_argument("--power", type=_finite_float, default=None,
                   help="farm power [W], positive = discharge (default: 40%% of the PCS rating)")
    s.add_argument("--out", type=Path, default=Path("results"), help="output folder (default results/)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")

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


def _load_farm(path: Path | None):
    from bess_farm.engine import ConfigError, Farm
    try:
        return Farm.from_config(path), None
    except ConfigError as exc:
        return None, str(exc)


def _check_config(args) -> int:
    farm, err = _load_farm(args.config)
    if err:
        return _fail(err)
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


class Progress:
    """A one-line progress bar on a terminal; silent when stderr is not a TTY."""

    def __init__(self, total_s: float, n_units: int, enabled: bool):
        self.total = total_s
        self.n_units = n_units
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, sim_s: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < 0.2:
            return
        self.last = now
        wall = max(now - self.start, 1e-9)
        frac = min(1.0, sim_s / self.total)
        speed = sim_s / wall
        eta = (self.total - sim_s) / speed if speed > 0 else math.inf
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r[{bar:30s}] {frac * 100:5.1f}%  sim {_fmt_s(sim_s)}  "
                         f"x{speed:,.0f} real time  ETA {_fmt_s(eta)}   ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "--"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


FARM_COLUMNS = ("time_s", "p_ac_w", "p_dc_w", "p_hvac_w", "p_request_w", "soc_mean", "soc_min",
                "soc_max", "soh_mean", "temp_mean_c", "temp_max_c", "e_stored_wh",
                "e_available_wh", "e_ac_charged_wh", "e_ac_discharged_wh", "e_loss_wh", "e_aux_wh",
                "efc_mean", "units_with_alarms")


def _simulate(args) -> int:
    if not args.quiet and sys.stderr.isatty():
        print("bess: loading the engine ...", file=sys.stderr)
    farm, err = _load_farm(args.config)
    if err:
        return _fail(err)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bess-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        return _fail(f"output folder {out} is not writable: {exc.strerror}")
    dt = args.dt
    if dt > args.duration:
        return _fail(f"--dt ({dt} s) is longer than --duration ({args.duration} s)")
    interval = args.output_interval or max(60.0, dt)
    per_row = max(1, int(round(interval / dt)))
    total_steps = int(math.ceil(args.duration / dt - 1e-9))
    rated = float(sum(farm.kpar[farm.kind, 7])) if farm.n_units else 0.0   # K_P_RATED
    power = args.power if args.power is not None else 0.4 * rated
    start_hour = farm.config.start_hour

    def setpoint(t_s: float) -> float:
        if args.profile == "constant":
            return power
        hour = (start_hour + t_s / 3600.0) % 24.0
        if 1.0 <= hour < 5.0:
            return -power
        if 17.0 <= hour < 21.0:
            return power
        return 0.0

    farm_csv = out / "farm.csv"
    partial = out / "farm.csv.incomplete"
    progress = Progress(args.duration, farm.n_units, not args.quiet)
    done = 0
    interrupted = False
    try:
        with open(partial, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(FARM_COLUMNS)
            while done < total_steps:
                n = min(per_row, total_steps - done)
                # the profile changes on the hour: never step across a change
                t_now = farm.time_s
                to_hour = 3600.0 - (t_now % 3600.0)
                n = max(1, min(n, int(round(to_hour / dt)) or n))
                farm.set_farm_power(setpoint(t_now))
                agg = farm.step(dt, n)
                done += n
                w.writerow([_num(getattr(agg, c)) if c != "time_s" else f"{agg.time_s:.3f}"
                            for c in FARM_COLUMNS])
                progress.update(farm.time_s)
    except KeyboardInterrupt:
        interrupted = True
    progress.update(farm.time_s, force=True)
    progress.close()
    if interrupted:
        print(f"bess: interrupted at {farm.time_s:.0f} s; partial results kept in {partial}",
              file=sys.stderr)
    else:
        os.replace(partial, farm_csv)
    _write_unit_summary(farm, out / ("units.csv" if not interrupted else "units.csv.incomplete"))
    agg = farm.aggregates()
    print(f"simulated {farm.n_units} units for {_fmt_s(farm.time_s)} "
          f"({farm.tick} steps of {dt:g} s): mean SoC {agg.soc_mean:.3f}, mean SoH "
          f"{agg.soh_mean:.4f}, max temperature {agg.temp_max_c:.1f} C; results in {out}/")
    return 130 if interrupted else 0


def _num(v) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _write_unit_summary(farm, path: Path) -> None:
    from bess_farm.engine.layout import STATE_NAMES
    snap = farm.snapshot()
    cols = ("unit", "vendor", "model", "soc", "soh", "efc", "e_ac_charged_wh", "e_ac_discharged_wh",
            "temp_c", "t_max_c", "trips", "state", "alarms")
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for i in range(farm.n_units):
            w.writerow([i, farm.vendor[i], farm.model[i], f"{snap['soc'][i]:.6f}",
                        f"{snap['soh'][i]:.6f}", f"{snap['efc'][i]:.4f}",
                        f"{snap['e_ac_charged_wh'][i]:.1f}", f"{snap['e_ac_discharged_wh'][i]:.1f}",
                        f"{snap['temp_c'][i]:.3f}", f"{snap['t_max_c'][i]:.3f}",
                        int(snap['trips'][i]), STATE_NAMES[snap['state'][i]], int(snap['alarms'][i])])
