"""The vector-width setting of XLA:CPU that the command line and the benchmarks ask for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mortal.xla_cpu import VECTOR_FLAG, cpu_signature, has_avx512, prefer_wide_vectors

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


def test_the_command_line_sets_it_in_its_own_process_only(capsys) -> None:
    code = ("import os, sys; from mortal import cli; sys.argv = ['mortal']; cli.main(); "
            "print('FLAGS=' + os.environ.get('XLA_FLAGS', ''))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    flags = out.rsplit("FLAGS=", 1)[1].strip()
    assert (f"{VECTOR_FLAG}=512" in flags) == has_avx512()
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
