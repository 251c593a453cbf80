"""XLA:CPU settings: wide vectors for the device physics, and no needless copies in the loops.

Two flags, both in ``XLA_FLAGS`` before JAX starts its CPU backend (at the first computation).
The ``mortal`` command and the benchmark scripts call ``tune()`` first thing (``MORTAL_XLA_TUNE=0``
in the environment turns it off); library users can export the flags themselves, or call
``tune()`` before JAX starts (it has no effect after).

* ``--xla_cpu_prefer_vector_width=512``, on CPUs with AVX-512 only. XLA compiles element-wise
  loops for 256-bit vectors by default. The ``rram`` write path (hash noise, Box–Muller pairs,
  soft-bounds pulse updates: about a hundred operations per synapse per step) is mostly
  arithmetic. On this project's AMD EPYC (AVX-512) VM, 512-bit vectors cut its loops from about
  7.9 to 4.8 ms per step, and an ``rram`` training step by 4–16 %. The ``ideal`` step, which is
  matrix products, is unchanged (BENCHMARKS.md, session 13). The vector width can change the
  rounding of sums that XLA vectorises.
* ``--xla_cpu_copy_insertion_use_region_analysis=true``, on every CPU. XLA's default copy
  insertion keeps a copy of an array that a loop both reads and rewrites whenever it cannot
  prove the reads come first. With weight decay (the reference recipe's 0.001) that was every
  layer's record of what the learner sent, 4 MB per 1000 × 1000 layer, copied in every step.
  The region-based analysis proves the order and drops those copies. It decides only which
  buffers are copied, not what is computed: the same bits (tested, and the demo's run file and
  the 1000-wide ``ideal``, ``rram`` and 8-cell recipes compared array for array,
  BENCHMARKS.md, session 48).

Results are deterministic for given flags. A run is reproduced bit for bit with the same vector
width (run files and benchmark JSON record ``XLA_FLAGS``) on the same kind of CPU: the same seed
and flags gave other bits on an AVX2-only EPYC than on an AVX-512 one, even at 256-bit vectors
(session 31), so benchmark JSON that is to be joined with other runs also records
``cpu_signature()``.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

VECTOR_FLAG = "--xla_cpu_prefer_vector_width"
REGION_FLAG = "--xla_cpu_copy_insertion_use_region_analysis"
TUNE_SWITCH = "MORTAL_XLA_TUNE"  # "0": tune() adds no flag


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


def avoid_loop_copies(environ: MutableMapping[str, str] | None = None) -> bool:
    """Add ``--xla_cpu_copy_insertion_use_region_analysis=true`` to ``XLA_FLAGS``, unless the
    user already set that flag either way. Call it before the first JAX computation of the
    process (it has no effect after). Returns whether the flag was added."""
    env = os.environ if environ is None else environ
    flags = env.get("XLA_FLAGS", "")
    if REGION_FLAG in flags:
        return False
    env["XLA_FLAGS"] = f"{flags} {REGION_FLAG}=true".strip()
    return True


def tune(environ: MutableMapping[str, str] | None = None, cpuinfo: str | None = None
         ) -> list[str]:
    """Both settings of this module (``prefer_wide_vectors`` and ``avoid_loop_copies``), each
    only where the user has not chosen it; none where ``MORTAL_XLA_TUNE=0`` (for an XLA that
    no longer knows a flag: XLA stops the process at an unknown one). Returns the flags added."""
    env = os.environ if environ is None else environ
    if env.get(TUNE_SWITCH, "1").strip() == "0":
        return []
    added = []
    if prefer_wide_vectors(env, cpuinfo):
        added.append(f"{VECTOR_FLAG}=512")
    if avoid_loop_copies(env):
        added.append(f"{REGION_FLAG}=true")
    return added


def numerics_flags(flags: str) -> list[str]:
    """The settings of an ``XLA_FLAGS`` string that can change a result's bits: every flag but
    the copy-insertion analysis, sorted. Two runs whose lists are equal compute the same bits on
    the same kind of CPU."""
    return sorted(f for f in flags.split() if f.split("=", 1)[0] != REGION_FLAG)


def xla_flags() -> str:
    """The ``XLA_FLAGS`` this process runs with (for the records of runs and benchmarks)."""
    return os.environ.get("XLA_FLAGS", "")
