"""Dispatch, limits, protection, thermal behaviour, sensors and the read/command contract."""

import threading

import numpy as np
import pytest

from bess_farm.engine.layout import (ALARM_HVAC_FAULT, ALARM_OVER_TEMPERATURE, ALARM_SENSOR_FAULT,
                                     ALARM_THERMAL_RUNAWAY, CHARGING, DISCHARGING, FAULT, OFFLINE,
                                     STANDBY, THERMAL_RUNAWAY)
from bess_farm.engine.sensors import standard_normal
from helpers import farm


def test_farm_setpoint_is_met_and_balanced_by_soc():
    f = farm(8, spread={})
    f.dyn[f._src, 0] = np.linspace(0.3, 0.8, 8)      # SoC spread before the first tick
    f._refresh_dispatch()
    f.set_farm_power(4e6)
    a = f.step(1.0, 1)
    p = f.snapshot()["p_ac_w"]
    assert a.p_ac_w == pytest.approx(4e6, rel=2e-5)
    assert np.all(np.diff(p) > 0), "fuller units discharge more"
    f.set_farm_power(-4e6)
    f.step(1.0, 1)
    p = f.snapshot()["p_ac_w"]
    assert f.aggregates().p_ac_w == pytest.approx(-4e6, rel=2e-5)
    assert np.all(np.diff(p) > 0), "emptier units charge more (more negative)"


def test_setpoint_beyond_headroom_saturates_every_unit():
    f = farm(4, spread={})
    f.set_farm_power(100e6)
    a = f.step(1.0, 1)
    assert a.p_ac_w < 4 * 1.86e6
    assert a.p_ac_w > 0.95 * 4 * 1.86e6 * 0.98


def test_manual_and_disabled_units_leave_the_farm_dispatch():
    f = farm(4, spread={})
    f.set_unit_power(0, -0.5e6)
    f.set_enabled(1, False)
    tick = f.set_farm_power(2e6)
    assert tick == 1
    f.step(1.0, 1)
    s = f.snapshot()
    assert s["p_ac_w"][0] == pytest.approx(-0.5e6, rel=1e-4)
    assert s["p_ac_w"][1] == 0.0 and s["state"][1] == OFFLINE
    assert s["p_ac_w"][2:].sum() == pytest.approx(2e6, rel=1e-4)
    assert s["state"][0] == CHARGING and s["state"][2] == DISCHARGING


def test_commands_take_effect_at_the_next_tick_only():
    f = farm(2)
    f.step(1.0, 1)
    assert f.set_farm_power(1e6) == 2
    assert f.snapshot()["p_ac_w"].sum() == 0.0           # nothing changed before the tick
    f.step(1.0, 1)
    assert f.snapshot()["p_ac_w"].sum() > 0.0


def test_soc_window_is_never_left_and_power_tapers():
    f = farm(2, spread={}, initial_soc=0.9)
    f.set_farm_power(-10e6)
    powers = []
    for _ in range(120):
        f.step(10.0, 1)
        powers.append(f.aggregates().p_ac_w)
    soc = f.snapshot()["soc"]
    assert np.all(soc <= 0.97 + 1e-12)
    assert soc.max() > 0.96
    mags = np.abs(powers)
    partial = (mags > 0.05 * mags[0]) & (mags < 0.95 * mags[0])
    assert partial.sum() >= 10, "power tapers over many steps instead of stopping hard"
    assert np.all(np.diff(mags[np.argmax(partial):]) <= 1e-6 * mags[0])
    assert mags[-1] < 0.1 * mags[0]


def test_reserve_soc_narrows_one_units_window():
    f = farm(2, spread={}, initial_soc=0.6)
    tick = f.set_soc_reserve(0, soc_min=0.5)
    assert tick == f.tick + 1
    f.set_unit_power([0, 1], 1.5e6)
    f.step(10.0, 900)
    soc = f.snapshot()["soc"]
    assert 0.5 - 1e-9 <= soc[0] < 0.505, "unit 0 stops at its reserve"
    assert soc[1] < 0.1, "unit 1 keeps the kind's window"
    assert f.snapshot()["soc_rsv_min"][0] == np.float32(0.5)


def test_current_mode_follows_a_current():
    f = farm(1, spread={})
    f.set_unit_current(0, 500.0)
    f.step(1.0, 10)
    assert f.snapshot()["current_a"][0] == pytest.approx(500.0)


