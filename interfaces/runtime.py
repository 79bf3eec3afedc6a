"""``bess run``: the engine ticking in real time with its Modbus server, in one asyncio process.

Start order: the engine (config, arrays, first tick, which compiles or loads the kernels), then
the Modbus listeners; the runtime is *ready* only when all are up. Then the ticker:

* Tick ``k`` is due at ``t0 + k / tick_hz`` on the monotonic clock (drift-free: lateness never
  accumulates). It runs ``Farm.step`` in a worker thread; the kernel releases the GIL, so the
  event loop keeps serving requests while the physics runs.
* Overrun policy (``--overrun``): ``catch-up`` (default) runs the missed ticks in the next kernel
  call, up to ``max_catch_up`` ticks, so simulated time stays locked to the wall clock; anything
  beyond is skipped and counted. ``skip`` drops missed slots: simulated time falls behind.
* ``--speed N`` advances ``N / tick_hz`` simulated seconds per tick (the step length grows, the
  tick rate does not), so a demo runs N times faster than real time at the same CPU cost.
* Between ticks, on the loop thread: per-unit parameters are republished when they may have
  changed, SCADA control heartbeats are checked, and trips and alarms are logged.

Adapters read only the published tick and write only commands, which the engine takes in at the
next tick boundary (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import os
import signal
import sys
import threading
import time
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from .published import Published

log = logging.getLogger("bess.runtime")

_MODBUS_KEYS = {"host", "port", "units_per_port", "max_ports", "plant_device_id", "revert_timeout_s",
                "ac_voltage_v", "grid_hz", "max_connections", "vendor_map"}
_RUNTIME_KEYS = {"tick_hz", "speed", "overrun", "max_catch_up", "profile", "power_w", "engine_threads",
                 "state_dir", "checkpoint_interval_s", "checkpoint_keep", "checkpoints", "scenario"}
#: Below this many units the tick runs on one thread (auto): a serial tick of 250,000 units takes
#: about 12 ms, and leaving the other core to the event loop keeps the tick from waiting on a
#: thread that the loop has pushed off its core.
SERIAL_BELOW_UNITS = 250_000
EVENT_CAP = 64            # unit events (trips, alarms) kept per tick for the log


@njit(cache=True, nogil=True)
def scan_events(state, state_prev, alarms, alarms_prev, out):
    """Units whose state changed or that raised an alarm bit: count them, keep the first few."""
    count = 0
    for i in range(state.shape[0]):
        if state[i] != state_prev[i] or (alarms[i] & ~alarms_prev[i]) != 0:
            if count < out.shape[0]:
                out[count] = i
            count += 1
    return count
PROFILES = ("daily-arbitrage", "idle", "constant", "frequency-regulation", "peak-shaving")


class SiteConfigError(ValueError):
    """A site config (farm + runtime + Modbus sections) that cannot be used."""


@dataclass
class RunSettings:
    tick_hz: float = 10.0
    speed: float = 1.0
    overrun: str = "catch-up"
    max_catch_up: int = 10
    profile: str = "daily-arbitrage"
    power_w: float | None = None          # profile amplitude; default 40 % of the farm rating
    duration_s: float | None = None       # stop after this much wall time (tests, demos)
    engine_threads: int = 0               # 0 = auto (1 below SERIAL_BELOW_UNITS, else all cores)
    checkpoints: bool = True              # restore at start, save periodically and at shutdown
    state_dir: str | None = None          # default: $BESS_STATE_DIR or ~/.local/state/bess-farm/<farm>
    checkpoint_interval_s: float = 300.0  # wall seconds between checkpoints (0: only at shutdown)
    checkpoint_keep: int = 2
    fresh: bool = False                   # ignore existing checkpoints (--fresh)
    shard: tuple[int, int] | None = None  # (index, count): run only this shard's units
    scenario: str | None = None           # chaos scenario to start with (name or file)


@dataclass
class SiteConfig:
    farm: Any                              # engine FarmConfig
    modbus: Any                            # ModbusSettings
    run: RunSettings
    vendor_maps: list[tuple[str, Path]] = field(default_factory=list)   # (unit selector, file)
    source: str = "embedded default"
    api: Any = None                        # rest.ApiSettings
    telemetry: Any = None                  # otel.setup.TelemetrySettings


def load_site_config(path: Path | None) -> SiteConfig:
    """Read a site config: the engine's farm sections plus optional ``[modbus]`` and ``[runtime]``.

    Errors name the file, the key and the rule (SiteConfigError); nothing is started from a
    config that failed validation.
    """
    from bess_farm.engine.config import ConfigError, parse_config
    from bess_farm.interfaces.modbus.devices import ModbusSettings
    source = "embedded default"
    data: dict[str, Any] = {}
    if path is not None:
        source = str(path)
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise SiteConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SiteConfigError(f"{source}: not valid TOML: {exc}") from None
    modbus = data.pop("modbus", {})
    runtime = data.pop("runtime", {})
    api = data.pop("api", {})
    telemetry = data.pop("telemetry", {})
    try:
        farm_cfg = parse_config(data if path is not None else None)
    except ConfigError as exc:
        raise SiteConfigError(f"{source}: {exc}") from None
    ms = ModbusSettings()
    vendor: list[tuple[str, Path]] = []
    if not isinstance(modbus, dict):
        raise SiteConfigError(f"{source}: modbus: expected a table")
    for key, value in modbus.items():
        where = f"{source}: modbus.{key}"
        if key not in _MODBUS_KEYS:
            raise SiteConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(_MODBUS_KEYS))}")
        if key == "host":
            if not isinstance(value, str) or not value:
                raise SiteConfigError(f"{where}: expected an address string")
            ms.host = value
        elif key == "vendor_map":
            if not isinstance(value, list):
                raise SiteConfigError(f"{where}: expected [[modbus.vendor_map]] tables")
            for j, item in enumerate(value):
                if not isinstance(item, dict) or set(item) != {"units", "file"}:
                    raise SiteConfigError(f"{where}[{j}]: needs exactly 'units' (e.g. \"0-9\") and 'file'")
                f = Path(item["file"])
                if not f.is_absolute() and path is not None:
                    f = Path(path).parent / f
                vendor.append((str(item["units"]), f))
        else:
            lo, hi, integer = {"port": (1, 65535, True), "units_per_port": (1, 247, True),
                               "max_ports": (1, 4096, True), "plant_device_id": (0, 255, True),
                               "revert_timeout_s": (0, 7 * 86400, False),
                               "ac_voltage_v": (100, 100_000, False), "grid_hz": (40, 70, False),
                               "max_connections": (1, 100_000, True)}[key]
            setattr(ms, key, _num(value, where, lo, hi, integer))
    if 1 <= ms.plant_device_id <= ms.units_per_port:
        raise SiteConfigError(f"{source}: modbus.plant_device_id {ms.plant_device_id} collides with unit "
                              f"device ids 1..{ms.units_per_port}; use 0 or {ms.units_per_port + 1}..255")
    rs = RunSettings()
    if not isinstance(runtime, dict):
        raise SiteConfigError(f"{source}: runtime: expected a table")
    for key, value in runtime.items():
        where = f"{source}: runtime.{key}"
        if key not in _RUNTIME_KEYS:
            raise SiteConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(_RUNTIME_KEYS))}")
        if key == "overrun":
            if value not in ("catch-up", "skip"):
                raise SiteConfigError(f"{where}: must be 'catch-up' or 'skip'")
            rs.overrun = value
        elif key == "checkpoints":
            if not isinstance(value, bool):
                raise SiteConfigError(f"{where}: expected true or false")
            rs.checkpoints = value
        elif key == "scenario":
            if not isinstance(value, str) or not value:
                raise SiteConfigError(f"{where}: expected a built-in scenario name or a file")
            sc = Path(value)
            rs.scenario = str(Path(path).parent / sc) if (path is not None and not sc.is_absolute()
                                                          and (Path(path).parent / sc).exists()) else value
        elif key == "state_dir":
            if not isinstance(value, str) or not value:
                raise SiteConfigError(f"{where}: expected a directory path")
            d = Path(value)
            rs.state_dir = str(d if d.is_absolute() or path is None else Path(path).parent / d)
        elif key == "profile":
            if value not in PROFILES:
                raise SiteConfigError(f"{where}: unknown profile {value!r}; known: {', '.join(PROFILES)}")
            rs.profile = value
        else:
            lo, hi, integer = {"tick_hz": (0.1, 100, False), "speed": (0.01, 100_000, False),
                               "max_catch_up": (0, 1000, True), "power_w": (-1e13, 1e13, False),
                               "engine_threads": (0, 1024, True),
                               "checkpoint_interval_s": (0, 30 * 86400, False),
                               "checkpoint_keep": (1, 100, True)}[key]
            setattr(rs, key, _num(value, where, lo, hi, integer))
    site = SiteConfig(farm_cfg, ms, rs, vendor, source)
    site.api = _api_settings(api, source, path, farm_cfg.n_units)
    from bess_farm.otel.setup import TelemetryConfigError, parse_telemetry_settings
    try:
        site.telemetry = parse_telemetry_settings(telemetry, source)
    except TelemetryConfigError as exc:
        raise SiteConfigError(str(exc)) from None
    return site


_API_KEYS = {"host", "port", "enabled", "token_file", "read_auth", "cors_origins", "history_units",
             "history_length", "history_interval_s"}


def _api_settings(api: Any, source: str, path: Path | None, n_units: int):
    from .modbus.vendor import VendorMapError, parse_units
    from .rest import ApiSettings
    s = ApiSettings()
    if n_units <= 16:
        s.history_units = f"0-{n_units - 1}"
    if not isinstance(api, dict):
        raise SiteConfigError(f"{source}: api: expected a table")
    for key, value in api.items():
        where = f"{source}: api.{key}"
        if key not in _API_KEYS:
            raise SiteConfigError(f"{where}: unknown key; allowed: {', '.join(sorted(_API_KEYS))}")
        if key in ("enabled", "read_auth"):
            if not isinstance(value, bool):
                raise SiteConfigError(f"{where}: expected true or false")
            setattr(s, key, value)
        elif key in ("host", "token_file", "history_units"):
            if not isinstance(value, str):
                raise SiteConfigError(f"{where}: expected a string")
            if key == "token_file" and path is not None and not Path(value).is_absolute():
                value = str(Path(path).parent / value)
            setattr(s, key, value)
        elif key == "cors_origins":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SiteConfigError(f"{where}: expected a list of origins")
            s.cors_origins = list(value)
        else:
            lo, hi, integer = {"port": (1, 65535, True), "history_length": (1, 100_000, True),
                               "history_interval_s": (0.01, 86400, False)}[key]
            setattr(s, key, _num(value, where, lo, hi, integer))
    if s.history_units:
        try:
            units = parse_units(s.history_units, n_units)
        except VendorMapError as exc:
            raise SiteConfigError(f"{source}: api.history_units: {exc}") from None
        if units.size * s.history_length > 10_000_000:
            raise SiteConfigError(f"{source}: api.history_units x history_length = "
                                  f"{units.size * s.history_length} samples; keep it under 10,000,000")
    return s


def parse_shard(text: str | None, from_hostname: bool = False) -> tuple[int, int] | None:
    """``"2/4"`` -> (2, 4). With ``from_hostname`` the index is the trailing ``-N`` of the host
    name (a StatefulSet pod ordinal) and the text may give only the count (``"/4"``, ``"4"``)."""
    if not text:
        if from_hostname:
            raise ValueError("BESS_SHARD_FROM_HOSTNAME needs the shard count in BESS_SHARD (e.g. /4)")
        return None
    idx_text, sep, count_text = str(text).strip().rpartition("/")
    if not sep:
        idx_text, count_text = "", idx_text or count_text
    try:
        count = int(count_text)
    except ValueError:
        raise ValueError(f"shard {text!r}: use INDEX/COUNT, e.g. 2/4") from None
    if from_hostname:
        import socket
        host = socket.gethostname()
        ordinal = host.rpartition("-")[2]
        if not ordinal.isdigit():
            raise ValueError(f"shard from host name {host!r}: it does not end in -N (a pod ordinal)")
        index = int(ordinal)
    else:
        try:
            index = int(idx_text)
        except ValueError:
            raise ValueError(f"shard {text!r}: use INDEX/COUNT, e.g. 2/4") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    return index, count


def state_dir(site: "SiteConfig") -> Path:
    """Where checkpoints live: [runtime] state_dir, else $BESS_STATE_DIR/<farm>, else
    $XDG_STATE_HOME (~/.local/state)/bess-farm/<farm>."""
    if site.run.state_dir:
        return Path(site.run.state_dir)
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in site.farm.name)
    if site.run.shard is not None:
        name += f"-shard-{site.run.shard[0]}-of-{site.run.shard[1]}"
    env = os.environ.get("BESS_STATE_DIR")
    if env:
        return Path(env) / name
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "bess-farm" / name


def api_token(settings) -> tuple[str, str]:
    """(token, where it came from): BESS_API_TOKEN, the token file, or generated now."""
    import secrets
    env = os.environ.get("BESS_API_TOKEN", "").strip()
    if env:
        return env, "BESS_API_TOKEN"
    if settings.token_file:
        try:
            token = Path(settings.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SiteConfigError(f"api.token_file {settings.token_file}: cannot read: {exc.strerror}") from None
        if len(token) < 16:
            raise SiteConfigError(f"api.token_file {settings.token_file}: the token must be at least "
                                  f"16 characters")
        return token, settings.token_file
    return secrets.token_urlsafe(32), "generated"


def _num(value, where, lo, hi, integer):
    from bess_farm.engine.config import check_number
    return check_number(value, where, lo, hi, integer=integer, error=SiteConfigError)


# ------------------------------------------------------------------------------------- logging
class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
               + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        doc.update(getattr(record, "fields", {}) or {})
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


class _PlainFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        s = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            s += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return s


_LOG_FORMAT = ["plain"]


def setup_logging(fmt: str = "plain", level: str = "info") -> None:
    _LOG_FORMAT[0] = fmt
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _PlainFormatter())
    root = logging.getLogger("bess")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # pymodbus logs every malformed frame at warning/error; its faults are handled and counted here
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # uvicorn's errors (a failed bind) are reported by the runtime in its own words
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)


def event(logger: logging.Logger, level: int, msg: str, **fields) -> None:
    logger.log(level, msg, extra={"fields": fields})


# ------------------------------------------------------------------------------------- stats
class TickStats:
    """Tick durations and lateness over a bounded window, and counters."""

    def __init__(self, window: int = 6000):
        self.durations = deque(maxlen=window)
        self.lateness = deque(maxlen=window)
        self.ticks = 0
        self.calls = 0
        self.overruns = 0
        self.skipped = 0
        self.last_tick_wall = 0.0

    def percentile(self, which: str, q: float) -> float:
        data = self.durations if which == "duration" else self.lateness
        return float(np.percentile(np.fromiter(data, float), q)) if data else 0.0

    def summary(self) -> dict[str, float]:
        return {"ticks": self.ticks, "overruns": self.overruns, "skipped": self.skipped,
                "tick_p50_ms": 1e3 * self.percentile("duration", 50),
                "tick_p99_ms": 1e3 * self.percentile("duration", 99),
                "lateness_p50_ms": 1e3 * self.percentile("lateness", 50),
                "lateness_p99_ms": 1e3 * self.percentile("lateness", 99)}


# ------------------------------------------------------------------------------------- runtime
class Runtime:
    """The engine, its ticker and the Modbus listeners (and, later, REST and telemetry)."""

    def __init__(self, site: SiteConfig):
        self.site = site
        self.farm = None
        self.devices = None
        self.servers: list = []
        self.stats = TickStats()
        self.modbus_stats = None
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()
        self.profile = None
        self._pool = None
        self.threads = 1
        self._events = np.zeros(EVENT_CAP, dtype=np.int64)
        self.pub: Published | None = None      # the tick adapters read (loop thread)
        self.api = None
        self.store = None
        self._saved_tick = -1
        self.telemetry = None
        self.chaos = None
        self._step_s = 0.0
        self._http = None
        self._http_task = None
        self.dispatch_name = site.run.profile
        self._next_pub: Published | None = None

    # ------------------------------------------------------------------ start
    async def start(self) -> None:
        from bess_farm.engine.farm import Farm
        from bess_farm.interfaces.modbus.devices import FarmDevices
        from bess_farm.interfaces.modbus.server import ModbusStats, start_servers
        from bess_farm.interfaces.modbus.vendor import load_vendor_maps
        site, rs, ms = self.site, self.site.run, self.site.modbus
        t0 = time.perf_counter()
        # The engine thread needs the GIL only briefly around each kernel call; with the default
        # 5 ms switch interval a busy event loop would make it wait up to 5 ms per hand-over.
        sys.setswitchinterval(0.0005)
        import numba
        n = sum(g.count for g in site.farm.groups)
        self.threads = rs.engine_threads or (1 if n < SERIAL_BELOW_UNITS else numba.config.NUMBA_NUM_THREADS)
        self.threads = min(self.threads, numba.config.NUMBA_NUM_THREADS)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="bess-engine", initializer=numba.set_num_threads,
            initargs=(self.threads,))
        from bess_farm.engine._cache_guard import kernels_cached
        if not kernels_cached():
            event(log, logging.INFO, "compiling the engine's kernels (first run only, about a minute)")
        self.store = None
        restored_ckpt = None
        now = time.gmtime()
        site.farm.start_hour = now.tm_hour + now.tm_min / 60 + now.tm_sec / 3600
        if rs.checkpoints:
            from bess_farm.engine.checkpoint import CheckpointStore
            d = state_dir(site)
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SiteConfigError(f"state directory {d}: {exc.strerror}") from None
            self.store = CheckpointStore(d, keep=rs.checkpoint_keep)
            if not rs.fresh:
                found = await asyncio.get_running_loop().run_in_executor(self._pool, self.store.latest_valid)
                self._log_rejected(found)
                if found:        # a restored farm keeps the simulated clock it was built with
                    site.farm.start_hour = float(found.checkpoint.manifest["config"]["farm"]["start_hour"])
        loop = asyncio.get_running_loop()
        units = None
        if rs.shard is not None:
            from bess_farm.engine.farm import shard_range
            try:
                units = shard_range(site.farm.n_units, site.farm.units_per_row, *rs.shard)
            except ValueError as exc:
                raise SiteConfigError(f"--shard: {exc}") from None
        self.farm = farm = await loop.run_in_executor(self._pool, Farm, site.farm, units)
        self.dt = rs.speed / rs.tick_hz
        try:
            farm._check_dt(self.dt)
        except ValueError as exc:
            raise SiteConfigError(f"--speed {rs.speed:g}: {exc}") from None
        if self.store is not None and not rs.fresh:
            result = await loop.run_in_executor(self._pool, self.store.load_into, farm)
            self._log_rejected(result)
            restored_ckpt = result.checkpoint
        if restored_ckpt is not None:
            x = restored_ckpt.extra
            rs.profile = x.get("profile", rs.profile)
            rs.power_w = x.get("power_w", rs.power_w)
            self.profile = self._local_profile()          # the farm itself keeps its restored profile
            self.dispatch_name = x.get("dispatch", rs.profile)
            event(log, logging.INFO, "restored", file=str(restored_ckpt.path), tick=restored_ckpt.tick,
                  time_s=round(restored_ckpt.time_s, 1), saved_at=restored_ckpt.created_at)
        else:
            self.profile = self._local_profile()
            if self.profile is not None:
                farm.set_farm_profile(self.profile)
        from .chaos import ChaosEngine, load_scenario
        self.chaos = ChaosEngine(farm)
        if rs.scenario:
            # ScenarioError (file, line, reason) stops the start before anything is applied
            self.chaos.start(load_scenario(rs.scenario), t0=farm.time_s)
        vendor = load_vendor_maps(site.vendor_maps, farm) if site.vendor_maps else {}
        self.devices = FarmDevices(farm, ms, local_profile=self.profile, vendor_maps=vendor,
                                   on_event=self._device_event)
        self.devices.comm = self.chaos.comm
        if restored_ckpt is not None:
            self.devices.controls.restore(restored_ckpt.extra_arrays, farm.time_s)
            if restored_ckpt.extra.get("scenario"):
                event(log, logging.WARNING, "restored during a scenario",
                      scenario=restored_ckpt.extra["scenario"],
                      hint="the checkpoint keeps the faults' effects, not the scenario; "
                           "restart it or use --fresh")
        await loop.run_in_executor(self._pool, self._step, 1)   # compiles or loads the kernels
        self.stats.last_tick_wall = time.monotonic()
        self.pub = self._next_pub
        self.devices.refresh()
        self.devices.publish_refresh(self.pub)
        if rs.shard is not None:
            event(log, logging.INFO, "shard", index=rs.shard[0], count=rs.shard[1],
                  first_unit=farm.shard.start, last_unit=farm.shard.stop - 1)
        event(log, logging.INFO, "engine started", units=farm.n_units, kinds=len(farm.kinds),
              threads=self.threads, tick_hz=rs.tick_hz, speed=rs.speed, dt_s=round(self.dt, 6),
              memory_mb=round(farm.memory_bytes() / 1e6, 1), seconds=round(time.perf_counter() - t0, 2))
        self.modbus_stats = ModbusStats()
        self.servers = await start_servers(self.devices, ms.host, ms.port, self.modbus_stats,
                                           ms.max_connections)
        last = ms.port + self.devices.n_ports - 1
        event(log, logging.INFO, "modbus listening", host=ms.host,
              ports=f"{ms.port}" if last == ms.port else f"{ms.port}-{last}",
              units=self.devices.units_served, plant_device_id=ms.plant_device_id)
        if self.devices.units_served < farm.n_units:
            event(log, logging.WARNING, "units beyond modbus.max_ports are not on Modbus",
                  served=self.devices.units_served, units=farm.n_units)
        if site.api is not None and site.api.enabled:
            await self._start_api()
        if site.telemetry is not None:
            from bess_farm.otel.setup import start_telemetry
            self.telemetry = start_telemetry(self, site.telemetry)   # OSError if the port is taken
        self.ready.set()
        event(log, logging.INFO, "ready", seconds=round(time.perf_counter() - t0, 2))

    async def _start_api(self) -> None:
        import uvicorn

        from .rest import Api, build_app
        settings = self.site.api
        token, origin = api_token(settings)
        settings.token = token
        self.api = Api(self, settings)
        from bess_farm.otel.http import instrument_http
        app = instrument_http(build_app(self.api), lambda: self.telemetry)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, loop="none",
                                lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=2, server_header=False)
        self._http = uvicorn.Server(config)
        # Server.serve() would install its own signal handlers (the runtime owns them) and run
        # to the end; the runtime drives startup, main loop and shutdown itself.
        config.load()
        self._http.lifespan = config.lifespan_class(config)
        try:
            await self._http.startup()
        except SystemExit:            # uvicorn exits the process when it cannot bind
            self._http = None
            raise OSError(f"cannot listen for HTTP on {settings.host}:{settings.port} "
                          f"(in use, or not an address of this host)") from None
        if self._http.should_exit or not self._http.started:
            raise OSError(f"cannot listen for HTTP on {settings.host}:{settings.port} "
                          f"(in use, or not an address of this host)")
        self._http_task = asyncio.create_task(self._http.main_loop())
        event(log, logging.INFO, "api listening", host=settings.host, port=settings.port,
              docs=f"http://{settings.host}:{settings.port}/docs")
        if origin == "generated":
            # shown once, on stderr, so the embedded default is never open for writes
            if _LOG_FORMAT[0] == "json":
                event(log, logging.WARNING, "api token generated", token=token,
                      hint="set BESS_API_TOKEN to choose one")
            else:
                print(f"bess: API write token (generated; set BESS_API_TOKEN to choose one): {token}",
                      file=sys.stderr, flush=True)

    def set_dispatch(self, profile: str, power_w: float | None) -> int:
        """Back to a local dispatch profile (REST); returns the tick it takes effect."""
        self.site.run.profile = profile
        self.site.run.power_w = power_w          # None: the default amplitude again
        self.profile = self._local_profile()
        self.devices.local_profile = self.profile
        self.dispatch_name = profile
        self.audit("dispatch profile", profile=profile, power_w=power_w)
        return self.farm.set_farm_profile(self.profile)

    def audit(self, what: str, **fields) -> None:
        """One log line per operator write (REST)."""
        event(log, logging.INFO, what, source="api", **fields)

    def _step(self, n: int) -> tuple[int, int]:
        """On the engine thread: the step, then the per-unit changes readers must see.

        Returns the buffer published before the step and the number of units whose state changed
        or that raised an alarm (their indices, up to EVENT_CAP, are in ``self._events``)."""
        f = self.farm
        self.chaos.advance(f.time_s)            # due faults become commands of this step
        pending = bool(f._pending)
        clock = float(f._aging_clock[0])
        prev = f._src
        t_step = time.perf_counter()
        agg = f.step(self.dt, n, parallel=self.threads > 1)
        self._step_s = time.perf_counter() - t_step
        self._next_pub = Published(f._src, f.tick, f.time_s, f.generation, agg)
        aged = float(f._aging_clock[0]) < clock + n * self.dt - 1e-9
        count = scan_events(f.status[f._src], f.status[prev], f.alarms[f._src], f.alarms[prev],
                            self._events)
        if self.devices is not None and (pending or aged or count):
            self.devices.prepare_refresh()
        return prev, count

    def _local_profile(self):
        from bess_farm.engine.layout import K_P_RATED
        from bess_farm.engine.profiles import (Profile, daily_arbitrage, frequency_regulation,
                                               peak_shaving)
        rs, f = self.site.run, self.farm
        rated = float(f.kpar[f.kind, K_P_RATED].sum())
        power = rs.power_w if rs.power_w is not None else 0.4 * rated
        sh = f.config.start_hour
        return {"idle": lambda: Profile.constant(0.0), "constant": lambda: Profile.constant(power),
                "daily-arbitrage": lambda: daily_arbitrage(power, start_hour=sh),
                "frequency-regulation": lambda: frequency_regulation(power, seed=f.seed),
                "peak-shaving": lambda: peak_shaving(power, start_hour=sh)}[rs.profile]()

    def _device_event(self, kind: str, fields: dict) -> None:
        event(log, logging.INFO, kind.replace("_", " "), **fields)

    # ------------------------------------------------------------------ ticking
    async def run(self) -> None:
        """Tick until :meth:`stop` (or the configured duration), then shut down."""
        rs = self.site.run
        loop = asyncio.get_running_loop()
        period = 1.0 / rs.tick_hz
        t0 = time.monotonic()
        k = 0
        end = t0 + rs.duration_s if rs.duration_s else math.inf
        next_ckpt = t0 + rs.checkpoint_interval_s
        while not self.stopping.is_set():
            due = t0 + k * period
            now = time.monotonic()
            if now >= end:
                break
            if now < due:
                try:
                    await asyncio.wait_for(self.stopping.wait(), min(due, end) - now)
                    break
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() >= end:
                    break
            start = time.monotonic()
            late = start - due
            behind = int(late // period)        # whole ticks missed
            n = 1
            if behind > 0:
                self.stats.overruns += 1
                if rs.overrun == "catch-up":
                    n = 1 + min(behind, rs.max_catch_up)
                    self.stats.skipped += behind - (n - 1)
                else:
                    self.stats.skipped += behind
                if self.stats.overruns == 1 or self.stats.overruns % 100 == 0:
                    event(log, logging.WARNING, "tick overrun", late_ms=round(late * 1e3, 1),
                          behind_ticks=behind, overruns=self.stats.overruns, policy=rs.overrun)
            # Missed ticks run one by one, each published: a call of several steps would write
            # both ping-pong buffers, the published one included, while adapters read it.
            for _ in range(n):
                prev_src, n_events = await loop.run_in_executor(self._pool, self._step, 1)
                done = time.monotonic()
                self.stats.ticks += 1
                self._after_tick(prev_src, n_events)
            self.stats.durations.append(done - start)
            self.stats.lateness.append(max(0.0, late))
            self.stats.calls += 1
            self.stats.last_tick_wall = done
            if self.telemetry is not None:
                self.telemetry.record_tick(done - start, max(0.0, late), self._step_s,
                                           time.monotonic() - done)
            k += 1 + max(behind, 0)          # every slot up to now is run or skipped
            if self.store is not None and rs.checkpoint_interval_s > 0 and done >= next_ckpt:
                await self.checkpoint()
                next_ckpt = time.monotonic() + rs.checkpoint_interval_s
        await self.shutdown()

    # ------------------------------------------------------------------ checkpoints
    async def checkpoint(self) -> Path | None:
        """Save the whole state between ticks (on the engine thread); returns the file."""
        if self.store is None:
            return None
        extra = {"profile": self.site.run.profile, "power_w": self.site.run.power_w,
                 "dispatch": self.dispatch_name,
                 "scenario": self.chaos.scenario.name if self.chaos and self.chaos.scenario else None}
        arrays = self.devices.controls.export()          # copied here, on the loop thread
        t = time.perf_counter()
        try:
            path = await asyncio.get_running_loop().run_in_executor(self._pool, self._save, extra, arrays)
        except OSError as exc:
            event(log, logging.ERROR, "checkpoint failed", dir=str(self.store.directory), error=str(exc))
            return None
        self.devices.publish_refresh()
        self._saved_tick = self.farm.tick
        event(log, logging.INFO, "checkpoint", file=str(path), tick=self.farm.tick,
              seconds=round(time.perf_counter() - t, 3), mb=round(path.stat().st_size / 1e6, 1))
        return path

    def _save(self, extra: dict, arrays: dict) -> Path:
        path = self.store.save(self.farm, extra=extra, extra_arrays=arrays)
        # saving took in queued commands, as a step would: republish what readers see
        self.devices.prepare_refresh()
        return path

    def _log_rejected(self, result) -> None:
        for r in result.rejected:
            event(log, logging.WARNING, "checkpoint rejected", file=str(r.path), reason=r.reason,
                  kind=r.kind, moved_to=str(r.moved_to) if r.moved_to else None)

    def _after_tick(self, prev_src: int, n_events: int) -> None:
        """On the loop thread between ticks: publish, revert quiet controls, log events."""
        from bess_farm.engine.layout import ALARM_NAMES, FAULT, STATE_NAMES, THERMAL_RUNAWAY
        self.pub = self._next_pub
        self.devices.publish_refresh(self.pub)
        self.devices.revert_due()
        if self.api is not None:
            self.api.history.sample(self.farm, self.pub)
        if not n_events:
            return
        f = self.farm
        src = f._src
        new_state, old_state = f.status[src], f.status[prev_src]
        new_al, old_al = f.alarms[src], f.alarms[prev_src]
        logged = 0
        for i in self._events[:min(n_events, EVENT_CAP)]:
            if logged >= 10:
                break
            st, al = new_state[i], int(new_al[i] & ~old_al[i])
            if st != old_state[i] and st in (FAULT, THERMAL_RUNAWAY):
                event(log, logging.WARNING if st == FAULT else logging.CRITICAL,
                      "unit tripped" if st == FAULT else "thermal runaway",
                      unit=int(f.unit_id[i]), state=STATE_NAMES[st],
                      alarms=",".join(n for b, n in enumerate(ALARM_NAMES) if new_al[i] >> b & 1))
                logged += 1
            elif al:
                event(log, logging.INFO, "alarm", unit=int(f.unit_id[i]),
                      raised=",".join(n for b, n in enumerate(ALARM_NAMES) if al >> b & 1))
                logged += 1
        if n_events > logged and logged >= 10:
            event(log, logging.INFO, "more unit events this tick", count=int(n_events - logged))

    def stop(self) -> None:
        self.stopping.set()

    async def shutdown(self) -> None:
        """Stop accepting connections (HTTP, Modbus), then release the engine thread."""
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                try:
                    await asyncio.wait_for(self._http_task, 5)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    pass
            try:
                await asyncio.wait_for(self._http.shutdown(), 5)
            except (asyncio.TimeoutError, Exception):     # noqa: BLE001  (best effort at exit)
                pass
            self._http = None
        for s in self.servers:
            await s.shutdown()
        self.servers = []
        # a clean stop leaves no fault behind: the scenario's reverts go into the checkpoint
        if self.chaos is not None and self.chaos.running:
            self.chaos.stop("shutdown")
        # the current tick is finished (run() checks for stop between ticks): save it
        if self.store is not None and self.pub is not None and self.devices is not None \
                and self.farm.tick != self._saved_tick:
            await self.checkpoint()
        if self.telemetry is not None:             # flushes the last OTLP export
            await asyncio.get_running_loop().run_in_executor(None, self.telemetry.shutdown)
            self.telemetry = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        event(log, logging.INFO, "stopped", **{k: round(v, 2) if isinstance(v, float) else v
                                              for k, v in self.stats.summary().items()})


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when it is installed (``pip install 'bess-farm[fast]'``) and not
    disabled with ``BESS_UVLOOP=0``; asyncio's otherwise."""
    if os.environ.get("BESS_UVLOOP", "1") != "0":
        try:
            import uvloop
            return uvloop.new_event_loop()
        except ImportError:
            pass
    return asyncio.new_event_loop()


