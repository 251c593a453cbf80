"""Distillation: the loss convention, reduction to plain FF, measure-only teachers, populations,
lineage, fidelity, transfer sets, bias correction and the control arm."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import devices
import distill
from mortal import ff

from ..mortal.test_ff import CFG, N_CLASSES, POISONED, W, _data, _poison, _tree_equal


def _teacher(epochs: int = 3) -> ff.FFState:
    pop = devices.spawn(devices.preset("ideal", W), 1, jax.random.key(10))
    x, y = _data()
    state = ff.init_population(pop, CFG, ff.steps_per_epoch(x.shape[0], CFG))
    for e in range(epochs):
        k, o = ff.epoch_keys(jax.random.key(11), e, 1, CFG)
        state, _ = ff.population_epoch(state, x, y, k, o, cfg=CFG, bench=ff.BENCH)
    return state


def _students(n: int, dcfg: distill.DistillConfig, preset: str = "rram") -> ff.FFState:
    pop = devices.spawn(devices.preset(preset, W), n, jax.random.key(20))
    return ff.init_population(pop, distill.student_config(CFG, dcfg),
                              ff.steps_per_epoch(40, CFG))


def _distill(students: ff.FFState, teacher: ff.FFState, dcfg: distill.DistillConfig,
             student_keys: jax.Array, teacher_bench: ff.Bench = ff.BENCH,
             labels: jax.Array | None = None, chunk: int = 0,
             student_bench: ff.Bench = ff.BENCH) -> ff.FFState:
    x, _ = _data()
    for e in range(2):
        students, _ = distill.distill_epoch(students, teacher, x, labels, jax.random.key(30 + e),
                                            jax.vmap(lambda k, e=e: jax.random.fold_in(k, e))(
                                                student_keys),
                                            cfg=CFG, dcfg=dcfg, student_bench=student_bench,
                                            teacher_bench=teacher_bench, chunk=chunk)
    return students


# --- the loss -----------------------------------------------------------------------------------

def test_soft_loss_carries_t_squared_and_its_gradient_is_the_learners() -> None:
    z_s = jax.random.normal(jax.random.key(0), (16, 5)) * 3
    z_t = jax.random.normal(jax.random.key(1), (16, 5)) * 3
    labels = jnp.arange(16) % 5
    for t, lam in ((1.0, 0.0), (4.0, 0.0), (20.0, 0.3)):
        q = jax.nn.softmax(z_t / t, axis=-1)
        auto = jax.grad(lambda z, q=q, t=t, lam=lam: distill.soft_target_loss(
            z, q, t, labels, lam))(z_s)
        cfg = dataclasses.replace(CFG, n_classes=5, readout_temperature=t, hard_weight=lam)
        rule = ff.readout_gradient(z_s, q, labels, cfg) / z_s.shape[0]
        np.testing.assert_allclose(rule, auto, rtol=1e-4, atol=1e-6)
    # T² keeps the soft gradient's scale: without it the gradient would shrink like 1/T
    g = [float(jnp.abs(jax.grad(lambda z, t=t: distill.soft_target_loss(
        z, jax.nn.softmax(z_t / t, -1), t))(z_s)).mean()) for t in (10.0, 100.0)]
    assert 0.8 < g[1] / g[0] < 1.25


def test_high_temperature_limit_is_logit_regression() -> None:
    z_s = jax.random.normal(jax.random.key(0), (8, 6))
    z_t = jax.random.normal(jax.random.key(1), (8, 6))
    z_s, z_t = z_s - z_s.mean(-1, keepdims=True), z_t - z_t.mean(-1, keepdims=True)
    regression = (z_s - z_t) / (6 * 8)  # ∂/∂z of mean over batch of |z − z_t|² / (2C)
    gaps = []
    for t in (10.0, 100.0):
        grad = jax.grad(lambda z, t=t: distill.soft_target_loss(
            z, jax.nn.softmax(z_t / t, -1), t))(z_s)
        gaps.append(float(jnp.abs(grad - regression).max() / jnp.abs(regression).max()))
    assert gaps[1] < 0.02  # within 2 % at T = 100
    assert gaps[1] < gaps[0] / 5  # and the gap closes like 1/T


# --- students learn with the FF rule ------------------------------------------------------------

def test_one_hot_teacher_reduces_distillation_to_plain_ff() -> None:
    """A teacher that is certain (T → 0) gives one-hot targets: students then train exactly as
    FF with those labels."""
    teacher = _teacher()
    x, _ = _data()
    dcfg = distill.DistillConfig(temperature=1e-4, source="goodness")
    students = _students(2, dcfg)
    keys = jax.random.split(jax.random.key(40), 2)
    distilled = _distill(students, teacher, dcfg, keys)
    # the same students trained by plain FF on the teacher's argmax labels, same keys and order
    scfg = distill.student_config(CFG, dcfg)
    t_single = jax.tree.map(lambda a: a[0], teacher)
    hard = jnp.argmax(ff.goodness_scores(t_single.device, x, CFG, None), -1)
    plain = students
    spe = ff.steps_per_epoch(40, CFG)
    # one compiled minibatch step, called step by step (op-by-op dispatch of an eager vmap costs
    # most of this test's time otherwise)
    step_all = jax.jit(jax.vmap(lambda s, xb, yb, k: ff.train_step(s, xb, yb, k, scfg, spe),
                                in_axes=(0, None, None, 0)))
    for e in range(2):
        k_order, _ = jax.random.split(jax.random.key(30 + e))
        order = jax.random.permutation(k_order, 40)[: spe * CFG.batch_size].reshape(spe, -1)
        ekeys = jax.vmap(lambda k, e=e: jax.random.fold_in(k, e))(keys)
        for step in range(spe):
            idx = order[step]
            skeys = jax.vmap(lambda k, step=step: jax.random.fold_in(k, step))(ekeys)
            plain, _ = step_all(plain, x[idx], hard[idx], skeys)
    for a, b in zip(distilled.device.state.weights, plain.device.state.weights, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_students_draw_positives_at_the_positive_temperature() -> None:
    """The readout matches targets at T; the FF layers' positives are drawn at τ (power T/τ)."""
    dcfg = distill.DistillConfig(temperature=20.0, positive_temperature=2.0)
    scfg = distill.student_config(CFG, dcfg)
    assert scfg.readout_temperature == 20.0 and scfg.positive_power == 10.0
    z = jnp.array([[4.0, 2.0, 1.0, 0.0]])
    q = jax.nn.softmax(z / 20.0)
    draws = ff.positive_classes(jax.random.key(0), jnp.repeat(q, 40_000, axis=0), None, scfg)
    np.testing.assert_allclose(np.bincount(np.asarray(draws), minlength=4) / 40_000,
                               jax.nn.softmax(z[0] / 2.0), atol=0.01)
    with pytest.raises(ValueError, match="positive_temperature must be > 0"):
        distill.DistillConfig(positive_temperature=0.0)


