"""Populations split over several accelerators (4 simulated CPU devices in a fresh process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from mortal import parallel

SCRIPT = Path(__file__).with_name("_sharded_script.py")


@pytest.fixture(scope="module")
def results() -> dict:
    # XLA's default optimisation, as users' runs (tests/conftest.py): sharded = unsharded is
    # the bit-equality that the scale-out claims rest on
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "4",
           "JAX_DISABLE_MOST_OPTIMIZATIONS": "0"}
    r = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_sharded_training_gives_the_same_bits(results: dict) -> None:
    for n in (2, 4):
        assert results[f"train_mesh{n}_sharded"], n
        assert results[f"train_mesh{n}_identical"], n
    assert results["refit_mesh4_identical"] and results["refit_keeps_devices"]


def test_sharded_distillation_gives_the_same_bits(results: dict) -> None:
    assert results["distill_mesh4_identical"]


def test_mutual_distillation_runs_sharded_with_inserted_collectives(results: dict) -> None:
    # vmap-ed code split by XLA: the same result up to float32 rounding of a different split
    assert results["mutual_sharded_output"]
    assert results["mutual_max_readout_diff"] <= 1e-4 * max(1.0, results["mutual_readout_scale"])


def test_mesh_choice_and_errors() -> None:
    assert parallel.population_mesh(8) is None  # one visible accelerator: nothing to split
    with pytest.raises(parallel.MeshError, match="visible"):
        parallel.population_mesh(8, len(jax.devices()) + 1)


@pytest.mark.parametrize("address", ["nonsense", "127.0.0.1", "127.0.0.1:x", "127.0.0.1:0",
                                     ":1234", "127.0.0.1:65536", "127.0.0.1:-1"])
def test_a_coordinator_that_is_not_host_port_is_refused_before_jax_sees_it(address: str) -> None:
    """JAX answered such addresses with a traceback, a crash or a wait without end."""
    with pytest.raises(ValueError, match="not HOST:PORT"):
        parallel.check_coordinator(address)


def test_good_coordinators_pass_and_one_process_agrees_with_itself() -> None:
    for address in ("127.0.0.1:1234", "node-7.cluster:65535", "[::1]:8476"):
        parallel.check_coordinator(address)
    assert parallel.same_on_every_process("anything")
