"""SunSpec register maps of a unit and of the plant.

Every device starts at register 40000 with the marker 'SunS', then the models::

    40000  'SunS'                   2
    40002  model 1   common         2 + 66
    40070  model 802 battery        2 + 62
    40134  model 713 storage cap.   2 + 7
    40143  model 701 DER AC meas.   2 + 153
    40298  model 702 DER capacity   2 + 50
    40350  model 704 DER AC ctrl    2 + 65
    40417  end model 0xFFFF, 0      2          (40419 registers in all)

Point layouts follow the SunSpec model definitions (tests check them against pysunspec2's
JSON). Scale factors are fixed per device class at start-up, chosen from the ratings so that every
value fits its type (see :func:`choose_sf`). Points this simulator has no value for read as
SunSpec's "not implemented"; points it does not let SCADA change are read-only (exception 02 on a
write), whatever the model allows. The plant device carries farm totals in the same models
(ratings and energies summed, SoC/SoH energy-weighted means) and its 704 ``WSet`` is the farm
power setpoint.
"""

from __future__ import annotations

import math

from .quantities import QUANTITY_INDEX
from .registers import (T_I16, T_I32, T_STATIC, T_U16, T_U32, T_U64, Point, RegisterMap)

BASE = 40000
SUNS = (0x5375, 0x6E53)   # 'SunS'

