"""Vendor presets: one table of the unit products a farm can be built from.

A preset describes one product (a battery container with its PCS) at cell level plus the pack
arrangement; the farm config picks a preset per group of units and may override any value (see
:data:`PARAMETERS` for every name, its unit and its meaning). The presets are representative
products assembled from public datasheet classes, not a specific vendor's data:

``lfp-3.7mwh-20ft``
    A 20-ft container of 4,160 LFP/graphite 280 Ah prismatic cells (416S10P, 1,331 V nominal,
    3.73 MWh) with a 1.86 MW PCS (0.5C), liquid cooling and an HVAC of 60 kW. Cell values after
    the 280 Ah LFP datasheet class (3.2 V, <= 0.25 mOhm AC resistance, 0.5C continuous) [1];
    aging after BLAST-Lite ``Lfp_Gr_250AhPrismatic`` [2]; runaway thresholds after [3].
``nmc-2.6mwh-20ft``
    A 20-ft container of NMC/graphite 94 Ah prismatic cells (336S22P, 1,236 V nominal, 2.56 MWh)
    with a 1.28 MW PCS (0.5C). Aging after the BLAST-Lite NMC model named in ``aging_model`` [2].

References
----------
[1] EVE Energy LF280K and CATL 280 Ah LFP cell datasheets (public product sheets, 2021-2023).
[2] NREL BLAST-Lite 1.1.1, https://github.com/NREL/BLAST-Lite (models and their papers).
[3] X. Feng et al., "Thermal runaway mechanism of lithium ion battery for electric vehicles:
    A review", Energy Storage Materials 10 (2018) 246-267 (onset/critical temperature ranges).
"""

from __future__ import annotations

from types import MappingProxyType

# name -> (unit, meaning). Every key of a preset and of a config override must be here.
PARAMETERS = MappingProxyType({
    "vendor": ("", "manufacturer shown in metrics and the SunSpec common model"),
    "model": ("", "product name"),
    "chemistry": ("", "OCV table to use: 'lfp' or 'nmc' (unless ocv_soc/ocv_v are given)"),
    "ocv_soc": ("-", "OCV table SoC points, 0 to 1 (with ocv_v)"),
    "ocv_v": ("V", "OCV table cell voltages (with ocv_soc)"),
    "cell_capacity_ah": ("Ah", "nominal cell capacity"),
    "n_series": ("-", "cells in series"),
    "n_parallel": ("-", "cells in parallel"),
    "cell_r0_ohm": ("ohm", "cell series resistance"),
    "cell_r1_ohm": ("ohm", "cell first RC resistance"),
    "cell_tau1_s": ("s", "first RC time constant"),
    "cell_r2_ohm": ("ohm", "cell second RC resistance (0 = one RC pair)"),
    "cell_tau2_s": ("s", "second RC time constant"),
    "coulombic_efficiency": ("-", "charge stored per charge drawn while charging"),
    "cell_v_max": ("V", "cell voltage limit while charging (operating)"),
    "cell_v_min": ("V", "cell voltage limit while discharging (operating)"),
    "cell_v_trip_high": ("V", "cell over-voltage trip"),
    "cell_v_trip_low": ("V", "cell under-voltage trip"),
    "c_rate_max_discharge": ("1/h", "discharge current limit as C-rate"),
    "c_rate_max_charge": ("1/h", "charge current limit as C-rate"),
    "c_rate_trip": ("1/h", "over-current trip as C-rate"),
    "soc_min": ("-", "lower end of the SoC window"),
    "soc_max": ("-", "upper end of the SoC window"),
    "soc_taper": ("-", "width of the power taper inside each end of the window"),
    "pcs_rated_w": ("W", "PCS AC power rating"),
    "pcs_loss_l0": ("-", "PCS no-load loss, fraction of rating"),
    "pcs_loss_l1": ("-", "PCS loss linear in load, fraction of rating"),
    "pcs_loss_l2": ("-", "PCS loss quadratic in load, fraction of rating"),
    "t_derate_c": ("C", "power derating starts"),
    "t_trip_high_c": ("C", "over-temperature trip (derated to 0 here)"),
    "t_min_charge_c": ("C", "no charging below; full charge power 10 K above"),
    "t_trip_low_c": ("C", "under-temperature trip"),
    "heat_capacity_j_per_k": ("J/K", "lumped heat capacity of the unit"),
    "conductance_ambient_w_per_k": ("W/K", "heat conductance to ambient"),
    "conductance_neighbour_w_per_k": ("W/K", "heat conductance to each neighbour in the row"),
    "hvac_cooling_w": ("W", "HVAC cooling capacity (thermal)"),
    "hvac_heating_w": ("W", "HVAC heating capacity (thermal)"),
    "hvac_cool_setpoint_c": ("C", "cooling starts above"),
    "hvac_heat_setpoint_c": ("C", "heating starts below"),
    "hvac_gain_w_per_k": ("W/K", "proportional gain of the HVAC controller"),
    "hvac_cop_cooling": ("-", "coefficient of performance, cooling"),
    "hvac_cop_heating": ("-", "coefficient of performance, heating"),
    "hvac_base_w": ("W", "fans and controls, always on"),
    "runaway_onset_c": ("C", "self-heating onset"),
    "runaway_critical_c": ("C", "runaway becomes irreversible"),
    "runaway_onset_w": ("W", "self-heating power at the onset temperature"),
    "runaway_activation_k": ("K", "activation temperature Ea/R of the self-heating"),
    "runaway_energy_factor": ("-", "heat released by a runaway, as a multiple of the rated energy"),
    "runaway_tau_s": ("s", "time constant of the runaway heat release"),
    "aging_model": ("", "aging model name (see bess_farm.engine.aging.AGING_MODEL_NAMES)"),
    "sensor_noise_v": ("V", "pack voltage measurement noise (standard deviation)"),
    "sensor_noise_c": ("K", "temperature measurement noise"),
    "sensor_noise_a": ("A", "current measurement noise"),
    "sensor_noise_soc": ("-", "reported SoC noise"),
})

