"""Spreading a population over accelerators and hosts with JAX's own machinery.

The population axis (the leading axis of every per-device array) is split over a one-axis
``jax.sharding.Mesh`` named ``pop``; data and single teachers are replicated. The learning code
is unchanged: ``ff.population_epoch`` and ``distill.distill_epoch`` are jitted functions of
``vmap``-ed per-device code, so XLA partitions them along the sharded axis and inserts whatever
collectives a population-wide reduction needs (mutual distillation's average of beliefs).

Several hosts: ``initialize`` calls ``jax.distributed.initialize`` (coordinator address,
process count and id from arguments, or detected from Slurm / Open MPI environments); every
process then runs the same program on the global mesh, and ``to_host`` gathers results (a
collective: every process must call it). Only process 0 writes files.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "pop"


class MeshError(ValueError):
    """A mesh that cannot hold the population (too many devices asked, or not a divisor)."""


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join a multi-process run (``jax.distributed.initialize``). Arguments left None come from
    the environment: ``MORTAL_COORDINATOR``, ``MORTAL_NUM_PROCESSES``, ``MORTAL_PROCESS_ID``, or
    JAX's own cluster detection (Slurm, Open MPI, ...)."""
    env = os.environ
    coordinator = coordinator or env.get("MORTAL_COORDINATOR")
    if num_processes is None and "MORTAL_NUM_PROCESSES" in env:
        num_processes = int(env["MORTAL_NUM_PROCESSES"])
    if process_id is None and "MORTAL_PROCESS_ID" in env:
        process_id = int(env["MORTAL_PROCESS_ID"])
    if coordinator is not None:
        check_coordinator(coordinator)
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def check_coordinator(address: str) -> None:
    """Raise ``ValueError`` (one line) unless ``address`` is ``HOST:PORT`` with a port in
    1..65535 (JAX would fail on it later with a traceback, a crash or a wait without end)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"coordinator {address!r} is not HOST:PORT with a port in 1..65535 "
                         "(--coordinator or MORTAL_COORDINATOR)")


def population_mesh(population: int, requested: int | None = None) -> Mesh | None:
    """The mesh a population of ``population`` devices is split over.

    ``requested``: number of accelerators (None or 0: as many of the visible ones as divide the
    population evenly). Returns None when the run is one process on one accelerator (nothing to
    split). Raises ``MeshError`` for a request that cannot be met.
    """
    visible = jax.devices()
    if requested:
        if requested > len(visible):
            raise MeshError(f"--mesh {requested} asks for {requested} accelerators but "
                            f"{len(visible)} are visible")
        if population % requested:
            raise MeshError(f"a population of {population} cannot be split evenly over "
                            f"{requested} accelerators; choose a mesh size that divides it")
        n = requested
    else:
        n = max(k for k in range(1, len(visible) + 1) if population % k == 0)
    if n == 1 and jax.process_count() == 1:
        return None
    if jax.process_count() > 1 and n != len(visible):
        if requested:
            raise MeshError(f"--mesh {requested}: a multi-process run uses all "
                            f"{len(visible)} accelerators of its processes; drop --mesh or "
                            f"give --mesh {len(visible)}")
        raise MeshError(f"a multi-process run must use all {len(visible)} accelerators; the "
                        f"population ({population}) must be a multiple of {len(visible)}")
    return Mesh(np.asarray(visible[:n]), (AXIS,))


def _place(tree: Any, sharding: NamedSharding) -> Any:
    def one(leaf: Any) -> Any:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype,
                                                                 jax.dtypes.prng_key):
            impl = jax.random.key_impl(leaf)
            return jax.random.wrap_key_data(one(jax.random.key_data(leaf)), impl=impl)
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(one, tree)


def shard(tree: Any, mesh: Mesh | None) -> Any:
    """Split every leaf's leading (population) axis over the mesh (identity without a mesh).
    Every process must hold the same full values (they are computed from the same seed)."""
    if mesh is None:
        return tree
    return _place(tree, NamedSharding(mesh, P(AXIS)))


def replicate(tree: Any, mesh: Mesh | None) -> Any:
    """Put a full copy of every leaf on every accelerator of the mesh (identity without one)."""
    if mesh is None:
        return tree
    return _place(tree, NamedSharding(mesh, P()))


def to_host(tree: Any) -> Any:
    """Every leaf as a full numpy array on every process (a collective across processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def _from_every_process(row: np.ndarray) -> np.ndarray:
    """``row`` as every process passed it, stacked: ``(processes, *row.shape)`` (a collective:
    every process must call it)."""
    if jax.process_count() == 1:
        return row[None]
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(row))
    return gathered.reshape(jax.process_count(), *row.shape)