# name type [size] [sf] [rw]; types as SunSpec names them
MODELS_TEXT = {
    1: """
Mn string 16
Md string 16
Opt string 8
Vr string 8
SN string 16
DA uint16 - rw
Pad pad
""",
    802: """
AHRtg uint16 AHRtg_SF
WHRtg uint16 WHRtg_SF
WChaRteMax uint16 WChaDisChaMax_SF
WDisChaRteMax uint16 WChaDisChaMax_SF
DisChaRte uint16 DisChaRte_SF
SoCMax uint16 SoC_SF
SoCMin uint16 SoC_SF
SocRsvMax uint16 SoC_SF rw
SoCRsvMin uint16 SoC_SF rw
SoC uint16 SoC_SF
DoD uint16 DoD_SF
SoH uint16 SoH_SF
NCyc uint32
ChaSt enum16
LocRemCtl enum16
Hb uint16
CtrlHb uint16 - rw
AlmRst uint16 - rw
Typ enum16
State enum16
StateVnd enum16
WarrDt uint32
Evt1 bitfield32
Evt2 bitfield32
EvtVnd1 bitfield32
EvtVnd2 bitfield32
V uint16 V_SF
VMax uint16 V_SF
VMin uint16 V_SF
CellVMax uint16 CellV_SF
CellVMaxStr uint16
CellVMaxMod uint16
CellVMin uint16 CellV_SF
CellVMinStr uint16
CellVMinMod uint16
CellVAvg uint16 CellV_SF
A int16 A_SF
AChaMax uint16 AMax_SF
ADisChaMax uint16 AMax_SF
W int16 W_SF
ReqInvState enum16
ReqW int16 W_SF
SetOp enum16 - rw
SetInvState enum16 - rw
AHRtg_SF sunssf
WHRtg_SF sunssf
WChaDisChaMax_SF sunssf
DisChaRte_SF sunssf
SoC_SF sunssf
DoD_SF sunssf
SoH_SF sunssf
V_SF sunssf
CellV_SF sunssf
A_SF sunssf
AMax_SF sunssf
W_SF sunssf
""",
    713: """
WHRtg uint16 WH_SF
WHAvail uint16 WH_SF
SoC uint16 Pct_SF
SoH uint16 Pct_SF
Sta enum16
WH_SF sunssf
Pct_SF sunssf
""",
    701: """
ACType enum16
St enum16
InvSt enum16
ConnSt enum16
Alrm bitfield32
DERMode bitfield32
W int16 W_SF
VA int16 VA_SF
Var int16 Var_SF
PF int16 PF_SF
A int16 A_SF
LLV uint16 V_SF
LNV uint16 V_SF
Hz uint32 Hz_SF
TotWhInj uint64 TotWh_SF
TotWhAbs uint64 TotWh_SF
TotVarhInj uint64 TotVarh_SF
TotVarhAbs uint64 TotVarh_SF
TmpAmb int16 Tmp_SF
TmpCab int16 Tmp_SF
TmpSnk int16 Tmp_SF
TmpTrns int16 Tmp_SF
TmpSw int16 Tmp_SF
TmpOt int16 Tmp_SF
WL1 int16 W_SF
VAL1 int16 VA_SF
VarL1 int16 Var_SF
PFL1 int16 PF_SF
AL1 int16 A_SF
VL1L2 uint16 V_SF
VL1 uint16 V_SF
TotWhInjL1 uint64 TotWh_SF
TotWhAbsL1 uint64 TotWh_SF
TotVarhInjL1 uint64 TotVarh_SF
TotVarhAbsL1 uint64 TotVarh_SF
WL2 int16 W_SF
VAL2 int16 VA_SF
VarL2 int16 Var_SF
PFL2 int16 PF_SF
AL2 int16 A_SF
VL2L3 uint16 V_SF
VL2 uint16 V_SF
TotWhInjL2 uint64 TotWh_SF
TotWhAbsL2 uint64 TotWh_SF
TotVarhInjL2 uint64 TotVarh_SF
TotVarhAbsL2 uint64 TotVarh_SF
WL3 int16 W_SF
VAL3 int16 VA_SF
VarL3 int16 Var_SF
PFL3 int16 PF_SF
AL3 int16 A_SF
VL3L1 uint16 V_SF
VL3 uint16 V_SF
TotWhInjL3 uint64 TotWh_SF
TotWhAbsL3 uint64 TotWh_SF
TotVarhInjL3 uint64 TotVarh_SF
TotVarhAbsL3 uint64 TotVarh_SF
ThrotPct uint16
ThrotSrc bitfield32
A_SF sunssf
V_SF sunssf
Hz_SF sunssf
W_SF sunssf
PF_SF sunssf
VA_SF sunssf
Var_SF sunssf
TotWh_SF sunssf
TotVarh_SF sunssf
Tmp_SF sunssf
MnAlrmInfo string 32
""",
    702: """
WMaxRtg uint16 W_SF
WOvrExtRtg uint16 W_SF
WOvrExtRtgPF uint16 PF_SF
WUndExtRtg uint16 W_SF
WUndExtRtgPF uint16 PF_SF
VAMaxRtg uint16 VA_SF
VarMaxInjRtg uint16 Var_SF
VarMaxAbsRtg uint16 Var_SF
WChaRteMaxRtg uint16 W_SF
WDisChaRteMaxRtg uint16 W_SF
VAChaRteMaxRtg uint16 VA_SF
VADisChaRteMaxRtg uint16 VA_SF
VNomRtg uint16 V_SF
VMaxRtg uint16 V_SF
VMinRtg uint16 V_SF
AMaxRtg uint16 A_SF
PFOvrExtRtg uint16 PF_SF
PFUndExtRtg uint16 PF_SF
ReactSusceptRtg uint16 S_SF
NorOpCatRtg enum16
AbnOpCatRtg enum16
CtrlModes bitfield32
IntIslandCatRtg bitfield16
WMax uint16 W_SF
WMaxOvrExt uint16 W_SF
WOvrExtPF uint16 PF_SF
WMaxUndExt uint16 W_SF
WUndExtPF uint16 PF_SF
VAMax uint16 VA_SF
VarMaxInj uint16 Var_SF
VarMaxAbs uint16 Var_SF
WChaRteMax uint16 W_SF
WDisChaRteMax uint16 W_SF
VAChaRteMax uint16 VA_SF
VADisChaRteMax uint16 VA_SF
VNom uint16 V_SF
VMax uint16 V_SF
VMin uint16 V_SF
AMax uint16 A_SF
PFOvrExt uint16 PF_SF
PFUndExt uint16 PF_SF
IntIslandCat bitfield16
W_SF sunssf
PF_SF sunssf
VA_SF sunssf
Var_SF sunssf
V_SF sunssf
A_SF sunssf
S_SF sunssf
""",
    704: """
PFWInjEna enum16
PFWInjEnaRvrt enum16
PFWInjRvrtTms uint32
PFWInjRvrtRem uint32
PFWAbsEna enum16
PFWAbsEnaRvrt enum16
PFWAbsRvrtTms uint32
PFWAbsRvrtRem uint32
WMaxLimPctEna enum16
WMaxLimPct uint16 WMaxLimPct_SF
WMaxLimPctRvrt uint16 WMaxLimPct_SF
WMaxLimPctEnaRvrt enum16
WMaxLimPctRvrtTms uint32
WMaxLimPctRvrtRem uint32
WSetEna enum16 - rw
WSetMod enum16 - rw
WSet int32 WSet_SF rw
WSetRvrt int32 WSet_SF rw
WSetPct int16 WSetPct_SF rw
WSetPctRvrt int16 WSetPct_SF rw
WSetEnaRvrt enum16 - rw
WSetRvrtTms uint32 - rw
WSetRvrtRem uint32
VarSetEna enum16
VarSetMod enum16
VarSetPri enum16
VarSet int32 VarSet_SF
VarSetRvrt int32 VarSet_SF
VarSetPct int16 VarSetPct_SF
VarSetPctRvrt int16 VarSetPct_SF
VarSetEnaRvrt enum16
VarSetRvrtTms uint32
VarSetRvrtRem uint32
WRmp uint16
WRmpRef enum16
VarRmp uint16
AntiIslEna enum16
PF_SF sunssf
WMaxLimPct_SF sunssf
WSet_SF sunssf
WSetPct_SF sunssf
VarSet_SF sunssf
VarSetPct_SF sunssf
PFWInj.PF uint16 PF_SF
PFWInj.Ext enum16
PFWInjRvrt.PF uint16 PF_SF
PFWInjRvrt.Ext enum16
PFWAbs.PF uint16 PF_SF
PFWAbs.Ext enum16
PFWAbsRvrt.PF uint16 PF_SF
PFWAbsRvrt.Ext enum16
""",
}
MODEL_ORDER = (1, 802, 713, 701, 702, 704)
_SIZES = {"uint16": 1, "int16": 1, "enum16": 1, "bitfield16": 1, "sunssf": 1, "pad": 1,
          "uint32": 2, "int32": 2, "bitfield32": 2, "uint64": 4}
