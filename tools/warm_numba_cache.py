"""Compile bess-farm's numba kernels into ``$NUMBA_CACHE_DIR`` by running the real commands.

The Dockerfile runs this at image build time so that a pod starts without compiling (the tick
kernel alone takes about half a minute cold). It drives the installed ``bess`` command, not
internal APIs, so whatever ``bess run`` and ``bess simulate`` compile lands in the cache:

1. ``bess run`` on a small farm, once with one engine thread (the serial tick, used below 250,000
   units) and once with two (the parallel tick); while each runs, every register of a unit and of
   the plant device is read over Modbus (the register encoders are jitted per model).
2. ``bess simulate`` for one simulated hour (the batch path).

Kernels compiled here are keyed to ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` (the image sets a
portable CPU, see docs/deploy.md); a node with another setting recompiles once into its own cache.

Usage: python tools/warm_numba_cache.py   (exit 0 when every step worked; prints what it cached)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FARM = """\
[farm]
name = "warm-up"
units_per_row = 10
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 18
[[units]]
preset = "nmc-2.6mwh-20ft"
count = 2
[runtime]
engine_threads = {threads}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_all_models(port: int, device_id: int) -> int:
    """Read a SunSpec device from 40000 to its end marker, 100 registers at a time."""
    from bess_farm.interfaces.probe import ProbeError, read_holding
    address, total = 40000, 0
    while address < 40000 + 4000:
        try:
            regs = read_holding("127.0.0.1", port, device_id, address, 100, timeout=10)
        except ProbeError:           # past the end of the map
            break
        total += len(regs)
        address += 100
    return total


def warm_run(threads: int, workdir: Path) -> None:
    config = workdir / f"warm-{threads}.toml"
    config.write_text(FARM.format(threads=threads))
    port = free_port()
    env = dict(os.environ, NUMBA_NUM_THREADS=str(max(threads, 1)), OTEL_SDK_DISABLED="true")
    cmd = ["bess", "run", "--config", str(config), "--no-api", "--no-checkpoints", "--modbus-host",
           "127.0.0.1", "--modbus-port", str(port), "--duration", "600s", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        probe = ["bess", "probe", "--modbus", f"127.0.0.1:{port}", "--wait", "300"]
        if subprocess.run(probe, env=env, capture_output=True).returncode != 0:
            # `bess probe` may not be wired into the CLI yet: the module runs on its own too
            probe[:2] = [sys.executable, "-m", "bess_farm.interfaces.probe"]
            subprocess.run(probe, env=env, check=True)
        for device in (1, 19, 255):                      # an LFP unit, an NMC unit, the plant
            print(f"warm-up: threads={threads} device {device}: {read_all_models(port, device)} registers",
                  flush=True)
        time.sleep(2.0)                                   # a few ticks past the reads
    finally:
        proc.terminate()
        if proc.wait(60) not in (0, -15):
            raise SystemExit(f"warm-up: `{' '.join(cmd)}` exited with {proc.returncode}")


def main() -> int:
    cache = os.environ.get("NUMBA_CACHE_DIR")
    if not cache:
        print("warm-up: set NUMBA_CACHE_DIR to the directory to fill", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bess-warm-"))
    try:
        t0 = time.monotonic()
        warm_run(1, workdir)
        warm_run(2, workdir)
        subprocess.run(["bess", "simulate", "--duration", "1h", "--dt", "60", "--quiet",
                        "--out", str(workdir / "simulate")], check=True,
                       env=dict(os.environ, OTEL_SDK_DISABLED="true"))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    files = list(Path(cache).rglob("*.nbi"))
    print(f"warm-up: {len(files)} cached functions in {cache} ({time.monotonic() - t0:.0f} s)")
    return 0 if files else 1


if __name__ == "__main__":
    sys.exit(main())
