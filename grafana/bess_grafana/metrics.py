"""Metric names, only ever from the instrument table (otel/instruments.py), and the names of the
recording rules built on them. A renamed or removed instrument fails here, at build time."""

from __future__ import annotations

from bess_farm.otel.instruments import BY_NAME, HISTOGRAM, prometheus_name

from .config import LEVEL


def m(otel_name: str) -> str:
    """The Prometheus name of an instrument of the table (KeyError if it is not there)."""
    return prometheus_name(BY_NAME[otel_name])


def bucket(otel_name: str) -> str:
    inst = BY_NAME[otel_name]
    assert inst.kind == HISTOGRAM, otel_name
    return prometheus_name(inst) + "_bucket"


def count(otel_name: str) -> str:
    inst = BY_NAME[otel_name]
    assert inst.kind == HISTOGRAM, otel_name
    return prometheus_name(inst) + "_count"


def recorded(otel_name: str, op: str) -> str:
    """Recording-rule name ``namespace_job:<metric>:<op>`` (the Prometheus convention)."""
    return f"{LEVEL}:{m(otel_name)}:{op}"


# --- the instruments the dashboards and rules use, by role --------------------------------------
POWER_RATED = m("bess.farm.power.rated")
ENERGY_CAPACITY = m("bess.farm.energy.capacity_watthours")
ENERGY_AVAILABLE = m("bess.farm.energy.available_watthours")
ENERGY_STORED = m("bess.farm.energy.stored_watthours")
POWER_AC = m("bess.farm.power.ac")
POWER_DC = m("bess.farm.power.dc")
POWER_REQUESTED = m("bess.farm.power.requested")
POWER_AUX = m("bess.farm.power.auxiliary")
SOC_MEAN = m("bess.farm.soc.mean_ratio")
SOH_MEAN = m("bess.farm.soh.mean_ratio")
RTE = m("bess.farm.round_trip_efficiency_ratio")
TEMP_MAX = m("bess.farm.temperature.max")
TEMP_MEAN = m("bess.farm.temperature.mean")
TEMP_MIN = m("bess.farm.temperature.min")
UNITS_BY_STATE = m("bess.farm.units.by_state")
UNITS_BY_SOC_BAND = m("bess.farm.units.by_soc_band")
UNITS_BY_TEMP_BAND = m("bess.farm.units.by_temperature_band")
UNITS_ALARMED = m("bess.farm.units.alarmed")
EFC_MEAN = m("bess.farm.equivalent_full_cycles.mean")
E_CHARGED = m("bess.farm.energy.charged_watthours")
E_DISCHARGED = m("bess.farm.energy.discharged_watthours")
E_AUX = m("bess.farm.energy.auxiliary_watthours")
E_LOSS = m("bess.farm.energy.loss_watthours")

UNIT_SOC = m("bess.unit.soc_ratio")
UNIT_SOH = m("bess.unit.soh_ratio")
UNIT_TEMP = m("bess.unit.temperature")
UNIT_VOLTAGE = m("bess.unit.voltage")
UNIT_CURRENT = m("bess.unit.current")
UNIT_POWER = m("bess.unit.power")
UNIT_EFC = m("bess.unit.equivalent_full_cycles")
UNIT_STATE = m("bess.unit.state")
UNIT_ALARMS = m("bess.unit.alarm_bitmask")
UNIT_CAP = m("bess.unit_metrics.cap")
UNIT_SERIES = m("bess.unit_metrics.units")
UNIT_OMITTED = m("bess.unit_metrics.omitted")

TICK_DURATION = bucket("bess.tick.duration")
STEP_DURATION = bucket("bess.physics.step.duration")
PUBLISH_DURATION = bucket("bess.snapshot.publish.duration")
TICK_LATENESS = bucket("bess.tick.lateness")
TICKS = m("bess.ticks")
TICK_OVERRUNS = m("bess.tick.overruns")
TICK_SKIPPED = m("bess.tick.skipped")
UNITS_SIMULATED = m("bess.units.simulated")
SIM_TIME = m("bess.sim.time")
SIM_TIME_RATIO = m("bess.sim.time_ratio")

MODBUS_CONNECTIONS = m("bess.modbus.connections")
MODBUS_REQUESTS = m("bess.modbus.requests")
MODBUS_DURATION = bucket("bess.modbus.request.duration")
MODBUS_EXCEPTIONS = m("bess.modbus.exceptions")
MODBUS_WRITES_REJECTED = m("bess.modbus.writes_rejected")
MODBUS_FRAMES_DROPPED = m("bess.modbus.frames_dropped")

HTTP_DURATION = bucket("http.server.request.duration")
HTTP_REQUESTS = count("http.server.request.duration")

CHAOS_ACTIVE = m("bess.chaos.faults.active")
CHAOS_INJECTED = m("bess.chaos.faults.injected")

PROCESS_CPU = m("process.cpu.time")
PROCESS_RSS = m("process.memory.usage")

# Prometheus label names of instrument attributes (dots become underscores)
L_STATUS = "http_response_status_code"
L_ROUTE = "http_route"
L_METHOD = "http_request_method"

# --- recording rules (defined in rules.py; the dashboards query these names) -------------------
R_POWER_RATED = recorded("bess.farm.power.rated", "sum")
R_ENERGY_CAPACITY = recorded("bess.farm.energy.capacity_watthours", "sum")
R_ENERGY_AVAILABLE = recorded("bess.farm.energy.available_watthours", "sum")
R_ENERGY_STORED = recorded("bess.farm.energy.stored_watthours", "sum")
R_POWER_AC = recorded("bess.farm.power.ac", "sum")
R_POWER_DC = recorded("bess.farm.power.dc", "sum")
R_POWER_REQUESTED = recorded("bess.farm.power.requested", "sum")
R_POWER_AUX = recorded("bess.farm.power.auxiliary", "sum")
R_UNITS = recorded("bess.units.simulated", "sum")
R_SOC_MEAN = recorded("bess.farm.soc.mean_ratio", "mean")
R_SOH_MEAN = recorded("bess.farm.soh.mean_ratio", "mean")
R_TEMP_MAX = recorded("bess.farm.temperature.max", "max")
R_TEMP_MEAN = recorded("bess.farm.temperature.mean", "mean")
R_TEMP_MIN = recorded("bess.farm.temperature.min", "min")
R_UNITS_BY_STATE = recorded("bess.farm.units.by_state", "sum")
R_UNITS_BY_SOC_BAND = recorded("bess.farm.units.by_soc_band", "sum")
R_UNITS_BY_TEMP_BAND = recorded("bess.farm.units.by_temperature_band", "sum")
R_UNITS_ALARMED = recorded("bess.farm.units.alarmed", "sum")
R_EFC_MEAN = recorded("bess.farm.equivalent_full_cycles.mean", "mean")
R_RTE = f"{LEVEL}:bess_farm_round_trip_efficiency:ratio"
R_SOH_FADE = f"{LEVEL}:bess_farm_soh_mean_ratio:fade_per_sim_year"
R_CHAOS_ACTIVE = recorded("bess.chaos.faults.active", "sum")
R_CHAOS_INJECTED = recorded("bess.chaos.faults.injected", "sum")