class RuntimeThread:
    """A runtime on its own event loop in a background thread, for embedding ``bess run`` in a
    test suite or a notebook::

        with RuntimeThread(load_site_config(None)) as rt:       # returns once ready
            port = rt.runtime.site.modbus.port
            rt.call(lambda: rt.runtime.farm.set_farm_power(1e6))   # on the loop thread

    Startup errors are raised from ``__enter__``; ``__exit__`` stops the runtime (graceful
    shutdown) and waits for the thread.
    """

    def __init__(self, site: SiteConfig, ready_timeout: float = 120.0):
        self.site = site
        self.ready_timeout = ready_timeout
        self.runtime: Runtime | None = None
        self._loop = new_event_loop()
        self._error: list[BaseException] = []
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="bess-runtime", daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def go():
            self.runtime = rt = Runtime(self.site)
            try:
                await rt.start()
            except BaseException as exc:       # noqa: BLE001  (re-raised in __enter__)
                self._error.append(exc)
                self._started.set()
                await rt.shutdown()
                return
            self._started.set()
            await rt.run()
        try:
            self._loop.run_until_complete(go())
        finally:
            self._started.set()

    def __enter__(self) -> "RuntimeThread":
        self._thread.start()
        if not self._started.wait(self.ready_timeout):
            self.stop()
            raise TimeoutError(f"the runtime was not ready within {self.ready_timeout:g} s")
        if self._error:
            self._thread.join(10)
            raise self._error[0]
        return self

    def call(self, fn, *args, timeout: float = 10.0):
        """Run ``fn(*args)`` on the runtime's loop thread (where adapters run) and return its result."""
        async def wrap():
            return fn(*args)
        return asyncio.run_coroutine_threadsafe(wrap(), self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.runtime is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.runtime.stop)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the runtime did not stop within {timeout:g} s")

    def __exit__(self, *exc) -> None:
        self.stop()


