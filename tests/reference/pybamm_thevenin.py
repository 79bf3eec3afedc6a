"""PyBaMM reference traces for the Thevenin (1-RC and 2-RC) cell model.

Writes tests/data/pybamm_thevenin.json, which the engine tests compare
against (engine tolerance: 1 mV terminal voltage, 0.05 K cell temperature).

How to run (PyBaMM lives in its own venv, outside the repo; it is NOT a
dependency of bess-farm):

    python3 -m venv /opt/pybamm-venv
    /opt/pybamm-venv/bin/pip install pybamm          # generated with 26.10.1.1
    cd /work/main   # repository root
    PYBAMM_DISABLE_TELEMETRY=true /opt/pybamm-venv/bin/python \
        tests/reference/pybamm_thevenin.py [--out PATH]

It takes a few seconds. After regenerating, run the numpy-only sanity check in
the main interpreter:  python3 tests/reference/check_fixed_step.py

Model pinned down (pybamm.equivalent_circuit.Thevenin, parameters built on top
of the "ECM_Example" set, every value overridden below)
--------------------------------------------------------------------------------
Sign convention: current I > 0 is DISCHARGE. V_j below is the voltage across
RC pair j, positive during discharge (PyBaMM's state "Element-j overpotential
[V]" is eta_j = -V_j).

    dSoC/dt  = -I / (3600 * Q_Ah)                       (coulombic efficiency 1)
    dV_j/dt  = -V_j / (R_j C_j) + I / C_j               j = 1..n_rc
    V        = OCV(SoC) - sum_j V_j - I * R0
    dT/dt    = (Q_heat - G * (T - T_amb)) / C_th
    Q_heat   = I^2 * R0 + I * sum_j V_j  ( = I * (OCV(SoC) - V) )

R0, R_j, C_j are constants; OCV(SoC) is the piecewise-LINEAR interpolant of the
21-point table below (pybamm.Interpolant, interpolator="linear"); SoC stays
inside [0, 1] in all cases.

Where Q_heat comes from (PyBaMM source, models/submodels/
equivalent_circuit_elements): ResistorElement gives I^2 R0, each RCElement
gives -I * eta_j = I * V_j, the (unused) diffusion element gives 0, and
OCVElement gives the reversible heat -I * (T + 273.15) * dU/dT, which is 0
here because "Entropic change [V/K]" = 0. So the energy flowing into the RC
branches is counted as heat at the moment it enters the capacitor's branch,
not when it is dissipated in R_j; the fixed-step engine must use the same term.

One thermal node: PyBaMM's ThermalSubModel has two nodes,
    dT/dt     = (Q_heat - k_cj * (T - T_jig)) / C_cell
    dT_jig/dt = (k_cj * (T - T_jig) - k_ja * (T_jig - T_amb)) / C_jig
with T(0) = T_jig(0) = "Initial temperature [K]" - 273.15. Setting
"Jig thermal mass [J/K]" = 1e20 freezes T_jig at its initial value, which is
set equal to the ambient temperature (25 C); the script asserts that T_jig
does not move. The remaining equation is the one-node ODE above with
G = "Cell-jig heat transfer coefficient [W/K]" and C_th = "Cell thermal mass
[J/K]".

Constant power (kind "power"): PyBaMM's "power" operating mode adds the
algebraic equation I * V = P (P > 0 discharge), i.e.
    I = (E - sqrt(E^2 - 4 R0 P)) / (2 R0),   E = OCV(SoC) - sum_j V_j.

Pulse train (kind "pulse"): the current is piecewise constant with all step
boundaries on whole seconds (hence on the 0.1 s grid of a fixed-step
simulator). Each constant segment is integrated on its own (Simulation.step
with the current as an input parameter), so the solver never steps across a
discontinuity. At a step boundary the sample (t, V, I) is the RIGHT limit:
current_a[k] is the current of the segment starting at t_s[k] and voltage_v[k]
is computed with it. The LEFT limits (current of the segment ending there) are
stored per case under "left_limits_at_step_boundaries". The same right-limit
convention holds at t = 0 for every case (the cell rests before t = 0, so
V(0-) = OCV(SoC0)).

Solver: IDAKLUSolver, rtol = 1e-10, atol = 1e-12, outputs interpolated at the
1 s grid with IDAKLU's solver-order Hermite interpolant. The script repeats
every case at rtol = 1e-11 / atol = 1e-13 and with an independent SciPy DOP853
integration of the ODEs above (rtol = 1e-12), and records the maximum
differences in generator.self_check; they must stay far below 1e-6 V and
1e-5 K or the script fails.

Output: JSON, samples every 1.0 s; t_s [s], voltage_v [V] (rounded to 1e-7),
current_a [A] (1e-6), soc [-] (1e-9), temp_c [C] (1e-6).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import warnings
from pathlib import Path

os.environ.setdefault("PYBAMM_DISABLE_TELEMETRY", "true")

import numpy as np  # noqa: E402
import pybamm  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "tests" / "data" / "pybamm_thevenin.json"

RTOL, ATOL = 1e-10, 1e-12
RTOL_CHECK, ATOL_CHECK = 1e-11, 1e-13
JIG_THERMAL_MASS = 1e20  # J/K: freezes the jig node at ambient

# LFP-like open-circuit voltage table (piecewise linear in SoC).
OCV_SOC = [round(0.05 * i, 2) for i in range(21)]
OCV_V = [
    2.800, 3.150, 3.205, 3.230, 3.250, 3.262, 3.272, 3.280, 3.287, 3.293, 3.298,
    3.303, 3.308, 3.315, 3.323, 3.330, 3.335, 3.340, 3.348, 3.370, 3.500,
]

CAPACITY_AH = 280.0
R0_OHM = 0.25e-3
R1_OHM, C1_F = 0.20e-3, 1.0e5  # tau1 = R1*C1 = 20 s
R2_OHM, C2_F = 0.30e-3, 2.0e6  # tau2 = R2*C2 = 600 s
TAU1_S = R1_OHM * C1_F  # informational; PyBaMM uses R and C
TAU2_S = R2_OHM * C2_F
HEAT_CAPACITY_J_PER_K = 5.5 * 1000.0  # 5.5 kg * 1000 J/kg/K
CONDUCTANCE_W_PER_K = 2.0
AMBIENT_C = 25.0
V_MAX, V_MIN = 4.0, 2.0  # cut-offs far outside every trace (no event fires)


def make_params(n_rc: int, initial_soc: float) -> dict:
    p = {
        "rc_pairs": n_rc,
        "capacity_ah": CAPACITY_AH,
        "r0_ohm": R0_OHM,
        "r1_ohm": R1_OHM,
        "c1_f": C1_F,
        "tau1_s": TAU1_S,
    }
    if n_rc == 2:
        p.update({"r2_ohm": R2_OHM, "c2_f": C2_F, "tau2_s": TAU2_S})
    p.update(
        {
            "heat_capacity_j_per_k": HEAT_CAPACITY_J_PER_K,
            "conductance_w_per_k": CONDUCTANCE_W_PER_K,
            "ambient_c": AMBIENT_C,
            "initial_temp_c": AMBIENT_C,
            "initial_soc": initial_soc,
            "initial_v_rc_v": [0.0] * n_rc,
            "coulombic_efficiency": 1.0,
            "entropic_coefficient_v_per_k": 0.0,
            "ocv_interpolation": "linear",
            "ocv_soc": OCV_SOC,
            "ocv_v": OCV_V,
        }
    )
    return p


def pybamm_parameter_values(p: dict, current=None, power=None) -> pybamm.ParameterValues:
    soc_grid = np.array(p["ocv_soc"], dtype=float)
    ocv_grid = np.array(p["ocv_v"], dtype=float)

    def ocv(soc):
        return pybamm.Interpolant(soc_grid, ocv_grid, soc, interpolator="linear")

    t_k = p["ambient_c"] + 273.15
    pv = pybamm.ParameterValues("ECM_Example")
    pv.update(
        {
            "Cell capacity [A.h]": p["capacity_ah"],
            "Nominal cell capacity [A.h]": p["capacity_ah"],
            "Initial SoC": p["initial_soc"],
            "Initial temperature [K]": t_k,
            "Ambient temperature [K]": t_k,
            "Upper voltage cut-off [V]": V_MAX,
            "Lower voltage cut-off [V]": V_MIN,
            "Cell thermal mass [J/K]": p["heat_capacity_j_per_k"],
            "Cell-jig heat transfer coefficient [W/K]": p["conductance_w_per_k"],
            "Jig thermal mass [J/K]": JIG_THERMAL_MASS,
            "Jig-air heat transfer coefficient [W/K]": p["conductance_w_per_k"],
            "Open-circuit voltage [V]": ocv,
            "Entropic change [V/K]": 0.0,
            "R0 [Ohm]": p["r0_ohm"],
            "R1 [Ohm]": p["r1_ohm"],
            "C1 [F]": p["c1_f"],
            "Element-1 initial overpotential [V]": 0.0,
        }
    )
    extra = {}
    if p["rc_pairs"] == 2:
        extra.update(
            {
                "R2 [Ohm]": p["r2_ohm"],
                "C2 [F]": p["c2_f"],
                "Element-2 initial overpotential [V]": 0.0,
            }
        )
    if power is not None:
        extra["Power function [W]"] = power
    if current is not None:
        extra["Current function [A]"] = current
    pv.update(extra, check_already_exists=False)
    return pv


def build_sim(p: dict, mode: str, rtol: float, atol: float, current=None, power=None):
    model = pybamm.equivalent_circuit.Thevenin(
        options={"number of rc elements": p["rc_pairs"], "operating mode": mode}
    )
    pv = pybamm_parameter_values(p, current=current, power=power)
    solver = pybamm.IDAKLUSolver(rtol=rtol, atol=atol)
    return pybamm.Simulation(model, parameter_values=pv, solver=solver)


def _extract(sol, t, n_rc):
    out = {
        "t": np.asarray(t, dtype=float),
        "V": sol["Voltage [V]"](t),
        "I": sol["Current [A]"](t),
        "soc": sol["SoC"](t),
        "T": sol["Cell temperature [degC]"](t),
        "Tjig": sol["Jig temperature [degC]"](t),
    }
    # PyBaMM's RC state is the overpotential eta_j = -V_j.
    out["vrc"] = [-sol[f"Element-{j} overpotential [V]"](t) for j in range(1, n_rc + 1)]
    return out


def run_constant(p: dict, protocol: dict, rtol: float, atol: float) -> dict:
    tf = float(protocol["duration_s"])
    t = np.arange(0.0, tf + 0.5, 1.0)
    if protocol["kind"] == "current":
        sim = build_sim(p, "current", rtol, atol, current=protocol["current_a"])
    else:
        sim = build_sim(p, "power", rtol, atol, power=protocol["power_w"])
    sol = sim.solve(t_eval=[0.0, tf], t_interp=t)
    if sol.termination != "final time":
        raise RuntimeError(f"solve stopped early: {sol.termination}")
    return _extract(sol, t, p["rc_pairs"])


def pulse_segments(protocol: dict) -> list[tuple[float, float, float]]:
    segs, t0 = [], 0.0
    for _ in range(protocol["repeat"]):
        for step in protocol["period"]:
            t1 = t0 + step["duration_s"]
            segs.append((t0, t1, float(step["current_a"])))
            t0 = t1
    return segs


def run_pulse(p: dict, protocol: dict, rtol: float, atol: float) -> dict:
    sim = build_sim(p, "current", rtol, atol, current="[input]")
    segs = pulse_segments(protocol)
    parts = {k: [] for k in ("t", "V", "I", "soc", "T", "Tjig")}
    parts["vrc"] = [[] for _ in range(p["rc_pairs"])]
    left = {"t_s": [], "voltage_v": [], "current_a": []}
    sol = None
    for k, (t0, t1, cur) in enumerate(segs):
        dur = t1 - t0
        assert dur == int(dur), "segments must be whole seconds"
        rel = np.arange(0.0, dur + 0.5, 1.0)
        sol = sim.step(
            dt=dur,
            t_eval=rel,
            inputs={"Current function [A]": cur},
            starting_solution=sol,
            save=False,
        )
        if sol.termination != "final time":
            raise RuntimeError(f"segment {k} stopped early: {sol.termination}")
        t_abs = np.array([np.nextafter(t0, np.inf) if t0 > 0 else t0] + list(t0 + rel[1:]))
        # Only keep points strictly within this segment's time range.
        d = _extract(sol, t_abs, p["rc_pairs"])
        last = k == len(segs) - 1
        n_keep = len(rel) if last else len(rel) - 1
        for key in ("V", "I", "soc", "T", "Tjig"):
            parts[key].append(d[key][:n_keep])
        parts["t"].append(t0 + rel[:n_keep])
        for j in range(p["rc_pairs"]):
            parts["vrc"][j].append(d["vrc"][j][:n_keep])
        if not last:
            left["t_s"].append(t1)
            left["voltage_v"].append(float(d["V"][-1]))
            left["current_a"].append(float(d["I"][-1]))
    out = {key: np.concatenate(v) for key, v in parts.items() if key != "vrc"}
    out["vrc"] = [np.concatenate(v) for v in parts["vrc"]]
    out["left"] = left
    return out


# ---------------------------------------------------------------------------
# Independent check: integrate the ODEs stated in the docstring with SciPy.
# ---------------------------------------------------------------------------
def scipy_reference(p: dict, protocol: dict) -> dict:
    n = p["rc_pairs"]
    R = [p["r1_ohm"]] + ([p["r2_ohm"]] if n == 2 else [])
    C = [p["c1_f"]] + ([p["c2_f"]] if n == 2 else [])
    R0, Q = p["r0_ohm"], p["capacity_ah"]
    G, Cth, Ta = p["conductance_w_per_k"], p["heat_capacity_j_per_k"], p["ambient_c"]
    sg, vg = np.array(p["ocv_soc"]), np.array(p["ocv_v"])

    def current(y, seg_current):
        if protocol["kind"] == "power":
            E = np.interp(y[0], sg, vg) - sum(y[1 : 1 + n])
            P = protocol["power_w"]
            return (E - np.sqrt(E * E - 4.0 * R0 * P)) / (2.0 * R0)
        return seg_current

    def rhs(_t, y, seg_current):
        soc, vrc, T = y[0], y[1 : 1 + n], y[1 + n]
        I = current(y, seg_current)
        dv = [-vrc[j] / (R[j] * C[j]) + I / C[j] for j in range(n)]
        qheat = I * I * R0 + I * sum(vrc)
        return [-I / (3600.0 * Q), *dv, (qheat - G * (T - Ta)) / Cth]

    if protocol["kind"] == "pulse":
        segs = pulse_segments(protocol)
    else:
        cur = protocol.get("current_a", 0.0)
        segs = [(0.0, float(protocol["duration_s"]), cur)]
    y = np.array([p["initial_soc"]] + [0.0] * n + [Ta])
    ts, ys, Is = [], [], []
    for k, (t0, t1, cur) in enumerate(segs):
        last = k == len(segs) - 1
        te = np.arange(t0, t1 + 0.5, 1.0)
        if not last:
            te = te[:-1]
        # OCV is only piecewise linear: a high-order explicit method loses order
        # at the kinks but keeps the error below rtol with these step sizes.
        s = solve_ivp(
            rhs, (t0, t1), y, method="DOP853", t_eval=te, args=(cur,),
            rtol=1e-12, atol=1e-14, max_step=5.0,
        )
        ts.append(s.t)
        ys.append(s.y)
        Is.append([current(s.y[:, i], cur) for i in range(s.y.shape[1])])
        y = s.y[:, -1] if last else solve_ivp(
            rhs, (t0, t1), y, method="DOP853", args=(cur,), rtol=1e-12, atol=1e-14,
            max_step=5.0,
        ).y[:, -1]
    Y = np.concatenate(ys, axis=1)
    I = np.concatenate(Is)
    soc, vrc, T = Y[0], Y[1 : 1 + n], Y[1 + n]
    V = np.interp(soc, sg, vg) - vrc.sum(axis=0) - I * R0
    return {"t": np.concatenate(ts), "V": V, "I": I, "soc": soc, "T": T}


def case_definitions() -> dict:
    pulse = {
        "kind": "pulse",
        "description": (
            "Repeat `repeat` times: 2C discharge 10 s, rest 20 s, 1C charge 10 s, "
            "rest 20 s. Piecewise-constant current, right-continuous: I(t) is the "
            "current of the segment with t_start_s <= t < t_end_s."
        ),
        "period": [
            {"duration_s": 10, "current_a": 2.0 * CAPACITY_AH},
            {"duration_s": 20, "current_a": 0.0},
            {"duration_s": 10, "current_a": -1.0 * CAPACITY_AH},
            {"duration_s": 20, "current_a": 0.0},
        ],
        "period_s": 60,
        "repeat": 20,
        "duration_s": 1200,
    }
    cases = {}
    for n in (1, 2):
        cases[f"cc_discharge_1c_{n}rc"] = (
            make_params(n, 0.95),
            {
                "kind": "current",
                "description": "Constant-current 1C discharge (I > 0 discharges)",
                "current_a": CAPACITY_AH,
                "duration_s": 2700,
            },
        )
        cases[f"cp_discharge_700w_{n}rc"] = (
            make_params(n, 0.95),
            {
                "kind": "power",
                "description": (
                    "Constant cell power P = I*V = power_w (P > 0 discharges); "
                    "PyBaMM 'power' operating mode, I solved algebraically"
                ),
                "power_w": 700.0,
                "duration_s": 2400,
            },
        )
        cases[f"pulse_train_{n}rc"] = (make_params(n, 0.60), dict(pulse))
    return cases


def _maxabs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def run_case(p: dict, protocol: dict, rtol: float, atol: float) -> dict:
    if protocol["kind"] == "pulse":
        return run_pulse(p, protocol, rtol, atol)
    return run_constant(p, protocol, rtol, atol)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    doc = __doc__
    eq_start = doc.index("Sign convention:")
    eq_end = doc.index("Output: JSON")
    equations = doc[eq_start:eq_end].strip()

    cases_out, self_check = {}, {}
    for name, (p, protocol) in case_definitions().items():
        r = run_case(p, protocol, RTOL, ATOL)
        if np.max(np.abs(r["Tjig"] - p["ambient_c"])) > 1e-12:
            raise RuntimeError(f"{name}: jig temperature moved; one-node assumption broken")
        soc_min, soc_max = float(r["soc"].min()), float(r["soc"].max())
        if not (OCV_SOC[0] < soc_min and soc_max < OCV_SOC[-1]):
            raise RuntimeError(f"{name}: SoC left the OCV table")
        if not (V_MIN < r["V"].min() and r["V"].max() < V_MAX):
            raise RuntimeError(f"{name}: voltage reached a cut-off")

        r_tight = run_case(p, protocol, RTOL_CHECK, ATOL_CHECK)
        r_sp = scipy_reference(p, protocol)
        assert np.array_equal(r_sp["t"], r["t"])
        chk = {
            "max_abs_dv_vs_tighter_tol_v": _maxabs(r["V"], r_tight["V"]),
            "max_abs_dt_vs_tighter_tol_k": _maxabs(r["T"], r_tight["T"]),
            "max_abs_dv_vs_scipy_dop853_v": _maxabs(r["V"], r_sp["V"]),
            "max_abs_dt_vs_scipy_dop853_k": _maxabs(r["T"], r_sp["T"]),
            "max_abs_dsoc_vs_scipy_dop853": _maxabs(r["soc"], r_sp["soc"]),
            "max_abs_di_vs_scipy_dop853_a": _maxabs(r["I"], r_sp["I"]),
        }
        self_check[name] = chk
        if chk["max_abs_dv_vs_scipy_dop853_v"] > 1e-6 or chk["max_abs_dt_vs_scipy_dop853_k"] > 1e-5:
            raise RuntimeError(f"{name}: PyBaMM and the stated ODEs disagree: {chk}")

        entry = {
            "rc_pairs": p["rc_pairs"],
            "params": p,
            "protocol": protocol,
        }
        if protocol["kind"] == "pulse":
            entry["protocol"] = dict(protocol)
            entry["protocol"]["segments"] = [
                {"t_start_s": a, "t_end_s": b, "current_a": c}
                for a, b, c in pulse_segments(protocol)
            ]
        entry.update(
            {
                "t_s": [int(round(x)) for x in r["t"]],
                "voltage_v": [round(float(x), 7) for x in r["V"]],
                "current_a": [round(float(x), 6) for x in r["I"]],
                "soc": [round(float(x), 9) for x in r["soc"]],
                "temp_c": [round(float(x), 6) for x in r["T"]],
                "summary": {
                    "soc_min": round(soc_min, 6),
                    "soc_max": round(soc_max, 6),
                    "voltage_min_v": round(float(r["V"].min()), 6),
                    "voltage_max_v": round(float(r["V"].max()), 6),
                    "temp_max_c": round(float(r["T"].max()), 6),
                },
            }
        )
        if protocol["kind"] == "pulse":
            entry["left_limits_at_step_boundaries"] = {
                "t_s": [int(round(x)) for x in r["left"]["t_s"]],
                "voltage_v": [round(x, 7) for x in r["left"]["voltage_v"]],
                "current_a": [round(x, 6) for x in r["left"]["current_a"]],
            }
        cases_out[name] = entry
        print(
            f"{name:26s} n={len(r['t']):5d}  V[{r['V'].min():.4f},{r['V'].max():.4f}]  "
            f"SoC[{soc_min:.4f},{soc_max:.4f}]  Tmax={r['T'].max():.3f} C  "
            f"dV(tol)={chk['max_abs_dv_vs_tighter_tol_v']:.1e}  "
            f"dV(scipy)={chk['max_abs_dv_vs_scipy_dop853_v']:.1e}  "
            f"dT(scipy)={chk['max_abs_dt_vs_scipy_dop853_k']:.1e}"
        )

    import casadi  # noqa: PLC0415

    try:
        from importlib.metadata import version as _v  # noqa: PLC0415

        solvers_version = _v("pybammsolvers")
    except Exception:  # pragma: no cover
        solvers_version = None
    data = {
        "generator": {
            "tool": "PyBaMM",
            "pybamm_version": pybamm.__version__,
            "pybammsolvers_version": solvers_version,
            "casadi_version": casadi.__version__,
            "numpy_version": np.__version__,
            "python_version": platform.python_version(),
            "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "script": "tests/reference/pybamm_thevenin.py",
            "command": (
                "PYBAMM_DISABLE_TELEMETRY=true /opt/pybamm-venv/bin/python "
                "tests/reference/pybamm_thevenin.py"
            ),
            "model": "pybamm.equivalent_circuit.Thevenin (base parameter set ECM_Example, overridden)",
            "solver": {"name": "IDAKLUSolver", "rtol": RTOL, "atol": ATOL,
                       "output": "t_interp every 1.0 s (Hermite, solver order)"},
            "jig_thermal_mass_j_per_k": JIG_THERMAL_MASS,
            "rounding": {"voltage_v": 1e-7, "current_a": 1e-6, "soc": 1e-9, "temp_c": 1e-6},
            "self_check": self_check,
        },
        "equations": equations,
        "conventions": {
            "current_sign": "I > 0 discharge, I < 0 charge",
            "sample_at_step_boundary": (
                "right limit: (voltage_v[k], current_a[k]) use the current that "
                "starts at t_s[k]; states soc and temp_c are continuous"
            ),
            "heat_term_w": "Q = I^2*R0 + I*sum_j V_j = I*(OCV(SoC) - V)",
        },
        "cases": cases_out,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
        fh.write("\n")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
