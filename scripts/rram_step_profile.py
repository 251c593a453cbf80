"""Where the `rram` training step spends the time that an `ideal` step does not.

Two tables, one JSON file (``scripts/results/rram_step_profile.json``):

* **Step variants**: one 784-1000-1000-1000 device, the command line's training program
  (``parallel.population_epoch``, ``lax.map`` over the population of 1) over ``--steps``
  minibatches of B = 100 in one ``lax.scan``, median of ``--repeats`` calls after a compiling
  one; milliseconds per step. Rows: ``ideal``, ``rram``, and ``rram`` with one part of its
  physics replaced at a time (no write noise, no step noise, constant steps instead of soft
  bounds, no d2d spread, ``ideal`` synapses, the ``ideal`` read path, ``ideal`` neurons), and
  ``rram`` with 8 cells per synapse (``SynapseSpec.cells``), with and without one overflow cell.
  All of these run the benchmark learner (``ff.FFConfig(epochs=10)``). Two more rows (only with
  ``--only``) run the issue-3 ``rram`` recipe, device and learner, as ``ff_benchmarks.py
  mnist-rram --cells 8 --input-bound 8 --overflow-cells 1`` and the settings of
  docs/results.md, session 45 (goodness-belief negatives: an all-label pass of 10 · B rows per
  step), with and without its overflow cell.
* **Elementwise costs**: what the write path computes per synapse, timed alone on a
  1001×1000 float32 array (median of 30 jitted calls): a hash uniform, a hash normal and a
  Box–Muller pair from ``devices._noise`` (and the inverse-error-function normal it replaced),
  the soft-bounds power by repeated squaring (and the ``exp(n·log1p(x))`` it replaced), ``sin``,
  and a 6-in / 1-out sum (memory bandwidth).
* **Memory traffic alone** (``--floor``): the arrays a step's device work reads and writes,
  with no arithmetic to speak of, for ``ideal`` and ``rram`` (``traffic_floor_ms``); with the
  ``ideal`` step timed too, the least ``rram`` / ``ideal`` ratio that traffic allows.
* **XLA operations** (``--trace``): the timed steps (without ``--only``: ``ideal`` and
  ``rram``) run under ``jax.profiler.trace``, and the time of every compiled operation (matrix
  products, each fused element-wise loop, copies) is summed per step: milliseconds per step per
  operation name, as XLA named them in that compilation (``ynn_fusion``: matrix products through
  XNNPACK).

Reproduce (about 3 minutes on 2 CPU cores; run nothing else meanwhile)::

    python scripts/rram_step_profile.py
    python scripts/rram_step_profile.py --only ideal rram --trace --out /tmp/trace.json
    python scripts/rram_step_profile.py --only ideal rram --floor --no-elementwise

The script asks XLA for 512-bit vectors on AVX-512 CPUs (``mortal.xla_cpu``); for XLA's default,
``XLA_FLAGS=--xla_cpu_prefer_vector_width=256 python scripts/rram_step_profile.py``.
"""

from __future__ import annotations

import argparse
import collections
import functools
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
from ff_benchmarks import EXPERIMENTS, build  # noqa: E402

import devices  # noqa: E402
from devices import _device, _noise, _write  # noqa: E402
from mortal import ff, parallel  # noqa: E402
from mortal.xla_cpu import xla_flags  # noqa: E402

WIDTHS = (784, 1000, 1000, 1000)
# the per-synapse d2d arrays (LayerPhysics fields) that a write reads: bounds, steps, faults
# (devices._write: bounds, steps, pin, offset_from_normal); not read_gain or drift_nu
WRITE_READS = ("w_min", "w_max", "dw_up", "dw_down", "stuck", "mask")
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
        "rram, 8 cells, 1 overflow": with_synapse(cells=8, overflow_cells=1),
    }


# the learner of the issue-3 rram recipe (docs/results.md, session 45)
RECIPE_SETTINGS = {"label_strength": 2.0, "momentum": 0.98, "negative_belief": "goodness",
                   "lr_decay_start": 0.9, "weight_decay": 0.0}
