"""Modbus TCP server: pymodbus 3.16's listener with this project's framing and request handling.

pymodbus provides the listening socket and the connection objects (:class:`ModbusTcpServer`);
each connection's bytes are framed and answered here, because pymodbus 3.16's own request path
has defects a real SCADA trips over (docs/modbus.md lists them, and tests cover each):

* several requests in one TCP segment: pymodbus answers the first and drops the rest (its
  transport clears the receive buffer on every send). Here every complete frame in the buffer is
  answered, in order.
* an unknown function code: pymodbus answers function code 0x80; here ``fc | 0x80`` with
  exception 01, as the Modbus spec says.
* a request for a device id that does not exist: pymodbus answers exception 04 and logs a
  traceback per request; here exception 0x0B (gateway target failed to respond), counted, at
  debug level.
* a bad MBAP header (protocol id not 0, a length outside 2..254): pymodbus stays silent and out
  of step with the stream; here the connection is closed, the only safe resynchronisation on TCP.

The deprecated datastore (ModbusSequentialDataBlock/ModbusDeviceContext) is not used: registers
are encoded from the engine's published tick at request time (:mod:`.devices`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from .devices import FarmDevices
from .registers import DEVICE_FAILURE, ILLEGAL_FUNCTION, ILLEGAL_VALUE, ModbusError

log = logging.getLogger("bess.modbus")

MAX_READ = 125       # registers per read (Modbus spec)
MAX_WRITE = 123      # registers per write multiple
_HDR = struct.Struct(">HHHB")


@dataclass
class ModbusStats:
    """Counters the runtime reports (and the telemetry issue exports)."""
    connections: int = 0
    connections_total: int = 0
    requests: Counter = field(default_factory=Counter)        # by function code
    exceptions: Counter = field(default_factory=Counter)      # by exception code
    writes_rejected: int = 0
    frames_dropped: int = 0                                    # connections closed on bad framing
    silent: int = 0                                            # requests left unanswered (comm fault)
    #: per-request hook (telemetry): ``observe(fc, model, outcome, seconds)`` with the SunSpec
    #: model the start address falls in ("1", "802", ..., "header", "end", "vendor", "none") and
    #: outcome "ok", "exception" or "silent"; None costs nothing
    observe: Callable[[int, str, str, float], None] | None = None


class _Connection(ServerRequestHandler):
    """One client connection: frames every complete request in the buffer and answers it."""

    def __init__(self, owner: "FarmModbusServer"):
        super().__init__(owner, None, None, None)
        self.owner = owner
        self.buf = bytearray()

    # pymodbus' transport would append to its own 516-byte buffer and clear it on every send;
    # this handler keeps its own buffer instead.
    def datagram_received(self, data: bytes, addr) -> None:
        self.buf += data
        try:
            self._drain()
        except Exception:     # never let a request take the listener down
            log.exception("modbus: unexpected error serving a request; closing the connection")
            self.close()

    def callback_connected(self) -> None:
        st = self.owner.stats
        if st.connections >= self.owner.max_connections:
            log.warning("modbus: connection limit (%d) reached; refusing a client",
                        self.owner.max_connections)
            self.close()
            return
        st.connections += 1
        st.connections_total += 1
        self._counted = True
        log.debug("modbus: client connected on port %d", self.owner.port)

    def callback_disconnected(self, exc) -> None:
        if getattr(self, "_counted", False):
            self.owner.stats.connections -= 1
            self._counted = False
            log.debug("modbus: client disconnected from port %d", self.owner.port)
        self.running = False

    def close(self, reconnect: bool = False) -> None:
        # pymodbus' connection_lost returns early once is_closing is set, so a connection the
        # server closes itself (bad framing, connection limit) would never be uncounted.
        super().close(reconnect)
        self.callback_disconnected(None)

    def _write_late(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def pause_writing(self) -> None:            # the client does not read its answers: stop reading
        if self.transport:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport:
            self.transport.resume_reading()

    def _drain(self) -> None:
        buf = self.buf
        out = []
        pos = 0
        while len(buf) - pos >= 7:
            tid, pid, length, uid = _HDR.unpack_from(buf, pos)
            if pid != 0 or length < 2 or length > 254:
                self.owner.stats.frames_dropped += 1
                log.debug("modbus: bad MBAP header (protocol %d, length %d); closing", pid, length)
                if out:
                    self.transport.write(b"".join(out))
                self.buf = bytearray()
                self.close()
                return
            end = pos + 6 + length
            if len(buf) < end:
                break
            pdu = bytes(buf[pos + 7:end])
            pos = end
            observe = self.owner.stats.observe
            if observe is None:
                reply = self.owner.handle(uid, pdu)
            else:
                t0 = time.perf_counter()
                reply = self.owner.handle(uid, pdu)
                dt = time.perf_counter() - t0
                outcome = "silent" if reply is None else "exception" if reply[0] & 0x80 else "ok"
                observe(pdu[0], self.owner.model_label(uid, pdu), outcome, dt)
            if reply is not None:
                frame = _HDR.pack(tid, 0, len(reply) + 1, uid) + reply
                delay = self.owner.devices.delay_s
                if delay > 0:            # a unit that answers late (chaos): the rest goes on
                    self.owner.devices.delay_s = 0.0
                    asyncio.get_running_loop().call_later(delay, self._write_late, frame)
                else:
                    out.append(frame)
        if pos:
            del buf[:pos]
        if out and self.transport:
            self.transport.write(b"".join(out))


class FarmModbusServer(ModbusTcpServer):
    """Serves one port's devices (units ``port_index * units_per_port ...`` and the plant)."""

    def __init__(self, devices: FarmDevices, port_index: int, host: str, port: int,
                 stats: ModbusStats, max_connections: int = 2000):
        # pymodbus insists on a datastore; this one is never consulted
        super().__init__(SimDevice(1, simdata=[SimData(0, values=[0], datatype=DataType.REGISTERS)]),
                         address=(host, port))
        self.devices = devices
        self.port_index = port_index
        self.port = port
        self.stats = stats
        self.max_connections = max_connections

    def callback_new_connection(self):
        return _Connection(self)

    def model_label(self, uid: int, pdu: bytes) -> str:
        """The SunSpec model a request's start address falls in (for ``ModbusStats.observe``)."""
        if len(pdu) < 3:
            return "none"
        d = self.devices.device(self.port_index, uid)
        if d is None:
            return "none"
        rm = self.devices.map_of(d)
        if not rm.points or rm.points[0].name != "SunS":
            return "vendor"
        return _sunspec_model_at(struct.unpack_from(">H", pdu, 1)[0])

    def handle(self, uid: int, pdu: bytes) -> bytes | None:
        """The response PDU to one request PDU, or None to stay silent."""
        fc = pdu[0]
        st = self.stats
        st.requests[fc] += 1
        try:
            if fc in (3, 4):
                if len(pdu) != 5:
                    raise ModbusError(ILLEGAL_VALUE, "read request must be 5 bytes")
                address, count = struct.unpack_from(">HH", pdu, 1)
                if not 1 <= count <= MAX_READ:
                    raise ModbusError(ILLEGAL_VALUE, f"register count {count} outside 1..{MAX_READ}")
                regs = self.devices.read(self.port_index, uid, address, count)
                if regs is None:
                    st.silent += 1
                    return None
                return bytes((fc, 2 * count)) + regs.astype(">u2").tobytes()
            if fc == 6:
                if len(pdu) != 5:
                    raise ModbusError(ILLEGAL_VALUE, "write single register request must be 5 bytes")
                address, value = struct.unpack_from(">HH", pdu, 1)
                if not self._write(uid, address, [value]):
                    return None
                return pdu
            if fc == 16:
                if len(pdu) < 6:
                    raise ModbusError(ILLEGAL_VALUE, "write multiple request too short")
                address, count, nbytes = struct.unpack_from(">HHB", pdu, 1)
                if not 1 <= count <= MAX_WRITE or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                    raise ModbusError(ILLEGAL_VALUE, "write multiple: count and byte count disagree")
                words = list(struct.unpack_from(f">{count}H", pdu, 6))
                if not self._write(uid, address, words):
                    return None
                return pdu[:5]
            raise ModbusError(ILLEGAL_FUNCTION, f"function code {fc} is not supported")
        except ModbusError as exc:
            st.exceptions[exc.code] += 1
            log.debug("modbus: device %d fc %d: exception %02X: %s", uid, fc, exc.code, exc)
            return bytes(((fc | 0x80) & 0xFF, exc.code))
        except Exception:
            st.exceptions[DEVICE_FAILURE] += 1
            log.exception("modbus: device %d fc %d failed", uid, fc)
            return bytes(((fc | 0x80) & 0xFF, DEVICE_FAILURE))

    def _write(self, uid: int, address: int, words: list[int]) -> bool:
        try:
            ok = self.devices.write(self.port_index, uid, address, words)
        except ModbusError:
            self.stats.writes_rejected += 1
            raise
        if not ok:
            self.stats.silent += 1
        return ok


