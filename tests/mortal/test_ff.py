"""Forward-Forward in place: the rule is FF, it only uses the bench, populations are exact."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import devices
from mortal import ff

W = (20, 16, 12, 8)
N_CLASSES = 4
CFG = ff.FFConfig(n_classes=N_CLASSES, batch_size=10, epochs=4, lr=0.05)


def _data(n: int = 40, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, N_CLASSES, n).astype(np.int32)
    x = rng.uniform(0, 1, (n, W[0])).astype(np.float32)
    x[np.arange(n), N_CLASSES + y] += 2.0  # a learnable feature per class
    return jnp.asarray(x), jnp.asarray(y)


def _train(population: devices.Device, targets: jax.Array, x: jax.Array, epochs: int,
           cfg: ff.FFConfig = CFG, bench: ff.Bench = ff.BENCH, seed: int = 1
           ) -> tuple[ff.FFState, dict]:
    p = population.population_size
    assert p is not None
    state = ff.init_population(population, cfg, ff.steps_per_epoch(x.shape[0], cfg))
    metrics = {}
    for e in range(epochs):
        keys, order = ff.epoch_keys(jax.random.key(seed), e, p, cfg)
        state, metrics = ff.population_epoch(state, x, targets, keys, order, cfg=cfg, bench=bench)
    return state, metrics


def _tree_equal(a: object, b: object) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(u), np.asarray(v))
                                      for u, v in zip(la, lb, strict=True))


def _one_step(cfg: ff.FFConfig, x: jax.Array, y: jax.Array, key: jax.Array
              ) -> tuple[devices.Device, list[np.ndarray], dict[str, jax.Array]]:
    """One ``train_step`` (the first of the schedule) of a fresh learner on an ``ideal`` device
    (fab key 0): the device before it, each layer's weight change, and the step's metrics."""
    d = devices.fabricate(devices.preset("ideal", W), jax.random.key(0))
    new, metrics = jax.jit(ff.train_step, static_argnums=(4, 5))(ff.init(d, cfg, 4), x, y, key,
                                                                 cfg, 4)
    return d, [np.asarray(b - a, np.float64) for a, b in
               zip(d.state.weights, new.device.state.weights, strict=True)], metrics


def _assert_step_is(change: list[np.ndarray], grads: tuple[jax.Array, ...], cfg: ff.FFConfig
                    ) -> None:
    """Without momentum and weight decay an ``ideal`` device's first weight change is
    ``−lr · schedule(0) · grads`` (the schedule's first multiplier is 1)."""
    assert cfg.momentum == 0 and cfg.weight_decay == 0
    rate = cfg.lr * float(ff.schedule(cfg, 4)(0))
    assert rate == cfg.lr
    for dw, g in zip(change, grads, strict=True):
        want = -rate * np.asarray(g, np.float64)
        assert np.abs(want).max() > 1e-4  # not a vacuous comparison
        np.testing.assert_allclose(dw, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


# --- the rule is Forward-Forward -------------------------------------------------------------

def test_ideal_request_equals_autodiff_gradient_of_the_layer_local_loss() -> None:
    spec = devices.preset("ideal", W)
    d = devices.fabricate(spec, jax.random.key(0))
    x, y = _data(10)
    x_pos = ff.embed_class(x, y, CFG)
    x_neg = ff.embed_class(x, (y + 1) % N_CLASSES, CFG)
    grads, _ = ff.ff_gradients(devices.measure(d, x_pos), devices.measure(d, x_neg), spec, CFG)

    def layer_losses(weights: tuple[jax.Array, ...], xs: jax.Array, positive: bool) -> jax.Array:
        """Hand-written digital FF: each layer's loss, its input detached (layer-local)."""
        h = devices.normalize(xs)
        total = 0.0
        for w in weights:
            z = jax.lax.stop_gradient(h) @ w[:-1] + w[-1]
            out = jax.nn.relu(z)
            logit = jnp.sum(out**2, axis=-1) - out.shape[-1]
            total += jnp.mean(jax.nn.softplus(-logit if positive else logit))
            h = devices.normalize(out)
        return total

    def loss(weights: tuple[jax.Array, ...]) -> jax.Array:
        return layer_losses(weights, x_pos, True) + layer_losses(weights, x_neg, False)

    auto = jax.grad(loss)(d.state.weights)
    for g_rule, g_auto in zip(grads, auto, strict=True):
        assert float(jnp.abs(g_auto).max()) > 1e-4  # not a vacuous comparison
        np.testing.assert_allclose(g_rule, 0.5 * g_auto, rtol=2e-4, atol=1e-6)


def test_bfloat16_device_rounds_the_request_products_and_still_learns() -> None:
    """With ``matmul_dtype = bfloat16`` the rule's products take bfloat16 operands: each request
    is ``bf16(v)ᵀ bf16(∂L/∂G · y) / B`` of the same measurements, close to float32's; training
    still learns, deterministically."""
    spec = devices.preset("ideal", W).replace(matmul_dtype="bfloat16")
    d = devices.fabricate(spec, jax.random.key(0))
    x, y = _data(10)
    m_pos = devices.measure(d, ff.embed_class(x, y, CFG))
    m_neg = devices.measure(d, ff.embed_class(x, (y + 1) % N_CLASSES, CFG))
    grads, _ = ff.ff_gradients(m_pos, m_neg, spec, CFG)
    e_pos, _ = ff.goodness_error(m_pos.outputs, True, spec, CFG)
    e_neg, _ = ff.goodness_error(m_neg.outputs, False, spec, CFG)

    def rounded(a: jax.Array) -> np.ndarray:
        return np.asarray(a.astype(jnp.bfloat16).astype(jnp.float32), np.float64)

    plain = ff.ff_gradients(m_pos, m_neg, spec.replace(matmul_dtype="float32"), CFG)[0]
    for idx, g in enumerate(grads):
        want = sum(rounded(m.inputs[idx]).T @ rounded(e[idx][:, None] * m.outputs[idx]) / 10
                   for m, e in ((m_pos, e_pos), (m_neg, e_neg)))
        np.testing.assert_allclose(g, want, rtol=0, atol=1e-6 * np.abs(want).max() + 1e-9)
        scale = float(jnp.abs(plain[idx]).max())
        assert 0 < float(jnp.abs(g - plain[idx]).max()) < 0.02 * scale
    x, y = _data(80)
    pop = devices.spawn(spec, 2, jax.random.key(3))
    state, metrics = _train(pop, y, x, epochs=4)
    again, _ = _train(pop, y, x, epochs=4)
    assert _tree_equal(state, again)
    assert float(jnp.mean(metrics["readout_acc"])) > 0.6


def test_ideal_goodness_kl_request_equals_autodiff_gradient_of_the_scores_kl() -> None:
    """κ T² KL(q ‖ softmax(S / T)) on the goodness scores S, each layer's input detached: the
    rule's requests are half its autodiff gradient (the same convention as FF above)."""
    cfg = dataclasses.replace(CFG, goodness_kl_weight=0.3, readout_temperature=4.0)
    spec = devices.preset("ideal", W)
    d = devices.fabricate(spec, jax.random.key(0))
    x, _ = _data(10)
    q = jax.nn.softmax(jax.random.normal(jax.random.key(5), (10, N_CLASSES)), axis=-1)
    grads = ff.goodness_kl_gradients(devices.measure(d, ff.embed_all_classes(x, cfg)), q, cfg)

    def loss(weights: tuple[jax.Array, ...]) -> jax.Array:
        h = devices.normalize(ff.embed_all_classes(x, cfg))
        scores = 0.0
        for idx, w in enumerate(weights):
            out = jax.nn.relu(jax.lax.stop_gradient(h) @ w[:-1] + w[-1])
            if idx >= cfg.readout_from:
                scores += jnp.sum(out**2, axis=-1)
            h = devices.normalize(out)
        s = scores.reshape(N_CLASSES, -1).T / cfg.readout_temperature
        kl = jnp.sum(q * (jnp.log(q) - jax.nn.log_softmax(s, axis=-1)), axis=-1)
        return cfg.goodness_kl_weight * cfg.readout_temperature**2 * jnp.mean(kl)

    auto = jax.grad(loss)(d.state.weights)
    assert float(jnp.abs(grads[0]).max()) == 0.0  # the first layer is not in the scores
    for g_rule, g_auto in zip(grads[1:], auto[1:], strict=True):
        assert float(jnp.abs(g_auto).max()) > 1e-5  # not a vacuous comparison
        np.testing.assert_allclose(g_rule, 0.5 * g_auto, rtol=2e-4, atol=1e-7)


def test_goodness_kl_training_uses_rows_of_one_all_label_pass_and_learns() -> None:
    pop = devices.spawn(devices.preset("rram", W), 2, jax.random.key(4))
    x, y = _data()
    cfg = dataclasses.replace(CFG, goodness_kl_weight=0.05)
    plain, _ = _train(pop, y, x, 2)
    kl, metrics = _train(pop, y, x, 2, cfg)
    assert not _tree_equal(plain.device.state.weights, kl.device.state.weights)
    assert np.all(np.isfinite(np.asarray(metrics["ff_loss"])))
    # vmapped over the population equals each device alone (with the keys it had in the group)
    keys = [ff.epoch_keys(jax.random.key(1), e, 2, cfg) for e in range(2)]
    for i in range(2):
        state = ff.init_population(pop[i:i + 1], cfg, ff.steps_per_epoch(40, cfg))
        for k, o in keys:
            state, _ = ff.population_epoch(state, x, y, k[i:i + 1], o[i:i + 1], cfg=cfg,
                                           bench=ff.BENCH)
        for wa, wb in zip(kl.device.state.weights, state.device.state.weights, strict=True):
            np.testing.assert_allclose(wa[i], wb[0], rtol=1e-5, atol=1e-6)


def test_a_goodness_kl_step_descends_the_sum_of_the_ff_and_kl_gradients() -> None:
    """On an ``ideal`` device without momentum or weight decay one step with κ > 0 changes the
    weights by ``−lr · (ff_gradients + goodness_kl_gradients)``, both computed from the rows of
    the one all-label measurement (positives: the labels; negatives: drawn from the untrained,
    all-zero readout's belief with the step's key). The KL part is large enough that a step
    that subtracted it (or left it out) would miss by far more than the tolerance."""
    cfg = dataclasses.replace(CFG, goodness_kl_weight=0.5, readout_temperature=4.0,
                              momentum=0.0, weight_decay=0.0)
    x, y = _data(10)
    key = jax.random.key(11)
    d, change, _ = _one_step(cfg, x, y, key)
    _, k_neg, _, k_m1, *_ = jax.random.split(key, 7)
    q = jax.nn.one_hot(y, N_CLASSES)
    m_all = devices.measure(d, ff.embed_all_classes(x, cfg), key=k_m1)
    negatives = ff.sample_negatives(k_neg, y, jnp.zeros((10, N_CLASSES)), cfg, q)
    rows = jnp.arange(10)
    m_pos = jax.tree.map(lambda a: a[y * 10 + rows], m_all)
    m_neg = jax.tree.map(lambda a: a[negatives * 10 + rows], m_all)
    g_ff, _ = ff.ff_gradients(m_pos, m_neg, d.spec, cfg)
    g_kl = ff.goodness_kl_gradients(m_all, q, cfg)
    _assert_step_is(change, jax.tree.map(jnp.add, g_ff, g_kl), cfg)
    for idx in (1, 2):  # the KL part is not lost in the tolerance
        assert float(jnp.abs(g_kl[idx]).max()) > 0.2 * float(jnp.abs(g_ff[idx]).max())


def test_goodness_kl_start_switches_the_term_on_at_its_fraction_of_the_schedule() -> None:
    """Before ``goodness_kl_start`` × epochs × steps per epoch the step is the κ = 0 step (both
    read every label for the goodness belief), from it on the step with the term."""
    d = devices.fabricate(devices.preset("rram", W), jax.random.key(3))
    x, y = _data(10)
    base = dataclasses.replace(CFG, negative_belief="goodness")  # epochs 4
    plain = base
    always = dataclasses.replace(base, goodness_kl_weight=0.2)
    late = dataclasses.replace(always, goodness_kl_start=0.5)  # on from step 0.5 · 4 · 4 = 8
    key = jax.random.key(11)

    def weights(cfg: ff.FFConfig, step: int) -> tuple[jax.Array, ...]:
        state = dataclasses.replace(ff.init(d, cfg, 4), step=jnp.asarray(step, jnp.int32))
        return ff.train_step(state, x, y, key, cfg, 4)[0].device.state.weights

    for step, same_as, other in ((7, plain, always), (8, always, plain), (15, always, plain)):
        got = weights(late, step)
        assert _tree_equal(got, weights(same_as, step))
        assert not _tree_equal(got, weights(other, step))  # the two arms differ at this step
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="goodness_kl_start"):
            dataclasses.replace(late, goodness_kl_start=bad)
    with pytest.raises(ValueError, match="no effect without goodness_kl_weight"):
        dataclasses.replace(late, goodness_kl_weight=0.0)


def test_lr_decay_start_sets_how_long_the_learning_rate_stays_constant() -> None:
    """The multiplier is 1 for the first ``lr_decay_start`` of the steps, then falls linearly
    to 0 after the last step; Hinton's 0.5 is the default and is what the step uses."""
    for start, steps_per_epoch, epochs in ((0.5, 4, 4), (0.0, 4, 4), (0.75, 5, 4), (0.3, 3, 3)):
        cfg = dataclasses.replace(CFG, epochs=epochs, lr_decay_start=start)
        total = epochs * steps_per_epoch
        constant = int(start * total)
        got = np.array([float(ff.schedule(cfg, steps_per_epoch)(t)) for t in range(total + 1)])
        want = np.minimum(1.0, 1.0 - (np.arange(total + 1) - constant) / (total - constant))
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert CFG.lr_decay_start == 0.5
    late = dataclasses.replace(CFG, lr_decay_start=0.75)  # 16 steps: decay from step 12 on
    params = (jnp.zeros((3, 2)),)

    def update_at(cfg: ff.FFConfig, step: int) -> jax.Array:
        """The optimiser's update for a unit request after ``step`` steps of zero requests."""
        opt = ff.make_optimizer(cfg, 4)
        state = opt.init(params)
        for _ in range(step):
            _, state = opt.update((jnp.zeros((3, 2)),), state, params)
        return opt.update((jnp.ones((3, 2)),), state, params)[0][0]

    # at step 10 the default has decayed to 1 - 2/8 = 0.75 of the rate, the late one not at all
    np.testing.assert_allclose(update_at(CFG, 10), 0.75 * update_at(late, 10), rtol=1e-6)
    np.testing.assert_allclose(update_at(late, 10), update_at(late, 0), rtol=1e-6)
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="lr_decay_start"):
            dataclasses.replace(CFG, lr_decay_start=bad)


