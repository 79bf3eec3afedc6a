"""Scenario files: a timeline of faults and setpoint changes, or a random fault process.

::

    name = "summer-heatwave"
    description = "..."
    seed = 7                       # seeds fraction selectors, random draws, noisy parameters

    [[setpoint]]
    at = "0s"
    profile = "constant"           # constant | idle | daily-arbitrage | frequency-regulation | peak-shaving
    power_fraction = 0.4           # of the farm rating (or power_w)

    [[fault]]
    type = "heat_wave"
    at = "10m"                     # "1h30m", "90s", "500ms", "2d", or a number of seconds
    duration = "2h"                # optional: without it the fault lasts until the scenario stops
    row = 1                        # selector: units = "0-9,20" | row = 3 | fraction = 0.1 | all = true
    offset_c = 12                  # the fault's parameters (faults.FAULT_TYPES)

    [random]                       # optional: a seeded Poisson process of faults
    seed = 42
    rates_per_hour = { hvac_failure = 0.5, comm_silent = 2.0 }
    duration = ["5m", "30m"]       # uniform range of each fault's duration
    durations = { comm_silent = ["10s", "2m"] }   # per type (optional)
    max_active = 3                 # a draw while this many random faults are active is skipped
    units_per_fault = 1
    from = "0s"                    # window of the process (optional)
    until = "24h"
    [random.params.sensor_offset]  # parameters of a drawn fault (required ones must be given)
    channel = "temperature"
    offset = 8.0

Fault and setpoint entries must be listed in time order. Every problem is reported as a
:class:`ScenarioError` ``file:line: reason`` before anything is applied: TOML syntax, an unknown
key, fault or parameter, a bad selector or time, entries out of order, and (in
:meth:`Scenario.check`, against the farm) units or rows the farm does not have.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .faults import ENTRY_KEYS, FAULT_TYPES, REQUIRED, fault_type

BUILTIN_DIR = Path(__file__).resolve().parent / "scenarios"

_TOP_KEYS = {"name", "description", "seed", "fault", "setpoint", "random"}
_FAULT_KEYS = set(ENTRY_KEYS)
_SELECTOR_KEYS = ("units", "row", "fraction", "all")
_SETPOINT_KEYS = {"at", "farm_power_w", "farm_power_fraction", "profile", "power_w",
                  "power_fraction", "seed", "note"}
PROFILES = ("constant", "idle", "daily-arbitrage", "frequency-regulation", "peak-shaving")
_RANDOM_KEYS = {"seed", "rates_per_hour", "duration", "durations", "max_active",
                "units_per_fault", "from", "until", "params"}


class ScenarioError(ValueError):
    """A scenario that cannot run: ``file:line: reason``."""

    def __init__(self, source: str, line: int | None, reason: str):
        self.source, self.line, self.reason = source, line, reason
        super().__init__(f"{source}:{line}: {reason}" if line else f"{source}: {reason}")


# ---------------------------------------------------------------------------- times

_TIME_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)\s*")
_UNIT_S = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_time(value: Any) -> float:
    """Seconds from a number or a string such as ``"10m"``, ``"1h30m"``, ``"500ms"``."""
    if isinstance(value, bool):
        raise ValueError(f"a time must be a number of seconds or a string like \"10m\", got {value!r}")
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        try:
            v = float(text)
        except ValueError:
            pos, v = 0, 0.0
            while pos < len(text):
                m = _TIME_RE.match(text, pos)
                if not m or m.end() == pos:
                    raise ValueError(f"cannot read the time {value!r}; use e.g. \"90s\", \"10m\", "
                                     f"\"1h30m\", \"2d\" or a number of seconds") from None
                v += float(m.group(1)) * _UNIT_S[m.group(2)]
                pos = m.end()
    else:
        raise ValueError(f"a time must be a number of seconds or a string like \"10m\", got {value!r}")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"a time must be a finite number of seconds >= 0, got {value!r}")
    return v


# ---------------------------------------------------------------------------- selectors

_RANGE_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


@dataclass(frozen=True)
class Selector:
    """Which units a fault hits: ``units`` ranges, ``rows``, a seeded ``fraction``, or ``all``."""
    kind: str                                  # units | row | fraction | all
    ranges: tuple[tuple[int, int], ...] = ()   # inclusive unit ranges (kind units)
    rows: tuple[int, ...] = ()
    fraction: float = 0.0
    seed: Any = None

    @classmethod
    def parse(cls, entry: dict, default_seed: Any) -> Selector:
        given = [k for k in _SELECTOR_KEYS if k in entry]
        if len(given) > 1:
            raise ValueError(f"give one selector, not {' and '.join(given)}")
        if not given:
            raise ValueError("no selector: give units = \"0-9,20\", row = 3, fraction = 0.1 "
                             "or all = true")
        k = given[0]
        v = entry[k]
        if k == "all":
            if v is not True:
                raise ValueError("selector all must be true")
            return cls("all")
        if k == "fraction":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"selector fraction must be a number in (0, 1], got {v!r}")
            seed = entry.get("seed", default_seed)
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                raise ValueError(f"seed must be a whole number >= 0, got {seed!r}")
            return cls("fraction", fraction=float(v), seed=seed)
        if k == "row":
            rows = v if isinstance(v, list) else [v]
            if not rows or any(isinstance(r, bool) or not isinstance(r, int) or r < 0 for r in rows):
                raise ValueError(f"selector row must be a row number >= 0 or a list of them, got {v!r}")
            return cls("row", rows=tuple(sorted(set(rows))))
        return cls("units", ranges=parse_units(v))

    def check(self, n_units: int, n_rows: int) -> str | None:
        """The reason this selector does not fit a farm, or None."""
        if self.kind == "units":
            for lo, hi in self.ranges:
                if hi >= n_units:
                    return (f"unknown unit {hi if lo < n_units else lo}: the farm has units "
                            f"0..{n_units - 1}")
        if self.kind == "row":
            for r in self.rows:
                if r >= n_rows:
                    return f"unknown row {r}: the farm has rows 0..{n_rows - 1}"
        return None

    def resolve(self, n_units: int, rows: np.ndarray, salt: Any = 0) -> np.ndarray:
        """Sorted unit indices (deterministic for a seed)."""
        if self.kind == "all":
            return np.arange(n_units, dtype=np.int64)
        if self.kind == "units":
            return np.unique(np.concatenate([np.arange(lo, hi + 1, dtype=np.int64)
                                             for lo, hi in self.ranges]))
        if self.kind == "row":
            return np.flatnonzero(np.isin(rows, self.rows)).astype(np.int64)
        k = max(1, int(round(self.fraction * n_units)))
        rng = np.random.default_rng([int(self.seed), *_salt_words(salt), 0x5E1EC7])
        return np.sort(rng.choice(n_units, size=min(k, n_units), replace=False)).astype(np.int64)

    def __str__(self) -> str:
        if self.kind == "all":
            return "all"
        if self.kind == "row":
            return "row=" + ",".join(map(str, self.rows))
        if self.kind == "fraction":
            return f"fraction={self.fraction:g} seed={self.seed}"
        return "units=" + ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.ranges)


def _salt_words(salt) -> list[int]:
    if isinstance(salt, (list, tuple)):
        return [int(s) for s in salt]
    return [int(salt)]


def parse_units(value: Any) -> tuple[tuple[int, int], ...]:
    """``"0-9,20"``, an int or a list of ints/strings -> inclusive ranges."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bool):
            raise ValueError(f"bad unit selector {value!r}")
        if isinstance(item, int):
            if item < 0:
                raise ValueError(f"bad unit id {item}: ids are >= 0")
            out.append((item, item))
            continue
        if not isinstance(item, str) or not item.strip():
            raise ValueError(f"bad unit selector {value!r}; use e.g. units = \"0-9,20\"")
        for part in item.split(","):
            m = _RANGE_RE.match(part)
            if not m:
                raise ValueError(f"bad unit range {part.strip()!r} in {item!r}; use e.g. \"0-9,20\"")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
            if hi < lo:
                raise ValueError(f"bad unit range {part.strip()!r}: {hi} < {lo}")
            out.append((lo, hi))
    if not out:
        raise ValueError("empty unit selector")
    return tuple(out)


