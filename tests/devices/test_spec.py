"""Fab recipes: validation (one clear error naming the field), hashing, serialisation."""

from __future__ import annotations

import math

import pytest

import devices
from devices import (
    AgingSpec,
    ConnectivitySpec,
    DeviceSpec,
    NeuronSpec,
    ReadSpec,
    SpecError,
    SynapseSpec,
)

W = (12, 8, 6)

BAD_RECIPES = [
    (dict(widths=(12, -3)), "widths[1]"),
    (dict(widths=(12,)), "widths"),
    (dict(widths=(12, 2.5)), "widths[1]"),
    (dict(widths=W, neuron=NeuronSpec("sigmoidal")), "neuron.family"),
    (dict(widths=W, neuron=NeuronSpec(gain=-1.0)), "neuron.gain"),
    (dict(widths=W, neuron=NeuronSpec(gain=0.0)), "neuron.gain"),
    (dict(widths=W, neuron=NeuronSpec(gain_sigma=-0.1)), "neuron.gain_sigma"),
    (dict(widths=W, neuron=NeuronSpec(threshold_sigma=math.nan)), "neuron.threshold_sigma"),
    (dict(widths=W, neuron=NeuronSpec(sharpness=0.0)), "neuron.sharpness"),
    (dict(widths=W, neuron=NeuronSpec("tanh_sat")), "neuron.saturation"),
    (dict(widths=W, neuron=NeuronSpec("exp")), "neuron.saturation"),
    (dict(widths=W, neuron=NeuronSpec("tabulated")), "neuron.table"),
    (dict(widths=W, neuron=NeuronSpec("tabulated", table=((0, 1, 2), (0, 2, 1)))),
     "neuron.table"),
    (dict(widths=W, neuron=NeuronSpec("tabulated", table=((0, 2, 1), (0, 1, 2)))),
     "neuron.table"),
    (dict(widths=W, neuron=NeuronSpec("relu", table=((0, 1), (0, 1)))), "neuron.table"),
    (dict(widths=W, connectivity=ConnectivitySpec(density=0.0)), "connectivity.density"),
    (dict(widths=W, connectivity=ConnectivitySpec(density=1.5)), "connectivity.density"),
    (dict(widths=W, connectivity=ConnectivitySpec(receptive_field=3)),
     "connectivity.image_shape"),
    (dict(widths=W, connectivity=ConnectivitySpec(receptive_field=3, image_shape=(3, 3))),
     "connectivity.image_shape"),
    (dict(widths=W, connectivity=(ConnectivitySpec(receptive_field=9, image_shape=(3, 4)),
                                  ConnectivitySpec())), "connectivity.receptive_field"),
    (dict(widths=W, synapse=SynapseSpec(w_min=0.5)), "synapse.w_min/w_max"),
    (dict(widths=W, synapse=SynapseSpec(w_max=math.inf)), "synapse.w_min/w_max"),
    (dict(widths=W, synapse=SynapseSpec(update_model="magic")), "synapse.update_model"),
    (dict(widths=W, synapse=SynapseSpec(dw_min=0.0)), "synapse.dw_min"),
    (dict(widths=W, synapse=SynapseSpec(update_model="soft_bounds", dw_min=1.2)),
     "synapse.dw_min"),
    (dict(widths=W, synapse=SynapseSpec(max_pulses=0)), "synapse.max_pulses"),
    (dict(widths=W, synapse=SynapseSpec(stuck_zero_rate=0.7, stuck_bound_rate=0.7)),
     "stuck_zero_rate+stuck_bound_rate"),
    (dict(widths=W, synapse=SynapseSpec(up_down=0.99)), "synapse.up_down"),
    (dict(widths=W, synapse=SynapseSpec(step_noise=-1.0)), "synapse.step_noise"),
    (dict(widths=W, read=ReadSpec(dac_bits=6)), "read.dac_bits"),
    (dict(widths=W, read=ReadSpec(input_bound=1.0, dac_bits=1)), "read.dac_bits"),
    (dict(widths=W, read=ReadSpec(adc_bits=0, out_bound=1.0)), "read.adc_bits"),
    (dict(widths=W, read=ReadSpec(adc_bits=8)), "read.adc_bits"),
    (dict(widths=W, neuron=NeuronSpec("tanh_sat", saturation=1.0),
          read=ReadSpec(adc_bits=1, out_bound=1.0)), "read.adc_bits"),
    (dict(widths=W, synapse=SynapseSpec(init_scale=float("inf"))), "synapse.init_scale"),
    (dict(widths=W, read=ReadSpec(out_noise=-0.1)), "read.out_noise"),
    (dict(widths=W, read=ReadSpec(input_bound=-1.0)), "read.input_bound"),
    (dict(widths=W, aging=AgingSpec(lifetime=0.0)), "aging.lifetime"),
    (dict(widths=W, aging=AgingSpec(fail_noisy_fraction=2.0)), "aging.fail_noisy_fraction"),
    (dict(widths=W, aging=AgingSpec(drift_nu=-0.1)), "aging.drift_nu"),
    (dict(widths=W, neuron=(NeuronSpec(),)), "neuron has 1 entries"),
    (dict(widths=W, read=NeuronSpec()), "read must be a ReadSpec"),
    (dict(widths=W, matmul_dtype="float16"), "matmul_dtype"),
]


