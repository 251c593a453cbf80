"""Mutual distillation in a population (Zhang et al. 2018) and codistillation on disjoint
labelled shards with rarely exchanged, stale beliefs (Anil et al. 2018)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mortal import ff

from ._targets import teacher_logits
from ._topology import DistillConfig, student_config

Array = jax.Array


def others_mean(beliefs: Array) -> Array:
    """``(P, B, C)`` beliefs → for each device the mean of the *other* devices' beliefs."""
    p = beliefs.shape[0]
    return (beliefs.sum(axis=0, keepdims=True) - beliefs) / (p - 1)


def _mutual_epoch(states: ff.FFState, shared: ff.FFState, x: Array, x_shards: Array,
                  y_shards: Array, key: Array, cfg: ff.FFConfig, dcfg: DistillConfig,
                  exchange_every: int, bench: ff.Bench, distil: bool = True
                  ) -> tuple[ff.FFState, ff.FFState, dict[str, Array]]:
    p = x_shards.shape[0]
    scfg = student_config(cfg, dcfg)
    spe = ff.steps_per_epoch(x.shape[0], scfg)
    horizon = 2 * spe  # two learner steps per step: the lr schedule counts both
    shard_spe = ff.steps_per_epoch(x_shards.shape[1], scfg)
    k_order, k_shard, k_belief, k_steps = jax.random.split(key, 4)
    order = jax.random.permutation(k_order, x.shape[0])[: spe * scfg.batch_size]
    order = order.reshape(spe, scfg.batch_size)
    shard_orders = jax.vmap(lambda k: jax.random.permutation(k, x_shards.shape[1]))(
        jax.random.split(k_shard, p))

    def body(carry: tuple[ff.FFState, ff.FFState], inp: tuple[Array, Array]
             ) -> tuple[tuple[ff.FFState, ff.FFState], dict[str, Array]]:
        st, snap = carry
        idx, step = inp
        # the beliefs the devices share are refreshed only every `exchange_every` steps
        refresh = step % exchange_every == 0
        snap = jax.tree.map(lambda old, new: jnp.where(refresh, new, old), snap, st)
        xb = x[idx]
        bkeys = jax.random.split(jax.random.fold_in(k_belief, step), p)
        beliefs = jax.vmap(lambda s, k: jax.nn.softmax(teacher_logits(
            s, xb, cfg, source=dcfg.source, key=k, bench=bench) / dcfg.temperature, -1))(
                snap, bkeys)
        targets = others_mean(beliefs)
        keys = jax.random.split(jax.random.fold_in(k_steps, step), 2 * p).reshape(2, p)
        if distil:
            st, _ = jax.vmap(lambda s, q, k: ff.train_step(s, xb, q, k, scfg, horizon, bench))(
                st, targets, keys[0])
        # and each device learns its own labelled shard (codistillation)
        j = step % shard_spe
        sidx = jax.lax.dynamic_slice_in_dim(shard_orders, j * scfg.batch_size,
                                            scfg.batch_size, axis=1)
        xs = jnp.take_along_axis(x_shards, sidx[..., None], axis=1)
        ys = jnp.take_along_axis(y_shards, sidx, axis=1)
        st, m_own = jax.vmap(lambda s, xx, yy, k: ff.train_step(s, xx, yy, k, scfg, horizon,
                                                                bench))(st, xs, ys, keys[1])
        agree = jnp.mean(jnp.argmax(beliefs, -1) == jnp.argmax(targets, -1), axis=-1)
        return (st, snap), {**m_own, "agreement_with_others": agree}

    (states, shared), metrics = jax.lax.scan(body, (states, shared), (order, jnp.arange(spe)))
    return states, shared, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


mutual_epoch = jax.jit(_mutual_epoch, static_argnames=("cfg", "dcfg", "exchange_every",
                                                        "bench", "distil"))
mutual_epoch.__doc__ = """One epoch of mutual distillation / codistillation in a population.

states: stacked learner states of P devices; shared: the beliefs' source, a stale copy of the
states (start with ``shared = states``; it is refreshed every ``exchange_every`` steps and
returned for the next epoch). x ``(N, D)``: unlabelled images every device sees; x_shards
``(P, M, D)`` and y_shards ``(P, M)``: each device's own labelled shard. Every step, each device
learns the others' averaged soft beliefs (at ``dcfg.temperature``) on a shared minibatch, then a
minibatch of its own labels. ``distil=False`` gives burn-in epochs on the shards alone (Anil et
al. start codistilling only once the models have learned something). Devices only ever
``measure`` each other. Metrics: those of the shard step, and ``agreement_with_others``."""
