"""The peer for the Modbus performance target: DER Twin (PyPI ``dertwin``), one Python object and
one pymodbus server per battery.

    python benchmarks/dertwin_peer.py --batteries 4 --registers 10 --duration 10
    python benchmarks/dertwin_peer.py --batteries 400 --registers 10 --duration 10
    python benchmarks/dertwin_peer.py --batteries 400 --idle 10          # tick rate only, no load

dertwin 0.1.12 pins ``pymodbus < 3.13``; this project uses pymodbus 3.16, so dertwin lives in its
own virtual environment outside the repository: ``$BESS_DERTWIN_VENV``, by default
``~/.cache/bess-farm/dertwin-venv``, created on first use with ``python -m venv`` and ``pip install
dertwin==0.1.12`` (:func:`ensure_venv`; :class:`DertwinUnavailable` when that fails, which the
benchmark turns into a skip).

:class:`DertwinSite` starts ``benchmarks/dertwin_site.py`` with that venv's Python as a subprocess
in its own process group (K batteries, unit id 1 on K consecutive ports of 127.0.0.1, a 10 Hz
tick), collects the tick statistics it prints every second, and stops it by killing the process
group. The subprocess also ends itself after ``max_seconds``. :meth:`DertwinSite.targets` is the
(host, port, unit id) list for :func:`benchmarks.modbus_load.run_load`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

try:                                         # imported as benchmarks.dertwin_peer
    from .modbus_load import run_load
except ImportError:                          # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from modbus_load import run_load  # type: ignore[no-redef]

DERTWIN_VERSION = "0.1.12"
SITE_SCRIPT = Path(__file__).resolve().parent / "dertwin_site.py"


class DertwinUnavailable(RuntimeError):
    """dertwin's venv could not be created or does not work."""


# --------------------------------------------------------------------------------------------
# The venv
# --------------------------------------------------------------------------------------------

def venv_path() -> Path:
    env = os.environ.get("BESS_DERTWIN_VENV")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "bess-farm" / "dertwin-venv"


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _installed_version(python: Path) -> str | None:
    if not python.exists():
        return None
    probe = "import importlib.metadata as m, dertwin.controllers.site_controller; print(m.version('dertwin'))"
    r = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60, check=False)
    return r.stdout.strip() if r.returncode == 0 else None


def ensure_venv(venv: Path | None = None, timeout: float = 600.0) -> Path:
    """Return the Python of a venv with dertwin==DERTWIN_VERSION, creating or repairing it if need be."""
    venv = venv or venv_path()
    python = _venv_python(venv)
    try:
        if _installed_version(python) == DERTWIN_VERSION:
            return python
        if not python.exists():
            venv.parent.mkdir(parents=True, exist_ok=True)
            r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True,
                               timeout=timeout, check=False)
            if r.returncode:
                raise DertwinUnavailable(f"python -m venv {venv} failed: {r.stderr.strip()[-500:]}")
        r = subprocess.run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                            "--retries", "1", "--timeout", "30", f"dertwin=={DERTWIN_VERSION}"],
                           capture_output=True, text=True, timeout=timeout, check=False)
        if r.returncode:
            raise DertwinUnavailable(f"pip install dertwin=={DERTWIN_VERSION} into {venv} failed: "
                                     f"{r.stderr.strip()[-500:]}")
        if _installed_version(python) != DERTWIN_VERSION:
            raise DertwinUnavailable(f"dertwin=={DERTWIN_VERSION} installed into {venv} but does not import")
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DertwinUnavailable(f"cannot set up dertwin's venv at {venv}: {e}") from e
    return python


# --------------------------------------------------------------------------------------------
# The site subprocess
# --------------------------------------------------------------------------------------------

