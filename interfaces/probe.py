"""``bess probe``: is a running farm up, as its clients see it?

Checks, in order, and prints one line per check:

* ``--api URL``: ``GET URL/readyz`` answers 200 with ``"ready": true`` (the engine ticks, every
  Modbus listener is up);
* ``--modbus HOST:PORT``: holding registers 40000..40003 (0-based) of ``--device-id`` read with
  function 3 hold the SunSpec marker ``'SunS'`` (0x5375 0x6E53) followed by the common model's
  header (ID 1, length 66), as a SunSpec client's discovery expects.

``--wait SECONDS`` retries until every check passes or the time is up (a pod that is still
starting). Exit status as the other live commands: 0 every check passed, 1 the farm answered
wrongly (not ready, no marker, a Modbus exception), 2 usage error, 3 the farm could not be reached.

It needs neither the engine nor a Modbus library (sockets and urllib), so it answers at once: the
chart's ``helm test`` pod runs it from the image (``bess probe --api ... --modbus ...``).
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import sys
import time
import urllib.error
import urllib.request

SUNSPEC_MARKER = (0x5375, 0x6E53)            # 'SunS'
SUNSPEC_BASE = 40000                         # 0-based holding register of the marker
COMMON_MODEL = (1, 66)                       # model 1 (common): ID and length after the marker

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class ProbeError(Exception):
    """A failed check; ``code`` is REFUSED (wrong answer) or UNREACHABLE."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


