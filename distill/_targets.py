"""Teachers' soft targets, read through ``measure`` only; the distillation loss convention."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from mortal import ff

Array = jax.Array
Source = Literal["goodness", "readout"]


def teacher_logits(teacher: ff.FFState, x: Array, cfg: ff.FFConfig, *, source: Source,
                   key: Array | None, bench: ff.Bench = ff.BENCH) -> Array:
    """A teacher's class scores for ``x`` ``(B, D)`` → ``(B, C)``, measured on its device.

    ``goodness``: accumulated goodness of layers readout_from..L for every candidate label (the
    FF paper's answer); ``readout``: the one-pass neutral-label softmax readout's logits.
    """
    if source == "goodness":
        return ff.goodness_scores(teacher.device, x, cfg, key, bench)
    if source == "readout":
        return ff.readout_logits(teacher, x, cfg, key, bench)
    raise ValueError(f"unknown soft-target source {source!r}; use 'goodness' or 'readout'")


def ensemble_probabilities(teachers: ff.FFState, x: Array, cfg: ff.FFConfig, *,
                           temperature: float, source: Source, key: Array,
                           bench: ff.Bench = ff.BENCH, reads: int = 1) -> Array:
    """Soft targets ``q = mean_k softmax(z̄_k / T)`` of a population of K teachers (K = 1 for a
    single teacher) on the same inputs ``x`` ``(B, D)``: ``(B, C)`` float32.

    ``reads``: each teacher is measured ``reads`` times (independent read noise, c2c) and its
    scores ``z̄_k`` are the mean of those reads, as a bench averages repeated measurements."""
    if reads < 1:
        raise ValueError(f"reads must be >= 1, got {reads}")
    k = jax.tree.leaves(teachers.step)[0].shape[0]
    keys = jax.random.split(key, k)  # one key per teacher (reads = 1: as before reads existed)

    def one(teacher: ff.FFState, kk: Array) -> Array:
        if reads == 1:
            z = teacher_logits(teacher, x, cfg, source=source, key=kk, bench=bench)
        else:
            z = jnp.mean(jax.vmap(lambda r: teacher_logits(teacher, x, cfg, source=source,
                                                           key=r, bench=bench))(
                jax.random.split(kk, reads)), axis=0)
        return jax.nn.softmax(z / temperature, axis=-1)

    return jnp.mean(jax.vmap(one)(teachers, keys), axis=0)


def soft_target_loss(student_logits: Array, teacher_probs: Array, temperature: float,
                     labels: Array | None = None, hard_weight: float = 0.0) -> Array:
    """Hinton, Vinyals & Dean (2015): ``(1 − λ) T² KL(q ‖ softmax(z/T)) + λ CE(y, softmax(z))``,
    averaged over the batch. The T² factor keeps the soft term's gradient scale independent of
    T; at high T its gradient tends to that of ``(z − z_teacher)² / (2C)`` for zero-mean logits
    (logit regression). This is the loss whose gradient the FF learner's readout descends."""
    t = temperature
    log_p = jax.nn.log_softmax(student_logits / t, axis=-1)
    q = teacher_probs
    kl = jnp.sum(jnp.where(q > 0, q * (jnp.log(jnp.where(q > 0, q, 1.0)) - log_p), 0.0),
                 axis=-1)
    loss = (1.0 - hard_weight) * t * t * kl
    if labels is not None and hard_weight > 0:
        ce = -jnp.take_along_axis(jax.nn.log_softmax(student_logits, axis=-1), labels[:, None],
                                  axis=-1)[:, 0]
        loss = loss + hard_weight * ce
    return jnp.mean(loss)
