"""XLA:CPU code generation: wide vectors for the element-wise device physics.

XLA compiles element-wise loops for 256-bit vectors by default, even on CPUs with AVX-512. The
``rram`` write path (hash noise, Box–Muller pairs, soft-bounds pulse updates: about a hundred
operations per synapse per step) is mostly arithmetic. On this project's AMD EPYC (AVX-512) VM,
512-bit vectors cut its loops from about 7.9 to 4.8 ms per step, and an ``rram`` training step
by 4–16 %. The ``ideal`` step, which is matrix products, is unchanged (BENCHMARKS.md, session
13).

The flag must be in ``XLA_FLAGS`` before JAX starts its CPU backend (at the first computation).
The ``mortal`` command and the benchmark scripts call ``prefer_wide_vectors()`` first thing;
library users can export ``XLA_FLAGS=--xla_cpu_prefer_vector_width=512`` themselves. Results
are deterministic for a given setting; the vector width can change the rounding of sums that
XLA vectorises, so a run is reproduced bit for bit with the same ``XLA_FLAGS`` (run files and
benchmark JSON record them) on the same kind of CPU: the same seed and flags gave other bits on
an AVX2-only EPYC than on an AVX-512 one, even at 256-bit vectors (session 31), so benchmark JSON
that is to be joined with other runs also records ``cpu_signature()``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

VECTOR_FLAG = "--xla_cpu_prefer_vector_width"


def has_avx512(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AVX-512 Foundation, from the ``flags`` line of ``/proc/cpuinfo``
    (Linux; ``False`` where that file cannot be read)."""
    for line in (_read_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.startswith("flags") and ":" in line:
            return "avx512f" in line.split(":", 1)[1].split()
    return False


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_signature(cpuinfo: str | None = None) -> dict[str, object]:
    """What decides the bits of an XLA:CPU run besides the program and ``XLA_FLAGS``: the
    machine (``platform.machine()``), the CPU model, its vector instruction sets (the ``avx*``,
    ``fma``, ``sse*`` and ``ssse3`` flags of ``/proc/cpuinfo`` on x86, every ``Features`` entry on
    ARM; sorted) and the cores this process may run on (XLA sizes its thread pool by them).
    Two runs whose signatures differ may round differently. Model and instruction sets are empty
    where ``/proc/cpuinfo`` is missing."""
    text = _read_cpuinfo() if cpuinfo is None else cpuinfo
    model, isa = "", []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "CPU part") and not model:
            model = value.strip()
        elif key == "flags" and not isa:
            isa = sorted(f for f in value.split()
                         if f.startswith(("avx", "fma", "sse")) or f == "ssse3")
        elif key == "Features" and not isa:
            isa = sorted(value.split())
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count()
    return {"machine": platform.machine(), "model": model, "isa": isa, "cores": cores}


def prefer_wide_vectors(environ: MutableMapping[str, str] | None = None,
                        cpuinfo: str | None = None) -> bool:
    """Add ``--xla_cpu_prefer_vector_width=512`` to ``XLA_FLAGS`` on an AVX-512 CPU.

    Leaves ``XLA_FLAGS`` alone where the user already chose a vector width, and on CPUs without
    AVX-512. Call it before the first JAX computation of the process (it has no effect after).
    Returns whether the flag was added.
    """
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if VECTOR_FLAG in flags or not has_avx512(cpuinfo):
        return False
    env["XLA_FLAGS"] = f"{flags} {VECTOR_FLAG}=512".strip()
    return True


def xla_flags() -> str:
    """The ``XLA_FLAGS`` this process runs with (for the records of runs and benchmarks)."""
    return os.environ.get("XLA_FLAGS", "")
