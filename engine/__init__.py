"""Vectorized BESS physics: struct-of-arrays state and numba kernels.

The engine imports no protocol or telemetry code. Its public face:

- :class:`Farm` (``Farm.from_config``, ``Farm.default``, ``step``, setpoint and mode commands,
  ``snapshot``/``read``, ``aggregates``);
- :func:`parse_config`, :class:`ConfigError`, :data:`PRESETS` and :data:`PARAMETERS`;
- the enums and array layout in :mod:`bess_farm.engine.layout`.
"""

from ._cache_guard import ensure_fresh_cache

ensure_fresh_cache()

from .config import ConfigError, FarmConfig, default_config, parse_config  # noqa: E402
from .farm import Aggregates, Farm, Snapshot  # noqa: E402
from .presets import PARAMETERS, PRESETS  # noqa: E402
from .profiles import Profile  # noqa: E402

__all__ = ["Aggregates", "ConfigError", "Farm", "FarmConfig", "PARAMETERS", "PRESETS", "Profile", "Snapshot",
           "default_config", "parse_config"]
