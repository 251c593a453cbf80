"""Named fab recipes: ``ideal`` plus device-like ones modelled on published figures.

Synapse and converter numbers come from IBM aihwkit's presets as summarised in the project's
``REFERENCES.md`` (analog section; it lies in the ``shared/`` folder beside the repository,
not in the repository itself). The analog *neurons* are not covered by those figures: their
families and mismatch (a few to ~10 % in gain, threshold offsets of a few % of a typical current)
are assumptions, chosen so that each preset exercises a different curve family. Lifetimes are
assumptions too (orders of magnitude), so that devices are mortal.

Every preset takes the layer widths; the default is Hinton's reference net 784-1000-1000-1000.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from ._spec import (
    AgingSpec,
    ConnectivitySpec,
    DeviceSpec,
    NeuronSpec,
    ReadSpec,
    SpecError,
    SynapseSpec,
)

REFERENCE_WIDTHS = (784, 1000, 1000, 1000)

# aihwkit default periphery (REFERENCES.md): 7-bit DAC, 9-bit ADC, output noise 0.06 in
# normalised current units, output bound 12. Inputs of a layer are RMS-normalised activities whose
# peaks rarely exceed ~4, so the DAC's full scale is set there (aihwkit instead rescales each input
# vector by its max, a digital trick that does not commute with non-linear analog neurons).
_AIHWKIT_READ = ReadSpec(input_bound=4.0, dac_bits=7, out_noise=0.06, out_bound=12.0, adc_bits=9)


def ideal(widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """Digital Forward-Forward exactly (ReLU, dense, noiseless, exact float updates).

    ReLU neurons without variation, dense crossbars with a bias line, no noise, no converters,
    unbounded float weights updated exactly, immortal."""
    return DeviceSpec(
        widths=tuple(widths),
        neuron=NeuronSpec("relu"),
        connectivity=ConnectivitySpec(),
        synapse=SynapseSpec(update_model="ideal", w_min=-math.inf, w_max=math.inf),
        read=ReadSpec(),
        aging=AgingSpec(),
        name="ideal",
    )


def rram(widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """ReRAM crossbar, soft-bounds model.

    Synapses (aihwkit ``ReRamSBPresetDevice``, a loose fit to Gong et al., Nat. Commun. 2018):
    ``dw_min`` 0.002, range [−0.75, 1.25], d2d of step 30 %, d2d of bounds 0.3/1.25 = 24 %,
    up/down d2d 0.01, c2c of step 375 % (``step_noise`` 3.75), write noise 56 × ``dw_min``;
    at most 31 pulses per update (aihwkit's default pulse train).
    Periphery: aihwkit defaults (7-bit DAC, 9-bit ADC, output noise 0.06, output bound 12).
    Neurons (assumed): diode-like ``softplus``, gain mismatch 10 %, threshold offset σ 0.05,
    sharpness 10 %. Aging (assumed): ReRAM retention drift is small, ν = 0.005 ± 0.002; neurons
    live ~3 years (1e8 s, log-σ 0.5), a fifth of the dead ones fail noisy.
    """
    return DeviceSpec(
        widths=tuple(widths),
        neuron=NeuronSpec("softplus", sharpness=4.0, gain_sigma=0.1, threshold_sigma=0.05,
                          sharpness_sigma=0.1),
        connectivity=ConnectivitySpec(),
        synapse=SynapseSpec(w_min=-0.75, w_max=1.25, bound_sigma=0.24, dw_min=0.002,
                            dw_min_sigma=0.3, up_down_sigma=0.01, update_model="soft_bounds",
                            max_pulses=31, step_noise=3.75, write_noise=56.0,
                            read_gain_sigma=0.0),
        read=_AIHWKIT_READ,
        aging=AgingSpec(drift_nu=0.005, drift_nu_sigma=0.002, lifetime=1e8, lifetime_sigma=0.5,
                        fail_noisy_fraction=0.2),
        name="rram",
    )


def pcm(widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """Phase-change memory, each weight a differential pair of one-sided cells.

    Synapses (aihwkit PCM preset figures in REFERENCES.md): ``dw_min`` 0.01 (≈ 50 effective states
    under soft bounds), d2d of step 20 %, c2c of step 60 %; the pair difference spans [−1, 1]
    (each cell [0, 1]; refresh of saturated pairs is not modelled), bound d2d 10 % (assumed).
    Drift (REFERENCES.md, PCM): ``g(t) = g0 ((t + t0)/t0)^(−ν)``, t0 = 20 s, ν ≈ 0.05–0.1:
    ν = 0.075 ± 0.02 per synapse. Periphery: aihwkit defaults, the ADC spanning the neurons' range.
    Neurons (assumed): ``square_law`` (transistor in saturation), gain mismatch 10 %, threshold
    σ 0.05, saturating at 8 ± 10 %. Lifetime (assumed): ~1 year (3e7 s, log-σ 0.5).
    """
    return DeviceSpec(
        widths=tuple(widths),
        neuron=NeuronSpec("square_law", gain=1.0, sharpness=1.0, saturation=8.0,
                          gain_sigma=0.1, threshold_sigma=0.05, sharpness_sigma=0.05,
                          saturation_sigma=0.1),
        synapse=SynapseSpec(w_min=-1.0, w_max=1.0, bound_sigma=0.1, dw_min=0.01,
                            dw_min_sigma=0.2, update_model="soft_bounds", max_pulses=31,
                            step_noise=0.6),
        read=dataclasses.replace(_AIHWKIT_READ, adc_bound=8.0),  # the ADC spans the neurons' range
        aging=AgingSpec(drift_nu=0.075, drift_nu_sigma=0.02, drift_t0=20.0, lifetime=3e7,
                        lifetime_sigma=0.5, fail_noisy_fraction=0.2),
        name="pcm",
    )


def ecram(widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """Electrochemical RAM (Li-based), near-linear symmetric steps.

    Synapses (aihwkit ``EcRamPresetDevice``, fit to Tang et al., IEDM 2018): ``dw_min`` 0.002,
    range [−0.83, 1.17], d2d of step 10 %, d2d of bounds 5 %, up/down d2d 0.01, c2c of step 30 %,
    no write noise; modelled as constant steps (its fitted slope terms are small). Periphery:
    aihwkit defaults. Neurons (assumed): ``relu`` with gain mismatch 5 % and threshold σ 0.02.
    Aging (assumed): no drift; neurons live ~4 months (1e7 s, log-σ 0.5), failing flat.
    """
    return DeviceSpec(
        widths=tuple(widths),
        neuron=NeuronSpec("relu", gain_sigma=0.05, threshold_sigma=0.02),
        synapse=SynapseSpec(w_min=-0.83, w_max=1.17, bound_sigma=0.05, dw_min=0.002,
                            dw_min_sigma=0.1, up_down_sigma=0.01, update_model="constant_step",
                            max_pulses=31, step_noise=0.3),
        read=_AIHWKIT_READ,
        aging=AgingSpec(lifetime=1e7, lifetime_sigma=0.5),
        name="ecram",
    )


def harsh(widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """A stress recipe (not a real technology): every effect at once and strong.

    Saturating ``tanh_sat`` neurons with 30 % gain and saturation (rail) mismatch and threshold
    σ 0.2; half the synapses missing; 2 % stuck at zero and 2 % at a bound; ReRAM-like soft-bounds
    synapses with 50 % step and 20 % read-gain mismatch, asymmetry 0.2 ± 0.1; 5-bit DAC, 6-bit ADC
    over the neurons' rails, output noise 0.1; PCM-like drift; neurons die within ~a day (1e5 s).
    """
    return DeviceSpec(
        widths=tuple(widths),
        neuron=NeuronSpec("tanh_sat", saturation=4.0, gain_sigma=0.3, threshold_sigma=0.2,
                          saturation_sigma=0.3),
        connectivity=ConnectivitySpec(density=0.5),
        synapse=SynapseSpec(w_min=-1.0, w_max=1.0, bound_sigma=0.3, read_gain_sigma=0.2,
                            dw_min=0.005, dw_min_sigma=0.5, up_down=0.2, up_down_sigma=0.1,
                            update_model="soft_bounds", max_pulses=15, step_noise=1.0,
                            write_noise=5.0, stuck_zero_rate=0.02, stuck_bound_rate=0.02),
        read=ReadSpec(input_bound=4.0, dac_bits=5, out_noise=0.1, out_bound=8.0, adc_bits=6,
                      adc_bound=4.0),
        aging=AgingSpec(drift_nu=0.1, drift_nu_sigma=0.05, lifetime=1e5, lifetime_sigma=1.0,
                        fail_noisy_fraction=0.5),
        name="harsh",
    )


PRESETS: dict[str, Callable[..., DeviceSpec]] = {
    "ideal": ideal, "rram": rram, "pcm": pcm, "ecram": ecram, "harsh": harsh,
}


def preset(name: str, widths: tuple[int, ...] = REFERENCE_WIDTHS) -> DeviceSpec:
    """The named recipe on the given layer widths. Raises ``SpecError`` for an unknown name."""
    if name not in PRESETS:
        raise SpecError(f"unknown device preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name](tuple(widths))
