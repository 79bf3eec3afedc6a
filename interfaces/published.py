"""The tick adapters read: one immutable record, swapped in by the runtime between ticks.

The engine's thread finishes a step by moving ``Farm._src``, ``tick``, ``time_s`` and the
aggregates one statement at a time; an adapter on the event loop thread that read those fields
directly could see the new tick number with the old buffer. The runtime instead publishes a
:class:`Published` record on the loop thread once the step is done, and adapters read only it
(plus the published copies of per-unit parameters kept by :class:`~.modbus.devices.FarmDevices`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Published:
    src: int            # the ping-pong buffer that holds this tick
    tick: int
    time_s: float
    generation: int
    agg: Any            # engine Aggregates of this tick

    @classmethod
    def of(cls, farm) -> "Published":
        """The farm's current tick (only valid while no step runs)."""
        return cls(farm._src, farm.tick, farm.time_s, farm.generation, farm.aggregates())
