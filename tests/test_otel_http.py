"""HTTP server metrics (OpenTelemetry HTTP semantic conventions) by route template and status."""

from __future__ import annotations

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


class AsgiClient:
    """Requests against an ASGI app in-process (httpx's ASGI transport, one event loop per call)."""

    def __init__(self, app, raise_server_exceptions=True):
        self.app = app
        self.raise_server_exceptions = raise_server_exceptions

    def request(self, method, url):
        import asyncio

        import httpx

        async def go():
            transport = httpx.ASGITransport(app=self.app, raise_app_exceptions=self.raise_server_exceptions)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.request(method, url)
        return asyncio.run(go())

    def get(self, url):
        return self.request("GET", url)

    def post(self, url):
        return self.request("POST", url)

from bess_farm.otel.http import instrument_http, route_template


async def unit(request):
    return JSONResponse({"unit": request.path_params["unit_id"]})


async def boom(request):
    raise RuntimeError("boom")


async def fail(request):
    return PlainTextResponse("no", status_code=503)


def app():
    return Starlette(routes=[Route("/units/{unit_id:int}", unit, methods=["GET"]),
                             Route("/boom", boom), Route("/fail", fail)])


def points(reader):
    out = []
    data = reader.get_metrics_data()
    for rm in (data.resource_metrics if data is not None else []):
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == "http.server.request.duration":
                    assert m.unit == "s"
                    out += [(dict(p.attributes), p.count, list(p.explicit_bounds)) for p in m.data.data_points]
    return out


def test_route_template():
    assert route_template("/units/{unit_id:int}") == "/units/{unit_id}"
    assert route_template("/farm") == "/farm"


def test_duration_by_route_template_method_and_status():
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    client = AsgiClient(instrument_http(app(), meter), raise_server_exceptions=False)
    for i in range(3):
        assert client.get(f"/units/{i}").status_code == 200
    assert client.post("/units/1").status_code == 405
    assert client.get("/nowhere").status_code == 404
    assert client.get("/boom").status_code == 500
    assert client.get("/fail").status_code == 503
    assert client.request("BREW", "/units/1").status_code == 405
    pts = {tuple(sorted(a.items())): c for a, c, _ in points(reader)}
    ok = (("http.request.method", "GET"), ("http.response.status_code", 200),
          ("http.route", "/units/{unit_id}"), ("url.scheme", "http"))
    assert pts[ok] == 3, pts
    assert pts[(("http.request.method", "POST"), ("http.response.status_code", 405),
                ("http.route", "/units/{unit_id}"), ("url.scheme", "http"))] == 1
    assert pts[(("http.request.method", "GET"), ("http.response.status_code", 404), ("url.scheme", "http"))] == 1
    assert pts[(("error.type", "RuntimeError"), ("http.request.method", "GET"),
                ("http.response.status_code", 500), ("http.route", "/boom"), ("url.scheme", "http"))] == 1
    assert pts[(("error.type", "503"), ("http.request.method", "GET"), ("http.response.status_code", 503),
                ("http.route", "/fail"), ("url.scheme", "http"))] == 1
    assert pts[(("http.request.method", "_OTHER"), ("http.response.status_code", 405),
                ("http.route", "/units/{unit_id}"), ("url.scheme", "http"))] == 1
    assert all("/units/0" not in str(k) for k in pts)        # never the raw path


def test_lazy_source_passes_through_until_telemetry_exists():
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("t")
    holder = {"t": None}
    client = AsgiClient(instrument_http(app(), lambda: holder["t"]))
    assert client.get("/units/1").status_code == 200
    assert points(reader) == []

    class FakeTelemetry:
        class signals:
            http_duration = meter.create_histogram("http.server.request.duration", unit="s",
                                                   explicit_bucket_boundaries_advisory=[0.001, 10.0])
    holder["t"] = FakeTelemetry
    assert client.get("/units/1").status_code == 200
    assert sum(c for _, c, _ in points(reader)) == 1


def test_buckets_from_the_view():
    from bess_farm.otel.instruments import HTTP_BUCKETS_S
    from bess_farm.otel.setup import TelemetrySettings, build_views
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader], views=build_views(TelemetrySettings())).get_meter("t")
    client = AsgiClient(instrument_http(app(), meter))
    client.get("/units/1")
    [(_, _, bounds)] = points(reader)
    assert bounds == list(HTTP_BUCKETS_S)


def test_non_http_scopes_pass_through():
    import asyncio
    seen = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])
    wrapped = instrument_http(inner, MeterProvider().get_meter("t"))
    asyncio.run(wrapped({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