def test_goodness_belief_negatives_are_drawn_from_the_all_label_scores() -> None:
    """With ``negative_belief = "goodness"`` a step measures every label once and draws its
    negatives from ``softmax(G / T_s)`` (``T_s`` fitted to the targets) with the key the readout
    belief would have used: the step's negative goodness is that of those rows."""
    spec = devices.preset("rram", W)
    d = devices.fabricate(spec, jax.random.key(3))
    x, y = _data(10)
    cfg = dataclasses.replace(CFG, negative_belief="goodness")
    state = ff.init(d, cfg, 4)
    key = jax.random.key(11)
    _, metrics = ff.train_step(state, x, y, key, cfg, 4)
    k_pos, k_neg, _, k_m1, *_ = jax.random.split(key, 7)
    q = jax.nn.one_hot(y, N_CLASSES)
    positives = jax.random.categorical(k_pos, jnp.log(q), axis=-1)
    m_all = devices.measure(d, ff.embed_all_classes(x, cfg), key=k_m1)
    scores = ff.scores_from_goodness(m_all.outputs, cfg)
    belief = ff.goodness_belief(scores, q, cfg)
    t_s = float(ff.fit_temperature(scores, q, 1.0))
    np.testing.assert_allclose(belief, scores / t_s, rtol=1e-6)
    negatives = ff.sample_negatives(k_neg, positives, belief, cfg, q)
    assert np.all(np.asarray(negatives) != np.asarray(y))
    last = m_all.outputs[-1].reshape(N_CLASSES, 10, -1)
    g_neg = jnp.mean(jnp.sum(jnp.square(last[negatives, jnp.arange(10)]), -1))
    g_pos = jnp.mean(jnp.sum(jnp.square(last[y, jnp.arange(10)]), -1))
    np.testing.assert_allclose(metrics["g_neg"], g_neg, rtol=1e-5)
    np.testing.assert_allclose(metrics["g_pos"], g_pos, rtol=1e-5)
    # another belief (here uniform) draws other negatives from the same key, with another
    # negative goodness: the assertions above can tell the beliefs apart
    readout = ff.sample_negatives(k_neg, positives, jnp.zeros_like(scores), cfg, q)
    assert not np.array_equal(np.asarray(readout), np.asarray(negatives))
    g_other = jnp.mean(jnp.sum(jnp.square(last[readout, jnp.arange(10)]), -1))
    assert abs(float(g_other - metrics["g_neg"])) > 1e-3 * float(g_neg)
    for bad in ({"negatives": "random"}, {"mode": "unsupervised", "image_shape": (4, 5)},
                {"negative_belief": "teacher"}):
        with pytest.raises(ValueError, match="negative_belief"):
            dataclasses.replace(cfg, **bad)


