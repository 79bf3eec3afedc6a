"""Checkpoints: a restored farm continues bitwise; damaged or foreign files change nothing."""

from __future__ import annotations

import logging
import os
import struct
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from bess_farm.engine import Farm, parse_config
from bess_farm.engine.checkpoint import (FORMAT_VERSION, HEADER_SIZE, CheckpointError, CheckpointStore,
                                         load_checkpoint, read_manifest, save_checkpoint,
                                         verify_checkpoint)
from bess_farm.engine.layout import FLAG_RESET, FLAG_TRIGGER_RUNAWAY, THERMAL_RUNAWAY
from bess_farm.engine.profiles import daily_arbitrage

FAST = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])
RATED_W = 1.86e6


def config(count: int = 12, *, nmc: int = 4, seed: int = 3, params: dict | None = None,
           start_hour: float = 6.0) -> dict:
    """Two kinds (LFP then NMC), a daily ambient, aging sampled every 30 s, a fast runaway."""
    groups = [{"preset": "lfp-3.7mwh-20ft", "count": count,
               "params": {"runaway_tau_s": 300.0, **(params or {})},
               "spread": {"capacity": 0.02, "r0": 0.05}}]
    if nmc:
        groups.append({"preset": "nmc-2.6mwh-20ft", "count": nmc, "spread": {"capacity": 0.02}})
    return {"farm": {"seed": seed, "units_per_row": 4, "initial_soc": 0.55, "start_hour": start_hour,
                     "aging_interval_s": 30.0},
            "ambient": {"kind": "daily", "mean_c": 24.0, "amplitude_c": 8.0, "peak_hour": 15.0},
            "units": groups}


def build(cfg: dict | None = None) -> Farm:
    return Farm(parse_config(cfg or config()))


def state_of(farm: Farm) -> dict:
    """Everything a checkpoint must carry, copied: every array of the farm and the scalars."""
    s = {k: np.array(v) for k, v in vars(farm).items()
         if isinstance(v, np.ndarray) and k not in ("_scratch", "_iscratch")}
    prof = farm._farm_profile
    s.update(tick=farm.tick, time_s=farm.time_s, generation=farm.generation, src=farm._src,
             dt=farm._dt, one_shot=farm._one_shot_flags, pending=len(farm._pending),
             aging_interval_s=farm.aging_interval_s, profile=(prof.kind, prof.name, prof.p.copy(),
                                                            prof.ts.copy(), prof.vs.copy()))
    return s


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k], b[k]
        if k == "profile":
            assert x[:2] == y[:2] and all(np.array_equal(p, q) for p, q in zip(x[2:], y[2:])), k
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, k
            assert np.array_equal(x, y, equal_nan=x.dtype.kind in "fc"), k
        else:
            assert type(x) is type(y) and x == y, (k, x, y)


# ---------------------------------------------------------------------------- continuation
def _busy_farm() -> Farm:
    """A farm with every kind of state: a farm profile, manual units (power and current), a
    disabled unit, a sensor fault, a derate, a failed HVAC, a reserve SoC window, a unit in
    thermal runaway heating its neighbour, aging samples."""
    f = build()
    f.set_farm_profile(daily_arbitrage(0.5 * RATED_W * 16, start_hour=6.0))
    f.set_unit_power([1, 2], [0.4 * RATED_W, -0.3 * RATED_W])
    f.set_unit_current(13, -400.0)
    f.set_enabled(3, False)
    f.set_sensor_fault(5, "voltage", "drift", a=0.5, b=0.01)
    f.set_sensor_fault(6, "temperature", "noise", a=0.3)
    f.set_unit_params(7, derate=0.5, hvac_failed=True, ambient_offset_c=8.0)
    f.set_unit_params(14, r_step=1.5, cap_factor=0.95)
    f.set_soc_reserve([8, 9, 10], soc_min=0.2, soc_max=0.8)
    f.trigger_runaway(0)
    f.step(60.0, 30)
    f.step(1.0, 7)
    assert f.snapshot()["state"][0] == THERMAL_RUNAWAY
    return f


def _continue(f: Farm, plan) -> None:
    for dt, n, parallel in plan:
        f.step(dt, n, parallel=parallel)


PLAN = [(1.0, 5, False), (60.0, 40, False), (0.1, 3, True), (30.0, 20, True)]