# ------------------------------------------------------------------------------------ checks
def check_ready(url: str, timeout: float) -> str:
    """``GET {url}/readyz``: 200 and ``ready: true``; returns a one-line description."""
    target = url.rstrip("/") + "/readyz"
    req = urllib.request.Request(target, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:      # noqa: S310 (http only)
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:                                  # 503 while starting
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ProbeError(UNREACHABLE, f"{target}: cannot connect: {reason}") from None
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        doc = {}
    if status == 200 and isinstance(doc, dict) and doc.get("ready") is True:
        return f"{target}: ready"
    failing = ""
    if isinstance(doc, dict) and isinstance(doc.get("checks"), dict):
        bad = [f"{k}: {v}" for k, v in doc["checks"].items() if not _passed(v)]
        failing = f" (failing: {', '.join(bad)})" if bad else ""
    raise ProbeError(REFUSED, f"{target}: not ready: HTTP {status}{failing}")


def _passed(v) -> bool:
    """A /readyz check value that passed: "ok" (or true)."""
    return v is True or v == "ok"


def parse_address(text: str, default_port: int = 5020) -> tuple[str, int]:
    """``"host:5020"``, ``"host"``, ``"[::1]:5020"`` -> (host, port)."""
    t = text.strip()
    if t.startswith("["):
        host, _, rest = t[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif t.count(":") == 1:
        host, _, port_text = t.partition(":")
    else:
        host, port_text = t, ""
    if not host:
        raise ValueError(f"{text!r}: expected HOST:PORT")
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: the port must be in 1..65535")
    return host, port


def read_holding(host: str, port: int, device_id: int, address: int, count: int,
                 timeout: float) -> list[int]:
    """One Modbus/TCP read of holding registers (function 3) over a fresh connection."""
    pdu = struct.pack(">BHH", 3, address, count)
    tid = 1
    frame = struct.pack(">HHHB", tid, 0, len(pdu) + 1, device_id) + pdu
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(frame)
            header = _recv_exact(sock, 7)
            rtid, proto, length, _uid = struct.unpack(">HHHB", header)
            if rtid != tid or proto != 0 or not 2 <= length <= 260:
                raise ProbeError(REFUSED, f"{host}:{port}: malformed Modbus/TCP answer "
                                          f"(transaction {rtid}, protocol {proto}, length {length})")
            body = _recv_exact(sock, length - 1)
    except (socket.timeout, TimeoutError):
        raise ProbeError(UNREACHABLE, f"{host}:{port}: no Modbus answer within {timeout:g} s") from None
    except OSError as exc:
        raise ProbeError(UNREACHABLE, f"{host}:{port}: cannot connect: {exc.strerror or exc}") from None
    if body[0] == 0x83:
        raise ProbeError(REFUSED, f"{host}:{port} device {device_id}: Modbus exception "
                                  f"{body[1]:#04x} reading {address}..{address + count - 1}")
    if body[0] != 3 or len(body) < 2 or body[1] != 2 * count or len(body) != 2 + 2 * count:
        raise ProbeError(REFUSED, f"{host}:{port} device {device_id}: unexpected answer to "
                                  f"function 3 ({body[:4].hex()}...)")
    return list(struct.unpack(f">{count}H", body[2:]))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError(0, "the server closed the connection")
        buf += chunk
    return buf


def check_sunspec(host: str, port: int, device_id: int, timeout: float) -> str:
    regs = read_holding(host, port, device_id, SUNSPEC_BASE, 4, timeout)
    where = f"{host}:{port} device {device_id}"
    if tuple(regs[:2]) != SUNSPEC_MARKER:
        raise ProbeError(REFUSED, f"{where}: no SunSpec marker at {SUNSPEC_BASE}: "
                                  f"{regs[0]:#06x} {regs[1]:#06x} (expected 0x5375 0x6e53, 'SunS')")
    if tuple(regs[2:]) != COMMON_MODEL:
        raise ProbeError(REFUSED, f"{where}: 'SunS' is not followed by the common model "
                                  f"(ID {regs[2]}, length {regs[3]}; expected ID 1, length 66)")
    return f"{where}: SunSpec marker 'SunS' and common model at {SUNSPEC_BASE}"


# ------------------------------------------------------------------------------------ command
def add_parser(sub) -> argparse.ArgumentParser:
    """``bess probe``'s subparser (interfaces/cli.py adds it to its subcommands)."""
    p = sub.add_parser("probe", help="check that a running farm is ready and speaks SunSpec",
                       description=__doc__.split("\n\n")[1].strip().replace("\n", " ")
                       if __doc__ else None,
                       epilog="exit status: 0 every check passed, 1 the farm answered wrongly, "
                              "2 usage error, 3 farm unreachable")
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", metavar="URL", help="the farm's REST API, e.g. http://bess:8000: GET /readyz")
    p.add_argument("--modbus", metavar="HOST:PORT", help="a Modbus/TCP port of the farm, e.g. bess:5020: "
                                                         "read the SunSpec marker")
    p.add_argument("--device-id", type=int, default=1,
                   help="Modbus device id to read (default 1: the port's first unit; the plant is 255)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    p.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="retry until every check passes or this much time has passed (default 0: once)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args) -> int:
    if not args.api and not args.modbus:
        return _usage("give --api URL, --modbus HOST:PORT or both")
    if not 0 <= args.device_id <= 255:
        return _usage(f"--device-id {args.device_id}: must be in 0..255")
    if not args.timeout > 0 or args.wait < 0:
        return _usage("--timeout must be positive and --wait not negative")
    target = None
    if args.modbus:
        try:
            target = parse_address(args.modbus)
        except ValueError as exc:
            return _usage(f"--modbus {exc}")
    if args.api and not args.api.startswith(("http://", "https://")):
        return _usage(f"--api {args.api!r}: expected an http:// or https:// URL")
    deadline = time.monotonic() + args.wait
    attempts = 0
    while True:
        attempts += 1
        results: list[dict] = []
        failure: ProbeError | None = None
        checks = []
        if args.api:
            checks.append(("ready", lambda: check_ready(args.api, args.timeout)))
        if target:
            checks.append(("sunspec", lambda: check_sunspec(*target, args.device_id, args.timeout)))
        for name, fn in checks:
            try:
                results.append({"check": name, "ok": True, "detail": fn()})
            except ProbeError as exc:
                results.append({"check": name, "ok": False, "detail": str(exc)})
                failure = failure or exc
        if failure is None or time.monotonic() + 1.0 > deadline:
            break
        time.sleep(1.0)
    code = OK if failure is None else failure.code
    if args.json:
        print(json.dumps({"ok": failure is None, "attempts": attempts, "checks": results}, indent=2))
    else:
        for r in results:
            print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['check']}: {r['detail']}",
                  file=sys.stdout if r["ok"] else sys.stderr)
    return code


def _usage(msg: str) -> int:
    print(f"bess probe: error: {msg}", file=sys.stderr)
    return USAGE


def main(argv: list[str] | None = None) -> int:
    """``python -m bess_farm.interfaces.probe`` (the same as ``bess probe``)."""
    parser = argparse.ArgumentParser(prog="bess probe", description="Check that a running farm is "
                                     "ready (REST /readyz) and serves the SunSpec marker over Modbus.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
