"""`bess presets`, `bess check-config`, `bess --version`."""

import pytest

from bess_farm import __version__
from bess_farm.interfaces.cli import main


def test_presets_list_and_show(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "lfp-3.7mwh-20ft" in out and "cell_r0_ohm" in out and "[ohm]" in out
    assert main(["presets", "nmc-2.6mwh-20ft"]) == 0
    assert "nmc111_gr_kokam_75ah" in capsys.readouterr().out
    assert main(["presets", "acme-9000"]) == 2
    assert "unknown preset 'acme-9000'; known presets:" in capsys.readouterr().err


def test_check_config(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text('[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 3\n')
    assert main(["check-config", str(good)]) == 0
    assert "ok, 3 units" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[units]]\npreset = "lfp-3.7mwh-20ft"\n[units.params]\nsoc_max = 2\n')
    assert main(["check-config", str(bad)]) == 2
    assert "soc_max" in capsys.readouterr().err
    assert main(["check-config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_check_config_validates_site_sections_and_vendor_maps(tmp_path, capsys):
    site = tmp_path / "site.toml"
    site.write_text('[modbus]\nport = 1502\n[[modbus.vendor_map]]\nunits = "0-1"\nfile = "example-vendor"\n'
                    '[runtime]\nprofile = "idle"\n[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 3\n')
    assert main(["check-config", str(site)]) == 0
    assert "ok, 3 units" in capsys.readouterr().out
    (tmp_path / "v.toml").write_text('name = "v"\n[[point]]\naddress = 0\nname = "a"\ntype = "u16"\n'
                                     'source = "nope"\n')
    site.write_text('[[modbus.vendor_map]]\nunits = "0-1"\nfile = "v.toml"\n'
                    '[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 3\n')
    assert main(["check-config", str(site)]) == 2
    assert "v.toml:2: point 'a': unknown source 'nope'" in capsys.readouterr().err
    site.write_text('[[modbus.vendor_map]]\nunits = "0-5"\nfile = "example-vendor"\n'
                    '[[units]]\npreset = "lfp-3.7mwh-20ft"\ncount = 3\n')
    assert main(["check-config", str(site)]) == 2
    assert "outside 0..2" in capsys.readouterr().err


def test_version_and_no_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and __version__ in capsys.readouterr().out
    assert main([]) == 0
    assert "simulate" in capsys.readouterr().out
