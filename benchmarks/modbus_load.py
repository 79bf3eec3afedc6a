"""A bounded Modbus TCP load client for measuring a server, not itself.

    python benchmarks/modbus_load.py --port 5020 --duration 10 --json
    python benchmarks/modbus_load.py --help

or, imported:

    from benchmarks.modbus_load import run_load
    stats = run_load(port=5020, duration=10.0, registers=50, address=40000, device_ids="1-247")

Each connection is its own OS process (multiprocessing, so the client never shares one GIL) with a
blocking socket that does strict request/response: one FC3 "read holding registers" request, then
its reply, then the next. Frames are built and checked by hand with ``struct`` (MBAP header + PDU),
so no Modbus library sits between the socket and the clock. Each reply is validated (transaction
id, protocol id, unit id, function code, byte count, MBAP length); an exception reply (fc | 0x80)
is counted by its exception code; a timeout, a closed or reset connection, a refused connect or a
malformed reply is counted as an error, and the connection is dropped and opened again (after a
timeout or a bad frame the stream is out of step, so reuse would corrupt the next request).

Timing: every worker connects first, then all start together at a common instant ``t0`` taken on
the system-wide monotonic clock (``perf_counter_ns`` is CLOCK_MONOTONIC on Linux). Requests that
start during the warm-up ``[t0, t0 + warmup)`` are sent but not counted; the measured window is
``[t0 + warmup, t0 + warmup + duration)``. Latency is ``perf_counter_ns`` from just before
``send`` to just after the last byte of the reply.

Bounded: no request is started after the window ends; every socket operation has a timeout
(``--timeout``, SO_RCVTIMEO / SO_SNDTIMEO on a blocking socket, plus a per-request deadline); the
parent waits for the workers' results until ``warmup + duration + timeout + 3 s`` after ``t0`` and
then terminates (and if need be kills) whatever is left. A hung server therefore costs timeouts,
never a hung client.

Addressing: device numbers (``--device-ids``, 1-based, cycled) map to (port, unit id) as
``device k = d - 1`` on ``port + k // ids_per_port`` with unit id ``k % ids_per_port + 1``. With
the defaults (one port, 247 ids per port) device d is unit id d on ``--port``. A server that puts
one device on each port (unit id 1 on consecutive ports) is ``--ids-per-port 1 --ports-count N``.

The client's own CPU time over the measured window is reported (``client_cpu_s``,
``client_cpu_us_per_req``) so a reader can check the client was not the bottleneck.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import signal
import socket
import struct
import sys
import time
from array import array
from collections import Counter

FC_READ_HOLDING = 3
MAX_REGISTERS = 125            # Modbus limit for one FC3 read
DEFAULT_IDS_PER_PORT = 247     # valid unit ids on one port: 1..247

_MBAP = struct.Struct(">HHHBB")        # transaction id, protocol id, length, unit id, function code
_REQUEST = struct.Struct(">HHHBBHH")   # MBAP + FC3 PDU (start address, quantity)

Target = tuple[str, int, int]          # (host, port, unit id)


# --------------------------------------------------------------------------------------------
# Addressing helpers
# --------------------------------------------------------------------------------------------

def parse_id_ranges(text: str) -> list[int]:
    """'1-247' -> [1..247]; '1,5,9-12' -> [1, 5, 9, 10, 11, 12]. Order kept, duplicates allowed."""
    ids: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = (int(x) for x in part.split("-", 1))
            if hi < lo:
                raise ValueError(f"empty range {part!r}")
            ids.extend(range(lo, hi + 1))
        else:
            ids.append(int(part))
    if not ids:
        raise ValueError(f"no device ids in {text!r}")
    if min(ids) < 1:
        raise ValueError("device numbers are 1-based")
    return ids


def build_targets(host: str, port: int, device_ids: list[int], ports_count: int = 1,
                  ids_per_port: int = DEFAULT_IDS_PER_PORT) -> list[Target]:
    """Device number d (1-based) -> (host, port + k // ids_per_port, k % ids_per_port + 1), k = d - 1."""
    if not 1 <= ids_per_port <= 247:
        raise ValueError("ids_per_port must be in 1..247")
    targets = []
    for d in device_ids:
        k = d - 1
        offset = k // ids_per_port
        if offset >= ports_count:
            raise ValueError(f"device {d} falls on port {port} + {offset}, beyond --ports-count {ports_count}")
        targets.append((host, port + offset, k % ids_per_port + 1))
    return targets


def split_targets(targets: list[Target], n: int) -> list[list[Target]]:
    """Deal the targets out to n workers round-robin. With fewer targets than workers, several
    workers share a target (e.g. 8 connections over 4 single-device servers: 2 per server)."""
    if len(targets) >= n:
        return [targets[w::n] for w in range(n)]
    return [[targets[w % len(targets)]] for w in range(n)]


# --------------------------------------------------------------------------------------------
# Worker (one process per connection)
# --------------------------------------------------------------------------------------------

class _BadFrame(Exception):
    """The reply does not belong to the request: the stream is out of step."""


def _timeval(seconds: float) -> bytes:
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1e6))


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    # Back to a plain blocking socket (no poll() before every recv), with kernel-side timeouts:
    # a recv/send that waits longer raises BlockingIOError / socket.timeout (EAGAIN).
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
    return s


