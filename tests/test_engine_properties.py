"""Invariants of the fused tick, checked with hypothesis over random command sequences."""

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

from bess_farm.engine.layout import FLAG_NEIGHBOUR_LEFT, FLAG_NEIGHBOUR_RIGHT, SOC
from helpers import farm

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# A command: (farm power as a fraction of rated, per-unit override fraction or None, dt, steps)
command = st.tuples(
    st.floats(-1.5, 1.5),
    st.one_of(st.none(), st.floats(-1.5, 1.5)),
    st.sampled_from([0.1, 1.0, 10.0, 60.0, 600.0]),
    st.integers(1, 30),
)


def _drive(f, cmds):
    rated = 1.86e6
    for frac, unit_frac, dt, n in cmds:
        f.set_farm_power(frac * rated * f.n_units)
        if unit_frac is not None:
            f.set_unit_power(0, unit_frac * rated)
        f.step(dt, n)
        yield f.snapshot()


@FAST
@given(st.lists(command, min_size=1, max_size=8), st.floats(0.0, 1.0))
def test_soc_stays_in_window_and_nothing_is_nan(cmds, soc0):
    f = farm(6, initial_soc=soc0)
    for snap in _drive(f, cmds):
        soc = snap["soc"]
        assert np.all((soc >= 0.0) & (soc <= 1.0))
        for name in snap.names():
            a = snap[name]
            if a.dtype.kind == "f":
                assert np.all(np.isfinite(a)), name


@FAST
@given(st.lists(command, min_size=1, max_size=8), st.floats(0.05, 0.95))
def test_energy_balance_closes(cmds, soc0):
    f = farm(6, initial_soc=soc0)
    e0 = f.stored_energy_wh().sum()
    list(_drive(f, cmds))
    a = f.aggregates()
    e1 = f.stored_energy_wh().sum()
    ac_in = a.e_ac_charged_wh - a.e_ac_discharged_wh
    rhs = (e1 - e0) + a.e_loss_wh
    scale = max(a.e_ac_charged_wh + a.e_ac_discharged_wh, 1.0)
    assert abs(ac_in - rhs) <= 1e-6 * scale, (ac_in, rhs)
    # the DC side closes too: DC in - DC out = stored change + (losses without the PCS part)
    assert a.e_dc_charged_wh >= 0 and a.e_dc_discharged_wh >= 0


def _smooth_run(dt, n, steps_out):
    f = farm(4, spread={})
    f.set_farm_power(4 * 0.9e6)
    for _ in range(steps_out):
        f.step(dt, n)
    s = f.snapshot(copy=True)
    return s