_TYPES = {"uint16": T_U16, "enum16": T_U16, "bitfield16": T_U16, "pad": T_U16, "int16": T_I16,
          "sunssf": T_I16, "uint32": T_U32, "bitfield32": T_U32, "int32": T_I32, "uint64": T_U64,
          "string": T_STATIC}


def model_points(model: int) -> list[tuple[str, str, int, str | None, bool]]:
    """(name, sunspec type, size, scale-factor name, writable) of a model's points after ID, L."""
    out = []
    for line in MODELS_TEXT[model].strip().splitlines():
        parts = line.split()
        name, typ = parts[0], parts[1]
        rest = parts[2:]
        size = _SIZES.get(typ)
        if typ == "string":
            size = int(rest.pop(0))
        sf = rest[0] if rest and rest[0] != "-" else None
        rw = len(rest) > 1 and rest[1] == "rw"
        out.append((name, typ, size, sf, rw))
    return out


def model_length(model: int) -> int:
    return sum(p[2] for p in model_points(model))


def choose_sf(max_abs: float, signed: bool, floor: int, width: int = 16) -> int:
    """The smallest scale factor >= ``floor`` at which ``max_abs`` fits the integer type."""
    limit = (2 ** (width - 1) - 1) if signed else (2 ** width - 2)
    sf = floor
    while max_abs / 10.0 ** sf > limit:
        sf += 1
    return sf


def _words(text: str, size: int) -> list[int]:
    raw = text.encode("utf-8")[: 2 * size].ljust(2 * size, b"\0")
    return [(raw[2 * j] << 8) | raw[2 * j + 1] for j in range(size)]


