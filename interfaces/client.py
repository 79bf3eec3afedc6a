"""A small HTTP client for a running farm's REST API (the live ``bess`` commands).

Standard library only (urllib): ``bess status`` must answer at once and add no dependency.

Where to connect and with what token:

- the base URL from ``--url``, else ``BESS_URL``, else ``http://127.0.0.1:8000``
  (``host:port`` without a scheme means ``http://host:port``);
- the bearer token from ``--token``, else ``--token-file``, else ``BESS_API_TOKEN``, else
  ``BESS_API_TOKEN_FILE``. Reads need no token unless the farm sets ``[api] read_auth = true``;
  writes always do. The token is sent whenever one is known.

Every failure is a :class:`ClientError` with a message for people and an exit code:
:data:`EXIT_REFUSED` (1) when the farm answered with an error (or with something that is not its
JSON), :data:`EXIT_USAGE` (2) for a bad URL or token file, :data:`EXIT_UNREACHABLE` (3) when nothing
usable answered at that address (refused, timed out, unknown host, connection dropped).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 5.0
HINT_URL = "is `bess run` running? (set --url or BESS_URL)"
HINT_TOKEN = ("pass the farm's API token with --token, --token-file or BESS_API_TOKEN "
              "(`bess run` prints a generated one at start unless BESS_API_TOKEN or [api] token_file sets it)")


class ClientError(Exception):
    """A failure to report: ``str(exc)`` is the message, ``exc.code`` the exit code."""

    def __init__(self, message: str, code: int, status: int | None = None, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.field = field


def normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port``; no trailing slash; only http and https."""
    url = url.strip()
    if not url:
        raise ClientError("empty URL: set --url or BESS_URL (e.g. http://127.0.0.1:8000)", EXIT_USAGE)
    if "://" not in url:
        url = "http://" + url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ClientError(f"invalid URL {url!r}: use http://HOST:PORT (e.g. {DEFAULT_URL})", EXIT_USAGE)
    try:
        _ = parts.port
    except ValueError:
        raise ClientError(f"invalid URL {url!r}: bad port", EXIT_USAGE) from None
    return url.rstrip("/")


def resolve_token(token: str | None = None, token_file: str | os.PathLike | None = None,
                  env: dict | None = None) -> str | None:
    """The token: an explicit one, else the file's first line, else BESS_API_TOKEN(_FILE)."""
    env = os.environ if env is None else env
    if token:
        return token.strip()
    path = token_file or None
    if path is None and not env.get("BESS_API_TOKEN", "").strip():
        path = env.get("BESS_API_TOKEN_FILE") or None
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"token file {path}: cannot read: {exc.strerror or exc}", EXIT_USAGE) from None
        if not text:
            raise ClientError(f"token file {path} is empty", EXIT_USAGE)
        return text.splitlines()[0].strip()
    return env.get("BESS_API_TOKEN", "").strip() or None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Client:
    """Blocking JSON requests to one farm. ``get``/``post`` return the decoded body."""

    def __init__(self, url: str | None = None, token: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.url = normalize_url(url or os.environ.get("BESS_URL") or DEFAULT_URL)
        self.token = token
        self.timeout = timeout
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # A proxy from the environment is honoured for remote farms, never for this machine.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    # ------------------------------------------------------------------ requests
    def get(self, path: str, params: dict | None = None) -> Any:
        if params:
            query = {k: _query_value(v) for k, v in params.items() if v is not None}
            if query:
                path = f"{path}?{urllib.parse.urlencode(query)}"
        return self.request("GET", path)

    def post(self, path: str, body: dict | None = None) -> Any:
        return self.request("POST", path, {} if body is None else body)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        url = self.url + path
        data = None
        headers = {"Accept": "application/json", "User-Agent": "bess-cli"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                status = resp.status
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc, method, path) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise self._unreachable(exc) from None
        return self._decode(raw, ctype, status, method, path)

    # ------------------------------------------------------------------ errors
    def _decode(self, raw: bytes, ctype: str, status: int, method: str, path: str) -> Any:
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            kind = ctype.split(";")[0].strip() or "no content type"
            raise ClientError(f"{self.url} answered {method} {path} with HTTP {status} and {kind}, "
                              f"not JSON: is this the address of a bess-farm API? (set --url or BESS_URL)",
                              EXIT_REFUSED, status) from None

    def _http_error(self, exc: urllib.error.HTTPError, method: str, path: str) -> ClientError:
        status = exc.code
        try:
            raw = exc.read()
        except (OSError, http.client.HTTPException):
            raw = b""
        message, field = None, None
        try:
            err = json.loads(raw)["error"]
            message, field = str(err["message"]), err.get("field")
        except (ValueError, KeyError, TypeError, RecursionError):
            pass
        if message is None:
            reason = exc.reason or http.client.responses.get(status, "error")
            return ClientError(f"the farm at {self.url} refused {method} {path}: HTTP {status} {reason} "
                               f"(not the farm's JSON error: is this the address of a bess-farm API?)",
                               EXIT_REFUSED, status)
        text = f"the farm refused {method} {path}: {message} (HTTP {status})"
        if status == 404 and field is None:
            text += f"; is {self.url} the farm's base address (http://HOST:PORT, no path)?"
        if status == 401:
            if self.token:
                text += "; the token was not accepted: check it is this farm's API token"
            else:
                text += "; no token was given: " + HINT_TOKEN
        return ClientError(text, EXIT_REFUSED, status, field)

    def _unreachable(self, exc: BaseException) -> ClientError:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        where = f"cannot reach the farm at {self.url}"
        if isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, (socket.timeout, TimeoutError)):
            why = f"no answer within {self.timeout:g} s (--timeout)"
        elif isinstance(reason, socket.gaierror):
            host = urllib.parse.urlsplit(self.url).hostname
            why = f"unknown host {host!r} ({reason.strerror or reason})"
        elif isinstance(reason, ssl.SSLError):
            why = f"TLS failed ({reason.reason or reason})"
        elif isinstance(reason, (http.client.RemoteDisconnected, ConnectionResetError)):
            why = "the connection was closed without an HTTP answer"
        elif isinstance(reason, http.client.HTTPException):
            why = f"the answer is not HTTP ({type(reason).__name__})"
        elif isinstance(reason, OSError) and reason.strerror:
            why = reason.strerror[0].lower() + reason.strerror[1:]
        else:
            why = str(reason) or type(reason).__name__
        return ClientError(f"{where}: {why} — {HINT_URL}", EXIT_UNREACHABLE)


def _query_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)
