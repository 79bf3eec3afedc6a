"""Sanity check of tests/data/pybamm_thevenin.json against a fixed-step model.

Run in the project's own interpreter (numpy only, no PyBaMM):

    python3 tests/reference/check_fixed_step.py [--json PATH] [--dt 0.1]
        [--heat pybamm|dissipated|start]

It re-simulates every case of the PyBaMM reference with the update the engine
is meant to use: fixed step dt (0.1 s), zero-order hold of the current over the
step, exact exponential update of each RC pair and of the thermal node:

    I_k       current held over [t_k, t_k + dt):
                current / pulse: the protocol value at t_k (right-continuous)
                power: I_k = (E - sqrt(E^2 - 4 R0 P)) / (2 R0),
                       E = OCV(soc_k) - sum_j v_j,k   (state at the step start)
    a_j       = exp(-dt / tau_j),  tau_j = R_j C_j
    vbar_j    = I_k R_j + (v_j,k - I_k R_j) * (tau_j / dt) * (1 - a_j)
                (exact mean of v_j over the step)
    v_j,k+1   = v_j,k * a_j + I_k R_j (1 - a_j)
    soc_k+1   = soc_k - I_k dt / (3600 Q_Ah)
    Q_k       = I_k * (I_k R0 + sum_j vbar_j)       (PyBaMM's heat term, W)
    b         = exp(-dt G / C_th)
    T_k+1     = T_amb + Q_k / G + (T_k - T_amb - Q_k / G) * b
    V_k       = OCV(soc_k) - sum_j v_j,k - I_k R0   (OCV: np.interp, linear)

Voltage samples are compared with the reference's right-limit convention (V at
t_k uses I_k); for the pulse cases the left limits stored in the JSON are
compared too (V at t_k with I_{k-1}).

--heat dissipated uses Q = I^2 R0 + sum_j vbar_j^2 / R_j (Joule heat actually
dissipated in the resistors) and --heat start uses Q = I (I R0 + sum_j v_j,k)
with the start-of-step RC voltages; both are there to show how far the
temperature moves if the engine does not follow PyBaMM's convention.

Exits 1 if any case exceeds 1 mV or 0.05 K (the engine's tolerances).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_JSON = REPO / "tests" / "data" / "pybamm_thevenin.json"
TOL_V, TOL_K = 1e-3, 0.05


def pulse_current_per_step(protocol: dict, dt: float):
    """Return f(k) -> current of the segment containing t = k * dt (right-continuous)."""
    seg = protocol["segments"]
    starts = []
    for s in seg:
        ks = s["t_start_s"] / dt
        assert abs(ks - round(ks)) < 1e-9, "segment boundaries must lie on the dt grid"
        starts.append(round(ks))
    starts = np.array(starts)
    currents = np.array([s["current_a"] for s in seg], dtype=float)

    def f(k: int) -> float:
        i = int(np.searchsorted(starts, k, side="right")) - 1
        return float(currents[i])

    return f


def simulate(case: dict, dt: float, heat: str) -> dict:
    p, proto = case["params"], case["protocol"]
    n = case["rc_pairs"]
    R = np.array([p["r1_ohm"]] + ([p["r2_ohm"]] if n == 2 else []))
    C = np.array([p["c1_f"]] + ([p["c2_f"]] if n == 2 else []))
    tau = R * C
    a = np.exp(-dt / tau)
    mean_f = tau / dt * (1.0 - a)
    R0, Qah = p["r0_ohm"], p["capacity_ah"]
    G, Cth, Ta = p["conductance_w_per_k"], p["heat_capacity_j_per_k"], p["ambient_c"]
    b = math.exp(-dt * G / Cth)
    sg, vg = np.array(p["ocv_soc"], dtype=float), np.array(p["ocv_v"], dtype=float)

    steps_per_s = round(1.0 / dt)
    assert abs(steps_per_s * dt - 1.0) < 1e-12, "dt must divide 1 s"
    n_steps = round(proto["duration_s"] / dt)
    pulse_i = pulse_current_per_step(proto, dt) if proto["kind"] == "pulse" else None

    soc, v, T = float(p["initial_soc"]), np.array(p["initial_v_rc_v"], dtype=float), Ta
    out_t, out_v, out_i, out_soc, out_T = [], [], [], [], []
    left = {}
    I_prev = 0.0
    for k in range(n_steps + 1):
        ocv = float(np.interp(soc, sg, vg))
        if proto["kind"] == "current":
            I = float(proto["current_a"])
        elif proto["kind"] == "power":
            E = ocv - v.sum()
            P = float(proto["power_w"])
            I = (E - math.sqrt(E * E - 4.0 * R0 * P)) / (2.0 * R0)
        else:
            I = pulse_i(k) if k < n_steps else I_prev
        if k % steps_per_s == 0:
            out_t.append(k // steps_per_s)
            out_v.append(ocv - v.sum() - I * R0)
            out_i.append(I)
            out_soc.append(soc)
            out_T.append(T)
            if k > 0:
                left[k // steps_per_s] = (ocv - v.sum() - I_prev * R0, I_prev)
        if k == n_steps:
            break
        # --- one zero-order-hold step ---------------------------------------
        vss = I * R
        vbar = vss + (v - vss) * mean_f
        if heat == "pybamm":
            q = I * (I * R0 + vbar.sum())
        elif heat == "dissipated":
            q = I * I * R0 + float((vbar**2 / R).sum())
        elif heat == "start":
            q = I * (I * R0 + v.sum())
        else:
            raise ValueError(heat)
        v = v * a + vss * (1.0 - a)
        soc = soc - I * dt / (3600.0 * Qah)
        T = Ta + q / G + (T - Ta - q / G) * b
        I_prev = I
    return {
        "t": np.array(out_t),
        "V": np.array(out_v),
        "I": np.array(out_i),
        "soc": np.array(out_soc),
        "T": np.array(out_T),
        "left": left,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="fixed-step check of the PyBaMM reference")
    ap.add_argument("--json", type=Path, default=DEFAULT_JSON)
    ap.add_argument("--dt", type=float, default=0.1)
    ap.add_argument("--heat", choices=["pybamm", "dissipated", "start"], default="pybamm")
    args = ap.parse_args(argv)

    data = json.loads(args.json.read_text())
    ok = True
    print(f"dt = {args.dt} s, heat = {args.heat}")
    print(f"{'case':26s} {'max|dV| mV':>11s} {'max|dT| K':>10s} {'max|dSoC|':>10s} "
          f"{'max|dI| A':>10s} {'left |dV| mV':>12s}")
    for name, case in data["cases"].items():
        r = simulate(case, args.dt, args.heat)
        t_ref = np.array(case["t_s"])
        assert np.array_equal(t_ref, r["t"]), name
        dv = np.max(np.abs(r["V"] - np.array(case["voltage_v"])))
        dT = np.max(np.abs(r["T"] - np.array(case["temp_c"])))
        dsoc = np.max(np.abs(r["soc"] - np.array(case["soc"])))
        di = np.max(np.abs(r["I"] - np.array(case["current_a"])))
        dv_left = float("nan")
        if "left_limits_at_step_boundaries" in case:
            ll = case["left_limits_at_step_boundaries"]
            dv_left = max(
                abs(r["left"][t][0] - vref) for t, vref in zip(ll["t_s"], ll["voltage_v"])
            )
            assert all(
                abs(r["left"][t][1] - iref) < 1e-9 for t, iref in zip(ll["t_s"], ll["current_a"])
            ), name
            dv = max(dv, dv_left)
        passed = dv < TOL_V and dT < TOL_K
        ok &= passed
        print(f"{name:26s} {dv * 1e3:11.6f} {dT:10.2e} {dsoc:10.2e} {di:10.2e} "
              f"{dv_left * 1e3:12.6f} {'ok' if passed else 'FAIL'}")
    print("all within 1 mV / 0.05 K" if ok else "TOLERANCE EXCEEDED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
