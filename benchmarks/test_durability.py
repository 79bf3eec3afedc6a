"""Checkpoint cost and graceful shutdown time.

    python -m pytest benchmarks/test_durability.py --benchmark-only

* save and load of the whole engine state at 100,000 and 1,000,000 units (file in the page cache);
* `bess run` with 100,000 units: SIGTERM to exit (stop listening, finish the tick, checkpoint,
  exit). Target: within 10 s (the Helm chart's terminationGracePeriodSeconds follows it).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from bess_farm.engine import Farm
from bess_farm.engine.checkpoint import load_checkpoint, save_checkpoint
from bess_farm.engine.config import parse_config

from .conftest import record


def _farm(n: int) -> Farm:
    return Farm(parse_config({"units": [{"preset": "lfp-3.7mwh-20ft", "count": n,
                                         "spread": {"capacity": 0.01}}]}))


@pytest.mark.parametrize("units", [100_000, 1_000_000])
def test_checkpoint_save_and_load(benchmark, tmp_path, units):
    f = _farm(units)
    f.set_farm_power(0.3 * 1.86e6 * units)
    f.step(0.1, 3)
    path = tmp_path / "c.bess"
    save_checkpoint(f, path)                        # warm the page cache and the code
    t = time.perf_counter()
    save_checkpoint(f, path)
    save_s = time.perf_counter() - t
    g = _farm(units)
    load_s = benchmark.pedantic(load_checkpoint, args=(g, path), rounds=3, iterations=1)
    load_s = benchmark.stats.stats.min
    record(benchmark=f"checkpoint {units:,} units", save_s=save_s, load_s=load_s,
           mb=path.stat().st_size / 1e6)


def test_sigterm_to_exit_100k(benchmark, tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text('[farm]\nname = "shutdown"\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 100000\n'
                   '[modbus]\nmax_ports = 512\n[runtime]\nprofile = "constant"\n')

    def run():
        p = subprocess.Popen([sys.executable, "-m", "bess_farm", "run", "--config", str(cfg),
                              "--state-dir", str(tmp_path / "state"), "--modbus-host", "127.0.0.1",
                              "--modbus-port", "24000", "--api-host", "127.0.0.1", "--api-port", "24999",
                              "--duration", "120s"], stderr=subprocess.PIPE, text=True)
        try:
            while b"ready" not in p.stderr.readline().encode():
                pass
            time.sleep(3.0)
            t = time.perf_counter()
            p.send_signal(signal.SIGTERM)
            p.wait(60)
            return time.perf_counter() - t
        finally:
            p.kill()
    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    record(benchmark="bess run 100k units: SIGTERM to exit (incl. checkpoint)", seconds=seconds)
