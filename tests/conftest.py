import os

# Tests must never depend on the machine's thread count: fix it for bitwise reproducibility checks.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

# Runtimes started by tests (and their subprocesses) keep checkpoints in a throw-away directory,
# never in the user's ~/.local/state.
if "BESS_STATE_DIR" not in os.environ:
    import tempfile
    os.environ["BESS_STATE_DIR"] = tempfile.mkdtemp(prefix="bess-test-state-")

# Runtimes in tests export no metrics unless a test asks (tests/test_otel_*): the embedded
# Prometheus exporter would otherwise bind 0.0.0.0:9090 in every one of them.
os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
