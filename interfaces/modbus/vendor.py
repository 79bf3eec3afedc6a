"""Vendor register maps from a declarative file.

Real plants mix vendors, and each BMS/PCS has its own register map; word order is what SCADA
integrators trip over most. A vendor map is a TOML file (docs/modbus.md; an example ships as
``maps/example-vendor.toml``)::

    name = "acme-bms-2"
    word_order = "little"          # default for 32-bit points: "big" (high word first) or "little"
    byte_order = "big"             # default byte order inside a word

    [[point]]
    address = 0                    # holding register (0-based PDU address)
    name = "soc"
    type = "u16"                   # u16 i16 u32 i32 f32 string
    source = "soc_pct"             # a quantity (bess_farm.interfaces.modbus.quantities.QUANTITIES)
    scale = 10                     # raw = value * scale
    [[point]]
    address = 20
    name = "power_setpoint"
    type = "i32"
    source = "ctl_wset_w"          # read back what was written
    target = "setpoint_w"          # a write target (WRITE_TARGETS)
    access = "rw"
    min = -1860000                 # engineering limits; a write outside gets exception 03
    max = 1860000

A point may set its own ``word_order``/``byte_order``; ``string`` points need ``size`` (registers)
and ``value``. Registers between points read as 0 and are not writable (exception 02).
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

import numpy as np

from .quantities import QUANTITIES, QUANTITY_INDEX
from .registers import T_STATIC, TYPE_NAMES, TYPE_SIZES, Point, RegisterMap

WRITE_TARGETS = {
    "setpoint_w": "the unit's own AC power setpoint [W] (the unit leaves the farm dispatch)",
    "control_enable": "1 = follow the written setpoint, 0 = back to the farm dispatch",
    "enable": "1 = enable the unit, 0 = disable (contactors open)",
    "alarm_reset": "1 = reset latched trips whose cause has cleared",
    "soc_rsv_min_pct": "reserve: lowest SoC the unit discharges to [%]",
    "soc_rsv_max_pct": "reserve: highest SoC the unit charges to [%]",
    "heartbeat": "control heartbeat; any write restarts the revert timer",
}
_KEYS = {"address", "name", "type", "source", "target", "scale", "access", "min", "max",
         "word_order", "byte_order", "size", "value", "description", "unit"}
_TOP = {"name", "description", "word_order", "byte_order", "point"}
BUILTIN_DIR = Path(__file__).parent / "maps"


class VendorMapError(ValueError):
    """A vendor map file that cannot be used; the message names the file, line and rule."""


def builtin_maps() -> dict[str, Path]:
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}


def parse_vendor_map(path: Path | str) -> RegisterMap:
    path = Path(path)
    if not path.exists() and path.name in builtin_maps():      # a built-in map by name
        path = builtin_maps()[path.name]
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise VendorMapError(f"{path}: cannot read the vendor map: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise VendorMapError(f"{path}: not valid TOML: {exc}") from None
    point_lines = [j + 1 for j, line in enumerate(text.splitlines())
                   if re.match(r"\s*\[\[\s*point\s*\]\]", line)]

    def fail(j: int | None, msg: str):
        where = f"{path}:{point_lines[j]}" if j is not None and j < len(point_lines) else str(path)
        raise VendorMapError(f"{where}: {msg}")

    extra = sorted(set(doc) - _TOP)
    if extra:
        fail(None, f"unknown key {extra[0]!r}; allowed: {', '.join(sorted(_TOP))}")
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        fail(None, "'name' (a non-empty string) is required")
    wo_default = doc.get("word_order", "big")
    bo_default = doc.get("byte_order", "big")
    _order(wo_default, lambda m: fail(None, m), "word_order")
    _order(bo_default, lambda m: fail(None, m), "byte_order")
    points = doc.get("point")
    if not isinstance(points, list) or not points:
        fail(None, "no [[point]] tables")
    pts: list[Point] = []
    for j, pt in enumerate(points):
        if not isinstance(pt, dict):
            fail(j, "expected a table")
        bad = sorted(set(pt) - _KEYS)
        if bad:
            fail(j, f"unknown key {bad[0]!r}; allowed: {', '.join(sorted(_KEYS))}")
        pname = pt.get("name")
        if not isinstance(pname, str) or not pname:
            fail(j, "'name' (a non-empty string) is required")
        label = f"point {pname!r}"
        addr = pt.get("address")
        if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr <= 65535:
            fail(j, f"{label}: 'address' must be a whole number 0..65535, got {addr!r}")
        typ = pt.get("type")
        if typ == "string":
            size = pt.get("size")
            value = pt.get("value")
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 125:
                fail(j, f"{label}: a string needs 'size' in registers (1..125)")
            if not isinstance(value, str):
                fail(j, f"{label}: a string needs 'value' (text)")
            raw = value.encode("utf-8")
            if len(raw) > 2 * size:
                fail(j, f"{label}: value is {len(raw)} bytes, more than size {size} registers hold")
            raw = raw.ljust(2 * size, b"\0")
            words = [(raw[2 * k] << 8) | raw[2 * k + 1] for k in range(size)]
            pts.append(Point(pname, addr, T_STATIC, size, static=words))
            continue
        if typ not in TYPE_NAMES:
            fail(j, f"{label}: unknown type {typ!r}; known: {', '.join([*TYPE_NAMES, 'string'])}")
        t = TYPE_NAMES[typ]
        if t not in TYPE_SIZES:
            fail(j, f"{label}: type {typ!r} is not available in vendor maps")
        scale = pt.get("scale", 1)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                or scale == 0:
            fail(j, f"{label}: 'scale' must be a non-zero number, got {scale!r}")
        access = pt.get("access", "r")
        if access not in ("r", "rw"):
            fail(j, f"{label}: 'access' must be 'r' or 'rw', got {access!r}")
        p = Point(pname, addr, t, TYPE_SIZES[t], scale=float(scale),
                  word_little=_order(pt.get("word_order", wo_default), lambda m: fail(j, f"{label}: {m}"),
                                     "word_order"),
                  byte_little=_order(pt.get("byte_order", bo_default), lambda m: fail(j, f"{label}: {m}"),
                                     "byte_order"))
        source = pt.get("source")
        if source is not None:
            if source not in QUANTITY_INDEX:
                fail(j, f"{label}: unknown source {source!r}; known: {', '.join(QUANTITIES)}")
            p.source = QUANTITY_INDEX[source]
        if access == "rw":
            target = pt.get("target")
            if target not in WRITE_TARGETS:
                fail(j, f"{label}: a writable point needs 'target', one of {', '.join(WRITE_TARGETS)}")
            lo, hi = pt.get("min", -math.inf), pt.get("max", math.inf)
            for key, v in (("min", lo), ("max", hi)):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
                    fail(j, f"{label}: '{key}' must be a number")
            if lo >= hi:
                fail(j, f"{label}: 'min' ({lo}) must be below 'max' ({hi})")
            p.writable, p.target, p.lo, p.hi = True, target, float(lo), float(hi)
        elif "target" in pt or "min" in pt or "max" in pt:
            fail(j, f"{label}: 'target', 'min' and 'max' belong to points with access = \"rw\"")
        if source is None and not p.writable:
            fail(j, f"{label}: a read-only point needs a 'source'")
        if source is None:
            p.static = [0] * p.size        # write-only target: reads as 0
        pts.append(p)
    end = max(p.offset + p.size for p in pts)
    rm = RegisterMap(name, 0, end)
    for p in pts:
        rm.add(p)
    try:
        rm.compile()
    except ValueError as exc:
        fail(None, str(exc).split(": ", 1)[-1])
    rm.vendor_source = str(path)
    return rm


def _order(value, fail, key) -> bool:
    if value not in ("big", "little"):
        fail(f"{key} must be 'big' or 'little', got {value!r}")
    return value == "little"


def parse_units(selector: str, n: int) -> np.ndarray:
    """``"0-9,20,30-39"`` -> unit indices (validated against the farm size)."""
    out: list[int] = []
    for part in str(selector).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if not m:
            raise VendorMapError(f"bad unit selector {selector!r}: use ids and ranges like '0-9,20'")
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a or b >= n:
            raise VendorMapError(f"unit selector {selector!r}: {part} is outside 0..{n - 1}")
        out.extend(range(a, b + 1))
    return np.array(sorted(set(out)), dtype=np.int64)


def load_vendor_maps(entries: list[tuple[str, Path]], farm) -> dict[int, RegisterMap]:
    """{unit index: map} for the config's ``[[modbus.vendor_map]]`` entries."""
    out: dict[int, RegisterMap] = {}
    for selector, path in entries:
        rm = parse_vendor_map(path)
        for i in parse_units(selector, farm.n_units):
            if int(i) in out:
                raise VendorMapError(f"unit {int(i)} is given two vendor maps ({out[int(i)].name}, {rm.name})")
            out[int(i)] = rm
    return out
