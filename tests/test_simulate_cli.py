"""`bess simulate` end to end, through main() and, once, through the installed console script."""

import csv
import json
import signal
import subprocess
import sys
import time

import pytest

from bess_farm.interfaces.cli import main

ONE_UNIT = """
[farm]
name = "one"
[ambient]
kind = "constant"
value_c = 25.0
[[units]]
preset = "lfp-3.7mwh-20ft"
count = 3
"""


def rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def cfg(tmp_path):
    p = tmp_path / "farm.toml"
    p.write_text(ONE_UNIT)
    return p


def test_default_run_writes_every_table(tmp_path, cfg, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--config", str(cfg), "--duration", "6h", "--dt", "10", "--units", "0,2",
                 "--out", str(out), "--quiet"]) == 0
    farm = rows(out / "farm.csv")
    assert len(farm) == 360 and farm[-1]["time_s"] == "21600"
    assert farm[0]["timestamp"] == "2025-01-01T00:01:00+00:00"
    series = rows(out / "units_timeseries.csv")
    assert {r["unit"] for r in series} == {"0", "2"} and len(series) == 720
    summary = rows(out / "units.csv")
    assert [r["unit"] for r in summary] == ["0", "1", "2"]
    info = json.loads((out / "run.json").read_text())
    assert info["completed"] and info["steps"] == 2160 and info["units"] == 3
    assert not list(out.glob("*.incomplete"))
    assert "simulated 3 units" in capsys.readouterr().out


