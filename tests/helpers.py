"""Small farm builders shared by the tests."""

from __future__ import annotations

from bess_farm.engine import Farm, parse_config


def single_cell_farm(params: dict, *, ambient_c: float = 25.0, initial_soc: float = 0.5,
                     preset: str = "lfp-3.7mwh-20ft") -> Farm:
    """One unit of one cell (n_series = n_parallel = 1), lossless PCS, HVAC off."""
    base = {
        "n_series": 1, "n_parallel": 1, "pcs_loss_l0": 0.0, "pcs_loss_l1": 0.0, "pcs_loss_l2": 0.0,
        "pcs_rated_w": 10e3, "hvac_cooling_w": 0.0, "hvac_heating_w": 0.0, "hvac_base_w": 0.0,
        "coulombic_efficiency": 1.0, "soc_min": 0.0, "soc_max": 1.0, "soc_taper": 0.01,
        "cell_v_max": 4.0, "cell_v_trip_high": 4.1, "cell_v_min": 2.0, "cell_v_trip_low": 1.9,
        "c_rate_max_discharge": 3.0, "c_rate_max_charge": 3.0, "c_rate_trip": 5.0,
        "t_derate_c": 70.0, "t_trip_high_c": 80.0,
    }
    base.update(params)
    return Farm.from_config({
        "farm": {"initial_soc": initial_soc, "initial_temp_c": ambient_c},
        "ambient": {"kind": "constant", "value_c": ambient_c},
        "units": [{"preset": preset, "count": 1, "params": base}],
    })


def farm(count: int = 12, *, units_per_row: int = 4, seed: int = 3, params: dict | None = None,
         spread: dict | None = None, ambient: dict | None = None, initial_soc: float = 0.5,
         preset: str = "lfp-3.7mwh-20ft") -> Farm:
    cfg = {
        "farm": {"seed": seed, "units_per_row": units_per_row, "initial_soc": initial_soc},
        "ambient": ambient or {"kind": "constant", "value_c": 25.0},
        "units": [{"preset": preset, "count": count, "params": params or {},
                   "spread": spread if spread is not None else {"capacity": 0.02, "r0": 0.05}}],
    }
    return Farm(parse_config(cfg))