def test_student_only_settings_reach_the_students_and_change_what_they_learn() -> None:
    """``goodness_kl_weight`` and ``negatives`` of the distillation config shape the students'
    learner only; the teacher is still only measured, and the defaults change nothing."""
    base = distill.DistillConfig()
    assert distill.student_config(CFG, base).negatives == CFG.negatives
    assert distill.student_config(CFG, base).negative_belief == CFG.negative_belief
    refitting = dataclasses.replace(CFG, readout_refit_epochs=1)
    assert distill.student_config(refitting, base).readout_refit_epochs == 0
    dcfg = distill.DistillConfig(goodness_kl_weight=0.1, negatives="excess",
                                 goodness_kl_temperature="fit", negative_belief="goodness",
                                 goodness_kl_start=0.25)
    scfg = distill.student_config(CFG, dcfg)
    assert scfg.goodness_kl_weight == 0.1 and scfg.negatives == "excess"
    assert scfg.goodness_kl_start == 0.25
    assert scfg.negative_belief == "goodness"
    assert scfg.goodness_kl_temperature == "fit"
    teacher = _teacher(1)
    keys = jax.random.split(jax.random.key(41), 2)
    plain = _distill(_students(2, base), teacher, base, keys)
    shaped = _distill(_students(2, dcfg), teacher, dcfg, keys)
    assert not _tree_equal(plain.device.state.weights, shaped.device.state.weights)
    for bad in ({"goodness_kl_weight": -1.0}, {"negatives": "worst"},
                {"goodness_kl_temperature": "auto"}, {"negative_belief": "teacher"},
                {"goodness_kl_start": 1.0}, {"goodness_kl_start": -0.5},
                {"goodness_kl_start": 0.5}):  # the last: κ = 0, so the start would do nothing
        with pytest.raises(ValueError, match="invalid distillation config"):
            distill.DistillConfig(**bad)


