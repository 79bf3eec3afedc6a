"""The aging validation runs: one unit of a preset, ten years at dt = 60 s, driven by the engine.

Shared by tests/test_aging_engine.py (which runs them and reads the engine's online SoH) and by
tests/reference/engine_aging_traces.py (which records the same runs' SoC/temperature traces for
BLAST-Lite). Cases:

``daily_full_cycle_25c``  ambient 25 C; each day: charge at C/4 from 00:00 for 5 h (to the top of
                          the window, the voltage limit tapering the end), rest, discharge at C/4
                          from 12:00 for 5 h, rest. The SoC window is opened to 0..1.
``storage_100soc_35c``    ambient 35 C, HVAC off, held at SoC 1.0.
"""

from __future__ import annotations

from bess_farm.engine import Farm

DT_S = 60.0
DAY_S = 86400.0
CASES = ("daily_full_cycle_25c", "storage_100soc_35c")
PRESETS = {"lfp_gr_250ah_prismatic": "lfp-3.7mwh-20ft", "nmc111_gr_kokam_75ah": "nmc-2.6mwh-20ft"}


def build(model: str, case: str) -> Farm:
    params = {"soc_min": 0.0, "soc_max": 1.0, "soc_taper": 0.01}
    if model == "lfp_gr_250ah_prismatic":
        params.update(cell_v_min=2.4, cell_v_trip_low=2.2, cell_v_max=3.65)
    else:
        params.update(cell_v_min=2.9, cell_v_trip_low=2.7, cell_v_max=4.2, cell_v_trip_high=4.3)
    if case == "storage_100soc_35c":
        params.update(hvac_cooling_w=0.0, hvac_heating_w=0.0, hvac_base_w=0.0)
        ambient, soc0 = 35.0, 1.0
    else:
        ambient, soc0 = 25.0, 0.0
    return Farm.from_config({
        "farm": {"initial_soc": soc0, "initial_temp_c": ambient, "aging_interval_s": DT_S},
        "ambient": {"kind": "constant", "value_c": ambient},
        "units": [{"preset": PRESETS[model], "count": 1, "params": params}],
    })


def day_plan(farm: Farm, case: str):
    """(current setpoint [A] or None for rest, duration [s]) for one day."""
    if case == "storage_100soc_35c":
        return [(None, DAY_S)]
    c4 = float(farm.upar[4, 0]) / 4.0   # CAP_NOM_AH / 4
    return [(-c4, 5 * 3600.0), (None, 7 * 3600.0), (c4, 5 * 3600.0), (None, 7 * 3600.0)]


def run(model: str, case: str, days: int, on_step=None, checkpoints=()):
    """Run ``days`` days; returns {day: (soh, r_factor)} at the checkpoint days.

    ``on_step(farm)`` is called after every single step when given (slow: for recording traces)."""
    from bess_farm.engine.layout import R0_NOM_OHM, R0_OHM, SOH
    farm = build(model, case)
    plan = day_plan(farm, case)
    out = {}
    for day in range(1, days + 1):
        for amps, duration in plan:
            if amps is None:
                farm.set_unit_current(0, 0.0)
            else:
                farm.set_unit_current(0, amps)
            n = int(round(duration / DT_S))
            if on_step is None:
                farm.step(DT_S, n)
            else:
                for _ in range(n):
                    farm.step(DT_S, 1)
                    on_step(farm)
        if day in checkpoints:
            out[day] = (float(farm.upar[SOH, 0]),
                        float(farm.upar[R0_OHM, 0]) / float(farm.upar[R0_NOM_OHM, 0]))
    return out
