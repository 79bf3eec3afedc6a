"""HTTP server metrics for an ASGI app, after OpenTelemetry's HTTP semantic conventions.

``http.server.request.duration`` (seconds) with ``http.route`` (the route *template*, e.g.
``/units/{unit_id}``, never the raw path), ``http.request.method`` (known methods, else
``_OTHER``), ``http.response.status_code``, ``url.scheme`` and, for 5xx answers and exceptions,
``error.type``. Its ``_count`` is the request count.

    app = instrument_http(build_app(api), lambda: runtime.telemetry)

The second argument is a :class:`~.setup.Telemetry`, an OpenTelemetry ``Meter``, or a callable
returning a Telemetry (or None) at request time, so the app can be built before telemetry starts
and served while it is off: requests then pass through untouched.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable

KNOWN_METHODS = frozenset({"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT",
                           "TRACE"})
_CONVERTER = re.compile(r"{([^}:]+):[^}]+}")


def route_template(path: str) -> str:
    """Starlette path with converters -> the template (``/units/{unit_id:int}`` -> ``/units/{unit_id}``)."""
    return _CONVERTER.sub(r"{\1}", path)


class HttpMetricsMiddleware:
    """Pure ASGI middleware (no BaseHTTPMiddleware: streaming and background tasks unaffected)."""

    def __init__(self, app, source: Any):
        self.app = app
        self._source = source
        self._histogram = None
        if not callable(source) or hasattr(source, "create_histogram"):
            self._histogram = _histogram_of(source)
        self._templates: dict[int, str] = {}

    # attribute access Starlette users expect to keep working on a wrapped app
    def __getattr__(self, name):
        return getattr(self.app, name)

    def _current(self):
        if self._histogram is not None:
            return self._histogram
        t = self._source()
        return _histogram_of(t) if t is not None else None

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        hist = self._current()
        if hist is None:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: list[int] = []

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)
        error = None
        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            elapsed = time.perf_counter() - start
            method = scope.get("method", "")
            attrs: dict[str, Any] = {
                "http.request.method": method if method in KNOWN_METHODS else "_OTHER",
                "url.scheme": scope.get("scheme", "http"),
            }
            code = status[0] if status else (500 if error else None)
            if code is not None:
                attrs["http.response.status_code"] = code
            route = self._route(scope)
            if route is not None:
                attrs["http.route"] = route
            if error is not None:
                attrs["error.type"] = error
            elif code is not None and code >= 500:
                attrs["error.type"] = str(code)
            hist.record(elapsed, attrs)

    def _route(self, scope) -> str | None:
        route = scope.get("route")          # set by Starlette's router (1.x) on the shared scope
        if route is None:
            route = _match(self.app, scope)
        path = getattr(route, "path", None)
        if path is None:
            return None
        key = id(route)
        t = self._templates.get(key)
        if t is None:
            t = self._templates[key] = route_template(path)
        return t


def _match(app, scope):
    """The route that serves ``scope`` (FULL match, else a PARTIAL one: wrong method -> 405)."""
    from starlette.routing import Match
    routes = getattr(app, "routes", None)
    if routes is None:
        return None
    partial = None
    for r in routes:
        try:
            m, _ = r.matches(scope)
        except Exception:              # noqa: BLE001
            continue
        if m == Match.FULL:
            return r
        if m == Match.PARTIAL and partial is None:
            partial = r
    return partial


def _histogram_of(source):
    if source is None:
        return None
    signals = getattr(source, "signals", None)
    if signals is not None:
        return signals.http_duration
    if hasattr(source, "create_histogram"):            # a Meter
        from .instruments import BY_NAME
        inst = BY_NAME["http.server.request.duration"]
        return source.create_histogram(inst.name, unit=inst.unit, description=inst.description,
                                       explicit_bucket_boundaries_advisory=list(inst.buckets))
    return None


def instrument_http(app, telemetry_or_meter: Any | Callable[[], Any]) -> HttpMetricsMiddleware:
    """Wrap an ASGI app (the Starlette app of ``rest.build_app``) with HTTP server metrics."""
    return HttpMetricsMiddleware(app, telemetry_or_meter)
