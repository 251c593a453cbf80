"""A trained population on disk: the learner state with its devices, the recipe and the learner
config in one ``.npz`` (``scripts/ff_benchmarks.py --save-state`` writes it, the distillation
and analysis scripts read it; ``--checkpoint`` files have the same form)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import devices
from mortal import ff, runlog, runs


def save_state(path: Path, state: ff.FFState, spec: devices.DeviceSpec, cfg: ff.FFConfig,
               extra: dict[str, Any] | None = None) -> None:
    """The trained population (learner state with its devices) + recipe and learner config, and
    ``extra`` (JSON-able) in the same metadata; written to a ``.part.npz`` first and renamed, so
    a crash never leaves a partial file under the final name."""
    leaves = runlog.flatten_tree("state", jax.tree.map(
        lambda a: jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a,
        runlog.stored_device_state(state)))
    meta = {"recipe": spec.to_dict(), "learner_config": dataclasses.asdict(cfg), **(extra or {})}
    tmp = path.with_suffix(".part.npz")
    np.savez(tmp, __meta__=np.array(json.dumps(meta)), **leaves)
    os.replace(tmp, path)


def load_state(path: str | Path, flag: str = "--teacher-state"
               ) -> tuple[ff.FFState, devices.DeviceSpec, ff.FFConfig]:
    """A population saved by ``scripts/ff_benchmarks.py --save-state`` (devices included); a
    file that is not one stops the script with one line naming ``flag`` and ``path``."""
    try:
        z = np.load(path)
        meta = json.loads(str(z["__meta__"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"{flag} {path}: not a device state saved by "
                         f"scripts/ff_benchmarks.py --save-state ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    spec = devices.DeviceSpec.from_dict(meta["recipe"])
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["learner_config"].items()}
    tcfg = ff.FFConfig(**kw)
    n = z[next(k for k in z.files if k.startswith("state.step"))].shape[0]
    template = runlog.stored_device_state(
        ff.init_population(devices.spawn(spec, n, jax.random.key(0)), tcfg, 1))

    def leaf(key_path: Any, t: jax.Array) -> jax.Array:
        name = runs.leaf_name(("state",), key_path)
        a = z[name]
        if jnp.issubdtype(t.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(a, impl=jax.random.key_impl(t))
        if a.shape != t.shape or a.dtype != t.dtype:
            raise SystemExit(f"{path}: saved leaf {name} has {a.shape} {a.dtype}, expected "
                             f"{t.shape} {t.dtype}")
        return jnp.asarray(a)

    return (runlog.live_device_state(jax.tree_util.tree_map_with_path(leaf, template)), spec,
            tcfg)


def state_meta(path: str | Path) -> dict[str, Any]:
    """The metadata a ``save_state`` file holds (recipe, learner config, ``extra``)."""
    with np.load(path) as z:
        return json.loads(str(z["__meta__"]))