def test_goodness_scores_equal_one_pass_per_label() -> None:
    spec = devices.preset("ideal", W)
    d = devices.fabricate(spec, jax.random.key(0))
    x, _ = _data(6)
    scores = ff.goodness_scores(d, x, CFG, None)
    for c in range(N_CLASSES):
        m = devices.measure(d, ff.embed_class(x, jnp.full(6, c), CFG))
        expected = ff.goodness(m.outputs)[CFG.readout_from:].sum(axis=0)
        np.testing.assert_allclose(scores[:, c], expected, rtol=1e-5)


# --- the learner sees only the bench ----------------------------------------------------------

def _poison(d: devices.Device) -> devices.Device:
    """Invert every bit the device holds (an exact involution): reading it directly is garbage
    (0 becomes NaN, 1.0 becomes -3.99..., True becomes False)."""
    def flip(a: jax.Array) -> jax.Array:
        if jnp.iscomplexobj(a):  # conductance + i·read offset: flip both parts
            return jax.lax.complex(flip(jnp.real(a)), flip(jnp.imag(a)))
        if jnp.issubdtype(a.dtype, jnp.floating):
            bits = jax.lax.bitcast_convert_type(a, jnp.uint32)
            return jax.lax.bitcast_convert_type(~bits, a.dtype)
        return ~a
    return dataclasses.replace(d, physics=jax.tree.map(flip, d.physics),
                               state=jax.tree.map(flip, d.state))


def _poisoned_measure(d: devices.Device, x: jax.Array, *, key: jax.Array | None = None
                      ) -> devices.Measurement:
    return devices.measure(_poison(d), x, key=key)


def _poisoned_program(d: devices.Device, requests: tuple, *, key: jax.Array) -> devices.Device:
    return _poison(devices.program(_poison(d), requests, key=key))


POISONED = ff.Bench(measure=_poisoned_measure, program=_poisoned_program)


SEALED_CONFIGS = {
    "default": CFG,
    # every label in one pass: the goodness-KL term and negatives from the goodness belief
    "all_label": dataclasses.replace(CFG, goodness_kl_weight=0.05, negative_belief="goodness"),
    # hybrid-image negatives, no label lines
    "unsupervised": dataclasses.replace(CFG, mode="unsupervised", image_shape=(4, 5)),
}


@pytest.mark.parametrize("name", sorted(SEALED_CONFIGS))
def test_learning_uses_only_measure_and_program_never_the_physics(name: str) -> None:
    """Training devices whose physics and state are stored bit-inverted, through a bench that
    un-inverts them, gives bit for bit the (inverted) weights, metrics and readout of honest
    training, for the default learner, the all-label pass and unsupervised mode."""
    cfg = SEALED_CONFIGS[name]
    pop = devices.spawn(devices.preset("harsh", W), 2, jax.random.key(3))
    x, y = _data()
    honest, m_honest = _train(pop, y, x, 2, cfg=cfg)
    poisoned_handles = jax.vmap(_poison)(pop)
    assert not _tree_equal(poisoned_handles.state, pop.state)  # the poison is real
    assert not _tree_equal(honest.device.state, pop.state)  # and the run learned something
    sealed, m_sealed = _train(poisoned_handles, y, x, 2, cfg=cfg, bench=POISONED)
    # a learner that read weights or physics itself would have seen garbage and diverged
    assert _tree_equal(jax.vmap(_poison)(sealed.device), honest.device)
    assert _tree_equal(m_sealed, m_honest)
    assert _tree_equal(sealed.readout, honest.readout)