def test_students_only_ever_measure_the_teacher() -> None:
    teacher = _teacher(1)
    dcfg = distill.DistillConfig()
    keys = jax.random.split(jax.random.key(41), 2)
    honest = _distill(_students(2, dcfg), teacher, dcfg, keys)

    def no_program(*_: object, **__: object) -> devices.Device:
        raise AssertionError("a student programmed its teacher")

    measure_only = ff.Bench(
        measure=lambda d, x, *, key=None: devices.measure(_poison(d), x, key=key),
        program=no_program)
    sealed_teacher = dataclasses.replace(teacher, device=jax.vmap(_poison)(teacher.device))
    sealed = _distill(_students(2, dcfg), sealed_teacher, dcfg, keys, teacher_bench=measure_only)
    assert _tree_equal(sealed.device, honest.device)


def test_students_learn_through_their_bench_only() -> None:
    """Students whose physics and state are stored bit-inverted, distilled through a bench that
    un-inverts them, end with bit for bit the (inverted) devices and the readouts of honest
    students: a student step that read its own device directly would have seen garbage."""
    teacher = _teacher(1)
    dcfg = distill.DistillConfig()
    keys = jax.random.split(jax.random.key(41), 2)
    students = _students(2, dcfg)
    honest = _distill(students, teacher, dcfg, keys)
    assert not _tree_equal(honest.device.state, students.device.state)  # they learned
    poisoned = dataclasses.replace(students, device=jax.vmap(_poison)(students.device))
    assert not _tree_equal(poisoned.device.state, students.device.state)  # the poison is real
    sealed = _distill(poisoned, teacher, dcfg, keys, student_bench=POISONED)
    assert _tree_equal(jax.vmap(_poison)(sealed.device), honest.device)
    assert _tree_equal(sealed.readout, honest.readout)


@pytest.mark.full_optimization
def test_vmapped_one_to_many_equals_separate_runs() -> None:
    teacher = _teacher(1)
    dcfg = distill.DistillConfig(hard_weight=0.2)
    _, y = _data()
    keys = jax.random.split(jax.random.key(42), 3)
    students = _students(3, dcfg)
    together = _distill(students, teacher, dcfg, keys, labels=y)
    for i in (0, 2):
        one = jax.tree.map(lambda a, i=i: a[i:i + 1], students)
        alone = _distill(one, teacher, dcfg, keys[i:i + 1], labels=y)
        for a, b in zip(together.device.state.weights, alone.device.state.weights, strict=True):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)


def test_students_in_groups_of_one_have_the_bits_of_separate_runs() -> None:
    """``chunk = 1``: the teachers' targets of the epoch are measured first, then each student
    runs the whole epoch alone (no per-step copy of the stacked states); every student's bits
    are those of a run with it alone, which is a ``vmap`` of one over the steps' scan."""
    teacher = _teacher(1)
    dcfg = distill.DistillConfig(hard_weight=0.2, teacher_reads=2)
    _, y = _data()
    keys = jax.random.split(jax.random.key(43), 2)
    students = _students(2, dcfg)
    grouped = _distill(students, teacher, dcfg, keys, labels=y, chunk=1)
    assert not _tree_equal(grouped.device.state.weights, students.device.state.weights)
    for i in range(2):
        one = jax.tree.map(lambda a, i=i: a[i:i + 1], students)
        alone = _distill(one, teacher, dcfg, keys[i:i + 1], labels=y, chunk=1)
        assert _tree_equal(jax.tree.map(lambda a, i=i: a[i:i + 1], grouped), alone)
    x, _ = _data()
    _, metrics = distill.distill_epoch(students, teacher, x, y, jax.random.key(30), keys,
                                       cfg=CFG, dcfg=dcfg, student_bench=ff.BENCH,
                                       teacher_bench=ff.BENCH, chunk=1)
    _, vmapped = distill.distill_epoch(students, teacher, x, y, jax.random.key(30), keys,
                                       cfg=CFG, dcfg=dcfg, student_bench=ff.BENCH,
                                       teacher_bench=ff.BENCH)
    assert jax.tree.map(jnp.shape, metrics) == jax.tree.map(jnp.shape, vmapped)
    assert all(v.shape[0] == 2 for v in jax.tree.leaves(metrics))


