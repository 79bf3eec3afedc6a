"""REST API: Starlette on uvicorn, in the runtime's process and event loop (default port 8000).

Every route is declared once in :data:`ROUTES` with its parameters, body schema and responses;
the OpenAPI 3.1 document (``/openapi.json``) and the request validation are both generated from
that table, so the document cannot drift from the code. Reads see the published tick only (the
same record and per-unit copies as Modbus); writes are engine commands that take effect at the
next tick and answer with that tick's number.

Security: write routes need ``Authorization: Bearer <token>``; the token comes from
``BESS_API_TOKEN``, or ``[api] token_file``, or is generated at start and printed once. Tokens are
compared in constant time. Read routes are open unless ``[api] read_auth = true``. No CORS unless
``[api] cors_origins`` lists origins. Errors are JSON: ``{"error": {"status", "message", "field"}}``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Callable

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bess_farm import __version__
from bess_farm.engine.layout import (ALARM_NAMES, CAP_AH, FLAG_ENABLED, FLAG_MANUAL, K_P_RATED,
                                     SETPOINT_W, SOC_RSV_MAX, SOC_RSV_MIN, SOH,
                                     STATE_NAMES, TRIPS)
from .schema import SchemaError, validate

log = logging.getLogger("bess.api")

MAX_BODY = 64 * 1024
MAX_UNITS_PER_WRITE = 100_000


@dataclass
class ApiSettings:
    host: str = "0.0.0.0"
    port: int = 8000
    enabled: bool = True
    token: str | None = None
    token_file: str | None = None
    read_auth: bool = False
    cors_origins: list[str] = field(default_factory=list)
    history_units: str = "0-15"          # units with a history ring buffer
    history_length: int = 600            # samples kept per unit
    history_interval_s: float = 1.0      # simulated seconds between samples


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


# --------------------------------------------------------------------------------- schemas
_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer"}
UNIT_SELECTOR = {
    "oneOf": [
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1,
         "maxItems": MAX_UNITS_PER_WRITE},
        {"type": "string", "pattern": r"^(\s*\d+(\s*-\s*\d+)?(\s*,\s*\d+(\s*-\s*\d+)?)*\s*|all)$",
         "maxLength": 10_000, "examples": ["0-9,20"]},
    ],
    "description": "unit ids: a list, ranges like \"0-9,20\", or \"all\"",
}
SCHEMAS: dict[str, dict] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["status", "message"],
        "properties": {"status": _INT, "message": {"type": "string"},
                       "field": {"type": ["string", "null"]}}}}},
    "Accepted": {"type": "object", "required": ["accepted", "tick"],
                 "properties": {"accepted": {"type": "boolean"},
                                "tick": {"type": "integer", "description": "the tick at which it takes effect"},
                                "units": {"type": "integer"}}},
    "Health": {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
    "Ready": {"type": "object", "required": ["ready", "checks"],
              "properties": {"ready": {"type": "boolean"},
                             "checks": {"type": "object", "additionalProperties": {"type": "string"}}}},
    "Farm": {"type": "object", "required": ["name", "units", "tick", "time_s", "aggregates"],
             "properties": {"name": {"type": "string"}, "units": _INT, "kinds": {"type": "array"},
                            "tick": _INT, "time_s": _NUM, "tick_hz": _NUM, "speed": _NUM,
                            "setpoint_w": _NUM, "dispatch": {"type": "string"},
                            "modbus": {"type": "object"}, "aggregates": {"type": "object"},
                            "runtime": {"type": "object"}}},
    "UnitSummary": {"type": "object", "required": ["id", "state"],
                    "properties": {"id": _INT, "row": _INT, "state": {"enum": list(STATE_NAMES)},
                                   "soc": _NUM, "soh": _NUM, "temp_c": _NUM, "p_ac_w": _NUM,
                                   "alarms": {"type": "array", "items": {"type": "string"}}}},
    "UnitList": {"type": "object", "required": ["total", "offset", "limit", "units"],
                 "properties": {"total": _INT, "offset": _INT, "limit": _INT, "tick": _INT,
                                "units": {"type": "array", "items": {"$ref": "#/components/schemas/UnitSummary"}}}},
    "Unit": {"type": "object", "required": ["id", "state", "soc"],
             "properties": {"id": _INT, "row": _INT, "kind": {"type": "string"},
                            "vendor": {"type": "string"}, "model": {"type": "string"},
                            "state": {"enum": list(STATE_NAMES)},
                            "alarms": {"type": "array", "items": {"type": "string"}},
                            "soc": _NUM, "soc_measured": _NUM, "soh": _NUM, "temp_c": _NUM,
                            "temp_measured_c": _NUM, "voltage_v": _NUM, "voltage_measured_v": _NUM,
                            "current_a": _NUM, "p_ac_w": _NUM, "p_dc_w": _NUM, "p_hvac_w": _NUM,
                            "p_request_w": _NUM, "efc": _NUM, "e_ac_charged_wh": _NUM,
                            "e_ac_discharged_wh": _NUM, "capacity_ah": _NUM, "mode": {"enum": ["auto", "manual"]},
                            "enabled": {"type": "boolean"}, "setpoint_w": _NUM, "soc_rsv_min": _NUM,
                            "soc_rsv_max": _NUM, "trips": _INT, "tick": _INT, "time_s": _NUM,
                            "modbus": {"type": ["object", "null"]},
                            "scada": {"type": "object", "description": "what SCADA sees: reachable, "
                                                                      "the communication fault"}}},
    "History": {"type": "object", "required": ["id", "interval_s", "samples"],
                "properties": {"id": _INT, "interval_s": _NUM, "fields": {"type": "array"},
                               "states": {"type": "array", "items": {"type": "string"},
                                          "description": "names of the state codes in samples"},
                               "samples": {"type": "array", "items": {"type": "array", "items": _NUM_OR_NULL}}}},
    "FarmSetpoint": {"type": "object", "required": ["power_w"], "additionalProperties": False,
                     "properties": {"power_w": {"type": "number", "minimum": -1e13, "maximum": 1e13,
                                                "description": "W, positive = discharge"}}},
    "FarmDispatch": {"type": "object", "required": ["profile"], "additionalProperties": False,
                     "properties": {"profile": {"enum": ["daily-arbitrage", "idle", "constant",
                                                         "frequency-regulation", "peak-shaving"]},
                                    "power_w": {"type": "number", "minimum": -1e13, "maximum": 1e13}}},
    "UnitSetpoint": {"type": "object", "required": ["power_w"], "additionalProperties": False,
                     "properties": {"power_w": {"type": "number", "x-unit-power": True,
                                                "description": "W, positive = discharge"}}},
    "UnitsSetpoint": {"type": "object", "required": ["units", "power_w"], "additionalProperties": False,
                      "properties": {"units": UNIT_SELECTOR,
                                     "power_w": {"type": "number", "x-unit-power": True}}},
    "Mode": {"type": "object", "required": ["mode"], "additionalProperties": False,
             "properties": {"mode": {"enum": ["auto", "manual"]}}},
    "UnitsMode": {"type": "object", "required": ["units", "mode"], "additionalProperties": False,
                  "properties": {"units": UNIT_SELECTOR, "mode": {"enum": ["auto", "manual"]}}},
    "Enable": {"type": "object", "required": ["enabled"], "additionalProperties": False,
               "properties": {"enabled": {"type": "boolean"}}},
    "UnitsEnable": {"type": "object", "required": ["units", "enabled"], "additionalProperties": False,
                    "properties": {"units": UNIT_SELECTOR, "enabled": {"type": "boolean"}}},
    "Reset": {"type": "object", "additionalProperties": False,
              "properties": {"units": UNIT_SELECTOR}},
    "Empty": {"type": "object", "additionalProperties": False, "properties": {}},
    "ScenarioStart": {"description": "a built-in scenario by name, or a scenario file's TOML text",
                      "oneOf": [
                          {"type": "object", "additionalProperties": False, "required": ["name"],
                           "properties": {"name": {"type": "string", "maxLength": 200}}},
                          {"type": "object", "additionalProperties": False, "required": ["toml"],
                           "properties": {"toml": {"type": "string", "maxLength": 60000}}}]},
    "Scenarios": {"type": "object", "required": ["builtin", "status"],
                  "properties": {"builtin": {"type": "array", "items": {"type": "object"}},
                                 "status": {"type": "object"}}},
    "ActiveFaults": {"type": "object", "required": ["status", "faults"],
                     "properties": {"status": {"type": "object"},
                                    "faults": {"type": "array", "items": {"type": "object"}},
                                    "comm_faults": {"type": "object"}}},
    "Events": {"type": "object", "required": ["events", "last"],
               "properties": {"events": {"type": "array", "items": {"type": "object"}},
                              "last": {"type": "integer"}}},
    "ScenarioAccepted": {"type": "object", "required": ["accepted", "tick"],
                         "properties": {"accepted": {"type": "boolean"}, "tick": {"type": "integer"},
                                        "scenario": {"type": ["object", "null"]},
                                        "reverted": {"type": "integer"}}},
}


@dataclass
class Param:
    name: str
    where: str            # "path" | "query"
    schema: dict
    description: str = ""
    required: bool = False
    hint: str | None = None   # the 422 message when the value breaks the schema


@dataclass
class RouteSpec:
    method: str
    path: str
    name: str
    summary: str
    handler: str                       # method name on Api
    body: str | None = None            # schema name
    response: str | None = None        # schema name of the 200 body
    params: list[Param] = field(default_factory=list)
    write: bool = False
    content_type: str = "application/json"
    body_required: bool = True


_STATES_RE = "^({0})(,({0}))*$".format("|".join(STATE_NAMES))
_UNIT_ID = Param("unit_id", "path", {"type": "integer", "minimum": 0, "x-unit-id": True},
                 "farm-wide unit id", True)
ROUTES: list[RouteSpec] = [
    RouteSpec("GET", "/healthz", "health", "Liveness: the process and its event loop answer",
              "healthz", response="Health"),
    RouteSpec("GET", "/readyz", "ready", "Readiness: the engine ticks within its budget and the "
              "Modbus listeners are bound (503 otherwise)", "readyz", response="Ready"),
    RouteSpec("GET", "/api/v1/farm", "farm", "Farm aggregates and configuration summary",
              "farm_route", response="Farm"),
    RouteSpec("GET", "/api/v1/units", "units", "Units, filtered and paginated", "units",
              response="UnitList", params=[
                  Param("state", "query", {"type": "string", "pattern": _STATES_RE},
                        "comma-separated states: " + ", ".join(STATE_NAMES),
                        hint="state: use one or more of " + ", ".join(STATE_NAMES) + ", comma-separated"),
                  Param("alarm", "query", {"type": "string", "enum": list(ALARM_NAMES)},
                        "units with this alarm bit"),
                  Param("soc_min", "query", {"type": "number", "minimum": 0, "maximum": 1}),
                  Param("soc_max", "query", {"type": "number", "minimum": 0, "maximum": 1}),
                  Param("row", "query", {"type": "integer", "minimum": 0}),
                  Param("offset", "query", {"type": "integer", "minimum": 0}),
                  Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
              ]),
    RouteSpec("GET", "/api/v1/units/{unit_id}", "unit", "One unit in full", "unit",
              response="Unit", params=[_UNIT_ID]),
    RouteSpec("GET", "/api/v1/units/{unit_id}/history", "unit_history",
              "Recent history of a unit (units listed in [api] history_units)", "unit_history",
              response="History", params=[_UNIT_ID]),
    RouteSpec("GET", "/api/v1/stream", "stream", "Server-sent events: farm aggregates at 1-10 Hz",
              "stream", params=[Param("rate_hz", "query", {"type": "number", "minimum": 1,
                                                           "maximum": 10}, "events per second")],
              content_type="text/event-stream"),
    RouteSpec("GET", "/api/v1/scenarios", "scenarios", "Built-in chaos scenarios and the one running",
              "scenarios", response="Scenarios"),
    RouteSpec("GET", "/api/v1/scenarios/active", "scenario_active", "Active faults of the running "
              "scenario", "scenario_active", response="ActiveFaults"),
    RouteSpec("GET", "/api/v1/events", "events", "Fault and scenario events (start, end), oldest "
              "first; poll with since= the last seq seen (Grafana annotations: wall_time is the "
              "event's Unix time)", "events_route",
              response="Events", params=[
                  Param("since", "query", {"type": "integer", "minimum": 0}, "events after this seq"),
                  Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 2000})]),
    RouteSpec("POST", "/api/v1/scenarios/start", "scenario_start", "Start a chaos scenario (409 "
              "while one runs)", "scenario_start", body="ScenarioStart", response="ScenarioAccepted",
              write=True),
    RouteSpec("POST", "/api/v1/scenarios/stop", "scenario_stop", "Stop the running scenario and "
              "revert its faults", "scenario_stop", body="Empty", response="ScenarioAccepted",
              write=True, body_required=False),
    RouteSpec("POST", "/api/v1/farm/setpoint", "farm_setpoint", "Farm AC power setpoint (replaces "
              "the local dispatch profile)", "farm_setpoint", body="FarmSetpoint", response="Accepted",
              write=True),
    RouteSpec("POST", "/api/v1/farm/dispatch", "farm_dispatch", "Back to a local dispatch profile",
              "farm_dispatch", body="FarmDispatch", response="Accepted", write=True),
    RouteSpec("POST", "/api/v1/farm/reset", "farm_reset", "Alarm reset of all (or the listed) units",
              "reset_units", body="Reset", response="Accepted", write=True, body_required=False),
    RouteSpec("POST", "/api/v1/units/setpoint", "units_setpoint", "Setpoint of several units "
              "(they switch to manual mode)", "units_setpoint", body="UnitsSetpoint",
              response="Accepted", write=True),
    RouteSpec("POST", "/api/v1/units/mode", "units_mode", "Mode of several units", "units_mode",
              body="UnitsMode", response="Accepted", write=True),
    RouteSpec("POST", "/api/v1/units/enable", "units_enable", "Enable or disable several units",
              "units_enable", body="UnitsEnable", response="Accepted", write=True),
    RouteSpec("POST", "/api/v1/units/{unit_id}/setpoint", "unit_setpoint", "A unit's AC power "
              "setpoint (it switches to manual mode)", "unit_setpoint", body="UnitSetpoint",
              response="Accepted", params=[_UNIT_ID], write=True),
    RouteSpec("POST", "/api/v1/units/{unit_id}/mode", "unit_mode", "A unit's mode", "unit_mode",
              body="Mode", response="Accepted", params=[_UNIT_ID], write=True),
    RouteSpec("POST", "/api/v1/units/{unit_id}/enable", "unit_enable", "Enable or disable a unit",
              "unit_enable", body="Enable", response="Accepted", params=[_UNIT_ID], write=True),
    RouteSpec("POST", "/api/v1/units/{unit_id}/reset", "unit_reset", "Alarm reset of a unit",
              "unit_reset", body="Empty", response="Accepted", params=[_UNIT_ID], write=True,
              body_required=False),
]


# --------------------------------------------------------------------------------- history
class History:
    """Bounded ring buffers for a configured set of units, sampled in simulated time."""

    FIELDS = ("time_s", "soc", "temp_c", "p_ac_w", "voltage_v", "current_a", "state")

    def __init__(self, units: np.ndarray, length: int, interval_s: float):
        self.units = units
        self.index = {int(u): j for j, u in enumerate(units)}
        self.length = length
        self.interval_s = interval_s
        self.buf = np.full((units.size, length, len(self.FIELDS)), np.nan, dtype=np.float64)
        self.count = 0
        self.next_t = -math.inf

    def sample(self, farm, pub) -> None:
        if pub.time_s < self.next_t or not self.units.size:
            return
        self.next_t = pub.time_s + self.interval_s
        u, s = self.units, pub.src
        row = self.buf[:, self.count % self.length]
        row[:, 0] = pub.time_s
        row[:, 1] = farm.dyn[s, 0, u]
        row[:, 2] = farm.dyn[s, 3, u]
        row[:, 3] = farm.out[s, 2, u]
        row[:, 4] = farm.out[s, 1, u]
        row[:, 5] = farm.out[s, 0, u]
        row[:, 6] = farm.status[s, u]
        self.count += 1

    def of(self, unit: int) -> np.ndarray:
        j = self.index[unit]
        n = min(self.count, self.length)
        start = (self.count - n) % self.length
        idx = (start + np.arange(n)) % self.length
        return self.buf[j, idx]


# --------------------------------------------------------------------------------- the API
def farm_schemas(n_units: int, max_rated_w: float, first: int = 0) -> dict[str, dict]:
    """SCHEMAS with this farm's limits filled in: the path's unit id below ``n_units`` (ids in
    bodies are checked by the handlers: 404 for a unit that does not exist), unit power within
    the largest rating (a unit of a smaller kind still refuses more than its own, with 422)."""
    import copy
    out = copy.deepcopy(SCHEMAS)

    def patch(node):
        if isinstance(node, dict):
            if node.get("x-unit-id"):
                node["maximum"] = max(0, n_units - 1)
            if node.get("x-unit-power"):
                node["minimum"], node["maximum"] = -max_rated_w, max_rated_w
            for v in node.values():
                patch(v)
        elif isinstance(node, list):
            for v in node:
                patch(v)
    patch(out)
    out["x-unit-range"] = (first, first + n_units - 1)   # read by _patched, not published
    return out


class Api:
    """Route handlers over a running :class:`~bess_farm.interfaces.runtime.Runtime`."""

    def __init__(self, runtime, settings: ApiSettings):
        from .modbus.vendor import parse_units
        self.rt = runtime
        self.s = settings
        f = runtime.farm
        # history_units are farm-wide ids; a shard keeps those it owns
        units = (parse_units(settings.history_units, f.config.n_units) if settings.history_units
                 else np.zeros(0, np.int64))
        first = int(f.unit_id[0])
        units = units[(units >= first) & (units < first + f.n_units)] - first
        self.history = History(units, settings.history_length, settings.history_interval_s)
        self.token = settings.token
        self.sse_clients = 0
        f = runtime.farm
        self.schemas = farm_schemas(f.n_units, float(f.kpar[:, K_P_RATED].max()), int(f.unit_id[0]))
        from .chaos import list_builtin
        self.schemas["ScenarioStart"]["oneOf"][0]["properties"]["name"]["enum"] = \
            [b["name"] for b in list_builtin()]

    # ------------------------------------------------------------ helpers
    @property
    def farm(self):
        return self.rt.farm

    def _pub(self):
        return self.rt.pub

    @property
    def _first(self) -> int:
        """Farm-wide id of this process's first unit (0 unless it runs one shard)."""
        return int(self.farm.unit_id[0])

    def _where(self) -> str:
        f = self.farm
        return f"units {self._first}..{self._first + f.n_units - 1}" + (
            " in this shard" if self._first or f.n_units < f.config.n_units else "")

    def _unit(self, request: Request) -> int:
        """The local index of the unit in the path (ids are farm-wide)."""
        raw = request.path_params["unit_id"]
        try:
            uid = int(raw)
        except ValueError:
            raise ApiError(422, f"unit_id: {raw!r} is not an integer", "unit_id") from None
        if uid < 0:
            raise ApiError(422, f"unit_id: must be >= 0, got {uid}", "unit_id")
        i = uid - self._first
        if not 0 <= i < self.farm.n_units:
            raise ApiError(404, f"unit {uid} does not exist here ({self._where()})", "unit_id")
        return i

    def _selector(self, value) -> np.ndarray:
        """Unit ids from a list or a "0-9,20" string; 404 naming a unit that does not exist."""
        n = self.farm.n_units
        first = self._first
        if value == "all":
            return np.arange(n, dtype=np.int64)
        if isinstance(value, str):
            ids: list[int] = []
            for part in value.split(","):
                a, _, b = part.strip().partition("-")
                a, b = a.strip(), b.strip() or a.strip()
                if max(len(a.lstrip("0")), len(b.lstrip("0"))) > 12:        # far beyond any farm
                    raise ApiError(404, f"units: {part.strip()[:40]} is not a unit of this farm "
                                        f"(units 0..{n - 1})", "units")
                lo, hi = int(a.lstrip("0") or "0"), int(b.lstrip("0") or "0")
                lo, hi = min(lo, hi), max(lo, hi)
                if hi >= first + n or lo < first:
                    bad = hi if hi >= first + n else lo
                    raise ApiError(404, f"units: unit {bad} does not exist here ({self._where()})", "units")
                if len(ids) + hi - lo + 1 > MAX_UNITS_PER_WRITE:
                    raise ApiError(422, f"units: more than {MAX_UNITS_PER_WRITE} units in one write", "units")
                ids.extend(range(lo, hi + 1))
        else:
            ids = [int(v) for v in value]
        bad = [u for u in (min(ids), max(ids)) if not first <= u < first + n]
        if bad:
            raise ApiError(404, f"units: unit {bad[0]} does not exist here ({self._where()})", "units")
        return np.unique(np.array(ids, dtype=np.int64)) - first

    def _accepted(self, tick: int, units: int | None = None) -> dict:
        d = {"accepted": True, "tick": int(tick)}
        if units is not None:
            d["units"] = int(units)
        return d

    # ------------------------------------------------------------ health
    async def healthz(self, request, body):
        return {"status": "ok"}

    async def readyz(self, request, body):
        rt = self.rt
        checks = {}
        period = 1.0 / rt.site.run.tick_hz
        age = time.monotonic() - rt.stats.last_tick_wall if rt.stats.last_tick_wall else math.inf
        checks["engine"] = "ok" if age < 5 * period + 0.5 else f"no tick for {age:.1f} s"
        listening = bool(rt.servers) and all(s.transport is not None for s in rt.servers)
        checks["modbus"] = "ok" if listening else "not listening"
        checks["started"] = "ok" if rt.ready.is_set() else "starting"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    # ------------------------------------------------------------ reads
    async def farm_info(self):
        rt, f, pub = self.rt, self.farm, self._pub()
        agg = {k: _finite(v) for k, v in pub.agg.as_dict().items()
               if not isinstance(v, (dict, tuple))}
        agg["units_per_state"] = dict(pub.agg.units_per_state)
        agg["units_per_soc_band"] = list(pub.agg.units_per_soc_band)
        agg["units_per_temp_band"] = list(pub.agg.units_per_temp_band)
        ms = rt.site.modbus
        return {
            "name": f.config.name, "units": f.n_units, "tick": pub.tick, "time_s": pub.time_s,
            "tick_hz": rt.site.run.tick_hz, "speed": rt.site.run.speed,
            "setpoint_w": _finite(f.farm_power_setpoint_w), "dispatch": rt.dispatch_name,
            "kinds": [{"vendor": k["vendor"], "model": k["model"], "units": int((f.kind == j).sum()),
                       "rated_w": float(f.kpar[j, K_P_RATED])} for j, k in enumerate(f.kinds)],
            "modbus": {"host": ms.host, "port": ms.port, "ports": rt.devices.n_ports,
                       "units_served": rt.devices.units_served, "plant_device_id": ms.plant_device_id},
            "runtime": {k: _finite(v) for k, v in rt.stats.summary().items()},
            "aggregates": agg,
        }

    async def farm_route(self, request, body):
        return await self.farm_info()

    async def units(self, request, body):
        f, pub = self.farm, self._pub()
        q = request.query_params
        s = pub.src
        mask = np.ones(f.n_units, dtype=bool)
        if "state" in q:
            names = [x for x in q["state"].split(",") if x]
            bad = [x for x in names if x not in STATE_NAMES]
            if bad or not names:
                raise ApiError(422, f"state: unknown state {bad[0] if bad else ''!r}; known: "
                                    f"{', '.join(STATE_NAMES)}", "state")
            codes = [STATE_NAMES.index(x) for x in names]
            mask &= np.isin(f.status[s], codes)
        if "alarm" in q:
            if q["alarm"] not in ALARM_NAMES:
                raise ApiError(422, f"alarm: unknown alarm {q['alarm']!r}; known: {', '.join(ALARM_NAMES)}",
                               "alarm")
            mask &= (f.alarms[s] & (1 << ALARM_NAMES.index(q["alarm"]))) != 0
        soc = f.dyn[s, 0]
        if "soc_min" in q:
            mask &= soc >= _qnum(q, "soc_min", 0, 1)
        if "soc_max" in q:
            mask &= soc <= _qnum(q, "soc_max", 0, 1)
        if "row" in q:
            mask &= f.row == _qint(q, "row", 0, 10**9)
        offset = _qint(q, "offset", 0, 10**9) if "offset" in q else 0
        limit = _qint(q, "limit", 1, 1000) if "limit" in q else 100
        ids = np.flatnonzero(mask)
        page = ids[offset:offset + limit]
        out = []
        for i in page:
            out.append({"id": int(f.unit_id[i]), "row": int(f.row[i]),
                        "state": STATE_NAMES[f.status[s, i]], "soc": _finite(soc[i]),
                        "soh": _finite(self.rt.devices.upar[SOH, i]), "temp_c": _finite(f.dyn[s, 3, i]),
                        "p_ac_w": _finite(f.out[s, 2, i]), "alarms": _alarm_names(int(f.alarms[s, i]))})
        return {"total": int(ids.size), "offset": offset, "limit": limit, "tick": pub.tick, "units": out}

    async def unit(self, request, body):
        i = self._unit(request)
        f, pub, dv = self.farm, self._pub(), self.rt.devices
        s = pub.src
        from .modbus.quantities import Q_SOC_PCT, Q_TEMP_C, Q_VOLTAGE_V
        q = dv.quantities(i) if i < dv.units_served else None
        fl = int(dv.flags[i])
        kind = f.kinds[f.kind[i]]
        port, dev = dv.address_of(i)
        return {
            "id": int(f.unit_id[i]), "row": int(f.row[i]), "kind": f"{kind['vendor']} {kind['model']}",
            "vendor": kind["vendor"], "model": kind["model"], "state": STATE_NAMES[f.status[s, i]],
            "alarms": _alarm_names(int(f.alarms[s, i])), "soc": _finite(f.dyn[s, 0, i]),
            "soc_measured": _finite(q[Q_SOC_PCT] / 100) if q is not None else None,
            "soh": _finite(dv.upar[SOH, i]), "temp_c": _finite(f.dyn[s, 3, i]),
            "temp_measured_c": _finite(q[Q_TEMP_C]) if q is not None else None,
            "voltage_v": _finite(f.out[s, 1, i]),
            "voltage_measured_v": _finite(q[Q_VOLTAGE_V]) if q is not None else None,
            "current_a": _finite(f.out[s, 0, i]), "p_ac_w": _finite(f.out[s, 2, i]),
            "p_dc_w": _finite(f.out[s, 3, i]), "p_hvac_w": _finite(f.out[s, 4, i]),
            "p_request_w": _finite(f.out[s, 5, i]), "efc": _finite(f.dyn[s, 10, i]),
            "e_ac_charged_wh": _finite(f.dyn[s, 4, i]), "e_ac_discharged_wh": _finite(f.dyn[s, 5, i]),
            "capacity_ah": _finite(dv.upar[CAP_AH, i]),
            "mode": "manual" if fl & FLAG_MANUAL else "auto", "enabled": bool(fl & FLAG_ENABLED),
            "setpoint_w": _finite(dv.upar[SETPOINT_W, i]),
            "soc_rsv_min": _finite(dv.upar[SOC_RSV_MIN, i]), "soc_rsv_max": _finite(dv.upar[SOC_RSV_MAX, i]),
            "trips": int(dv.upar[TRIPS, i]), "tick": pub.tick, "time_s": pub.time_s,
            "modbus": {"port": port, "device_id": dev} if i < dv.units_served else None,
            "scada": {"reachable": not self.rt.chaos.comm.unreachable(i),
                      "comm_fault": self.rt.chaos.comm.mode(i)},
        }

    async def unit_history(self, request, body):
        i = self._unit(request)
        if i not in self.history.index:
            raise ApiError(404, f"unit {i + self._first} keeps no history; list it in [api] history_units "
                                f"(now {self.s.history_units!r})", "unit_id")
        data = self.history.of(i)
        return {"id": i + self._first, "interval_s": self.history.interval_s, "fields": list(History.FIELDS),
                "states": list(STATE_NAMES),
                "samples": [[_finite(x) for x in row] for row in data]}

    async def stream(self, request, body):
        q = request.query_params
        rate = _qnum(q, "rate_hz", 1, 10) if "rate_hz" in q else 1.0
        period = 1.0 / rate

        async def events():
            self.sse_clients += 1
            try:
                next_t = time.monotonic()
                while not self.rt.stopping.is_set():
                    info = await self.farm_info()
                    yield f"event: aggregates\nid: {info['tick']}\ndata: {json.dumps(info)}\n\n"
                    next_t += period
                    await asyncio.sleep(max(0.0, next_t - time.monotonic()))
            finally:
                self.sse_clients -= 1
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------ chaos
    async def scenarios(self, request, body):
        from .chaos import list_builtin
        builtin = [{k: v for k, v in b.items() if k != "path"} for b in list_builtin()]
        return {"builtin": builtin, "status": _jsonable(self.rt.chaos.status())}

    async def scenario_active(self, request, body):
        ch = self.rt.chaos
        first = self._first
        return {"status": _jsonable(ch.status()), "faults": _jsonable(ch.active()),
                "comm_faults": {str(int(u) + first): m for u, m in ch.comm.units().items()}}

    async def events_route(self, request, body):
        q = request.query_params
        since = int(q.get("since", 0))
        limit = int(q.get("limit", 500))
        events = _jsonable(self.rt.chaos.events_since(since, limit))
        # wall-clock time of each event (for Grafana annotations): simulated time runs at
        # --speed times the wall clock from the published tick backwards
        now, t_pub, speed = time.time(), self.rt.pub.time_s, self.rt.site.run.speed
        for e in events:
            if e.get("time_s") is not None:
                e["wall_time"] = round(now - (t_pub - e["time_s"]) / speed, 3)
        return {"events": events, "last": events[-1]["seq"] if events else since}

    async def scenario_start(self, request, body):
        from .chaos import ChaosError, ScenarioError, list_builtin, load_scenario, parse_scenario
        if ("name" in body) == ("toml" in body):
            raise ApiError(422, "body: give exactly one of 'name' (a built-in scenario) or 'toml'",
                           "name")
        names = [b["name"] for b in list_builtin()]
        if "name" in body and body["name"] not in names:       # never a path on the server
            raise ApiError(422, f"name: unknown built-in scenario {body['name']!r}; known: "
                                f"{', '.join(names)} (or send the file as 'toml')", "name")
        try:
            sc = (load_scenario(body["name"]) if "name" in body
                  else parse_scenario(body["toml"], source="request"))
            summary = self.rt.chaos.start(sc)
        except ScenarioError as exc:
            raise ApiError(422, str(exc), "name" if "name" in body else "toml") from None
        except ChaosError as exc:
            raise ApiError(409, str(exc)) from None
        self.rt.audit("scenario start", scenario=summary.get("name"))
        return {"accepted": True, "tick": self.farm.tick + 1, "scenario": _jsonable(summary)}

    async def scenario_stop(self, request, body):
        n = self.rt.chaos.stop("stopped by the API")
        self.rt.audit("scenario stop", reverted=n)
        return {"accepted": True, "tick": self.farm.tick + 1, "reverted": int(n), "scenario": None}

    # ------------------------------------------------------------ writes
    async def farm_setpoint(self, request, body):
        tick = self.farm.set_farm_power(body["power_w"])
        self.rt.dispatch_name = "setpoint"
        self.rt.audit("farm setpoint", power_w=body["power_w"])
        return self._accepted(tick)

    async def farm_dispatch(self, request, body):
        tick = self.rt.set_dispatch(body["profile"], body.get("power_w"))
        return self._accepted(tick)

    async def reset_units(self, request, body):
        ids = self._selector(body["units"]) if "units" in body else slice(None)
        tick = self.farm.reset(ids)
        n = self.farm.n_units if isinstance(ids, slice) else ids.size
        self.rt.audit("alarm reset", units=n)
        return self._accepted(tick, n)

    async def units_setpoint(self, request, body):
        ids = self._selector(body["units"])
        tick = self._unit_power(ids, body["power_w"])
        return self._accepted(tick, ids.size)

    def _unit_power(self, ids, w):
        rated = self.farm.kpar[self.farm.kind[ids], K_P_RATED]
        if np.any(np.abs(w) > rated):
            j = int(np.flatnonzero(np.abs(w) > rated)[0])
            raise ApiError(422, f"power_w: {w:g} W exceeds unit {int(ids[j])}'s rating of "
                                f"{rated[j]:g} W", "power_w")
        tick = self.farm.set_unit_power(ids, w)
        self.rt.audit("unit setpoint", units=int(np.size(ids)), power_w=w)
        return tick

    async def units_mode(self, request, body):
        ids = self._selector(body["units"])
        return self._accepted(self.farm.set_mode(ids, body["mode"]), ids.size)

    async def units_enable(self, request, body):
        ids = self._selector(body["units"])
        return self._accepted(self.farm.set_enabled(ids, body["enabled"]), ids.size)

    async def unit_setpoint(self, request, body):
        i = self._unit(request)
        return self._accepted(self._unit_power(np.array([i]), body["power_w"]), 1)

    async def unit_mode(self, request, body):
        return self._accepted(self.farm.set_mode(self._unit(request), body["mode"]), 1)

    async def unit_enable(self, request, body):
        return self._accepted(self.farm.set_enabled(self._unit(request), body["enabled"]), 1)

    async def unit_reset(self, request, body):
        return self._accepted(self.farm.reset(self._unit(request)), 1)

    # ------------------------------------------------------------ plumbing
    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token or not self.token:
            return False
        return hmac.compare_digest(token.strip().encode(), self.token.encode())

    def endpoint(self, spec: RouteSpec) -> Callable:
        handler = getattr(self, spec.handler)
        body_schema = self.schemas[spec.body] if spec.body else None
        params = [Param(p.name, p.where, _patched(p.schema, self.schemas), p.description, p.required,
                        p.hint) for p in spec.params]

        async def run(request: Request) -> Response:
            try:
                if (spec.write or self.s.read_auth) and spec.name not in ("health", "ready") \
                        and not self._authorized(request):
                    return _error(401, "a valid bearer token is required (Authorization: Bearer ...)",
                                  None, {"WWW-Authenticate": "Bearer"})
                for p in params:
                    if p.where == "query" and p.name in request.query_params:
                        _check_query(p, request.query_params[p.name])
                unknown = set(request.query_params) - {p.name for p in params if p.where == "query"}
                if unknown:
                    name = sorted(unknown)[0]
                    raise ApiError(422, f"{name}: unknown query parameter", name)
                body = None
                if body_schema is not None:
                    body = await _read_json(request)
                    try:
                        validate(body, body_schema)
                    except SchemaError as exc:
                        raise ApiError(422, str(exc), exc.field) from None
                if self.rt.pub is None:
                    raise ApiError(503, "the engine has not published a tick yet")
                result = await handler(request, body)
                if isinstance(result, Response):
                    return result
                return JSONResponse(result)
            except ApiError as exc:
                return _error(exc.status, exc.message, exc.field)
            except ValueError as exc:           # engine command validation
                return _error(422, str(exc), None)
        return run