def test_a_restored_farm_continues_bitwise(tmp_path):
    a = _busy_farm()
    path = save_checkpoint(a, tmp_path / "a.bess", extra={"note": "busy"})
    saved = state_of(a)
    _continue(a, PLAN)

    b = build()
    ckpt = load_checkpoint(b, path)
    assert ckpt.tick == saved["tick"] and ckpt.extra == {"note": "busy"}
    assert_same(saved, state_of(b))              # equal at once, before any step
    _continue(b, PLAN)
    assert_same(state_of(a), state_of(b))
    assert b.aggregates() == a.aggregates()
    assert np.array_equal(a.measure("voltage"), b.measure("voltage")), "sensor faults and noise too"


def test_commands_queued_before_a_save_are_in_it(tmp_path):
    """Queued commands are taken in by the save as the next step would take them in, including
    the one-shot reset and runaway-trigger bits that the next tick consumes."""
    a = _busy_farm()
    a.step(60.0, 30)                       # unit 0 hot enough to trip its neighbours
    a.reset(slice(None))
    a.trigger_runaway(11)
    a.set_farm_power(-0.2 * RATED_W * 16)
    a.set_soc_reserve(12, soc_max=0.7)
    path = save_checkpoint(a, tmp_path / "a.bess")
    assert not a._pending
    assert a._one_shot_flags and a.flags[11] & FLAG_TRIGGER_RUNAWAY and a.flags[4] & FLAG_RESET
    assert read_manifest(path)["state"]["one_shot_flags"] is True
    saved = state_of(a)

    never_saved = _busy_farm()             # the same history without the save in between
    never_saved.step(60.0, 30)
    never_saved.reset(slice(None))
    never_saved.trigger_runaway(11)
    never_saved.set_farm_power(-0.2 * RATED_W * 16)
    never_saved.set_soc_reserve(12, soc_max=0.7)

    b = build()
    b.set_farm_power(1e6)                  # queued on the target: dropped by the load
    load_checkpoint(b, path)
    assert_same(saved, state_of(b))
    for f in (a, b, never_saved):
        _continue(f, PLAN)
    assert_same(state_of(a), state_of(b))
    assert_same(state_of(a), state_of(never_saved))
    assert b.snapshot()["state"][11] == THERMAL_RUNAWAY


def test_apply_pending_false_leaves_commands_queued(tmp_path):
    a = build()
    a.step(1.0, 2)
    a.set_farm_power(3e6)
    path = save_checkpoint(a, tmp_path / "a.bess", apply_pending=False)
    assert len(a._pending) == 1
    b = build()
    load_checkpoint(b, path)
    assert b.farm_power_setpoint_w == 0.0 and a.farm_power_setpoint_w == 0.0


def test_a_shard_restores_into_the_same_shard_only(tmp_path):
    whole = build()
    whole.step(10.0, 3)
    shard = whole.take(range(4, 14))
    shard.set_farm_power(2e6)
    shard.step(10.0, 3)
    path = save_checkpoint(shard, tmp_path / "s.bess")
    same = build().take(range(4, 14))
    load_checkpoint(same, path)
    assert_same(state_of(shard), state_of(same))
    other = build().take(range(5, 15))
    with pytest.raises(CheckpointError, match="unit_order.*other units"):
        load_checkpoint(other, path)


command = st.tuples(
    st.floats(-1.2, 1.2),                                # farm power, fraction of rated
    st.one_of(st.none(), st.integers(0, 15)),            # a unit to put in manual mode
    st.sampled_from(["none", "disable", "reset", "fault", "reserve", "runaway", "auto"]),
    st.sampled_from([0.1, 1.0, 10.0, 60.0]),
    st.integers(1, 12),
)


def _apply(f: Farm, cmd) -> None:
    frac, unit, extra, dt, n = cmd
    f.set_farm_power(frac * RATED_W * f.n_units)
    if unit is not None:
        f.set_unit_power(unit, -frac * RATED_W)
    if extra == "disable":
        f.set_enabled(2, not bool(f.flags[2] & 1))
    elif extra == "reset":
        f.reset(slice(None))
    elif extra == "fault":
        f.set_sensor_fault(4, "soc", "offset", a=0.05)
    elif extra == "reserve":
        f.set_soc_reserve([5, 6], soc_min=0.3)
    elif extra == "runaway":
        f.trigger_runaway(15)
    elif extra == "auto":
        f.set_mode(slice(None), "auto")
    f.step(dt, n)


