import os

# Tests must never depend on the machine's thread count: fix it for bitwise reproducibility checks.
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