def test_ensemble_targets_are_the_mean_of_member_probabilities() -> None:
    """Two different (noiseless) teachers: the targets are ``mean_k softmax(z_k / T)`` of the
    members' goodness scores, measurably not ``softmax(mean_k z_k / T)``; one teacher stacked
    twice gives that teacher's own targets."""
    first, second = _teacher(1), _teacher(3)
    x, _ = _data(8)
    t = 2.0  # low enough that the mean of softmaxes and the softmax of the mean differ
    pair = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), first, second)
    got = distill.ensemble_probabilities(pair, x, CFG, temperature=t, source="goodness",
                                         key=jax.random.key(0))
    z = [ff.goodness_scores(jax.tree.map(lambda a: a[0], m).device, x, CFG, None)
         for m in (first, second)]
    p = [jax.nn.softmax(zk / t, axis=-1) for zk in z]
    assert float(jnp.abs(p[0] - p[1]).max()) > 0.1  # the members really disagree
    np.testing.assert_allclose(got, (p[0] + p[1]) / 2, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(got - jax.nn.softmax((z[0] + z[1]) / 2 / t, axis=-1)).max()) > 1e-3
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    twice = jax.tree.map(lambda a: jnp.concatenate([a, a]), first)
    one, two = (distill.ensemble_probabilities(m, x, CFG, temperature=t, source="goodness",
                                               key=jax.random.key(0)) for m in (first, twice))
    np.testing.assert_allclose(one, p[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)


def test_readout_source_targets_are_the_softmax_of_the_readout_logits() -> None:
    """``source = "readout"``: the targets are ``softmax(readout logits / T)`` of the teacher's
    one neutral-label pass, not its goodness softmax; a distillation epoch with that source
    reads the teacher once per step on the minibatch with the neutral label."""
    teacher = _teacher(1)
    single = jax.tree.map(lambda a: a[0], teacher)
    x, _ = _data(8)
    t = 2.0
    got = distill.ensemble_probabilities(teacher, x, CFG, temperature=t, source="readout",
                                         key=jax.random.key(0))
    want = jax.nn.softmax(ff.readout_logits(single, x, CFG, None) / t, axis=-1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(want - 1 / N_CLASSES).max()) > 0.01  # the readout is not flat
    by_goodness = jax.nn.softmax(ff.goodness_scores(single.device, x, CFG, None) / t, axis=-1)
    assert float(jnp.abs(got - by_goodness).max()) > 0.1
    _, seen = _inputs_seen(distill.DistillConfig(source="readout"), teacher)
    for read in seen["teacher"]:
        assert read.shape == (CFG.batch_size, W[0])
        np.testing.assert_array_equal(read[:, :N_CLASSES], 1 / N_CLASSES)


def test_repeated_teacher_reads_average_out_read_noise() -> None:
    """R reads per step: the scores of a noisy (rram) teacher vary ~R times less from key to
    key; a teacher without read noise (ideal) gives the same targets for any R."""
    x, _ = _data(8)
    noisy = jax.tree.map(lambda a: a[None], devices.fabricate(devices.preset("rram", W),
                                                              jax.random.key(3)))
    teacher = ff.init_population(noisy, CFG, 1)

    def spread(reads: int) -> float:
        qs = jnp.stack([distill.ensemble_probabilities(teacher, x, CFG, temperature=100.0,
                                                       source="goodness", key=jax.random.key(k),
                                                       reads=reads) for k in range(24)])
        return float(jnp.mean(jnp.var(qs, axis=0)))

    one, four = spread(1), spread(4)
    assert 2.5 < one / four < 6.5  # ideally 4: at T = 100 the probabilities are linear in z
    clean = _teacher(1)
    a, b = (distill.ensemble_probabilities(clean, x, CFG, temperature=20.0, source="goodness",
                                           key=jax.random.key(0), reads=r) for r in (1, 3))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    with pytest.raises(ValueError, match="reads must be >= 1"):
        distill.ensemble_probabilities(clean, x, CFG, temperature=1.0, source="goodness",
                                       key=jax.random.key(0), reads=0)
    with pytest.raises(ValueError, match="teacher_reads must be an integer >= 1"):
        distill.DistillConfig(teacher_reads=0)


def test_chain_records_a_complete_lineage() -> None:
    teacher = jax.tree.map(lambda a: a[0], _teacher(1))
    x, _ = _data()
    dcfg = distill.DistillConfig()
    states, lineage = distill.chain(teacher, devices.preset("rram", W), 3, x, None, CFG, dcfg,
                                    epochs=1, seed=5, transfer_set="toy")
    assert len(states) == 4 and len(lineage) == 3
    for g, rec in enumerate(lineage, start=1):
        assert rec["generation"] == g and rec["teacher"] == f"generation {g - 1}"
        assert rec["student"] == f"generation {g}" and rec["fab_seed"] == 5 + g
        assert rec["transfer_set"] == "toy" and rec["temperature"] == dcfg.temperature
        assert rec["positive_temperature"] == dcfg.positive_temperature
        assert rec["teacher_reads"] == dcfg.teacher_reads
        assert rec["negative_belief"] == dcfg.negative_belief and rec["mixup"] == dcfg.mixup
        assert rec["goodness_kl_start"] == dcfg.goodness_kl_start
        assert (rec["goodness_kl_weight"], rec["goodness_kl_temperature"], rec["negatives"],
                rec["jitter"]) == (dcfg.goodness_kl_weight, dcfg.goodness_kl_temperature,
                                   dcfg.negatives, dcfg.jitter)
        assert rec["recipe"] == "rram" and rec["epochs"] == 1
    # every generation is a different, fresh instance: the device of its recorded fab seed
    gains = [np.asarray(devices.inspect(s.device)["layers"][0]["gain"]) for s in states[1:]]
    assert not np.array_equal(gains[0], gains[1])
    spec = devices.preset("rram", W)
    for g, rec in enumerate(lineage, start=1):
        fresh = devices.fabricate(spec, jax.random.key(rec["fab_seed"]))
        assert _tree_equal(states[g].device.physics, fresh.physics)
    # generation 2 learned from generation 1: it is the first generation of a chain founded by
    # generation 1 (fab seed 6 + 1 = 5 + 2, the same run), not of one founded by generation 0
    again, _ = distill.chain(states[1], spec, 1, x, None, CFG, dcfg, epochs=1, seed=6,
                             transfer_set="toy")
    assert _tree_equal(again[1], states[2])
    from_founder, _ = distill.chain(states[0], spec, 1, x, None, CFG, dcfg, epochs=1, seed=6,
                                    transfer_set="toy")
    assert not _tree_equal(from_founder[1].device.state, states[2].device.state)


# --- the control arm, fidelity, transfer sets, bias ----------------------------------------------

def test_weight_copy_works_on_identical_physics_and_fails_on_different() -> None:
    teacher = jax.tree.map(lambda a: a[0], _teacher(4))
    x, _ = _data(200, seed=3)
    same = devices.fabricate(devices.preset("ideal", W), jax.random.key(99))
    copied = distill.copy_weights(teacher, same, key=jax.random.key(1))
    t_scores = ff.goodness_scores(teacher.device, x, CFG, None)
    np.testing.assert_allclose(ff.goodness_scores(copied.device, x, CFG, None), t_scores,
                               rtol=1e-4)
    other = devices.fabricate(devices.preset("harsh", W), jax.random.key(99))
    broken = distill.copy_weights(teacher, other, key=jax.random.key(1))
    k = jax.random.key(2)
    agree = np.mean(np.argmax(ff.goodness_scores(broken.device, x, CFG, k), -1)
                    == np.argmax(t_scores, -1))
    assert agree < 0.8


def test_fidelity_metrics() -> None:
    t = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    s = np.array([[0.8, 0.2], [0.6, 0.4], [0.6, 0.4]])
    y = np.array([0, 1, 1])
    f = distill.fidelity(t, s, y, 2)
    kl_ts = np.mean([np.sum(a * np.log(a / b)) for a, b in zip(t, s, strict=True)])
    kl_st = np.mean([np.sum(b * np.log(b / a)) for a, b in zip(t, s, strict=True)])
    # example by example: 0.9 ln(9/8) + 0.1 ln(1/2), 0.2 ln(1/3) + 0.8 ln 2, 0
    assert kl_ts == pytest.approx((0.9 * np.log(9 / 8) + 0.1 * np.log(0.5)
                                   + 0.2 * np.log(1 / 3) + 0.8 * np.log(2)) / 3)
    assert f["kl"] == pytest.approx(kl_ts, rel=1e-9)  # KL(teacher ‖ student), not reversed
    assert abs(kl_st - kl_ts) > 0.01
    assert distill.fidelity(s, t, y, 2)["kl"] == pytest.approx(kl_st, rel=1e-9)
    assert f["agreement"] == pytest.approx(2 / 3)
    assert f["teacher_accuracy"] == pytest.approx(2 / 3)
    assert f["student_accuracy"] == pytest.approx(1 / 3)
    assert f["relative_accuracy"] == pytest.approx(0.5)
    assert f["per_class_error"] == [0.0, 1.0]
    assert f["kl"] > 0 and distill.fidelity(t, t, y, 2)["kl"] == pytest.approx(0, abs=1e-9)


def test_transfer_sets() -> None:
    x = np.arange(100, dtype=np.float32).reshape(50, 2)
    y = np.arange(50) % 5
    part = distill.random_fraction(x, 0.2, seed=1)
    assert part.shape == (10, 2) and len(np.unique(part[:, 0])) == 10
    assert not np.isin(y[np.isin(x[:, 0], distill.without_classes(x, y, (3,))[:, 0])], 3).any()
    np.testing.assert_array_equal(distill.without_classes(x, y, (3,)), x[y != 3])
    np.testing.assert_array_equal(distill.without_classes(x, y, (1, 3)),
                                  x[(y != 1) & (y != 3)])
    noise = distill.noise_inputs(7, 4)
    assert noise.shape == (7, 4) and noise.dtype == np.float32
    many = distill.noise_inputs(500, 8, seed=3)  # uniform on [0, 1], as its docstring says
    assert many.min() >= 0.0 and many.max() <= 1.0
    assert many.min() < 0.01 and many.max() > 0.99 and abs(many.mean() - 0.5) < 0.02
    np.testing.assert_array_equal(distill.noise_inputs(7, 4), noise)  # the seed decides
    assert not np.array_equal(distill.noise_inputs(7, 4, seed=1), noise)
    h = distill.hybrid_inputs(np.random.default_rng(0).uniform(size=(9, 16)).astype(np.float32),
                              5, (4, 4))
    assert h.shape == (5, 16)
    with pytest.raises(ValueError, match="fraction must lie in"):
        distill.random_fraction(x, 0.0)
    with pytest.raises(ValueError, match="leaves no image"):
        distill.without_classes(x, y, (0, 1, 2, 3, 4))


def test_shifted_views_move_each_image_by_its_own_whole_pixel_shift() -> None:
    x = jax.random.uniform(jax.random.key(3), (64, 5 * 6)) + 1.0  # no pixel is 0
    assert distill.shifted_views(jax.random.key(4), x, (5, 6), 0) is x
    views = np.asarray(distill.shifted_views(jax.random.key(4), x, (5, 6), 2)).reshape(64, 5, 6)
    imgs = np.asarray(x).reshape(64, 5, 6)
    seen = set()
    for img, view in zip(imgs, views, strict=True):
        rows = np.flatnonzero(view.any(axis=1))
        cols = np.flatnonzero(view.any(axis=0))
        dy = int(rows[0]) if rows[0] > 0 else -(4 - int(rows[-1]))
        dx = int(cols[0]) if cols[0] > 0 else -(5 - int(cols[-1]))
        assert -2 <= dy <= 2 and -2 <= dx <= 2
        expect = np.zeros_like(img)  # view[r, c] = img[r - dy, c - dx], 0 where that is outside
        expect[max(dy, 0):5 + min(dy, 0), max(dx, 0):6 + min(dx, 0)] = \
            img[max(-dy, 0):5 - max(dy, 0), max(-dx, 0):6 - max(dx, 0)]
        np.testing.assert_array_equal(view, expect)
        seen.add((dy, dx))
    assert len(seen) > 12  # of the 25 shifts, drawn per image
    with pytest.raises(ValueError, match="has 20 pixels"):
        distill.shifted_views(jax.random.key(4), x, (4, 5), 1)


def test_mixed_views_blend_each_image_with_another_of_its_minibatch() -> None:
    """Image i of the minibatch is the unit vector e_i, so view i shows its own weight λ_i at i
    and 1 − λ_i at its partner π(i): the partners form a permutation, the weights sum to 1 and
    follow Beta(α, α) (α = 1: uniform; α = 0.1: mostly near 0 or 1)."""
    b = 512
    x = jnp.eye(b, dtype=jnp.float32)
    between = {}
    for alpha in (1.0, 0.1):
        views = np.asarray(distill.mixed_views(jax.random.key(5), x, alpha))
        assert views.shape == (b, b) and views.dtype == np.float32
        np.testing.assert_allclose(views.sum(axis=1), 1.0, rtol=1e-6)
        assert ((views > 0).sum(axis=1) <= 2).all()
        others = views.copy()
        others[np.arange(b), np.arange(b)] = 0
        mixed = others.max(axis=1) > 0  # not a fixed point of π, nor a λ that rounds to 1
        partner = others.argmax(axis=1)[mixed]
        assert len(set(partner.tolist())) == mixed.sum() > b / 2  # a permutation's values
        lam = views[np.arange(b), np.arange(b)][mixed]
        between[alpha] = np.mean((lam > 0.1) & (lam < 0.9))
        if alpha == 1.0:
            assert abs(lam.mean() - 0.5) < 0.05 and abs(lam.var() - 1 / 12) < 0.02
    assert between[1.0] > 0.7 and between[0.1] < 0.3
    again = distill.mixed_views(jax.random.key(5), x, 0.1)
    np.testing.assert_array_equal(np.asarray(again), views)  # the key decides everything
    with pytest.raises(ValueError, match="alpha must be > 0"):
        distill.mixed_views(jax.random.key(5), x, 0.0)
    with pytest.raises(ValueError, match="mixup must be a number >= 0"):
        distill.DistillConfig(mixup=-1.0)
    with pytest.raises(ValueError, match="hard_weight must be 0 with mixup"):
        distill.DistillConfig(mixup=1.0, hard_weight=0.5)


def _inputs_seen(dcfg: distill.DistillConfig, teacher: ff.FFState
                 ) -> tuple[jax.Array, dict[str, list[np.ndarray]]]:
    """One distillation epoch of one student; the inputs the teacher's and the student's
    ``measure`` were given, in call order (one teacher call, two student calls per step)."""
    seen: dict[str, list[np.ndarray]] = {"teacher": [], "student": []}

    def recording(who: str) -> ff.Bench:
        def measure(d: devices.Device, x: jax.Array, *, key: jax.Array | None = None
                    ) -> devices.Measurement:
            jax.debug.callback(lambda a: seen[who].append(np.asarray(a)), x, ordered=True)
            return devices.measure(d, x, key=key)
        return ff.Bench(measure=measure)

    x, _ = _data()
    distill.distill_epoch(_students(1, dcfg), teacher, x, None, jax.random.key(30),
                          jax.random.split(jax.random.key(31), 1), cfg=CFG, dcfg=dcfg,
                          student_bench=recording("student"), teacher_bench=recording("teacher"))
    steps = ff.steps_per_epoch(x.shape[0], CFG)
    assert len(seen["teacher"]) == steps and len(seen["student"]) == 2 * steps
    return x, seen


def test_teacher_is_measured_on_the_same_blend_the_students_learn_from() -> None:
    """With ``mixup`` the teacher's reads and the students' neutral pass show the same pixels on
    every step, and those pixels are blends, not transfer images."""
    x, seen = _inputs_seen(distill.DistillConfig(mixup=1.0), _teacher(1))
    steps, b = ff.steps_per_epoch(x.shape[0], CFG), CFG.batch_size
    pixels = np.asarray(x)[:, N_CLASSES:]
    blends = 0
    for step in range(steps):
        t_pix = seen["teacher"][step][:b, N_CLASSES:]
        np.testing.assert_array_equal(t_pix, seen["student"][2 * step][:, N_CLASSES:])
        nearest = np.abs(t_pix[:, None, :] - pixels[None]).max(axis=2).min(axis=1)
        blends += (nearest > 1e-3).sum()
    assert blends > 0.7 * steps * b  # a view equals its image where π(i) = i (1 in b expected)


def test_teacher_is_measured_on_the_same_fresh_view_the_students_learn_from() -> None:
    """With ``jitter`` every step shows teacher and students one shifted view of the minibatch:
    the pixels (all but the label lines) of the teacher's reads equal the students' neutral
    pass, and differ from the unshifted images."""
    with pytest.raises(ValueError, match="needs the transfer images' image_shape"):
        distill.DistillConfig(jitter=1)
    with pytest.raises(ValueError, match="jitter must be an integer"):
        distill.DistillConfig(jitter=-1, image_shape=(4, 5))
    dcfg = distill.DistillConfig(jitter=1, image_shape=[4, 5])  # a list is made a tuple
    teacher = _teacher(1)
    x, seen = _inputs_seen(dcfg, teacher)
    steps, b = ff.steps_per_epoch(x.shape[0], CFG), CFG.batch_size
    unshifted = {row.tobytes() for row in np.asarray(x)[:, N_CLASSES:]}
    as_is = 0
    for step in range(steps):
        t_pix = seen["teacher"][step][:b, N_CLASSES:]  # class-major: the first B rows, label 0
        s_pix = seen["student"][2 * step][:, N_CLASSES:]  # the neutral pass
        np.testing.assert_array_equal(t_pix, s_pix)
        as_is += sum(row.tobytes() in unshifted for row in s_pix)
    assert as_is < steps * b / 3  # a view is its image only when drawn unshifted (1 in 9)
    keys = jax.random.split(jax.random.key(31), 1)
    students = _students(1, dcfg)
    plain = _distill(students, teacher, distill.DistillConfig(), keys)
    viewed = _distill(students, teacher, dcfg, keys)
    assert not _tree_equal(plain.device.state.weights, viewed.device.state.weights)


def test_class_bias_correction_recovers_an_offset() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, N_CLASSES, 400)
    scores = 3.0 * np.eye(N_CLASSES)[y] + rng.normal(0, 1, (400, N_CLASSES))
    scores[:, 2] -= 4.0  # the class the transfer set lacked
    before = np.mean(scores.argmax(-1)[y == 2] == 2)
    b = np.asarray(distill.fit_class_bias(jnp.asarray(scores), jnp.asarray(y)))
    after = np.mean((scores + b).argmax(-1)[y == 2] == 2)
    assert before < 0.2 and after > 0.8
    assert abs(b.sum()) < 1e-4 and b[2] > 2.0


