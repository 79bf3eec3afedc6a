"""Chaos engineering for the farm: fault types, scenario files, and the engine that runs them.

>>> from bess_farm.interfaces.chaos import ChaosEngine, load_scenario
>>> chaos = ChaosEngine(farm)                       # doctest: +SKIP
>>> chaos.start(load_scenario("scada-comm-loss"))   # doctest: +SKIP
>>> while running:                                  # doctest: +SKIP
...     chaos.advance(farm.time_s)                  # between ticks, on the stepping thread
...     farm.step(dt)

See docs/chaos.md.
"""

from .faults import (COMM_EXCEPTION_0B, COMM_LATENCY, COMM_OK, COMM_SILENT, FAULT_TYPES,
                     CommFaults, FaultContext, FaultState, FaultType, Param, fault_type,
                     markdown_table)
from .scenario import (BUILTIN_DIR, FaultSpec, RandomSpec, Scenario, ScenarioError, Selector,
                       SetpointSpec, format_units, list_builtin, load_scenario, parse_scenario,
                       parse_time, parse_units)
from .timeline import ActiveFault, ChaosEngine, ChaosError, event_text, run_scenario

__all__ = [
    "BUILTIN_DIR", "COMM_EXCEPTION_0B", "COMM_LATENCY", "COMM_OK", "COMM_SILENT", "FAULT_TYPES",
    "ActiveFault", "ChaosEngine", "ChaosError", "CommFaults", "FaultContext", "FaultSpec",
    "FaultState", "FaultType", "Param", "RandomSpec", "Scenario", "ScenarioError", "Selector",
    "SetpointSpec", "event_text", "fault_type", "format_units", "list_builtin", "load_scenario",
    "markdown_table", "parse_scenario", "parse_time", "parse_units", "run_scenario",
]