def format_units(units: np.ndarray, limit: int = 200) -> str:
    """``[0,1,2,3,7]`` -> ``"0-3,7"`` (shortened past ``limit`` characters)."""
    u = np.asarray(units, dtype=np.int64)
    if u.size == 0:
        return ""
    breaks = np.flatnonzero(np.diff(u) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [u.size - 1]])
    parts, length = [], 0
    for j, (s, e) in enumerate(zip(starts, ends)):
        p = str(u[s]) if s == e else f"{u[s]}-{u[e]}"
        if length + len(p) > limit:
            rest = int(u.size - s)
            parts.append(f"...(+{rest} units)")
            break
        parts.append(p)
        length += len(p) + 1
    return ",".join(parts)


# ---------------------------------------------------------------------------- entries


@dataclass
class FaultSpec:
    type: str
    at_s: float
    duration_s: float | None
    selector: Selector
    params: dict
    line: int | None = None
    index: int = 0
    note: str = ""

    @property
    def end_s(self) -> float | None:
        return None if self.duration_s is None else self.at_s + self.duration_s


@dataclass
class SetpointSpec:
    at_s: float
    profile: str                       # one of PROFILES
    power_w: float | None = None
    power_fraction: float | None = None
    seed: int = 0
    line: int | None = None
    index: int = 0
    note: str = ""

    def describe(self) -> str:
        amount = (f"{self.power_w:g} W" if self.power_w is not None else
                  f"{self.power_fraction:g} x rating" if self.power_fraction is not None else "")
        return f"{self.profile} {amount}".strip()