# --- mutual distillation ----------------------------------------------------------------------

def test_others_mean_excludes_each_devices_own_belief() -> None:
    b = jax.random.uniform(jax.random.key(0), (4, 3, 5))
    m = np.asarray(distill.others_mean(b))
    for i in range(4):
        others = [j for j in range(4) if j != i]
        np.testing.assert_allclose(m[i], np.asarray(b)[others].mean(0), rtol=1e-6)


def test_mutual_epoch_shares_stale_beliefs_and_learns_shards() -> None:
    dcfg = distill.DistillConfig(temperature=20.0)
    x, y = _data(80)
    pop = devices.spawn(devices.preset("rram", W), 3, jax.random.key(50))
    states = ff.init_population(pop, distill.student_config(CFG, dcfg),
                                ff.steps_per_epoch(80, CFG))
    x_shards = jnp.stack([x[i::3][:26] for i in range(3)])
    y_shards = jnp.stack([y[i::3][:26] for i in range(3)])
    new, shared, metrics = distill.mutual_epoch(states, states, x, x_shards, y_shards,
                                                jax.random.key(1), cfg=CFG, dcfg=dcfg,
                                                exchange_every=3, bench=ff.BENCH)
    assert metrics["ff_loss"].shape == (3,)
    steps = ff.steps_per_epoch(80, CFG)  # 8 steps: the last exchange happened at step 6
    assert int(new.step[0]) == 2 * steps  # a distillation and a shard step per step
    assert int(shared.step[0]) == 2 * 6
    assert not _tree_equal(new.device.state, states.device.state)
    # with no exchange after the start, the shared beliefs stay those of the initial devices
    _, frozen, _ = distill.mutual_epoch(states, states, x, x_shards, y_shards,
                                        jax.random.key(1), cfg=CFG, dcfg=dcfg,
                                        exchange_every=1000, bench=ff.BENCH)
    assert _tree_equal(frozen, states)
    # burn-in: only the shard steps
    burned, _, m = distill.mutual_epoch(states, states, x, x_shards, y_shards, jax.random.key(1),
                                        cfg=CFG, dcfg=dcfg, exchange_every=3, bench=ff.BENCH,
                                        distil=False)
    assert int(burned.step[0]) == steps
    assert m["agreement_with_others"].shape == (3,)


