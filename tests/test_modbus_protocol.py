"""Modbus/TCP protocol behaviour of the real server (`bess run`'s listener) on 127.0.0.1.

Covers the pymodbus 3.16 server defects our adapter fixes (docs/modbus.md): pipelined requests,
unknown function codes, unknown device ids, malformed frames and bad MBAP headers; plus many idle
connections, refused writes, a silent (comm-faulted) unit and a third-party master (Debian mbpoll).
Every socket has a timeout and every subprocess a time limit.
"""

from __future__ import annotations

import logging
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bess_farm.interfaces.modbus import sunspec
from runtime_helpers import ModbusException, RawClient, running, wait_ticks

N_UNITS = 40
FARM = f'[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = {N_UNITS}\n'
PLANT = 255
SUNS = [0x5375, 0x6E53]
TIMEOUT = 3.0                      # every socket operation in this file


# ----------------------------------------------------------------------------------- helpers
def point_address(model: int, name: str) -> int:
    """Register address of a SunSpec point: base 40000, 'SunS', then each model as ID, L, points."""
    addr = sunspec.BASE + 2
    for m in sunspec.MODEL_ORDER:
        if m == model:
            addr += 2
            for pname, _typ, size, _sf, _rw in sunspec.model_points(m):
                if pname == name:
                    return addr
                addr += size
            raise KeyError(f"{model}.{name}")
        addr += 2 + sunspec.model_length(m)
    raise KeyError(f"model {model}")


def mbap(tid: int, uid: int, pdu: bytes, *, pid: int = 0, length: int | None = None) -> bytes:
    """One Modbus/TCP frame; ``length`` overrides the MBAP length field."""
    return struct.pack(">HHHB", tid, pid, len(pdu) + 1 if length is None else length, uid) + pdu


def read_pdu(address: int, count: int, fc: int = 3) -> bytes:
    return struct.pack(">BHH", fc, address, count)


def connect(port: int, timeout: float = TIMEOUT) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"server closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return buf


def recv_frame(sock: socket.socket) -> tuple[int, int, bytes]:
    """(transaction id, device id, PDU) of the next response."""
    tid, pid, length, uid = struct.unpack(">HHHB", recv_exact(sock, 7))
    assert pid == 0, f"response protocol id {pid}"
    assert 2 <= length <= 254, f"response MBAP length {length}"
    return tid, uid, recv_exact(sock, length - 1)


def exchange(sock: socket.socket, uid: int, pdu: bytes, tid: int = 0x4242) -> bytes:
    sock.sendall(mbap(tid, uid, pdu))
    rtid, ruid, rpdu = recv_frame(sock)
    assert (rtid, ruid) == (tid, uid)
    return rpdu


def registers(pdu: bytes) -> list[int]:
    assert pdu[0] in (3, 4) and pdu[1] == len(pdu) - 2, pdu.hex()
    return list(struct.unpack(f">{pdu[1] // 2}H", pdu[2:]))


def read_until_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes the connection (EOF or reset); fails if it
    keeps the connection open for ``timeout`` seconds."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except ConnectionResetError:
        return data
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {timeout} s (received {data.hex()})")


def split_frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse a byte stream of responses; every byte must belong to a well-formed frame."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 7, f"trailing partial header {data[pos:].hex()}"
        tid, pid, length, uid = struct.unpack_from(">HHHB", data, pos)
        assert pid == 0 and 2 <= length <= 254, data[pos:pos + 7].hex()
        end = pos + 6 + length
        assert end <= len(data), "truncated response"
        out.append((tid, uid, data[pos + 7:end]))
        pos = end
    return out


def wait_for(cond, timeout: float = 5.0, what: str = "condition") -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > t_end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def assert_serves(port: int) -> None:
    """A new connection gets a normal answer."""
    c = RawClient(port, timeout=TIMEOUT)
    try:
        assert c.read(1, 40000, 2) == SUNS
        assert c.read(PLANT, 40000, 2) == SUNS
    finally:
        c.close()


def errors_in(records) -> list[str]:
    return [f"{r.name} {r.levelname}: {r.getMessage()}" for r in records
            if r.levelno >= logging.ERROR or r.exc_info or "Traceback" in r.getMessage()]


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    with running(FARM, tmp_path=tmp_path_factory.mktemp("site"), timeout=300) as rt:
        assert rt.farm.n_units == N_UNITS
        yield rt


