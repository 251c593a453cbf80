"""Fab recipes: the frozen, hashable, validated description of a device family.

A recipe holds shapes and *statistics*, never an instance. Every physical parameter says whether it
is drawn once per device at fab time (**d2d**, device-to-device) or at every use (**c2c**,
cycle-to-cycle: each ``measure`` or each ``program`` call).

Units
-----
* Inputs to a layer are *digital* values (the RMS-normalised activity of the layer below, or the
  RMS-normalised input image). The DAC clips them to ±``input_bound`` (its full scale) and
  quantises them; the crossbar sees the voltage ``x / input_bound`` of full scale, and the
  periphery multiplies its analog result back by ``input_bound`` (a fixed gain). Currents and
  measured inputs are therefore in digital units, and a read path without clipping, quantisation
  or noise computes exactly ``x @ W`` (the ideal path has no DAC at all).
* Weights are normalised conductances (aihwkit's convention): dimensionless, bounded by
  ``[w_min, w_max]``.
* Output noise and the output (current) bound are stated in *full-scale units*, aihwkit's: one
  full-scale input on a unit weight gives 1. In digital units they are multiplied by
  ``input_bound``.
* Neuron outputs ``y = f(i)`` are in current (digital) units; the ADC digitises them.
* Time is in seconds.

Relative variations are lognormal: ``value = nominal * exp(sigma * xi)`` with ``xi`` a standard
normal truncated at ±3, so positive quantities stay positive (the sign is kept, as in teili and
Rockpool) and ``sigma`` is the standard deviation of ``log(value)`` (≈ the relative spread for
small ``sigma``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal

FAMILIES = ("relu", "softplus", "square_law", "tanh_sat", "exp", "tabulated")
NONNEGATIVE_FAMILIES = ("relu", "softplus", "square_law", "exp")
UPDATE_MODELS = ("ideal", "constant_step", "soft_bounds")
FAIL_MODES = ("flat", "noisy")

Family = Literal["relu", "softplus", "square_law", "tanh_sat", "exp", "tabulated"]
UpdateModel = Literal["ideal", "constant_step", "soft_bounds"]
MatmulDtype = Literal["float32", "bfloat16"]
MATMUL_DTYPES = ("float32", "bfloat16")


class SpecError(ValueError):
    """A fab recipe is invalid. The message names the field and how to fix it."""


def _fail(path: str, message: str) -> None:
    raise SpecError(f"invalid device recipe: {path} {message}")


def _check_finite(path: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
        _fail(path, f"must be a number, got {value!r}")


def _check_nonnegative(path: str, value: float) -> None:
    _check_finite(path, value)
    if not (0.0 <= value < math.inf):
        _fail(path, f"must be a finite number >= 0, got {value!r}")


def _check_sigma(path: str, value: float) -> None:
    _check_finite(path, value)
    if not (0.0 <= value < math.inf):
        _fail(path, f"must be a finite standard deviation >= 0, got {value!r}")


def _check_positive(path: str, value: float, *, allow_inf: bool = False) -> None:
    _check_finite(path, value)
    if not (value > 0) or (value == math.inf and not allow_inf):
        kind = "a positive number (inf allowed)" if allow_inf else "a finite positive number"
        _fail(path, f"must be {kind}, got {value!r}")


def _check_bits(path: str, value: int | None, minimum: int) -> None:
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or not (minimum <= value <= 24):
        _fail(path, f"must be an integer between {minimum} and 24 (or None for no converter), "
                    f"got {value!r}")


def _check_fraction(path: str, value: float, *, closed_low: bool = True) -> None:
    _check_finite(path, value)
    ok = (0.0 <= value <= 1.0) if closed_low else (0.0 < value <= 1.0)
    if not ok:
        rng = "[0, 1]" if closed_low else "(0, 1]"
        _fail(path, f"must lie in {rng}, got {value!r}")


@dataclass(frozen=True)
class NeuronSpec:
    """Analog neuron transfer curves ``y = f(i)`` of one layer.

    Every neuron ``j`` has its own curve, drawn at fab time (d2d) around the family's nominal one:
    gain ``g_j``, threshold ``θ_j`` (current units), sharpness ``k_j`` (1/current units) and
    saturation ``s_j`` (current units). With ``z = k_j (i − θ_j)`` the families are

    * ``relu``:       ``y = g max(0, i − θ)`` (ideal; sharpness unused)
    * ``softplus``:   ``y = g softplus(z) / k`` (diode-like smooth threshold)
    * ``square_law``: ``y = g k max(0, i − θ)²`` (MOS transistor in saturation above threshold)
    * ``tanh_sat``:   ``y = s tanh(g (i − θ) / s)`` (saturating amplifier, rails at ±s)
    * ``exp``:        ``y = g exp(z) / k`` (subthreshold transistor), clipped at ``s``
    * ``tabulated``:  ``y = g T(z) / k`` where ``T`` interpolates the measured monotone points
      ``table = (xs, ys)`` (bring your own curve; flat beyond the table's ends)

    and every family except ``tanh_sat`` is clipped at ``y <= s`` (``s = inf``: no saturation).
    Gain, sharpness and saturation vary lognormally (``*_sigma`` = std of their log); the threshold
    varies additively (``threshold_sigma`` in current units). All curves stay increasing.
    """

    family: Family = "relu"
    gain: float = 1.0
    threshold: float = 0.0
    sharpness: float = 1.0
    saturation: float = math.inf
    gain_sigma: float = 0.0  # d2d, std of log(gain)
    threshold_sigma: float = 0.0  # d2d, current units
    sharpness_sigma: float = 0.0  # d2d, std of log(sharpness)
    saturation_sigma: float = 0.0  # d2d, std of log(saturation)
    table: tuple[tuple[float, ...], tuple[float, ...]] | None = None

    def validate(self, path: str = "neuron") -> None:
        if self.family not in FAMILIES:
            _fail(f"{path}.family", f"must be one of {', '.join(FAMILIES)}; got {self.family!r}")
        _check_positive(f"{path}.gain", self.gain)
        _check_finite(f"{path}.threshold", self.threshold)
        if math.isinf(self.threshold):
            _fail(f"{path}.threshold", "must be finite")
        _check_positive(f"{path}.sharpness", self.sharpness)
        _check_positive(f"{path}.saturation", self.saturation, allow_inf=True)
        for name in ("gain_sigma", "threshold_sigma", "sharpness_sigma", "saturation_sigma"):
            _check_sigma(f"{path}.{name}", getattr(self, name))
        if self.family == "tanh_sat" and math.isinf(self.saturation):
            _fail(f"{path}.saturation", "must be finite for the tanh_sat family (its rails)")
        if self.family == "exp" and math.isinf(self.saturation):
            _fail(f"{path}.saturation", "must be finite for the exp family (it must be clipped)")
        if self.family == "tabulated":
            self._validate_table(path)
        elif self.table is not None:
            _fail(f"{path}.table", f"is only used by the tabulated family, not {self.family!r}")

    def _validate_table(self, path: str) -> None:
        t = self.table
        if t is None or len(t) != 2:
            _fail(f"{path}.table", "must be a pair (xs, ys) of measured points for 'tabulated'")
        xs, ys = t
        if len(xs) != len(ys) or len(xs) < 2:
            _fail(f"{path}.table", "needs xs and ys of equal length >= 2")
        if any(not math.isfinite(float(v)) for v in (*xs, *ys)):
            _fail(f"{path}.table", "must hold finite numbers only")
        if any(b <= a for a, b in itertools.pairwise(xs)):
            _fail(f"{path}.table", "xs must be strictly increasing")
        if any(b < a for a, b in itertools.pairwise(ys)) or ys[-1] <= ys[0]:
            _fail(f"{path}.table", "ys must be non-decreasing and not constant (an increasing "
                                   "curve is required for Forward-Forward's local rule)")

    @property
    def nonnegative(self) -> bool:
        """Whether every curve of this family has outputs >= 0 (sets the ADC's range)."""
        if self.family == "tabulated":
            assert self.table is not None
            return min(self.table[1]) >= 0.0
        return self.family in NONNEGATIVE_FAMILIES


@dataclass(frozen=True)
class ConnectivitySpec:
    """Which synapses of a crossbar exist (d2d, drawn once per instance).

    * ``density``: probability that a synapse exists, in (0, 1].
    * ``receptive_field``: side ``r`` of a square window; each neuron is wired only to inputs in a
      random ``r×r`` window of the input image (``image_shape`` required); ``None``: no window.
    * ``global_inputs``: the first ``global_inputs`` input lines are wired to every neuron whatever
      the window (e.g. label lines written into the first pixels); density still applies to them.
    * ``bias``: whether the crossbar has a bias line (a row driven at the constant digital value
      1, i.e. ``1 / input_bound`` of the DAC's full scale); its synapses are ordinary synapses
      (same physics, same programming).
    """

    density: float = 1.0
    receptive_field: int | None = None
    image_shape: tuple[int, int] | None = None
    global_inputs: int = 0
    bias: bool = True

    def validate(self, n_in: int, path: str = "connectivity") -> None:
        _check_fraction(f"{path}.density", self.density, closed_low=False)
        if not isinstance(self.bias, bool):
            _fail(f"{path}.bias", f"must be true or false, got {self.bias!r}")
        if not isinstance(self.global_inputs, int) or not 0 <= self.global_inputs <= n_in:
            _fail(f"{path}.global_inputs", f"must be an integer in [0, {n_in}], "
                                           f"got {self.global_inputs!r}")
        if self.receptive_field is None:
            return
        if self.image_shape is None:
            _fail(f"{path}.image_shape", "is required when receptive_field is set")
        assert self.image_shape is not None
        h, w = self.image_shape
        if h * w != n_in:
            _fail(f"{path}.image_shape", f"{self.image_shape} has {h * w} pixels but the layer "
                                         f"has {n_in} inputs")
        r = self.receptive_field
        if not isinstance(r, int) or not 1 <= r <= min(h, w):
            _fail(f"{path}.receptive_field", f"must be an integer in [1, {min(h, w)}], got {r!r}")


@dataclass(frozen=True)
class SynapseSpec:
    """Programmable synapses (normalised conductances) and their update physics.

    Bounds and states (d2d unless said):
      * ``w_min < 0 < w_max``: nominal weight bounds; ``bound_sigma``: relative (lognormal) d2d
        spread of each synapse's bounds. ``±inf`` (ideal only): unbounded.
      * ``read_gain_sigma``: d2d lognormal spread of each synapse's read gain (the forward pass sees
        ``gain_ij · w_ij``; programming does not know it).
      * ``dw_min``: nominal weight change of one pulse; ``dw_min_sigma`` its d2d lognormal spread.
      * ``up_down``: mean up/down asymmetry ``a`` (up step ``dw(1 + a)``, down step ``dw(1 − a)``),
        ``up_down_sigma``: its d2d spread (absolute); drawn values are kept inside (−0.95, 0.95).
      * ``stuck_zero_rate`` / ``stuck_bound_rate``: d2d fault probabilities of an existing synapse
        stuck at zero or at one of its bounds (either, with equal chance). Stuck synapses never
        move.
      * ``init_scale``: fab-time *digital* weights are ``init_scale · N(0, 1) / sqrt(fan_in)``
        (fan_in: number of wired non-bias inputs; Hinton's recipe: 1.0), i.e. conductances of that
        divided by the read path's ``gain``, clipped to the bounds; bias weights start at 0.

    Update (``program``):
      * ``update_model``: ``ideal`` (the float request is applied exactly, then clipped to the
        bounds), ``constant_step`` (each pulse moves ``±dw`` until a bound) or ``soft_bounds``
        (each pulse moves ``dw (1 − w/b)`` toward the bound ``b`` it approaches).
      * requests become signed pulse counts ``n = stochastic_round(request / dw_min)`` (the
        periphery knows only the nominal step), clipped to ``±max_pulses``.
      * ``step_noise`` (c2c): relative std of each pulse's step, drawn at every pulse (aihwkit
        ``dw_min_std``); ``n`` pulses add noise of std ``step_noise · |mean step| · sqrt(n)``.
      * ``write_noise`` (c2c): std, in units of ``dw_min``, of a read offset that the forward pass
        sees on top of the stored weight, redrawn each time a synapse is written (aihwkit
        ``write_noise_std``). 0 disables it (and its state array).

    Cells (a design choice of the array, fixed at fab):
      * ``cells``: conductance cells per synapse, read in parallel (Boybat et al. 2018, Nat.
        Commun. 9, 2514, "multi-memristive synapses"; aihwkit's ``VectorUnitCell``). The synapse's
        weight is the mean of its cells. Each ``program`` call writes one cell per layer, chosen
        at random (c2c) for the whole layer, with ``cells`` times the requested change, so the
        mean moves as asked; its write noise and pulse step reach the weight divided by
        ``cells``, and the offsets of ``N`` cells average to ``1/sqrt(N)`` of one cell's. Every
        cell has its own d2d physics (bounds, steps, faults, drift) and offset; the connectivity
        is per synapse. With ``cells > 1`` the per-synapse arrays of physics and state carry a
        leading cell axis: ``(cells, n_in + 1, n_out)``. 1 (the default): one cell, no axis.
      * ``overflow_cells`` (pulsed update models, ``cells > 1``): further cells that take, in the
        same write, the pulses that the ``±max_pulses`` clip cut from the written cell's pulse
        train: the periphery counts ``n = stochastic_round(cells · request / dw_min)`` pulses,
        sends at most ``max_pulses`` to the first cell, the rest (again at most ``max_pulses``)
        to the next, and so on over ``1 + overflow_cells`` distinct cells drawn at random for
        the whole layer (c2c). A synapse that needs no more pulses leaves the further cells
        untouched. 0 (the default): what the clip cuts is lost, Boybat et al.'s one write per
        update. Only the pulses beyond the clip travel; nothing is kept for a later write.
    """

    w_min: float = -1.0
    w_max: float = 1.0
    bound_sigma: float = 0.0
    read_gain_sigma: float = 0.0
    dw_min: float = 0.001
    dw_min_sigma: float = 0.0
    up_down: float = 0.0
    up_down_sigma: float = 0.0
    update_model: UpdateModel = "constant_step"
    max_pulses: int = 31
    step_noise: float = 0.0
    write_noise: float = 0.0
    stuck_zero_rate: float = 0.0
    stuck_bound_rate: float = 0.0
    init_scale: float = 1.0
    cells: int = 1
    overflow_cells: int = 0

    def validate(self, path: str = "synapse") -> None:
        if self.update_model not in UPDATE_MODELS:
            _fail(f"{path}.update_model", f"must be one of {', '.join(UPDATE_MODELS)}; "
                                          f"got {self.update_model!r}")
        _check_finite(f"{path}.w_min", self.w_min)
        _check_finite(f"{path}.w_max", self.w_max)
        if not (self.w_min < 0.0 < self.w_max):
            _fail(f"{path}.w_min/w_max", f"must satisfy w_min < 0 < w_max, got "
                                         f"[{self.w_min}, {self.w_max}]")
        unbounded = math.isinf(self.w_min) or math.isinf(self.w_max)
        if unbounded and self.update_model != "ideal":
            _fail(f"{path}.w_min/w_max", "may be infinite only with update_model = 'ideal'")
        if self.update_model == "soft_bounds" and unbounded:
            _fail(f"{path}.w_min/w_max", "must be finite for soft_bounds")
        for name in ("bound_sigma", "read_gain_sigma", "dw_min_sigma", "up_down_sigma",
                     "step_noise", "write_noise"):
            _check_sigma(f"{path}.{name}", getattr(self, name))
        _check_positive(f"{path}.dw_min", self.dw_min)
        _check_finite(f"{path}.up_down", self.up_down)
        if not -0.95 < self.up_down < 0.95:
            _fail(f"{path}.up_down", f"must lie in (-0.95, 0.95), got {self.up_down!r}")
        if not isinstance(self.max_pulses, int) or isinstance(self.max_pulses, bool) \
                or self.max_pulses < 1:
            _fail(f"{path}.max_pulses", f"must be an integer >= 1, got {self.max_pulses!r}")
        _check_fraction(f"{path}.stuck_zero_rate", self.stuck_zero_rate)
        _check_fraction(f"{path}.stuck_bound_rate", self.stuck_bound_rate)
        if self.stuck_zero_rate + self.stuck_bound_rate > 1.0:
            _fail(f"{path}.stuck_zero_rate+stuck_bound_rate", "must not exceed 1")
        if self.stuck_bound_rate > 0 and unbounded:
            _fail(f"{path}.stuck_bound_rate", "needs finite bounds to be stuck at")
        _check_nonnegative(f"{path}.init_scale", self.init_scale)
        if not isinstance(self.cells, int) or isinstance(self.cells, bool) or self.cells < 1:
            _fail(f"{path}.cells", f"must be an integer >= 1 (cells per synapse), got "
                                   f"{self.cells!r}")
        extra = self.overflow_cells
        if not isinstance(extra, int) or isinstance(extra, bool) or extra < 0:
            _fail(f"{path}.overflow_cells", f"must be an integer >= 0, got {extra!r}")
        if extra > 0 and self.update_model == "ideal":
            _fail(f"{path}.overflow_cells", "needs a pulsed update_model (constant_step or "
                                            "soft_bounds); 'ideal' has no pulse clip")
        if extra > 0 and extra >= self.cells:
            _fail(f"{path}.overflow_cells", f"must be below cells ({self.cells}): the overflow "
                                            f"goes to other cells of the same synapse, got "
                                            f"{extra}")
        if self.update_model == "soft_bounds":
            lo, hi = self.w_min, self.w_max
            dw = self.dw_min * math.exp(3 * self.dw_min_sigma) * (1 + abs(self.up_down) + 3 *
                                                                   self.up_down_sigma)
            if dw >= min(hi, -lo) * math.exp(-3 * self.bound_sigma):
                _fail(f"{path}.dw_min", "is too large for soft_bounds: one pulse must move less "
                                        "than the distance to a bound")


@dataclass(frozen=True)
class ReadSpec:
    """The read path of one layer: DAC → crossbar (+ noise) → neurons → ADC.

    * ``input_bound`` (digital units): full scale of the DAC; inputs are clipped to ±bound; the
      analog result is rescaled by it (see Units). ``None``: ideal, no DAC.
    * ``dac_bits``: signed mid-tread DAC with ``2^bits − 1`` levels over ±input_bound (needs
      ``input_bound``); ``None``: no quantisation.
    * ``out_noise`` (c2c, drawn at every ``measure``): std of Gaussian noise added to each
      crossbar output current, in full-scale units (aihwkit ``out_noise``; relative to the output
      range it is ``out_noise / out_bound``).
    * ``out_bound`` (full-scale units): crossbar output currents saturate at ±out_bound (aihwkit
      ``out_bound``); ``None``: no saturation.
    * ``adc_bits``: the ADC digitises neuron outputs into ``2^bits`` uniform levels over
      ``[0, adc_bound]`` (non-negative families) or ``2^bits − 1`` levels symmetric about 0 over
      ``[−adc_bound, adc_bound]`` (zero is always a level); values outside are clipped.
      ``None``: no quantisation. ``adc_bound`` (output units) defaults to
      ``out_bound · input_bound · gain``, the current range.
    * ``gain``: fixed gain of the stage that converts the crossbar's analog result to digital
      units (aihwkit's weight-to-conductance mapping). A function that needs digital weights
      ``W_d`` uses conductances ``W_d / gain``: ``gain < 1`` spreads it over more of the synapse
      range, so write noise and finite steps weigh less (noise and bounds scale with it too).
    """

    input_bound: float | None = None
    dac_bits: int | None = None
    out_noise: float = 0.0
    out_bound: float | None = None
    adc_bits: int | None = None
    adc_bound: float | None = None
    gain: float = 1.0

    def validate(self, path: str = "read") -> None:
        _check_positive(f"{path}.gain", self.gain)
        if self.input_bound is not None:
            _check_positive(f"{path}.input_bound", self.input_bound)
        _check_bits(f"{path}.dac_bits", self.dac_bits, 2)
        if self.dac_bits is not None and self.input_bound is None:
            _fail(f"{path}.dac_bits", "needs input_bound (the DAC's full scale)")
        _check_sigma(f"{path}.out_noise", self.out_noise)
        if self.out_bound is not None:
            _check_positive(f"{path}.out_bound", self.out_bound)
        _check_bits(f"{path}.adc_bits", self.adc_bits, 1)
        if self.adc_bound is not None:
            _check_positive(f"{path}.adc_bound", self.adc_bound)
        if self.adc_bits is not None and self.adc_bound is None and self.out_bound is None:
            _fail(f"{path}.adc_bits", "needs adc_bound or out_bound (the ADC's full scale)")


@dataclass(frozen=True)
class AgingSpec:
    """What time does to a device (``age(device, dt)``), for the whole device.

    * Drift: every synapse decays as ``w(t) = w(t₀') · ((t + t0) / (t' + t0))^(−ν_ij)`` between
      device times ``t'`` and ``t`` (seconds). ``drift_nu`` is the mean exponent, ``drift_nu_sigma``
      its d2d spread (absolute, per synapse; drawn values are kept >= 0). The device clock starts at
      0 at fab time; programming does not reset it (a simplification of PCM, where drift restarts
      at each write).
    * Death: every neuron has a d2d failure time, lognormal around ``lifetime`` (seconds; ``inf``:
      immortal) with log-std ``lifetime_sigma``. A failed neuron's output goes flat (0) or, for a
      fraction ``fail_noisy_fraction`` of neurons, noisy: ``|N(0, fail_noise²)|`` at every read.
    """

    drift_nu: float = 0.0
    drift_nu_sigma: float = 0.0
    drift_t0: float = 20.0
    lifetime: float = math.inf
    lifetime_sigma: float = 0.0
    fail_noisy_fraction: float = 0.0
    fail_noise: float = 1.0

    def validate(self, path: str = "aging") -> None:
        _check_nonnegative(f"{path}.drift_nu", self.drift_nu)
        _check_sigma(f"{path}.drift_nu_sigma", self.drift_nu_sigma)
        _check_positive(f"{path}.drift_t0", self.drift_t0)
        _check_positive(f"{path}.lifetime", self.lifetime, allow_inf=True)
        _check_sigma(f"{path}.lifetime_sigma", self.lifetime_sigma)
        _check_fraction(f"{path}.fail_noisy_fraction", self.fail_noisy_fraction)
        _check_nonnegative(f"{path}.fail_noise", self.fail_noise)

    @property
    def drifts(self) -> bool:
        return self.drift_nu > 0 or self.drift_nu_sigma > 0

    @property
    def mortal(self) -> bool:
        return math.isfinite(self.lifetime)


PerLayer = Any  # a sub-spec, or a tuple of them with one entry per layer


@dataclass(frozen=True)
class LayerSpec:
    """The resolved recipe of one layer (``DeviceSpec.layer(i)``)."""

    n_in: int
    n_out: int
    neuron: NeuronSpec
    connectivity: ConnectivitySpec
    synapse: SynapseSpec
    read: ReadSpec


@dataclass(frozen=True)
class DeviceSpec:
    """A fab recipe: layer widths plus the statistics of every physical effect.

    ``widths = (n_input, n_1, ..., n_L)`` gives ``L`` analog layers. ``neuron``, ``connectivity``,
    ``synapse`` and ``read`` are either one sub-spec shared by all layers or a tuple with one per
    layer. ``normalize_input``: the device's input stage divides each raw input vector by its RMS
    (Hinton's recipe), as every layer's output stage does. ``name`` labels presets.

    ``matmul_dtype`` is not physics but the simulator's arithmetic: ``float32`` (the default), or
    ``bfloat16`` to round both operands of every crossbar product (and of the products the
    learner's periphery forms for this device, ``mortal.ff``) to bfloat16 and accumulate in
    float32, as accelerators' fast matrix units do. Rounding is explicit, so it is the same on
    every backend (a CPU computes it slowly, a GPU fast); all other arithmetic stays float32.

    Recipes are frozen and hashable (they are static configuration under ``jit``) and validated on
    construction: an invalid one raises ``SpecError`` naming the field.
    """

    widths: tuple[int, ...]
    neuron: NeuronSpec | tuple[NeuronSpec, ...] = NeuronSpec()
    connectivity: ConnectivitySpec | tuple[ConnectivitySpec, ...] = ConnectivitySpec()
    synapse: SynapseSpec | tuple[SynapseSpec, ...] = SynapseSpec(update_model="ideal",
                                                                 w_min=-math.inf, w_max=math.inf)
    read: ReadSpec | tuple[ReadSpec, ...] = ReadSpec()
    aging: AgingSpec = AgingSpec()
    normalize_input: bool = True
    name: str = "custom"
    matmul_dtype: MatmulDtype = "float32"

    def __post_init__(self) -> None:
        if self.matmul_dtype not in MATMUL_DTYPES:
            _fail("matmul_dtype", f"must be one of {list(MATMUL_DTYPES)}, got "
                                  f"{self.matmul_dtype!r}")
        widths = self.widths
        if isinstance(widths, list):
            object.__setattr__(self, "widths", tuple(widths))
            widths = self.widths
        if not isinstance(widths, tuple) or len(widths) < 2:
            _fail("widths", f"must list at least an input width and one layer width, "
                            f"got {widths!r}")
        for i, w in enumerate(widths):
            if not isinstance(w, int) or isinstance(w, bool) or w < 1:
                _fail(f"widths[{i}]", f"must be a positive integer, got {w!r}")
        for name, cls in (("neuron", NeuronSpec), ("connectivity", ConnectivitySpec),
                          ("synapse", SynapseSpec), ("read", ReadSpec)):
            value = getattr(self, name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, name, value)
            items = value if isinstance(value, tuple) else (value,)
            if isinstance(value, tuple) and len(value) != self.n_layers:
                _fail(name, f"has {len(value)} entries but the device has {self.n_layers} layers")
            for item in items:
                if not isinstance(item, cls):
                    _fail(name, f"must be a {cls.__name__} (or a tuple of them), got "
                                f"{type(item).__name__}")
        if not isinstance(self.aging, AgingSpec):
            _fail("aging", f"must be an AgingSpec, got {type(self.aging).__name__}")
        for i in range(self.n_layers):
            layer = self.layer(i)
            layer.neuron.validate(f"layer {i} neuron")
            layer.connectivity.validate(layer.n_in, f"layer {i} connectivity")
            layer.synapse.validate(f"layer {i} synapse")
            layer.read.validate(f"layer {i} read")
            if layer.read.adc_bits == 1 and not layer.neuron.nonnegative:
                _fail(f"layer {i} read.adc_bits", f"must be >= 2 for the bipolar outputs of the "
                                                  f"{layer.neuron.family!r} family")
        self.aging.validate()

    @property
    def n_layers(self) -> int:
        return len(self.widths) - 1

    def layer(self, i: int) -> LayerSpec:
        """The resolved recipe of layer ``i`` (0-based)."""

        def pick(value: Any) -> Any:
            return value[i] if isinstance(value, tuple) else value

        return LayerSpec(self.widths[i], self.widths[i + 1], pick(self.neuron),
                         pick(self.connectivity), pick(self.synapse), pick(self.read))

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return tuple(self.layer(i) for i in range(self.n_layers))

    def replace(self, **changes: Any) -> DeviceSpec:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def replace_in_layers(self, part: str, **changes: Any) -> DeviceSpec:
        """A copy with fields of one per-layer part changed in every layer, whether the recipe
        gives that part once or as a per-layer tuple, e.g.
        ``spec.replace_in_layers("synapse", cells=8)`` or
        ``spec.replace_in_layers("read", input_bound=8.0)`` (validated again).

        ``part``: ``"neuron"``, ``"connectivity"``, ``"synapse"`` or ``"read"``.
        """
        if part not in _LAYER_PARTS:
            raise SpecError(f"replace_in_layers: part must be one of {', '.join(_LAYER_PARTS)}, "
                            f"got {part!r}")
        value = getattr(self, part)
        known = {f.name for f in dataclasses.fields(value[0] if isinstance(value, tuple)
                                                     else value)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise SpecError(f"replace_in_layers: {part} has no field {unknown[0]!r} (fields: "
                            f"{', '.join(sorted(known))})")
        if isinstance(value, tuple):
            return self.replace(**{part: tuple(dataclasses.replace(v, **changes) for v in value)})
        return self.replace(**{part: dataclasses.replace(value, **changes)})

    def with_widths(self, widths: tuple[int, ...]) -> DeviceSpec:
        """The same physics on other layer sizes (per-layer sub-specs must still fit)."""
        return self.replace(widths=tuple(widths))

    # ---- serialisation (for run files and the command line) -----------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (``inf`` is written as the string ``"inf"``)."""
        return _encode(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceSpec:
        """Rebuild a recipe written by ``to_dict``."""
        data = _decode(data)
        subs = {"neuron": NeuronSpec, "connectivity": ConnectivitySpec, "synapse": SynapseSpec,
                "read": ReadSpec}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in subs:
                sub = subs[key]
                kwargs[key] = (tuple(_build(sub, v) for v in value) if isinstance(value, list)
                               else _build(sub, value))
            elif key == "aging":
                kwargs[key] = _build(AgingSpec, value)
            elif key == "widths":
                kwargs[key] = tuple(value)
            else:
                kwargs[key] = value
        return cls(**kwargs)


_LAYER_PARTS = ("neuron", "connectivity", "synapse", "read")


def _build(cls: type, value: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise SpecError(f"invalid device recipe: unknown field(s) {sorted(unknown)} in "
                        f"{cls.__name__}")
    value = dict(value)
    for key in ("table", "image_shape"):
        if value.get(key) is not None:
            value[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value[key])
    return cls(**value)


def _encode(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _encode(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_encode(v) for v in obj]
    if isinstance(obj, float) and math.isinf(obj):
        return "inf" if obj > 0 else "-inf"
    return obj


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    if obj in ("inf", "-inf"):
        return float(obj)
    return obj