# --- negatives, targets ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["hard", "random", "excess"])
def test_negatives_never_carry_the_true_label(kind: str) -> None:
    cfg = dataclasses.replace(CFG, negatives=kind)
    n = 20_000
    positives = jax.random.randint(jax.random.key(0), (n,), 0, N_CLASSES)
    # a belief that is sure of the true class: the worst case for leaking it
    logits = 50.0 * jax.nn.one_hot(positives, N_CLASSES) + jax.random.normal(
        jax.random.key(1), (n, N_CLASSES))
    onehot = jax.nn.one_hot(positives, N_CLASSES)
    negatives = np.asarray(ff.sample_negatives(jax.random.key(2), positives, logits, cfg, onehot))
    assert np.all(negatives != np.asarray(positives))
    assert set(np.unique(negatives)) == set(range(N_CLASSES))


def test_hard_negatives_follow_the_belief_among_wrong_classes() -> None:
    cfg = dataclasses.replace(CFG, negatives="hard")
    n = 40_000
    positives = jnp.zeros((n,), jnp.int32)
    logits = jnp.broadcast_to(jnp.log(jnp.array([0.7, 0.2, 0.08, 0.02])), (n, 4))
    neg = np.asarray(ff.sample_negatives(jax.random.key(0), positives, logits, cfg))
    freq = np.bincount(neg, minlength=4) / n
    np.testing.assert_allclose(freq, [0.0, 0.2 / 0.3, 0.08 / 0.3, 0.02 / 0.3], atol=0.01)


def test_excess_negatives_come_from_where_the_belief_exceeds_the_target() -> None:
    cfg = dataclasses.replace(CFG, negatives="excess")
    n = 40_000
    positives = jnp.zeros((n,), jnp.int32)
    belief = jnp.array([0.4, 0.3, 0.2, 0.1])
    q = jnp.array([0.5, 0.1, 0.2, 0.2])  # excess: class 1 only (0.2); class 3 is underrated
    logits = jnp.broadcast_to(jnp.log(belief), (n, 4))
    neg = np.asarray(ff.sample_negatives(jax.random.key(0), positives, logits, cfg,
                                         jnp.broadcast_to(q, (n, 4))))
    np.testing.assert_array_equal(neg, 1)
    q2 = jnp.array([0.1, 0.2, 0.1, 0.6])  # excess 0.3, 0.1, 0.1 on classes 0..2; 0 is banned
    neg = np.asarray(ff.sample_negatives(jax.random.key(1), positives, logits, cfg,
                                         jnp.broadcast_to(q2, (n, 4))))
    np.testing.assert_allclose(np.bincount(neg, minlength=4) / n, [0, 0.5, 0.5, 0], atol=0.01)
    # no class but the positive one in excess: the belief decides, as for hard negatives
    neg = np.asarray(ff.sample_negatives(jax.random.key(2), positives, logits, cfg,
                                         jnp.broadcast_to(jnp.array([0.1, 0.3, 0.2, 0.4]),
                                                          (n, 4))))
    hard = np.asarray(ff.sample_negatives(jax.random.key(2), positives, logits,
                                          dataclasses.replace(cfg, negatives="hard")))
    np.testing.assert_array_equal(neg, hard)


def test_excess_negatives_equal_hard_negatives_for_one_hot_targets() -> None:
    pop = devices.spawn(devices.preset("rram", W), 2, jax.random.key(4))
    x, y = _data()
    hard, _ = _train(pop, y, x, 2)
    excess, _ = _train(pop, jax.nn.one_hot(y, N_CLASSES), x, 2,
                       dataclasses.replace(CFG, negatives="excess"))
    assert _tree_equal(hard, excess)
    # and with soft targets the two differ
    q = 0.7 * jax.nn.one_hot(y, N_CLASSES) + 0.075
    soft_hard, _ = _train(pop, q, x, 1)
    soft_excess, _ = _train(pop, q, x, 1, dataclasses.replace(CFG, negatives="excess"))
    assert not _tree_equal(soft_hard, soft_excess)


def test_one_hot_targets_reproduce_hard_label_training_exactly() -> None:
    pop = devices.spawn(devices.preset("rram", W), 2, jax.random.key(4))
    x, y = _data()
    hard, _ = _train(pop, y, x, 2)
    soft, _ = _train(pop, jax.nn.one_hot(y, N_CLASSES), x, 2)
    assert _tree_equal(hard, soft)


def test_soft_targets_draw_positives_from_the_distribution() -> None:
    n = 40_000
    q = jnp.broadcast_to(jnp.array([0.5, 0.3, 0.15, 0.05]), (n, 4))
    freq = np.bincount(np.asarray(ff.positive_classes(jax.random.key(0), q, None, CFG)),
                       minlength=4) / n
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.01)
    # mixed with hard labels at weight λ: (1 − λ) q + λ onehot(y)
    cfg = dataclasses.replace(CFG, hard_weight=0.4)
    y = jnp.full((n,), 3)
    freq = np.bincount(np.asarray(ff.positive_classes(jax.random.key(1), q, y, cfg)),
                       minlength=4) / n
    np.testing.assert_allclose(freq, [0.3, 0.18, 0.09, 0.43], atol=0.01)
    # and soft targets really change what is learned
    pop = devices.spawn(devices.preset("ideal", W), 1, jax.random.key(4))
    x, labels = _data()
    soft = jnp.full((x.shape[0], N_CLASSES), 1.0 / N_CLASSES)
    a, _ = _train(pop, soft, x, 1)
    b, _ = _train(pop, labels, x, 1)
    assert not _tree_equal(a.device.state, b.device.state)


def test_prepended_label_lines_leave_the_image_whole() -> None:
    cfg = dataclasses.replace(CFG, label_placement="prepend")
    x, y = _data(5)
    xl = np.asarray(ff.embed_class(x, y, cfg))
    assert xl.shape == (5, N_CLASSES + W[0])
    np.testing.assert_array_equal(xl[:, N_CLASSES:], np.asarray(x))
    np.testing.assert_array_equal(xl[:, :N_CLASSES], np.eye(N_CLASSES)[np.asarray(y)])
    neutral = np.asarray(ff.embed_neutral(x, cfg))
    assert np.allclose(neutral[:, :N_CLASSES], 1 / N_CLASSES)