def test_daily_arbitrage_charges_then_discharges(tmp_path, cfg):
    out = tmp_path / "o"
    assert main(["simulate", "--config", str(cfg), "--duration", "24h", "--dt", "30", "--out", str(out),
                 "--quiet", "--power", "3e6"]) == 0
    farm = {int(float(r["time_s"])) // 3600: float(r["p_ac_w"]) for r in rows(out / "farm.csv")}
    assert farm[2] < 0 and farm[18] > 0 and farm[12] == 0.0


def test_constant_current_and_seed_and_start(tmp_path, cfg):
    out = tmp_path / "o"
    assert main(["simulate", "--config", str(cfg), "--duration", "1h", "--dt", "1", "--current", "500",
                 "--units", "1", "--start", "2025-07-01T12:00:00", "--seed", "9", "--out", str(out),
                 "--quiet"]) == 0
    s = rows(out / "units_timeseries.csv")
    assert float(s[-1]["current_a"]) == pytest.approx(500.0)
    assert s[0]["timestamp"].startswith("2025-07-01T12:01:00")
    assert json.loads((out / "run.json").read_text())["seed"] == 9


def test_setpoint_csv_farm_and_per_unit(tmp_path, cfg):
    farm_csv = tmp_path / "farm_sp.csv"
    farm_csv.write_text("time_s,farm_w\n0,1e6\n1800,1e6\n1801,-2e6\n3600,-2e6\n")
    out = tmp_path / "a"
    assert main(["simulate", "--config", str(cfg), "--duration", "1h", "--dt", "1", "--setpoints",
                 str(farm_csv), "--out", str(out), "--quiet"]) == 0
    p = {int(float(r["time_s"])): float(r["p_ac_w"]) for r in rows(out / "farm.csv")}
    assert p[600] == pytest.approx(1e6, rel=1e-3) and p[3000] == pytest.approx(-2e6, rel=1e-3)
    unit_csv = tmp_path / "unit_sp.csv"
    unit_csv.write_text("time_s,unit_0_w,unit_2_a\n0,5e5,0\n3600,5e5,-300\n")
    out = tmp_path / "b"
    assert main(["simulate", "--config", str(cfg), "--duration", "1h", "--dt", "5", "--setpoints",
                 str(unit_csv), "--units", "0,1,2", "--out", str(out), "--quiet"]) == 0
    last = {r["unit"]: r for r in rows(out / "units_timeseries.csv")[-3:]}
    assert float(last["0"]["p_ac_w"]) == pytest.approx(5e5, rel=1e-3)
    assert float(last["1"]["p_ac_w"]) == 0.0
    # held over each 60-s row from its start: the last row started at 3540 s
    assert float(last["2"]["current_a"]) == pytest.approx(-300 * 3540 / 3600, rel=1e-6)


def test_ambient_csv_and_other_profiles(tmp_path, cfg):
    amb = tmp_path / "amb.csv"
    amb.write_text("time_s,ambient_c\n0,40\n7200,40\n")
    for profile in ("frequency-regulation", "peak-shaving", "constant"):
        out = tmp_path / profile
        assert main(["simulate", "--config", str(cfg), "--duration", "2h", "--dt", "2", "--profile",
                     profile, "--ambient", str(amb), "--out", str(out), "--quiet"]) == 0
        assert rows(out / "farm.csv")[-1]["temp_max_c"]


def test_parquet_and_plot(tmp_path, cfg):
    import pyarrow.parquet as pq
    out = tmp_path / "pq"
    assert main(["simulate", "--config", str(cfg), "--duration", "3h", "--dt", "10", "--format", "parquet",
                 "--units", "0", "--plot", "--out", str(out), "--quiet"]) == 0
    t = pq.read_table(out / "farm.parquet")
    assert t.num_rows == 180 and "soc_mean" in t.column_names
    assert pq.read_table(out / "units_timeseries.parquet").num_rows == 180
    assert pq.read_table(out / "units.parquet").num_rows == 3
    png = (out / "summary.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


@pytest.mark.parametrize("argv, message", [
    (["--profile", "lunar"], "invalid choice"),
    (["--duration=-3h"], "invalid duration"),
    (["--duration", "ten"], "invalid duration"),
    (["--dt", "0"], "must be a positive number"),
])
def test_bad_arguments_are_rejected_by_the_parser(tmp_path, cfg, capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "--config", str(cfg), "--out", str(tmp_path / "never"), "--quiet", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("argv, message", [
    (["--dt", "7200", "--duration", "1h"], "longer than --duration"),
    (["--units", "0,99"], "unit 99 does not exist"),
    (["--units", "a-b"], "not a unit id"),
    (["--setpoints", "/nonexistent.csv"], "cannot read"),
    (["--start", "yesterday"], "not an ISO 8601 time"),
    (["--current", "10", "--power", "5"], "goes with neither"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, cfg, capsys, argv, message):
    out = tmp_path / "never"
    assert main(["simulate", "--config", str(cfg), "--out", str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() or not any(out.iterdir())


def test_bad_csv_rows_name_the_line(tmp_path, cfg, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("time_s,farm_w\n0,1\n10,oops\n")
    assert main(["simulate", "--config", str(cfg), "--setpoints", str(bad), "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "line 3: farm_w = 'oops' is not a number" in capsys.readouterr().err
    bad.write_text("time_s,unit_0_w,unit_0_a\n0,1,2\n")
    assert main(["simulate", "--config", str(cfg), "--setpoints", str(bad), "--out", str(tmp_path / "y"),
                 "--quiet"]) == 2
    assert "both a power and a current column" in capsys.readouterr().err


def test_unwritable_output_folder(tmp_path, cfg, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["simulate", "--config", str(cfg), "--out", str(blocker / "sub"), "--quiet"]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_ctrl_c_keeps_what_was_written_and_marks_it(tmp_path):
    out = tmp_path / "long"
    proc = subprocess.Popen([sys.executable, "-m", "bess_farm", "simulate", "--duration", "100y",
                             "--dt", "60", "--output-interval", "1h", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    partial = out / "farm.csv.incomplete"
    while time.monotonic() < deadline and (not partial.exists() or partial.stat().st_size < 20_000):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "interrupted" in err
    assert partial.exists() and not (out / "farm.csv").exists()
    info = json.loads((out / "run.json").read_text())
    assert info["completed"] is False and info["status"] == "interrupted"
    lines = partial.read_text().splitlines()
    assert len(lines) > 10 and lines[0].startswith("time_s,")
