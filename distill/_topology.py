"""Who teaches whom: teachers (one, or an ensemble) → many students; generational chains; and
the immortal control arm (copying weights, as digital computers do)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
from tqdm import tqdm

import devices
from mortal import ff

from ._targets import Source, ensemble_probabilities
from ._views import mixed_views, shifted_views

Array = jax.Array


@dataclass(frozen=True)
class DistillConfig:
    """How students learn from teachers (static, hashable).

    ``temperature`` T of the teacher's soft targets that the student's readout matches (and of
    the fidelity KL); ``source`` of the teacher's scores (``goodness``, the default, or
    ``readout``; goodness scores are sums of squares, hence the high default T); ``hard_weight``
    λ of hard labels mixed in when the transfer set has labels (loss ``(1 − λ) T² KL + λ CE``,
    see ``soft_target_loss``).

    ``positive_temperature`` τ: the FF layers' positive class is drawn from the teacher's
    scores at τ, ``softmax(z / τ)`` (the targets sharpened by the power T / τ). At T = 20 a
    trained MNIST ``rram`` teacher's goodness softmax has a mean top probability of 0.21, so
    positives drawn at T would carry the teacher's answer only one time in five (students then
    stayed at chance); at τ = 1 it is 0.96, and the wrong classes the teacher finds plausible
    still appear in proportion. For an ensemble, the averaged probabilities are sharpened.

    ``teacher_reads`` R: every step measures each teacher R times on the minibatch and averages
    its scores (a bench averaging repeated measurements; the teacher's read noise is c2c). R
    multiplies the cost of reading the teachers.

    ``goodness_kl_weight`` κ: the students also descend ``κ T² KL(q ‖ softmax(G / T))`` on their
    goodness scores over every label (``ff.FFConfig.goodness_kl_weight``; C passes per example
    instead of 2). ``goodness_kl_temperature``: ``targets`` (at T) or ``fit`` (at the temperature
    that brings each student's goodness softmax closest to the targets on each minibatch,
    ``ff.fit_temperature``: for students whose goodness scale differs from the teacher's, as
    students of another recipe) or ``fit_exact`` (fitted, with the pull of ``κ T² KL`` at that
    temperature, ``T / T_s`` times the ``fit`` pull; ``ff.goodness_kl_gradients``).
    ``goodness_kl_start``: the fraction of the students' schedule before which the term is off
    (``ff.FFConfig.goodness_kl_start``; 0.5 with Hinton's schedule: only while the learning rate
    decays).
    ``negatives``: the students' negative classes, ``None`` keeps
    the learner's own (``hard``), ``excess`` draws them from where a student's belief exceeds
    the target. ``negative_belief``: what those draws read as a student's belief, ``None``
    keeps the learner's own (``readout``); ``goodness`` reads its goodness scores over every
    label (``ff.FFConfig.negative_belief``; C passes per example instead of 2).
    All of these act on the students only, never on a teacher.

    ``jitter`` s (pixels): every minibatch is shown as a fresh view, each image shifted by up to
    s pixels in each direction (``shifted_views``), and the teachers are measured on that same
    view (Beyer et al. 2022's consistent function matching); ``image_shape`` ``(H, W)`` of the
    transfer images is then needed. 0 (the default) uses the images as they are.

    ``mixup`` α: every minibatch image is blended with another image of the same minibatch,
    ``λ x_i + (1 − λ) x_j`` with ``λ ~ Beta(α, α)`` drawn per image and step (``mixed_views``),
    and the teachers are measured on that blend: the students learn the teacher's answers
    between the transfer images, not only at them (Beyer et al.'s function matching). A blend
    has no true label, so transfer labels (``hard_weight``) cannot be used with it. 0 (the
    default): no blending. With both, images are shifted first, then blended. Views act in
    ``distill_epoch`` and ``chain``; ``mutual_epoch`` shows the images as they are.
    """

    temperature: float = 20.0
    source: Source = "goodness"
    hard_weight: float = 0.0
    positive_temperature: float = 1.0
    teacher_reads: int = 1
    goodness_kl_weight: float = 0.0
    goodness_kl_temperature: Literal["targets", "fit", "fit_exact"] = "targets"
    goodness_kl_start: float = 0.0
    negatives: Literal["hard", "random", "excess"] | None = None
    negative_belief: Literal["readout", "goodness"] | None = None
    jitter: int = 0
    image_shape: tuple[int, int] | None = None
    mixup: float = 0.0

    def __post_init__(self) -> None:
        if self.image_shape is not None:  # hashable (a static argument), whatever came in
            object.__setattr__(self, "image_shape", tuple(self.image_shape))
        if not self.temperature > 0:
            raise ValueError(f"invalid distillation config: temperature must be > 0, got "
                             f"{self.temperature}")
        if self.source not in ("readout", "goodness"):
            raise ValueError(f"invalid distillation config: source must be 'readout' or "
                             f"'goodness', got {self.source!r}")
        if not 0 <= self.hard_weight <= 1:
            raise ValueError(f"invalid distillation config: hard_weight must lie in [0, 1], "
                             f"got {self.hard_weight}")
        if not self.positive_temperature > 0:
            raise ValueError(f"invalid distillation config: positive_temperature must be > 0, "
                             f"got {self.positive_temperature}")
        if not (isinstance(self.teacher_reads, int) and self.teacher_reads >= 1):
            raise ValueError(f"invalid distillation config: teacher_reads must be an integer "
                             f">= 1, got {self.teacher_reads!r}")
        if not (self.goodness_kl_weight >= 0 and math.isfinite(self.goodness_kl_weight)):
            raise ValueError(f"invalid distillation config: goodness_kl_weight must be a number "
                             f">= 0, got {self.goodness_kl_weight}")
        if self.goodness_kl_temperature not in ("targets", "fit", "fit_exact"):
            raise ValueError(f"invalid distillation config: goodness_kl_temperature must be "
                             f"'targets', 'fit' or 'fit_exact', got "
                             f"{self.goodness_kl_temperature!r}")
        if not 0 <= self.goodness_kl_start < 1:
            raise ValueError(f"invalid distillation config: goodness_kl_start must lie in "
                             f"[0, 1) (a fraction of the schedule), got {self.goodness_kl_start}")
        if self.goodness_kl_start > 0 and self.goodness_kl_weight == 0:
            raise ValueError("invalid distillation config: goodness_kl_start has no effect "
                             "without goodness_kl_weight > 0")
        if self.negatives not in (None, "hard", "random", "excess"):
            raise ValueError(f"invalid distillation config: negatives must be None, 'hard', "
                             f"'random' or 'excess', got {self.negatives!r}")
        if self.negative_belief not in (None, "readout", "goodness"):
            raise ValueError(f"invalid distillation config: negative_belief must be None, "
                             f"'readout' or 'goodness', got {self.negative_belief!r}")
        if not (isinstance(self.jitter, int) and not isinstance(self.jitter, bool)
                and self.jitter >= 0):
            raise ValueError(f"invalid distillation config: jitter must be an integer >= 0 "
                             f"(pixels), got {self.jitter!r}")
        if self.jitter > 0 and (self.image_shape is None or len(self.image_shape) != 2
                                or min(self.image_shape) <= 2 * self.jitter):
            raise ValueError(f"invalid distillation config: jitter {self.jitter} needs the "
                             f"transfer images' image_shape (H, W), each larger than twice the "
                             f"jitter, got {self.image_shape!r}")
        if not (self.mixup >= 0 and math.isfinite(self.mixup)):
            raise ValueError(f"invalid distillation config: mixup must be a number >= 0 (the "
                             f"Beta(α, α) of the blends; 0: no blending), got {self.mixup}")
        if self.mixup > 0 and self.hard_weight > 0:
            raise ValueError("invalid distillation config: mixup blends have no true label, so "
                             "hard_weight must be 0 with mixup > 0")


def student_config(cfg: ff.FFConfig, dcfg: DistillConfig) -> ff.FFConfig:
    """The learner config a student uses: the readout descends the T²-scaled soft loss; the
    positives are drawn at τ = ``positive_temperature`` (power T / τ on the targets); the
    goodness-KL weight and the negatives as ``dcfg`` says; no readout refit (students learn by
    ``ff.train_step`` every epoch)."""
    return dataclasses.replace(cfg, readout_temperature=dcfg.temperature, readout_refit_epochs=0,
                               hard_weight=dcfg.hard_weight, mode="supervised",
                               positive_power=dcfg.temperature / dcfg.positive_temperature,
                               goodness_kl_weight=dcfg.goodness_kl_weight,
                               goodness_kl_temperature=dcfg.goodness_kl_temperature,
                               goodness_kl_start=dcfg.goodness_kl_start,
                               negatives=dcfg.negatives or cfg.negatives,
                               negative_belief=dcfg.negative_belief or cfg.negative_belief)


def _distill_epoch(students: ff.FFState, teachers: ff.FFState, x: Array, labels: Array | None,
                   key: Array, student_keys: Array, cfg: ff.FFConfig, dcfg: DistillConfig,
                   student_bench: ff.Bench, teacher_bench: ff.Bench, chunk: int = 0
                   ) -> tuple[ff.FFState, dict[str, Array]]:
    scfg = student_config(cfg, dcfg)
    n = x.shape[0]
    spe = ff.steps_per_epoch(n, scfg)
    k_order, k_teacher = jax.random.split(key)
    order = jax.random.permutation(k_order, n)[: spe * scfg.batch_size]
    order = order.reshape(spe, scfg.batch_size)

    def view(idx: Array, step: Array) -> Array:
        xb = x[idx]  # teacher and students see the same inputs in the same step
        if dcfg.jitter > 0:  # the same fresh view for both; a stream of its own, so that
            # runs without views keep their order and teacher-read keys
            k_view = jax.random.fold_in(jax.random.fold_in(key, 0x5EE), step)
            xb = shifted_views(k_view, xb, dcfg.image_shape, dcfg.jitter)
        if dcfg.mixup > 0:  # likewise a stream of its own
            k_mix = jax.random.fold_in(jax.random.fold_in(key, 0x313), step)
            xb = mixed_views(k_mix, xb, dcfg.mixup)
        return xb

    def targets(xb: Array, step: Array) -> Array:
        return ensemble_probabilities(teachers, xb, cfg, temperature=dcfg.temperature,
                                      source=dcfg.source,
                                      key=jax.random.fold_in(k_teacher, step),
                                      bench=teacher_bench, reads=dcfg.teacher_reads)

    def learn(s: ff.FFState, xb: Array, q: Array, idx: Array, step: Array, k: Array
              ) -> tuple[ff.FFState, dict[str, Array]]:
        yb = None if labels is None else labels[idx]
        return ff.train_step(s, xb, q, jax.random.fold_in(k, step), scfg, spe, student_bench,
                             yb)

    steps = jnp.arange(spe)
    n_students = student_keys.shape[0]
    if 0 < chunk < n_students:
        # groups of students one after the other, each group over the whole epoch: the
        # teachers' targets of every step first (they do not depend on the students), then
        # each group's scan over the steps. The other nesting (a scan over steps with a
        # ``lax.map`` over groups in every step) copied every student's whole state, physics
        # included, at every step: 4 students of 8-cell 784-500-500-500 ``rram`` took 183 ms
        # per student-step that way, 100 ms this way (2-core AVX-512 host, beside another
        # run). The same arithmetic per student: the bits of a run with the student alone.
        qs = jax.lax.map(lambda inp: targets(view(*inp), inp[1]), (order, steps))

        def student_epoch(s: ff.FFState, k: Array) -> tuple[ff.FFState, dict[str, Array]]:
            def step_of(s: ff.FFState, inp: tuple[Array, Array, Array]
                        ) -> tuple[ff.FFState, dict[str, Array]]:
                idx, step, q = inp
                return learn(s, view(idx, step), q, idx, step, k)

            return jax.lax.scan(step_of, s, (order, steps, qs))

        students, metrics = ff.in_chunks(student_epoch, (students, student_keys), chunk)
        return students, jax.tree.map(lambda m: jnp.mean(m, axis=1), metrics)

    def body(st: ff.FFState, inp: tuple[Array, Array]) -> tuple[ff.FFState, dict[str, Array]]:
        idx, step = inp
        xb = view(idx, step)
        q = targets(xb, step)
        return ff.in_chunks(lambda s, k: learn(s, xb, q, idx, step, k), (st, student_keys),
                            chunk)

    students, metrics = jax.lax.scan(body, students, (order, steps))
    return students, jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)


distill_epoch_fn = _distill_epoch  # the same epoch un-jitted, to compose into other programs

distill_epoch = jax.jit(_distill_epoch, static_argnames=("cfg", "dcfg", "student_bench",
                                                          "teacher_bench", "chunk"))
distill_epoch.__doc__ = """One epoch of students learning in place from teachers' soft targets.

students: stacked learner states (S students, built with ``ff.init_population`` and
``student_config``); teachers: stacked learner states of K teachers (K = 1: one teacher; K > 1:
an ensemble whose probabilities are averaged). x ``(N, D)``: the transfer set; labels ``(N,)`` or
None. key: shared (minibatch order, teacher read noise); student_keys ``(S,)``: each student's
own. Every step measures the teachers on the minibatch the students learn from (no stale cache).
The teachers are only ever measured (``teacher_bench.measure``). ``chunk``: students step
together (``vmap``, the default 0) or in groups of ``chunk`` one group after the other, each
group over the whole epoch once the teachers' targets of every step are measured
(``ff.in_chunks``: results then do not depend on how a population is split over accelerators,
and a student's bits are those of a run with it alone)."""


def copy_weights(teacher: ff.FFState, student_device: devices.Device, *, key: Array
                 ) -> ff.FFState:
    """The immortal control arm: program the teacher's weights into another device, and copy
    its digital readout. It reads the teacher's conductances (``devices.inspect``: impossible on
    a sealed mortal device, which is the point) and asks the student for the difference; the
    student's own physics (bounds, steps, faults, read gains, neurons) then decides what it
    computes. Works when the physics match (``ideal`` → ``ideal``); fails when they differ."""
    t_w = devices.inspect(teacher.device)["layers"]
    s_w = devices.inspect(student_device)["layers"]

    def synapse_weights(w: Array, spec: devices.DeviceSpec, idx: int) -> Array:
        # a synapse of several cells holds the mean of its cells (cell axis: -3)
        return w if spec.layer(idx).synapse.cells == 1 else w.mean(axis=-3)

    requests = tuple(synapse_weights(t["weights"], teacher.device.spec, i)
                     - synapse_weights(s["weights"], student_device.spec, i)
                     for i, (t, s) in enumerate(zip(t_w, s_w, strict=True)))
    programmed = devices.program(student_device, requests, key=key)
    return dataclasses.replace(teacher, device=programmed)


def lineage_record(generation: int, teacher: str, student: str, transfer_set: str,
                   dcfg: DistillConfig, fab_seed: int, recipe: str, epochs: int
                   ) -> dict[str, Any]:
    """One edge of a distillation lineage (plain data, for run files)."""
    return {"generation": generation, "teacher": teacher, "student": student,
            "transfer_set": transfer_set, "temperature": dcfg.temperature,
            "positive_temperature": dcfg.positive_temperature,
            "teacher_reads": dcfg.teacher_reads, "source": dcfg.source,
            "hard_weight": dcfg.hard_weight, "goodness_kl_weight": dcfg.goodness_kl_weight,
            "goodness_kl_temperature": dcfg.goodness_kl_temperature,
            "goodness_kl_start": dcfg.goodness_kl_start,
            "negatives": dcfg.negatives, "negative_belief": dcfg.negative_belief,
            "jitter": dcfg.jitter, "mixup": dcfg.mixup, "fab_seed": fab_seed,
            "recipe": recipe, "epochs": epochs}


def chain(first: ff.FFState, spec: devices.DeviceSpec, generations: int, x: Array,
          labels: Array | None, cfg: ff.FFConfig, dcfg: DistillConfig, epochs: int,
          seed: int, transfer_set: str = "train images", progress: bool = False
          ) -> tuple[list[ff.FFState], list[dict[str, Any]]]:
    """Teacher → child → grandchild …: each generation is a freshly fabricated device of
    ``spec`` (fab seed ``seed + g``) that learns from the previous one for ``epochs`` epochs.

    ``first``: the founding teacher (a single learner state, no population axis). Returns every
    generation's learner state (generation 0 = ``first``) and the lineage records.
    ``progress``: a progress bar over generations × epochs on stderr.
    """
    scfg = student_config(cfg, dcfg)
    spe = ff.steps_per_epoch(x.shape[0], scfg)
    states, lineage = [first], []
    bar = tqdm(total=generations * epochs, desc="chain", unit="epoch", disable=not progress,
               leave=False)
    for g in range(1, generations + 1):
        device = devices.fabricate(spec, jax.random.key(seed + g))
        student = jax.tree.map(lambda a: a[None], ff.init(device, scfg, spe))
        teacher = jax.tree.map(lambda a: a[None], states[-1])
        key = jax.random.key(seed + 10_000 + g)
        for e in range(epochs):
            k = jax.random.fold_in(key, e)
            student, _ = distill_epoch(student, teacher, x, labels, k,
                                       jax.random.split(jax.random.fold_in(k, 1), 1),
                                       cfg=cfg, dcfg=dcfg, student_bench=ff.BENCH,
                                       teacher_bench=ff.BENCH)
            if progress:  # count finished epochs, not dispatched ones
                jax.block_until_ready(student)
            bar.update(1)
            bar.set_postfix(generation=g)
        states.append(jax.tree.map(lambda a: a[0], student))
        lineage.append(lineage_record(g, f"generation {g - 1}", f"generation {g}",
                                      transfer_set, dcfg, seed + g, spec.name, epochs))
    bar.close()
    return states, lineage