@pytest.mark.parametrize("placement", ["prepend", "overwrite"])
def test_label_strength_scales_the_label_lines_only(placement: str) -> None:
    base = dataclasses.replace(CFG, label_placement=placement)
    strong = dataclasses.replace(base, label_strength=2.0)
    x, y = _data(5)
    one, two = (np.asarray(ff.embed_class(x, y, c)) for c in (base, strong))
    lines = slice(0, N_CLASSES)
    np.testing.assert_array_equal(two[:, lines], 2.0 * np.eye(N_CLASSES)[np.asarray(y)])
    np.testing.assert_array_equal(two[:, N_CLASSES:], one[:, N_CLASSES:])  # the image is untouched
    neutral = np.asarray(ff.embed_neutral(x, strong))
    assert np.allclose(neutral[:, lines], 2.0 / N_CLASSES)


def test_weight_decay_shrinks_the_record_on_weight_rows_only() -> None:
    cfg = dataclasses.replace(CFG, momentum=0.0, weight_decay=0.1, lr=0.5)
    opt = ff.make_optimizer(cfg, steps_per_epoch=10)
    record = (jnp.arange(1.0, 13.0).reshape(4, 3), -jnp.ones((3, 2)))
    zeros = tuple(jnp.zeros_like(r) for r in record)
    updates, _ = opt.update(zeros, opt.init(zeros), record)
    for u, r in zip(updates, record, strict=True):
        expected = -0.5 * 0.1 * np.asarray(r)  # −lr · decay · record on weight rows …
        expected[-1] = 0.0  # … and the bias line (last row) is not decayed, as in Hinton's code
        np.testing.assert_allclose(np.asarray(u), expected, rtol=1e-6)


def _features(n: int, d: int, seed: int, offset: float = 0.0) -> jax.Array:
    """``(n, d + 1)`` readout features with a constant-1 last column (as ``readout_features``)."""
    f = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) + offset
    return jnp.asarray(np.concatenate([f, np.ones((n, 1), np.float32)], axis=1))


