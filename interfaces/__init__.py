"""Protocol adapters (CLI, later Modbus and REST) over the engine's published arrays."""