@FAST
@given(st.lists(command, min_size=1, max_size=6), st.lists(command, min_size=1, max_size=6),
       st.booleans())
def test_any_history_continues_bitwise(tmp_path_factory, before, after, queue_at_save):
    a = build()
    for cmd in before:
        _apply(a, cmd)
    if queue_at_save:                          # commands still queued when the save comes
        a.reset(slice(None))
        a.set_farm_power(0.3 * RATED_W * a.n_units)
    path = save_checkpoint(a, tmp_path_factory.mktemp("ck") / "a.bess")
    b = build()
    load_checkpoint(b, path)
    for cmd in after:
        _apply(a, cmd)
        _apply(b, cmd)
    assert_same(state_of(a), state_of(b))


# ---------------------------------------------------------------------------- refusals
@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a farm that has run, and a *different* farm state to load it into."""
    a = build()
    a.set_farm_power(5e6)
    a.step(10.0, 20)
    path = save_checkpoint(a, tmp_path / "good.bess", extra_arrays={"regs": np.arange(7, dtype=np.uint16)})
    target = build()
    target.set_unit_power(0, 1e5)
    target.step(1.0, 3)
    target.set_mode(0, "auto")                 # a queued command must survive a refused load
    return path, target


def _refused(target: Farm, path, match: str, kind: str | None = None) -> CheckpointError:
    before = state_of(target)
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint(target, path)
    err = info.value
    assert isinstance(err, ValueError) and path.name in str(err) and err.path == path
    if kind:
        assert err.kind == kind
    assert_same(before, state_of(target))      # nothing changed
    return err


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("cut", [0, 5, 40, HEADER_SIZE + 10, -1, -100, -5000])
def test_truncated_file_is_refused(saved, tmp_path, cut):
    path, target = saved
    data = path.read_bytes()
    bad = _write(tmp_path / "cut.bess", data[:cut] if cut >= 0 else data[:len(data) + cut])
    _refused(target, bad, "empty|truncated|not a bess-farm", "corrupt")


def test_a_flipped_byte_is_named(saved, tmp_path):
    path, target = saved
    data = bytearray(path.read_bytes())
    m = read_manifest(path)
    payload = len(data) - m["payload_nbytes"]
    dyn = next(e for e in m["arrays"] if e["name"] == "dyn")
    for pos, match in ((HEADER_SIZE + 30, "manifest is damaged"),
                       (payload + dyn["offset"] + 1000, "array 'dyn' is damaged"),
                       (HEADER_SIZE - 1, "reserved bytes"),
                       (10, "format version")):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        _refused(target, _write(tmp_path / "flip.bess", bytes(bad)), match)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_any_flipped_byte_anywhere_is_detected(saved, tmp_path, data):
    path, target = saved
    raw = bytearray(path.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1), label="position")
    raw[pos] ^= data.draw(st.integers(1, 255), label="xor")
    bad = _write(tmp_path / "flip.bess", bytes(raw))
    with pytest.raises(CheckpointError, match="flip.bess"):
        verify_checkpoint(bad)
    with pytest.raises(CheckpointError, match="flip.bess"):
        load_checkpoint(target, bad)


def test_wrong_magic_extra_bytes_and_future_version(saved, tmp_path):
    path, target = saved
    data = path.read_bytes()
    _refused(target, _write(tmp_path / "magic.bess", b"PK\x03\x04" + data[4:]), "not a bess-farm checkpoint")
    _refused(target, _write(tmp_path / "text.bess", b"hello"), "not a bess-farm checkpoint")
    _refused(target, _write(tmp_path / "long.bess", data + b"\0"), "1 unexpected bytes")
    future = bytearray(data)
    struct.pack_into("<I", future, 8, FORMAT_VERSION + 1)
    err = _refused(target, _write(tmp_path / "future.bess", bytes(future)),
                   f"format version {FORMAT_VERSION + 1} is newer", "incompatible")
    assert "future.bess" in str(err)


@pytest.mark.parametrize("cfg, match", [
    (config(13), r"farm\.n_units is 16 in the checkpoint, 17 in this farm"),
    (config(params={"hvac_cooling_w": 90000.0}),
     r"units\[0\]\.params\.hvac_cooling_w is absent in the checkpoint, 90000\.0 in this farm"),
    (config(seed=4), r"farm\.seed is 3 in the checkpoint, 4"),
    (config(start_hour=7.0), r"farm\.start_hour is 6\.0 in the checkpoint, 7\.0"),
    (config(nmc=0, count=16), r"units\b"),
])
def test_another_config_is_refused_with_the_difference_named(saved, cfg, match):
    path, _ = saved
    other = build(cfg)
    other.step(1.0, 2)
    err = _refused(other, path, match, "incompatible")
    assert "different configuration" in err.reason


def test_integers_and_floats_in_a_config_describe_the_same_farm(tmp_path):
    a = build(config(params={"hvac_cooling_w": 80000}))
    a.step(1.0, 2)
    path = save_checkpoint(a, tmp_path / "a.bess")
    b = build(config(params={"hvac_cooling_w": 80000.0}))
    load_checkpoint(b, path)
    assert b.tick == 2


def test_a_changed_aging_interval_is_refused(saved):
    path, target = saved
    target.aging_interval_s = 60.0
    _refused(target, path, r"farm\.aging_interval_s is 30\.0 in the checkpoint, 60\.0")


def test_extra_must_be_json_and_arrays_plain(tmp_path):
    f = build()
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(f, tmp_path / "x.bess", extra={"bad": float("nan")})
    with pytest.raises(ValueError, match="cannot be stored"):
        save_checkpoint(f, tmp_path / "x.bess", extra_arrays={"o": np.array([object()])})
    assert not list(tmp_path.iterdir())


def test_manifest_describes_the_file(saved):
    path, target = saved
    m = read_manifest(path)
    assert m["format_version"] == FORMAT_VERSION and m["state"]["tick"] == 20
    assert m["config"]["farm"]["start_hour"] == 6.0 and m["n_units"] == 16
    assert {e["name"] for e in m["arrays"]} >= {"dyn", "out", "status", "alarms", "upar", "flags",
                                                  "kind", "kpar", "aging_acc", "aging_state",
                                                  "sensor_faults", "agg", "disp", "extra/regs"}
    ckpt = load_checkpoint(target, path)
    assert np.array_equal(ckpt.extra_arrays["regs"], np.arange(7, dtype=np.uint16))


def test_compressed_checkpoint_continues_bitwise(tmp_path):
    a = _busy_farm()
    plain = save_checkpoint(a, tmp_path / "plain.bess")
    packed = save_checkpoint(a, tmp_path / "packed.bess", compress=True)
    assert packed.stat().st_size < plain.stat().st_size
    b = build()
    load_checkpoint(b, packed)
    assert_same(state_of(a), state_of(b))
    data = bytearray(packed.read_bytes())
    data[-3] ^= 1
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(build(), _write(tmp_path / "bad.bess", bytes(data)))


# ---------------------------------------------------------------------------- the store
def test_store_rotates_and_restores_the_newest(tmp_path):
    store = CheckpointStore(tmp_path / "ck", keep=2)
    f = build()
    for _ in range(4):
        f.step(10.0, 5)
        store.save(f, extra={"tick": f.tick})
    assert [p.name for p in store.checkpoints()] == ["ckpt-000000000020.bess", "ckpt-000000000015.bess"]
    g = build()
    found = store.load_into(g)
    assert found and found.path.name == "ckpt-000000000020.bess" and not found.rejected
    assert found.checkpoint.extra == {"tick": 20}
    assert_same(state_of(f), state_of(g))


def test_store_falls_back_when_the_newest_is_corrupt(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=3)
    f = build()
    f.step(10.0, 5)
    store.save(f)
    good = state_of(f)
    f.step(10.0, 5)
    newest = store.save(f)
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    g = build()
    with caplog.at_level(logging.WARNING, logger="bess.checkpoint"):
        found = store.load_into(g)
    assert found.path.name == "ckpt-000000000005.bess"
    assert_same(good, state_of(g))
    [rej] = found.rejected
    assert rej.path == newest and rej.kind == "corrupt" and "damaged" in rej.reason
    assert rej.moved_to.name == "ckpt-000000000010.bess.corrupt" and rej.moved_to.exists()
    assert not newest.exists()
    warned = [r for r in caplog.records if r.name == "bess.checkpoint" and r.levelno == logging.WARNING]
    assert any("ckpt-000000000010.bess" in r.getMessage() and "damaged" in r.getMessage() for r in warned)
    assert store.latest_valid().path.name == "ckpt-000000000005.bess"


def test_store_moves_an_incompatible_checkpoint_aside(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=2)
    f = build()
    f.step(10.0, 5)
    store.save(f)
    other = build(config(20))
    other.step(10.0, 10)
    save_checkpoint(other, store.path_for(other.tick))     # a newer file for another farm
    g = build()
    with caplog.at_level(logging.WARNING, logger="bess.checkpoint"):
        found = store.load_into(g)
    assert found.path.name == "ckpt-000000000005.bess" and g.tick == 5
    [rej] = found.rejected
    assert rej.kind == "incompatible" and "n_units" in rej.reason
    assert (tmp_path / "ckpt-000000000010.bess.incompatible").exists()
    assert "ckpt-000000000010.bess" in caplog.text and "n_units" in caplog.text
    assert store.latest_valid().path.name == "ckpt-000000000005.bess"


def test_an_empty_store_leaves_the_farm_alone(tmp_path):
    store = CheckpointStore(tmp_path / "none")
    f = build()
    before = state_of(f)
    found = store.load_into(f)
    assert not found and found.path is None and found.checkpoint is None
    assert_same(before, state_of(f))


def test_a_crash_before_the_rename_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path, keep=2)
    f = build()
    f.step(10.0, 5)
    store.save(f)
    good = state_of(f)
    # a crash between the tmp write and the rename: a (partial) temporary file stays behind
    f.step(10.0, 5)
    full = store.save(f)
    partial = full.read_bytes()[: full.stat().st_size // 2]
    full.unlink()
    tmp = tmp_path / "ckpt-000000000010.bess.4242-deadbeef.tmp"
    tmp.write_bytes(partial)
    g = build()
    found = store.load_into(g)
    assert found.path.name == "ckpt-000000000005.bess" and not found.rejected
    assert_same(good, state_of(g))
    assert not tmp.exists(), "left-over temporary files are removed"

    # the same with the rename failing inside save: the exception propagates, nothing is left
    def no_rename(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="No space"):
        store.save(f)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000000005.bess"]
    assert store.latest_valid().path.name == "ckpt-000000000005.bess"


def test_a_save_supersedes_checkpoints_of_a_run_it_did_not_continue(tmp_path, caplog):
    store = CheckpointStore(tmp_path, keep=2)
    old = build()
    old.step(10.0, 50)
    store.save(old)                            # another run got further
    f = build()
    f.step(10.0, 3)
    with caplog.at_level(logging.WARNING, logger="bess.checkpoint"):
        path = store.save(f)
    assert "ckpt-000000000050.bess" in caplog.text and "did not continue" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-000000000003.bess",
                                                          "ckpt-000000000050.bess.superseded"]
    assert store.latest_valid().path == path


# ---------------------------------------------------------------------------- size and speed
def test_size_and_speed_of_a_100k_unit_farm(tmp_path, capsys):
    """Recorded, never asserted (timing depends on the machine); see the report in the output."""
    cfg = config(100_000 - 4)
    a = Farm(parse_config(cfg))
    a.step(1.0, 1)
    t0 = time.perf_counter()
    path = save_checkpoint(a, tmp_path / "big.bess")
    t_save = time.perf_counter() - t0
    b = Farm(parse_config(cfg))
    t0 = time.perf_counter()
    load_checkpoint(b, path)
    t_load = time.perf_counter() - t0
    size = path.stat().st_size
    assert np.array_equal(a.dyn, b.dyn)
    with capsys.disabled():
        print(f"\ncheckpoint of {a.n_units:,} units: {size / 1e6:.1f} MB "
              f"({size / a.n_units:.0f} B/unit; memory_bytes {a.memory_bytes() / 1e6:.1f} MB), "
              f"save {t_save * 1e3:.0f} ms (incl. fsync), load {t_load * 1e3:.0f} ms")
