"""Where the `rram` training step spends the time that an `ideal` step does not.

Two tables, one JSON file (``scripts/results/rram_step_profile.json``):

* **Step variants**: one 784-1000-1000-1000 device, the command line's training program
  (``parallel.population_epoch``, ``lax.map`` over the population of 1) over ``--steps``
  minibatches of B = 100 in one ``lax.scan``, median of ``--repeats`` calls after a compiling
  one; milliseconds per step. Rows: ``ideal``, ``rram``, and ``rram`` with one part of its
  physics replaced at a time (no write noise, no step noise, constant steps instead of soft
  bounds, no d2d spread, ``ideal`` synapses, the ``ideal`` read path, ``ideal`` neurons), and
  ``rram`` with 8 cells per synapse (``SynapseSpec.cells``).
* **Elementwise costs**: what the write path computes per synapse, timed alone on a
  1001×1000 float32 array (median of 30 jitted calls): a hash uniform, a hash normal and a
  Box–Muller pair from ``devices._noise`` (and the inverse-error-function normal it replaced),
  the soft-bounds power by repeated squaring (and the ``exp(n·log1p(x))`` it replaced), ``sin``,
  and a 6-in / 1-out sum (memory bandwidth).
* **XLA operations** (``--trace``): the timed steps (without ``--only``: ``ideal`` and
  ``rram``) run under ``jax.profiler.trace``, and the time of every compiled operation (matrix
  products, each fused element-wise loop, copies) is summed per step: milliseconds per step per
  operation name, as XLA named them in that compilation (``ynn_fusion``: matrix products through
  XNNPACK).

Reproduce (about 3 minutes on 2 CPU cores; run nothing else meanwhile)::

    python scripts/rram_step_profile.py
    python scripts/rram_step_profile.py --only ideal rram --trace --out /tmp/trace.json

The script asks XLA for 512-bit vectors on AVX-512 CPUs (``mortal.xla_cpu``); for XLA's default,
``XLA_FLAGS=--xla_cpu_prefer_vector_width=256 python scripts/rram_step_profile.py``.
"""

from __future__ import annotations

import argparse
import collections
import gc
import glob
import gzip
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))
import bench  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _entry import run_script  # noqa: E402
from _record import write_json  # noqa: E402
from _revision import git_revision  # noqa: E402

import devices  # noqa: E402
from devices import _noise, _write  # noqa: E402
from mortal import ff, parallel  # noqa: E402
from mortal.xla_cpu import xla_flags  # noqa: E402

WIDTHS = (784, 1000, 1000, 1000)
B = bench.B


def variants() -> dict[str, devices.DeviceSpec]:
    rram, ideal = devices.preset("rram", WIDTHS), devices.preset("ideal", WIDTHS)

    def with_synapse(**changes: Any) -> devices.DeviceSpec:
        return rram.replace_in_layers("synapse", **changes)

    return {
        "ideal": ideal,
        "rram": rram,
        "rram, no write noise": with_synapse(write_noise=0.0),
        "rram, no step noise": with_synapse(step_noise=0.0),
        "rram, constant steps": with_synapse(update_model="constant_step"),
        "rram, no d2d spread": with_synapse(bound_sigma=0.0, dw_min_sigma=0.0,
                                            up_down_sigma=0.0),
        "rram, ideal synapses": rram.replace(synapse=ideal.synapse),
        "rram, ideal read path": rram.replace(read=ideal.read),
        "rram, ideal neurons": rram.replace(neuron=ideal.neuron),
        "rram, 8 cells": with_synapse(cells=8),
    }


def step_ms(spec: devices.DeviceSpec, steps: int, repeats: int) -> list[float]:
    """Milliseconds per training step, one value per timed call."""
    cfg = ff.FFConfig(epochs=10)
    state = ff.init_population(devices.spawn(spec, 1, jax.random.key(0)), cfg, steps)
    x, y = bench._data(steps, WIDTHS[0])
    keys, order = ff.epoch_keys(jax.random.key(1), 0, 1, cfg)
    held = [state]  # each call continues from the last one's state, as in training
    del state

    def fn() -> Any:
        held[0], metrics = parallel.population_epoch(held[0], x, y, keys, order, cfg=cfg,
                                                     bench=ff.BENCH, mesh=None)
        return held[0], metrics

    _, times = bench.timed(fn, repeats=repeats)
    held.clear()
    gc.collect()
    return [1000 * t / steps for t in times]


