"""The XLA:CPU settings that the command line and the benchmarks ask for: 512-bit vectors where
the CPU has them, and region-based copy insertion (no copies of the learner's records)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mortal.xla_cpu import (
    REGION_FLAG,
    VECTOR_FLAG,
    avoid_loop_copies,
    cpu_signature,
    has_avx512,
    numerics_flags,
    prefer_wide_vectors,
    tune,
)

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512dq avx512bw avx512_bf16\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"
ONLY_FP16 = "flags\t\t: avx2 avx512_fp16\n"  # not AVX-512 Foundation


def test_avx512_is_read_from_the_flags_line() -> None:
    assert has_avx512(ZEN4)
    assert not has_avx512(ZEN3)
    assert not has_avx512(ONLY_FP16)
    assert not has_avx512("")


def test_the_cpu_signature_tells_an_avx2_host_from_an_avx512_one() -> None:
    zen4 = cpu_signature("model name\t: AMD EPYC\n" + ZEN4 + "processor\t: 1\n" + ZEN4)
    zen3 = cpu_signature("model name\t: AMD EPYC\n" + ZEN3.replace("sse2", "sse2 ssse3 ssbd"))
    assert zen4["model"] == zen3["model"] == "AMD EPYC"
    assert zen4["isa"] == ["avx2", "avx512_bf16", "avx512bw", "avx512dq", "avx512f", "fma",
                           "sse2"]
    assert zen3["isa"] == ["avx2", "fma", "sse2", "ssse3"] and zen4 != zen3
    arm = cpu_signature("processor\t: 0\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n")
    assert arm["model"] == "0xd40" and arm["isa"] == ["asimd", "fp", "sve"]
    bare = cpu_signature("")
    assert bare["model"] == "" and bare["isa"] == [] and 1 <= bare["cores"] <= os.cpu_count()


def test_the_flag_is_added_once_and_never_over_a_users_choice() -> None:
    env: dict[str, str] = {}
    assert prefer_wide_vectors(env, ZEN4)
    assert env["XLA_FLAGS"] == f"{VECTOR_FLAG}=512"
    assert not prefer_wide_vectors(env, ZEN4)  # already there
    assert env["XLA_FLAGS"] == f"{VECTOR_FLAG}=512"
    other = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert prefer_wide_vectors(other, ZEN4)
    assert other["XLA_FLAGS"] == f"--xla_force_host_platform_device_count=4 {VECTOR_FLAG}=512"
    mine = {"XLA_FLAGS": f"{VECTOR_FLAG}=256"}
    assert not prefer_wide_vectors(mine, ZEN4) and mine["XLA_FLAGS"] == f"{VECTOR_FLAG}=256"
    none: dict[str, str] = {}
    assert not prefer_wide_vectors(none, ZEN3) and "XLA_FLAGS" not in none


def test_tune_adds_both_flags_once_and_never_over_a_users_choice() -> None:
    env: dict[str, str] = {}
    assert tune(env, ZEN4) == [f"{VECTOR_FLAG}=512", f"{REGION_FLAG}=true"]
    assert env["XLA_FLAGS"] == f"{VECTOR_FLAG}=512 {REGION_FLAG}=true"
    assert tune(env, ZEN4) == [] and env["XLA_FLAGS"] == f"{VECTOR_FLAG}=512 {REGION_FLAG}=true"
    avx2: dict[str, str] = {}
    assert tune(avx2, ZEN3) == [f"{REGION_FLAG}=true"]  # copy insertion on every CPU
    assert avx2["XLA_FLAGS"] == f"{REGION_FLAG}=true"
    off = {"XLA_FLAGS": f"{REGION_FLAG}=false"}
    assert not avoid_loop_copies(off) and off["XLA_FLAGS"] == f"{REGION_FLAG}=false"
    switched_off = {"MORTAL_XLA_TUNE": "0", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert tune(switched_off, ZEN4) == []
    assert switched_off["XLA_FLAGS"] == "--xla_force_host_platform_device_count=2"


def test_only_the_copy_insertion_flag_is_left_out_of_the_numerics() -> None:
    old = f"{VECTOR_FLAG}=512"  # a run file written before the copy-insertion flag
    assert numerics_flags(old) == numerics_flags(f"{old} {REGION_FLAG}=true")
    assert numerics_flags(f"{REGION_FLAG}=false {old}") == numerics_flags(f" {old} ")
    assert numerics_flags(old) != numerics_flags(f"{VECTOR_FLAG}=256 {REGION_FLAG}=true")
    assert numerics_flags("") != numerics_flags(old)


def test_the_command_line_sets_it_in_its_own_process_only(capsys) -> None:
    code = ("import os, sys; from mortal import cli; sys.argv = ['mortal']; cli.main(); "
            "print('FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    flags = out.rsplit("FLAGS=", 1)[1].strip()
    assert (f"{VECTOR_FLAG}=512" in flags) == has_avx512()
    assert f"{REGION_FLAG}=true" in flags
    # called with an argument list (as tests and other programs do), it leaves the host alone
    from mortal import cli

    before = os.environ.get("XLA_FLAGS")
    assert cli.main([]) == 0  # prints the usage
    assert "usage" in capsys.readouterr().out
    assert os.environ.get("XLA_FLAGS") == before


def _compiles_optimised() -> bool:
    import jax

    return not jax.config.read("jax_disable_most_optimizations")


@pytest.mark.full_optimization
def test_marked_tests_and_their_processes_compile_with_xla_default_optimisation() -> None:
    assert _compiles_optimised()
    assert os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] == "0"


def test_unmarked_tests_compile_with_most_optimisation_off() -> None:
    if os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] != "1":
        pytest.skip("JAX_DISABLE_MOST_OPTIMIZATIONS was set by whoever started the tests")
    assert not _compiles_optimised()


@pytest.mark.full_optimization
def test_region_copy_insertion_drops_the_record_copies_and_keeps_the_bits() -> None:
    """With weight decay the step reads the old record after rewriting it in place; XLA's
    default copy insertion copies every record array per step for that (4 MB per 1000 × 1000
    layer), the region-based one proves the order and copies nothing, and the trained state is
    the same to the bit (what ``numerics_flags`` relies on)."""
    import re

    import jax
    import numpy as np

    import devices
    from mortal import ff, parallel

    cfg = ff.FFConfig(epochs=2, batch_size=10, weight_decay=0.001, readout_from=0)
    assert cfg.weight_decay > 0
    spec = devices.preset("rram", (20, 16))
    steps = ff.steps_per_epoch(40, cfg)
    x = jax.random.uniform(jax.random.key(2), (40, 20))
    y = jax.random.randint(jax.random.key(3), (40,), 0, 10)
    keys, order = ff.epoch_keys(jax.random.key(1), 0, 1, cfg)
    program = parallel._train_program(cfg, ff.BENCH, None, 1)

    def trained(options: dict[str, bool] | None) -> tuple[str, list[np.ndarray]]:
        state = ff.init_population(devices.spawn(spec, 1, jax.random.key(0)), cfg, steps)
        compiled = program.lower(state, x, y, keys, order).compile(options)
        new = compiled(state, x, y, keys, order)[0]
        leaves = [jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
                  else a for a in jax.tree.leaves(new)]
        return compiled.as_text(), [np.asarray(a) for a in leaves]

    default_hlo, default_state = trained(None)
    region_hlo, region_state = trained({REGION_FLAG.removeprefix("--"): True})
    records = {"f32[1,21,16]"}

    def copied(hlo: str) -> set[str]:
        return set(re.findall(r"= (f32\[[\d,]+\])\{[\d,]+\} copy\(", hlo)) & records

    assert copied(default_hlo), "XLA's default no longer copies the records: update the docs"
    assert not copied(region_hlo), sorted(copied(region_hlo))
    assert len(default_state) == len(region_state)
    for a, b in zip(default_state, region_state, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
