"""Register maps without a server: SunSpec layouts, encoding rules, vendor map files."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bess_farm.interfaces.modbus import quantities as qmod
from bess_farm.interfaces.modbus import sunspec
from bess_farm.interfaces.modbus.devices import FarmDevices, ModbusSettings
from bess_farm.interfaces.modbus.registers import (T_F32, T_I16, T_I32, T_U16, T_U32, T_U64,
                                                   ILLEGAL_ADDRESS, ILLEGAL_VALUE, ModbusError,
                                                   Point, RegisterMap, decode_value)
from bess_farm.interfaces.modbus.vendor import VendorMapError, parse_units, parse_vendor_map
from helpers import farm


def _pysunspec_points(model: int):
    sunspec2 = pytest.importorskip("sunspec2")
    path = Path(sunspec2.__file__).parent / "models" / "json" / f"model_{model}.json"
    doc = json.loads(path.read_text())
    out = []

    def walk(g, prefix=""):
        for p in g["points"]:
            if not prefix and p["name"] in ("ID", "L"):
                continue
            out.append((prefix + p["name"], p["type"], p["size"], p.get("sf"),
                        p.get("access", "R") == "RW"))
        for sub in g.get("groups", []):
            walk(sub, prefix + sub["name"] + ".")
    walk(doc["group"])
    return out


@pytest.mark.parametrize("model", sunspec.MODEL_ORDER)
def test_model_layouts_match_the_sunspec_definitions(model):
    theirs = _pysunspec_points(model)
    ours = sunspec.model_points(model)
    assert [p[:4] for p in ours] == [p[:4] for p in theirs]
    # a point this simulator lets SCADA write is writable in the model too
    writable_theirs = {p[0] for p in theirs if p[4]}
    assert {p[0] for p in ours if p[4]} <= writable_theirs


def test_quantity_slots_follow_the_table():
    for name, j in qmod.QUANTITY_INDEX.items():
        assert getattr(qmod, "Q_" + name.upper()) == j


def test_device_map_layout_and_markers():
    f = farm(3)
    dv = FarmDevices(f, ModbusSettings())
    rm = dv.map_of(0)
    regs = rm.read(dv.quantities(0), sunspec.BASE, 2)
    assert list(regs) == [0x5375, 0x6E53]
    off = 2
    for model in sunspec.MODEL_ORDER:
        head = rm.read(dv.quantities(0), sunspec.BASE + off, 2)
        assert list(head) == [model, sunspec.model_length(model)]
        off += 2 + sunspec.model_length(model)
    assert list(rm.read(dv.quantities(0), sunspec.BASE + off, 2)) == [0xFFFF, 0]
    assert rm.size == off + 2
    with pytest.raises(ModbusError) as e:
        rm.read(dv.quantities(0), sunspec.BASE + off + 1, 2)
    assert e.value.code == ILLEGAL_ADDRESS


def test_scale_factors_fit_the_ratings():
    assert sunspec.choose_sf(1.86e6, True, 0) == 2          # int16 watts
    assert sunspec.choose_sf(100.0, False, -2) == -2         # percent to 0.01
    assert sunspec.choose_sf(3.7e12, False, 0) == 8          # a 1M-unit plant's Wh
    assert sunspec.choose_sf(2e12, True, 0, width=32) == 3   # int32 farm setpoint


def _point(t, scale=1.0, wl=False, bl=False):
    size = {T_U16: 1, T_I16: 1, T_U32: 2, T_I32: 2, T_U64: 4, T_F32: 2}[t]
    rm = RegisterMap("t", 0, size)
    p = rm.add(Point("x", 0, t, size, source=0, scale=scale, word_little=wl, byte_little=bl,
                     writable=True))
    return rm.compile(), p


@settings(max_examples=200, deadline=None)
@given(t=st.sampled_from([T_U16, T_I16, T_U32, T_I32, T_U64, T_F32]), wl=st.booleans(),
       bl=st.booleans(), v=st.floats(-1e6, 1e6, allow_nan=False))
def test_encode_decode_round_trip(t, wl, bl, v):
    rm, p = _point(t, scale=1.0, wl=wl, bl=bl)
    if t in (T_U16, T_U32, T_U64):
        v = abs(v)
    if t in (T_U16, T_I16):
        v = max(-32767, min(32767, v)) if t == T_I16 else min(65534, v)
    words = [int(w) for w in rm.read(np.array([v]), 0, p.size)]
    back = decode_value(p, words)
    if t == T_F32:
        assert back == pytest.approx(v, rel=1e-6, abs=1e-6)
    else:
        assert back == round(v)


def test_word_and_byte_order_and_not_implemented():
    rm, _ = _point(T_U32)
    assert list(rm.read(np.array([0x12345678]), 0, 2)) == [0x1234, 0x5678]
    rm, _ = _point(T_U32, wl=True)
    assert list(rm.read(np.array([0x12345678]), 0, 2)) == [0x5678, 0x1234]
    rm, _ = _point(T_U32, wl=True, bl=True)
    assert list(rm.read(np.array([0x12345678]), 0, 2)) == [0x7856, 0x3412]
    rm, _ = _point(T_F32)
    hi, lo = struct.unpack(">HH", struct.pack(">f", 1.5))
    assert list(rm.read(np.array([1.5]), 0, 2)) == [hi, lo]
    for t, sentinel in ((T_U16, [0xFFFF]), (T_I16, [0x8000]), (T_U32, [0xFFFF, 0xFFFF]),
                        (T_I32, [0x8000, 0]), (T_U64, [0, 0, 0, 0])):
        rm, _ = _point(t)
        assert list(rm.read(np.array([math.nan]), 0, len(sentinel))) == sentinel
    # values beyond the type clamp without hitting the sentinel
    rm, _ = _point(T_I16)
    assert list(rm.read(np.array([1e9]), 0, 1)) == [32767]
    assert list(rm.read(np.array([-1e9]), 0, 1)) == [0x8001]


def test_a_read_that_cuts_through_a_point_gets_its_words():
    rm, _ = _point(T_U64)
    q = np.array([float(0x0001000200030004)])
    assert list(rm.read(q, 1, 2)) == [2, 3]


def test_writes_must_cover_whole_writable_points_and_stay_in_limits():
    f = farm(2)
    dv = FarmDevices(f, ModbusSettings())
    rm = dv.map_of(0)
    wset = next(p for p in rm.points if p.name == "704.WSet")
    soc = next(p for p in rm.points if p.name == "802.SoC")
    with pytest.raises(ModbusError) as e:
        rm.decode_write(rm.base + wset.offset, [0])                       # half of an int32
    assert e.value.code == ILLEGAL_ADDRESS
    with pytest.raises(ModbusError) as e:
        rm.decode_write(rm.base + soc.offset, [5000])                     # read-only
    assert e.value.code == ILLEGAL_ADDRESS
    big = int(3e6 * wset.scale)                                          # 3 MW > 1.86 MW rating
    with pytest.raises(ModbusError) as e:
        rm.decode_write(rm.base + wset.offset, [big >> 16 & 0xFFFF, big & 0xFFFF])
    assert e.value.code == ILLEGAL_VALUE
    ok = rm.decode_write(rm.base + wset.offset, [0xFFFF, 0xFFFF])         # -1 count
    assert ok[0][0].name == "704.WSet" and ok[0][1] == pytest.approx(-1 / wset.scale)


def test_plant_and_units_have_their_own_scale_factors():
    f = farm(40)
    dv = FarmDevices(f, ModbusSettings())
    unit_w = next(p for p in dv.map_of(0).points if p.name == "701.W")
    plant_w = next(p for p in dv.plant_map.points if p.name == "701.W")
    assert plant_w.scale < unit_w.scale          # coarser for the plant's larger power


def test_addressing_spreads_units_over_ports():
    f = farm(600, units_per_row=10, spread={})
    dv = FarmDevices(f, ModbusSettings(port=5020))
    assert dv.n_ports == 3
    assert dv.device(0, 1) == 0 and dv.device(0, 247) == 246
    assert dv.device(1, 1) == 247 and dv.device(2, 106) == 600 - 1
    assert dv.device(2, 107) is None
    assert dv.device(1, 255) == 600                 # the plant answers on every port
    assert dv.address_of(599) == (5022, 106)
    capped = FarmDevices(f, ModbusSettings(max_ports=2))
    assert capped.units_served == 494 and capped.device(1, 247) == 493


# ---------------------------------------------------------------------------------- vendor maps
def test_the_example_vendor_map_parses_and_encodes_little_word_order():
    rm = parse_vendor_map("example-vendor")
    f = farm(2)
    f.set_farm_power(1e6)
    f.step(1.0, 3)
    dv = FarmDevices(f, ModbusSettings(), vendor_maps={1: rm})
    q = dv.quantities(1)
    regs = [int(x) for x in dv.read(0, 2, 6, 2)]
    p_ac = int(round(q[qmod.Q_P_AC_W]))
    assert (regs[1] << 16 | regs[0]) == p_ac & 0xFFFFFFFF      # low word first
    soc = int(dv.read(0, 2, 0, 1)[0])
    assert soc == round(q[qmod.Q_SOC_PCT] * 10)
    model = dv.read(0, 2, 30, 8).astype(">u2").tobytes().rstrip(b"\0").decode()
    assert model == "EXAMPLE-BESS-3.7"
    assert list(dv.read(0, 1, 40000, 2)) == [0x5375, 0x6E53]    # unit 0 keeps SunSpec


def test_vendor_map_writes_drive_the_unit():
    rm = parse_vendor_map("example-vendor")
    f = farm(2)
    dv = FarmDevices(f, ModbusSettings(), vendor_maps={0: rm})
    w = -400000 & 0xFFFFFFFF
    dv.write(0, 1, 20, [w & 0xFFFF, w >> 16])
    f.step(0.1, 1)
    assert f.snapshot()["p_request_w"][0] == pytest.approx(-400000, rel=1e-3)
    with pytest.raises(ModbusError) as e:
        big = 5_000_000
        dv.write(0, 1, 20, [big & 0xFFFF, big >> 16])
    assert e.value.code == ILLEGAL_VALUE
    with pytest.raises(ModbusError) as e:
        dv.write(0, 1, 16, [1])                                      # a gap in the map
    assert e.value.code == ILLEGAL_ADDRESS


BAD_MAPS = [
    ('name = "x"\n[[point]]\naddress = 0\nname = "a"\ntype = "u17"\nsource = "soc_pct"\n',
     ":2: point 'a': unknown type 'u17'"),
    ('name = "x"\n\n[[point]]\naddress = 0\nname = "a"\ntype = "u16"\nsource = "sox"\n',
     ":3: point 'a': unknown source 'sox'"),
    ('name = "x"\n[[point]]\naddress = 0\nname = "a"\ntype = "u32"\nsource = "soc_pct"\n'
     '[[point]]\naddress = 1\nname = "b"\ntype = "u16"\nsource = "soc_pct"\n', "overlap"),
    ('name = "x"\n[[point]]\naddress = 0\nname = "a"\ntype = "u16"\naccess = "rw"\n'
     'source = "soc_pct"\n', "needs 'target'"),
    ('name = "x"\nword_order = "middle"\n[[point]]\naddress = 0\nname = "a"\ntype = "u16"\n'
     'source = "soc_pct"\n', "word_order must be 'big' or 'little'"),
    ('name = "x"\n[[point]]\naddress = 70000\nname = "a"\ntype = "u16"\nsource = "soc_pct"\n',
     "'address' must be a whole number"),
    ('name = "x"\n[[point]]\naddress = 0\nname = "a"\ntype = "u16"\nsource = "soc_pct"\n'
     'colour = 1\n', "unknown key 'colour'"),
    ('name = "x"\n[[point]\n', "not valid TOML"),
]


@pytest.mark.parametrize("text,match", BAD_MAPS)
def test_bad_vendor_maps_are_refused_with_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(VendorMapError, match=match) as e:
        parse_vendor_map(path)
    assert str(path) in str(e.value)


def test_unit_selectors():
    assert list(parse_units("0-2,5", 10)) == [0, 1, 2, 5]
    with pytest.raises(VendorMapError, match="outside 0..9"):
        parse_units("8-12", 10)
    with pytest.raises(VendorMapError, match="bad unit selector"):
        parse_units("a-b", 10)
