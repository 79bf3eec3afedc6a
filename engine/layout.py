"""Names of the engine's arrays: enums, alarm bits and the row index of every field.

The engine keeps its state as a handful of 2-D arrays whose *rows* are quantities and whose
*columns* are units, so each quantity is one contiguous vector (struct of arrays) while the kernels
take a short, stable argument list. Every constant here is a plain ``int`` so that numba folds it
into the compiled kernels.

Buffers
-------
``dyn``   float64[2, N_DYN, n]   dynamic state, twice (ping-pong): tick k reads one, writes the other.
``out``   float32[2, N_OUT, n]   per-unit outputs of the last tick (written, never read by the kernel).
``status`` uint8[2, n], ``alarms`` uint32[2, n]  unit state and alarm bits, also ping-pong.
``upar``  float32[N_UPAR, n]     per-unit parameters (manufacturing spread, aging, commands).
``flags`` uint16[n]              per-unit command and fault bits (FLAG_*).
``kind``  int16[n]               index of the unit's product kind in ``kpar``.
``kpar``  float64[n_kinds, N_KPAR] per-kind parameters (a farm has a handful of kinds).
"""

# --- unit state (status array) -------------------------------------------------------------
OFFLINE = 0          # disabled by command: contactors open, no power; HVAC keeps running
STANDBY = 1          # enabled, no power requested
IDLE = 2             # power requested but held at zero by limits (SoC window, temperature)
CHARGING = 3
DISCHARGING = 4
FAULT = 5            # tripped by protection; needs a reset once the cause has cleared
THERMAL_RUNAWAY = 6  # irreversible
N_STATES = 7
STATE_NAMES = ("offline", "standby", "idle", "charging", "discharging", "fault", "thermal_runaway")

# --- alarm bits (alarms array) ---------------------------------------------------------------
ALARM_OVER_VOLTAGE = 1 << 0
ALARM_UNDER_VOLTAGE = 1 << 1
ALARM_OVER_TEMPERATURE = 1 << 2
ALARM_UNDER_TEMPERATURE = 1 << 3
ALARM_OVER_CURRENT = 1 << 4
ALARM_SOC_HIGH = 1 << 5
ALARM_SOC_LOW = 1 << 6
ALARM_HVAC_FAULT = 1 << 7
ALARM_SENSOR_FAULT = 1 << 8
ALARM_COMM_FAULT = 1 << 9
ALARM_THERMAL_RUNAWAY = 1 << 10
ALARM_TEMPERATURE_DERATE = 1 << 11
ALARM_SELF_HEATING = 1 << 12
ALARM_PCS_FAULT = 1 << 13     # the converter is tripped (chaos: inverter trip); clears with it
ALARM_NAMES = (
    "over_voltage", "under_voltage", "over_temperature", "under_temperature", "over_current",
    "soc_high", "soc_low", "hvac_fault", "sensor_fault", "comm_fault", "thermal_runaway",
    "temperature_derate", "self_heating", "pcs_fault",
)
# Alarms that trip the unit and stay latched until a reset (runaway never clears).
TRIP_MASK = (ALARM_OVER_VOLTAGE | ALARM_UNDER_VOLTAGE | ALARM_OVER_TEMPERATURE
             | ALARM_UNDER_TEMPERATURE | ALARM_OVER_CURRENT | ALARM_THERMAL_RUNAWAY)

# --- per-unit flag bits (flags array) --------------------------------------------------------
FLAG_ENABLED = 1 << 0
FLAG_MANUAL = 1 << 1          # follows its own setpoint instead of the farm dispatch
FLAG_RESET = 1 << 2           # alarm reset requested; consumed by the next tick
FLAG_HVAC_FAILED = 1 << 3
FLAG_SENSOR_FAULT = 1 << 4    # a sensor fault is configured in the sensor-fault table
FLAG_COMM_FAULT = 1 << 5
FLAG_NEIGHBOUR_LEFT = 1 << 6  # unit i-1 is in the same row (thermal coupling)
FLAG_NEIGHBOUR_RIGHT = 1 << 7
FLAG_CURRENT_MODE = 1 << 8    # manual setpoint is a DC current [A] instead of an AC power [W]
FLAG_TRIGGER_RUNAWAY = 1 << 9  # start a thermal runaway (internal short); consumed by the next tick
FLAG_PCS_TRIP = 1 << 10       # converter tripped: no power, state FAULT, ALARM_PCS_FAULT (until cleared)
RUN_MASK = FLAG_ENABLED | FLAG_PCS_TRIP   # a unit may carry power when (flags & RUN_MASK) == FLAG_ENABLED

