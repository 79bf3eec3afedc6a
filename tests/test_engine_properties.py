"""Invariants of the fused tick, checked with hypothesis over random command sequences."""

import functools

import numpy as np
from hypothesis import HealthCheck, example, given, settings, strategies as st

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
@given(st.lists(command, min_size=1, max_size=8), st.floats(0.05, 0.95), st.sampled_from([6, 20]))
@example(cmds=[(1.0, None, 600.0, 4), (-1.0, None, 600.0, 11), (1.0, None, 600.0, 10),
               (-1.0, None, 10.0, 1)], soc0=0.5, n=6)
def test_energy_balance_closes(cmds, soc0, n):
    """AC in - AC out = change of stored energy + losses, on the one-unit path (6 units) and
    the short-loop path (20). Aging is held off (aging_factor 0): capacity fade takes the
    charge that the lost capacity held out of the stored energy, and no account records that
    (hypothesis found it: four 600-s steps at full power cycle a unit once, and the chunked
    aging update that follows removes ~100 Wh of 46 MWh moved, 2e-6 of it)."""
    f = farm(n, initial_soc=soc0)
    f.set_unit_params(np.arange(n), aging_factor=0.0)
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


@functools.cache
def _hvac_both():
    """A compiled ``run(kp, temp, base, nnb, fl, out)``: the vector path's HVAC update of one run
    (thermal.hvac_regime, kernel._hvac_step) next to thermal_update unit by unit; returns the
    run's OR of regime bits."""
    from bess_farm.engine import kernel as kn
    from bess_farm.engine.layout import (FLAG_HVAC_FAILED, K_HVAC_COOL_W, K_HVAC_GAIN,
                                         K_HVAC_HEAT_W, K_HVAC_T_COOL, K_HVAC_T_HEAT)
    from bess_farm.engine.thermal import hvac_regime, thermal_update
    from numba import njit

    s_tnb, s_temp1, s_phvac, i_nnb = kn.S_TNB, kn.S_TEMP1, kn.S_PHVAC, kn.I_NNB
    n_sc, n_si = kn.N_SCRATCH * kn.BLOCK, kn.N_ISCRATCH * kn.BLOCK
    regime, step = hvac_regime, kn._hvac_step

    @njit
    def run(kp, temp, base, nnb, fl, out):
        m = temp.shape[0]
        sc = np.zeros(n_sc)
        si = np.zeros(n_si, np.int64)
        regimes = 0
        for j in range(m):
            sc[s_tnb + j] = base[j]
            si[i_nnb + j] = nnb[j]
            regimes |= regime(temp[j], (fl[j] & FLAG_HVAC_FAILED) == 0, kp[0, K_HVAC_GAIN],
                              kp[0, K_HVAC_T_COOL], kp[0, K_HVAC_T_HEAT], kp[0, K_HVAC_COOL_W],
                              kp[0, K_HVAC_HEAT_W])
        step(kp, 0, regimes, temp, fl, sc, si, m)
        for j in range(m):
            out[j, 0] = sc[s_temp1 + j]
            out[j, 1] = sc[s_phvac + j]
            out[j, 2], out[j, 3] = thermal_update(kp, 0, temp[j], base[j], nnb[j],
                                                  (fl[j] & FLAG_HVAC_FAILED) == 0)
        return regimes

    return run


def test_uniform_hvac_regime_path_is_bitwise_thermal_update():
    """When every unit of a run is in one HVAC regime the vector path takes the regime's
    constants as scalars (kernel._hvac_step); in every regime, at its edges, and for mixed
    runs and failed HVACs (the per-unit loop), it must give bitwise what thermal_update gives."""
    from bess_farm.engine import kernel as kn
    from bess_farm.engine import thermal as th
    from bess_farm.engine.layout import FLAG_ENABLED, FLAG_HVAC_FAILED

    f = farm(4, spread={})
    p = f.kinds[0]
    t_cool, t_heat = p["hvac_cool_setpoint_c"], p["hvac_heat_setpoint_c"]
    t_sat_c = t_cool + p["hvac_cooling_w"] / p["hvac_gain_w_per_k"]     # saturates from here
    t_sat_h = t_heat - p["hvac_heating_w"] / p["hvac_gain_w_per_k"]
    bands = {                                     # temperatures of each regime, edges included
        th.RG_PROP_COOL: (np.nextafter(t_cool, np.inf), np.nextafter(t_sat_c, -np.inf)),
        th.RG_SAT_COOL: (t_sat_c, 90.0),
        th.RG_OFF: (t_heat, t_cool),
        th.RG_PROP_HEAT: (np.nextafter(t_sat_h, np.inf), np.nextafter(t_heat, -np.inf)),
        th.RG_SAT_HEAT: (-40.0, t_sat_h),
    }
    rng = np.random.default_rng(5)
    ok = np.uint16(FLAG_ENABLED)
    for m in (37, kn.BLOCK):
        base = rng.uniform(-5e3, 3e4, m)
        nnb = rng.integers(0, 3, m)
        for bit, (lo, hi) in bands.items():
            temp = np.r_[lo, hi, rng.uniform(lo, hi, m - 2)]
            out = np.empty((m, 4))
            assert _hvac_both()(f.kpar, temp, base, nnb, np.full(m, ok), out) == bit
            assert np.array_equal(out[:, :2], out[:, 2:]), bit
        # mixed regimes, and one failed HVAC: unit by unit
        temp = rng.uniform(-20.0, 60.0, m)
        fl = np.full(m, ok)
        for case in ("mixed", "failed"):
            if case == "failed":
                temp[:] = 27.0
                fl[m // 2] |= np.uint16(FLAG_HVAC_FAILED)
            out = np.empty((m, 4))
            regimes = _hvac_both()(f.kpar, temp, base, nnb, fl, out)
            assert regimes.bit_count() > 1, case
            assert np.array_equal(out[:, :2], out[:, 2:]), case


def test_small_and_long_runs_agree_in_every_hvac_regime():
    """The one-unit path and the short-loop path (which has a vectorized update per HVAC
    regime) give bitwise the same units when the whole farm sits in one regime."""
    from bess_farm.engine.kernel import SCALAR_RUN_MAX

    small_n, big_n = 10, 20
    assert small_n < SCALAR_RUN_MAX <= big_n
    watts = np.linspace(-1.8e6, 1.8e6, small_n)
    for t_amb in (27.0, 40.0, 20.0, 14.5, 0.0):
        farms = [farm(nn, units_per_row=10, spread={},
                      ambient={"kind": "constant", "value_c": t_amb}) for nn in (small_n, big_n)]
        for f in farms:
            f.set_unit_power(np.arange(small_n), watts)
            f.step(1.0, 100)
        a, b = farms[0].snapshot(), farms[1].snapshot()
        for name in a.names():
            assert np.array_equal(a[name], b[name][:small_n]), (t_amb, name)
