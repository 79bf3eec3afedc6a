"""Farm configuration: TOML in, validated parameter arrays out.

A config names the farm, its seed and row layout, the ambient profile, and one or more groups of
units, each a preset plus overrides plus a seeded manufacturing spread::

    [farm]
    name = "demo"
    seed = 7
    units_per_row = 10        # units i and i+1 in the same row exchange heat
    initial_soc = 0.5

    [ambient]
    kind = "daily"            # "constant" (value_c) | "daily" | "series" (times_s, values_c)
    mean_c = 20.0
    amplitude_c = 6.0
    peak_hour = 15.0

    [[units]]
    preset = "lfp-3.7mwh-20ft"
    count = 40
    [units.params]            # any name from bess_farm.engine.presets.PARAMETERS
    hvac_cooling_w = 80000.0
    [units.spread]            # relative standard deviations, drawn per unit, clipped at 3 sigma
    capacity = 0.01
    r0 = 0.03

Every error names the offending key and what would be valid; nothing is built from a config
that failed validation.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import aging
from .ambient import AMBIENT_KINDS
from .chemistry import BUILTIN_OCV, OCV_GRID, ocv_integral_table, resample_ocv
from .presets import PARAMETERS, preset

SPREAD_KEYS = ("capacity", "r0", "r1", "r2")
_FARM_KEYS = {"name", "seed", "units_per_row", "initial_soc", "initial_temp_c", "start_hour",
              "aging_interval_s"}
_AMBIENT_KEYS = {"kind", "value_c", "mean_c", "amplitude_c", "peak_hour", "times_s", "values_c"}
_GROUP_KEYS = {"preset", "count", "params", "spread"}


class ConfigError(ValueError):
    """A farm configuration that cannot be built; the message names the key and the rule."""


@dataclass
class UnitGroup:
    preset: str
    count: int
    params: dict[str, Any]
    spread: dict[str, float]


@dataclass
class FarmConfig:
    name: str = "bess-farm"
    seed: int = 0
    units_per_row: int = 10
    initial_soc: float = 0.5
    initial_temp_c: float | None = None
    start_hour: float = 0.0
    aging_interval_s: float = 10.0
    ambient: dict[str, Any] = field(default_factory=lambda: {"kind": "constant", "value_c": 25.0})
    groups: list[UnitGroup] = field(default_factory=list)

    @property
    def n_units(self) -> int:
        return sum(g.count for g in self.groups)


def _unknown(keys, allowed, where):
    extra = sorted(set(keys) - set(allowed))
    if extra:
        raise ConfigError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(sorted(allowed))}")


def check_number(value, where, lo=-math.inf, hi=math.inf, lo_open=False, integer=False,
                 error: type[Exception] = None):
    """``value`` as a finite number inside ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), an int
    with ``integer``; else ``error`` (default :class:`ConfigError`) naming ``where`` and the rule.
    Every config section (farm, runtime, Modbus, API, telemetry) validates its numbers here."""
    error = error or ConfigError
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise error(f"{where}: expected a number, got {value!r}")
    if integer and (not float(value).is_integer()):
        raise error(f"{where}: expected a whole number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise error(f"{where}: must be finite, got {value!r}")
    if v < lo or (lo_open and v == lo) or v > hi:
        lo_s = f"> {lo}" if lo_open else f">= {lo}"
        raise error(f"{where}: {value!r} is out of range (must be {lo_s} and <= {hi})")
    return int(v) if integer else v


def parse_config(data: dict[str, Any] | str | Path | None = None) -> FarmConfig:
    """Parse and validate a config given as a dict, TOML text, or a path to a TOML file.

    ``None`` gives the embedded default farm (:func:`default_config`).
    """
    if data is None:
        return default_config()
    source = "config"
    if isinstance(data, Path) or (isinstance(data, str) and "\n" not in data and data.endswith(".toml")):
        path = Path(data)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the config file: {exc.strerror}") from None
        data = text
    if isinstance(data, str):
        try:
            data = tomllib.loads(data)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a table at the top level")
    _unknown(data, {"farm", "ambient", "units"}, source)
    cfg = FarmConfig()
    farm = data.get("farm", {})
    if not isinstance(farm, dict):
        raise ConfigError("farm: expected a table")
    _unknown(farm, _FARM_KEYS, "farm")
    if "name" in farm:
        if not isinstance(farm["name"], str) or not farm["name"]:
            raise ConfigError("farm.name: expected a non-empty string")
        cfg.name = farm["name"]
    if "seed" in farm:
        cfg.seed = check_number(farm["seed"], "farm.seed", 0, 2**63 - 1, integer=True)
    if "units_per_row" in farm:
        cfg.units_per_row = check_number(farm["units_per_row"], "farm.units_per_row", 1, 10**7, integer=True)
    if "initial_soc" in farm:
        cfg.initial_soc = check_number(farm["initial_soc"], "farm.initial_soc", 0.0, 1.0)
    if "initial_temp_c" in farm:
        cfg.initial_temp_c = check_number(farm["initial_temp_c"], "farm.initial_temp_c", -60.0, 100.0)
    if "start_hour" in farm:
        cfg.start_hour = check_number(farm["start_hour"], "farm.start_hour", 0.0, 24.0)
    if "aging_interval_s" in farm:
        cfg.aging_interval_s = check_number(farm["aging_interval_s"], "farm.aging_interval_s", 0.0, 3600.0, lo_open=True)
    if "ambient" in data:
        cfg.ambient = _parse_ambient(data["ambient"])
    units = data.get("units")
    if units is None:
        raise ConfigError(f"{source}: no [[units]] group; add at least one, e.g. preset = \"lfp-3.7mwh-20ft\"")
    if not isinstance(units, list) or not units:
        raise ConfigError("units: expected one or more [[units]] tables")
    for n, group in enumerate(units):
        cfg.groups.append(_parse_group(group, f"units[{n}]"))
    if cfg.n_units > 10_000_000:
        raise ConfigError(f"units: {cfg.n_units} units is more than one process carries (10,000,000)")
    # Build once to run the physical checks on the merged parameters.
    for n, group in enumerate(cfg.groups):
        resolve_kind(group, f"units[{n}]")
    return cfg


def _parse_ambient(amb) -> dict[str, Any]:
    if not isinstance(amb, dict):
        raise ConfigError("ambient: expected a table")
    _unknown(amb, _AMBIENT_KEYS, "ambient")
    kind = amb.get("kind", "constant")
    if kind not in AMBIENT_KINDS:
        raise ConfigError(f"ambient.kind: unknown kind {kind!r}; known: {', '.join(AMBIENT_KINDS)}")
    out: dict[str, Any] = {"kind": kind}
    if kind == "constant":
        out["value_c"] = check_number(amb.get("value_c", 25.0), "ambient.value_c", -60.0, 70.0)
    elif kind == "daily":
        out["mean_c"] = check_number(amb.get("mean_c", 20.0), "ambient.mean_c", -60.0, 70.0)
        out["amplitude_c"] = check_number(amb.get("amplitude_c", 6.0), "ambient.amplitude_c", 0.0, 40.0)
        out["peak_hour"] = check_number(amb.get("peak_hour", 15.0), "ambient.peak_hour", 0.0, 24.0)
    else:
        times = amb.get("times_s")
        values = amb.get("values_c")
        if not isinstance(times, list) or not isinstance(values, list) or len(times) != len(values) or not times:
            raise ConfigError("ambient: kind 'series' needs times_s and values_c, two lists of equal length")
        t = np.array([check_number(x, f"ambient.times_s[{j}]") for j, x in enumerate(times)])
        v = np.array([check_number(x, f"ambient.values_c[{j}]", -60.0, 70.0) for j, x in enumerate(values)])
        if np.any(np.diff(t) <= 0):
            raise ConfigError("ambient.times_s: must be strictly increasing")
        out["times_s"] = t
        out["values_c"] = v
    return out


def _parse_group(group, where) -> UnitGroup:
    if not isinstance(group, dict):
        raise ConfigError(f"{where}: expected a table")
    _unknown(group, _GROUP_KEYS, where)
    if "preset" not in group:
        raise ConfigError(f"{where}.preset: missing; every group names a preset")
    name = group["preset"]
    try:
        preset(name)
    except ValueError as exc:
        raise ConfigError(f"{where}.preset: {exc}") from None
    count = check_number(group.get("count", 1), f"{where}.count", 1, 10_000_000, integer=True)
    params = group.get("params", {})
    if not isinstance(params, dict):
        raise ConfigError(f"{where}.params: expected a table")
    _unknown(params, PARAMETERS, f"{where}.params")
    spread = group.get("spread", {})
    if not isinstance(spread, dict):
        raise ConfigError(f"{where}.spread: expected a table")
    _unknown(spread, SPREAD_KEYS, f"{where}.spread")
    spread = {k: check_number(v, f"{where}.spread.{k}", 0.0, 0.3) for k, v in spread.items()}
    return UnitGroup(name, count, dict(params), spread)


# (key, lower bound, lower bound open?, upper bound)
_RANGES = {
    "cell_capacity_ah": (0.0, True, 1e5), "n_series": (1, False, 10000), "n_parallel": (1, False, 10000),
    "cell_r0_ohm": (0.0, True, 1.0), "cell_r1_ohm": (0.0, False, 1.0), "cell_tau1_s": (0.0, True, 1e5),
    "cell_r2_ohm": (0.0, False, 1.0), "cell_tau2_s": (0.0, True, 1e6),
    "coulombic_efficiency": (0.5, False, 1.0), "cell_v_max": (0.5, False, 6.0),
    "cell_v_min": (0.1, False, 6.0), "cell_v_trip_high": (0.5, False, 7.0), "cell_v_trip_low": (0.0, False, 6.0),
    "c_rate_max_discharge": (0.0, True, 20.0), "c_rate_max_charge": (0.0, True, 20.0),
    "c_rate_trip": (0.0, True, 50.0), "soc_min": (0.0, False, 1.0), "soc_max": (0.0, False, 1.0),
    "soc_taper": (1e-4, False, 0.5), "pcs_rated_w": (0.0, True, 1e9),
    "pcs_loss_l0": (0.0, False, 0.2), "pcs_loss_l1": (0.0, False, 0.2), "pcs_loss_l2": (0.0, False, 0.2),
    "t_derate_c": (-40.0, False, 150.0), "t_trip_high_c": (-40.0, False, 200.0),
    "t_min_charge_c": (-60.0, False, 60.0), "t_trip_low_c": (-80.0, False, 60.0),
    "heat_capacity_j_per_k": (0.0, True, 1e12), "conductance_ambient_w_per_k": (0.0, True, 1e9),
    "conductance_neighbour_w_per_k": (0.0, False, 1e9), "hvac_cooling_w": (0.0, False, 1e9),
    "hvac_heating_w": (0.0, False, 1e9), "hvac_cool_setpoint_c": (-40.0, False, 100.0),
    "hvac_heat_setpoint_c": (-60.0, False, 100.0), "hvac_gain_w_per_k": (0.0, True, 1e9),
    "hvac_cop_cooling": (0.1, False, 20.0), "hvac_cop_heating": (0.1, False, 20.0),
    "hvac_base_w": (0.0, False, 1e7), "runaway_onset_c": (0.0, True, 1000.0),
    "runaway_critical_c": (0.0, True, 2000.0), "runaway_onset_w": (0.0, False, 1e9),
    "runaway_activation_k": (0.0, False, 1e6), "runaway_energy_factor": (0.0, False, 100.0),
    "runaway_tau_s": (1e-3, False, 1e7), "sensor_noise_v": (0.0, False, 1e3),
    "sensor_noise_c": (0.0, False, 100.0), "sensor_noise_a": (0.0, False, 1e5),
    "sensor_noise_soc": (0.0, False, 0.5),
}


def resolve_kind(group: UnitGroup, where: str) -> dict[str, Any]:
    """Preset merged with the group's overrides, validated as a physical whole."""
    p = preset(group.preset)
    p.update(group.params)
    for key, value in p.items():
        if key in _RANGES:
            lo, lo_open, hi = _RANGES[key]
            integer = key in ("n_series", "n_parallel")
            p[key] = check_number(value, f"{where}.params.{key}", lo, hi, lo_open=lo_open, integer=integer)
        elif key in ("vendor", "model", "chemistry", "aging_model"):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{where}.params.{key}: expected a non-empty string")
    if ("ocv_soc" in p) != ("ocv_v" in p):
        raise ConfigError(f"{where}.params: ocv_soc and ocv_v go together")
    if "ocv_soc" in p:
        try:
            p["_ocv"] = resample_ocv(p["ocv_soc"], p["ocv_v"])
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}.params.ocv_v: {exc}") from None
    else:
        if p["chemistry"] not in BUILTIN_OCV:
            raise ConfigError(f"{where}.params.chemistry: unknown chemistry {p['chemistry']!r}; "
                              f"known: {', '.join(BUILTIN_OCV)} (or give ocv_soc and ocv_v)")
        p["_ocv"] = resample_ocv(np.linspace(0, 1, BUILTIN_OCV[p['chemistry']].size), BUILTIN_OCV[p["chemistry"]])
    try:
        p["_aging_model"] = aging.aging_model_id(p["aging_model"])
    except ValueError as exc:
        raise ConfigError(f"{where}.params.aging_model: {exc}") from None

    def rule(ok, msg):
        if not ok:
            raise ConfigError(f"{where}.params: {msg}")

    rule(p["soc_min"] < p["soc_max"], f"soc_min ({p['soc_min']}) must be below soc_max ({p['soc_max']})")
    rule(p["soc_max"] - p["soc_min"] > p["soc_taper"], "soc_taper must be narrower than the SoC window")
    rule(p["cell_v_trip_low"] < p["cell_v_min"] < p["cell_v_max"] < p["cell_v_trip_high"],
         "cell voltages must satisfy cell_v_trip_low < cell_v_min < cell_v_max < cell_v_trip_high")
    ocv = p["_ocv"]
    at_min = np.interp(p["soc_min"], OCV_GRID, ocv)
    at_max = np.interp(p["soc_max"], OCV_GRID, ocv)
    rule(at_min > p["cell_v_min"], f"the OCV at soc_min ({at_min:.3f} V) must lie above cell_v_min "
         f"({p['cell_v_min']} V), or the unit could never discharge there")
    rule(at_max < p["cell_v_max"], f"the OCV at soc_max ({at_max:.3f} V) must lie below cell_v_max "
         f"({p['cell_v_max']} V), or the unit could never charge there")
    rule(p["t_derate_c"] < p["t_trip_high_c"], "t_derate_c must be below t_trip_high_c")
    rule(p["t_trip_low_c"] < p["t_min_charge_c"], "t_trip_low_c must be below t_min_charge_c")
    rule(p["hvac_heat_setpoint_c"] < p["hvac_cool_setpoint_c"],
         "hvac_heat_setpoint_c must be below hvac_cool_setpoint_c")
    rule(p["runaway_onset_c"] < p["runaway_critical_c"], "runaway_onset_c must be below runaway_critical_c")
    rule(p["t_trip_high_c"] < p["runaway_onset_c"], "t_trip_high_c must be below runaway_onset_c")
    rule(p["c_rate_trip"] > max(p["c_rate_max_discharge"], p["c_rate_max_charge"]),
         "c_rate_trip must exceed both current limits")
    rule(p["pcs_loss_l0"] + p["pcs_loss_l1"] + p["pcs_loss_l2"] < 0.5,
         "PCS losses at full load must stay below half the rating")
    return p


def default_config() -> FarmConfig:
    """The embedded default farm: 40 LFP containers in 4 rows of 10, a daily ambient cycle."""
    return parse_config({
        "farm": {"name": "default-farm", "seed": 1, "units_per_row": 10, "initial_soc": 0.5},
        "ambient": {"kind": "daily", "mean_c": 22.0, "amplitude_c": 7.0, "peak_hour": 15.0},
        "units": [{"preset": "lfp-3.7mwh-20ft", "count": 40,
                   "spread": {"capacity": 0.01, "r0": 0.03, "r1": 0.03, "r2": 0.03}}],
    })


def ocv_tables(kinds: list[dict[str, Any]]):
    """Stack the kinds' OCV curves and their integrals into the kernel's 2-D tables."""
    ocv = np.vstack([k["_ocv"] for k in kinds])
    ocv_int = np.vstack([ocv_integral_table(row) for row in ocv])
    return np.ascontiguousarray(ocv), np.ascontiguousarray(ocv_int)