RECIPES = {"issue-3 recipe": 1, "issue-3 recipe, no overflow cell": 0}  # overflow cells


def recipe(name: str) -> tuple[devices.DeviceSpec, ff.FFConfig]:
    """The device and learner of an ``issue-3 recipe`` row (50 epochs, as the recipe runs)."""
    return build(EXPERIMENTS["mnist-rram"], 50, RECIPE_SETTINGS, cells=8, input_bound=8.0,
                 overflow_cells=RECIPES[name])


def setup(name: str) -> tuple[devices.DeviceSpec, ff.FFConfig]:
    """The device and learner a row times: a variant with the benchmark learner, or a recipe."""
    return recipe(name) if name in RECIPES else (variants()[name], ff.FFConfig(epochs=10))


def step_ms(spec: devices.DeviceSpec, steps: int, repeats: int,
            cfg: ff.FFConfig | None = None) -> list[float]:
    """Milliseconds per training step, one value per timed call (``cfg``: the learner; default
    the benchmark learner, ``ff.FFConfig(epochs=10)``)."""
    cfg = ff.FFConfig(epochs=10) if cfg is None else cfg
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


def operation_ms(spec: devices.DeviceSpec, steps: int, cfg: ff.FFConfig | None = None
                 ) -> dict[str, float]:
    """Milliseconds per training step of each compiled XLA operation (summed over its calls),
    from a ``jax.profiler`` trace of three calls of ``steps`` steps; largest first. Operations
    that ran fewer times than there were steps (set-up, data) are left out."""
    step_ms(spec, steps, 1, cfg)  # compile outside the trace
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            step_ms(spec, steps, 2, cfg)
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