def same_on_every_process(text: str) -> bool:
    """Whether every process of the run passed the same ``text`` (a collective; True in a
    one-process run). Compares SHA-256 digests, 32 bytes a process."""
    import hashlib

    rows = _from_every_process(np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8))
    return bool(np.all(rows == rows[0]))


def processes_that_refused(refused: bool) -> list[int]:
    """The ids of the processes that passed ``refused=True`` (a collective)."""
    flags = _from_every_process(np.array([int(refused)], np.int32))
    return [int(i) for i in np.flatnonzero(flags[:, 0])]


def is_writer() -> bool:
    """Whether this process writes files (process 0)."""
    return jax.process_index() == 0


# ---------------------------------------------------------------------------------------------
# population programs whose per-device arithmetic does not depend on the split
# ---------------------------------------------------------------------------------------------


def over_population(local: Callable[..., Any], mesh: Mesh | None,
                    split_args: tuple[bool, ...], donate: tuple[int, ...] = ()
                    ) -> Callable[..., Any]:
    """``jit`` of ``local`` (a function of a population), split over ``mesh`` with
    ``shard_map``: arguments flagged in ``split_args`` are split along their leading axis, the
    others replicated; every output is split along its leading axis. Without a mesh: plain jit.

    Write ``local`` with ``lax.map`` over fixed-size groups of the devices it gets
    (``ff.in_chunks``), not one ``vmap`` over all, and each device runs the same arithmetic
    whatever the number of devices per shard: results are then bit-identical for every mesh,
    and for one accelerator. ``donate``: positions of arguments whose buffers
    the call may reuse for its outputs (the population state of an epoch: the caller must not
    use the passed state again).
    """
    if mesh is None:
        return jax.jit(local, donate_argnums=donate)
    specs = tuple(P(AXIS) if s else P() for s in split_args)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(AXIS)),
                   donate_argnums=donate)


def shard_chunk(chunk: int, devices_per_shard: int) -> int:
    """The group size used on a shard: ``chunk`` if it divides the shard's devices, else their
    greatest common divisor (then results may differ from other splits in the last bits)."""
    return math.gcd(chunk, devices_per_shard) if chunk > 0 else devices_per_shard


@functools.lru_cache(maxsize=64)
def _train_program(cfg: Any, bench: Any, mesh: Mesh | None, chunk: int
                   ) -> Callable[..., Any]:
    from mortal import ff

    def local(states: Any, x: Any, t: Any, keys: Any, orders: Any) -> Any:
        n = jax.tree.leaves(states)[0].shape[0]
        return ff.by_phase(states.step, cfg, x.shape[0], lambda phase: ff.in_chunks(
            lambda s, k, o: ff.train_epoch(s, x, t, k, o, cfg, bench, phase),
            (states, keys, orders), shard_chunk(chunk, n)))

    return over_population(local, mesh, (True, False, False, True, True), donate=(0,))


def population_epoch(states: Any, x: Any, targets: Any, keys: Any, order_keys: Any, *,
                     cfg: Any, bench: Any, mesh: Mesh | None, chunk: int = 1
                     ) -> tuple[Any, Any]:
    """One FF epoch of a population (``ff.train_epoch`` per device, in groups of ``chunk``
    devices: ``ff.in_chunks``), split over ``mesh``; the result does not depend on the mesh when
    ``chunk`` divides the devices per accelerator (see ``over_population``). ``states`` is
    donated: its buffers become the new states', so do not use it after the call."""
    return _train_program(cfg, bench, mesh, chunk)(states, x, targets, keys, order_keys)


@functools.lru_cache(maxsize=64)
def _eval_program(cfg: Any, chunk: int, bench: Any, mesh: Mesh | None, group: int
                  ) -> Callable[..., Any]:
    from mortal import ff

    def local(states: Any, x: Any, y: Any, keys: Any) -> Any:
        n = jax.tree.leaves(states)[0].shape[0]
        return ff.in_chunks(lambda s, k: ff.evaluate(s, x, y, k, cfg, chunk, bench),
                            (states, keys), shard_chunk(group, n))

    return over_population(local, mesh, (True, False, False, True))


def evaluate(states: Any, x: Any, y: Any, keys: Any, *, cfg: Any, chunk: int, bench: Any,
             mesh: Mesh | None, group: int = 1) -> Any:
    """``ff.evaluate`` of every device of a population (images in chunks of ``chunk``, devices
    in groups of ``group``), split over ``mesh``."""
    return _eval_program(cfg, chunk, bench, mesh, group)(states, x, y, keys)
