"""``bess simulate``: a batch run, faster than real time, streamed to results files.

Outputs in ``--out`` (default ``results/``):

``farm.csv``              farm aggregates every output interval
``units_timeseries.csv``  every quantity of the ``--units`` selected, every output interval
``units.csv``             each unit's end-of-run summary
``summary.png``           with ``--plot``: farm power and SoC, temperature band, SoH over time
``run.json``              what was run, how long it took, and whether it completed

With ``--format parquet`` (needs the ``parquet`` extra) the tables are Parquet files instead.
Rows are written as they are produced, so memory stays bounded whatever the duration. A run that
stops early (Ctrl-C, an error) leaves its tables under ``*.incomplete`` names and says so in
``run.json``; a completed run renames them into place at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

PROFILES = ("daily-arbitrage", "constant", "frequency-regulation", "peak-shaving")
DEFAULT_START = "2025-01-01T00:00:00+00:00"

FARM_COLUMNS = ("time_s", "timestamp", "p_ac_w", "p_dc_w", "p_hvac_w", "p_request_w", "soc_mean",
                "soc_min", "soc_max", "soh_mean", "temp_mean_c", "temp_min_c", "temp_max_c",
                "e_stored_wh", "e_available_wh", "e_capacity_wh", "e_ac_charged_wh",
                "e_ac_discharged_wh", "e_loss_wh", "e_aux_wh", "efc_mean", "units_with_alarms",
                "round_trip_efficiency")
UNIT_SERIES = ("soc", "voltage_v", "current_a", "p_ac_w", "p_dc_w", "p_hvac_w", "temp_c", "soh",
               "efc", "e_ac_charged_wh", "e_ac_discharged_wh", "cap_ah", "r0_ohm")
SUMMARY_COLUMNS = ("unit", "vendor", "model", "soc", "soh", "efc", "e_ac_charged_wh",
                   "e_ac_discharged_wh", "throughput_wh", "temp_c", "t_max_c", "trips", "state",
                   "alarms")


class SimulateError(Exception):
    """Bad input to ``bess simulate``: reported as one line, exit code 2, nothing written."""


def add_arguments(s: argparse.ArgumentParser, parse_duration, positive_float, finite_float) -> None:
    s.add_argument("--config", type=Path, help="farm config (TOML); default: the embedded farm")
    s.add_argument("--duration", type=parse_duration, default=parse_duration("24h"),
                   help="simulated time, e.g. 90s, 24h, 10y (default 24h)")
    s.add_argument("--dt", type=positive_float, default=1.0, help="step length [s] (default 1)")
    s.add_argument("--start", default=DEFAULT_START,
                   help=f"start time, ISO 8601 (default {DEFAULT_START}); sets the time of day of "
                        "the ambient cycle and of the daily profiles")
    s.add_argument("--output-interval", type=parse_duration, default=None,
                   help="row interval of the time series (default: 60 s, or longer for long runs so "
                        "that a run writes at most ~10,000 rows)")
    s.add_argument("--profile", choices=PROFILES, default="daily-arbitrage",
                   help="farm dispatch (default daily-arbitrage: charge 01-05 h, discharge 17-21 h)")
    s.add_argument("--power", type=finite_float, default=None,
                   help="farm power for the profile [W], positive = discharge (default: 40%% of the "
                        "farm's PCS rating)")
    s.add_argument("--current", type=finite_float, default=None,
                   help="instead of a farm profile: every unit at this DC current [A], positive = "
                        "discharge")
    s.add_argument("--setpoints", type=Path, default=None,
                   help="CSV of setpoints over time, interpolated: a time_s column and either "
                        "farm_w, or per-unit columns unit_<id>_w (AC power) / unit_<id>_a (DC current)")
    s.add_argument("--ambient", type=Path, default=None,
                   help="CSV with time_s and ambient_c columns (overrides the config's ambient)")
    s.add_argument("--seed", type=int, default=None, help="override the config's seed")
    s.add_argument("--scenario", default=None, metavar="NAME|FILE",
                   help="a chaos scenario on the run's timeline (built-in name or TOML file; "
                        "docs/chaos.md); its events go to events.csv")
    s.add_argument("--units", default=None,
                   help="units to record as time series, e.g. 0,5,10-12 (default: none)")
    s.add_argument("--format", choices=("csv", "parquet"), default="csv")
    s.add_argument("--plot", action="store_true", help="write summary.png (needs matplotlib)")
    s.add_argument("--out", type=Path, default=Path("results"), help="output folder (default results/)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")


# ----------------------------------------------------------------------------------- inputs
def parse_unit_list(text: str, n_units: int) -> np.ndarray:
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise SimulateError(f"--units: {part!r} is not a unit id or a range like 3-7") from None
    bad = [i for i in ids if not 0 <= i < n_units]
    if bad:
        raise SimulateError(f"--units: unit {bad[0]} does not exist (the farm has units 0..{n_units - 1})")
    if not ids:
        raise SimulateError("--units: no unit given")
    return np.array(sorted(set(ids)), dtype=np.int64)


def read_csv_columns(path: Path, what: str) -> dict[str, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise SimulateError(f"{what} {path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SimulateError(f"{what} {path}: not a text CSV file") from None
    if len(rows) < 2:
        raise SimulateError(f"{what} {path}: needs a header row and at least one data row")
    header = [h.strip() for h in rows[0]]
    if "time_s" not in header:
        raise SimulateError(f"{what} {path}: no time_s column (columns: {', '.join(header)})")
    cols: dict[str, list[float]] = {h: [] for h in header}
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise SimulateError(f"{what} {path}, line {lineno}: {len(row)} fields, the header has {len(header)}")
        for h, c in zip(header, row):
            try:
                v = float(c)
            except ValueError:
                raise SimulateError(f"{what} {path}, line {lineno}: {h} = {c!r} is not a number") from None
            if not math.isfinite(v):
                raise SimulateError(f"{what} {path}, line {lineno}: {h} = {c!r} is not finite")
            cols[h].append(v)
    out = {h: np.array(v) for h, v in cols.items()}
    t = out["time_s"]
    if np.any(np.diff(t) <= 0):
        k = int(np.flatnonzero(np.diff(t) <= 0)[0])
        raise SimulateError(f"{what} {path}: time_s must increase strictly (data row {k + 2})")
    return out


class UnitSetpoints:
    """Per-unit setpoint columns from a CSV, applied at chunk boundaries (linear in time)."""

    def __init__(self, cols: dict[str, np.ndarray], n_units: int, path: Path):
        self.t = cols["time_s"]
        self.power: dict[int, np.ndarray] = {}
        self.current: dict[int, np.ndarray] = {}
        for name, values in cols.items():
            if name == "time_s":
                continue
            parts = name.split("_")
            if len(parts) != 3 or parts[0] != "unit" or parts[2] not in ("w", "a") or not parts[1].isdigit():
                raise SimulateError(f"setpoints {path}: unknown column {name!r}; use farm_w, or "
                                    "unit_<id>_w / unit_<id>_a")
            uid = int(parts[1])
            if uid >= n_units:
                raise SimulateError(f"setpoints {path}: column {name}: unit {uid} does not exist "
                                    f"(the farm has units 0..{n_units - 1})")
            (self.power if parts[2] == "w" else self.current)[uid] = values
        both = set(self.power) & set(self.current)
        if both:
            raise SimulateError(f"setpoints {path}: unit {min(both)} has both a power and a current column")
        steps = np.diff(self.t)
        self.resolution_s = float(steps.min()) if steps.size else math.inf

    def apply(self, farm, t_s: float) -> None:
        if self.power:
            ids = np.array(sorted(self.power))
            farm.set_unit_power(ids, [np.interp(t_s, self.t, self.power[i]) for i in ids])
        if self.current:
            ids = np.array(sorted(self.current))
            farm.set_unit_current(ids, [np.interp(t_s, self.t, self.current[i]) for i in ids])


def parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise SimulateError(f"--start: {text!r} is not an ISO 8601 time such as 2025-06-01T00:00:00+00:00") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return start


# ----------------------------------------------------------------------------------- outputs
class TableWriter:
    """Rows to CSV or Parquet, streamed, under an ``.incomplete`` name until :meth:`finish`."""

    def __init__(self, path: Path, columns, fmt: str):
        self.final = path.with_suffix(".parquet" if fmt == "parquet" else ".csv")
        self.path = self.final.with_name(self.final.name + ".incomplete")
        self.columns = list(columns)
        self.fmt = fmt
        self.rows: list[list] = []
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq
            self._pa = pa
            self.schema = None
            self.writer = None
            self._pq = pq
        else:
            self.fh = open(self.path, "w", newline="")
            self.csv = csv.writer(self.fh)
            self.csv.writerow(self.columns)

    def write(self, row) -> None:
        if self.fmt == "csv":
            self.csv.writerow([_cell(v) for v in row])
        else:
            self.rows.append(list(row))
            if len(self.rows) >= 8192:
                self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        pa = self._pa
        table = pa.table({c: [r[j] for r in self.rows] for j, c in enumerate(self.columns)})
        if self.writer is None:
            self.writer = self._pq.ParquetWriter(self.path, table.schema)
        self.writer.write_table(table)
        self.rows = []

    def close(self) -> None:
        if self.fmt == "csv":
            self.fh.close()
        else:
            self._flush()
            if self.writer is not None:
                self.writer.close()
            else:
                self._pq.write_table(self._pa.table({c: [] for c in self.columns}), self.path)

    def finish(self) -> None:
        os.replace(self.path, self.final)


def _cell(v):
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.9g}"
    return v


class Progress:
    """A one-line progress bar on a terminal; silent when stderr is not a TTY."""

    def __init__(self, total_s: float, n_units: int, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total = total_s
        self.n_units = n_units
        self.enabled = enabled and self.stream.isatty()
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, sim_s: float, steps: int, force: bool = False) -> None:
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
        self.stream.write(f"\r[{bar:30s}] {frac * 100:5.1f}%  sim {fmt_s(sim_s)}  "
                          f"x{speed:,.0f} real time  {steps * self.n_units / wall / 1e6:,.1f} M unit-steps/s"
                          f"  ETA {fmt_s(eta)}   ")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "--"
    if s < 120:
        return f"{s:.0f}s"
    if s < 7200:
        return f"{s / 60:.0f}m"
    if s < 2 * 86400:
        return f"{s / 3600:.1f}h"
    if s < 2 * 365 * 86400:
        return f"{s / 86400:.1f}d"
    return f"{s / (365 * 86400):.1f}y"


# ----------------------------------------------------------------------------------- the run
def run(args) -> int:
    from bess_farm.engine.config import ConfigError, parse_config
    from bess_farm.engine.farm import Farm
    from bess_farm.engine.layout import K_P_RATED, STATE_NAMES
    from bess_farm.engine.profiles import Profile, daily_arbitrage, frequency_regulation, peak_shaving

    start = parse_start(args.start)
    start_hour = start.hour + start.minute / 60.0 + start.second / 3600.0
    if args.dt > args.duration:
        raise SimulateError(f"--dt ({args.dt:g} s) is longer than --duration ({args.duration:g} s)")
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SimulateError("--format parquet needs pyarrow: pip install 'bess-farm[parquet]'") from None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SimulateError("--plot needs matplotlib: pip install 'bess-farm[plot]'") from None
    if args.current is not None and (args.setpoints is not None or args.power is not None):
        raise SimulateError("--current drives every unit by current; it goes with neither --power nor --setpoints")
    ambient_cols = read_csv_columns(args.ambient, "ambient") if args.ambient else None
    if ambient_cols is not None and "ambient_c" not in ambient_cols:
        raise SimulateError(f"ambient {args.ambient}: no ambient_c column")
    set_cols = read_csv_columns(args.setpoints, "setpoints") if args.setpoints else None

    try:
        cfg = parse_config(args.config)
    except ConfigError as exc:
        raise SimulateError(str(exc)) from None
    cfg.start_hour = start_hour
    if args.seed is not None:
        if args.seed < 0:
            raise SimulateError("--seed must be zero or positive")
        cfg.seed = args.seed
    if ambient_cols is not None:
        cfg.ambient = {"kind": "series", "times_s": ambient_cols["time_s"], "values_c": ambient_cols["ambient_c"]}
    farm = Farm(cfg)
    if not args.quiet and sys.stderr.isatty():
        from bess_farm.engine._cache_guard import kernels_cached
        if not kernels_cached():
            print("bess: compiling the engine's kernels once (about half a minute); later runs start "
                  "at once", file=sys.stderr)

    chaos = None
    if args.scenario:
        from .chaos import ChaosEngine, load_scenario
        from .runtime import setup_logging
        setup_logging("plain", "warning" if not args.quiet else "error")   # faults: events.csv
        try:
            chaos = ChaosEngine(farm)
            chaos.start(load_scenario(args.scenario), t0=farm.time_s)
        except ValueError as exc:        # ScenarioError: file, line, reason; nothing applied
            raise SimulateError(str(exc)) from None
    unit_ids = parse_unit_list(args.units, farm.n_units) if args.units else None
    unit_setpoints = None
    rated = float(farm.kpar[farm.kind, K_P_RATED].sum())
    power = args.power if args.power is not None else 0.4 * rated
    if set_cols is not None and "farm_w" in set_cols:
        others = [c for c in set_cols if c not in ("time_s", "farm_w")]
        if others:
            raise SimulateError(f"setpoints {args.setpoints}: farm_w goes alone; drop {others[0]}")
        profile = Profile.series(set_cols["time_s"], set_cols["farm_w"], name="csv")
    elif set_cols is not None:
        unit_setpoints = UnitSetpoints(set_cols, farm.n_units, args.setpoints)
        profile = Profile.constant(0.0)
    elif args.current is not None:
        farm.set_unit_current(slice(None), args.current)
        profile = Profile.constant(0.0)
    elif args.profile == "constant":
        profile = Profile.constant(power)
    elif args.profile == "frequency-regulation":
        profile = frequency_regulation(power, seed=cfg.seed)
    elif args.profile == "peak-shaving":
        profile = peak_shaving(power, start_hour=start_hour)
    else:
        profile = daily_arbitrage(power, start_hour=start_hour)
    farm.set_farm_profile(profile)

    dt = args.dt
    total_steps = int(math.ceil(args.duration / dt - 1e-9))
    interval = args.output_interval or max(60.0, dt, args.duration / 10000.0)
    per_row = max(1, int(round(interval / dt)))
    if unit_setpoints is not None:
        per_row = max(1, min(per_row, int(unit_setpoints.resolution_s // dt) or 1))

    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".bess-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SimulateError(f"output folder {out} is not writable: {exc.strerror}") from None

    farm_table = TableWriter(out / "farm", FARM_COLUMNS, args.format)
    unit_table = (TableWriter(out / "units_timeseries", ("time_s", "timestamp", "unit") + UNIT_SERIES
                              + ("state", "alarms"), args.format) if unit_ids is not None else None)
    run_info = {"command": "bess simulate", "config": str(args.config) if args.config else "embedded default",
                "farm": cfg.name, "units": farm.n_units, "seed": cfg.seed, "start": start.isoformat(),
                "duration_s": args.duration, "dt_s": dt, "output_interval_s": per_row * dt,
                "profile": "current" if args.current is not None else (
                    "csv" if set_cols is not None else args.profile),
                "completed": False}
    plot_rows: list[tuple] = []
    plot_stride = max(1, (total_steps // per_row) // 4000)
    progress = Progress(args.duration, farm.n_units, not args.quiet)
    wall0 = time.perf_counter()
    done = 0
    row_no = 0
    status = "completed"
    try:
        while done < total_steps:
            n = min(per_row, total_steps - done)
            if unit_setpoints is not None:
                unit_setpoints.apply(farm, farm.time_s)
            if chaos is None:
                agg = farm.step(dt, n)
            else:        # faults apply at the first step that starts at or after their time
                left = n
                while left:
                    chaos.advance(farm.time_s)
                    m = chaos.steps_until_due(dt, left)
                    agg = farm.step(dt, m)
                    left -= m
            done += n
            stamp = (start + timedelta(seconds=farm.time_s)).isoformat()
            farm_table.write([farm.time_s, stamp] + [
                getattr(agg, c) if c != "round_trip_efficiency" else agg.round_trip_efficiency
                for c in FARM_COLUMNS[2:]])
            if unit_table is not None:
                snap = farm.snapshot()
                for u in unit_ids:
                    unit_table.write([farm.time_s, stamp, int(u)] + [float(snap[q][u]) for q in UNIT_SERIES]
                                     + [STATE_NAMES[snap["state"][u]], int(snap["alarms"][u])])
            if args.plot and row_no % plot_stride == 0:
                plot_rows.append((farm.time_s, agg.p_ac_w, agg.soc_mean, agg.temp_min_c, agg.temp_mean_c,
                                  agg.temp_max_c, agg.soh_mean))
            row_no += 1
            progress.update(farm.time_s, done)
    except KeyboardInterrupt:
        status = "interrupted"
    finally:
        progress.update(farm.time_s, done, force=True)
        progress.close()
        farm_table.close()
        if unit_table is not None:
            unit_table.close()
    wall = time.perf_counter() - wall0
    if chaos is not None:
        import csv
        with open(out / "events.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["seq", "time_s", "tick", "kind", "fault", "units", "text"])
            from .chaos import event_text
            for e in chaos.events:
                w.writerow([e["seq"], e.get("time_s"), e.get("tick"), e["kind"], e.get("fault", ""),
                            e.get("units", ""), event_text(e)])
        run_info["scenario"] = chaos.scenario.name if chaos.scenario else args.scenario
    summary = TableWriter(out / "units", SUMMARY_COLUMNS, args.format)
    snap = farm.snapshot()
    for i in range(farm.n_units):
        summary.write([i, str(farm.vendor[i]), str(farm.model[i]), float(snap["soc"][i]),
                       float(snap["soh"][i]), float(snap["efc"][i]), float(snap["e_ac_charged_wh"][i]),
                       float(snap["e_ac_discharged_wh"][i]),
                       float(snap["e_dc_charged_wh"][i] + snap["e_dc_discharged_wh"][i]),
                       float(snap["temp_c"][i]), float(snap["t_max_c"][i]), int(snap["trips"][i]),
                       STATE_NAMES[snap["state"][i]], int(snap["alarms"][i])])
    summary.close()
    tables = [farm_table, summary] + ([unit_table] if unit_table is not None else [])
    if status == "completed":
        for t in tables:
            t.finish()
    if args.plot and plot_rows:
        write_plot(out / "summary.png", np.array(plot_rows), start, cfg.name)
    run_info.update(completed=status == "completed", status=status, simulated_s=farm.time_s,
                    steps=done, wall_s=round(wall, 3),
                    unit_steps_per_s=round(done * farm.n_units / wall) if wall > 0 else None,
                    files=[(t.final if status == "completed" else t.path).name for t in tables]
                    + (["summary.png"] if args.plot and plot_rows else []))
    (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
    agg = farm.aggregates()
    if status != "completed":
        print(f"bess: interrupted at {fmt_s(farm.time_s)} of {fmt_s(args.duration)}; what was written "
              f"is kept under *.incomplete names in {out}/", file=sys.stderr)
        return 130
    print(f"simulated {farm.n_units} units for {fmt_s(farm.time_s)} ({done} steps of {dt:g} s) in "
          f"{wall:.1f} s: mean SoC {agg.soc_mean:.3f}, mean SoH {agg.soh_mean:.4f}, max temperature "
          f"{agg.temp_max_c:.1f} C; results in {out}/")
    return 0


def write_plot(path: Path, rows: np.ndarray, start: datetime, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = rows[:, 0]
    span = t[-1] - t[0] if t.size > 1 else 1.0
    scale, unit = ((86400.0 * 365, "years") if span > 3 * 365 * 86400 else
                   (86400.0, "days") if span > 3 * 86400 else (3600.0, "hours"))
    x = t / scale
    fig, axes = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    ax = axes[0]
    ax.plot(x, rows[:, 1] / 1e6, color="tab:blue", lw=0.8)
    ax.set_ylabel("farm AC power [MW]\n(+ discharge)")
    ax2 = ax.twinx()
    ax2.plot(x, rows[:, 2] * 100, color="tab:green", lw=0.8)
    ax2.set_ylabel("mean SoC [%]", color="tab:green")
    ax2.set_ylim(0, 100)
    ax = axes[1]
    ax.fill_between(x, rows[:, 3], rows[:, 5], color="tab:red", alpha=0.25, label="min-max")
    ax.plot(x, rows[:, 4], color="tab:red", lw=0.8, label="mean")
    ax.set_ylabel("unit temperature [C]")
    ax.legend(loc="upper right")
    ax = axes[2]
    ax.plot(x, rows[:, 6] * 100, color="tab:purple", lw=1.0)
    ax.set_ylabel("mean SoH [%]")
    ax.set_xlabel(f"{unit} since {start.isoformat()}")
    fig.suptitle(f"{name}: bess simulate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
