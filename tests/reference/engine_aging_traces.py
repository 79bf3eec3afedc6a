"""Record the engine's own SoC/temperature traces of the aging validation runs and ask
BLAST-Lite what capacity they give; writes tests/data/blast_engine_reference.json.

Run from the repository root in the main environment (the engine) with BLAST-Lite in its own
venv (see tests/reference/blast_reference.py)::

    python tests/reference/engine_aging_traces.py [--blast-python /opt/blast-venv/bin/python]

Takes about 10 minutes: every one of the 5.3 million 60-s steps of each run is recorded.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import aging_scenarios as sc  # noqa: E402

YEARS = 10


def record(model: str, case: str, days: int) -> dict:
    n = int(round(days * sc.DAY_S / sc.DT_S))
    soc = np.empty(n + 1)
    temp = np.empty(n + 1)
    t = np.arange(n + 1) * sc.DT_S
    k = [0]
    first = sc.build(model, case)
    soc[0] = first.dyn[first._src, 0, 0]
    temp[0] = first.dyn[first._src, 3, 0]

    def on_step(farm):
        k[0] += 1
        soc[k[0]] = farm.dyn[farm._src, 0, 0]
        temp[k[0]] = farm.dyn[farm._src, 3, 0]

    sc.run(model, case, days, on_step=on_step)
    return {"t_s": t, "soc": soc, "temp_c": temp, "model": model}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blast-python", default="/opt/blast-venv/bin/python")
    ap.add_argument("--out", type=Path, default=HERE.parent / "data" / "blast_engine_reference.json")
    args = ap.parse_args(argv)
    result = {"generator": {"command": "python tests/reference/engine_aging_traces.py",
                            "dt_s": sc.DT_S, "years": YEARS}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in sc.PRESETS:
            for case in sc.CASES:
                days = 365 * YEARS
                trace = record(model, case, days)
                npz = Path(tmp) / f"{model}-{case}.npz"
                np.savez(npz, **trace)
                out = Path(tmp) / f"{model}-{case}.json"
                subprocess.run([args.blast_python, str(HERE / "blast_reference.py"), "--npz", str(npz),
                                "-o", str(out), "--years", str(YEARS), "--no-close",
                                "--every-days", "365"], check=True)
                result["cases"][f"{model}/{case}"] = json.loads(out.read_text())
                print(model, case, "done", flush=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