def test_hvac_failure_heats_the_unit_and_trips_it():
    f = farm(2, spread={}, ambient={"kind": "constant", "value_c": 40.0},
             params={"conductance_neighbour_w_per_k": 0.0})
    f.set_unit_params(0, hvac_failed=True, ambient_offset_c=25.0)   # a hot spot without cooling
    tripped_at = None
    for k in range(4000):
        f.step(60.0, 1)
        s = f.snapshot()
        if s["state"][0] == FAULT:
            tripped_at = k
            break
    assert tripped_at is not None, "an uncooled unit in a 65 C hot spot must overheat and trip"
    assert s["temp_c"][0] == pytest.approx(55.0, abs=0.1)
    assert s["alarms"][0] & ALARM_OVER_TEMPERATURE
    assert s["alarms"][0] & ALARM_HVAC_FAULT
    assert s["temp_c"][1] < 35.0, "the healthy unit is held by its HVAC"
    assert s["p_hvac_w"][1] > 1500.0
    # a reset while still hot does not clear the trip; after cooling it does
    f.reset(0)
    f.step(1.0, 1)
    assert f.snapshot()["state"][0] == FAULT
    f.set_unit_params(0, hvac_failed=False, ambient_offset_c=0.0)
    f.step(60.0, 600)
    f.reset(0)
    f.step(1.0, 1)
    assert f.snapshot()["state"][0] != FAULT
    assert f.snapshot()["trips"][0] == 2, "the reset while hot re-tripped at once: a second trip"


def test_thermal_runaway_is_irreversible_and_spreads_through_coupling():
    def run(g_nb):
        f = farm(3, units_per_row=3, spread={},
                 params={"conductance_neighbour_w_per_k": g_nb, "runaway_tau_s": 600.0})
        f.trigger_runaway(0)
        first = {}
        for k in range(2000):
            f.step(10.0, 1)
            st = f.snapshot()["state"]
            for u in range(3):
                if st[u] == THERMAL_RUNAWAY and u not in first:
                    first[u] = k
        return f, first

    f, first = run(600.0)
    assert 0 in first and 1 in first, first
    assert first[1] > first[0]
    s = f.snapshot()
    assert s["alarms"][0] & ALARM_THERMAL_RUNAWAY
    f.reset(0)
    f.step(1.0, 1)
    assert f.snapshot()["state"][0] == THERMAL_RUNAWAY, "runaway never resets"
    _, weak = run(5.0)
    assert 1 not in weak, "with weak coupling the neighbour survives"


def test_sensor_noise_is_reproducible_and_faults_show():
    z1 = [standard_normal(7, 3, t, 1) for t in range(2000)]
    z2 = [standard_normal(7, 3, t, 1) for t in range(2000)]
    assert z1 == z2
    assert abs(np.mean(z1)) < 0.1 and abs(np.std(z1) - 1.0) < 0.1
    f = farm(2, spread={})
    f.set_sensor_fault(0, "temperature", "stuck", a=99.0)
    f.step(1.0, 1)
    assert f.snapshot()["alarms"][0] & ALARM_SENSOR_FAULT
    assert f.snapshot()["state"][0] == FAULT, "the BMS acts on the stuck 99 C reading"
    f.set_sensor_fault(0, "temperature", "none")
    f.reset(0)
    f.step(1.0, 1)
    assert f.snapshot()["state"][0] == STANDBY


def test_snapshot_is_read_only_and_read_sees_whole_ticks():
    f = farm(3 * 2048, spread={})
    with pytest.raises(ValueError):
        f.snapshot()["soc"][0] = 0.1
    f.set_farm_power(f.n_units * 1e6)
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            seen.append(f.read(lambda s: (s.tick, float(s["p_ac_w"].sum()), float(s["soc"].sum()))))

    t = threading.Thread(target=reader)
    t.start()
    for _ in range(30):
        f.step(1.0, 1)
    stop.set()
    t.join()
    assert len(seen) > 5
    assert all(p > 0 or tick == 0 for tick, p, _ in seen)


@pytest.mark.parametrize("call, match", [
    (lambda f: f.step(0.0), "dt must be"),
    (lambda f: f.step(float("nan")), "dt must be"),
    (lambda f: f.step(1.0, 0), "n must be"),
    (lambda f: f.set_farm_power(float("inf")), "finite"),
    (lambda f: f.set_unit_power(99, 1.0), "unit id 99 does not exist"),
    (lambda f: f.set_mode(0, "turbo"), "mode must be"),
    (lambda f: f.set_unit_params(0, derate=2.0), "derate must be within"),
    (lambda f: f.set_unit_params(0, colour=1), "unknown unit parameter"),
    (lambda f: f.set_sensor_fault(0, "pressure", "stuck"), "unknown sensor channel"),
    (lambda f: f.set_soc_reserve(0, soc_min=0.01), "outside unit 0's SoC window"),
    (lambda f: f.set_soc_reserve(1, soc_min=0.6, soc_max=0.4), "must stay below"),
])
def test_bad_api_input_raises_and_changes_nothing(call, match):
    f = farm(2)
    before = f.snapshot(copy=True)
    with pytest.raises(ValueError, match=match):
        call(f)
    assert not f._pending
    after = f.snapshot()
    for name in before.names():
        assert np.array_equal(before[name], after[name], equal_nan=True), name