# point name (per model) -> quantity; "!n" is a constant n
UNIT_BINDINGS = {
    802: {
        "AHRtg": "rated_ah", "WHRtg": "rated_wh", "WChaRteMax": "p_rated_w",
        "WDisChaRteMax": "p_rated_w", "SoCMax": "soc_max_pct", "SoCMin": "soc_min_pct",
        "SocRsvMax": "soc_rsv_max_pct", "SoCRsvMin": "soc_rsv_min_pct", "SoC": "soc_pct",
        "DoD": "dod_pct", "SoH": "soh_pct", "NCyc": "efc", "ChaSt": "ss_802_chast",
        "LocRemCtl": "!0", "Hb": "heartbeat", "CtrlHb": "ctl_hb", "AlmRst": "!0", "Typ": "!4",
        "State": "ss_802_state", "StateVnd": "state", "Evt1": "ss_802_evt1", "Evt2": "!0",
        "EvtVnd1": "alarms", "EvtVnd2": "!0", "V": "voltage_v", "VMax": "v_max_v",
        "VMin": "v_min_v", "CellVAvg": "cell_v_avg_v", "A": "current_a",
        "AChaMax": "i_max_charge_a", "ADisChaMax": "i_max_discharge_a", "W": "p_dc_w",
        "ReqInvState": "!0", "ReqW": "p_request_w", "SetOp": "ss_802_setop",
        "SetInvState": "ss_802_setinvstate",
    },
    713: {"WHRtg": "rated_wh", "WHAvail": "e_available_wh", "SoC": "soc_pct", "SoH": "soh_pct",
          "Sta": "ss_713_sta"},
    701: {
        "ACType": "!2", "St": "ss_701_st", "InvSt": "ss_701_invst", "ConnSt": "ss_701_connst",
        "Alrm": "ss_701_alrm", "DERMode": "!1", "W": "p_ac_w", "VA": "abs_p_ac_w", "Var": "!0",
        "PF": "!1", "A": "ac_current_a", "LLV": "ac_voltage_v", "Hz": "grid_hz",
        "TotWhInj": "e_ac_discharged_wh", "TotWhAbs": "e_ac_charged_wh", "TmpAmb": "ambient_c",
        "TmpCab": "temp_c", "WL1": "p_ac_w_phase", "WL2": "p_ac_w_phase", "WL3": "p_ac_w_phase",
        "AL1": "ac_current_a", "AL2": "ac_current_a", "AL3": "ac_current_a",
        "VL1L2": "ac_voltage_v", "VL2L3": "ac_voltage_v", "VL3L1": "ac_voltage_v",
    },
    702: {
        "WMaxRtg": "p_rated_w", "VAMaxRtg": "p_rated_w", "WChaRteMaxRtg": "p_rated_w",
        "WDisChaRteMaxRtg": "p_rated_w", "VNomRtg": "v_nom_v", "VMaxRtg": "v_max_v",
        "VMinRtg": "v_min_v", "AMaxRtg": "i_max_discharge_a", "NorOpCatRtg": "!0",
        "AbnOpCatRtg": "!0", "CtrlModes": "!2", "WMax": "p_rated_w", "WChaRteMax": "p_rated_w",
        "WDisChaRteMax": "p_rated_w", "VAMax": "p_rated_w", "VNom": "v_nom_v", "VMax": "v_max_v",
        "VMin": "v_min_v", "AMax": "i_max_discharge_a",
    },
    704: {
        "WSetEna": "ctl_wset_ena", "WSetMod": "ctl_wset_mod", "WSet": "ctl_wset_w",
        "WSetRvrt": "ctl_wset_rvrt_w", "WSetPct": "ctl_wset_pct", "WSetPctRvrt": "ctl_wset_pct_rvrt",
        "WSetEnaRvrt": "ctl_wset_ena_rvrt", "WSetRvrtTms": "ctl_rvrt_tms",
        "WSetRvrtRem": "ctl_rvrt_rem",
    },
}

# the engineering magnitude each scale factor must carry: rating name -> model SF names
_SF_RANGES = {
    802: {"AHRtg_SF": ("rated_ah", -1), "WHRtg_SF": ("rated_wh", 0),
          "WChaDisChaMax_SF": ("p_rated_w", 0), "DisChaRte_SF": ("pct", -1),
          "SoC_SF": ("pct", -2), "DoD_SF": ("pct", -2), "SoH_SF": ("pct", -2),
          "V_SF": ("v_max_v", -1), "CellV_SF": ("cell_v", -3), "A_SF": ("i_max_a_signed", -1),
          "AMax_SF": ("i_max_a", -1), "W_SF": ("p_rated_w_signed", 0)},
    713: {"WH_SF": ("rated_wh", 0), "Pct_SF": ("pct", -2)},
    701: {"A_SF": ("ac_current_a_signed", -1), "V_SF": ("ac_voltage_v", -1), "Hz_SF": ("hz32", -3),
          "W_SF": ("p_rated_w_signed", 0), "PF_SF": ("pf", -3), "VA_SF": ("p_rated_w_signed", 0),
          "Var_SF": ("p_rated_w_signed", 0), "TotWh_SF": ("none", 0), "TotVarh_SF": ("none", 0),
          "Tmp_SF": ("temp", -1)},
    702: {"W_SF": ("p_rated_w", 0), "PF_SF": ("pf", -3), "VA_SF": ("p_rated_w", 0),
          "Var_SF": ("p_rated_w", 0), "V_SF": ("v_max_v", -1), "A_SF": ("i_max_a", -1),
          "S_SF": ("none", 0)},
    704: {"PF_SF": ("pf", -3), "WMaxLimPct_SF": ("pct", -1), "WSet_SF": ("p_rated_w32", 0),
          "WSetPct_SF": ("pct_signed", -2), "VarSet_SF": ("p_rated_w32", 0),
          "VarSetPct_SF": ("pct_signed", -2)},
}


