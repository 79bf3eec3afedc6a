"""Config parsing: every mistake a user can make is named, nothing is built from a bad config."""

import pytest

from bess_farm.engine import ConfigError, Farm, PARAMETERS, PRESETS, parse_config
from bess_farm.engine.presets import preset

GOOD = """
[farm]
name = "site-a"
seed = 4
units_per_row = 5

[ambient]
kind = "daily"
mean_c = 18.0

[[units]]
preset = "lfp-3.7mwh-20ft"
count = 6
[units.params]
hvac_cooling_w = 80000.0
[units.spread]
capacity = 0.01

[[units]]
preset = "nmc-2.6mwh-20ft"
count = 4
"""


def test_good_config_builds_a_mixed_farm(tmp_path):
    path = tmp_path / "farm.toml"
    path.write_text(GOOD)
    f = Farm.from_config(path)
    assert f.n_units == 10
    assert list(f.model[:6]) == ["LFP-3.7MWh-20ft"] * 6
    assert list(f.model[6:]) == ["NMC-2.6MWh-20ft"] * 4
    assert f.kpar[0, 25] == 80000.0   # K_HVAC_COOL_W override applied to the first kind only
    assert len(set(f.snapshot()["cap_ah"][:6])) == 6   # spread: every unit its own capacity
    assert len(set(f.snapshot()["cap_ah"][6:])) == 1   # no spread configured


def test_every_preset_key_is_a_documented_parameter():
    for name, p in PRESETS.items():
        assert set(p) <= set(PARAMETERS), name
        assert set(PARAMETERS) - {"ocv_soc", "ocv_v"} <= set(p), name


@pytest.mark.parametrize("text, words", [
    ("[[units]]\npreset = \"tesla-megapack\"\n", ["unknown preset 'tesla-megapack'", "lfp-3.7mwh-20ft"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\ncapacity = 3\n", ["units[0].params", "unknown key 'capacity'"]),
    ("[farm]\nseeds = 3\n[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n", ["farm: unknown key 'seeds'"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\ncount = 0\n", ["units[0].count", "out of range"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\ncell_capacity_ah = -5.0\n", ["cell_capacity_ah", "out of range"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\nsoc_min = 0.9\nsoc_max = 0.5\n", ["soc_min (0.9) must be below soc_max"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\ncell_v_min = 3.3\n", ["OCV at soc_min"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\nocv_soc = [0.0, 1.0]\nocv_v = [3.4, 3.1]\n", ["OCV must not fall"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\naging_model = \"magic\"\n", ["aging_model", "magic"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\nn_series = 2.5\n", ["n_series", "whole number"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.params]\nhvac_cop_cooling = \"high\"\n", ["hvac_cop_cooling", "expected a number"]),
    ("[ambient]\nkind = \"tropical\"\n[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n", ["ambient.kind", "tropical"]),
    ("[ambient]\nkind = \"series\"\ntimes_s = [0, 10, 5]\nvalues_c = [1, 2, 3]\n[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n", ["strictly increasing"]),
    ("[farm]\nname = \"x\"\n", ["no [[units]] group"]),
    ("[farm\nname = 1", ["not valid TOML"]),
    ("[[units]]\npreset = \"lfp-3.7mwh-20ft\"\n[units.spread]\ncapacity = 0.9\n", ["spread.capacity", "out of range"]),
])
def test_bad_config_names_the_problem(text, words):
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    for w in words:
        assert w in str(err.value)


def test_unreadable_file_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        parse_config(tmp_path / "missing.toml")


def test_unknown_preset_lists_known_ones():
    with pytest.raises(ValueError, match="known presets: lfp-3.7mwh-20ft, nmc-2.6mwh-20ft"):
        preset("nope")


def test_default_farm_is_a_realistic_site():
    f = Farm.default()
    assert f.n_units == 40
    assert f.config.ambient["kind"] == "daily"
    a = f.step(1.0, 1)
    assert 140e6 < a.e_capacity_wh < 150e6   # 40 x 3.7 MWh usable within the SoC window
