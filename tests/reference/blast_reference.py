"""Reference capacity / resistance trajectories from NREL BLAST-Lite 1.1.1 for engine/aging.py.

BLAST-Lite pins numpy<2, so it lives in its own venv outside the repository::

    python3 -m venv /opt/blast-venv
    /opt/blast-venv/bin/pip install "blast-lite==1.1.1"     # unpinned gives 1.1.0, broken at run time

Synthetic cases (traces defined in ``tests/reference/traces.py``, numpy only; the
required ``daily_full_cycle_25c`` and ``storage_100soc_35c`` plus the extra
``three_cycles_60dod_var_temp`` that exercises the EFC chunk rule)::

    /opt/blast-venv/bin/python tests/reference/blast_reference.py
    # -> tests/data/blast_reference.json (about 15 s)

An engine trace (``.npz`` with keys ``t_s`` [s], ``soc`` [-], ``temp_c`` [C] and ``model``,
a name from ``engine/aging.py: AGING_MODEL_NAMES``)::

    /opt/blast-venv/bin/python tests/reference/blast_reference.py --npz run.npz -o run_blast.json [--years 10]

What it writes (JSON): for each model and case, ``q`` (relative capacity) and, where the
model has it, ``r`` (relative DC resistance) and the throughput ``efc`` at 365 and 3650
days, and a trajectory interpolated at daily resolution and kept every ``--every-days``
days (default 10).  A trace shorter than the horizon is repeated by BLAST-Lite; unless
``--no-close`` is given a closing sample (first SoC and temperature, one step after the
last sample) is appended first so the join between repeats is not lost.

BLAST-Lite settings used everywhere: ``is_constant_input=False`` (stressors and rates
are recomputed for every chunk), ``is_conserve_energy_throughput=False`` (the SoC given
is the physical SoC of the aged cell; throughput is rescaled by the present capacity,
the convention of the engine) and the default chunking (one day, or a SoC turning point
after more than one EFC).  Imports only numpy and blast.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
import time
from pathlib import Path

import numpy as np
from blast import models as blast_models

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import traces  # noqa: E402  (numpy-only sibling module shared with the tests)

DEFAULT_OUT = HERE.parent / "data" / "blast_reference.json"

# engine/aging.py model name -> BLAST-Lite class
BLAST_CLASSES = {
    "lfp_gr_250ah_prismatic": "Lfp_Gr_250AhPrismatic",
    "nmc111_gr_kokam_75ah": "Nmc111_Gr_Kokam75Ah_Battery",
}
CHECK_DAYS = (365, 3650)
SYNTHETIC_DT_S = 60.0
SYNTHETIC_YEARS = 10.0
SIG_DIGITS = 10


def _r(x: float) -> float:
    return float(f"{float(x):.{SIG_DIGITS}g}")


def simulate(model: str, t_s, soc, temp_c, years: float):
    """Run BLAST-Lite ``model`` over the series (repeated until ``years``) and return the cell."""
    if model not in BLAST_CLASSES:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(BLAST_CLASSES)}")
    cell = getattr(blast_models, BLAST_CLASSES[model])()
    cell.simulate_battery_life(
        {
            "Time_s": np.asarray(t_s, dtype=np.float64),
            "SOC": np.asarray(soc, dtype=np.float64),
            "Temperature_C": np.asarray(temp_c, dtype=np.float64),
        },
        threshold_time=years,
        is_constant_input=False,
        is_conserve_energy_throughput=False,
    )
    return cell


def summarize(cell, years: float, every_days: int) -> dict:
    """q, r, efc at CHECK_DAYS and a down-sampled daily trajectory of a simulated cell."""
    t_days = np.asarray(cell.stressors["t_days"], dtype=np.float64)
    series = {"q": np.asarray(cell.outputs["q"], dtype=np.float64)}
    if "r" in cell.outputs:
        series["r"] = np.asarray(cell.outputs["r"], dtype=np.float64)
    series["efc"] = np.asarray(cell.stressors["efc"], dtype=np.float64)
    out: dict = {}
    for day in CHECK_DAYS:
        if day <= t_days[-1] + 1e-9:
            for key, y in series.items():
                out[f"{key}_{day}"] = _r(np.interp(day, t_days, y))
    n_days = int(np.floor(min(years * 365.0, t_days[-1]) + 1e-9))
    days = np.arange(0, n_days + 1, every_days, dtype=np.float64)
    traj = {"t_days": [_r(d) for d in days]}
    for key, y in series.items():
        traj[key] = [_r(v) for v in np.interp(days, t_days, y)]
    out["trajectory"] = traj
    out["n_chunks"] = int(len(t_days) - 1)
    return out


def synthetic(every_days: int) -> dict:
    result = {
        "meta": {
            "generator": "tests/reference/blast_reference.py",
            "blast_lite_version": importlib.metadata.version("blast-lite"),
            "numpy_version": np.__version__,
            "traces": "tests/reference/traces.py: day_trace(case, dt_s, INPUT_DAYS[case]), incl. closing sample",
            "input_days": traces.INPUT_DAYS,
            "dt_s": SYNTHETIC_DT_S,
            "years": SYNTHETIC_YEARS,
            "settings": {
                "is_constant_input": False,
                "is_conserve_energy_throughput": False,
                "threshold_time": SYNTHETIC_YEARS,
            },
            "trajectory_every_days": every_days,
            "blast_classes": BLAST_CLASSES,
        },
        "models": {},
    }
    for model in BLAST_CLASSES:
        result["models"][model] = {}
        for case in traces.CASES:
            t0 = time.perf_counter()
            t_s, soc, temp_c = traces.day_trace(case, SYNTHETIC_DT_S, traces.INPUT_DAYS[case])
            cell = simulate(model, t_s, soc, temp_c, SYNTHETIC_YEARS)
            res = summarize(cell, SYNTHETIC_YEARS, every_days)
            result["models"][model][case] = res
            extra = f" r_3650={res['r_3650']:.6f}" if "r_3650" in res else ""
            print(
                f"{model:26s} {case:22s} q_365={res['q_365']:.6f} q_3650={res['q_3650']:.6f}{extra}"
                f"  ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
            )
    return result


def from_npz(path: Path, years: float, every_days: int, close: bool) -> dict:
    data = np.load(path, allow_pickle=False)
    for key in ("t_s", "soc", "temp_c", "model"):
        if key not in data:
            raise KeyError(f"{path}: missing key {key!r} (need t_s, soc, temp_c, model)")
    model = str(data["model"].item() if data["model"].ndim == 0 else data["model"][0])
    t_s = np.asarray(data["t_s"], dtype=np.float64)
    soc = np.asarray(data["soc"], dtype=np.float64)
    temp_c = np.asarray(data["temp_c"], dtype=np.float64)
    if not (t_s.shape == soc.shape == temp_c.shape) or t_s.ndim != 1 or t_s.size < 2:
        raise ValueError("t_s, soc, temp_c must be 1-D arrays of equal length >= 2")
    t_s = t_s - t_s[0]
    closed = False
    if close and t_s[-1] < years * 365.0 * 86400.0:
        step = float(np.median(np.diff(t_s)))
        t_s = np.append(t_s, t_s[-1] + step)
        soc = np.append(soc, soc[0])
        temp_c = np.append(temp_c, temp_c[0])
        closed = True
    cell = simulate(model, t_s, soc, temp_c, years)
    res = summarize(cell, years, every_days)
    return {
        "meta": {
            "generator": "tests/reference/blast_reference.py",
            "blast_lite_version": importlib.metadata.version("blast-lite"),
            "source": str(path),
            "model": model,
            "blast_class": BLAST_CLASSES[model],
            "trace_seconds": float(t_s[-1]),
            "closing_sample_appended": closed,
            "years": years,
            "settings": {"is_constant_input": False, "is_conserve_energy_throughput": False},
            "trajectory_every_days": every_days,
        },
        "result": res,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--npz", type=Path, help="engine trace (t_s, soc, temp_c, model); default: synthetic cases")
    ap.add_argument("-o", "--out", type=Path, help=f"output JSON (default for synthetic: {DEFAULT_OUT})")
    ap.add_argument("--years", type=float, default=SYNTHETIC_YEARS, help="horizon for --npz [years]")
    ap.add_argument("--every-days", type=int, default=10, help="trajectory spacing [days]")
    ap.add_argument("--no-close", action="store_true", help="do not append a closing sample to --npz traces")
    args = ap.parse_args(argv)
    if args.npz is not None:
        result = from_npz(args.npz, args.years, args.every_days, not args.no_close)
        out = args.out or args.npz.with_suffix(".blast.json")
    else:
        result = synthetic(args.every_days)
        out = args.out or DEFAULT_OUT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