def operation_ms(spec: devices.DeviceSpec, steps: int) -> dict[str, float]:
    """Milliseconds per training step of each compiled XLA operation (summed over its calls),
    from a ``jax.profiler`` trace of three calls of ``steps`` steps; largest first. Operations
    that ran fewer times than there were steps (set-up, data) are left out."""
    step_ms(spec, steps, 1)  # compile outside the trace
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            step_ms(spec, steps, 2)
        files = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
        with gzip.open(max(files, key=os.path.getmtime)) as f:
            events = json.load(f)["traceEvents"]
    total: collections.Counter[str] = collections.Counter()
    calls: collections.Counter[str] = collections.Counter()
    for e in events:
        name = e.get("name", "")
        # compiled operations only: Python frames start with "$", the runtime's own spans
        # (executor, thread pool, dispatch) are named in CamelCase words with "::" or "("
        if e.get("ph") != "X" or name.startswith("$") or "::" in name or "(" in name:
            continue
        total[name] += e["dur"]
        calls[name] += 1
    per_step = 3 * steps  # step_ms(..., 2) inside the trace: a warm call and two timed ones
    return {k: v / 1000 / per_step for k, v in total.most_common() if calls[k] >= per_step}


def elementwise_ms() -> dict[str, float]:
    shape = (1001, 1000)
    key = jax.random.key(0)
    u = jax.random.uniform(key, shape, minval=0.01, maxval=0.99)
    arrays = [jax.random.normal(jax.random.key(i), shape) for i in range(6)]
    cases: dict[str, tuple[Callable[..., Any], tuple[Any, ...]]] = {
        "hash uniform": (lambda k: _noise.uniform(k, shape), (key,)),
        "hash normal (halves of Box-Muller pairs)": (lambda k: _noise.normal(k, shape), (key,)),
        "hash normal pair (Box-Muller, both)": (lambda k: sum(_noise.normal_pair(k, shape)),
                                                (key,)),
        "hash normal (erf_inv, the old generator)": (
            lambda k: np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(
                2.0 * _noise.uniform(k, shape) + np.float32(2.0**-24 - 1.0)), (key,)),
        "exp(n·log1p(x))": (lambda a: jnp.exp(3.0 * jnp.log1p(-0.01 * a)), (u,)),
        "(1 - x)^n by squaring (n <= 31)": (
            lambda a: _write._integer_power(1.0 - 0.01 * a, jnp.floor(31.0 * a), 31), (u,)),
        "sin": (jnp.sin, (u,)),
        "sum of 6 arrays (28 MB moved)": (lambda *a: sum(a), tuple(arrays)),
    }
    out = {}
    for name, (fn, args) in cases.items():
        f = jax.jit(fn)
        out[name] = 1000 * bench.timed(f, *args, repeats=30)[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="minibatches per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" /
                                             "rram_step_profile.json"))
    parser.add_argument("--only", nargs="+", choices=list(variants()), metavar="VARIANT",
                        help="time only these step variants (quote names with spaces)")
    parser.add_argument("--trace", action="store_true",
                        help="also time every XLA operation of the timed steps (without "
                             "--only: the ideal and rram steps)")
    parser.add_argument("--no-elementwise", action="store_true",
                        help="skip the elementwise table")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]), "git_revision": git_revision(ROOT),
        "jax": jax.__version__, "xla_flags": xla_flags(), "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()), "widths": list(WIDTHS), "batch": B,
        "steps": args.steps, "step_ms": {}, "elementwise_ms_per_1M": {},
    }
    for name, spec in variants().items():
        if args.only and name not in args.only:
            continue
        times = step_ms(spec, args.steps, args.repeats)
        result["step_ms"][name] = {"median": statistics.median(times), "times": times}
        print(f"{name:<24} {statistics.median(times):6.1f} ms/step", flush=True)
    if args.trace:
        result["operation_ms_per_step"] = {name: operation_ms(variants()[name], args.steps)
                                           for name in (args.only or ("ideal", "rram"))}
    if not args.no_elementwise:
        result["elementwise_ms_per_1M"] = elementwise_ms()
    result["loadavg_end"] = list(os.getloadavg())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    print(f"\n{'training step, 784-1000-1000-1000, B = 100':<44} {'ms':>6}")
    for name, row in result["step_ms"].items():
        print(f"{name:<44} {row['median']:6.1f}")
    for name, ops in result.get("operation_ms_per_step", {}).items():
        print(f"\n{name + ': XLA operations, ms per step':<44} {'ms':>6}   (sum "
              f"{sum(ops.values()):.1f})")
        for op, ms in list(ops.items())[:15]:
            print(f"{op:<44} {ms:6.2f}")
    print(f"\n{'elementwise, 1001x1000 float32':<44} {'ms':>6}")
    for name, ms in result["elementwise_ms_per_1M"].items():
        print(f"{name:<44} {ms:6.2f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    run_script(main)