def test_ten_small_steps_agree_with_one_large_step():
    a = _smooth_run(0.1, 10, 120)
    b = _smooth_run(1.0, 1, 120)
    np.testing.assert_allclose(a["soc"], b["soc"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(a["temp_c"], b["temp_c"], rtol=0, atol=2e-3)
    np.testing.assert_allclose(a["voltage_v"], b["voltage_v"], rtol=1e-4)
    np.testing.assert_allclose(a["e_ac_discharged_wh"], b["e_ac_discharged_wh"], rtol=1e-5)


def test_same_seed_gives_bitwise_same_run_serial_and_parallel():
    from bess_farm.engine.kernel import BLOCK
    runs = []
    for parallel in (True, True, False):
        f = farm(2 * BLOCK + 17, seed=11, spread={"capacity": 0.02, "r0": 0.05, "r1": 0.05})
        f.set_farm_power(f.n_units * 0.5e6)
        f.step(1.0, 50, parallel=parallel)
        f.set_farm_power(-f.n_units * 0.7e6)
        f.step(1.0, 50, parallel=parallel)
        runs.append(f.snapshot(copy=True))
    for other in runs[1:]:
        for name in runs[0].names():
            assert np.array_equal(runs[0][name], other[name]), name


def test_different_seed_gives_different_units():
    a = farm(8, seed=1).snapshot()["cap_ah"]
    b = farm(8, seed=2).snapshot()["cap_ah"]
    assert not np.array_equal(a, b)


def test_reordering_units_reorders_results_when_uncoupled():
    params = {"conductance_neighbour_w_per_k": 0.0}
    f = farm(10, params=params, seed=5)
    perm = np.random.default_rng(0).permutation(10)
    g = f.take(perm)
    watts = np.linspace(-1.5e6, 1.5e6, 10)
    f.set_unit_power(np.arange(10), watts)
    g.set_unit_power(np.arange(10), watts[perm])
    for dt in (1.0, 10.0):
        f.step(dt, 40)
        g.step(dt, 40)
    sf, sg = f.snapshot(), g.snapshot()
    for name in sf.names():
        if name == "flags":    # neighbour bits follow the new order; the rest must not change
            mask = np.uint16(~(FLAG_NEIGHBOUR_LEFT | FLAG_NEIGHBOUR_RIGHT) & 0xFFFF)
            assert np.array_equal(sf[name][perm] & mask, sg[name] & mask)
            continue
        assert np.array_equal(sf[name][perm], sg[name]), name
    # with farm dispatch, the sums run in another order: equal to rounding
    f.set_mode(slice(None), "auto")
    g.set_mode(slice(None), "auto")
    f.set_farm_power(5e6)
    g.set_farm_power(5e6)
    f.step(1.0, 20)
    g.step(1.0, 20)
    np.testing.assert_allclose(f.snapshot()["soc"][perm], g.snapshot()["soc"], rtol=1e-12)
    assert f.dyn is not g.dyn and f.snapshot()["soc"].shape == (10,)
    assert SOC == 0


def test_small_runs_and_long_runs_give_bitwise_the_same_units():
    """Runs of fewer than SCALAR_RUN_MAX units take the one-unit-at-a-time path; the same units
    inside a longer run take the short-loop path. Their state must be bitwise the same."""
    from bess_farm.engine.kernel import SCALAR_RUN_MAX
    small_n, big_n = 10, 20
    assert small_n < SCALAR_RUN_MAX <= big_n
    params = {"runaway_onset_c": 30.0, "runaway_critical_c": 200.0, "t_trip_high_c": 29.0,
              "t_derate_c": 27.0}
    farms = [farm(nn, units_per_row=10, spread={}, params=params,
                  ambient={"kind": "daily", "mean_c": 24.0, "amplitude_c": 6.0}) for nn in (small_n, big_n)]
    watts = np.linspace(-1.8e6, 1.8e6, small_n)
    for f in farms:
        f.aging_interval_s = 30.0
        f.set_unit_power(np.arange(small_n), watts)
        f.set_unit_current(3, -900.0)
        f.set_enabled(4, False)
        f.set_unit_params(5, hvac_failed=True, ambient_offset_c=15.0)
        f.set_sensor_fault(6, "voltage", "offset", a=5.0)
        f.trigger_runaway(7)
    for dt, n in ((1.0, 200), (30.0, 200), (600.0, 50)):
        for f in farms:
            f.step(dt, n)
    a, b = farms[0].snapshot(), farms[1].snapshot()
    for name in a.names():
        assert np.array_equal(a[name], b[name][:small_n]), name
    assert farms[0].aging_state.tobytes() == farms[1].aging_state[:small_n].tobytes()


def test_split_ocv_lookup_is_bitwise_the_chemistry_lookup():
    """The vector path splits an OCV lookup into table reads and arithmetic
    (kernel._ocv_segment, kernel._ocv_at); it must give bitwise what the chemistry helpers the
    one-unit path uses give, at every SoC, the table's knots and the ends included."""
    from numba import njit

    from bess_farm.engine.chemistry import (BUILTIN_OCV, ocv_integral, ocv_integral_table,
                                            ocv_interp, ocv_slope, resample_ocv)
    from bess_farm.engine.kernel import _ocv_at, _ocv_segment

    @njit
    def both(tab, tab_int, socs, out):
        n = tab.shape[0] - 1
        for i in range(socs.shape[0]):
            j, x = _ocv_segment(tab, socs[i])
            o, sl, f = _ocv_at(tab[j], tab[j + 1], tab_int[j], x, n)
            out[i, 0], out[i, 1], out[i, 2] = o, sl, f
            out[i, 3] = ocv_interp(tab, socs[i])
            out[i, 4] = ocv_slope(tab, socs[i])
            out[i, 5] = ocv_integral(tab, tab_int, socs[i])

    rng = np.random.default_rng(0)
    socs = np.concatenate([rng.random(20_000), np.linspace(0.0, 1.0, 1001),
                           [-0.5, -1e-12, 0.0, 1.0, 1.0 + 1e-12, 1.5]])
    for volts in BUILTIN_OCV.values():
        tab = resample_ocv(np.linspace(0.0, 1.0, volts.size), volts)
        out = np.empty((socs.size, 6))
        both(tab, ocv_integral_table(tab), socs, out)
        assert np.array_equal(out[:, :3], out[:, 3:])


def test_vectorized_ocv_segment_is_bitwise_the_scalar_segment():
    """The vector path computes a lookup's segment with an int32 conversion
    (kernel._ocv_segment_v); it must give the segment and position of kernel._ocv_segment."""
    from numba import njit

    from bess_farm.engine.chemistry import OCV_POINTS
    from bess_farm.engine.kernel import _ocv_segment, _ocv_segment_v

    @njit
    def both(tab, socs, out):
        n = tab.shape[0] - 1
        for i in range(socs.shape[0]):
            j, x = _ocv_segment(tab, socs[i])
            jv, xv = _ocv_segment_v(n, socs[i])
            out[i, 0], out[i, 1], out[i, 2], out[i, 3] = j, x, jv, xv

    rng = np.random.default_rng(1)
    socs = np.concatenate([rng.random(20_000), np.linspace(0.0, 1.0, 1001),
                           [-np.inf, -0.5, -1e-12, -0.0, 0.0, 1.0 - 1e-16, 1.0, 1.0 + 1e-12, 1.5,
                            np.inf]])
    out = np.empty((socs.size, 4))
    both(np.zeros(OCV_POINTS), socs, out)
    assert np.array_equal(out[:, :2], out[:, 2:])


def test_bin_counts_are_the_histogram():
    """kernel._count_bins (the tallies of states and bands) adds what a histogram counts."""
    from numba import njit

    from bess_farm.engine.kernel import _count_bins

    @njit
    def count(v, pa, off):
        _count_bins(v, pa, off)

    rng = np.random.default_rng(3)
    for v in (np.full(2048, 4, np.int64), rng.integers(0, 25, 3000),
              np.r_[np.full(500, 9), np.full(7, 12), [8]].astype(np.int64)):
        pa = np.full(40, 0.5)
        count(v, pa, 3)
        expect = np.full(40, 0.5)
        expect[3:28] += np.bincount(v, minlength=25)
        assert np.array_equal(pa, expect)