@dataclass
class RandomSpec:
    seed: int
    rates_per_hour: dict[str, float]
    duration_s: tuple[float, float] = (300.0, 1800.0)
    durations_s: dict[str, tuple[float, float]] = field(default_factory=dict)
    max_active: int = 3
    units_per_fault: int = 1
    from_s: float = 0.0
    until_s: float | None = None
    params: dict[str, dict] = field(default_factory=dict)
    line: int | None = None

    def duration_range(self, ftype: str) -> tuple[float, float]:
        return self.durations_s.get(ftype, self.duration_s)


@dataclass
class Scenario:
    name: str
    description: str = ""
    seed: int = 0
    source: str = "<scenario>"
    faults: list[FaultSpec] = field(default_factory=list)
    setpoints: list[SetpointSpec] = field(default_factory=list)
    random: RandomSpec | None = None

    def check(self, farm) -> None:
        """Raise :class:`ScenarioError` if an entry does not fit this farm (unknown units, rows)."""
        n = farm.n_units
        n_rows = int(farm.row.max()) + 1 if n else 0
        for f in self.faults:
            reason = f.selector.check(n, n_rows)
            if reason:
                raise ScenarioError(self.source, f.line, f"fault {f.index + 1} ({f.type}): {reason}")
        r = self.random
        if r is not None and r.units_per_fault > n:
            raise ScenarioError(self.source, r.line, f"random: units_per_fault = {r.units_per_fault} "
                                f"is more than the farm's {n} units")

    def summary(self) -> dict:
        return {"name": self.name, "description": self.description, "seed": self.seed,
                "source": self.source, "faults": len(self.faults), "setpoints": len(self.setpoints),
                "random": self.random is not None,
                "duration_s": self.duration_s}

    @property
    def duration_s(self) -> float | None:
        """Time of the last scheduled change (None if a fault or the random process is open-ended)."""
        if self.random is not None and self.random.until_s is None and self.random.rates_per_hour:
            return None
        ends = [0.0]
        for f in self.faults:
            ft = FAULT_TYPES[f.type]
            if f.end_s is None and not ft.instant:
                return None
            ends.append(f.end_s if f.end_s is not None else f.at_s)
        ends += [s.at_s for s in self.setpoints]
        if self.random is not None and self.random.until_s is not None:
            hi = max([self.random.duration_s[1], *[d[1] for d in self.random.durations_s.values()]])
            ends.append(self.random.until_s + hi)
        return max(ends)