_LFP_280AH_CONTAINER = {
    "vendor": "Generic", "model": "LFP-3.7MWh-20ft", "chemistry": "lfp",
    "cell_capacity_ah": 280.0, "n_series": 416, "n_parallel": 10,
    "cell_r0_ohm": 0.5e-3, "cell_r1_ohm": 0.2e-3, "cell_tau1_s": 20.0,
    "cell_r2_ohm": 0.3e-3, "cell_tau2_s": 600.0, "coulombic_efficiency": 0.999,
    "cell_v_max": 3.65, "cell_v_min": 2.50, "cell_v_trip_high": 3.75, "cell_v_trip_low": 2.30,
    "c_rate_max_discharge": 0.55, "c_rate_max_charge": 0.55, "c_rate_trip": 0.8,
    "soc_min": 0.03, "soc_max": 0.97, "soc_taper": 0.05,
    "pcs_rated_w": 1.86e6, "pcs_loss_l0": 0.003, "pcs_loss_l1": 0.005, "pcs_loss_l2": 0.008,
    "t_derate_c": 45.0, "t_trip_high_c": 55.0, "t_min_charge_c": 0.0, "t_trip_low_c": -20.0,
    "heat_capacity_j_per_k": 2.5e7, "conductance_ambient_w_per_k": 120.0,
    "conductance_neighbour_w_per_k": 150.0,
    "hvac_cooling_w": 60e3, "hvac_heating_w": 15e3, "hvac_cool_setpoint_c": 25.0,
    "hvac_heat_setpoint_c": 15.0, "hvac_gain_w_per_k": 12e3, "hvac_cop_cooling": 3.0,
    "hvac_cop_heating": 2.5, "hvac_base_w": 1500.0,
    "runaway_onset_c": 120.0, "runaway_critical_c": 180.0, "runaway_onset_w": 2e3,
    "runaway_activation_k": 15000.0, "runaway_energy_factor": 1.5, "runaway_tau_s": 1800.0,
    "aging_model": "lfp_gr_250ah_prismatic",
    "sensor_noise_v": 0.5, "sensor_noise_c": 0.1, "sensor_noise_a": 0.5, "sensor_noise_soc": 0.002,
}

_NMC_94AH_CONTAINER = {
    "vendor": "Generic", "model": "NMC-2.6MWh-20ft", "chemistry": "nmc",
    "cell_capacity_ah": 94.0, "n_series": 336, "n_parallel": 22,
    "cell_r0_ohm": 0.7e-3, "cell_r1_ohm": 0.35e-3, "cell_tau1_s": 15.0,
    "cell_r2_ohm": 0.4e-3, "cell_tau2_s": 400.0, "coulombic_efficiency": 0.998,
    "cell_v_max": 4.15, "cell_v_min": 3.00, "cell_v_trip_high": 4.25, "cell_v_trip_low": 2.70,
    "c_rate_max_discharge": 0.55, "c_rate_max_charge": 0.55, "c_rate_trip": 0.8,
    "soc_min": 0.05, "soc_max": 0.95, "soc_taper": 0.05,
    "pcs_rated_w": 1.28e6, "pcs_loss_l0": 0.003, "pcs_loss_l1": 0.005, "pcs_loss_l2": 0.008,
    "t_derate_c": 40.0, "t_trip_high_c": 50.0, "t_min_charge_c": 0.0, "t_trip_low_c": -20.0,
    "heat_capacity_j_per_k": 1.8e7, "conductance_ambient_w_per_k": 120.0,
    "conductance_neighbour_w_per_k": 150.0,
    "hvac_cooling_w": 50e3, "hvac_heating_w": 15e3, "hvac_cool_setpoint_c": 25.0,
    "hvac_heat_setpoint_c": 15.0, "hvac_gain_w_per_k": 10e3, "hvac_cop_cooling": 3.0,
    "hvac_cop_heating": 2.5, "hvac_base_w": 1500.0,
    "runaway_onset_c": 100.0, "runaway_critical_c": 150.0, "runaway_onset_w": 2e3,
    "runaway_activation_k": 15000.0, "runaway_energy_factor": 2.5, "runaway_tau_s": 900.0,
    "aging_model": "nmc111_gr_kokam_75ah",
    "sensor_noise_v": 0.5, "sensor_noise_c": 0.1, "sensor_noise_a": 0.5, "sensor_noise_soc": 0.002,
}

PRESETS = MappingProxyType({
    "lfp-3.7mwh-20ft": MappingProxyType(_LFP_280AH_CONTAINER),
    "nmc-2.6mwh-20ft": MappingProxyType(_NMC_94AH_CONTAINER),
})


def preset(name: str) -> dict:
    """A copy of preset ``name``; an unknown name raises ``ValueError`` listing the known ones."""
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}") from None
