"""Thermal model of one unit: lumped mass, ambient exchange, HVAC, neighbours and runaway.

    C dT/dt = Q_gen + Q_rw - G_amb (T - T_amb) + G_nb sum_j (T_j - T) - Q_hvac          [1]

HVAC is a proportional controller with capacity limits: cooling ``K (T - T_cool)`` up to
``Q_cool_max``, heating ``K (T_heat - T)`` up to ``Q_heat_max``; its electric draw is the thermal
power divided by the coefficient of performance plus a base load for fans and controls.
Within a step the heat sources and the neighbours' temperatures (from the published snapshot) are
held, and the linear part is integrated exactly:

    T(t+dt) = T_eq + (T - T_eq) exp(-dt G / C),  T_eq = (Q + G_amb T_amb + G_nb sum T_j + K T_set) / G

with ``G = G_amb + n_nb G_nb (+ K while the HVAC is in its proportional band)``: unconditionally
stable for any dt. Self-heating above the onset temperature follows an Arrhenius law [2]

    Q_rw = Q_onset exp(Ea/R (1/T_onset - 1/T))

and past the critical temperature the unit is in thermal runaway: it releases ``E_rw`` with time
constant ``tau_rw`` (``Q = (E_rw - released) / tau_rw``), irreversibly, and its neighbours heat up
through ``G_nb``.

References
----------
[1] D. Bernardi, E. Pawlikowski, J. Newman, "A general energy balance for battery systems",
    J. Electrochem. Soc. 132 (1985) 5-12 (lumped form, reversible heat neglected).
[2] G.-H. Kim, A. Pesaran, R. Spotnitz, "A three-dimensional thermal abuse model for lithium-ion
    cells", J. Power Sources 170 (2007) 476-489 (Arrhenius self-heating).
"""

import math

from numba import njit

from .layout import (K_HVAC_BASE_W, K_HVAC_COOL_W, K_HVAC_GAIN, K_HVAC_HEAT_W, K_HVAC_T_COOL,
                     K_HVAC_T_HEAT, K_INV_COP_COOL, K_INV_COP_HEAT, K_RW_EA_K, K_RW_ONSET_C,
                     K_RW_ONSET_W, K_TH, TH_SLOTS)


def thermal_factors(c_th, g_amb, g_nb, gain, dt):
    """Per neighbour count 0, 1, 2: (om, av, 1/G) with the HVAC off, then in its proportional
    band; ``om = 1 - exp(-dt G / C)``, ``av = om C / (G dt)`` (18 values)."""
    out = []
    for n_nb in range(3):
        for k in (0.0, gain):
            g = g_amb + n_nb * g_nb + k
            tau = c_th / g
            om = -math.expm1(-dt / tau)
            out += [om, om * tau / dt, 1.0 / g]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def self_heating_w(kp, k, temp_c):
    """Arrhenius self-heating power [W] above the onset temperature, 0 below it."""
    onset = kp[k, K_RW_ONSET_C]
    if temp_c <= onset:
        return 0.0
    ea = kp[k, K_RW_EA_K]
    return kp[k, K_RW_ONSET_W] * math.exp(ea * (1.0 / (onset + 273.15) - 1.0 / (temp_c + 273.15)))


# HVAC regimes, one bit each (so that the regimes of a run of units can be OR-ed together)
RG_FAILED, RG_SAT_COOL, RG_PROP_COOL, RG_SAT_HEAT, RG_PROP_HEAT, RG_OFF = 1, 2, 4, 8, 16, 32


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def hvac_regime(temp_c, hvac_ok, gain, t_cool, t_heat, q_cool, q_heat):
    """The HVAC's regime at ``temp_c`` [C] as an ``RG_*`` bit: cooling above ``t_cool``, heating
    below ``t_heat``, each saturated once the proportional demand ``gain * |T - T_set|`` reaches
    its capacity (``q_cool``, ``q_heat`` [W]); off in between, or failed. Written as selects, so a
    loop computing it for many units vectorizes."""
    cool = temp_c > t_cool
    heat = temp_c < t_heat
    rc = RG_SAT_COOL if gain * (temp_c - t_cool) >= q_cool else RG_PROP_COOL
    rh = RG_SAT_HEAT if gain * (t_heat - temp_c) >= q_heat else RG_PROP_HEAT
    r = rc if cool else (rh if heat else RG_OFF)
    return r if hvac_ok else RG_FAILED


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def regime_setpoints(kp, k, regime):
    """What a regime holds over the step: ``(prop, t_set, q_sink)``; proportional control towards
    ``t_set`` [C], or a constant heat removal ``q_sink`` [W] (negative = heating; 0 when off or
    failed)."""
    prop = (regime == RG_PROP_COOL) | (regime == RG_PROP_HEAT)
    t_set = (kp[k, K_HVAC_T_COOL] if regime == RG_PROP_COOL else
             kp[k, K_HVAC_T_HEAT] if regime == RG_PROP_HEAT else 0.0)
    q_sink = (kp[k, K_HVAC_COOL_W] if regime == RG_SAT_COOL else
              -kp[k, K_HVAC_HEAT_W] if regime == RG_SAT_HEAT else 0.0)
    return prop, t_set, q_sink


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def hvac_exact(temp_c, base_w, prop, t_set, q_sink, one_m_om, av, g_inv, gain, inv_cop_cool,
               inv_cop_heat, base_el_w):
    """The exact update over one step in a regime (see :func:`regime_setpoints`), with the
    factors of the unit's neighbour count and regime (``1 - om``, ``av``, ``1/G``, see
    :func:`thermal_factors`): (temperature at the end [C], average HVAC electric draw [W])."""
    t_eq = (base_w + (gain * t_set if prop else -q_sink)) * g_inv
    d = temp_c - t_eq
    t_new = t_eq + d * one_m_om
    q_hvac = gain * (t_eq + d * av - t_set) if prop else q_sink   # > 0 cooling
    p_el = q_hvac * inv_cop_cool if q_hvac >= 0.0 else -q_hvac * inv_cop_heat
    return t_new, p_el + base_el_w


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def thermal_update(kp, k, temp_c, base_w, n_nb, hvac_ok):
    """Advance the lumped temperature over one step.

    Parameters
    ----------
    temp_c : temperature at the start of the step [C]
    base_w : ``Q + G_amb T_amb + G_nb sum T_j`` held over the step [W]
    n_nb : number of coupled neighbours (0, 1, 2)
    hvac_ok : False when the HVAC has failed

    Returns
    -------
    (temperature at the end [C], average HVAC electric draw [W])
    """
    gain = kp[k, K_HVAC_GAIN]
    regime = hvac_regime(temp_c, hvac_ok, gain, kp[k, K_HVAC_T_COOL], kp[k, K_HVAC_T_HEAT],
                         kp[k, K_HVAC_COOL_W], kp[k, K_HVAC_HEAT_W])
    prop, t_set, q_sink = regime_setpoints(kp, k, regime)
    slot = K_TH + TH_SLOTS * n_nb + (3 if prop else 0)
    t_new, p_el = hvac_exact(temp_c, base_w, prop, t_set, q_sink, 1.0 - kp[k, slot],
                             kp[k, slot + 1], kp[k, slot + 2], gain, kp[k, K_INV_COP_COOL],
                             kp[k, K_INV_COP_HEAT], kp[k, K_HVAC_BASE_W])
    return t_new, (p_el if hvac_ok else 0.0)
