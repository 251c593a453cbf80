"""Run by test_parallel.py in a fresh process with 4 simulated CPU devices (the device count is
fixed when JAX starts). Prints one JSON line of comparisons."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

import devices
import distill
from mortal import ff, parallel

assert len(jax.devices()) == 4, jax.devices()
P = 8
spec = devices.preset("rram", (20, 12, 10))
cfg = ff.FFConfig(epochs=2, batch_size=8, n_classes=4, label_placement="prepend", lr=0.05)
rng = np.random.default_rng(0)
x = jnp.asarray(rng.uniform(0, 1, (64, 16)).astype(np.float32))
y = jnp.asarray(rng.integers(0, 4, 64).astype(np.int32))
pop = devices.spawn(spec, P, jax.random.key(0))
state0 = ff.init_population(pop, cfg, ff.steps_per_epoch(64, cfg))


def train(mesh, cfg=cfg):
    st = parallel.shard(jax.tree.map(jnp.copy, state0), mesh)  # the epoch donates its input
    xs, ys = parallel.replicate((x, y), mesh)
    for e in range(cfg.epochs):
        keys, order = parallel.shard(ff.epoch_keys(jax.random.key(1), e, P, cfg), mesh)
        st, _ = parallel.population_epoch(st, xs, ys, keys, order, cfg=cfg, bench=ff.BENCH,
                                          mesh=mesh)
    return st


def same(a, b):
    return all(np.array_equal(np.asarray(u), np.asarray(v))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


out = {}
ref = train(None)
for n in (2, 4):
    mesh = parallel.population_mesh(P, n)
    got = train(mesh)
    out[f"train_mesh{n}_identical"] = same(ref, got)
    out[f"train_mesh{n}_sharded"] = len(got.readout.sharding.device_set) == n

# a readout refit after the FF epochs: each shard picks the phase; the devices stay as FF left them
refit_cfg = ff.FFConfig(**{**cfg.__dict__, "epochs": cfg.epochs + 1, "readout_refit_epochs": 1})
refit = train(parallel.population_mesh(P, 4), refit_cfg)
out["refit_mesh4_identical"] = same(train(None, refit_cfg), refit)
out["refit_keeps_devices"] = same(ref.device, refit.device)

# distillation: a teacher replicated on every shard, students split over the mesh
dcfg = distill.DistillConfig(temperature=4.0)
teacher = jax.tree.map(lambda a: a[:1], ref)
students0 = ff.init_population(devices.spawn(spec, P, jax.random.key(5)),
                               distill.student_config(cfg, dcfg), ff.steps_per_epoch(64, cfg))


def distil(mesh):
    def local(s, t, xx, k, sk):
        return distill.distill_epoch_fn(s, t, xx, None, k, sk, cfg, dcfg, ff.BENCH, ff.BENCH,
                                        chunk=1)

    program = parallel.over_population(local, mesh, (True, False, False, False, True),
                                       donate=(0,))
    k = jax.random.key(7)
    return program(parallel.shard(jax.tree.map(jnp.copy, students0), mesh),
                   parallel.replicate(teacher, mesh),
                   parallel.replicate(x, mesh), parallel.replicate(k, mesh),
                   parallel.shard(jax.random.split(k, P), mesh))[0]


dref = distil(None)
out["distill_mesh4_identical"] = same(dref, distil(parallel.population_mesh(P, 4)))

# mutual distillation under jit with sharded inputs: XLA inserts the collectives for the
# population-wide average of beliefs
shards_x = jnp.reshape(x, (P, 8, 16))
shards_y = jnp.reshape(y, (P, 8))
mesh = parallel.population_mesh(P, 4)
mref = distill.mutual_epoch(ref, ref, x, shards_x, shards_y, jax.random.key(3), cfg=cfg,
                            dcfg=dcfg, exchange_every=2, bench=ff.BENCH)[0]
sharded_ref = parallel.shard(ref, mesh)
mgot = distill.mutual_epoch(sharded_ref, sharded_ref, parallel.replicate(x, mesh),
                            parallel.shard(shards_x, mesh), parallel.shard(shards_y, mesh),
                            jax.random.key(3), cfg=cfg, dcfg=dcfg, exchange_every=2,
                            bench=ff.BENCH)[0]
out["mutual_sharded_output"] = len(mgot.readout.sharding.device_set) == 4
out["mutual_max_readout_diff"] = float(jnp.max(jnp.abs(mref.readout - mgot.readout)))
out["mutual_readout_scale"] = float(jnp.max(jnp.abs(mref.readout)))
print(json.dumps(out))