def scale_factors(ratings: dict[str, float]) -> dict[int, dict[str, int]]:
    """Scale factor of every SF point of every model for a device with these ratings."""
    mags = dict(ratings)
    mags.update(pct=100.0, pct_signed=100.0, cell_v=5.0, pf=1.0, temp=1500.0, none=0.0,
                hz32=70.0)
    signed_keys = {"i_max_a_signed": "i_max_a", "p_rated_w_signed": "p_rated_w",
                   "ac_current_a_signed": "ac_current_a"}
    out: dict[int, dict[str, int]] = {}
    for model, table in _SF_RANGES.items():
        out[model] = {}
        for sf_name, (key, floor) in table.items():
            if key == "hz32":
                out[model][sf_name] = floor
                continue
            if key == "p_rated_w32":
                out[model][sf_name] = choose_sf(mags["p_rated_w"], True, floor, width=32)
                continue
            signed = key in signed_keys or key == "pct_signed"
            base = signed_keys.get(key, key)
            out[model][sf_name] = choose_sf(mags[base], signed, floor)
    return out


def build_map(name: str, ratings: dict[str, float], strings: dict[str, str],
              write_limits: dict[str, tuple[float, float]], bindings=UNIT_BINDINGS) -> RegisterMap:
    """The SunSpec map of one device class.

    ``ratings``: p_rated_w, rated_ah, rated_wh, v_max_v, i_max_a, ac_current_a, ac_voltage_v
    (sizes the scale factors); ``strings``: model 1 Mn, Md, Opt, Vr (SN is per device);
    ``write_limits``: engineering limits of the writable points by name.
    """
    sfs = scale_factors(ratings)
    total = 2 + sum(2 + model_length(m) for m in MODEL_ORDER) + 2
    rm = RegisterMap(name, BASE, total)
    rm.add(Point("SunS", 0, T_STATIC, 2, static=list(SUNS)))
    off = 2
    for model in MODEL_ORDER:
        length = model_length(model)
        rm.add(Point(f"{model}.ID", off, T_STATIC, 1, static=[model]))
        rm.add(Point(f"{model}.L", off + 1, T_STATIC, 1, static=[length]))
        o = off + 2
        bind = bindings.get(model, {})
        for pname, typ, size, sf, rw in model_points(model):
            full = f"{model}.{pname}"
            if typ == "string":
                if pname == "SN":
                    rm.sn_offset = (o, size)
                words = _words(strings.get(pname, ""), size)
                rm.add(Point(full, o, T_STATIC, size, static=words))
            elif typ == "sunssf":
                v = sfs[model].get(pname)
                rm.add(Point(full, o, T_STATIC, 1,
                             static=[0x8000 if v is None else v & 0xFFFF]))
            elif typ == "pad":
                rm.add(Point(full, o, T_STATIC, 1, static=[0x8000]))
            else:
                src = bind.get(pname)
                t = _TYPES[typ]
                scale = 1.0 if sf is None else 10.0 ** -sfs[model][sf]
                p = Point(full, o, t, size, scale=scale, writable=rw)
                if src is not None and src.startswith("!"):
                    p.static = _const_words(t, size, float(src[1:]))
                elif src is not None:
                    p.source = QUANTITY_INDEX[src]
                if rw:
                    p.target = full
                    p.lo, p.hi = write_limits.get(full, (-math.inf, math.inf))
                    if full not in write_limits:
                        p.writable = False      # the model allows it; this device does not
                rm.add(p)
            o += size
        off = o
    rm.add(Point("end.ID", off, T_STATIC, 1, static=[0xFFFF]))
    rm.add(Point("end.L", off + 1, T_STATIC, 1, static=[0]))
    return rm.compile()


def _const_words(t: int, size: int, v: float) -> list[int]:
    u = int(v)
    if t in (T_I16, T_I32):
        u &= (1 << (16 * size)) - 1
    return [(u >> (16 * (size - 1 - j))) & 0xFFFF for j in range(size)]


def sn_words(text: str, size: int) -> list[int]:
    return _words(text, size)