# --- dynamic state rows (dyn, float64, ping-pong) -------------------------------------------
SOC = 0              # state of charge of the present capacity [-]
V_RC1 = 1            # voltage over the first RC pair, pack level [V]
V_RC2 = 2            # voltage over the second RC pair [V]
TEMP_C = 3           # lumped cell temperature [C]
E_AC_CHARGED = 4     # AC energy taken from the grid for charging [Wh]
E_AC_DISCHARGED = 5  # AC energy delivered to the grid [Wh]
E_DC_CHARGED = 6     # DC energy into the battery terminals [Wh]
E_DC_DISCHARGED = 7  # DC energy out of the battery terminals [Wh]
E_LOSS = 8           # PCS + ohmic + coulombic losses [Wh]
E_AUX = 9            # HVAC electric consumption [Wh]
EFC = 10             # equivalent full cycles, sum |dSoC| / 2 [-]
N_DYN = 11
DYN_NAMES = ("soc", "v_rc1_v", "v_rc2_v", "temp_c", "e_ac_charged_wh", "e_ac_discharged_wh",
             "e_dc_charged_wh", "e_dc_discharged_wh", "e_loss_wh", "e_aux_wh", "efc")

# --- outputs of the last tick (out, float32, ping-pong) ---------------------------------------
CURRENT_A = 0        # battery current, positive = discharge [A]
VOLTAGE_V = 1        # terminal voltage at the end of the tick [V]
P_AC_W = 2           # AC power at the PCS terminals, positive = discharge [W]
P_DC_W = 3           # DC power at the battery terminals [W]
P_HVAC_W = 4         # HVAC electric draw [W]
P_REQUEST_W = 5      # AC power the unit was asked for after dispatch [W]
N_OUT = 6
OUT_NAMES = ("current_a", "voltage_v", "p_ac_w", "p_dc_w", "p_hvac_w", "p_request_w")

# --- per-unit parameters (upar, float32) ----------------------------------------------------
CAP_AH = 0           # present capacity = nominal * SoH * imbalance [Ah]
R0_OHM = 1           # present series resistance, pack level [ohm]
R1_OHM = 2
R2_OHM = 3
CAP_NOM_AH = 4       # nominal capacity of this unit after manufacturing spread [Ah]
R0_NOM_OHM = 5
R1_NOM_OHM = 6
R2_NOM_OHM = 7
DERATE = 8           # externally imposed power derate factor [0..1]
SETPOINT_W = 9       # manual-mode setpoint, positive = discharge: AC power [W] or DC current [A]
AMBIENT_OFFSET_C = 10  # local ambient offset (heat wave on a row) [K]
AGING_FACTOR = 11    # multiplies degradation increments (1 = nominal)
CAP_FACTOR = 12      # capacity imbalance factor applied on top of aging (1 = none)
R_STEP = 13          # resistance multiplier on top of aging (1 = none)
RW_RELEASED_J = 14   # runaway energy already released [J] (changes only in runaway)
SOH = 15             # relative capacity from the aging model [-]
T_MAX_C = 16         # highest temperature seen, sampled with aging [C]
TRIPS = 17           # number of trips so far
SOC_RSV_MIN = 18     # operating SoC window of this unit (reserve), inside the kind's
SOC_RSV_MAX = 19     # [soc_min, soc_max]; SCADA writes it (SunSpec 802 SoCRsvMin/Max) [-]
N_UPAR = 20
UPAR_NAMES = ("cap_ah", "r0_ohm", "r1_ohm", "r2_ohm", "cap_nom_ah", "r0_nom_ohm", "r1_nom_ohm",
              "r2_nom_ohm", "derate", "setpoint_w", "ambient_offset_c", "aging_factor",
              "cap_factor", "r_step", "rw_released_j", "soh", "t_max_c", "trips",
              "soc_rsv_min", "soc_rsv_max")