class _BodyTooLarge(Exception):
    pass


async def _read_json(request: Request):
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > MAX_BODY:
                raise ApiError(413, f"request body over {MAX_BODY} bytes")
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"request body over {MAX_BODY} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if not raw:
        return {}
    try:
        # a JSON body is taken whatever its declared type (curl -d sends form-urlencoded)
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        if ctype not in ("application/json", "text/json", ""):
            raise ApiError(415, f"content type {ctype!r} and not a JSON body: send application/json") from None
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _check_query(p: Param, raw: str) -> None:
    t = p.schema.get("type")
    value: Any = raw
    try:
        if t == "integer":
            value = int(raw)
        elif t == "number":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
    except ValueError:
        raise ApiError(422, f"{p.name}: must be {'an integer' if t == 'integer' else 'a number'}",
                       p.name) from None
    try:
        validate(value, p.schema, p.name)
    except SchemaError as exc:
        raise ApiError(422, p.hint or str(exc), exc.field) from None


def _qnum(q, name, lo, hi) -> float:
    v = float(q[name])
    return min(hi, max(lo, v))


def _qint(q, name, lo, hi) -> int:
    return int(min(hi, max(lo, int(q[name]))))


def _finite(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return v
    return x if math.isfinite(x) else None


def _jsonable(x):
    """Chaos records (numpy ids and floats, tuples) as JSON values; non-finite numbers as null."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [_jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer, float, np.floating)):
        return _finite(x)
    return x


def _alarm_names(bits: int) -> list[str]:
    return [n for b, n in enumerate(ALARM_NAMES) if bits >> b & 1]


def _error(status: int, message: str, field: str | None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message, "field": field}},
                        status_code=status, headers=headers)


# --------------------------------------------------------------------------------- OpenAPI
_ERRORS = {400: "Malformed request (not JSON)", 401: "Missing or wrong bearer token",
           409: "A scenario is already running",
           404: "No such route or unit", 413: "Body larger than 64 KiB",
           415: "Body is not application/json", 422: "A field breaks a rule (named in the body)",
           503: "Not ready"}


def openapi_document(schemas: dict[str, dict] | None = None, server_url: str | None = None) -> dict:
    """The OpenAPI 3.1 document; ``schemas`` from :func:`farm_schemas` carries a farm's limits."""
    schemas = schemas or SCHEMAS
    paths: dict[str, dict] = {}
    for spec in ROUTES:
        op: dict[str, Any] = {"operationId": spec.name, "summary": spec.summary,
                              "tags": ["health" if spec.path in ("/healthz", "/readyz") else
                                       ("write" if spec.write else "read")]}
        params = []
        for p in spec.params:
            params.append({"name": p.name, "in": p.where, "required": p.required or p.where == "path",
                           "description": p.description, "schema": _strip(_patched(p.schema, schemas))})
        if params:
            op["parameters"] = params
        if spec.body:
            op["requestBody"] = {"required": spec.body_required, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{spec.body}"}}}}
        responses: dict[str, Any] = {}
        if spec.content_type == "text/event-stream":
            responses["200"] = {"description": "a stream of `aggregates` events (data: the Farm object)",
                                "content": {"text/event-stream": {"schema": {"type": "string"}}}}
        else:
            responses["200"] = {"description": "OK", "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{spec.response}"}}}}
        codes = [422, 503]
        if spec.name == "scenario_start":
            codes.append(409)
        if spec.write or spec.body:
            codes += [400, 401, 413, 415]
        if any(p.where == "path" for p in spec.params) or (spec.body and "units" in
                                                           SCHEMAS[spec.body].get("properties", {})):
            codes.append(404)
        if spec.path == "/readyz":
            responses["503"] = {"description": "Not ready", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Ready"}}}}
            codes = []
        if spec.path == "/healthz":
            codes = []
        for c in sorted(set(codes)):
            responses[str(c)] = {"description": _ERRORS[c], "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
        op["responses"] = responses
        if spec.write:
            op["security"] = [{"bearer": []}]
        paths.setdefault(spec.path, {})[spec.method.lower()] = op
    schemas = {k: _strip(v) for k, v in schemas.items() if not k.startswith("x-")}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "bess-farm API", "version": __version__,
                 "description": "Drive and read a running bess-farm (docs/api.md). Writes take effect "
                                "at the next tick and answer with its number."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc


def _patched(schema: dict, schemas: dict) -> dict:
    """A parameter schema with the farm's unit-id limit (as in :func:`farm_schemas`)."""
    if schema.get("x-unit-id"):
        lo, hi = schemas["x-unit-range"]
        return {**schema, "minimum": lo, "maximum": hi}
    return schema


def _strip(schema):
    """The schema as published (the private ``x-`` markers removed)."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def docs_page() -> str:
    return resources.files("bess_farm.interfaces").joinpath("api_docs.html").read_text(encoding="utf-8")


def build_app(api: Api) -> Starlette:
    # {unit_id:int}: "/units/enable" must not match the one-unit route (its 405 would advertise
    # the wrong methods); the document keeps the plain template
    routes = [Route(spec.path.replace("{unit_id}", "{unit_id:int}"), api.endpoint(spec),
                    methods=[spec.method], name=spec.name) for spec in ROUTES]
    doc = openapi_document(api.schemas)

    async def openapi(request):
        return JSONResponse(doc)

    async def docs(request):
        return HTMLResponse(docs_page())

    routes += [Route("/openapi.json", openapi, methods=["GET"]), Route("/docs", docs, methods=["GET"])]
    middleware = []
    if api.s.cors_origins:
        middleware.append(Middleware(CORSMiddleware, allow_origins=api.s.cors_origins,
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization",
                                                                                   "Content-Type"]))

    async def not_found(request, exc):
        return _error(exc.status_code, "no such route" if exc.status_code == 404 else
                      (exc.detail or "error"), None, getattr(exc, "headers", None))

    async def server_error(request, exc):
        log.exception("api: %s %s failed", request.method, request.url.path)
        return _error(500, "internal error (logged)", None)

    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: not_found, Exception: server_error})