@pytest.mark.parametrize(("kwargs", "field"), BAD_RECIPES)
def test_invalid_recipe_raises_one_clear_error_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(SpecError) as info:
        DeviceSpec(**kwargs)
    message = str(info.value)
    assert field in message
    assert "\n" not in message
    assert message.startswith("invalid device recipe:")


def test_per_layer_error_names_the_layer() -> None:
    with pytest.raises(SpecError, match=r"layer 1 neuron\.gain"):
        DeviceSpec(W, neuron=(NeuronSpec(), NeuronSpec(gain=-2.0)))


def test_recipes_are_frozen_and_hashable() -> None:
    a, b = devices.preset("rram", W), devices.preset("rram", W)
    assert a == b and hash(a) == hash(b)
    assert a != devices.preset("pcm", W)
    with pytest.raises(AttributeError):
        a.widths = (1, 2)  # type: ignore[misc]


def test_per_layer_sub_specs_resolve() -> None:
    spec = DeviceSpec(W, neuron=(NeuronSpec("relu"), NeuronSpec("softplus")))
    assert spec.layer(0).neuron.family == "relu"
    assert spec.layer(1).neuron.family == "softplus"
    assert (spec.layer(1).n_in, spec.layer(1).n_out) == (8, 6)


def test_replace_in_layers_changes_every_layer_and_nothing_else() -> None:
    shared = devices.preset("rram", W)
    per_layer = shared.replace(read=(shared.read, ReadSpec(input_bound=2.0)))
    assert shared.replace_in_layers("synapse", cells=4).synapse == SynapseSpec(
        **{**shared.synapse.__dict__, "cells": 4})
    wide = per_layer.replace_in_layers("read", input_bound=8.0)
    assert [wide.layer(i).read.input_bound for i in range(2)] == [8.0, 8.0]
    assert wide.layer(1).read.gain == per_layer.layer(1).read.gain  # the rest of each layer kept
    assert wide.synapse == per_layer.synapse and wide.widths == per_layer.widths
    with pytest.raises(SpecError, match=r"synapse\.cells"):  # the new recipe is validated
        shared.replace_in_layers("synapse", cells=0)
    with pytest.raises(SpecError, match="no field 'cell'"):
        shared.replace_in_layers("synapse", cell=4)
    with pytest.raises(SpecError, match="part must be one of"):
        shared.replace_in_layers("aging", drift_t0=1.0)


def test_dict_round_trip(preset_name: str) -> None:
    spec = devices.preset(preset_name, W)
    assert DeviceSpec.from_dict(spec.to_dict()) == spec
    fast = spec.replace(matmul_dtype="bfloat16")
    assert DeviceSpec.from_dict(fast.to_dict()) == fast != spec


def test_dict_round_trip_with_tables_and_per_layer_parts() -> None:
    spec = DeviceSpec(
        (16, 4, 3),
        neuron=(NeuronSpec("tabulated", table=((-1.0, 0.0, 2.0), (0.0, 0.1, 3.0))),
                NeuronSpec("tanh_sat", saturation=2.0)),
        connectivity=(ConnectivitySpec(receptive_field=2, image_shape=(4, 4)),
                      ConnectivitySpec(density=0.5)),
    )
    assert DeviceSpec.from_dict(spec.to_dict()) == spec


def test_from_dict_rejects_unknown_fields() -> None:
    data = devices.preset("ideal", W).to_dict()
    data["synapse"]["wmax"] = 1.0
    with pytest.raises(SpecError, match="wmax"):
        DeviceSpec.from_dict(data)


def test_unknown_preset_is_a_clear_error() -> None:
    with pytest.raises(SpecError, match="unknown device preset 'nope'"):
        devices.preset("nope")