def traffic_floor_ms(steps: int, repeats: int) -> dict[str, dict[str, float]]:
    """Milliseconds per step of the device's memory traffic alone, per preset (``ideal``,
    ``rram``): a ``lax.scan`` over ``steps`` steps whose body, for each layer of one
    784-1000-1000-1000 device, forms what the crossbar products see (the stored weights, plus
    the write offsets and read gains where the device has them) and feeds it to an 8-row product
    (XLA fuses the sum into the product, as in the step), then writes new weights (and offsets,
    in the one complex64 array the device keeps them in) from a chain of additions over the
    request, the stored state and the per-synapse d2d arrays that ``program`` reads
    (``WRITE_READS``, where the device has them). No hashes, noise or pulse physics: the least
    time that reading and writing those arrays takes on this machine, whatever the arithmetic
    costs. The difference between the presets bounds from below what the `rram` physics can add
    to a training step. As here, the real step forms the products' weights once for both of its
    measurements (XLA shares them). Returns ``{"ms": {preset: ms per step}, "mb": {preset: MB
    per step}}``, MB counting each array once per read and write (the least traffic: reads of
    the products' weights, of the request, state and d2d arrays, writes of the new state)."""
    out: dict[str, dict[str, float]] = {"ms": {}, "mb": {}}
    for name in ("ideal", "rram"):
        device = devices.spawn(variants()[name], 1, jax.random.key(0))[0]
        # per layer: the stored synapse array as the device holds it (float32 weights, or
        # complex64 weights + i·offsets); (d2d arrays, request, rows, gain)
        carry0, consts = list(device.state.synapses), []
        for w, phys in zip(device.state.weights, device.physics, strict=True):
            per_synapse = tuple(getattr(phys, f) for f in WRITE_READS
                                if getattr(phys, f) is not None)
            rows = jax.random.normal(jax.random.key(1), (8, w.shape[0]))
            consts.append((per_synapse, jnp.full(w.shape, 1e-3, jnp.float32), rows,
                           phys.read_gain))

        def body(consts: Any, carry: Any, _: Any) -> Any:
            new, total = [], jnp.float32(0)
            for stored, (per_synapse, request, rows, gain) in zip(carry, consts, strict=True):
                w, offset = _device.split_synapses(stored)
                seen = w if offset is None else w + offset
                seen = seen if gain is None else seen * gain
                total = total + jnp.sum(rows @ seen)
                s = w + request  # the chain starts at the carried state: nothing to hoist
                for a in (() if offset is None else (offset,)) + per_synapse:
                    s = s + a.astype(jnp.float32)
                new.append(_device.pack_synapses(
                    np.float32(0.5) * s, None if offset is None else np.float32(0.25) * s))
            return new, total

        f = jax.jit(lambda c, k: jax.lax.scan(functools.partial(body, k), c, None,
                                              length=steps))
        out["ms"][name] = 1000 * bench.timed(f, carry0, consts, repeats=repeats)[0] / steps
        # products: weights (+ offsets, gains); write: weights, request (+ offsets) and the d2d
        # arrays read, weights (+ offsets) written
        out["mb"][name] = sum(
            w.nbytes * (4 if offset is None else 7) + sum(a.nbytes for a in per_synapse)
            + (0 if gain is None else gain.nbytes)
            for w, offset, (per_synapse, _, _, gain) in zip(
                device.state.weights, device.state.offsets, consts, strict=True)
        ) / 1e6
        del device, carry0, consts
        gc.collect()
    return out


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
    parser.add_argument("--only", nargs="+", choices=[*variants(), *RECIPES], metavar="VARIANT",
                        help="time only these step variants (quote names with spaces); the "
                        "issue-3 recipe rows run only when named here")
    parser.add_argument("--trace", action="store_true",
                        help="also time every XLA operation of the timed steps (without "
                             "--only: the ideal and rram steps)")
    parser.add_argument("--no-elementwise", action="store_true",
                        help="skip the elementwise table")
    parser.add_argument("--floor", action="store_true",
                        help="also time the device's memory traffic alone (ideal and rram) "
                             "and the least rram / ideal step ratio it allows")
    args = parser.parse_args()
    result: dict[str, Any] = {
        "command": " ".join([sys.executable, *sys.argv]), "git_revision": git_revision(ROOT),
        "jax": jax.__version__, "xla_flags": xla_flags(), "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()), "widths": list(WIDTHS), "batch": B,
        "steps": args.steps, "step_ms": {}, "elementwise_ms_per_1M": {},
    }
    for name in [*variants(), *RECIPES]:
        if (args.only and name not in args.only) or (not args.only and name in RECIPES):
            continue
        spec, cfg = setup(name)
        times = step_ms(spec, args.steps, args.repeats, cfg)
        result["step_ms"][name] = {"median": statistics.median(times), "times": times}
        print(f"{name:<24} {statistics.median(times):6.1f} ms/step", flush=True)
    if args.trace:
        result["operation_ms_per_step"] = {}
        for name in args.only or ("ideal", "rram"):
            spec, cfg = setup(name)
            result["operation_ms_per_step"][name] = operation_ms(spec, args.steps, cfg)
    if args.floor:
        floor = traffic_floor_ms(args.steps, args.repeats)
        result["traffic_floor_ms_per_step"] = floor["ms"]
        result["traffic_floor_mb_per_step"] = floor["mb"]
        if "ideal" in result["step_ms"]:
            ideal = result["step_ms"]["ideal"]["median"]
            extra = floor["ms"]["rram"] - floor["ms"]["ideal"]
            result["least_rram_over_ideal"] = (ideal + extra) / ideal
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
    if "traffic_floor_ms_per_step" in result:
        print(f"\n{'memory traffic alone, per step':<44} {'ms':>6} {'MB':>6} {'GB/s':>6}")
        for name, ms in result["traffic_floor_ms_per_step"].items():
            mb = result["traffic_floor_mb_per_step"][name]
            print(f"{name:<44} {ms:6.2f} {mb:6.1f} {mb / ms:6.1f}")
        if "least_rram_over_ideal" in result:
            print(f"{'least rram / ideal (ideal step + difference)':<44} "
                  f"{result['least_rram_over_ideal']:6.2f}")
    print(f"\n{'elementwise, 1001x1000 float32':<44} {'ms':>6}")
    for name, ms in result["elementwise_ms_per_1M"].items():
        print(f"{name:<44} {ms:6.2f}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    run_script(main)
