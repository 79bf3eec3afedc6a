"""Setpoint profiles evaluated inside the kernel, and the built-in dispatch profiles."""

import numpy as np
import pytest

from bess_farm.engine.profiles import (Profile, daily_arbitrage, frequency_regulation,
                                       peak_shaving)
from helpers import farm


def test_series_interpolates_holds_and_repeats():
    p = Profile.series([0.0, 10.0, 20.0], [0.0, 100.0, 50.0])
    assert p(-5.0) == 0.0 and p(5.0) == 50.0 and p(15.0) == 75.0 and p(99.0) == 50.0
    s = Profile.series([0.0, 10.0], [1.0, 2.0], step=True, period_s=20.0)
    assert s(5.0) == 1.0 and s(12.0) == 2.0 and s(25.0) == 1.0


@pytest.mark.parametrize("times, values, match", [
    ([0.0, 0.0], [1.0, 2.0], "increase strictly"),
    ([0.0, 1.0], [1.0], "equal length"),
    ([0.0, 1.0], [1.0, float("nan")], "finite"),
])
def test_bad_series_is_rejected(times, values, match):
    with pytest.raises(ValueError, match=match):
        Profile.series(times, values)


def test_builtin_profiles_have_the_right_shape():
    arb = daily_arbitrage(1e6)
    assert arb(2 * 3600.0) == -1e6 and arb(18 * 3600.0) == 1e6 and arb(12 * 3600.0) == 0.0
    assert arb(86400.0 + 2 * 3600.0) == -1e6
    shifted = daily_arbitrage(1e6, start_hour=16.0)          # the run starts at 16:00
    assert shifted(2 * 3600.0) == 1e6                         # 18:00
    fr = frequency_regulation(1e6, seed=3)
    values = np.array([fr(t) for t in np.arange(0.0, 86400.0, 2.0)])
    assert np.abs(values).max() <= 1e6 + 1e-6 and abs(values.mean()) < 0.1e6
    assert fr(123.0) == frequency_regulation(1e6, seed=3)(123.0)
    assert fr(123.0) != frequency_regulation(1e6, seed=4)(123.0)
    ps = peak_shaving(1e6)
    assert ps(18.5 * 3600.0) == pytest.approx(1e6) and ps(3 * 3600.0) < 0


def test_profile_is_followed_at_every_step_inside_one_call():
    f = farm(4, spread={})
    g = farm(4, spread={})
    prof = Profile.series([0.0, 600.0, 1200.0], [2e6, -3e6, 1e6], step=True)
    f.set_farm_profile(prof)
    f.step(10.0, 180)                                # one call: 30 minutes
    for k in range(180):                             # the same, one step per call
        g.set_farm_power(prof(k * 10.0))
        g.step(10.0, 1)
    a, b = f.snapshot(), g.snapshot()
    for name in ("soc", "temp_c", "e_ac_charged_wh", "e_ac_discharged_wh", "p_ac_w"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-12, atol=1e-9, err_msg=name)
    assert f.aggregates().p_ac_w == pytest.approx(1e6, rel=1e-4)
