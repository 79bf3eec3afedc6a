"""Register maps: points over a block of holding registers, encoded from a quantity vector.

A :class:`RegisterMap` is compiled once per device class (a unit kind's SunSpec map, the plant's,
or a vendor map) into flat arrays, and :func:`encode` (compiled) fills exactly the requested
registers from one device's quantity vector: the request costs the points it touches, never a
full register image per tick. Strings, scale factors and other constants live in a static image
that the encoder starts from.

Encoding rules (SunSpec, and what vendor maps choose per point):

* ``raw = round(value * scale)``, clamped to the type's range without its "not implemented"
  value; a NaN quantity encodes as "not implemented" (0xFFFF u16, 0x8000 i16, 0xFFFFFFFF u32,
  0x80000000 i32, 0 acc64, NaN f32).
* 32- and 64-bit values are big-endian words, high word first, unless the point says
  ``word_order = "little"``; ``byte_order = "little"`` swaps the two bytes of every word.

Writes are decoded in Python (:meth:`RegisterMap.decode_write`): they must cover whole writable
points (else exception 02) and every value must be inside the point's limits (else exception 03);
nothing is applied unless the whole request is valid.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np
from numba import njit

# point types
T_U16, T_I16, T_U32, T_I32, T_U64, T_F32, T_STATIC = 0, 1, 2, 3, 4, 5, 6
TYPE_SIZES = {T_U16: 1, T_I16: 1, T_U32: 2, T_I32: 2, T_U64: 4, T_F32: 2}
TYPE_NAMES = {"u16": T_U16, "i16": T_I16, "u32": T_U32, "i32": T_I32, "u64": T_U64, "f32": T_F32}

# Modbus exception codes
ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
GATEWAY_NO_RESPONSE = 0x0B


class ModbusError(Exception):
    """A request the device refuses with a Modbus exception code."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


@dataclass
class Point:
    name: str
    offset: int                   # register offset from the map's base address
    type: int                     # T_*
    size: int                     # registers
    source: int = -1              # quantity slot, -1 for a static point
    scale: float = 1.0            # raw = value * scale
    writable: bool = False
    target: str | None = None     # what a write changes (see the device's write handlers)
    lo: float = -math.inf         # write limits, engineering units
    hi: float = math.inf
    word_little: bool = False
    byte_little: bool = False
    static: list[int] = field(default_factory=list)   # the words of a static point


class RegisterMap:
    """Points over ``[base, base + size)``; compile with :meth:`compile` before use."""

    def __init__(self, name: str, base: int, size: int):
        self.name = name
        self.base = base
        self.size = size
        self.points: list[Point] = []
        self.sn_offset: tuple[int, int] | None = None   # (offset, size) of a per-device string

    def add(self, p: Point) -> Point:
        if p.offset < 0 or p.offset + p.size > self.size:
            raise ValueError(f"{self.name}: point {p.name} at {p.offset} does not fit the map")
        self.points.append(p)
        return p

    def compile(self) -> "RegisterMap":
        pts = sorted(self.points, key=lambda p: p.offset)
        for a, b in zip(pts, pts[1:]):
            if a.offset + a.size > b.offset:
                raise ValueError(f"{self.name}: points {a.name} and {b.name} overlap "
                                 f"(registers {self.base + a.offset} and {self.base + b.offset})")
        self.points = pts
        static = np.zeros(self.size, dtype=np.uint16)
        dyn = [p for p in pts if p.source >= 0]
        for p in pts:
            if p.static:
                static[p.offset:p.offset + p.size] = p.static
            elif p.source < 0:        # unbound: "not implemented"
                static[p.offset:p.offset + p.size] = _not_implemented(p)
        self.static = static
        self.p_off = np.array([p.offset for p in dyn], dtype=np.int64)
        self.p_end = np.array([p.offset + p.size for p in dyn], dtype=np.int64)
        self.p_type = np.array([p.type for p in dyn], dtype=np.int64)
        self.p_src = np.array([p.source for p in dyn], dtype=np.int64)
        self.p_scale = np.array([p.scale for p in dyn], dtype=np.float64)
        self.p_wl = np.array([p.word_little for p in dyn], dtype=np.bool_)
        self.p_bl = np.array([p.byte_little for p in dyn], dtype=np.bool_)
        self._starts = np.array([p.offset for p in pts], dtype=np.int64)
        return self

    def read(self, q: np.ndarray, address: int, count: int) -> np.ndarray:
        """Registers ``[address, address + count)`` as uint16, or :class:`ModbusError` 02."""
        start = address - self.base
        if start < 0 or start + count > self.size:
            raise ModbusError(ILLEGAL_ADDRESS, f"registers {address}..{address + count - 1} are "
                                               f"outside {self.base}..{self.base + self.size - 1}")
        out = np.empty(count, dtype=np.uint16)
        encode(q, self.p_off, self.p_end, self.p_type, self.p_src, self.p_scale, self.p_wl,
               self.p_bl, self.static, start, out)
        return out

    def point_at(self, offset: int) -> Point | None:
        j = int(np.searchsorted(self._starts, offset, side="right")) - 1
        if j >= 0:
            p = self.points[j]
            if p.offset <= offset < p.offset + p.size:
                return p
        return None

    def decode_write(self, address: int, words: list[int]) -> list[tuple[Point, float]]:
        """The (point, value) pairs a write of ``words`` at ``address`` sets, all validated."""
        start = address - self.base
        end = start + len(words)
        if start < 0 or end > self.size:
            raise ModbusError(ILLEGAL_ADDRESS, f"registers {address}..{address + len(words) - 1} "
                                               f"are outside this device's map")
        changes = []
        o = start
        while o < end:
            p = self.point_at(o)
            if p is None or not p.writable:
                what = p.name if p is not None else "no point"
                raise ModbusError(ILLEGAL_ADDRESS, f"register {self.base + o} ({what}) is not writable")
            if p.offset < start or p.offset + p.size > end:
                raise ModbusError(ILLEGAL_ADDRESS, f"a write must cover all {p.size} registers of "
                                                   f"{p.name} (at {self.base + p.offset})")
            raw = words[p.offset - start:p.offset - start + p.size]
            value = decode_value(p, raw)
            if value is None or not (p.lo <= value <= p.hi):
                shown = "not implemented" if value is None else f"{value:g}"
                raise ModbusError(ILLEGAL_VALUE, f"{p.name} = {shown} is outside [{p.lo:g}, {p.hi:g}]")
            changes.append((p, value))
            o = p.offset + p.size
        return changes


