"""Throughput of the sealed device bench interface (``devices.measure`` / ``devices.program``).

What is measured, for every preset × population size P (devices of widths 784-1000-1000-1000
unless ``--widths`` says otherwise):

* **fab**: wall time of ``devices.spawn(spec, P, key)`` (median of ``--repeats`` calls after a
  first, compiling call that is reported separately as ``fab_first_s``), and the memory
  of one device: the ``nbytes`` of every array leaf of the population pytree
  (``jax.tree.leaves``), summed and divided by P.
* **measure**: one jitted ``jax.vmap(devices.measure)`` over the population; every device reads
  the same minibatch of B inputs, shape ``(B, widths[0])``, uniform in [0, 1), float32, with its
  own read key (a fresh key is split P ways inside the jitted call). Reported as device-samples
  per second, ``P·B / t``, and as achieved GFLOP/s counting only matrix FLOPs,
  ``P · 2·B·Σ_l (n_in_l + 1)·n_out_l / t``.
* **program**: one jitted ``jax.vmap(devices.program)`` over the population; each device gets its
  own requests, ``0.01·N(0, 1)`` arrays shaped like each layer's weights ``(n_in + 1, n_out)``,
  and its own write key (fresh each call, split P ways inside the jitted call). Reported as
  programs per second, ``P / t``, and synapse updates per second,
  ``P · Σ_l (n_in_l + 1)·n_out_l / t``.
  The call returns the whole new population (a learner's view); it is not donated or fed back.

How: each jitted function is compiled and run once (warm-up, ``jax.block_until_ready``); then
``--repeats`` calls are timed one by one with ``time.perf_counter`` around the call followed by
``jax.block_until_ready``, each call with a fresh PRNG key, and the median is reported. The
timed code contains no Python loop over devices (vmap only). Each population is deleted and
garbage-collected before the next one is built. Timings are only as quiet as the machine: the
JSON records the load average at start and end (``loadavg_start`` / ``loadavg_end``), and the
per-call times, so that a run disturbed by other processes can be recognised.

Reproduce (from the repository root; the full run takes several minutes on 2 CPU cores)::

    python scripts/bench_devices.py
    python scripts/bench_devices.py --quick          # smoke test: P 1 2, widths 64-32-32

Results: a plain-text table on stdout and JSON at ``--out`` (default
``scripts/results/bench_devices.json``) with the rows, the command line, library versions, the
JAX devices, CPU info, load averages, a UTC timestamp, the git revision and any uncommitted
changes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # let ``python scripts/bench_devices.py`` find the package
    sys.path.insert(0, str(_ROOT))
sys.path.insert(0, str(_ROOT / "scripts"))

from _entry import run_script  # noqa: E402

import devices  # noqa: E402
from mortal.xla_cpu import xla_flags  # noqa: E402

Array = jax.Array

DEFAULT_OUT = "scripts/results/bench_devices.json"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64],
                   help="population sizes P (default: 1 8 64)")
    p.add_argument("--presets", nargs="+", default=["ideal", "rram"],
                   choices=sorted(devices.PRESETS), help="device presets (default: ideal rram)")
    p.add_argument("--batch", type=int, default=100, help="minibatch size B (default: 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement "
                   "(median reported; default: 5)")
    p.add_argument("--widths", type=int, nargs="+", default=list(devices.REFERENCE_WIDTHS),
                   help="layer widths (default: 784 1000 1000 1000)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"JSON output path (default: {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: sizes 1 2, widths 64 32 32, repeats 2")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.widths, args.repeats = [1, 2], [64, 32, 32], 2
    if args.repeats < 1 or args.batch < 1 or min(args.sizes) < 1:
        p.error("--repeats, --batch and --sizes must be positive")
    return args


def timed(fn: Callable[..., Any], args: tuple[Any, ...], keys: Sequence[Array]
          ) -> tuple[float, list[float]]:
    """Warm up ``fn(*args, keys[0])`` (compile + run), then time ``fn(*args, k)`` for each later
    key.

    Returns (seconds of the warm-up call, per-call seconds of the timed calls). Each result is
    dropped before the next call so that at most one output is alive at a time.
    """
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args, keys[0]))
    first = time.perf_counter() - t0
    times = []
    for k in keys[1:]:
        t0 = time.perf_counter()
        out = fn(*args, k)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        del out
    return first, times


def tree_nbytes(tree: Any) -> int:
    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(tree))


def bench_one(name: str, widths: tuple[int, ...], P: int, batch: int, repeats: int,
              key: Array) -> dict[str, Any]:
    spec = devices.preset(name, widths)
    k_fab, k_x, k_req, k_read, k_write = jax.random.split(key, 5)
    synapses = sum((n_in + 1) * n_out for n_in, n_out in itertools.pairwise(widths))
    flops_per_call = 2 * batch * synapses * P  # matrix FLOPs only, bias line counted as an input

    # --- fab: spawn (first call compiles), then median over fresh keys; keep only the last one.
    fab_keys = list(jax.random.split(k_fab, repeats + 1))
    t0 = time.perf_counter()
    pop = jax.block_until_ready(devices.spawn(spec, P, fab_keys[0]))
    fab_first = time.perf_counter() - t0
    fab_times = []
    for k in fab_keys[1:]:
        del pop
        gc.collect()
        t0 = time.perf_counter()
        pop = devices.spawn(spec, P, k)
        jax.block_until_ready(pop)
        fab_times.append(time.perf_counter() - t0)
    mb_per_device = tree_nbytes(pop) / P / 1e6

    # --- measure: every device reads the same minibatch, each with its own read key.
    x = jax.random.uniform(k_x, (batch, widths[0]), jnp.float32)

    @jax.jit
    def measure_pop(pop: devices.Device, x: Array, key: Array) -> devices.Measurement:
        keys = jax.random.split(key, P)
        return jax.vmap(lambda d, k: devices.measure(d, x, key=k))(pop, keys)

    meas_first, meas_times = timed(measure_pop, (pop, x),
                                   list(jax.random.split(k_read, repeats + 1)))
    t_meas = statistics.median(meas_times)

    # --- program: per-device requests shaped like the weights, per-device write keys.
    req_keys = jax.random.split(k_req, len(widths) - 1)
    requests = tuple(
        0.01 * jax.random.normal(k, (P, n_in + 1, n_out), jnp.float32)
        for k, (n_in, n_out) in zip(req_keys, itertools.pairwise(widths), strict=True))
    jax.block_until_ready(requests)

    @jax.jit
    def program_pop(pop: devices.Device, requests: tuple[Array, ...], key: Array
                    ) -> devices.Device:
        keys = jax.random.split(key, P)
        return jax.vmap(lambda d, r, k: devices.program(d, r, key=k))(pop, requests, keys)

    prog_first, prog_times = timed(program_pop, (pop, requests),
                                   list(jax.random.split(k_write, repeats + 1)))
    t_prog = statistics.median(prog_times)

    del pop, requests, x
    gc.collect()
    return {
        "preset": name,
        "P": P,
        "batch": batch,
        "widths": list(widths),
        "synapses_per_device": synapses,
        "fab_first_s": fab_first,
        "fab_s": statistics.median(fab_times),
        "fab_times_s": fab_times,
        "mb_per_device": mb_per_device,
        "measure_first_s": meas_first,
        "measure_s": t_meas,
        "measure_times_s": meas_times,
        "measure_device_samples_per_s": P * batch / t_meas,
        "measure_gflops": flops_per_call / t_meas / 1e9,
        "program_first_s": prog_first,
        "program_s": t_prog,
        "program_times_s": prog_times,
        "programs_per_s": P / t_prog,
        "synapse_updates_per_s": P * synapses / t_prog,
    }


COLUMNS = [  # (header, row key, format)
    ("preset", "preset", "{:<7}"),
    ("P", "P", "{:>4}"),
    ("fab s", "fab_s", "{:>8.3f}"),
    ("MB/dev", "mb_per_device", "{:>8.2f}"),
    ("meas smp/s", "measure_device_samples_per_s", "{:>11.4g}"),
    ("meas GFLOP/s", "measure_gflops", "{:>12.2f}"),
    ("prog/s", "programs_per_s", "{:>9.4g}"),
    ("syn upd/s", "synapse_updates_per_s", "{:>10.4g}"),
]


def format_row(row: dict[str, Any]) -> str:
    return "  ".join(fmt.format(row[key]) for _, key, fmt in COLUMNS)


def header() -> str:
    widths = [len(fmt.format(0 if key != "preset" else "")) for _, key, fmt in COLUMNS]
    cells = [h.ljust(w) if i == 0 else h.rjust(w)
             for i, ((h, _, _), w) in enumerate(zip(COLUMNS, widths, strict=True))]
    return "  ".join(cells)


def git(*args: str) -> str | None:
    """Output of ``git args...`` in the repository, or ``None`` if git fails."""
    try:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True,
                             check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def loadavg() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def environment() -> dict[str, Any]:
    return {
        "argv": list(sys.argv),
        "timestamp_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_revision": (git("rev-parse", "HEAD") or "").strip() or None,
        # uncommitted changes the run included (``git status --porcelain``; None if git failed)
        "git_dirty": None if (st := git("status", "--porcelain")) is None else st.splitlines(),
        "python": sys.version,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "xla_flags": xla_flags(),
        "numpy": np.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [f"{d} ({d.platform}, {d.device_kind})" for d in jax.devices()],
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": loadavg(),  # other work on the machine skews timings: check this
    }


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600; give it a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    widths = tuple(args.widths)
    env = environment()
    print(f"jax {env['jax']} on {', '.join(env['jax_devices'])}; {env['cpu_count']} CPUs "
          f"({env['cpu_model']}); widths {'-'.join(map(str, widths))}, B={args.batch}, "
          f"median of {args.repeats}", flush=True)
    print(header(), flush=True)
    rows = []
    key = jax.random.key(0)
    for i, name in enumerate(args.presets):
        for j, P in enumerate(args.sizes):
            row = bench_one(name, widths, P, args.batch, args.repeats,
                            jax.random.fold_in(jax.random.fold_in(key, i), j))
            rows.append(row)
            print(format_row(row), flush=True)
    env["loadavg_end"] = loadavg()
    out = Path(args.out)
    if not out.is_absolute():
        out = Path.cwd() / out
    write_json_atomic(out, {
        "description": "devices bench-interface throughput; see scripts/bench_devices.py",
        "config": {"sizes": args.sizes, "presets": args.presets, "batch": args.batch,
                   "repeats": args.repeats, "widths": list(widths), "quick": args.quick},
        "environment": env,
        "rows": rows,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    run_script(main)