# ---------------------------------------------------------------------------- line numbers


class _Lines:
    """Find the line of a [[fault]] / [[setpoint]] entry or of a key inside it."""

    _HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\-\" ]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.headers: list[tuple[int, str, bool]] = []      # (line, name, array)
        for j, line in enumerate(self.lines, 1):
            m = self._HEADER.match(line)
            if m:
                self.headers.append((j, m.group(1).replace('"', "").replace(" ", ""),
                                     line.strip().startswith("[[")))

    def entry(self, array: str, k: int) -> int | None:
        seen = 0
        for line, name, is_array in self.headers:
            if is_array and name == array:
                if seen == k:
                    return line
                seen += 1
        return self.key(None, array) if k == 0 else None

    def table(self, name: str) -> int | None:
        for line, n, is_array in self.headers:
            if n == name and not is_array:
                return line
        return None

    def _span(self, start: int | None) -> tuple[int, int]:
        if start is None:                                   # top level: up to the first header
            end = self.headers[0][0] if self.headers else len(self.lines) + 1
            return 1, end
        nxt = [ln for ln, _, _ in self.headers if ln > start]
        return start, (nxt[0] if nxt else len(self.lines) + 1)

    def key(self, start: int | None, key: str, within: int | None = None) -> int | None:
        """Line of ``key = ...`` in the table starting at ``start`` (None: top level)."""
        lo, hi = self._span(start)
        pat = re.compile(r"(^|[\s{,])" + re.escape(key) + r"\s*=")
        for j in range(lo, hi):
            if j - 1 < len(self.lines) and pat.search(self.lines[j - 1].split("#", 1)[0]):
                return j
        return start