def test_centred_readout_step_is_the_gradient_step_of_the_centred_parametrisation() -> None:
    cfg = dataclasses.replace(CFG, readout_center=True, readout_decay=0.0)
    feats = _features(8, 5, seed=0, offset=3.0)
    t = jax.nn.one_hot(jnp.arange(8) % N_CLASSES, N_CLASSES)
    w = jax.random.normal(jax.random.key(0), (6, N_CLASSES))
    mu = feats[:, :-1].mean(0)
    c = w[-1] + mu @ w[:-1]  # the bias of z = (f − μ) W + c that gives the same logits

    def loss(wc: tuple[jax.Array, jax.Array]) -> jax.Array:
        z = (feats[:, :-1] - mu) @ wc[0] + wc[1]
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z), -1))

    g_w, g_c = jax.grad(loss)((w[:-1], c))
    grad_z = ff.readout_gradient(feats @ w, t, None, cfg)
    new = w + 0.3 * ff.readout_delta(feats, grad_z, w, cfg)
    w_new, c_new = w[:-1] - 0.3 * g_w, c - 0.3 * g_c
    np.testing.assert_allclose(np.asarray(new[:-1]), np.asarray(w_new), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(new[-1]), np.asarray(c_new - mu @ w_new), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("center", [True, False])
def test_centred_readout_learns_the_same_whatever_offset_all_features_share(center: bool
                                                                            ) -> None:
    cfg = dataclasses.replace(CFG, readout_center=center)
    labels = jnp.arange(20) % N_CLASSES
    t = jax.nn.one_hot(labels, N_CLASSES)
    predictions = []
    for offset in (0.0, 5.0):
        feats, probe = _features(20, 6, seed=1, offset=offset), _features(7, 6, 2, offset)
        feats = feats.at[jnp.arange(20), labels].add(2.0)  # something to learn
        w = jnp.zeros((7, N_CLASSES))
        for _ in range(5):
            grad_z = ff.readout_gradient(feats @ w, t, None, cfg)
            w = w + 0.1 * ff.readout_delta(feats, grad_z, w, cfg)
        predictions.append(np.asarray(probe @ w))
    same = np.allclose(predictions[0], predictions[1], rtol=1e-4, atol=1e-4)
    assert same == center  # the plain rule's steps depend on the shared offset


def test_refit_step_is_one_centred_delta_step_on_a_fresh_read_starting_from_zero() -> None:
    cfg = dataclasses.replace(CFG, epochs=3, readout_refit_epochs=1)
    spe = 4
    device = devices.fabricate(devices.preset("ideal", W), jax.random.key(3))
    state = ff.init(device, cfg, spe)
    trained = jax.random.normal(jax.random.key(4), state.readout.shape)
    state = dataclasses.replace(state, readout=trained, step=jnp.asarray(2 * spe, jnp.int32))
    x, y = _data(10)
    t = jax.nn.one_hot(y, N_CLASSES)
    key = jax.random.key(9)
    feats = ff.readout_features(ff.BENCH.measure(device, ff.embed_neutral(x, cfg), key=key), cfg)
    rule = ff.refit_config(cfg)
    assert rule.readout_center and rule.readout_decay == cfg.readout_refit_decay
    zero = jnp.zeros_like(trained)
    expected = ff.readout_update(zero, feats, feats @ zero, t, None, cfg.readout_refit_lr, rule)
    new, metrics = ff.refit_step(state, x, y, key, cfg, spe)
    np.testing.assert_allclose(np.asarray(new.readout), np.asarray(expected), rtol=1e-6,
                               atol=1e-7)
    assert _tree_equal(new.device, device) and _tree_equal(new.record, state.record)
    assert int(new.step) == 2 * spe + 1 and np.isnan(float(metrics["ff_loss"]))
    # later steps continue from the refitted readout instead of starting again
    again, _ = ff.refit_step(new, x, y, key, cfg, spe)
    expected = ff.readout_update(new.readout, feats, feats @ new.readout, t, None,
                                 cfg.readout_refit_lr, rule)
    np.testing.assert_allclose(np.asarray(again.readout), np.asarray(expected), rtol=1e-5,
                               atol=1e-6)


def test_readout_refit_epochs_keep_the_trained_device_and_refit_only_the_readout() -> None:
    """FF for ``epochs − R`` epochs exactly as a run of that many epochs, then R epochs that
    measure the device without programming it; populations pick the phase once for all, and a
    device alone (``train_epoch`` choosing by its own step counter) learns the same."""
    pop = devices.spawn(devices.preset("rram", W), 2, jax.random.key(5))
    x, y = _data()
    # the plain run is CFG itself, whose program other tests have compiled already
    refit = dataclasses.replace(CFG, epochs=CFG.epochs + 2, readout_refit_epochs=2)
    assert refit.ff_epochs == CFG.epochs
    a, _ = _train(pop, y, x, CFG.epochs)
    b, metrics = _train(pop, y, x, refit.epochs, cfg=refit)
    assert _tree_equal((a.device, a.record, a.opt_state), (b.device, b.record, b.opt_state))
    assert not np.allclose(np.asarray(a.readout), np.asarray(b.readout))
    assert np.all(np.isnan(np.asarray(metrics["ff_loss"])))
    assert np.all(np.asarray(metrics["readout_acc"]) > 0.5)
    alone = ff.init(pop[0], refit, ff.steps_per_epoch(40, refit))
    for e in range(refit.epochs):
        keys, order = ff.epoch_keys(jax.random.key(1), e, 2, refit)
        alone, _ = ff.train_epoch(alone, x, y, keys[0], order[0], refit)
    np.testing.assert_allclose(np.asarray(alone.readout), np.asarray(b.readout[0]), rtol=1e-5,
                               atol=1e-6)
    for wa, wb in zip(alone.device.state.weights, b.device.state.weights, strict=True):
        np.testing.assert_allclose(np.asarray(wa), np.asarray(wb[0]), rtol=1e-5, atol=1e-6)


def test_adam_smooths_the_request_with_momentum_as_its_first_moment_decay() -> None:
    cfg = dataclasses.replace(CFG, optimizer="adam", momentum=0.5, weight_decay=0.0, lr=0.1)
    opt = ff.make_optimizer(cfg, steps_per_epoch=10)  # lr constant over these two steps
    g1, g2 = (jnp.array([[1.0, -2.0], [0.5, 0.0]]),), (jnp.array([[-1.0, -2.0], [1.5, 0.0]]),)
    record = tuple(jnp.zeros_like(g) for g in g1)
    state = opt.init(record)
    _, state = opt.update(g1, state, record)
    u2, _ = opt.update(g2, state, record)
    b1, b2, eps = 0.5, 0.999, 1e-8  # Adam (Kingma & Ba 2015), bias-corrected, step 2
    m = (b1 * (1 - b1) * np.asarray(g1[0]) + (1 - b1) * np.asarray(g2[0])) / (1 - b1 ** 2)
    v = (b2 * (1 - b2) * np.asarray(g1[0]) ** 2 + (1 - b2) * np.asarray(g2[0]) ** 2) / (1 - b2 ** 2)
    np.testing.assert_allclose(np.asarray(u2[0]), -0.1 * m / (np.sqrt(v) + eps), rtol=1e-5)


def test_accumulator_sends_only_requests_worth_the_threshold() -> None:
    spec = devices.preset("rram", W)
    cfg = dataclasses.replace(CFG, accumulate=3.0, momentum=0.0, weight_decay=0.0, lr=1.0)
    state = ff.init(devices.fabricate(spec, jax.random.key(0)), cfg, 4)
    limit = 3.0 * spec.layer(0).synapse.dw_min * spec.layer(0).read.gain
    grads = tuple(jnp.zeros_like(r) for r in state.record)
    g0 = np.zeros(grads[0].shape, np.float32)
    g0[0, 0], g0[1, 1] = -2 * limit, -0.5 * limit  # updates are −lr · grad
    grads = (jnp.asarray(g0), *grads[1:])
    requests, _, sent, pending = ff._requests(state, grads, cfg, 4)
    assert float(sent[0][0, 0]) == pytest.approx(2 * limit) and float(sent[0][1, 1]) == 0.0
    assert float(pending[0][1, 1]) == pytest.approx(0.5 * limit)
    assert float(requests[0][0, 0]) == pytest.approx(2 * limit / spec.layer(0).read.gain)
    assert np.count_nonzero(np.asarray(requests[0])) == 1
    with pytest.raises(ValueError, match="make no minibatch"):
        ff.train_epoch(state, jnp.zeros((3, W[0])), jnp.zeros(3, jnp.int32),
                       jax.random.key(0), jax.random.key(1), cfg)


def test_dead_zone_drops_small_requests_instead_of_keeping_them() -> None:
    spec = devices.preset("rram", W)
    cfg = dataclasses.replace(CFG, dead_zone=0.5, momentum=0.0, weight_decay=0.0, lr=1.0)
    state = ff.init(devices.fabricate(spec, jax.random.key(0)), cfg, 4)
    zone = 0.5 * spec.layer(0).synapse.dw_min * spec.layer(0).read.gain
    g0 = np.zeros(state.record[0].shape, np.float32)
    g0[0, 0], g0[1, 1], g0[2, 2] = -1.5 * zone, 0.9 * zone, -zone  # updates are −lr · grad
    grads = (jnp.asarray(g0), *(jnp.zeros_like(r) for r in state.record[1:]))
    requests, _, sent, pending = ff._requests(state, grads, cfg, 4)
    assert float(sent[0][0, 0]) == pytest.approx(1.5 * zone)
    assert float(sent[0][2, 2]) == pytest.approx(zone)  # the zone's edge is sent
    assert float(sent[0][1, 1]) == 0.0 and np.count_nonzero(np.asarray(sent[0])) == 2
    assert all(not np.any(np.asarray(p)) for p in pending)  # dropped, not kept for later
    assert float(requests[0][0, 0]) == pytest.approx(1.5 * zone / spec.layer(0).read.gain)
    with pytest.raises(ValueError, match="exclude each other"):
        dataclasses.replace(CFG, dead_zone=0.5, accumulate=1.0)
    with pytest.raises(ValueError, match="dead_zone must be"):
        dataclasses.replace(CFG, dead_zone=-1.0)


# --- populations, determinism, compilation ----------------------------------------------------

@pytest.mark.full_optimization
def test_vmapped_population_training_equals_training_each_device_alone() -> None:
    for name in ("ideal", "rram"):
        pop = devices.spawn(devices.preset(name, W), 3, jax.random.key(5))
        x, y = _data()
        together, _ = _train(pop, y, x, 2)
        keys = [ff.epoch_keys(jax.random.key(1), e, 3, CFG) for e in range(2)]
        for i in range(3):  # device i alone, with the keys it had in the group
            state = ff.init_population(pop[i:i + 1], CFG, ff.steps_per_epoch(40, CFG))
            for k, o in keys:
                state, _ = ff.population_epoch(state, x, y, k[i:i + 1], o[i:i + 1], cfg=CFG,
                                               bench=ff.BENCH)
            for wa, wb in zip(together.device.state.weights, state.device.state.weights,
                              strict=True):
                np.testing.assert_allclose(wa[i], wb[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(together.readout[i], state.readout[0], rtol=1e-5,
                                       atol=1e-6)


def test_same_seed_gives_identical_weights_and_other_seeds_do_not() -> None:
    pop = devices.spawn(devices.preset("pcm", W), 2, jax.random.key(6))
    x, y = _data()
    a, _ = _train(pop, y, x, 2, seed=7)
    b, _ = _train(pop, y, x, 2, seed=7)
    c, _ = _train(pop, y, x, 2, seed=8)
    assert _tree_equal(a, b)
    assert not _tree_equal(a.device.state, c.device.state)


def test_shared_order_gives_every_device_the_same_minibatches() -> None:
    cfg = dataclasses.replace(CFG, shared_order=True)
    _, order = ff.epoch_keys(jax.random.key(0), 3, 4, cfg)
    assert all(np.array_equal(jax.random.key_data(order[0]), jax.random.key_data(order[i]))
               for i in range(4))
    _, own = ff.epoch_keys(jax.random.key(0), 3, 4, CFG)
    assert not np.array_equal(jax.random.key_data(own[0]), jax.random.key_data(own[1]))


def test_no_recompilation_across_epochs() -> None:
    cfg = dataclasses.replace(CFG, lr=0.0421)  # a config no other test compiles
    pop = devices.spawn(devices.preset("ideal", W), 2, jax.random.key(0))
    x, y = _data()
    before = ff.population_epoch._cache_size()
    _train(pop, y, x, 3, cfg=cfg)
    assert ff.population_epoch._cache_size() == before + 1


def test_sharpened_targets_draw_positives_at_the_lower_temperature() -> None:
    """``positive_power`` k on ``q = softmax(z / T)`` draws positives from ``softmax(z / (T/k))``
    and leaves one-hot targets (hard labels) exactly as they are."""
    n = 40_000
    z = jnp.array([3.0, 2.0, 1.0, -1.0])
    q = jnp.broadcast_to(jax.nn.softmax(z / 4.0), (n, 4))
    cfg = dataclasses.replace(CFG, positive_power=4.0)
    freq = np.bincount(np.asarray(ff.positive_classes(jax.random.key(0), q, None, cfg)),
                       minlength=4) / n
    np.testing.assert_allclose(freq, jax.nn.softmax(z), atol=0.01)
    assert abs(freq[0] - float(q[0, 0])) > 0.2  # really sharper than the targets themselves
    # mixed with hard labels, it is the sharpened target that is mixed: (1 − λ) q̃ + λ onehot(y)
    mixed = dataclasses.replace(cfg, hard_weight=0.4)
    freq = np.bincount(np.asarray(ff.positive_classes(jax.random.key(2), q, jnp.full((n,), 3),
                                                      mixed)), minlength=4) / n
    np.testing.assert_allclose(freq, 0.6 * jax.nn.softmax(z) + 0.4 * jnp.eye(4)[3], atol=0.01)
    y = jnp.asarray(np.random.default_rng(0).integers(0, 4, 500))
    onehot = jax.nn.one_hot(y, 4)
    sharp = dataclasses.replace(CFG, positive_power=20.0)
    np.testing.assert_array_equal(ff.positive_classes(jax.random.key(1), onehot, None, sharp), y)
    with pytest.raises(ValueError, match="positive_power must be a positive number"):
        dataclasses.replace(CFG, positive_power=0.0)


def test_learning_separates_positive_from_negative_goodness() -> None:
    pop = devices.spawn(devices.preset("ideal", W), 1, jax.random.key(0))
    x, y = _data(200)
    cfg = dataclasses.replace(CFG, epochs=15)
    state, metrics = _train(pop, y, x, 15, cfg=cfg)
    theta = W[-1]  # the last layer's threshold: its number of units
    assert float(metrics["g_pos"][0]) > theta > float(metrics["g_neg"][0])
    ev = ff.evaluate_population(state, x, y, jax.random.split(jax.random.key(0), 1), cfg, 50,
                                ff.BENCH)
    assert float(ev["goodness_error"][0]) < 0.2 and float(ev["softmax_error"][0]) < 0.2


# --- unsupervised negatives --------------------------------------------------------------------

def test_hybrid_masks_are_binary_and_blobby() -> None:
    """Masks are 0/1, about half ones, and a pixel equals both its right and its lower
    neighbour far more often than raw random bits do (0.5): blurred along both axes."""
    m = np.asarray(ff.hybrid_masks(jax.random.key(0), 64, (28, 28), 6)).reshape(64, 28, 28)
    assert set(np.unique(m)) <= {0.0, 1.0}
    assert 0.3 < m.mean() < 0.7
    same_as_right = (m[:, :, 1:] == m[:, :, :-1]).mean()
    same_as_below = (m[:, 1:, :] == m[:, :-1, :]).mean()
    assert same_as_right > 0.85  # large regions, unlike raw random bits (0.5)
    assert same_as_below > 0.85


def test_hybrid_images_mix_two_real_images() -> None:
    """``h = m·a + (1 − m)·b`` exactly, with ``m`` the masks of the same key, ``a`` the batch
    and ``b`` the batch rolled by one; where a and b differ, a share of the pixels well inside
    (0, 1) comes from each image."""
    cfg = ff.FFConfig(mode="unsupervised", image_shape=(6, 6))
    x = jax.random.uniform(jax.random.key(0), (32, 36))
    h = np.asarray(ff.hybrid_images(jax.random.key(1), x, cfg))
    a, b = np.asarray(x), np.roll(np.asarray(x), 1, axis=0)
    assert np.all((h == a) | (h == b))
    m = np.asarray(ff.hybrid_masks(jax.random.key(1), 32, (6, 6), cfg.hybrid_blurs))
    np.testing.assert_array_equal(h, m * a + (1.0 - m) * b)
    from_a = np.mean(h[a != b] == a[a != b])
    assert 0.25 < from_a < 0.75
    assert np.mean(h == a, axis=1).std() > 0.1  # images differ in their shares (own masks)


def test_an_unsupervised_step_contrasts_real_images_with_their_hybrids() -> None:
    """Unsupervised mode: the positive pass is the real images (no label lines), the negative
    pass their hybrids (``hybrid_images`` with the step's key). On an ``ideal`` device without
    momentum or weight decay the step's weight change is ``−lr · ff_gradients`` of those two
    measurements and its negative goodness is the hybrids'; with the real images measured
    again as negatives both would be far off."""
    cfg = dataclasses.replace(CFG, mode="unsupervised", image_shape=(4, 5), momentum=0.0,
                              weight_decay=0.0)
    x, y = _data(10)
    key = jax.random.key(11)
    d, change, metrics = _one_step(cfg, x, y, key)
    k_hyb = jax.random.split(key, 7)[6]
    hybrids = ff.hybrid_images(k_hyb, x, cfg)
    m_pos, m_neg, m_real = (devices.measure(d, a) for a in (x, hybrids, x))
    _assert_step_is(change, ff.ff_gradients(m_pos, m_neg, d.spec, cfg)[0], cfg)
    g_neg = float(ff.goodness(m_neg.outputs)[-1].mean())
    g_pos = float(ff.goodness(m_pos.outputs)[-1].mean())
    assert float(metrics["g_neg"]) == pytest.approx(g_neg, rel=1e-5)
    assert float(metrics["g_pos"]) == pytest.approx(g_pos, rel=1e-5)
    assert abs(g_neg - g_pos) > 1e-3 * g_pos  # the metric tells hybrids from real images
    # at fab time only the first layer's goodness lies near its threshold, so its request is
    # where the negatives show: a step with the real images as negatives misses it by far more
    # than the tolerance (the deeper layers' negative errors are ~0 either way)
    wrong = ff.ff_gradients(m_pos, m_real, d.spec, cfg)[0][0]
    assert np.abs(change[0] + cfg.lr * np.asarray(wrong)).max() > 0.02 * np.abs(change[0]).max()


def test_invalid_learner_config_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="momentum must lie in"):
        ff.FFConfig(momentum=1.5)
    with pytest.raises(ValueError, match="image_shape"):
        ff.FFConfig(mode="unsupervised")
    with pytest.raises(ValueError, match=r"readout_refit_epochs must lie in \[0, epochs\)"):
        ff.FFConfig(epochs=5, readout_refit_epochs=5)
    with pytest.raises(ValueError, match="readout_from=3 leaves no layer"):
        ff.init(devices.fabricate(devices.preset("ideal", W), jax.random.key(0)),
                dataclasses.replace(CFG, readout_from=3), 4)


def test_in_chunks_applies_a_per_device_function_to_every_device() -> None:
    xs = jnp.arange(24.0).reshape(6, 4)
    ks = jnp.arange(6)

    def fn(x, k):
        return {"y": x * 2 + k, "s": jnp.sum(x)}

    want = jax.vmap(fn)(xs, ks)
    for chunk in (0, 1, 2, 3, 6, 9):
        got = ff.in_chunks(fn, (xs, ks), chunk)
        assert jnp.array_equal(got["y"], want["y"]) and jnp.array_equal(got["s"], want["s"])
    with pytest.raises(ValueError, match="groups of 4"):
        ff.in_chunks(fn, (xs, ks), 4)


def test_fit_temperature_recovers_the_scale_of_the_scores() -> None:
    """Scores that are ``T_s · log q`` plus any per-example constant fit ``T_s`` exactly; the
    fitted term is the term at that temperature with the pull scaled back to T (× T / T_s)."""
    q = jax.nn.softmax(jax.random.normal(jax.random.key(7), (32, N_CLASSES)) * 2, axis=-1)
    for k in (3, 41, 60, 80):
        t_s = 20.0 * ff.FIT_FACTORS[k]
        scores = t_s * jnp.log(q) + jax.random.normal(jax.random.key(k), (32, 1)) * 50
        assert float(ff.fit_temperature(scores, q, 20.0)) == pytest.approx(t_s, rel=1e-5)
    cfg = dataclasses.replace(CFG, goodness_kl_weight=0.3, readout_temperature=4.0,
                              goodness_kl_temperature="fit")
    d = devices.fabricate(devices.preset("ideal", W), jax.random.key(0))
    x, _ = _data(10)
    q = jax.nn.softmax(jax.random.normal(jax.random.key(5), (10, N_CLASSES)), axis=-1)
    m = devices.measure(d, ff.embed_all_classes(x, cfg))
    t_s = float(ff.fit_temperature(ff.scores_from_goodness(m.outputs, cfg), q, 4.0))
    assert t_s != 4.0
    fitted = ff.goodness_kl_gradients(m, q, cfg)
    at_t_s = ff.goodness_kl_gradients(m, q, dataclasses.replace(
        cfg, readout_temperature=t_s, goodness_kl_temperature="targets"))
    exact = ff.goodness_kl_gradients(m, q, dataclasses.replace(
        cfg, goodness_kl_temperature="fit_exact"))
    for a, b, e in zip(fitted, at_t_s, exact, strict=True):
        # float32 sums of the two computations differ by a rounding in their last bits; near
        # zero (cancellation) that is a large relative error, so the floor scales with the array
        floor = 1e-5 * float(np.abs(b).max())
        np.testing.assert_allclose(a, b * (4.0 / t_s), rtol=1e-5, atol=floor)
        # the exact gradient of κ T² KL at T_s: the term at T_s rescaled by (T / T_s)²
        np.testing.assert_allclose(e, b * (4.0 / t_s) ** 2, rtol=1e-5, atol=floor)
    with pytest.raises(ValueError, match="goodness_kl_temperature"):
        ff.FFConfig(goodness_kl_temperature="auto")  # type: ignore[arg-type]


@pytest.mark.full_optimization
@pytest.mark.parametrize("cells", [1, 8])
def test_a_training_step_writes_the_synapses_in_place_without_copying_them(cells: int) -> None:
    """The compiled epoch (the command line's program) copies no synapse array per step: every
    loop that reads a layer's old synapses runs before ``program`` rewrites them in place (the
    bias line is read once, ``devices._read.bias_line``). An 8-cell 784-1000-1000-1000 step
    copied 2 × 64 MB per hidden layer before, and took 34-37 ms against 22-24 ms after. Without
    weight decay the learner's arrays are not copied either."""
    import re

    from mortal import parallel

    spec = devices.preset("rram", W)
    if cells > 1:
        spec = spec.replace_in_layers("synapse", cells=cells)
    steps = ff.steps_per_epoch(40, CFG)
    state = ff.init_population(devices.spawn(spec, 1, jax.random.key(0)), CFG, steps)
    x, y = _data()
    keys, order = ff.epoch_keys(jax.random.key(1), 0, 1, CFG)
    hlo = parallel._train_program(CFG, ff.BENCH, None, 1).lower(
        state, x, y, keys, order).compile().as_text()
    synapses = {"c64[" + ",".join(map(str, (1, *a.shape[1:]))) + "]"
                for a in state.device.state.synapses}
    assert all(a.dtype == jnp.complex64 for a in state.device.state.synapses)
    copied = set(re.findall(r"= (c64\[[\d,]+\])\{[\d,]+\} copy\(", hlo))
    assert not copied & synapses, sorted(copied & synapses)
    no_decay = dataclasses.replace(CFG, weight_decay=0.0)
    state = ff.init_population(devices.spawn(spec, 1, jax.random.key(0)), no_decay, steps)
    hlo = parallel._train_program(no_decay, ff.BENCH, None, 1).lower(
        state, x, y, keys, order).compile().as_text()
    records = {"f32[" + ",".join(map(str, (1, *a.shape[1:]))) + "]" for a in state.record}
    copied = set(re.findall(r"= ((?:c64|f32)\[[\d,]+\])\{[\d,]+\} copy\(", hlo))
    assert not copied & (synapses | records), sorted(copied & (synapses | records))


def test_no_weight_decay_passes_the_updates_unchanged() -> None:
    u = (jnp.array([[1.5, -0.0], [0.0, -2.0]]),)
    record = (jnp.array([[jnp.inf, 3.0], [-1.0, jnp.nan]]),)  # never read
    out, _ = ff._decay_weights_not_biases(0.0).update(u, optax.EmptyState(), record)
    assert np.array_equal(np.asarray(out[0]), np.asarray(u[0]))
    assert np.array_equal(np.signbit(out[0]), np.signbit(u[0]))
    decayed, _ = ff._decay_weights_not_biases(0.5).update(u, optax.EmptyState(), record)
    # weight rows add rate · record; the bias row (the last) is left alone
    assert float(decayed[0][0, 1]) == 1.5 and np.isinf(float(decayed[0][0, 0]))
    assert np.array_equal(np.asarray(decayed[0][1]), np.asarray(u[0][1]))