@pytest.fixture
def server_log(caplog):
    """Records of the "bess" and "pymodbus" loggers at every level, whatever setup_logging did
    to their levels and propagation earlier in the session."""
    loggers = [logging.getLogger("bess"), logging.getLogger("pymodbus")]
    saved = [(lg, lg.level, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
        lg.propagate = False                    # one copy of each record, through caplog.handler
        lg.addHandler(caplog.handler)
    caplog.handler.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        for lg, level, propagate in saved:
            lg.removeHandler(caplog.handler)
            lg.setLevel(level)
            lg.propagate = propagate


# ----------------------------------------------------------------------------------- 1. pipelining
def test_pipelined_requests_in_one_segment_all_answered_in_order(rt):
    reqs = [(0x0102, 1, read_pdu(40000, 2)), (0xFFFF, PLANT, read_pdu(40000, 2)),
            (0x0000, N_UNITS, read_pdu(40070, 2)), (0x0007, 2, read_pdu(40070, 2, fc=4)),
            (0x8000, 1, bytes([0x07]))]
    with connect(rt.port) as s:
        s.sendall(b"".join(mbap(*r) for r in reqs))
        got = [recv_frame(s) for _ in reqs]
    assert [(t, u) for t, u, _ in got] == [(t, u) for t, u, _ in reqs]
    assert registers(got[0][2]) == SUNS and registers(got[1][2]) == SUNS
    assert registers(got[2][2]) == [802, 62] and registers(got[3][2]) == [802, 62]
    assert got[4][2] == bytes([0x87, 0x01])


def test_pipelined_requests_split_at_odd_byte_boundaries(rt):
    reqs = [(900 + j, 1 + j, read_pdu(40000 + 2 * (j % 2), 2 + j)) for j in range(6)]
    stream = b"".join(mbap(*r) for r in reqs)
    cuts = [0, 1, 4, 7, 8, 13, 25, 26, 39, 50, 71, len(stream)]          # mid-header, mid-PDU, ...
    with connect(rt.port) as s:
        for a, b in zip(cuts, cuts[1:]):
            s.sendall(stream[a:b])
            time.sleep(0.01)                    # separate segments (TCP_NODELAY is on)
        got = [recv_frame(s) for _ in reqs]
        # and one frame a byte at a time
        frame = mbap(0xBEEF, PLANT, read_pdu(40070, 2))
        for j in range(len(frame)):
            s.sendall(frame[j:j + 1])
            time.sleep(0.002)
        last = recv_frame(s)
    assert [(t, u) for t, u, _ in got] == [(t, u) for t, u, _ in reqs]
    for (_, _, pdu), (_, _, req) in zip(got, reqs):
        address, count = struct.unpack(">HH", req[1:])
        regs = registers(pdu)
        assert len(regs) == count
        if address == 40000:
            assert regs[:2] == SUNS
        else:                                     # 40002: model 1 ID and length
            assert regs[:2] == [1, sunspec.model_length(1)]
    assert last[:2] == (0xBEEF, PLANT) and registers(last[2]) == [802, 62]


# ----------------------------------------------------------------------------------- 2. unknown fc
@pytest.mark.parametrize("pdu", [bytes([0x2B, 0x0E, 0x01, 0x00]), bytes([0x07]),
                                 bytes([0x41, 0x00, 0x00]), read_pdu(0, 1, fc=1),
                                 bytes([0x05, 0x00, 0x00, 0xFF, 0x00]), bytes([0x17]) + bytes(9)],
                         ids=["0x2B", "0x07", "0x41", "0x01", "0x05", "0x17"])
def test_unknown_function_code_answers_fc_or_0x80_exception_01(rt, pdu):
    with connect(rt.port) as s:
        assert exchange(s, 1, pdu) == bytes([pdu[0] | 0x80, 0x01])
        assert registers(exchange(s, 1, read_pdu(40000, 2))) == SUNS      # still in step


# ----------------------------------------------------------------------------------- 3. no device
def test_unknown_device_id_answers_0x0B_without_logging_errors(rt, server_log):
    before = rt.modbus_stats.exceptions[0x0B]
    with connect(rt.port) as s:
        for uid in (200, N_UNITS + 1, 0, 247):
            assert exchange(s, uid, read_pdu(40000, 2)) == bytes([0x83, 0x0B])
        assert exchange(s, 200, read_pdu(40000, 2, fc=4)) == bytes([0x84, 0x0B])
        words = [1]
        pdu = struct.pack(">BHHBH", 16, point_address(704, "WSetEna"), 1, 2, *words)
        assert exchange(s, 200, pdu) == bytes([0x90, 0x0B])
        assert registers(exchange(s, N_UNITS, read_pdu(40000, 2))) == SUNS   # same connection
    assert rt.modbus_stats.exceptions[0x0B] - before == 6
    assert_serves(rt.port)
    # the refusals are logged at debug level (which also shows this capture sees the server)
    assert any("exception 0B" in r.getMessage() and r.levelno == logging.DEBUG
               for r in server_log.records)
    assert errors_in(server_log.records) == []
    assert "KeyError" not in server_log.text


# ----------------------------------------------------------------------------------- 4. malformed
@pytest.mark.parametrize("frame", [
    b"\xde\xad\xbe\xef" * 8,                                    # garbage
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",               # a confused HTTP client
    mbap(1, 1, read_pdu(40000, 2), pid=1),                       # protocol id != 0
    mbap(1, 1, read_pdu(40000, 2), pid=0xFFFF),
    mbap(1, 1, b"", length=0),                                   # MBAP length 0
    mbap(1, 1, b"", length=1),                                   # length 1: no function code
    mbap(1, 1, read_pdu(40000, 2), length=255),                  # > 254
    mbap(1, 1, read_pdu(40000, 2), length=0xFFFF),
], ids=["garbage", "http", "pid-1", "pid-ffff", "len-0", "len-1", "len-255", "len-65535"])
def test_framing_violation_closes_the_connection(rt, frame, server_log):
    wait_for(lambda: rt.modbus_stats.connections == 0, what="earlier connections to close")
    dropped = rt.modbus_stats.frames_dropped
    tick = rt.farm.tick
    with connect(rt.port) as s:
        wait_for(lambda: rt.modbus_stats.connections == 1, what="the connection to be counted")
        s.sendall(frame)
        assert read_until_closed(s) == b""
    assert rt.modbus_stats.frames_dropped == dropped + 1
    # the server's own close is counted like a client's
    wait_for(lambda: rt.modbus_stats.connections == 0, what="the closed connection to be uncounted")
    assert_serves(rt.port)
    wait_ticks(rt, 2, timeout=5)
    assert rt.farm.tick > tick
    assert errors_in(server_log.records) == []


def test_valid_requests_before_a_bad_header_are_answered_then_closed(rt):
    with connect(rt.port) as s:
        s.sendall(mbap(11, 1, read_pdu(40000, 2)) + mbap(12, 1, read_pdu(40000, 2), pid=3))
        frames = split_frames(read_until_closed(s))
    assert [(t, u) for t, u, _ in frames] == [(11, 1)] and registers(frames[0][2]) == SUNS


@pytest.mark.parametrize("pdu, expect", [
    (bytes([0x03, 0x9C, 0x40]), 0x83),                           # FC3 with 2 data bytes
    (bytes([0x04, 0x9C]), 0x84),
    (bytes([0x03]), 0x83),                                       # length 2: the fc alone
    (read_pdu(40000, 2) + b"\x00", 0x83),                        # one byte too many
    (read_pdu(40000, 0), 0x83),                                  # count 0
    (read_pdu(40000, 126), 0x83),                                # count 126 > 125
    (read_pdu(40000, 126, fc=4), 0x84),
    (bytes([0x06, 0x9C, 0x40, 0x00]), 0x86),                     # FC6 truncated
    (struct.pack(">BHHB2H", 16, 40000, 2, 3, 1, 2), 0x90),       # byte count 3 for 2 registers
    (struct.pack(">BHHBH", 16, 40000, 2, 4, 1), 0x90),           # byte count 4, 2 bytes sent
    (struct.pack(">BHHB2H", 16, 40000, 1, 2, 1, 2), 0x90),       # 1 register, 4 bytes sent
    (struct.pack(">BHHB", 16, 40000, 0, 0), 0x90),               # count 0
    (struct.pack(">BHH", 16, 40000, 1), 0x90),                   # no byte count
], ids=["fc3-short", "fc4-short", "fc3-bare", "fc3-long", "count-0", "count-126", "fc4-count-126",
        "fc6-short", "fc16-nbytes-3", "fc16-data-short", "fc16-data-long", "fc16-count-0",
        "fc16-no-nbytes"])
def test_malformed_pdu_answers_exception_03(rt, pdu, expect):
    with connect(rt.port) as s:
        assert exchange(s, 1, pdu) == bytes([expect, 0x03])
        assert registers(exchange(s, 1, read_pdu(40070, 2))) == [802, 62]  # connection kept


def test_random_bytes_never_break_the_server(tmp_path, server_log):
    """Random byte streams (and random PDUs in valid MBAP frames): whatever the server answers
    is well-formed, it closes the connection on EOF, and a fresh connection is then served."""
    with running(FARM, tmp_path=tmp_path, timeout=120) as rt:
        tick = rt.farm.tick
        frames = st.builds(lambda tid, uid, pdu: mbap(tid, uid, pdu), st.integers(0, 0xFFFF),
                           st.sampled_from([1, 2, N_UNITS, N_UNITS + 1, 200, PLANT, 0]),
                           st.binary(min_size=1, max_size=253))
        streams = st.one_of(st.binary(min_size=1, max_size=600),
                            st.lists(frames, min_size=1, max_size=4).map(b"".join),
                            st.tuples(frames, st.binary(min_size=1, max_size=40)).map(b"".join))

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(data=streams)
        def throw(data):
            with connect(rt.port) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                split_frames(read_until_closed(s))
            c = RawClient(rt.port, timeout=TIMEOUT)
            try:
                assert c.read(1, 40000, 2) == SUNS
            finally:
                c.close()

        throw()
        wait_ticks(rt, 2, timeout=5)
        assert rt.farm.tick > tick
        wait_for(lambda: rt.modbus_stats.connections == 0, what="all connections to be uncounted")
    assert errors_in(server_log.records) == []


# ----------------------------------------------------------------------------------- 5. many idle
def test_thousand_idle_connections(rt):
    n = 1000
    need = 2 * n + 256                 # both ends of every connection live in this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need} (client and server run in this process)")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    socks: list[socket.socket] = []
    try:
        wait_for(lambda: rt.modbus_stats.connections == 0, what="earlier connections to close")
        base = rt.modbus_stats.connections
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", rt.port), timeout=TIMEOUT))
        wait_for(lambda: rt.modbus_stats.connections >= base + n, timeout=15,
                 what=f"{n} connections to be accepted")
        ticks, overruns = rt.stats.ticks, rt.stats.overruns
        c = RawClient(rt.port, timeout=TIMEOUT)
        try:
            lat = []
            t_end = time.monotonic() + 1.0
            while time.monotonic() < t_end:
                t = time.perf_counter()
                assert c.read(1 + len(lat) % N_UNITS, 40070, 30)[:2] == [802, 62]
                lat.append(time.perf_counter() - t)
                time.sleep(0.01)
        finally:
            c.close()
        assert statistics.median(lat) < 0.05 and max(lat) < 0.5, (statistics.median(lat), max(lat))
        assert rt.stats.ticks - ticks >= 5, "the tick loop stalled with 1,000 idle connections"
        assert rt.stats.overruns - overruns <= 2
        # idle connections still work
        assert registers(exchange(socks[0], 1, read_pdu(40000, 2))) == SUNS
        assert registers(exchange(socks[-1], PLANT, read_pdu(40000, 2))) == SUNS
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    wait_for(lambda: rt.modbus_stats.connections <= base, timeout=10,
             what="the connection count to drop back")


# ----------------------------------------------------------------------------------- 6. writes
def test_refused_writes_change_nothing(rt):
    wset_ena = point_address(704, "WSetEna")
    soc = point_address(802, "SoC")
    assert soc == 40070 + 2 + 9
    rejected = rt.modbus_stats.writes_rejected
    with connect(rt.port) as s:
        ena_before = registers(exchange(s, 1, read_pdu(wset_ena, 1)))
        assert ena_before == [0]
        for uid in (1, PLANT):
            # read-only: 'SunS', and 802 SoC
            assert exchange(s, uid, struct.pack(">BHHB2H", 16, 40000, 2, 4, 1, 2)) == b"\x90\x02"
            assert exchange(s, uid, struct.pack(">BHH", 6, 40000, 1)) == b"\x86\x02"
            assert exchange(s, uid, struct.pack(">BHH", 6, soc, 5000)) == b"\x86\x02"
            # beyond the map
            assert exchange(s, uid, struct.pack(">BHH", 6, 41000, 1)) == b"\x86\x02"
            assert exchange(s, uid, struct.pack(">BHHBH", 16, 41000, 1, 2, 1)) == b"\x90\x02"
            # writable, value out of range (enum 0..1)
            assert exchange(s, uid, struct.pack(">BHH", 6, wset_ena, 7)) == b"\x86\x03"
            assert exchange(s, uid, struct.pack(">BHHBH", 16, wset_ena, 1, 2, 7)) == b"\x90\x03"
        assert rt.modbus_stats.writes_rejected - rejected == 14
        wait_ticks(rt, 1, timeout=5)
        for uid in (1, PLANT):
            assert registers(exchange(s, uid, read_pdu(40000, 2))) == SUNS
            assert registers(exchange(s, uid, read_pdu(wset_ena, 1))) == ena_before
            assert exchange(s, uid, read_pdu(41000, 1)) == b"\x83\x02"
    assert not rt.devices.controls.wset_ena.any()


# ----------------------------------------------------------------------------------- 7. mbpoll
def _mbpoll(port: int, *args: str, values: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(["mbpoll", "-m", "tcp", "-p", str(port), "-a", "1", "-o", "2", *args,
                           "-1", "127.0.0.1", *values],
                          capture_output=True, text=True, timeout=20)


@pytest.mark.skipif(shutil.which("mbpoll") is None,
                    reason="Debian mbpoll is not installed (apt-get install -y mbpoll)")
def test_mbpoll(rt):
    r = _mbpoll(rt.port, "-t", "4:hex", "-r", "40001", "-c", "2")
    assert r.returncode == 0, r.stderr
    assert "[40001]: \t0x5375" in r.stdout and "[40002]: \t0x6E53" in r.stdout
    r = _mbpoll(rt.port, "-t", "4", "-r", "40071", "-c", "30")
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == 30
    assert lines[0] == "[40071]: \t802" and lines[1] == "[40072]: \t62"
    r = _mbpoll(rt.port, "-t", "4", "-r", "40001", values=("123",))
    assert r.returncode != 0
    assert "illegal data address" in (r.stdout + r.stderr).lower()
    c = RawClient(rt.port)
    try:
        assert c.read(1, 40000, 2) == SUNS
    finally:
        c.close()


# ----------------------------------------------------------------------------------- 8. comm fault
def test_comm_faulted_unit_is_silent(rt):
    unit = 3
    dev = unit % 247 + 1
    silent = rt.modbus_stats.silent
    rt.call(lambda: rt.farm.set_unit_params(unit, comm_fault=True))
    try:
        wait_ticks(rt, 2, timeout=5)
        for request in (lambda c: c.read(dev, 40000, 2), lambda c: c.write(dev, 40000, [1, 2])):
            c = RawClient(rt.port, timeout=1.0)
            try:
                t = time.monotonic()
                with pytest.raises(TimeoutError):
                    request(c)
                assert time.monotonic() - t >= 0.9
            finally:
                c.close()
        assert rt.modbus_stats.silent - silent == 2
        c = RawClient(rt.port, timeout=TIMEOUT)
        try:
            for other in (1, dev - 1, dev + 1, N_UNITS, PLANT):
                assert c.read(other, 40000, 2) == SUNS
            with pytest.raises(ModbusException) as exc:
                c.write(dev + 1, 40000, [1, 2])
            assert exc.value.code == 0x02
        finally:
            c.close()
    finally:
        rt.call(lambda: rt.farm.set_unit_params(unit, comm_fault=False))
    wait_ticks(rt, 2, timeout=5)
    c = RawClient(rt.port, timeout=TIMEOUT)
    try:
        assert c.read(dev, 40070, 2) == [802, 62]
    finally:
        c.close()
