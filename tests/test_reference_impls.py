"""The benchmark's plain-Python and numpy versions of the physics give the engine's numbers.

They exist only to measure the engine against (benchmarks/test_compare.py); this keeps the
comparison honest: all three compute the same thing.
"""

import numpy as np
import pytest

from benchmarks.reference_impls import NumpyFarm, PythonFarm
from helpers import farm


def _farm():
    f = farm(12, units_per_row=4, spread={"capacity": 0.02, "r0": 0.05, "r1": 0.05, "r2": 0.05},
             ambient={"kind": "constant", "value_c": 31.0})
    f.aging_interval_s = 3600.0          # no aging sample inside the compared minute
    watts = np.linspace(-1.9e6, 1.9e6, 12)
    f.set_unit_power(np.arange(12), watts)
    f.step(1.0, 1)                       # take the setpoints in
    return f


@pytest.mark.parametrize("impl", [PythonFarm, NumpyFarm])
def test_same_numbers_as_the_engine(impl):
    f = _farm()
    ref = impl(f)
    loss0 = f.snapshot(copy=True)["e_loss_wh"]       # the references count from here
    for _ in range(60):
        f.step(1.0, 1)
        p_ref, _ = ref.step(1.0)
    s = {k: f.snapshot()[k] for k in ("soc", "temp_c", "voltage_v", "current_a", "p_ac_w", "p_hvac_w")}
    s["e_loss_wh"] = f.snapshot()["e_loss_wh"] - loss0
    if impl is PythonFarm:
        get = {name: np.array([getattr(u, attr) for u in ref.units]) for name, attr in
               (("soc", "soc"), ("temp_c", "temp"), ("voltage_v", "voltage"), ("current_a", "current"),
                ("p_ac_w", "p_ac"), ("p_hvac_w", "p_hvac"), ("e_loss_wh", "e_loss"))}
    else:
        get = {"soc": ref.soc, "temp_c": ref.temp, "voltage_v": ref.voltage, "current_a": ref.current,
               "p_ac_w": ref.p_ac, "p_hvac_w": ref.p_hvac, "e_loss_wh": ref.e_loss}
    for name, values in get.items():
        tol = 1e-6 if s[name].dtype == np.float32 else 1e-10    # outputs are stored as float32
        np.testing.assert_allclose(s[name], values, rtol=tol, atol=1e-9, err_msg=name)
    assert p_ref == pytest.approx(f.aggregates().p_ac_w, rel=1e-9, abs=1e-3)
