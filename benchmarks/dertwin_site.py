"""Run a DER Twin (PyPI ``dertwin``) site of K batteries on 127.0.0.1 and report its tick timing.

This script runs inside dertwin's own virtual environment (dertwin 0.1.12 pins pymodbus < 3.13,
which conflicts with this project's pymodbus 3.16), so it imports nothing from bess-farm.
``benchmarks/dertwin_peer.py`` creates that venv and starts this script as a subprocess:

    <venv>/bin/python benchmarks/dertwin_site.py --batteries 4 --base-port 21000 --workdir /tmp/x

What dertwin does (read from its source, 0.1.12): ``SiteController(config).build()`` makes one
``BESSSimulator`` (a plain Python object) and one pymodbus ``ModbusTcpServer`` per battery, each
on its own port with one unit id; ``site.start()`` starts every server on the one asyncio loop and
runs ``SimulationEngine.run()``, which steps all devices in turn (read the command registers,
step the model, write the telemetry registers) and then awaits ``SimulationClock.tick()``. The
clock sleeps until ``previous target + step`` and, when late, does not sleep at all, so a site
that cannot keep up runs its ticks back to back and falls behind wall time ever further.

dertwin 0.1.12 ships no register maps (they live in its source repository), so this script
writes its own ``bench_bess.yaml``: the BESS telemetry fields as holding registers (FC3, so the
load client's FC3 reads return live values) from ``--register-base``, the commands from
``--register-base + 100``. Every battery's datastore spans the whole 0..65535 address space, so a
read of up to 125 registers anywhere is answered.

Tick instrumentation (dertwin exposes none beyond an INFO log line every 100 ticks): the clock's
``tick`` coroutine is wrapped. From the engine waking up to its next ``tick`` call there is no
await, so that span is exactly the compute time of one tick (``busy``). After the clock's sleep
returns, ``wake - target`` is how late the tick started against its schedule (``late``): the
event loop was busy serving Modbus, or earlier ticks overran. Every ``--interval`` seconds one JSON
line goes to stdout:

    {"event": "stats", "mono": ..., "ticks": n, "tick_hz": ..., "busy_ms_mean": ..., "busy_ms_p99": ...,
     "busy_ms_max": ..., "late_ms_p50": ..., "late_ms_p99": ..., "late_ms_max": ..., "lag_ms": ...,
     "cpu": share of one core used by the process}

``mono`` is ``time.monotonic()`` (system-wide), so the parent can line the intervals up with a
load run. The first line is ``{"event": "ready", "ports": [...]}`` once every port accepts.
The process ends itself after ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time

# (field, type, scale, registers) in address order from the register base; the names are the
# fields of dertwin.telemetry.bess.BESSTelemetry, which dertwin matches by name.
TELEMETRY = [
    ("service_voltage", "uint16", 0.1, 1), ("service_current", "int16", 0.1, 1),
    ("active_power", "int32", 0.1, 2), ("reactive_power", "int32", 0.1, 2),
    ("apparent_power", "uint32", 0.1, 2), ("system_soc", "uint16", 0.1, 1),
    ("system_soh", "uint16", 0.1, 1), ("battery_temperature", "int16", 0.1, 1),
    ("available_charging_power", "uint32", 0.1, 2), ("available_discharging_power", "uint32", 0.1, 2),
    ("max_charge_power", "uint32", 0.1, 2), ("max_discharge_power", "uint32", 0.1, 2),
    ("total_charge_energy", "uint32", 0.1, 2), ("total_discharge_energy", "uint32", 0.1, 2),
    ("charge_and_discharge_cycles", "uint16", 1.0, 1), ("grid_frequency", "uint16", 0.01, 1),
    ("grid_voltage_ab", "uint16", 0.1, 1), ("grid_voltage_bc", "uint16", 0.1, 1),
    ("grid_voltage_ca", "uint16", 0.1, 1), ("working_status", "uint16", 1.0, 1),
    ("fault_code", "uint16", 1.0, 1), ("local_remote_mode", "uint16", 1.0, 1),
    ("working_mode", "uint16", 1.0, 1),
]
# (command, type, scale, registers, write function code), from register base + 100.
COMMANDS = [
    ("start_stop_standby", "uint16", 1.0, 1, 6), ("active_power_setpoint", "int32", 0.1, 2, 16),
    ("local_remote_settings", "uint16", 1.0, 1, 6),
]


def register_map_yaml(base: int) -> str:
    """The register map in dertwin's YAML schema (written by hand: plain text, no yaml dumper)."""
    lines = ["registers:"]
    addr = base
    for name, typ, scale, count in TELEMETRY:
        lines += [f"  - name: {name}", f"    internal_name: {name}", f"    address: {addr}",
                  "    func: 3", "    direction: read", f"    type: {typ}", f"    count: {count}",
                  f"    scale: {scale}"]
        addr += count
    addr = base + 100
    for name, typ, scale, count, fc in COMMANDS:
        lines += [f"  - name: {name}", f"    internal_name: {name}", f"    address: {addr}",
                  f"    func: {fc}", "    direction: write", f"    type: {typ}", f"    count: {count}",
                  f"    scale: {scale}"]
        addr += count
    return "\n".join(lines) + "\n"


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(q / 100 * len(sorted_vals)))]