# ---------------------------------------------------------------------------- parsing


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A built-in scenario by name, or a scenario file."""
    if isinstance(name_or_path, str) and (BUILTIN_DIR / f"{name_or_path}.toml").is_file():
        path = BUILTIN_DIR / f"{name_or_path}.toml"
        return parse_scenario(path.read_text(encoding="utf-8"), source=f"builtin:{name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise ScenarioError(str(name_or_path), None,
                            f"no such scenario file, and not a built-in scenario (built-ins: "
                            f"{', '.join(s['name'] for s in list_builtin())})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(str(path), None, f"cannot read the file: {exc}") from None
    return parse_scenario(text, source=str(path))


def list_builtin() -> list[dict]:
    """The built-in scenarios: name, description, source path."""
    out = []
    for path in sorted(BUILTIN_DIR.glob("*.toml")):
        sc = parse_scenario(path.read_text(encoding="utf-8"), source=f"builtin:{path.stem}")
        out.append({"name": path.stem, "title": sc.name, "description": sc.description,
                    "path": str(path), "duration_s": sc.duration_s})
    return out


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Parse and validate scenario TOML; raises :class:`ScenarioError` (file:line: reason)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"at line (\d+)", str(exc))
        raise ScenarioError(source, int(m.group(1)) if m else None, f"not valid TOML: {exc}") from None
    lines = _Lines(text)

    def err(line, reason):
        return ScenarioError(source, line, reason)

    for k in data:
        if k not in _TOP_KEYS:
            raise err(lines.key(None, k) or lines.table(k),
                      f"unknown key {k!r}; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = data.get("name", Path(source).stem if not source.startswith("<") else "scenario")
    if not isinstance(name, str) or not name:
        raise err(lines.key(None, "name"), "name must be a non-empty string")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise err(lines.key(None, "description"), "description must be a string")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise err(lines.key(None, "seed"), f"seed must be a whole number >= 0, got {seed!r}")
    sc = Scenario(name=name, description=desc, seed=seed, source=source)

    timeline: list[tuple] = []              # (entry line, at, what, line of at) for the order check
    faults = data.get("fault", [])
    if not isinstance(faults, list):
        raise err(lines.key(None, "fault"), "fault must be an array of tables: [[fault]]")
    for k, entry in enumerate(faults):
        line = lines.entry("fault", k)
        if not isinstance(entry, dict):
            raise err(line, "each [[fault]] must be a table")
        spec = _parse_fault(entry, k, seed, line, lines, err)
        sc.faults.append(spec)
        timeline.append((line or 0, spec.at_s, f"fault {k + 1} ({spec.type})",
                         lines.key(line, "at") if line else None))
    setpoints = data.get("setpoint", [])
    if not isinstance(setpoints, list):
        raise err(lines.key(None, "setpoint"), "setpoint must be an array of tables: [[setpoint]]")
    for k, entry in enumerate(setpoints):
        line = lines.entry("setpoint", k)
        if not isinstance(entry, dict):
            raise err(line, "each [[setpoint]] must be a table")
        spec = _parse_setpoint(entry, k, line, lines, err)
        sc.setpoints.append(spec)
        timeline.append((line or 0, spec.at_s, f"setpoint {k + 1}",
                         lines.key(line, "at") if line else None))
    # entries must be written in time order (faults and setpoints together, as they appear)
    timeline.sort(key=lambda e: e[0])
    for (l0, t0, w0, _), (l1, t1, w1, at1) in zip(timeline, timeline[1:]):
        if t1 < t0:
            raise err(at1 or l1 or None, f"times out of order: {w1} at {t1:g} s comes after {w0} at "
                      f"{t0:g} s (line {l0}); list entries in time order")
    if "random" in data:
        sc.random = _parse_random(data["random"], seed, lines, err)
    return sc


def _parse_fault(entry, k, seed, line, lines, err) -> FaultSpec:
    def at(key):
        return lines.key(line, key) if line else None

    if "type" not in entry:
        raise err(line, f"fault {k + 1}: missing type (one of {', '.join(sorted(FAULT_TYPES))})")
    try:
        ft = fault_type(entry["type"]) if isinstance(entry["type"], str) else fault_type(repr(entry["type"]))
    except ValueError as exc:
        raise err(at("type"), f"fault {k + 1}: {exc}") from None
    for key in entry:
        if key not in _FAULT_KEYS and key not in _param_names(ft.name):
            allowed = sorted(_FAULT_KEYS | set(_param_names(ft.name)))
            raise err(at(key), f"fault {k + 1} ({ft.name}): unknown key {key!r}; allowed: "
                      f"{', '.join(allowed)}")
    if "at" not in entry:
        raise err(line, f"fault {k + 1} ({ft.name}): missing at (start time, e.g. at = \"10m\")")
    try:
        at_s = parse_time(entry["at"])
    except ValueError as exc:
        raise err(at("at"), f"fault {k + 1} ({ft.name}): at: {exc}") from None
    duration = None
    if "duration" in entry:
        if ft.instant:
            raise err(at("duration"), f"fault {k + 1} ({ft.name}): this fault is instantaneous and "
                      f"irreversible; remove duration")
        try:
            duration = parse_time(entry["duration"])
        except ValueError as exc:
            raise err(at("duration"), f"fault {k + 1} ({ft.name}): duration: {exc}") from None
        if duration <= 0:
            raise err(at("duration"), f"fault {k + 1} ({ft.name}): duration must be > 0")
    if ft.scope == "farm":
        extra = [s for s in _SELECTOR_KEYS if s in entry and not (s == "all" and entry[s] is True)]
        if extra:
            raise err(at(extra[0]), f"fault {k + 1} ({ft.name}): a farm-level fault takes no "
                      f"selector (it hits the whole farm); remove {extra[0]}")
        selector = Selector("all")
    else:
        try:
            selector = Selector.parse(entry, seed)
        except ValueError as exc:
            key = next((s for s in _SELECTOR_KEYS if s in entry), None)
            raise err(at(key) if key else line, f"fault {k + 1} ({ft.name}): bad selector: {exc}") from None
    if "seed" in entry and (isinstance(entry["seed"], bool) or not isinstance(entry["seed"], int)
                            or entry["seed"] < 0):
        raise err(at("seed"), f"fault {k + 1} ({ft.name}): seed must be a whole number >= 0")
    given = {kk: v for kk, v in entry.items() if kk not in _FAULT_KEYS}
    try:
        params = ft.check_params(given)
    except ValueError as exc:
        bad = next((p.name for p in ft.params if p.name in str(exc)), None)
        raise err(at(bad) if bad and bad in entry else line, f"fault {k + 1}: {exc}") from None
    note = entry.get("note", "")
    return FaultSpec(ft.name, at_s, duration, selector, params, line, k,
                     note if isinstance(note, str) else str(note))


def _param_names(ftype) -> list[str]:
    ft = FAULT_TYPES.get(ftype) if isinstance(ftype, str) else None
    return [p.name for p in ft.params] if ft else []


def _parse_setpoint(entry, k, line, lines, err) -> SetpointSpec:
    def at(key):
        return lines.key(line, key) if line else None

    for key in entry:
        if key not in _SETPOINT_KEYS:
            raise err(at(key), f"setpoint {k + 1}: unknown key {key!r}; allowed: "
                      f"{', '.join(sorted(_SETPOINT_KEYS))}")
    if "at" not in entry:
        raise err(line, f"setpoint {k + 1}: missing at")
    try:
        at_s = parse_time(entry["at"])
    except ValueError as exc:
        raise err(at("at"), f"setpoint {k + 1}: at: {exc}") from None

    def num(key, lo=-1e12, hi=1e12):
        v = entry[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
            raise err(at(key), f"setpoint {k + 1}: {key} must be a number in [{lo:g}, {hi:g}], got {v!r}")
        return float(v)

    direct = [x for x in ("farm_power_w", "farm_power_fraction") if x in entry]
    if direct and "profile" in entry:
        raise err(at(direct[0]), f"setpoint {k + 1}: give {direct[0]} or profile, not both")
    if len(direct) > 1:
        raise err(at(direct[1]), f"setpoint {k + 1}: give farm_power_w or farm_power_fraction, not both")
    seed = entry.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise err(at("seed"), f"setpoint {k + 1}: seed must be a whole number >= 0")
    note = str(entry.get("note", ""))
    if direct:
        key = direct[0]
        if key == "farm_power_w":
            return SetpointSpec(at_s, "constant", power_w=num(key), line=line, index=k, note=note)
        return SetpointSpec(at_s, "constant", power_fraction=num(key, -1.0, 1.0), line=line, index=k,
                            note=note)
    if "profile" not in entry:
        raise err(line, f"setpoint {k + 1}: give farm_power_w, farm_power_fraction or profile")
    prof = entry["profile"]
    if prof not in PROFILES:
        raise err(at("profile"), f"setpoint {k + 1}: unknown profile {prof!r}; known: {', '.join(PROFILES)}")
    if "power_w" in entry and "power_fraction" in entry:
        raise err(at("power_fraction"), f"setpoint {k + 1}: give power_w or power_fraction, not both")
    pw = num("power_w") if "power_w" in entry else None
    pf = num("power_fraction", -1.0, 1.0) if "power_fraction" in entry else None
    if prof not in ("idle",) and pw is None and pf is None:
        raise err(line, f"setpoint {k + 1}: profile {prof!r} needs power_w or power_fraction")
    return SetpointSpec(at_s, prof, pw, pf, seed, line, k, note)


def _parse_random(r, seed, lines, err) -> RandomSpec:
    line = lines.table("random")

    def at(key):
        return lines.key(line, key) if line else None

    if not isinstance(r, dict):
        raise err(line, "random must be a table: [random]")
    for key in r:
        if key not in _RANDOM_KEYS:
            raise err(at(key), f"random: unknown key {key!r}; allowed: {', '.join(sorted(_RANDOM_KEYS))}")
    rseed = r.get("seed", seed)
    if isinstance(rseed, bool) or not isinstance(rseed, int) or rseed < 0:
        raise err(at("seed"), "random: seed must be a whole number >= 0")
    rates = r.get("rates_per_hour")
    if not isinstance(rates, dict) or not rates:
        raise err(at("rates_per_hour") if "rates_per_hour" in r else line,
                  "random: rates_per_hour must be a table of fault type = rate, e.g. "
                  "{ hvac_failure = 0.5 }")
    out_rates = {}
    for ftype, rate in rates.items():
        if ftype not in FAULT_TYPES:
            raise err(lines.key(line, ftype) if line else None,
                      f"random: unknown fault {ftype!r}; known: {', '.join(sorted(FAULT_TYPES))}")
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
                or not 0 <= rate <= 1e6:
            raise err(lines.key(line, ftype) if line else None,
                      f"random: rate of {ftype} must be a number of faults per hour >= 0, got {rate!r}")
        out_rates[ftype] = float(rate)

    def rng_pair(value, where):
        if not isinstance(value, list) or len(value) != 2:
            raise ValueError(f"{where} must be [min, max], e.g. [\"5m\", \"30m\"]")
        lo, hi = parse_time(value[0]), parse_time(value[1])
        if hi < lo or hi <= 0:
            raise ValueError(f"{where} must have 0 <= min <= max and max > 0")
        return lo, hi

    spec = RandomSpec(seed=rseed, rates_per_hour=out_rates, line=line)
    try:
        if "duration" in r:
            spec.duration_s = rng_pair(r["duration"], "random.duration")
    except ValueError as exc:
        raise err(at("duration"), str(exc)) from None
    durs = r.get("durations", {})
    if not isinstance(durs, dict):
        raise err(at("durations"), "random.durations must be a table of fault type = [min, max]")
    for ftype, pair in durs.items():
        if ftype not in FAULT_TYPES:
            raise err(lines.key(line, ftype), f"random.durations: unknown fault {ftype!r}")
        try:
            spec.durations_s[ftype] = rng_pair(pair, f"random.durations.{ftype}")
        except ValueError as exc:
            raise err(lines.key(line, ftype), str(exc)) from None
    for key, lo in (("max_active", 1), ("units_per_fault", 1)):
        if key in r:
            v = r[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise err(at(key), f"random: {key} must be a whole number >= {lo}, got {v!r}")
            setattr(spec, key, v)
    try:
        if "from" in r:
            spec.from_s = parse_time(r["from"])
        if "until" in r:
            spec.until_s = parse_time(r["until"])
    except ValueError as exc:
        raise err(at("from" if "from" in r else "until"), f"random: {exc}") from None
    if spec.until_s is not None and spec.until_s <= spec.from_s:
        raise err(at("until"), "random: until must be after from")
    params = r.get("params", {})
    if not isinstance(params, dict):
        raise err(at("params"), "random.params must be a table of [random.params.<fault>] tables")
    for ftype, given in params.items():
        pline = lines.table(f"random.params.{ftype}")
        if ftype not in FAULT_TYPES:
            raise err(pline, f"random.params: unknown fault {ftype!r}")
        if not isinstance(given, dict):
            raise err(pline, f"random.params.{ftype} must be a table")
        try:
            spec.params[ftype] = FAULT_TYPES[ftype].check_params(given)
        except ValueError as exc:
            raise err(pline, f"random.params.{ftype}: {exc}") from None
    for ftype, rate in out_rates.items():
        if rate > 0 and ftype not in spec.params:
            ft = FAULT_TYPES[ftype]
            missing = [p.name for p in ft.params if p.default is REQUIRED]
            if missing:
                raise err(lines.key(line, ftype), f"random: {ftype} needs parameter(s) "
                          f"{', '.join(missing)}: add a [random.params.{ftype}] table")
            spec.params[ftype] = ft.check_params({})
    return spec
