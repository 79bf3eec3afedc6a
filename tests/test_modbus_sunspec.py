"""SunSpec over a real server, read and written by pysunspec2 (a client nobody here wrote)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bess_farm.engine.layout import STATE_NAMES
from runtime_helpers import RawClient, ModbusException, running, wait_ticks

sunspec_client = pytest.importorskip("sunspec2.modbus.client")
ModbusClientException = pytest.importorskip("sunspec2.modbus.modbus").ModbusClientException

ALL_MODELS = [1, 802, 713, 701, 702, 704]


def _device(port, slave_id):
    d = sunspec_client.SunSpecModbusClientDeviceTCP(slave_id=slave_id, ipaddr="127.0.0.1",
                                                    ipport=port, timeout=5)
    d.scan()
    return d


def _stable_read(rt, model):
    """Read a model within one tick: retry until the heartbeat (tick) is the same before and after."""
    for _ in range(50):
        t0 = rt.farm.tick
        model.read()
        if rt.farm.tick == t0:
            return t0
    raise AssertionError("could not read within one tick")


def test_pysunspec_scans_a_unit_and_the_plant_and_reads_the_engine():
    with running(tick_hz=2.0, profile="constant") as rt:
        unit = _device(rt.port, 1)
        plant = _device(rt.port, 255)
        for dev in (unit, plant):
            assert [m for m in dev.models if isinstance(m, int)] == ALL_MODELS
        bat = unit.models[802][0]
        tick = _stable_read(rt, bat)
        assert bat.Hb.value == tick % 65536
        snap = rt.farm.snapshot()
        soc_measured = rt.call(lambda: rt.farm.measure("soc", [0])[0])
        assert bat.SoC.cvalue == pytest.approx(100 * soc_measured, abs=0.01)
        assert bat.W.cvalue == pytest.approx(float(snap["p_dc_w"][0]), abs=100)   # W_SF = 2
        state = STATE_NAMES[snap["state"][0]]
        assert state == "discharging" and bat.State.value == 3 and bat.ChaSt.value == 3
        ac = unit.models[701][0]
        _stable_read(rt, ac)
        assert ac.W.cvalue == pytest.approx(float(rt.farm.snapshot()["p_ac_w"][0]), abs=100)
        assert ac.TotWhInj.cvalue == pytest.approx(
            float(rt.farm.snapshot()["e_ac_discharged_wh"][0]), abs=1.0)
        common = unit.models[1][0]
        common.read()
        assert common.Mn.cvalue == rt.farm.kinds[0]["vendor"]
        assert common.SN.cvalue.endswith("0000000")
        pb = plant.models[802][0]
        _stable_read(rt, pb)
        agg = rt.farm.aggregates()
        assert pb.SoC.cvalue == pytest.approx(100 * agg.soc_mean, abs=0.01)
        pac = plant.models[701][0]
        _stable_read(rt, pac)
        assert pac.W.cvalue == pytest.approx(rt.farm.aggregates().p_ac_w, rel=1e-3)
        cap = plant.models[713][0]
        cap.read()
        assert cap.WHRtg.cvalue == pytest.approx(agg.e_capacity_wh / agg.soh_mean, rel=0.01)


def test_setpoint_and_reserve_writes_take_effect_at_the_next_tick():
    with running(tick_hz=1.0) as rt:                      # slow ticks: the boundary is visible
        unit = _device(rt.port, 3)
        ctl, bat = unit.models[704][0], unit.models[802][0]
        wait_ticks(rt, 1)
        t0 = rt.farm.tick
        ctl.WSetEna.value = 1
        ctl.WSet.cvalue = -300000
        ctl.write()
        bat.SoCRsvMin.cvalue = 35
        bat.write()
        if rt.farm.tick == t0:                           # still the same tick: nothing changed yet
            assert rt.farm.snapshot()["p_request_w"][2] == 0.0
            assert rt.farm.snapshot()["soc_rsv_min"][2] != np.float32(0.35)
        wait_ticks(rt, 1)
        snap = rt.farm.snapshot()
        assert snap["p_request_w"][2] == pytest.approx(-300000, rel=1e-4)
        assert snap["soc_rsv_min"][2] == np.float32(0.35)
        ctl.read()
        bat.read()
        assert ctl.WSet.cvalue == -300000 and ctl.WSetEna.value == 1
        assert bat.SoCRsvMin.cvalue == pytest.approx(35)
        assert snap["p_request_w"][3] == 0.0              # the neighbour is untouched


def test_out_of_range_writes_raise_exception_3_and_change_nothing():
    with running(tick_hz=5.0) as rt:
        unit = _device(rt.port, 1)
        ctl, bat = unit.models[704][0], unit.models[802][0]
        ctl.WSet.cvalue = 5_000_000                      # beyond the 1.86 MW rating
        with pytest.raises(ModbusClientException, match="3"):
            ctl.write()
        bat.SoCRsvMin.cvalue = 1                          # below the kind's 3 % window
        with pytest.raises(ModbusClientException, match="3"):
            bat.write()
        wait_ticks(rt, 2)
        ctl.read()
        bat.read()
        assert ctl.WSet.cvalue == 0 and ctl.WSetEna.value == 0
        assert bat.SoCRsvMin.cvalue == pytest.approx(3.0)
        assert rt.modbus_stats.writes_rejected == 2


def test_plant_setpoint_drives_the_farm():
    with running(tick_hz=5.0) as rt:
        plant = _device(rt.port, 255)
        ctl = plant.models[704][0]
        ctl.WSetEna.value = 1
        ctl.WSet.cvalue = 10_000_000
        ctl.write()
        wait_ticks(rt, 2)
        assert rt.farm.farm_power_setpoint_w == pytest.approx(10e6, rel=1e-3)
        assert rt.farm.aggregates().p_ac_w == pytest.approx(10e6, rel=1e-3)


def test_control_heartbeat_reverts_to_the_safe_setpoint():
    # 10 Hz with --speed 20: two simulated seconds per real tenth of a second... 2 s per tick
    with running(tick_hz=10.0, speed=20.0) as rt:
        c = RawClient(rt.port)
        base704 = _model_address(rt, 704)
        # WSetEna=1, WSetMod=1 (watts), WSet=-200 kW, WSetRvrt=0, then WSetRvrtTms=30 s
        w = -200000 & 0xFFFFFFFF
        c.write(1, base704 + 2 + 20, [1, 1, w >> 16, w & 0xFFFF])
        c.write(1, base704 + 2 + 29, [0, 30])
        wait_ticks(rt, 2)
        assert rt.farm.snapshot()["p_request_w"][0] == pytest.approx(-200000, rel=1e-4)
        rem = c.read(1, base704 + 2 + 31, 2)
        assert 0 < (rem[0] << 16 | rem[1]) <= 30
        # keep the heartbeat alive for a while: no revert
        for hb in range(5):
            c.write(1, 40070 + 2 + 17, [hb])             # 802 CtrlHb
            time.sleep(0.05)
        assert rt.farm.snapshot()["p_request_w"][0] == pytest.approx(-200000, rel=1e-4)
        t_last = rt.farm.time_s
        while rt.farm.time_s < t_last + 40:              # silence for more than 30 simulated s
            time.sleep(0.05)
        wait_ticks(rt, 1)
        assert rt.farm.snapshot()["p_request_w"][0] == 0.0
        regs = c.read(1, base704 + 2 + 20, 4)
        assert regs[0] == 1 and regs[2:] == [0, 0]       # enabled (WSetEnaRvrt), WSet = WSetRvrt
        c.close()


def _model_address(rt, model):
    from bess_farm.interfaces.modbus import sunspec
    off = 2
    for m in sunspec.MODEL_ORDER:
        if m == model:
            return sunspec.BASE + off
        off += 2 + sunspec.model_length(m)
    raise KeyError(model)


def test_alarm_reset_and_disconnect_over_802():
    with running(tick_hz=5.0) as rt:
        c = RawClient(rt.port)
        c.write(2, 40070 + 2 + 48, [2])                   # SetOp = DISCONNECT
        wait_ticks(rt, 2)
        assert STATE_NAMES[rt.farm.snapshot()["state"][1]] == "offline"
        assert c.read(2, 40070 + 2 + 20, 1) == [1]        # 802 State: DISCONNECTED
        c.write(2, 40070 + 2 + 48, [1])                   # CONNECT
        wait_ticks(rt, 2)
        assert STATE_NAMES[rt.farm.snapshot()["state"][1]] != "offline"
        with pytest.raises(ModbusException) as e:
            c.write(2, 40070 + 2 + 18, [2])               # AlmRst accepts 0 or 1
        assert e.value.code == 3
        c.write(2, 40070 + 2 + 18, [1])
        c.close()