async def serve(site: SiteConfig) -> Runtime:
    """Start, install signal handlers, tick until stopped; returns the stopped runtime."""
    rt = Runtime(site)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, rt.stop)
        except (NotImplementedError, RuntimeError):     # not the main thread
            pass
    try:
        await rt.start()
    except BaseException:
        await rt.shutdown()
        raise
    await rt.run()
    return rt


def main(args) -> int:
    """Entry of ``bess run`` (arguments from interfaces/cli.py)."""
    setup_logging(args.log_format, args.log_level)
    try:
        site = load_site_config(args.config)
    except SiteConfigError as exc:
        print(f"bess: error: {exc}", file=sys.stderr)
        return 2
    ms, rs = site.modbus, site.run
    if args.modbus_host is not None:
        ms.host = args.modbus_host
    if args.modbus_port is not None:
        ms.port = args.modbus_port
    if args.speed is not None:
        rs.speed = args.speed
    if args.overrun is not None:
        rs.overrun = args.overrun
    if args.profile is not None:
        rs.profile = args.profile
    if args.duration is not None:
        rs.duration_s = args.duration
    if getattr(args, "api_host", None) is not None:
        site.api.host = args.api_host
    if getattr(args, "api_port", None) is not None:
        site.api.port = args.api_port
    if getattr(args, "no_api", False):
        site.api.enabled = False
    if getattr(args, "fresh", False):
        rs.fresh = True
    if getattr(args, "state_dir", None) is not None:
        rs.state_dir = str(args.state_dir)
    if getattr(args, "checkpoint_interval", None) is not None:
        rs.checkpoint_interval_s = args.checkpoint_interval
    if getattr(args, "no_checkpoints", False):
        rs.checkpoints = False
    if getattr(args, "scenario", None):
        rs.scenario = args.scenario
    try:
        rs.shard = parse_shard(getattr(args, "shard", None) or os.environ.get("BESS_SHARD"),
                               os.environ.get("BESS_SHARD_FROM_HOSTNAME", "") not in ("", "0"))
    except ValueError as exc:
        print(f"bess: error: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(site))
    except (SiteConfigError, OSError, ValueError) as exc:      # ScenarioError is a ValueError
        print(f"bess: error: {exc}", file=sys.stderr)
        return 2
    return 0