_SUNSPEC_STARTS: list[tuple[int, str]] = []


def _sunspec_model_at(address: int) -> str:
    if not _SUNSPEC_STARTS:
        from . import sunspec
        a = sunspec.BASE
        starts = [(a, "header")]
        a += 2
        for m in sunspec.MODEL_ORDER:
            starts.append((a, str(m)))
            a += 2 + sunspec.model_length(m)
        starts += [(a, "end"), (a + 2, "none")]
        _SUNSPEC_STARTS[:] = starts
    if address < _SUNSPEC_STARTS[0][0]:
        return "none"
    label = "none"
    for start, name in _SUNSPEC_STARTS:
        if address < start:
            break
        label = name
    return label


async def start_servers(devices: FarmDevices, host: str, base_port: int, stats: ModbusStats,
                        max_connections: int = 2000) -> list[FarmModbusServer]:
    """Listen on ``devices.n_ports`` consecutive ports; raise OSError naming a port that fails."""
    servers = []
    for j in range(devices.n_ports):
        srv = FarmModbusServer(devices, j, host, base_port + j, stats, max_connections)
        try:
            await srv.serve_forever(background=True)
        except RuntimeError:
            for s in servers:
                await s.shutdown()
            raise OSError(f"cannot listen for Modbus on {host}:{base_port + j} "
                          f"(in use, or not an address of this host)") from None
        servers.append(srv)
    return servers
