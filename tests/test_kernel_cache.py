"""A warm start compiles nothing: the kernels come from numba's on-disk cache."""

import json
import subprocess
import sys

SCRIPT = r"""
import json
from bess_farm.engine import Farm, kernel
f = Farm.default()
f.set_farm_power(10e6)
f.step(1.0, 5)
g = f.take(range(40))
g.step(1.0, 2, parallel=True)
stats = {}
for name in ("run_steps_serial", "run_steps_parallel", "dispatch_sums"):
    d = getattr(kernel, name)
    stats[name] = {"hits": sum(d.stats.cache_hits.values()), "misses": sum(d.stats.cache_misses.values())}
print(json.dumps(stats))
"""


def _run():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_loads_every_kernel_from_the_cache():
    _run()                      # compiles whatever is not cached yet
    stats = _run()
    for name, s in stats.items():
        assert s["misses"] == 0, f"{name} was compiled again: {s}"
        assert s["hits"] >= 1, f"{name} did not come from the cache: {s}"


def test_bess_help_does_not_import_the_engine():
    code = ("import sys\nfrom bess_farm.interfaces.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('numba' in sys.modules, 'bess_farm.engine' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"
