"""Electrical model of one unit: PCS losses and the Thevenin equivalent circuit.

Equations (pack level; cell values scaled by ``n_series / n_parallel`` for resistances and
``n_parallel`` for capacity when the farm is built):

    v_term = n_s * OCV(soc) - v_rc1 - v_rc2 - i * r0                        [1]
    dv_k/dt = -v_k / (r_k c_k) + i / c_k,  exact for a current held over dt:
    v_k(t+dt) = i r_k + (v_k - i r_k) exp(-dt / tau_k)                        [1]
    P_dc = i * (E - i r0),  E = n_s OCV - v_rc1 - v_rc2
        => i = (E - sqrt(E^2 - 4 r0 P_dc)) / (2 r0)   (the root on the stable branch)
    PCS loss = P_rated * (l0 + l1 x + l2 x^2),  x = |P_ac| / P_rated,  P_dc = P_ac + loss  [2]

Sign convention: current and power are positive when the battery discharges.

References
----------
[1] G. L. Plett, Battery Management Systems, Vol. 1, Artech House, 2015, sec. 2.7-2.10.
[2] H. Schmidt, D. U. Sauer, "Wechselrichter-Wirkungsgrade", Sonnenenergie 4 (1996) 43-47
    (the three-coefficient inverter loss model, also used by pvlib's ``pvwatts_inverter``).
"""

import math

from numba import njit


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def pcs_loss_w(p_ac_w, p_rated_w, inv_p_rated, l0, l1, l2):
    """PCS conversion loss [W] at AC power ``p_ac_w`` [W]; zero when the PCS carries no power."""
    x = abs(p_ac_w) * inv_p_rated
    return p_rated_w * (l0 + x * (l1 + x * l2)) if p_ac_w != 0.0 else 0.0


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def current_for_power(p_dc_w, e_v, r_ohm):
    """Battery current [A] that delivers DC power ``p_dc_w`` [W] behind source voltage ``e_v`` [V]
    and resistance ``r_ohm`` [ohm].

    Solves ``P = i (E - i r)`` on the stable branch, written as ``2 P / (E + sqrt(E^2 - 4 r P))``
    (no cancellation at small P). Past the maximum-power point ``E^2 / (4 r)`` the current of that
    point is returned (the current and voltage limits clamp far earlier).
    """
    disc = e_v * e_v - 4.0 * r_ohm * p_dc_w
    c = 2.0 * p_dc_w / (e_v + math.sqrt(max(disc, 0.0)))
    return c if disc >= 0.0 else e_v / (2.0 * r_ohm)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def rc_update(v_v, i_a, r_ohm, om, av):
    """Exact RC update for a current held over the step.

    Parameters
    ----------
    v_v : voltage over the pair at the start of the step [V]
    i_a : current over the step [A]
    r_ohm : resistance of the pair [ohm]
    om : ``1 - exp(-dt/tau)`` [-]
    av : ``om * tau / dt`` [-], so that the step average is ``v_inf + (v - v_inf) * av``

    Returns
    -------
    (voltage at the end of the step [V], average voltage over the step [V])
    """
    v_inf = i_a * r_ohm
    d = v_v - v_inf
    return v_inf + d * (1.0 - om), v_inf + d * av