def free_port_range(count: int, host: str = "127.0.0.1", lo: int = 20000, hi: int = 32000) -> int:
    """A base port with ``count`` consecutive ports free on host. Chosen below Linux's ephemeral
    range (32768-60999) so that the load client's own outgoing ports cannot take one."""
    for _ in range(50):
        base = random.randrange(lo, hi - count)
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind((host, p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {host}")


class DertwinSite:
    """A dertwin site of K batteries in a subprocess; use as a context manager."""

    def __init__(self, batteries: int, *, host: str = "127.0.0.1", step: float = 0.1,
                 register_base: int = 0, max_seconds: float = 120.0, python: Path | None = None):
        self.batteries = batteries
        self.host = host
        self.step = step
        self.register_base = register_base
        self.max_seconds = max_seconds
        self.python = python or ensure_venv()
        self.base_port = 0
        self.ready: dict = {}
        self.stats: list[dict] = []
        self._proc: subprocess.Popen | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._ready_evt = threading.Event()
        self._reader: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, ready_timeout: float | None = None) -> DertwinSite:
        ready_timeout = ready_timeout or 30.0 + 0.1 * self.batteries
        self._tmp = tempfile.TemporaryDirectory(prefix="dertwin-site-")
        self.base_port = free_port_range(self.batteries, self.host)
        self._stderr = open(Path(self._tmp.name) / "stderr.log", "w+")
        cmd = [str(self.python), str(SITE_SCRIPT), "--batteries", str(self.batteries),
               "--host", self.host, "--base-port", str(self.base_port), "--step", str(self.step),
               "--register-base", str(self.register_base), "--workdir", self._tmp.name,
               "--ready-timeout", str(ready_timeout), "--max-seconds", str(self.max_seconds)]
        # Own session = own process group, so stop() can kill everything it started at once.
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True,
                                      start_new_session=True, cwd=self._tmp.name)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready_evt.wait(ready_timeout + 10.0) or not self.ready:
            err = self._stderr_tail()
            self.stop()
            raise RuntimeError(f"dertwin site with {self.batteries} batteries did not come up: {err}")
        return self

    def _read(self) -> None:
        assert self._proc and self._proc.stdout
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("event") == "ready":
                self.ready = msg
                self._ready_evt.set()
            elif msg.get("event") == "stats":
                self.stats.append(msg)
            elif msg.get("event") == "error":
                self._ready_evt.set()
        self._ready_evt.set()                # EOF: the process ended

    def _stderr_tail(self) -> str:
        try:
            self._stderr.flush()
            self._stderr.seek(0)
            return self._stderr.read()[-1500:]
        except (OSError, ValueError):
            return ""

    def stop(self) -> None:
        """Kill the site's process group (SIGTERM, then SIGKILL after 3 s) and clean up."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                if proc.poll() is not None:
                    break
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=3.0)
                except subprocess.TimeoutExpired:
                    pass
            if proc.stdout:
                proc.stdout.close()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if self._tmp is not None:
            self._stderr.close()
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> DertwinSite:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what to load, what it did --------------------------------------------------------------

    def targets(self) -> list[tuple[str, int, int]]:
        """(host, port, unit id) of every battery: unit id 1 on consecutive ports."""
        return [(self.host, p, 1) for p in self.ready["ports"]]

    def tick_summary(self, t_from: float | None = None, t_to: float | None = None) -> dict:
        """Tick behaviour over the stats intervals that ended within [t_from, t_to] (monotonic)."""
        rows = [s for s in self.stats
                if (t_from is None or s["mono"] - s["interval_s"] >= t_from)
                and (t_to is None or s["mono"] <= t_to)]
        if not rows:
            return {"intervals": 0}
        wall = sum(r["interval_s"] for r in rows)
        ticks = sum(r["ticks"] for r in rows)
        return {
            "intervals": len(rows),
            "tick_hz": ticks / wall,
            "target_hz": 1.0 / self.step,
            "busy_ms_mean": sum(r["busy_ms_mean"] * r["ticks"] for r in rows) / max(1, ticks),
            "busy_ms_max": max(r["busy_ms_max"] for r in rows),
            "late_ms_p50_median": sorted(r["late_ms_p50"] for r in rows)[len(rows) // 2],
            "late_ms_max": max(r["late_ms_max"] for r in rows),
            "lag_ms_end": rows[-1]["lag_ms"],
            "lag_growth_ms_per_s": (rows[-1]["lag_ms"] - rows[0]["lag_ms"]) / max(1e-9, wall - rows[0]["interval_s"])
            if len(rows) > 1 else 0.0,
            "cpu": sum(r["cpu"] * r["interval_s"] for r in rows) / wall,
        }


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

def measure_load(site: DertwinSite, *, registers: int = 10, connections: int = 8, duration: float = 10.0,
                 warmup: float = 1.0, timeout: float = 2.0) -> dict:
    """Load the site with FC3 reads of ``registers`` at its register base; the load figures plus
    the site's tick behaviour during the measured window."""
    stats = run_load(targets=site.targets(), connections=connections, duration=duration, warmup=warmup,
                     registers=registers, address=site.register_base, timeout=timeout)
    time.sleep(1.2)                        # let the site print the stats interval that covers the end
    w0, w1 = stats["window_mono"]
    stats["ticks"] = site.tick_summary(w0, w1)
    return stats