# --- per-kind parameters (kpar, float64) ----------------------------------------------------
K_N_SERIES = 0          # cells in series [-]
K_N_PARALLEL = 1        # cells in parallel [-]
K_OCV_TABLE = 2         # row of the OCV table [-]
K_ETA_COULOMB = 3       # coulombic efficiency on charge [-]
K_I_MAX_DIS = 4         # pack current limit, discharge [A]
K_I_MAX_CHG = 5         # pack current limit, charge [A]
K_I_TRIP = 6            # over-current trip [A]
K_P_RATED = 7           # PCS AC rating [W]
K_PCS_L0 = 8            # PCS loss = rating * (l0 + l1 x + l2 x^2), x = |P|/rating
K_PCS_L1 = 9
K_PCS_L2 = 10
K_V_MAX = 11            # pack operating voltage window [V] (cell limit * series)
K_V_MIN = 12
K_V_TRIP_HI = 13        # pack trip voltages [V]
K_V_TRIP_LO = 14
K_SOC_MIN = 15
K_SOC_MAX = 16
K_SOC_TAPER = 17        # width of the power taper inside the SoC window [-]
K_T_DERATE = 18         # derating starts [C]
K_T_TRIP_HI = 19        # over-temperature trip [C]
K_T_MIN_CHARGE = 20     # no charging below [C]; full charge power 10 K above
K_T_TRIP_LO = 21
K_C_TH = 22             # heat capacity [J/K]
K_G_AMB = 23            # conductance to ambient [W/K]
K_G_NB = 24             # conductance to each neighbour in the row [W/K]
K_HVAC_COOL_W = 25      # cooling capacity [W thermal]
K_HVAC_HEAT_W = 26      # heating capacity [W thermal]
K_HVAC_T_COOL = 27      # cooling setpoint [C]
K_HVAC_T_HEAT = 28      # heating setpoint [C]
K_HVAC_GAIN = 29        # proportional gain [W/K]
K_HVAC_COP_COOL = 30
K_HVAC_COP_HEAT = 31
K_HVAC_BASE_W = 32      # fans and controls while the unit is powered [W]
K_RW_ONSET_C = 33       # self-heating onset [C]
K_RW_CRIT_C = 34        # runaway becomes irreversible [C]
K_RW_ONSET_W = 35       # self-heating power at onset [W]
K_RW_EA_K = 36          # activation temperature Ea/R of the self-heating [K]
K_RW_ENERGY_J = 37      # heat released by a full runaway [J]
K_RW_TAU_S = 38         # time constant of the runaway release [s]
K_AGING_MODEL = 39      # aging model id [-]
K_TAU1_S = 40           # RC time constants [s] (spread-free per kind)
K_TAU2_S = 41
# dt-dependent factors, refreshed by the engine whenever dt changes:
K_OM1 = 42              # 1 - exp(-dt/tau1)
K_AV1 = 43              # step-average factor (1 - exp(-dt/tau1)) * tau1 / dt
K_OM2 = 44
K_AV2 = 45
K_TH = 46               # per neighbour count (0, 1, 2): HVAC off (om, av, 1/G), proportional
TH_SLOTS = 6            # (om, av, 1/G): 18 slots from here
K_F_SOC_MIN = K_TH + 18  # OCV integral F at soc_min and soc_max [V] (energy windows)
K_F_SOC_MAX = K_TH + 19
K_SIGMA_V = K_TH + 20    # sensor noise standard deviations: pack voltage [V], temperature [K],
K_SIGMA_T = K_TH + 21    # current [A], reported SoC [-]
K_SIGMA_I = K_TH + 22
K_SIGMA_SOC = K_TH + 23
# reciprocals, so the tick multiplies instead of dividing
K_INV_P_RATED = K_TH + 24
K_INV_TAPER = K_TH + 25
K_INV_DERATE_SPAN = K_TH + 26   # 1 / (t_trip_high - t_derate)
K_INV_COP_COOL = K_TH + 27
K_INV_COP_HEAT = K_TH + 28
N_KPAR = K_TH + 29

# --- farm aggregates (one row of block partials, reduced in block order) ----------------------
AG_P_AC = 0            # farm AC power [W]
AG_P_DC = 1
AG_P_HVAC = 2
AG_P_REQUEST = 3
AG_SOC_SUM = 4
AG_E_STORED_WH = 5     # chemical energy stored [Wh]
AG_E_AVAILABLE_WH = 6  # energy above each unit's soc_min [Wh]
AG_E_CAPACITY_WH = 7   # usable energy between soc_min and soc_max at present capacity [Wh]
AG_E_AC_CHARGED = 8
AG_E_AC_DISCHARGED = 9
AG_E_DC_CHARGED = 10
AG_E_DC_DISCHARGED = 11
AG_E_LOSS = 12
AG_E_AUX = 13
AG_TEMP_SUM = 14
AG_TEMP_MAX = 15
AG_TEMP_MIN = 16
AG_SOC_MIN = 17
AG_SOC_MAX = 18
AG_SOH_SUM = 19
AG_H_DIS = 20          # dispatch: discharge headroom of farm-dispatched units [W]
AG_H_CHG = 21
AG_W_DIS = 22          # dispatch: SoC-balancing weights [W]
AG_W_CHG = 23
AG_N_ALARM = 24        # units with any alarm bit
AG_EFC_SUM = 25
AG_P_MANUAL = 26       # AC power requested by manual-mode units [W]
AG_STATE = 27          # N_STATES counts
SOC_BANDS = 10         # units per 10 % SoC band
AG_SOC_BAND = AG_STATE + N_STATES
TEMP_BAND_EDGES_C = (0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0)
TEMP_BANDS = len(TEMP_BAND_EDGES_C) + 1
AG_TEMP_BAND = AG_SOC_BAND + SOC_BANDS
N_AGG = AG_TEMP_BAND + TEMP_BANDS

# --- dispatch coefficients handed to the kernel --------------------------------------------
D_SIGN = 0     # +1 discharge, -1 charge, 0 no farm request
D_ALPHA = 1    # p_i = sign * (alpha * w_i + beta * (h_i - w_i))
D_BETA = 2
N_DISP = 3

# --- sensor channels and fault modes (sensor-fault table float32[n, N_CHANNELS, 4]) ----------
CH_VOLTAGE = 0
CH_TEMPERATURE = 1
CH_CURRENT = 2
CH_SOC = 3
N_CHANNELS = 4
CHANNEL_NAMES = ("voltage", "temperature", "current", "soc")
SF_NONE = 0
SF_STUCK = 1      # a = value
SF_OFFSET = 2     # a = offset
SF_DRIFT = 3      # a = offset at t0, b = rate per second, t0 = start [s]
SF_NOISE = 4      # a = extra standard deviation
SENSOR_FAULT_NAMES = ("none", "stuck", "offset", "drift", "noise")
SF_MODE, SF_A, SF_B, SF_T0 = 0, 1, 2, 3
