"""Is a device's one-pass readout limited by its features or by how the readout learned?

The one-pass readout (issue: Forward-Forward in place, readout (b)) is a digital softmax on the
normalised activities of one neutral-label pass, trained during FF learning by a delta rule.
This script takes the devices of a population saved by ``scripts/ff_benchmarks.py
--save-state``, measures their readout features once (``measure`` only: training, validation
and test images, one read each) and fits fresh readouts on those frozen features with the same
delta rule as training (``ff.readout_delta``, minibatches of the learner's ``batch_size``,
constant learning rate, the learner's ``readout_decay`` or ``--decay``), plain and with
``readout_center``. If a refit beats the saved readout,
the features were good and the readout's training was not. ``--learner`` adds the learner's
own refit (``FFConfig.readout_refit_epochs``, ``ff.refit_step``): the same centred rule, but
every minibatch read afresh from the device (read noise and all) instead of from the frozen
features; its readouts are scored on the same frozen validation and test features.

Reproduce, for example (session 27: the 8-cell ``rram`` device of session 25)::

    python scripts/readout_refit.py --data-dir ../shared/data \\
        scripts/results/cells/ff_mnist-rram-ls2-mom0.98-gbelief-decay0.9-20ep-cells8-dac8.npz

Seeds: the features of device ``i`` are read with keys from ``--seed`` (training, validation
and test images with different keys); the refits draw minibatch orders from ``--seed``.
Results: ``--out`` (default ``scripts/results/readout_refit.json``) and a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _entry import run_script  # noqa: E402
from _record import provenance, write_json  # noqa: E402
from distill_benchmarks import _per_member, load_state  # noqa: E402

from mortal import data, ff  # noqa: E402


def features(state: ff.FFState, x: jax.Array, cfg: ff.FFConfig, seed: int) -> np.ndarray:
    """``(P, N, D + 1)`` readout features of every member: one neutral-label read each."""
    def one(st: ff.FFState, key: jax.Array, xc: jax.Array) -> jax.Array:
        m = ff.BENCH.measure(st.device, ff.embed_neutral(xc, cfg), key=key)
        return ff.readout_features(m, cfg)
    return _per_member(one, state, x, seed)


def refit(f_train: jax.Array, y_train: jax.Array, cfg: ff.FFConfig, lr: float, epochs: int,
          seed: int, evaluate: Any) -> list[dict[str, float]]:
    """``epochs`` epochs of the learner's delta rule (``ff.readout_update``) from a zero readout
    on frozen features ``(N, D + 1)``; ``evaluate(w)`` after each epoch."""
    b = cfg.batch_size
    n = f_train.shape[0] // b * b
    targets = jax.nn.one_hot(y_train, cfg.n_classes)

    @jax.jit
    def epoch(w: jax.Array, key: jax.Array) -> jax.Array:
        order = jax.random.permutation(key, f_train.shape[0])[:n].reshape(-1, b)

        def step(w: jax.Array, idx: jax.Array) -> tuple[jax.Array, None]:
            feats = f_train[idx]
            return ff.readout_update(w, feats, feats @ w, targets[idx], None, lr, cfg), None

        return jax.lax.scan(step, w, order)[0]

    w = jnp.zeros((f_train.shape[1], cfg.n_classes), jnp.float32)
    history = []
    for e in range(epochs):
        w = epoch(w, jax.random.fold_in(jax.random.key(seed), e))
        history.append(evaluate(w))
    return history


def learner_refit(state: ff.FFState, x: jax.Array, y: jax.Array, cfg: ff.FFConfig, lr: float,
                  decay: float, epochs: int, seed: int, evaluate: Any
                  ) -> list[list[dict[str, float]]]:
    """The learner's own refit (``FFConfig.readout_refit_epochs``): ``epochs`` epochs of
    ``ff.population_epoch`` after the saved FF epochs, every minibatch read afresh from the
    device; ``evaluate(i, w)`` of each member's readout after each epoch. ``[member][epoch]``."""
    spe = ff.steps_per_epoch(x.shape[0], cfg)
    done = int(np.asarray(state.step).reshape(-1)[0]) // spe
    if done != cfg.ff_epochs:
        raise SystemExit(f"the saved state has done {done} epochs of {x.shape[0]} images, not "
                         f"its config's {cfg.ff_epochs}: refit a completed training run")
    rcfg = dataclasses.replace(cfg, epochs=done + epochs, readout_refit_epochs=epochs,
                               readout_refit_lr=lr, readout_refit_decay=decay)
    n = state.step.shape[0]
    history: list[list[dict[str, float]]] = [[] for _ in range(n)]
    for e in range(done, done + epochs):
        keys, order = ff.epoch_keys(jax.random.key(seed), e, n, rcfg)
        state, _ = ff.population_epoch(state, x, y, keys, order, cfg=rcfg, bench=ff.BENCH)
        for i in range(n):
            history[i].append(evaluate(i, state.readout[i]))
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("state", help="a population file written by scripts/ff_benchmarks.py "
                        "--save-state (.npz)")
    parser.add_argument("--data-dir", default=None, help=f"IDX files (default ${data.DATA_ENV} "
                        "or ../shared/data)")
    parser.add_argument("--epochs", type=int, default=10, help="refit epochs over the "
                        "training images")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.1],
                        help="constant learning rates of the refits (the learner's "
                        "readout_lr is 0.1 by default)")
    parser.add_argument("--decay", type=float, nargs="+", default=None,
                        help="readout_decay values of the refits (default: the learner's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learner", action="store_true",
                        help="also run the learner's own refit (readout_refit_epochs: centred, "
                        "every minibatch read afresh from the device) at each --lr and --decay")
    parser.add_argument("--out", default=str(ROOT / "scripts" / "results" /
                                             "readout_refit.json"))
    args = parser.parse_args()
    if args.epochs < 1 or any(not lr > 0 for lr in args.lr):
        parser.error("--epochs must be >= 1 and every --lr > 0")
    if args.decay is not None and any(not d >= 0 for d in args.decay):
        parser.error("every --decay must be >= 0")
    state, spec, cfg = load_state(args.state, "state")
    decays = [cfg.readout_decay] if args.decay is None else args.decay
    ds = data.load("mnist" if spec.widths[0] == 784 else "digits", args.data_dir)
    started = time.perf_counter()
    feats = {split: features(state, jnp.asarray(getattr(ds, f"x_{split}")), cfg,
                             args.seed + 1000 * k)
             for k, split in enumerate(("train", "val", "test"))}
    labels = {split: np.asarray(getattr(ds, f"y_{split}")) for split in feats}
    print(f"features of {feats['train'].shape[0]} device(s) measured "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    rows: list[dict[str, Any]] = []

    def member_errors(i: int, w: jax.Array) -> dict[str, float]:
        """Validation and test error of readout ``w`` on member ``i``'s frozen features."""
        return {f"{split}_error": float(np.mean(np.argmax(np.asarray(feats[split][i] @ w), -1)
                                                != labels[split]))
                for split in ("val", "test")}

    for i in range(feats["train"].shape[0]):
        f_train = jnp.asarray(feats["train"][i])
        errors = functools.partial(member_errors, i)
        rows.append({"device": i, "rule": "saved", "lr": None, "decay": None,
                     "history": [errors(state.readout[i])]})
        for center, decay, lr in itertools.product((False, True), decays, args.lr):
            rule = dataclasses.replace(cfg, readout_center=center, readout_decay=decay)
            history = refit(f_train, jnp.asarray(labels["train"]), rule, lr, args.epochs,
                            args.seed, errors)
            rows.append({"device": i, "rule": "centred" if center else "plain", "lr": lr,
                         "decay": decay, "history": history})
        print(f"device {i} refitted ({time.perf_counter() - started:.0f} s)", flush=True)
    if args.learner:
        x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
        for decay, lr in itertools.product(decays, args.lr):
            per_member = learner_refit(state, x_train, y_train, cfg, lr, decay, args.epochs,
                                       args.seed, member_errors)
            rows += [{"device": i, "rule": "learner", "lr": lr, "decay": decay, "history": h}
                     for i, h in enumerate(per_member)]
            print(f"learner refit at lr {lr:g}, decay {decay:g} done "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    result = {"state": args.state, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
              "batch_size": cfg.batch_size, "decay": decays,
              "readout_from": cfg.readout_from, "rows": rows,
              **provenance(ROOT, started)}
    out = Path(args.out)
    write_json(out, result, indent=1)
    print(f"\n{'device':>6}  {'readout':<8} {'lr':>6} {'decay':>7}  {'val %':>6}  "
          f"{'test %':>6}  {'best val % (epoch)':>18}")
    for row in rows:
        last, h = row["history"][-1], row["history"]
        best = min(range(len(h)), key=lambda e: h[e]["val_error"])
        lr = "" if row["lr"] is None else f"{row['lr']:g}"
        decay = "" if row["decay"] is None else f"{row['decay']:g}"
        print(f"{row['device']:>6}  {row['rule']:<8} {lr:>6} {decay:>7}  "
              f"{100 * last['val_error']:6.2f}  {100 * last['test_error']:6.2f}  "
              f"{100 * h[best]['val_error']:10.2f} ({best + 1:>2})")
    print(f"written to {out}")


if __name__ == "__main__":
    run_script(main)