def measure_idle(site: DertwinSite, seconds: float = 10.0, settle: float = 2.0) -> dict:
    """The site's tick behaviour with no Modbus traffic, after ``settle`` seconds."""
    time.sleep(settle)
    t0 = time.monotonic()
    time.sleep(seconds + 1.2)
    return site.tick_summary(t0, t0 + seconds + 1.2)


def _fmt_ticks(t: dict) -> str:
    if not t.get("intervals"):
        return "no tick statistics"
    return (f"{t['tick_hz']:.2f} ticks/s (target {t['target_hz']:.0f}), tick compute mean {t['busy_ms_mean']:.1f} ms "
            f"max {t['busy_ms_max']:.1f} ms, late p50 {t['late_ms_p50_median']:.1f} ms max {t['late_ms_max']:.1f} ms, "
            f"behind wall time {t['lag_ms_end']:.0f} ms (growing {t['lag_growth_ms_per_s']:.0f} ms/s), "
            f"process CPU {t['cpu']:.0%} of a core")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Measure DER Twin (dertwin) under Modbus load.")
    ap.add_argument("--batteries", type=int, default=4)
    ap.add_argument("--registers", type=int, nargs="*", default=[10, 50],
                    help="register counts per FC3 read, one load run each")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of tick measurement without load first")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    try:
        python = ensure_venv()
    except DertwinUnavailable as e:
        print(f"skipped: {e}", file=sys.stderr)
        return 2
    out: dict = {"batteries": a.batteries, "dertwin": DERTWIN_VERSION}
    budget = a.idle + 4 + len(a.registers) * (a.duration + 5) + 0.2 * a.batteries
    with DertwinSite(a.batteries, python=python, max_seconds=budget + 30) as site:
        out["build_s"] = site.ready["build_s"]
        if a.idle > 0:
            out["idle"] = measure_idle(site, a.idle)
            if not a.json:
                print(f"dertwin {DERTWIN_VERSION}, {a.batteries} batteries (built in {out['build_s']:.1f} s), "
                      f"idle: {_fmt_ticks(out['idle'])}")
        for n in a.registers:
            s = measure_load(site, registers=n, connections=a.connections, duration=a.duration)
            out[f"load_{n}"] = s
            if not a.json:
                l = s["latency_ms"]
                print(f"{n}-register reads, {a.connections} connections: {s['req_per_s']:,.0f} req/s, "
                      f"p50 {l['p50']:.2f} ms, p99 {l['p99']:.2f} ms, max {l['max']:.1f} ms, "
                      f"errors {s['errors'] or 0}, exceptions {s['exceptions'] or 0}, "
                      f"client CPU {s['client_cpu_us_per_req']:.0f} us/req\n  under load: {_fmt_ticks(s['ticks'])}")
    if a.json:
        print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
