"""bess-farm: a battery energy storage farm simulator.

The installed package maps the repository's top-level folders to subpackages:
``engine/`` -> :mod:`bess_farm.engine`, ``interfaces/`` -> :mod:`bess_farm.interfaces`,
``otel/`` -> :mod:`bess_farm.otel`.
"""

__version__ = "0.1.0"