def test_measurements_are_truth_plus_reproducible_noise_and_faults():
    f = farm(200, spread={})
    f.set_farm_power(200 * 1e6)
    f.step(1.0, 5)
    truth = f.snapshot(copy=True)
    v1 = f.measure("voltage")
    assert np.array_equal(v1, f.measure("voltage")), "two readers of one tick see the same number"
    noise = v1 - truth["voltage_v"]
    assert 0.3 < noise.std() < 0.7          # the preset's 0.5 V
    assert abs(noise.mean()) < 0.15
    f.step(1.0, 1)
    assert not np.array_equal(f.measure("voltage") - f.snapshot()["voltage_v"], noise)
    f.set_sensor_fault(0, "temperature", "stuck", a=42.0)
    f.set_sensor_fault(1, "soc", "offset", a=0.1)
    f.set_sensor_fault(2, "current", "drift", a=0.0, b=2.0)
    f.step(1.0, 10)
    s = f.snapshot()
    assert f.measure("temperature", 0)[0] == pytest.approx(42.0)
    assert f.measure("soc", 1)[0] == pytest.approx(s["soc"][1] + 0.1, abs=0.01)
    assert f.measure("current", 2)[0] == pytest.approx(s["current_a"][2] + 20.0, abs=3.0)
    assert s["temp_c"][0] < 40.0, "the truth keeps its course"
    with pytest.raises(ValueError, match="unknown sensor channel"):
        f.measure("humidity")


def test_a_step_too_long_for_the_coupling_changes_nothing():
    f = farm(4, params={"conductance_neighbour_w_per_k": 1e5})   # C / (2 G) = 125 s
    f.step(1.0, 1)
    before = f.snapshot(copy=True)
    kpar = f.kpar.copy()
    f.set_farm_power(1e6)
    with pytest.raises(ValueError, match="too long for the neighbour coupling"):
        f.step(600.0, 1)
    assert np.array_equal(kpar, f.kpar)
    assert f.tick == 1 and len(f._pending) == 1, "the queued command waits for a good step"
    for name in before.names():
        assert np.array_equal(before[name], f.snapshot()[name]), name


def test_a_shard_reports_the_same_measurements_as_the_whole_farm():
    f = farm(12, spread={})
    f.step(1.0, 3)
    shard = f.take(range(6, 12))
    assert np.array_equal(f.measure("temperature", range(6, 12)), shard.measure("temperature"))
    assert list(shard.unit_id) == list(range(6, 12))


def test_a_shard_built_alone_equals_the_same_units_of_the_whole_farm():
    from bess_farm.engine.farm import Farm, shard_range
    from bess_farm.engine.config import parse_config
    cfg = {"farm": {"seed": 4, "units_per_row": 5},
           "units": [{"preset": "lfp-3.7mwh-20ft", "count": 12, "spread": {"capacity": 0.02, "r0": 0.05}},
                     {"preset": "nmc-2.6mwh-20ft", "count": 11, "spread": {"capacity": 0.03}}]}
    whole = Farm(parse_config(cfg))
    parts = [shard_range(23, 5, i, 3) for i in range(3)]
    assert [(r.start, r.stop) for r in parts] == [(0, 5), (5, 15), (15, 23)]
    for r in parts:
        alone = Farm(parse_config(cfg), units=r)
        cut = whole.take(np.arange(r.start, r.stop))
        assert alone.shard == r and cut.shard == r
        for name in ("upar", "kind", "flags", "row", "unit_id", "dyn", "sensor_faults", "aging_state"):
            assert np.array_equal(getattr(alone, name), getattr(cut, name), equal_nan=True), name
        alone.set_farm_power(1e6)
        cut.set_farm_power(1e6)
        alone.step(1.0, 5)
        cut.step(1.0, 5)
        assert np.array_equal(alone.snapshot()["soc"], cut.snapshot()["soc"])
    with pytest.raises(ValueError, match="at most one shard per row"):
        shard_range(23, 5, 0, 6)
