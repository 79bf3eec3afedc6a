"""Start a real runtime (engine + Modbus) on 127.0.0.1 for a test, with bounded time, and stop it."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from pathlib import Path

from bess_farm.interfaces.runtime import RuntimeThread, load_site_config


def free_port(count: int = 1) -> int:
    """A base port with ``count`` consecutive free ports on 127.0.0.1."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65535:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free ports")


@contextlib.contextmanager
def running(config_text: str | None = None, *, tmp_path: Path | None = None, tick_hz: float = 10.0,
            speed: float = 1.0, ports: int = 1, profile: str = "idle", timeout: float = 120.0,
            revert_s: float | None = None, api: bool = True, checkpoints: bool = False):
    """Yield a started :class:`Runtime` serving Modbus on 127.0.0.1 (its loop in a thread).

    ``rt.port`` is its first Modbus port, ``rt.call(fn)`` runs ``fn`` on the loop thread. With
    ``api`` (and unless the config disables it) the REST API listens on a free port of 127.0.0.1:
    ``rt.api_url`` is its base URL and ``rt.api_token`` its write token (``None`` without an API)."""
    path = None
    if config_text is not None:
        assert tmp_path is not None
        path = tmp_path / "site.toml"
        path.write_text(config_text)
    site = load_site_config(path)
    site.run.checkpoints = checkpoints        # tests start fresh unless they test durability
    site.modbus.host = "127.0.0.1"
    site.modbus.port = free_port(ports)
    if revert_s is not None:
        site.modbus.revert_timeout_s = revert_s
    site.run.tick_hz = tick_hz
    site.run.speed = speed
    site.run.profile = profile
    site.run.duration_s = timeout            # the runtime stops itself even if the test hangs
    if not api:
        site.api.enabled = False
    if site.api.enabled:                     # never the default port 8000: tests run side by side
        site.api.host = "127.0.0.1"
        site.api.port = free_port()
        while site.modbus.port <= site.api.port < site.modbus.port + ports:
            site.api.port = free_port()
    with RuntimeThread(site, ready_timeout=60) as th:
        rt = th.runtime
        rt.port = site.modbus.port
        rt.call = th.call
        rt.api_url = f"http://127.0.0.1:{site.api.port}" if rt.api is not None else None
        rt.api_token = rt.api.token if rt.api is not None else None
        yield rt


def wait_ticks(rt, n: int = 1, timeout: float = 30.0) -> None:
    """Block until the engine has advanced ``n`` ticks."""
    start = rt.farm.tick
    t_end = time.monotonic() + timeout
    while rt.farm.tick < start + n:
        if time.monotonic() > t_end:
            raise TimeoutError(f"engine did not tick {n} times in {timeout} s")
        time.sleep(0.005)


class RawClient:
    """A minimal blocking Modbus/TCP client for protocol tests (not the code under test)."""

    def __init__(self, port: int, timeout: float = 3.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.tid = 0

    def close(self):
        self.sock.close()

    def request(self, uid: int, pdu: bytes) -> bytes:
        self.tid = (self.tid + 1) & 0xFFFF
        self.sock.sendall(struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, uid) + pdu)
        return self.response(self.tid)

    def response(self, tid: int | None = None) -> bytes:
        hdr = self._exact(7)
        rtid, pid, length, _uid = struct.unpack(">HHHB", hdr)
        assert pid == 0
        if tid is not None:
            assert rtid == tid, f"transaction id {rtid} != {tid}"
        return self._exact(length - 1)

    def _exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def read(self, uid: int, address: int, count: int) -> list[int]:
        r = self.request(uid, struct.pack(">BHH", 3, address, count))
        if r[0] & 0x80:
            raise ModbusException(r[0], r[1])
        return list(struct.unpack(f">{r[1] // 2}H", r[2:]))

    def write(self, uid: int, address: int, words: list[int]) -> None:
        pdu = struct.pack(f">BHHB{len(words)}H", 16, address, len(words), 2 * len(words), *words)
        r = self.request(uid, pdu)
        if r[0] & 0x80:
            raise ModbusException(r[0], r[1])


class ModbusException(Exception):
    def __init__(self, fc: int, code: int):
        super().__init__(f"function {fc:#x} exception {code:#04x}")
        self.fc = fc
        self.code = code
