"""Checkpoints through `bess run`: SIGTERM and restart continue bitwise, kill -9 loses at most one
checkpoint interval, a damaged newest checkpoint falls back to the previous one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bess_farm.engine.checkpoint import load_checkpoint, read_manifest
from bess_farm.engine.config import parse_config
from bess_farm.engine.farm import Farm
from runtime_helpers import free_port

CONFIG = """
[farm]
name = "durable"
seed = 5
units_per_row = 4
[ambient]
kind = "daily"
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 12
[units.spread]
capacity = 0.02
r0 = 0.05
[runtime]
profile = "constant"
speed = 20.0
"""


class Run:
    """`bess run` as a subprocess with JSON logs; bounded by timeouts."""

    def __init__(self, cfg: Path, state: Path, *extra: str):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bess_farm", "run", "--config", str(cfg), "--state-dir", str(state),
             "--modbus-host", "127.0.0.1", "--modbus-port", str(free_port()), "--no-api",
             "--log-format", "json", "--duration", "120s", *extra],
            stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []

    def until(self, msg: str, timeout: float = 90.0) -> dict:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.events.append(json.loads(line))
            if self.events[-1]["msg"] == msg:
                return self.events[-1]
        raise AssertionError(f"no {msg!r} event; got {[e['msg'] for e in self.events]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> None:
        self.proc.send_signal(sig)
        try:
            rest = self.proc.communicate(timeout=timeout)[1]
        finally:
            self.proc.kill()
        self.events += [json.loads(x) for x in rest.splitlines() if x.startswith("{")]

    def find(self, msg: str) -> list[dict]:
        return [e for e in self.events if e["msg"] == msg]


def _farm_from(path: Path) -> Farm:
    cfg = parse_config(CONFIG.split("[runtime]")[0])
    cfg.start_hour = float(read_manifest(path)["config"]["farm"]["start_hour"])
    f = Farm(cfg)
    load_checkpoint(f, path)
    return f


def _state(f: Farm) -> dict[str, np.ndarray]:
    src = f._src
    return {"dyn": f.dyn[src], "out": f.out[src], "status": f.status[src], "alarms": f.alarms[src],
            "upar": f.upar, "flags": f.flags, "aging_acc": f.aging_acc, "aging_state": f.aging_state}


def test_sigterm_restart_continues_bitwise(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text(CONFIG)
    state = tmp_path / "state"
    a = Run(cfg, state)
    a.until("ready")
    time.sleep(1.5)
    a.stop()
    assert a.proc.returncode == 0
    first = a.find("checkpoint")[-1]
    assert a.events[-1]["msg"] == "stopped"
    b = Run(cfg, state)
    restored = b.until("restored")
    assert restored["tick"] == first["tick"] and restored["file"] == first["file"]
    b.until("ready")
    time.sleep(1.5)
    b.stop()
    second = b.find("checkpoint")[-1]
    assert second["tick"] > first["tick"]
    # the first checkpoint, stepped on in this process, is bitwise the second
    f = _farm_from(Path(first["file"]))
    f.step(20.0 / 10.0, second["tick"] - first["tick"])
    g = _farm_from(Path(second["file"]))
    for name, arr in _state(f).items():
        assert np.array_equal(arr, _state(g)[name], equal_nan=True), name
    assert f.tick == g.tick and f.time_s == g.time_s


def test_kill_9_loses_at_most_one_interval(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text(CONFIG)
    state = tmp_path / "state"
    a = Run(cfg, state, "--checkpoint-interval", "1s")
    a.until("ready")
    a.until("checkpoint")
    a.until("checkpoint")
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    last = a.find("checkpoint")[-1]
    b = Run(cfg, state)
    restored = b.until("restored")
    b.stop()
    # whatever was written after the last checkpoint we saw is newer still, never older
    assert restored["tick"] >= last["tick"]
    assert not list(state.glob("*.tmp"))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text(CONFIG)
    state = tmp_path / "state"
    a = Run(cfg, state, "--checkpoint-interval", "1s")
    a.until("ready")
    a.until("checkpoint")
    a.until("checkpoint")
    a.stop()
    files = sorted(state.glob("ckpt-*.bess"))
    assert len(files) == 2, files                      # the previous good one is kept
    newest, previous = files[-1], files[0]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    b = Run(cfg, state)
    restored = b.until("restored")
    b.stop()
    rejected = b.find("checkpoint rejected")
    assert rejected and rejected[0]["file"] == str(newest) and rejected[0]["kind"] == "corrupt"
    assert restored["file"] == str(previous)
    assert Path(rejected[0]["moved_to"]).exists() and not newest.exists()


def test_fresh_ignores_checkpoints_and_another_config_is_refused(tmp_path):
    cfg = tmp_path / "site.toml"
    cfg.write_text(CONFIG)
    state = tmp_path / "state"
    a = Run(cfg, state)
    a.until("ready")
    a.stop()
    b = Run(cfg, state, "--fresh")
    b.until("ready")
    b.stop()
    assert not b.find("restored")
    cfg.write_text(CONFIG.replace("count = 12", "count = 13"))
    c = Run(cfg, state)
    c.until("ready")
    c.stop()
    assert not c.find("restored")
    rejected = c.find("checkpoint rejected")
    assert rejected and rejected[0]["kind"] == "incompatible" and "n_units" in rejected[0]["reason"]