def test_tuned_offset_of_the_missing_class_is_the_accuracy_optimum() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, N_CLASSES, 500)
    scores = 3.0 * np.eye(N_CLASSES)[y] + rng.normal(0, 1, (500, N_CLASSES))
    scores[:, 2] -= 4.0  # the class the transfer set lacked
    b = distill.tune_class_offset(scores, y, 2)

    def accuracy(offset: float) -> float:
        shifted = scores.copy()
        shifted[:, 2] += offset
        return float(np.mean(shifted.argmax(-1) == y))

    # no offset on a fine grid does better, and it recovers most of the class
    grid = np.linspace(-2, 10, 2401)
    assert accuracy(b) >= max(accuracy(g) for g in grid)
    assert 2.0 < b < 6.0 and accuracy(b) > accuracy(0.0) + 0.05
    fixed = scores.copy()
    fixed[:, 2] += b
    assert np.mean(fixed.argmax(-1)[y == 2] == 2) > 0.7
    # a class nothing is missing from needs no offset beyond the noise
    assert abs(distill.tune_class_offset(scores, y, 0)) < 1.0
    with pytest.raises(ValueError, match="0 <= cls < C"):
        distill.tune_class_offset(scores, y, N_CLASSES)


def test_corrected_predictions_apply_the_fitted_offsets() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, N_CLASSES, 400)
    scores = 3.0 * np.eye(N_CLASSES)[y] + rng.normal(0, 1, (400, N_CLASSES))
    scores[:, 2] -= 4.0
    val, test = scores[:200], scores[200:]
    b = np.asarray(distill.fit_class_bias(jnp.asarray(val / 2.0), jnp.asarray(y[:200])))
    pred = distill.corrected_predictions(test, val, y[:200], temperature=2.0)
    np.testing.assert_array_equal(pred, (test / 2.0 + b).argmax(-1))
    assert np.mean(pred[y[200:] == 2] == 2) > np.mean(test.argmax(-1)[y[200:] == 2] == 2) + 0.5
