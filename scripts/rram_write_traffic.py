"""How often does FF rewrite an `rram` synapse, and does a trained device depend on its offsets?

Two measurements behind the choice of gradient smoothing for `rram` devices (docs/results.md, "Why
`rram` trails `ideal`"):

* **Write traffic**: one device (``--widths``, read gain 0.12, label strength 2) trained on MNIST
  with Hinton's recipe at several gradient-smoothing constants (``--momentum``). Every
  ``--every`` steps, the fraction of synapses per layer that the next step writes (a write
  redraws the synapse's read offset, 56 ``dw_min``). Analysis only: the script compares the
  device's state before and after a step, which no learner may read.
* **Offsets** (``--teacher-state``, a device saved by ``scripts/ff_benchmarks.py --save-state``):
  test error as trained, with every write offset set to zero, halved, and shuffled among the
  synapses of its layer (same values, new places). If the trained weights had learned to work
  around their own offsets, shuffling costs accuracy and zeroing does not help.

Writes ``scripts/results/rram_write_traffic.json`` and prints tables. About 3 minutes for the
traffic part on 2 CPU cores (3 settings × 1,000 steps of 784-500-500-500), 2 minutes for a
784-1000-1000-1000 teacher::

    python scripts/rram_write_traffic.py --data-dir ../shared/data \\
        --teacher-state scripts/results/ff_mnist-rram-ls2.npz
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import devices  # noqa: E402
from mortal import data, ff  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
from _entry import run_script  # noqa: E402
from _record import write_json  # noqa: E402
from _revision import git_revision  # noqa: E402

from mortal.xla_cpu import xla_flags  # noqa: E402


def _steps(ds: data.Dataset, spec: devices.DeviceSpec, steps: int, seed: int,
           bench: ff.Bench = ff.BENCH, run: int | None = None, **learner: Any
           ) -> Iterator[tuple[int, ff.FFState, ff.FFState]]:
    """Train one device of ``spec`` on MNIST one jitted step at a time, in order (a diagnostic,
    not the training program), with ``ff.FFConfig(**learner)`` scheduled over enough epochs for
    ``steps`` steps; runs ``run`` steps (default ``steps``) and yields ``(t, state before step
    t, state after it)``."""
    n, batch = ds.x_train.shape[0], ff.FFConfig().batch_size
    cfg = ff.FFConfig(epochs=max(1, -(-steps * batch // n)), **learner)
    per_epoch = ff.steps_per_epoch(n, cfg)
    state = ff.init(devices.fabricate(spec, jax.random.key(seed)), cfg, per_epoch)
    step = jax.jit(functools.partial(ff.train_step, cfg=cfg, steps_per_epoch=per_epoch,
                                     bench=bench))
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    for t in range(steps if run is None else run):
        i = (t % per_epoch) * cfg.batch_size
        new, _ = step(state, x[i:i + cfg.batch_size], y[i:i + cfg.batch_size],
                      jax.random.fold_in(jax.random.key(seed + 1), t))
        yield t, state, new
        state = new


def write_traffic(ds: data.Dataset, widths: tuple[int, ...], momentum: float, steps: int,
                  every: int, seed: int) -> list[dict[str, Any]]:
    """Fraction of synapses per layer written by step ``t`` for ``t`` = 0, every, 2·every, …"""
    spec = devices.preset("rram", widths).replace_in_layers("read", gain=0.12)
    written = jax.jit(lambda a, b: jnp.stack([jnp.mean(p != q) for p, q in zip(a, b,
                                                                               strict=True)]))
    rows = []
    for t, old, new in _steps(ds, spec, steps, seed, run=steps + 1, label_strength=2.0,
                              momentum=momentum):
        if t % every == 0:
            frac = written(old.device.state.offsets, new.device.state.offsets)
            rows.append({"step": t, "written": [round(float(f), 4) for f in frac]})
    return rows


_CLIP_LOG: list[list[tuple[float, float]]] = []  # one entry per program call: per layer stats


def _record_clipping(*stats: jax.Array) -> None:
    _CLIP_LOG.append([(float(a), float(b)) for a, b in stats])


def clip_windows(log: list[list[tuple[float, float]]], every: int) -> list[dict[str, Any]]:
    """Means over windows of ``every`` program calls of ``_CLIP_LOG``-style entries."""
    a = np.asarray(log, np.float64).reshape(len(log), -1, 2)  # (calls, layers, 2)
    return [{"steps": [start, min(start + every, len(a))],
             "clipped_synapses": np.round(a[start:start + every, :, 0].mean(0), 5).tolist(),
             "clipped_pulses": np.round(a[start:start + every, :, 1].mean(0), 5).tolist()}
            for start in range(0, len(a), every)]


def _clip_recording_program(device: devices.Device, requests: Any, *, key: jax.Array
                            ) -> devices.Device:
    """``devices.program``, after noting per layer how much of the request the pulse clip cuts.

    Analysis only: it reads the recipe (public) and the request (the learner's own), not the
    device. A cell of a synapse with ``cells`` cells is asked for ``cells × request / dw_min``
    pulses (``devices._write``), clipped to ``±max_pulses``; with ``overflow_cells = K`` further
    cells take the rest, so ``±(1 + K)·max_pulses`` in all. Per layer: the fraction of synapses
    whose count is clipped, and the fraction of all requested pulses that the clip removes.
    """
    stats = []
    for req, layer in zip(requests, device.spec.layers, strict=True):
        syn = layer.synapse
        n = jnp.abs(syn.cells * req / syn.dw_min)
        limit = (1 + syn.overflow_cells) * syn.max_pulses
        cut = jnp.maximum(n - limit, 0.0)
        stats.append((jnp.mean(n > limit), jnp.sum(cut) / jnp.maximum(jnp.sum(n), 1e-30)))
    jax.debug.callback(_record_clipping, *stats)
    return devices.program(device, requests, key=key)


def pulse_clipping(ds: data.Dataset, widths: tuple[int, ...], cells: int, input_bound: float,
                   steps: int, every: int, seed: int, overflow_cells: int = 0
                   ) -> list[dict[str, Any]]:
    """Per window of ``every`` steps, the mean per layer of what the pulse clip cuts from the
    requests of a device with ``cells`` cells per synapse and ``overflow_cells`` overflow cells
    (``_clip_recording_program``).

    The learner is the best recipe of sessions 20–25 (label lines at strength 2, smoothing 0.98,
    goodness-belief negatives, Hinton's learning rate, constant for the first steps), read gain
    0.12 and the DAC at ``±input_bound``.
    """
    spec = devices.preset("rram", widths).replace_in_layers("read", gain=0.12,
                                                            input_bound=input_bound)
    spec = spec.replace_in_layers("synapse", cells=cells, overflow_cells=overflow_cells)
    _CLIP_LOG.clear()
    for _ in _steps(ds, spec, steps, seed, ff.Bench(program=_clip_recording_program),
                    label_strength=2.0, momentum=0.98, negative_belief="goodness",
                    lr_decay_start=0.9):
        pass
    jax.effects_barrier()
    return clip_windows(_CLIP_LOG, every)


def offsets_test(path: str, ds: data.Dataset, seed: int) -> dict[str, dict[str, float]]:
    from distill_benchmarks import load_state

    state, _, cfg = load_state(path)
    state = jax.tree.map(lambda a: a[:1], state)  # device 0
    x, y = jnp.asarray(ds.x_test), jnp.asarray(ds.y_test)
    offsets = state.device.state.offsets
    if any(o is None for o in offsets):
        raise SystemExit(f"{path}: this device's recipe has no write noise, so no offsets")

    def with_offsets(new: tuple[jax.Array, ...]) -> ff.FFState:
        dev = state.device
        return dataclasses.replace(state, device=dataclasses.replace(
            dev, state=dataclasses.replace(dev.state, offsets=new)))

    def shuffled(k: int) -> tuple[jax.Array, ...]:
        return tuple(jax.vmap(lambda o, kk: jax.random.permutation(kk, o.ravel()).reshape(
            o.shape))(o, jax.random.split(jax.random.key(1000 * k + i), o.shape[0]))
            for i, o in enumerate(offsets))

    variants = {"as trained": offsets,
                "offsets zeroed": tuple(jnp.zeros_like(o) for o in offsets),
                "offsets halved": tuple(0.5 * o for o in offsets),
                "offsets shuffled (1)": shuffled(1), "offsets shuffled (2)": shuffled(2)}
    keys = jax.random.split(jax.random.key(seed + 2), 1)
    out = {}
    for name, new in variants.items():
        ev = ff.evaluate_population(with_offsets(new), x, y, keys, cfg, 1000, ff.BENCH)
        out[name] = {"test_goodness_error": float(ev["goodness_error"][0]),
                     "test_softmax_error": float(ev["softmax_error"][0])}
        print(f"{name:<24} {100 * out[name]['test_goodness_error']:6.2f} "
              f"{100 * out[name]['test_softmax_error']:6.2f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--widths", type=int, nargs="+", default=[784, 500, 500, 500])
    parser.add_argument("--momentum", type=float, nargs="*", default=[0.9, 0.98, 0.99],
                        help="smoothing constants of the write-traffic part (none: skip it)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip-cells", type=int, nargs="*", default=[], metavar="N",
                        help="also measure what the pulse clip cuts from the requests of devices "
                        "with N cells per synapse (the best recipe, --steps steps, windows of "
                        "--every), e.g. --clip-cells 1 8 16")
    parser.add_argument("--overflow-cells", type=int, nargs="+", default=[0], metavar="K",
                        help="the --clip-cells devices' overflow cells (SynapseSpec."
                        "overflow_cells), each value a further device per cell count, e.g. "
                        "--clip-cells 8 --overflow-cells 0 1 2 (default 0)")
    parser.add_argument("--input-bound", type=float, default=8.0,
                        help="the DAC's full scale of the --clip-cells devices (default 8)")
    parser.add_argument("--teacher-state", default=None,
                        help="also test a saved device's dependence on its write offsets")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" /
                                             "rram_write_traffic.json"))
    args = parser.parse_args()
    if args.widths[0] != 784 or len(args.widths) < 3 or min(args.widths) < 1:
        parser.error("--widths: 784 inputs (MNIST) then at least two positive layer widths "
                     "(the readout skips the first layer)")
    if args.steps < 0 or args.every < 1:
        parser.error("--steps must be >= 0 and --every >= 1")
    if any(not 0 <= m < 1 for m in args.momentum):
        parser.error("--momentum values must lie in [0, 1)")
    if any(c < 1 for c in args.clip_cells):
        parser.error("--clip-cells: cell counts must be >= 1")
    if any(k < 0 or (k > 0 and k >= c) for k in args.overflow_cells for c in args.clip_cells):
        parser.error("--overflow-cells: each value must be >= 0 and, if > 0, below every "
                     "--clip-cells count")
    if args.clip_cells and (args.steps < 1 or not args.input_bound > 0):
        parser.error("--clip-cells needs --steps >= 1 and --input-bound > 0")
    if args.teacher_state and not Path(args.teacher_state).is_file():
        parser.error(f"--teacher-state {args.teacher_state}: no such file")
    ds = data.load("mnist", args.data_dir)
    result: dict[str, Any] = {"command": " ".join([sys.executable, *sys.argv]),
                              "git_revision": git_revision(ROOT), "xla_flags": xla_flags(),
                              "widths": args.widths,
                              "seed": args.seed, "read_gain": 0.12, "label_strength": 2.0,
                              "traffic": {}, "clipping": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        write_json(out, result)

    for m in args.momentum:
        started = time.perf_counter()
        rows = write_traffic(ds, tuple(args.widths), m, args.steps, args.every, args.seed)
        result["traffic"][f"momentum {m}"] = rows
        save()
        print(f"momentum {m} ({time.perf_counter() - started:.0f} s): fraction of synapses "
              f"written per step, by layer", flush=True)
        for r in rows:
            print(f"  step {r['step']:>6}  " + "  ".join(f"{f:.3f}" for f in r["written"]))
    for c, k in ((c, k) for c in args.clip_cells for k in args.overflow_cells):
        started = time.perf_counter()
        rows = pulse_clipping(ds, tuple(args.widths), c, args.input_bound, args.steps, args.every,
                              args.seed, k)
        name = f"cells {c}" + (f" overflow {k}" if k else "")
        result["clipping"][name] = {"input_bound": args.input_bound, "overflow_cells": k,
                                    "rows": rows}
        save()
        print(f"{c} cell(s) per synapse, {k} overflow ({time.perf_counter() - started:.0f} s): "
              "fraction of synapses whose pulse count is clipped / of requested pulses cut, "
              "by layer", flush=True)
        for r in rows:
            print(f"  steps {r['steps'][0]:>5}-{r['steps'][1]:<5} "
                  + "  ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(r["clipped_synapses"],
                                                                  r["clipped_pulses"],
                                                                  strict=True)), flush=True)
    if args.teacher_state:
        print(f"\n{'device ' + Path(args.teacher_state).name:<24} {'good.%':>6} {'soft.%':>6}"
              "  (test error)")
        result["offsets"] = {"teacher_state": args.teacher_state,
                             **offsets_test(args.teacher_state, ds, args.seed)}
        save()


if __name__ == "__main__":
    run_script(main)