def _not_implemented(p: Point) -> list[int]:
    if p.type == T_I16:
        return [0x8000]
    if p.type == T_I32:
        return [0x8000, 0]
    if p.type == T_U64:
        return [0] * 4
    if p.type == T_F32:
        return [0x7FC0, 0]
    return [0xFFFF] * p.size


def decode_value(p: Point, raw: list[int]) -> float | None:
    """Engineering value of a point's raw words (None for the "not implemented" value)."""
    words = list(raw)
    if p.byte_little:
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    if p.word_little:
        words.reverse()
    v: float
    if p.type == T_U16:
        if words[0] == 0xFFFF:
            return None
        v = words[0]
    elif p.type == T_I16:
        if words[0] == 0x8000:
            return None
        v = words[0] - 0x10000 if words[0] & 0x8000 else words[0]
    elif p.type == T_U32:
        v = (words[0] << 16) | words[1]
        if v == 0xFFFFFFFF:
            return None
    elif p.type == T_I32:
        u = (words[0] << 16) | words[1]
        if u == 0x80000000:
            return None
        v = u - (1 << 32) if u & 0x80000000 else u
    elif p.type == T_U64:
        v = (words[0] << 48) | (words[1] << 32) | (words[2] << 16) | words[3]
    elif p.type == T_F32:
        v = struct.unpack(">f", struct.pack(">HH", words[0], words[1]))[0]
        if not math.isfinite(v):
            return None
    else:
        return None
    return v / p.scale


@njit(cache=True, nogil=True, error_model="numpy")
def _words(typ, v, scale, w):
    """The big-endian words of one value into ``w[0:4]``; returns the word count."""
    if typ == T_F32:
        x = np.empty(1, dtype=np.float32)
        x[0] = v * scale
        u = x.view(np.uint32)[0]
        w[0] = (u >> 16) & 0xFFFF
        w[1] = u & 0xFFFF
        return 2
    if typ == T_U16:
        if v != v:
            w[0] = 0xFFFF
        else:
            w[0] = int(min(65534.0, max(0.0, round(v * scale))))
        return 1
    if typ == T_I16:
        if v != v:
            w[0] = 0x8000
        else:
            w[0] = int(min(32767.0, max(-32767.0, round(v * scale)))) & 0xFFFF
        return 1
    if typ == T_U32:
        if v != v:
            u = 0xFFFFFFFF
        else:
            u = int(min(4294967294.0, max(0.0, round(v * scale))))
        w[0] = (u >> 16) & 0xFFFF
        w[1] = u & 0xFFFF
        return 2
    if typ == T_I32:
        if v != v:
            u = 0x80000000
        else:
            u = int(min(2147483647.0, max(-2147483647.0, round(v * scale)))) & 0xFFFFFFFF
        w[0] = (u >> 16) & 0xFFFF
        w[1] = u & 0xFFFF
        return 2
    # T_U64 (SunSpec acc64): 0 is "not accumulated"
    if v != v:
        u64 = np.uint64(0)
    else:
        u64 = np.uint64(min(9.2e18, max(0.0, round(v * scale))))
    w[0] = (u64 >> np.uint64(48)) & np.uint64(0xFFFF)
    w[1] = (u64 >> np.uint64(32)) & np.uint64(0xFFFF)
    w[2] = (u64 >> np.uint64(16)) & np.uint64(0xFFFF)
    w[3] = u64 & np.uint64(0xFFFF)
    return 4


@njit(cache=True, nogil=True, error_model="numpy")
def encode(q, p_off, p_end, p_type, p_src, p_scale, p_wl, p_bl, static, start, out):
    """Registers ``[start, start + len(out))`` of a map from the quantity vector ``q``."""
    count = out.shape[0]
    stop = start + count
    for j in range(count):
        out[j] = static[start + j]
    p = np.searchsorted(p_end, start, side="right")
    w = np.zeros(4, dtype=np.int64)
    while p < p_off.shape[0] and p_off[p] < stop:
        nw = _words(p_type[p], q[p_src[p]], p_scale[p], w)
        if p_wl[p]:
            for a in range(nw // 2):
                t = w[a]
                w[a] = w[nw - 1 - a]
                w[nw - 1 - a] = t
        for a in range(nw):
            r = p_off[p] + a
            if start <= r < stop:
                x = w[a]
                if p_bl[p]:
                    x = ((x & 0xFF) << 8) | (x >> 8)
                out[r - start] = x
        p += 1