def _recv_frame(sock: socket.socket, buf: bytearray, view: memoryview, deadline_ns: int) -> int:
    """Read one MBAP frame into buf; return its length. Raises TimeoutError, ConnectionError,
    _BadFrame."""
    got = 0
    need = 7                                   # MBAP header incl. unit id
    header_done = False
    while got < need:
        n = sock.recv_into(view[got:], len(buf) - got)
        if n == 0:
            raise ConnectionResetError("closed by server")
        got += n
        if not header_done and got >= 7:
            length = (buf[4] << 8) | buf[5]    # bytes after the length field: unit id + PDU
            if length < 2 or length > 254:
                raise _BadFrame(f"MBAP length {length}")
            need = 6 + length
            header_done = True
        if got < need and time.perf_counter_ns() > deadline_ns:
            raise TimeoutError("reply not complete in time")
    if got > need:                             # strict request/response: nothing may follow
        raise _BadFrame("more bytes than one frame")
    return got


def _worker(wid: int, targets: list[Target], cfg: dict, go, t0_ns, ready_q, result_q) -> None:
    """One connection: request/response until the window ends; put a summary on result_q."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)        # the parent handles Ctrl-C
    timeout = cfg["timeout"]
    timeout_ns = int(timeout * 1e9)
    address, count = cfg["address"], cfg["registers"]
    expect_bytes = 2 * count
    per_worker_max = cfg["max_requests_per_worker"]

    socks: dict[tuple[str, int], socket.socket] = {}
    errors: Counter = Counter()
    exceptions: Counter = Counter()
    lat = array("q")
    ok = warm = 0
    reconnects = 0

    def drop(key):
        s = socks.pop(key, None)
        if s is not None:
            try:
                s.close()
            except OSError:
                pass

    preconnect_end = time.monotonic() + 5.0              # connect before the start signal,
    for host, port, _ in targets:                        # for at most 5 s (the rest connect lazily)
        if (host, port) not in socks and time.monotonic() < preconnect_end:
            try:
                socks[(host, port)] = _connect(host, port, timeout)
            except OSError:
                pass
    ready_q.put(wid)
    if not go.wait(timeout=30.0):
        result_q.put({"worker": wid, "aborted": True})
        return
    start = t0_ns.value
    warm_end = start + int(cfg["warmup"] * 1e9)
    end = warm_end + int(cfg["duration"] * 1e9)
    buf = bytearray(512)
    view = memoryview(buf)
    tid = 0
    i = 0
    ntargets = len(targets)
    cpu0 = None
    last_done = warm_end

    while True:
        t_start = time.perf_counter_ns()
        if t_start >= end or (per_worker_max and ok + sum(exceptions.values()) >= per_worker_max):
            break
        measured = t_start >= warm_end
        if measured and cpu0 is None:
            cpu0 = time.process_time()
        host, port, unit = targets[i % ntargets]
        i += 1
        key = (host, port)
        sock = socks.get(key)
        if sock is None:
            try:
                sock = socks[key] = _connect(host, port, timeout)
                reconnects += 1
            except OSError:
                if measured:
                    errors["connect"] += 1
                # Refused or unreachable: back off a little, never past the window.
                time.sleep(max(0.0, min(0.05, (end - time.perf_counter_ns()) / 1e9)))
                continue
        tid = (tid + 1) & 0xFFFF
        try:
            t_send = time.perf_counter_ns()
            sock.sendall(_REQUEST.pack(tid, 0, 6, unit, FC_READ_HOLDING, address, count))
            n = _recv_frame(sock, buf, view, t_send + timeout_ns)
            t_done = time.perf_counter_ns()
            rtid, proto, length, runit, fc = _MBAP.unpack_from(buf)
            if rtid != tid or proto != 0 or runit != unit:
                raise _BadFrame(f"tid/proto/unit {rtid}/{proto}/{runit}, sent {tid}/0/{unit}")
            if fc == FC_READ_HOLDING:
                if n < 9 or buf[8] != expect_bytes or length != 3 + expect_bytes:
                    raise _BadFrame(f"byte count {buf[8] if n >= 9 else None}, MBAP length {length}")
                exc_code = None
            elif fc == FC_READ_HOLDING | 0x80:
                if length != 3:
                    raise _BadFrame(f"exception reply with MBAP length {length}")
                exc_code = buf[8]
            else:
                raise _BadFrame(f"function code {fc:#x}")
        except (TimeoutError, BlockingIOError):
            if measured:
                errors["timeout"] += 1
            drop(key)
            continue
        except _BadFrame:
            if measured:
                errors["bad_response"] += 1
            drop(key)
            continue
        except OSError:                                  # reset, broken pipe, EOF
            if measured:
                errors["closed"] += 1
            drop(key)
            continue
        if not measured:
            warm += 1
            continue
        if exc_code is None:
            ok += 1
        else:
            exceptions[exc_code] += 1
        lat.append(t_done - t_send)
        last_done = t_done

    cpu_s = time.process_time() - cpu0 if cpu0 is not None else 0.0
    for key in list(socks):
        drop(key)
    result_q.put({"worker": wid, "ok": ok, "exceptions": dict(exceptions), "errors": dict(errors),
                  "warmup_requests": warm, "reconnects": reconnects, "cpu_s": cpu_s,
                  "last_done_ns": last_done, "latency_ns": lat.tobytes()})


# --------------------------------------------------------------------------------------------
# Parent: start, bound, aggregate
# --------------------------------------------------------------------------------------------

def _percentile(sorted_vals: list[int], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_vals:
        return float("nan")
    k = max(0, min(len(sorted_vals) - 1, int(-(-q * len(sorted_vals) // 100)) - 1))
    return float(sorted_vals[k])


def run_load(host: str = "127.0.0.1", port: int = 502, *, connections: int = 8,
             duration: float = 10.0, max_requests: int | None = None, warmup: float = 1.0,
             registers: int = 50, address: int = 40000, device_ids: str | list[int] = "1-247",
             ports_count: int = 1, ids_per_port: int = DEFAULT_IDS_PER_PORT, timeout: float = 2.0,
             targets: list[Target] | None = None) -> dict:
    """Run the load and return the aggregate figures (see the module docstring).

    ``targets`` (a list of (host, port, unit id)) overrides host/port/device_ids/ports_count.
    ``duration`` bounds the measured window; ``max_requests`` (total answered requests, split
    evenly over the connections) may end it earlier."""
    if duration is None or duration <= 0:
        raise ValueError("duration must be a positive number of seconds (it bounds the run)")
    if not 1 <= registers <= MAX_REGISTERS:
        raise ValueError(f"registers must be in 1..{MAX_REGISTERS}")
    if not 0 <= address <= 0xFFFF:
        raise ValueError("address is a 0-based PDU address in 0..65535")
    if connections < 1:
        raise ValueError("connections must be >= 1")
    if targets is None:
        ids = parse_id_ranges(device_ids) if isinstance(device_ids, str) else list(device_ids)
        targets = build_targets(host, port, ids, ports_count, ids_per_port)
    parts = split_targets(list(targets), connections)
    cfg = {"timeout": float(timeout), "address": int(address), "registers": int(registers),
           "warmup": float(warmup), "duration": float(duration),
           "max_requests_per_worker": -(-max_requests // connections) if max_requests else 0}

    # 'spawn': a fresh interpreter per worker; safe even when the caller has threads (pytest,
    # numba) that a fork would copy in an unknown state.
    ctx = mp.get_context("spawn")
    go = ctx.Event()
    t0_ns = ctx.Value("q", 0, lock=False)
    ready_q, result_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(w, parts[w], cfg, go, t0_ns, ready_q, result_q),
                         name=f"modbus-load-{w}", daemon=True) for w in range(connections)]
    results: list[dict] = []
    try:
        for p in procs:
            p.start()
        # Wait (bounded) for every worker to have connected, then start them together.
        ready_deadline = time.monotonic() + 20.0 + timeout
        n_ready = 0
        while n_ready < connections and time.monotonic() < ready_deadline:
            try:
                ready_q.get(timeout=0.2)
                n_ready += 1
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
        t0_ns.value = time.perf_counter_ns() + 20_000_000     # 20 ms: let everyone see "go"
        go.set()
        hard_deadline = t0_ns.value / 1e9 + warmup + duration + timeout + 3.0
        while len(results) < connections:
            left = hard_deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                results.append(result_q.get(timeout=min(left, 0.5)))
            except queue.Empty:
                if not any(p.is_alive() for p in procs) and result_q.empty():
                    break
    except KeyboardInterrupt:
        _stop(procs, grace=0.0)              # Ctrl-C: no waiting for the window to end
        raise
    finally:
        go.set()                             # release workers still waiting for the start
        _stop(procs, grace=1.0)
        ready_q.close()
        result_q.close()

    return _aggregate(results, connections, cfg, targets, t0_ns.value, warmup, duration)


def _stop(procs: list, grace: float) -> None:
    """Join the workers within `grace` seconds in all, then terminate, then kill what is left."""
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=1.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=1.0)


def _aggregate(results: list[dict], connections: int, cfg: dict, targets: list[Target],
               t0_ns: int, warmup: float, duration: float) -> dict:
    ok = sum(r.get("ok", 0) for r in results)
    exceptions: Counter = Counter()
    errors: Counter = Counter()
    lat: list[int] = []
    for r in results:
        exceptions.update({int(k): v for k, v in r.get("exceptions", {}).items()})
        errors.update(r.get("errors", {}))
        a = array("q")
        a.frombytes(r.get("latency_ns", b""))
        lat.extend(a)
    lat.sort()
    warm_end = t0_ns + int(warmup * 1e9)
    # The window is the configured duration, or shorter when --max-requests ended it early.
    ends = [r["last_done_ns"] for r in results if "last_done_ns" in r]
    window_s = duration
    if cfg["max_requests_per_worker"] and ends:
        window_s = max(1e-9, min(duration, (max(ends) - warm_end) / 1e9))
    answered = ok + sum(exceptions.values())
    cpu = sum(r.get("cpu_s", 0.0) for r in results)
    ports = sorted({(h, p) for h, p, _ in targets})
    # The window on time.monotonic()'s scale, to line it up with other processes' timestamps.
    mono_offset = time.monotonic() - time.perf_counter()
    window_start = warm_end / 1e9 + mono_offset
    return {
        "connections": connections,
        "workers_reported": len([r for r in results if not r.get("aborted")]),
        "targets": len(targets),
        "ports": len(ports),
        "registers": cfg["registers"],
        "address": cfg["address"],
        "warmup_s": warmup,
        "window_s": window_s,
        "window_mono": [window_start, window_start + window_s],
        "requests": answered + sum(errors.values()),
        "answered": answered,
        "ok": ok,
        "exceptions": {str(k): v for k, v in sorted(exceptions.items())},
        "errors": dict(sorted(errors.items())),
        "reconnects": sum(r.get("reconnects", 0) for r in results),
        "warmup_requests": sum(r.get("warmup_requests", 0) for r in results),
        "req_per_s": answered / window_s,
        "ok_per_s": ok / window_s,
        "latency_ms": {
            "p50": _percentile(lat, 50) / 1e6,
            "p90": _percentile(lat, 90) / 1e6,
            "p99": _percentile(lat, 99) / 1e6,
            "max": (lat[-1] / 1e6) if lat else float("nan"),
            "mean": (sum(lat) / len(lat) / 1e6) if lat else float("nan"),
        },
        "client_cpu_s": cpu,
        "client_cpu_us_per_req": (cpu / answered * 1e6) if answered else float("nan"),
    }


def _format(stats: dict) -> str:
    l = stats["latency_ms"]
    lines = [
        (f"{stats['answered']:,} answered in {stats['window_s']:.2f} s over {stats['connections']} connections "
         f"({stats['targets']} devices on {stats['ports']} port(s)), {stats['registers']} registers at "
         f"{stats['address']}"),
        (f"  {stats['req_per_s']:,.0f} req/s  (ok {stats['ok']:,}, exceptions {stats['exceptions'] or 0}, "
         f"errors {stats['errors'] or 0}, reconnects {stats['reconnects']})"),
        f"  latency ms: p50 {l['p50']:.3f}  p90 {l['p90']:.3f}  p99 {l['p99']:.3f}  max {l['max']:.3f}",
        f"  client CPU {stats['client_cpu_s']:.2f} s ({stats['client_cpu_us_per_req']:.1f} us per request)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Bounded Modbus TCP FC3 load client (one process per connection).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=502)
    ap.add_argument("--ports-count", type=int, default=1,
                    help="spread devices over this many consecutive ports (device k = d-1 on port + k//ids-per-port)")
    ap.add_argument("--ids-per-port", type=int, default=DEFAULT_IDS_PER_PORT,
                    help="unit ids per port before moving to the next port (1 for one device per port)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0, help="measured window in seconds (bounds the run)")
    ap.add_argument("--max-requests", type=int, default=None, help="stop after this many answered requests")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured requests before the window")
    ap.add_argument("--registers", type=int, default=50, help="registers per FC3 read")
    ap.add_argument("--address", type=int, default=40000, help="0-based PDU start address")
    ap.add_argument("--device-ids", default="1-247", help="device numbers, e.g. '1-247' or '1,3,10-20' (cycled)")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)
    try:
        stats = run_load(a.host, a.port, connections=a.connections, duration=a.duration,
                         max_requests=a.max_requests, warmup=a.warmup, registers=a.registers,
                         address=a.address, device_ids=a.device_ids, ports_count=a.ports_count,
                         ids_per_port=a.ids_per_port, timeout=a.timeout)
    except ValueError as e:
        ap.error(str(e))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(stats, indent=2) if a.json else _format(stats))
    return 0 if stats["answered"] else 1


if __name__ == "__main__":
    sys.exit(main())