class TickProbe:
    """Wraps the site clock's tick() to time every tick (see the module docstring)."""

    def __init__(self, clock):
        self.clock = clock
        self._orig_tick = clock.tick
        self.busy: list[float] = []
        self.late: list[float] = []
        self.lag = 0.0
        self._wake = None
        clock.tick = self._tick

    async def _tick(self):
        now = time.monotonic()
        if self._wake is not None:
            self.busy.append(now - self._wake)
        await self._orig_tick()
        self._wake = time.monotonic()
        # After the sleep, clock._last_wall_time is the instant this tick was due to end.
        self.lag = self._wake - self.clock._last_wall_time
        self.late.append(self.lag)

    def take(self) -> tuple[list[float], list[float]]:
        busy, late = self.busy, self.late
        self.busy, self.late = [], []
        return busy, late


async def _wait_listening(host: str, ports: list[int], deadline: float) -> list[int]:
    """Ports that do not accept a connection before the deadline."""
    pending = list(ports)
    while pending and time.monotonic() < deadline:
        still = []
        for p in pending:
            try:
                _, w = await asyncio.wait_for(asyncio.open_connection(host, p), timeout=1.0)
                w.close()
            except (TimeoutError, OSError):
                still.append(p)
        pending = still
        if pending:
            await asyncio.sleep(0.1)
    return pending


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def run(args) -> None:
    from dertwin.controllers.site_controller import SiteController

    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "bench_bess.yaml"), "w") as f:
        f.write(register_map_yaml(args.register_base))
    ports = [args.base_port + k for k in range(args.batteries)]
    config = {
        "site_name": f"bench-{args.batteries}",
        "step": args.step,
        "real_time": True,
        "register_map_root": args.workdir,
        "assets": [{
            "type": "bess", "capacity_kwh": 100.0, "initial_soc": 50.0,
            "protocols": [{"kind": "modbus_tcp", "ip": args.host, "port": p, "unit_id": 1,
                           "register_map": "bench_bess.yaml"}],
        } for p in ports],
    }
    t_build = time.monotonic()
    site = SiteController(config)
    site.build()
    build_s = time.monotonic() - t_build
    probe = TickProbe(site.clock)
    # The clock takes its reference time when the SiteController is made, before build(): with
    # hundreds of batteries the build alone would put the first ticks seconds behind schedule, and
    # they would then run back to back to catch up. Start the schedule now instead.
    site.clock._last_wall_time = time.monotonic()
    start_task = asyncio.create_task(site.start())

    missing = await _wait_listening(args.host, ports, time.monotonic() + args.ready_timeout)
    if missing:
        _emit({"event": "error", "message": f"{len(missing)} ports not listening", "ports": missing[:10]})
        return
    _emit({"event": "ready", "ports": ports, "unit_id": 1, "build_s": build_s,
           "register_base": args.register_base, "telemetry_registers": sum(t[3] for t in TELEMETRY)})

    end = time.monotonic() + args.max_seconds
    cpu0, t0 = time.process_time(), time.monotonic()
    while time.monotonic() < end and not start_task.done():
        await asyncio.sleep(args.interval)
        cpu1, t1 = time.process_time(), time.monotonic()
        busy, late = probe.take()
        busy.sort()
        late_sorted = sorted(late)
        _emit({"event": "stats", "mono": t1, "interval_s": t1 - t0, "ticks": len(late),
               "tick_hz": len(late) / (t1 - t0),
               "busy_ms_mean": 1e3 * sum(busy) / len(busy) if busy else float("nan"),
               "busy_ms_p99": 1e3 * _pct(busy, 99), "busy_ms_max": 1e3 * busy[-1] if busy else float("nan"),
               "late_ms_p50": 1e3 * _pct(late_sorted, 50), "late_ms_p99": 1e3 * _pct(late_sorted, 99),
               "late_ms_max": 1e3 * late_sorted[-1] if late_sorted else float("nan"),
               "lag_ms": 1e3 * probe.lag, "sim_time_s": site.clock.time,
               "cpu": (cpu1 - cpu0) / (t1 - t0)})
        cpu0, t0 = cpu1, t1
    await asyncio.wait_for(site.stop(), timeout=5.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batteries", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--base-port", type=int, required=True)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--register-base", type=int, default=0)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between stats lines")
    ap.add_argument("--ready-timeout", type=float, default=60.0)
    ap.add_argument("--max-seconds", type=float, default=120.0, help="the process ends itself after this")
    args = ap.parse_args()
    # dertwin logs every 100 ticks and every server start at INFO; pymodbus logs per request at DEBUG.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    code = 0
    try:
        asyncio.run(run(args))
    except BaseException:                    # report, then leave without waiting for transports
        import traceback
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)           # do not wait for pymodbus transports to wind down


if __name__ == "__main__":
    main()
