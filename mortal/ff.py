"""Forward-Forward learning in place on a sealed device (Hinton 2022).

Everything here is written for ONE device and touches it only through the bench (``measure`` and
``program``); populations are ``vmap``-ed, and one epoch is one ``lax.scan``.

The local rule, per layer ``l`` with measured crossbar input ``v`` (incl. the bias line) and
measured output ``y`` (ADC values): goodness ``G = Σ y²``, logit ``(G − θ_l) / T``, layer loss
``L = softplus(−logit)`` on positive data and ``softplus(logit)`` on negative data. The weight
request is ``ΔW ∝ −vᵀ (∂L/∂G · y) / B``: an outer product of what was measured, scaled by the
per-example goodness error. It equals ``−½ ∂L/∂W`` when the neuron is a ReLU (Hinton's code drops
the factor 2 of ``∂G/∂y``); for any other increasing curve it needs no derivative of it.

Targets are distributions over classes (hard labels are one-hot): the positive pass writes a class
drawn from the target into the label lines; the negative pass a class drawn from the device's own
belief (neutral-label pass + softmax readout, or with ``negative_belief = "goodness"`` its
goodness over every label) with the positive class excluded (``hard``), or uniformly among the
other classes (``random``). With one-hot targets and hard negatives this is
Hinton's supervised FF; with a teacher's probabilities it is distillation.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

import devices

Array = jax.Array


# ---------------------------------------------------------------------------------------------
# configuration (static) and the bench (the only door to a device)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FFConfig:
    """Static learner configuration (hashable; Hinton's recipe by default).

    Labels: ``n_classes`` label lines carry ``label_strength`` for the class, 0 elsewhere; the
    neutral label puts ``label_strength / n_classes`` on every line. ``label_placement``:
    ``overwrite`` the first input lines (Hinton's MNIST recipe: its corner pixels are blank) or
    ``prepend`` extra lines (the device then has ``n_classes`` more inputs than the images).
    Goodness: threshold ``θ_l = threshold`` or, if ``None``, the layer's number of units;
    temperature ``temperature``.
    Optimiser (on the requests): ``sgd`` with gradient smoothing ``momentum`` (EMA, Hinton's
    "delay") or ``adam`` (optax's, with ``momentum`` as its first-moment decay β₁ and β₂ = 0.999,
    so that ``momentum`` smooths the request with either optimiser); weight decay
    ``weight_decay`` acts on the learner's own record of what it has requested (the bench cannot
    read weights); learning rate ``lr`` constant for the first ``lr_decay_start`` of the
    schedule's steps (Hinton's: 0.5, half of ``epochs``), then linear decay to 0 at the end of
    the last epoch (a periphery setting: when the learner starts to send smaller requests).
    ``layer_lr_scale`` multiplies each layer's requests.
    Periphery: ``accumulate`` > 0 keeps requests in a digital buffer until they reach
    ``accumulate · dw_min`` (the recipe's nominal pulse step) and only then programs them;
    ``dead_zone`` > 0 drops (neither sends nor keeps) every request smaller than
    ``dead_zone · dw_min``, so that a synapse is written only where the smoothed request is large
    (without it, stochastic rounding writes a request of a tenth of a pulse one step in ten).
    Readout: linear softmax on the normalised activities of layers ``readout_from`` .. L
    (0-based; 1 skips the first hidden layer), delta rule with ``readout_lr`` and
    ``readout_decay``. ``readout_center``: the rule steps in coordinates centred on each
    minibatch's mean features, the bias row taking up the shift, so the readout stays one linear
    map of the features and carries no extra state (see ``readout_delta``). Normalised
    activities of non-negative neurons share a large common part (92 % of their squared norm on
    an 8-cell MNIST ``rram`` device, mostly a few always-on units), along which the plain rule
    oscillates. Centring removes that for a readout fitted on frozen features
    (``scripts/readout_refit.py``), but a readout learning beside the device lagged the plain
    rule with it on the digits and, as the source of Hinton's hard negatives, derailed FF there
    (docs/results.md, session 27). Off by default.
    ``readout_refit_epochs`` R > 0: the last R of the ``epochs`` fit the readout afresh on the
    trained device, which is left as it is (measured only, never programmed): the FF rule and
    its schedule run for the first ``epochs − R`` epochs (``ff_epochs``) exactly as a run of that
    many epochs would, then the readout restarts from zero and learns with the centred rule
    (``readout_center``) at a constant ``readout_refit_lr`` and decay ``readout_refit_decay``,
    each minibatch from a fresh neutral-label read (``refit_step``). Ten refit epochs after FF
    on 12 MNIST ``rram`` devices (8 cells or 1 cell per synapse) beat the readout trained beside
    the device by 0.65 to 3.05 points, ending 0.42 points below to 0.72 above their goodness
    readout (docs/results.md, session 28), each epoch costing about an eighth of an FF epoch.
    Distillation students never refit (their ``student_config`` sets R = 0).
    ``negatives``: ``hard`` (drawn from the device's belief, the neutral-pass
    readout), ``random`` (uniform), or ``excess`` (drawn from where the belief exceeds the target:
    ``∝ max(softmax(z) − q̃, 0)``, see ``sample_negatives``; equal to ``hard`` for one-hot
    targets, and for soft targets it stops pushing down a class the device already rates no
    higher than its teacher does). Never the positive class. ``negative_belief``: what ``hard``
    and ``excess`` read as the device's belief: ``readout`` (the neutral-pass linear readout,
    Hinton's recipe) or ``goodness`` (``softmax(G / T_s)`` of the goodness scores over every
    label, ``T_s`` fitted to the targets on each minibatch, ``fit_temperature``; C passes per
    example instead of 2, whose rows are then the positive and negative passes). ``mode``:
    ``supervised`` (labels in the input) or ``unsupervised`` (hybrid-image negatives, no label
    lines; ``image_shape`` needed). ``shared_order``: every device of a population sees minibatches
    in the same order.
    Distillation (soft targets at temperature ``readout_temperature`` = T): the readout descends
    ``(1 − λ) T² KL(q ‖ softmax(z/T)) + λ CE(y, softmax(z))`` with ``λ = hard_weight`` when hard
    labels ``y`` come with the soft targets ``q``; the positive class is drawn from
    ``(1 − λ) q̃ + λ onehot(y)``, where ``q̃ ∝ q ** positive_power`` sharpens the soft target
    (for ``q = softmax(z / T)``, ``q̃ = softmax(z / (T / positive_power))``: a distillation
    student draws its positives at a lower temperature than its readout matches; one-hot
    targets are unchanged by it).
    ``goodness_kl_weight`` κ > 0 adds, in supervised mode, the gradient of
    ``κ T² KL(q ‖ softmax(G / T))`` on the goodness scores ``G`` (summed over layers
    ``readout_from`` .. L, one pass per candidate label, as the goodness readout reads them) with
    ``T = readout_temperature``: every label's goodness moves toward the target's log-odds on
    every example, the way Hinton et al.'s distillation matches every logit, rather than only the
    sampled positive and negative labels. The positive and negative passes are then rows of that
    one all-label measurement. It costs ``C`` passes per example instead of 2.
    ``goodness_kl_temperature``: ``targets`` matches ``softmax(G / T)`` at the targets' own T
    (Hinton et al.'s convention); ``fit`` matches ``softmax(G / T_s)`` with the ``T_s`` that
    brings it closest to the targets on each minibatch (``fit_temperature``), with the pull of
    the ``targets`` convention (see ``goodness_kl_gradients``), so that only the shape of the
    targets is imposed, not the teacher's goodness scale: for students whose physics gives
    goodness scores of another scale than their teacher's (another recipe); ``fit_exact`` the same
    softmax with the exact gradient of ``κ T² KL`` at ``T_s`` (a pull ``T / T_s`` times weaker).
    ``goodness_kl_start``: the fraction of the schedule's steps (``ff_epochs`` × steps per epoch)
    before which the term is off (κ = 0; the all-label measurement is still made). 0 (the
    default): from the first step; 0.5 with Hinton's schedule: only while the learning rate
    decays.
    """

    n_classes: int = 10
    label_strength: float = 1.0
    threshold: float | None = None
    temperature: float = 1.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.001
    optimizer: Literal["sgd", "adam"] = "sgd"
    epochs: int = 100
    batch_size: int = 100
    negatives: Literal["hard", "random", "excess"] = "hard"
    negative_belief: Literal["readout", "goodness"] = "readout"
    readout_lr: float = 0.1
    readout_decay: float = 0.003
    readout_from: int = 1
    readout_center: bool = False
    readout_refit_epochs: int = 0
    readout_refit_lr: float = 0.3
    readout_refit_decay: float = 0.0003
    layer_lr_scale: tuple[float, ...] | None = None
    accumulate: float = 0.0
    dead_zone: float = 0.0
    mode: Literal["supervised", "unsupervised"] = "supervised"
    image_shape: tuple[int, int] | None = None
    hybrid_blurs: int = 6
    shared_order: bool = False
    readout_temperature: float = 1.0
    hard_weight: float = 0.0
    positive_power: float = 1.0
    label_placement: Literal["overwrite", "prepend"] = "overwrite"
    goodness_kl_weight: float = 0.0
    goodness_kl_temperature: Literal["targets", "fit", "fit_exact"] = "targets"
    goodness_kl_start: float = 0.0
    lr_decay_start: float = 0.5

    def __post_init__(self) -> None:
        checks = [
            (self.n_classes >= 2, "n_classes must be >= 2"),
            (self.lr > 0 and math.isfinite(self.lr), "lr must be a positive number"),
            (0 <= self.momentum < 1, "momentum must lie in [0, 1)"),
            (self.weight_decay >= 0 and math.isfinite(self.weight_decay),
             "weight_decay must be a number >= 0"),
            (self.optimizer in ("sgd", "adam"), "optimizer must be 'sgd' or 'adam'"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.negatives in ("hard", "random", "excess"),
             "negatives must be 'hard', 'random' or 'excess'"),
            (self.temperature > 0 and math.isfinite(self.temperature),
             "temperature must be a positive number"),
            (self.readout_from >= 0, "readout_from must be >= 0"),
            (self.accumulate >= 0 and math.isfinite(self.accumulate),
             "accumulate must be a number >= 0 (nominal pulses)"),
            (self.dead_zone >= 0 and math.isfinite(self.dead_zone),
             "dead_zone must be a number >= 0 (nominal pulses)"),
            (self.dead_zone == 0 or self.accumulate == 0,
             "dead_zone and accumulate exclude each other: set one of them to 0"),
            (self.mode in ("supervised", "unsupervised"),
             "mode must be 'supervised' or 'unsupervised'"),
            (self.mode == "supervised" or self.image_shape is not None,
             "unsupervised mode needs image_shape for its hybrid negatives"),
            (self.readout_temperature > 0 and math.isfinite(self.readout_temperature),
             "readout_temperature must be a positive number"),
            (self.label_placement in ("overwrite", "prepend"),
             "label_placement must be 'overwrite' or 'prepend'"),
            (self.label_strength > 0 and math.isfinite(self.label_strength),
             "label_strength must be a positive number"),
            (self.readout_lr >= 0 and math.isfinite(self.readout_lr),
             "readout_lr must be a number >= 0"),
            (self.readout_decay >= 0 and math.isfinite(self.readout_decay),
             "readout_decay must be a number >= 0"),
            (0 <= self.readout_refit_epochs < self.epochs,
             "readout_refit_epochs must lie in [0, epochs): the readout refit takes the last "
             "of the epochs, and FF needs at least one"),
            (self.readout_refit_lr > 0 and math.isfinite(self.readout_refit_lr)
             and self.readout_refit_decay >= 0 and math.isfinite(self.readout_refit_decay),
             "readout_refit_lr must be a positive number and readout_refit_decay one >= 0"),
            (self.threshold is None or (self.threshold >= 0 and math.isfinite(self.threshold)),
             "threshold must be a number >= 0 (or unset: each layer's width)"),
            (self.layer_lr_scale is None or all(s >= 0 and math.isfinite(s)
                                                for s in self.layer_lr_scale),
             "layer_lr_scale must hold numbers >= 0, one per layer"),
            (0 <= self.hard_weight <= 1, "hard_weight must lie in [0, 1]"),
            (self.positive_power > 0 and math.isfinite(self.positive_power),
             "positive_power must be a positive number"),
            (self.goodness_kl_weight >= 0 and math.isfinite(self.goodness_kl_weight),
             "goodness_kl_weight must be a number >= 0"),
            (self.goodness_kl_temperature in ("targets", "fit", "fit_exact"),
             "goodness_kl_temperature must be 'targets', 'fit' or 'fit_exact'"),
            (0 <= self.goodness_kl_start < 1,
             "goodness_kl_start must lie in [0, 1) (a fraction of the schedule's steps)"),
            (self.goodness_kl_start == 0 or self.goodness_kl_weight > 0,
             "goodness_kl_start has no effect without goodness_kl_weight > 0"),
            (0 <= self.lr_decay_start < 1,
             "lr_decay_start must lie in [0, 1) (a fraction of the schedule's steps)"),
            (self.negative_belief in ("readout", "goodness"),
             "negative_belief must be 'readout' or 'goodness'"),
            (self.negative_belief == "readout" or (self.mode == "supervised"
                                                   and self.negatives != "random"),
             "negative_belief 'goodness' draws 'hard' or 'excess' negatives in supervised "
             "mode; set negative_belief = 'readout' for random or unsupervised negatives"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid learner config: {message}")

    @property
    def label_lines(self) -> int:
        return self.n_classes if self.mode == "supervised" else 0

    @property
    def ff_epochs(self) -> int:
        """The epochs of FF learning (``epochs`` less the readout refit's)."""
        return self.epochs - self.readout_refit_epochs


@dataclass(frozen=True)
class Bench:
    """The only door to a device: ``measure`` and ``program`` (hashable, static under jit)."""

    measure: Callable[..., devices.Measurement] = devices.measure
    program: Callable[..., devices.Device] = devices.program


BENCH = Bench()


# ---------------------------------------------------------------------------------------------
# learner state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FFState:
    """Everything one device's learner carries (a pytree; stack it for a population).

    ``device``: the sealed device. ``opt_state``: optimiser state. ``record``: per layer, the sum
    of every update sent so far, in digital weight units (what the periphery knows; weight decay
    acts on it). ``pending``: updates held in the digital accumulator (digital units).
    ``readout``: ``(D + 1, C)`` softmax readout weights (last row: bias). ``step``: minibatches
    done (int32).
    """

    device: devices.Device
    opt_state: Any
    record: tuple[Array, ...]
    pending: tuple[Array, ...]
    readout: Array
    step: Array


for _cls in (FFState,):
    jax.tree_util.register_dataclass(_cls, data_fields=[f.name for f in dataclasses.fields(_cls)],
                                     meta_fields=[])


def readout_width(spec: devices.DeviceSpec, cfg: FFConfig) -> int:
    """Number of features the readout sees (normalised activities of layers readout_from..L)."""
    return sum(spec.widths[1 + cfg.readout_from:])


def check_fits(spec: devices.DeviceSpec, cfg: FFConfig) -> None:
    """Raise ``ValueError`` (one line) if the learner config does not fit this device's shape:
    the readout's first layer, the label lines, the per-layer learning-rate scales."""
    if cfg.readout_from >= spec.n_layers:
        raise ValueError(f"invalid learner config: readout_from={cfg.readout_from} leaves no "
                         f"layer of this {spec.n_layers}-layer device for the readout")
    if cfg.label_lines > spec.widths[0]:
        raise ValueError(f"invalid learner config: {cfg.label_lines} label lines do not fit "
                         f"into {spec.widths[0]} inputs")
    if cfg.layer_lr_scale is not None and len(cfg.layer_lr_scale) != spec.n_layers:
        raise ValueError(f"invalid learner config: layer_lr_scale needs {spec.n_layers} "
                         "entries, one per layer")


def schedule(cfg: FFConfig, steps_per_epoch: int) -> optax.Schedule:
    """The learning-rate multiplier at each step: 1 for the first ``lr_decay_start`` of the
    ``ff_epochs · steps_per_epoch`` steps (Hinton's: half), then linear decay, reaching 0 after
    the last FF step."""
    total = cfg.ff_epochs * steps_per_epoch
    constant = int(cfg.lr_decay_start * total)
    decay = optax.linear_schedule(1.0, 0.0, max(1, total - constant))
    if constant == 0:
        return decay
    return optax.join_schedules([optax.constant_schedule(1.0), decay], [constant])


def _bias_row(p: Array) -> Array:
    """``(n_in + 1, 1)`` bool: True on the last row of a layer's array (its bias line)."""
    return (jnp.arange(p.shape[-2]) == p.shape[-2] - 1)[:, None]


def _decay_weights_not_biases(rate: float) -> optax.GradientTransformation:
    """``u + rate · w`` on weight rows; bias rows (the last of each layer) are not decayed, as in
    Hinton's code. With ``rate == 0`` the updates pass unchanged, without reading ``w``: adding
    ``0 · w`` changed at most the sign of a zero update (or made an infinite record's update
    NaN), and reading the record for it made XLA keep a copy of the record in every step."""
    if rate == 0:
        return optax.identity()

    def update(updates: Any, state: Any, params: Any = None) -> tuple[Any, Any]:
        assert params is not None
        # a select on the row index, not ``p.at[-1].set(0)``: XLA fuses it into the update
        # instead of copying every record array once per step (the same values)
        decayed = tuple(u + rate * jnp.where(_bias_row(p), 0.0, p)
                        for u, p in zip(updates, params, strict=True))
        return decayed, state

    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(cfg: FFConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """The transformation from FF gradients (loss-descent convention) to updates.

    Weight decay acts on the learner's record of what it sent (the bench cannot read weights), so
    it pulls weights toward their fab-time values rather than toward zero; for Hinton's recipe
    (lr 0.01, decay 0.001) the difference is a shrink of the initial weights that digital FF has
    and this does not. On devices whose pulses do not add up to the requests (soft bounds,
    stochastic rounding, write noise: ``rram``) the record drifts away from the weights, and the
    decay then spends writes on values the record made up; ``weight_decay = 0`` learned better
    there (docs/results.md, *Session 45*).
    """
    first = (optax.ema(cfg.momentum, debias=False) if cfg.optimizer == "sgd"
             else optax.scale_by_adam(b1=cfg.momentum))
    sched = schedule(cfg, steps_per_epoch)
    return optax.chain(first, _decay_weights_not_biases(cfg.weight_decay),
                       optax.scale_by_learning_rate(lambda t: cfg.lr * sched(t)))


def init(device: devices.Device, cfg: FFConfig, steps_per_epoch: int) -> FFState:
    """Fresh learner state for one device (vmap it over a population)."""
    spec = device.spec
    check_fits(spec, cfg)
    zeros = tuple(jnp.zeros((a + 1, b), jnp.float32) for a, b in
                  zip(spec.widths[:-1], spec.widths[1:], strict=True))
    opt = make_optimizer(cfg, steps_per_epoch)
    readout = jnp.zeros((readout_width(spec, cfg) + 1, cfg.n_classes), jnp.float32)
    return FFState(device, opt.init(zeros), zeros, zeros, readout, jnp.zeros((), jnp.int32))


# ---------------------------------------------------------------------------------------------
# inputs: labels, neutral labels, hybrid negatives
# ---------------------------------------------------------------------------------------------


def embed_label(x: Array, label_vector: Array, cfg: FFConfig) -> Array:
    """Put ``(B, C)`` label values on the label lines of ``(B, D)`` images: over the first C
    pixels (``overwrite``) or in front of them (``prepend``, giving ``(B, C + D)``)."""
    lines = label_vector * cfg.label_strength
    if cfg.label_placement == "prepend":
        return jnp.concatenate([lines.astype(x.dtype), x], axis=-1)
    return x.at[:, : cfg.n_classes].set(lines)


def embed_class(x: Array, classes: Array, cfg: FFConfig) -> Array:
    return embed_label(x, jax.nn.one_hot(classes, cfg.n_classes), cfg)


def embed_neutral(x: Array, cfg: FFConfig) -> Array:
    if cfg.label_lines == 0:
        return x
    return embed_label(x, jnp.full((x.shape[0], cfg.n_classes), 1.0 / cfg.n_classes), cfg)


def hybrid_masks(key: Array, batch: int, shape: tuple[int, int], blurs: int) -> Array:
    """Masks for hybrid negatives: random bits blurred ``blurs`` times with [1/4, 1/2, 1/4]
    along both axes, thresholded at 0.5. Returns ``(batch, H·W)`` float32 in {0, 1}."""
    m = jax.random.bernoulli(key, 0.5, (batch, *shape)).astype(jnp.float32)
    for _ in range(blurs):
        for axis in (1, 2):
            pad = [(0, 0)] * 3
            pad[axis] = (1, 1)
            p = jnp.pad(m, pad, mode="edge")
            lo = jax.lax.slice_in_dim(p, 0, shape[axis - 1], axis=axis)
            mid = jax.lax.slice_in_dim(p, 1, shape[axis - 1] + 1, axis=axis)
            hi = jax.lax.slice_in_dim(p, 2, shape[axis - 1] + 2, axis=axis)
            m = 0.25 * lo + 0.5 * mid + 0.25 * hi
    return (m > 0.5).astype(jnp.float32).reshape(batch, -1)


def hybrid_images(key: Array, x: Array, cfg: FFConfig) -> Array:
    """``m·a + (1 − m)·b`` with ``b`` another image of the batch (the batch rolled by one)."""
    assert cfg.image_shape is not None
    m = hybrid_masks(key, x.shape[0], cfg.image_shape, cfg.hybrid_blurs)
    return m * x + (1.0 - m) * jnp.roll(x, 1, axis=0)


# ---------------------------------------------------------------------------------------------
# reading a device's answer
# ---------------------------------------------------------------------------------------------


def thresholds(spec: devices.DeviceSpec, cfg: FFConfig) -> tuple[float, ...]:
    return tuple(float(n) if cfg.threshold is None else cfg.threshold for n in spec.widths[1:])


def goodness(outputs: tuple[Array, ...]) -> Array:
    """``(L, B)`` sum of squared measured outputs per layer."""
    return jnp.stack([jnp.sum(jnp.square(y), axis=-1) for y in outputs])


def readout_features(m: devices.Measurement, cfg: FFConfig) -> Array:
    """``(B, D + 1)``: normalised activities of layers readout_from..L and a constant 1."""
    feats = [devices.normalize(y) for y in m.outputs[cfg.readout_from:]]
    ones = jnp.ones((feats[0].shape[0], 1), jnp.float32)
    return jnp.concatenate([*feats, ones], axis=-1)


def readout_logits(state: FFState, x: Array, cfg: FFConfig, key: Array | None,
                   bench: Bench = BENCH) -> Array:
    """One pass with the neutral label; linear readout. ``x``: ``(B, D)`` → ``(B, C)``."""
    m = bench.measure(state.device, embed_neutral(x, cfg), key=key)
    return readout_features(m, cfg) @ state.readout


def embed_all_classes(x: Array, cfg: FFConfig) -> Array:
    """``(C·B, D')``: every image with every label, class-major (row ``c·B + i``)."""
    classes = jnp.repeat(jnp.arange(cfg.n_classes), x.shape[0])
    return embed_class(jnp.tile(x, (cfg.n_classes, 1)), classes, cfg)


def scores_from_goodness(outputs: tuple[Array, ...], cfg: FFConfig) -> Array:
    """``(B, C)`` accumulated goodness of layers readout_from..L from the outputs of a
    class-major all-label measurement (``embed_all_classes``)."""
    g = goodness(outputs)[cfg.readout_from:].sum(axis=0)
    return g.reshape(cfg.n_classes, -1).T


def goodness_scores(device: devices.Device, x: Array, cfg: FFConfig, key: Array | None,
                    bench: Bench = BENCH) -> Array:
    """Accumulated goodness of layers readout_from..L for every candidate label: ``(B, C)``.

    One pass per label (all labels in one batched measurement of ``C·B`` inputs).
    """
    return scores_from_goodness(bench.measure(device, embed_all_classes(x, cfg), key=key).outputs,
                                cfg)


def goodness_probabilities(device: devices.Device, x: Array, cfg: FFConfig, key: Array | None,
                           temperature: float = 1.0, bench: Bench = BENCH) -> Array:
    """Class probabilities ``softmax(goodness scores / T)``: ``(B, C)``."""
    return jax.nn.softmax(goodness_scores(device, x, cfg, key, bench) / temperature, axis=-1)


# ---------------------------------------------------------------------------------------------
# the local rule
# ---------------------------------------------------------------------------------------------


def goodness_error(outputs: tuple[Array, ...], positive: bool, spec: devices.DeviceSpec,
                   cfg: FFConfig) -> tuple[tuple[Array, ...], Array]:
    """Per layer ``∂L/∂G`` ``(B,)`` and the layer losses ``(L,)`` (mean over the batch)."""
    errors, losses = [], []
    for y, theta in zip(outputs, thresholds(spec, cfg), strict=True):
        logit = (jnp.sum(jnp.square(y), axis=-1) - theta) / cfg.temperature
        sign = 1.0 if positive else -1.0
        losses.append(jnp.mean(jax.nn.softplus(-sign * logit)))
        errors.append(-sign * jax.nn.sigmoid(-sign * logit) / cfg.temperature)
    return tuple(errors), jnp.stack(losses)


def local_gradients(m: devices.Measurement, errors: tuple[Array, ...],
                    matmul_dtype: str = "float32") -> tuple[Array, ...]:
    """``vᵀ (∂L/∂G · y) / B`` per layer: ``(n_in + 1, n_out)``, from measurements only; the
    products' operands rounded to ``matmul_dtype`` (the device's ``spec.matmul_dtype``)."""
    return tuple(devices.matmul(v.T, e[:, None] * y, matmul_dtype) / v.shape[0]
                 for v, y, e in zip(m.inputs, m.outputs, errors, strict=True))


def ff_gradients(m_pos: devices.Measurement, m_neg: devices.Measurement,
                 spec: devices.DeviceSpec, cfg: FFConfig) -> tuple[tuple[Array, ...], Array]:
    """The FF gradients of one minibatch (positive + negative pass) and the layer losses."""
    e_pos, l_pos = goodness_error(m_pos.outputs, True, spec, cfg)
    e_neg, l_neg = goodness_error(m_neg.outputs, False, spec, cfg)
    # two products and a sum, not one product over the 2B stacked rows: XLA rounds the stacked
    # product differently for different population shapes, and a run split over processes must
    # equal one process bit for bit (BENCHMARKS.md, "After run 3")
    dt = spec.matmul_dtype
    grads = jax.tree.map(jnp.add, local_gradients(m_pos, e_pos, dt),
                         local_gradients(m_neg, e_neg, dt))
    return grads, l_pos + l_neg


# T_s / T tried by the fit: 83 log-spaced values 19 % apart, from about 1/1000 to 1000 (at
# T = 20, MNIST `pcm` students of an `rram` teacher fit T_s = 710-1000, 35-50 x; `rram`
# students 1.7-4.6 x)
FIT_FACTORS = tuple(30.0 ** (k / 20) for k in range(-41, 42))


def fit_temperature(scores: Array, targets: Array, temperature: float) -> Array:
    """The temperature ``T_s`` at which ``softmax(scores / T_s)`` is closest to the targets:
    the minimiser of the mean ``KL(q ‖ softmax(S / T_s))`` over the batch among
    ``temperature × FIT_FACTORS`` (83 values from about T / 1000 to 1000 T, 19 % apart; the
    first of equals). ``scores`` and ``targets``: ``(B, C)``. Returns a float32 scalar. Temperature
    scaling (Guo et al. 2017) fitted on measured scores only."""
    factors = jnp.asarray(FIT_FACTORS, jnp.float32) * temperature
    logq = jnp.log(jnp.clip(targets, 1e-30, 1.0))

    def kl(t: Array) -> Array:
        logp = jax.nn.log_softmax(scores / t, axis=-1)
        return jnp.mean(jnp.sum(targets * (logq - logp), axis=-1))

    return factors[jnp.argmin(jax.vmap(kl)(factors))]


def goodness_kl_gradients(m_all: devices.Measurement, targets: Array, cfg: FFConfig,
                          matmul_dtype: str = "float32") -> tuple[Array, ...]:
    """The local requests of ``κ T² KL(q ‖ softmax(G / T))`` (``goodness_kl_weight`` κ,
    ``readout_temperature`` T) from a class-major all-label measurement ``m_all`` (``C·B`` rows)
    and targets ``q`` ``(B, C)``. ``∂/∂G_c = κ T (softmax(G / T)_c − q_c)`` is the goodness error
    of the pass with label ``c``, shared by every layer the scores sum over (layers before
    ``readout_from`` get none); each layer's request is then ``vᵀ (∂L/∂G · y) / B`` from its own
    measured input and output, as for the FF passes (operands rounded to ``matmul_dtype``).

    With ``goodness_kl_temperature = "fit"`` the softmax is taken at the fitted ``T_s``
    (``fit_temperature``) and the error is ``κ T (softmax(G / T_s)_c − q_c)``: the gradient of
    ``κ T T_s KL(q ‖ softmax(G / T_s))``, whose pull has the size of the targets' convention
    whatever the student's scale (with ``T_s`` in place of ``T`` a student whose scores are
    still flat gets a large ``T_s`` and a pull that swamps its FF passes).

    ``fit_exact``: the same softmax at ``T_s`` with the error ``κ (T² / T_s) (softmax(G / T_s)_c
    − q_c)``, the gradient of ``κ T² KL(q ‖ softmax(G / T_s))`` itself. As ``T_s`` minimises that
    KL, this is also the gradient of ``κ T² min_{T_s} KL`` (the envelope theorem, up to the fit's
    grid): the pull is ``T / T_s`` times the ``fit`` pull, weaker the sharper the student."""
    t = cfg.readout_temperature
    scores = scores_from_goodness(m_all.outputs, cfg)
    fitted = cfg.goodness_kl_temperature in ("fit", "fit_exact")
    t_soft = fit_temperature(scores, targets, t) if fitted else t
    pull = t * t / t_soft if cfg.goodness_kl_temperature == "fit_exact" else t
    err = cfg.goodness_kl_weight * pull * (jax.nn.softmax(scores / t_soft, axis=-1) - targets)
    err_rows = err.T.reshape(-1, 1)  # class-major, like the rows of m_all
    b = err.shape[0]  # a mean over the B examples (each has C passes)
    return tuple(devices.matmul(v.T, err_rows * y, matmul_dtype) / b
                 if idx >= cfg.readout_from
                 else jnp.zeros((v.shape[1], y.shape[1]), y.dtype)
                 for idx, (v, y) in enumerate(zip(m_all.inputs, m_all.outputs, strict=True)))


def goodness_belief(scores: Array, targets: Array, cfg: FFConfig) -> Array:
    """The device's belief read from its goodness scores ``G`` ``(B, C)``: the logits
    ``G / T_s`` ``(B, C)``, with ``T_s`` the temperature that brings ``softmax(G / T_s)``
    closest to the targets ``(B, C)`` on this minibatch (``fit_temperature`` around the
    ``readout_temperature``): for one-hot targets the calibrated temperature of the
    minibatch, for a teacher's probabilities its scale. A goodness score is a sum of squares
    whose spread grows as the device learns; a fixed temperature would make the draw nearly
    uniform early and nearly an argmax late."""
    return scores / fit_temperature(scores, targets, cfg.readout_temperature)


def sample_negatives(key: Array, positives: Array, belief_logits: Array, cfg: FFConfig,
                     targets: Array | None = None) -> Array:
    """A wrong class per example, never the positive class. ``(B,)`` int32.

    ``hard``: from the device's belief ``softmax(z)`` (``z``: ``belief_logits`` ``(B, C)``);
    ``random``: uniform; ``excess``: from ``max(softmax(z) − q, 0)``, the classes the device
    rates higher than the target ``q`` ``(B, C)`` does (``targets``, as the positives are drawn
    from them). For one-hot ``q`` the excess is the belief on the wrong classes, so ``excess``
    draws exactly what ``hard`` draws for the same key (classes with ``q = 0`` keep their logit
    ``z`` bit for bit). Where no class but the positive has an excess, the belief is used.
    """
    banned = jax.nn.one_hot(positives, cfg.n_classes, dtype=bool)
    if cfg.negatives == "random":
        logits = jnp.zeros_like(belief_logits)
    elif cfg.negatives == "excess":
        assert targets is not None, "excess negatives need the targets"
        lse = jax.nn.logsumexp(belief_logits, axis=-1, keepdims=True)
        excess = jnp.exp(belief_logits - lse) - targets
        over = jnp.where(excess > 0, jnp.log(jnp.maximum(excess, 1e-30)) + lse, -jnp.inf)
        logits = jnp.where(targets > 0, over, belief_logits)
        none_left = jnp.all(banned | (logits == -jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(none_left, belief_logits, logits)
    else:
        logits = belief_logits
    return jax.random.categorical(key, jnp.where(banned, -jnp.inf, logits), axis=-1)


def _requests(state: FFState, grads: tuple[Array, ...], cfg: FFConfig, steps_per_epoch: int
              ) -> tuple[tuple[Array, ...], Any, tuple[Array, ...], tuple[Array, ...]]:
    """Optimiser → digital accumulator → conductance requests.

    The optimiser works in digital weight units (what the measurements are in); a layer whose
    read path has gain ``g`` needs conductance changes ``ΔW_d / g`` (the recipe is public).
    Returns (conductance requests to program, optimiser state, sent digital updates, pending).
    """
    opt = make_optimizer(cfg, steps_per_epoch)
    updates, opt_state = opt.update(grads, state.opt_state, state.record)
    if cfg.layer_lr_scale is not None:
        updates = tuple(u * s for u, s in zip(updates, cfg.layer_lr_scale, strict=True))
    layers = state.device.spec.layers
    if cfg.accumulate > 0:
        pending = jax.tree.map(jnp.add, state.pending, updates)
        limits = [cfg.accumulate * lay.synapse.dw_min * lay.read.gain for lay in layers]
        sent = tuple(jnp.where(jnp.abs(p) >= lim, p, 0.0) for p, lim in
                     zip(pending, limits, strict=True))
        pending = jax.tree.map(jnp.subtract, pending, sent)
    else:  # everything is sent at once; the (all-zero) accumulator is not touched
        sent, pending = updates, state.pending
        if cfg.dead_zone > 0:  # requests below the zone are dropped, not kept
            zones = [cfg.dead_zone * lay.synapse.dw_min * lay.read.gain for lay in layers]
            sent = tuple(jnp.where(jnp.abs(s) >= z, s, 0.0)
                         for s, z in zip(sent, zones, strict=True))
    requests = tuple(d / lay.read.gain for d, lay in zip(sent, layers, strict=True))
    return requests, opt_state, sent, pending


def readout_gradient(logits: Array, targets: Array, labels: Array | None, cfg: FFConfig
                     ) -> Array:
    """``∂L/∂z`` of the readout loss for logits ``z`` ``(B, C)``: ``(1 − λ) T (softmax(z/T) − q)
    + λ (softmax(z) − onehot(y))`` (the T² convention; plain ``p − q`` for T = 1, λ = 0)."""
    t = cfg.readout_temperature
    grad = t * (jax.nn.softmax(logits / t, axis=-1) - targets)
    if labels is None or cfg.hard_weight == 0:
        return grad
    hard = jax.nn.softmax(logits, axis=-1) - jax.nn.one_hot(labels, cfg.n_classes)
    return (1.0 - cfg.hard_weight) * grad + cfg.hard_weight * hard


def readout_delta(feats: Array, grad_z: Array, readout: Array, cfg: FFConfig) -> Array:
    """The readout's delta-rule direction ``(D + 1, C)`` (the caller scales it by the learning
    rate) from features ``(B, D + 1)`` (last column: the constant 1) and ``∂L/∂z`` ``(B, C)``.

    Plain: ``−featsᵀ ∂L/∂z / B − readout_decay · readout``. With ``readout_center``, the
    gradient step of the parametrisation ``z = (f − μ) W + c`` with ``μ`` the minibatch's mean
    features: ``ΔW = −(f − μ)ᵀ ∂L/∂z / B``, ``Δc = −Σ ∂L/∂z / B``, written back onto the bias
    row as ``Δc − μ·ΔW`` (the logits of ``μ`` move by ``Δc``). Adding one vector to every
    feature then changes nothing the rule learns (tested); the decay term is the same."""
    b = feats.shape[0]
    if not cfg.readout_center:
        return -feats.T @ grad_z / b - cfg.readout_decay * readout
    mu = jnp.mean(feats, axis=0).at[-1].set(0.0)  # the constant-1 column stays as it is
    delta = -(feats - mu).T @ grad_z / b
    delta = delta.at[-1].add(-(mu @ delta))
    return delta - cfg.readout_decay * readout


def positive_distribution(targets: Array, labels: Array | None, cfg: FFConfig) -> Array:
    """What the positive class is drawn from: the target ``(B, C)`` sharpened to
    ``q ** positive_power`` (renormalised), mixed with ``onehot(labels)`` at weight
    ``hard_weight`` when labels are given. ``(B, C)``; one-hot targets are returned unchanged."""
    mix = targets
    if cfg.positive_power != 1.0:  # log 0 = −inf stays −inf: one-hot targets are unchanged
        mix = jax.nn.softmax(cfg.positive_power * jnp.log(targets), axis=-1)
    if labels is not None and cfg.hard_weight > 0:
        mix = ((1.0 - cfg.hard_weight) * mix
               + cfg.hard_weight * jax.nn.one_hot(labels, cfg.n_classes))
    return mix


def positive_classes(key: Array, targets: Array, labels: Array | None, cfg: FFConfig) -> Array:
    """The class written into the positive pass, drawn from ``positive_distribution``.
    ``(B,)`` int32."""
    return jax.random.categorical(key, jnp.log(positive_distribution(targets, labels, cfg)),
                                  axis=-1)


def train_step(state: FFState, x: Array, targets: Array, key: Array, cfg: FFConfig,
               steps_per_epoch: int, bench: Bench = BENCH, labels: Array | None = None
               ) -> tuple[FFState, dict[str, Array]]:
    """One minibatch: neutral pass (belief), positive and negative passes, local rule, program.

    Args:
        state: one device's learner state.
        x: ``(B, D)`` images in [0, 1].
        targets: ``(B, C)`` target distributions, or ``(B,)`` int hard labels (which behave
            exactly like one-hot distributions).
        key: PRNG key of this step.
        labels: optional ``(B,)`` hard labels mixed with soft targets (weight ``hard_weight``).
    Returns:
        The new state and metrics (scalars): ``ff_loss`` (sum over layers), ``readout_loss``,
        ``readout_acc`` (neutral-pass readout vs the target's argmax), ``g_pos``/``g_neg``
        (mean goodness of the last layer).
    """
    spec = state.device.spec
    k_pos, k_neg, k_m0, k_m1, k_m2, k_prog, k_hyb = jax.random.split(key, 7)
    m0 = bench.measure(state.device, embed_neutral(x, cfg), key=k_m0)
    feats = readout_features(m0, cfg)
    logits = feats @ state.readout
    if targets.ndim == 1:  # hard labels
        labels, targets = None, jax.nn.one_hot(targets, cfg.n_classes)
    mix = positive_distribution(targets, labels, cfg)
    positives = jax.random.categorical(k_pos, jnp.log(mix), axis=-1)
    if cfg.mode == "supervised":
        b = x.shape[0]
        if cfg.goodness_kl_weight > 0 or cfg.negative_belief == "goodness":
            # every candidate label in one measurement (class-major rows c·B + i); the positive
            # and negative passes are its rows
            m_all = bench.measure(state.device, embed_all_classes(x, cfg), key=k_m1)
            belief = logits
            if cfg.negative_belief == "goodness":
                belief = goodness_belief(scores_from_goodness(m_all.outputs, cfg), targets, cfg)
            negatives = sample_negatives(k_neg, positives, belief, cfg, mix)
            rows = jnp.arange(b)
            m_pos = jax.tree.map(lambda a: a[positives * b + rows], m_all)
            m_neg = jax.tree.map(lambda a: a[negatives * b + rows], m_all)
        else:
            negatives = sample_negatives(k_neg, positives, logits, cfg, mix)
            x_pos, x_neg = embed_class(x, positives, cfg), embed_class(x, negatives, cfg)
            # one bench call drives both batches (2B rows): the same physics as two calls, each
            # row with its own read noise, but matrices twice as tall and one set of weight reads
            both = bench.measure(state.device, jnp.concatenate([x_pos, x_neg]), key=k_m1)
            m_pos = jax.tree.map(lambda a: a[:b], both)
            m_neg = jax.tree.map(lambda a: a[b:], both)
    else:
        m_pos = m0  # real images are the positive data; no label lines
        m_neg = bench.measure(state.device, hybrid_images(k_hyb, x, cfg), key=k_m2)
    grads, losses = ff_gradients(m_pos, m_neg, spec, cfg)
    if cfg.mode == "supervised" and cfg.goodness_kl_weight > 0:
        kl_grads = goodness_kl_gradients(m_all, targets, cfg, spec.matmul_dtype)
        if cfg.goodness_kl_start > 0:  # off for the first part of the schedule
            on = state.step >= round(cfg.goodness_kl_start * cfg.ff_epochs * steps_per_epoch)
            kl_grads = tuple(jnp.where(on, g, jnp.zeros_like(g)) for g in kl_grads)
        grads = jax.tree.map(jnp.add, grads, kl_grads)
    requests, opt_state, sent, pending = _requests(state, grads, cfg, steps_per_epoch)
    device = bench.program(state.device, requests, key=k_prog)
    record = jax.tree.map(jnp.add, state.record, sent)
    # readout: delta rule toward the target distribution (digital, in the periphery)
    lr_r = cfg.readout_lr * schedule(cfg, steps_per_epoch)(state.step)
    readout = readout_update(state.readout, feats, logits, targets, labels, lr_r, cfg)
    metrics = {
        "ff_loss": losses.sum(),
        **_readout_metrics(logits, targets),
        "g_pos": jnp.mean(jnp.sum(jnp.square(m_pos.outputs[-1]), -1)),
        "g_neg": jnp.mean(jnp.sum(jnp.square(m_neg.outputs[-1]), -1)),
    }
    new = FFState(device, opt_state, record, pending, readout, state.step + 1)
    return new, metrics


def readout_update(readout: Array, feats: Array, logits: Array, targets: Array,
                   labels: Array | None, lr: float | Array, cfg: FFConfig) -> Array:
    """One delta-rule step of the readout ``(D + 1, C)``: ``readout + lr · readout_delta`` for
    features ``(B, D + 1)``, their logits ``(B, C)`` under ``readout`` and targets ``(B, C)``
    (``labels``: optional ``(B,)`` hard labels mixed in, see ``readout_gradient``)."""
    grad_z = readout_gradient(logits, targets, labels, cfg)
    return readout + lr * readout_delta(feats, grad_z, readout, cfg)


def _readout_metrics(logits: Array, targets: Array) -> dict[str, Array]:
    return {"readout_loss": -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits), axis=-1)),
            "readout_acc": jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))}


def refit_config(cfg: FFConfig) -> FFConfig:
    """The readout rule of the refit: centred, decay ``readout_refit_decay``."""
    return dataclasses.replace(cfg, readout_center=True, readout_decay=cfg.readout_refit_decay)


def in_refit(step: Array, cfg: FFConfig, steps_per_epoch: int) -> Array:
    """Whether minibatch ``step`` (counted from 0) falls in the readout refit (bool scalar)."""
    return step >= cfg.ff_epochs * steps_per_epoch


def refit_step(state: FFState, x: Array, targets: Array, key: Array, cfg: FFConfig,
               steps_per_epoch: int, bench: Bench = BENCH, labels: Array | None = None
               ) -> tuple[FFState, dict[str, Array]]:
    """One minibatch of the readout refit (``readout_refit_epochs``): a neutral-label read, one
    step of the centred delta rule at ``readout_refit_lr`` (``refit_config``); the readout
    starts from zero at the refit's first step. The device is measured, never programmed; the
    optimiser state, record and pending requests are carried unchanged. Arguments and metrics
    as ``train_step``'s (``ff_loss``, ``g_pos`` and ``g_neg``: NaN, there is no FF pass)."""
    m0 = bench.measure(state.device, embed_neutral(x, cfg), key=key)
    feats = readout_features(m0, cfg)
    first = state.step == cfg.ff_epochs * steps_per_epoch
    readout = jnp.where(first, jnp.zeros_like(state.readout), state.readout)
    logits = feats @ readout
    if targets.ndim == 1:  # hard labels
        labels, targets = None, jax.nn.one_hot(targets, cfg.n_classes)
    readout = readout_update(readout, feats, logits, targets, labels, cfg.readout_refit_lr,
                             refit_config(cfg))
    read = _readout_metrics(logits, targets)
    nan = jnp.nan * read["readout_loss"]  # derived from the data: varies over a shard_map axis
    metrics = {"ff_loss": nan, **read, "g_pos": nan, "g_neg": nan}
    return dataclasses.replace(state, readout=readout, step=state.step + 1), metrics


# ---------------------------------------------------------------------------------------------
# epochs (one compiled program) and populations
# ---------------------------------------------------------------------------------------------


def steps_per_epoch(n_examples: int, cfg: FFConfig) -> int:
    return n_examples // cfg.batch_size


Phase = Literal["auto", "ff", "refit"]


def train_epoch(state: FFState, x: Array, targets: Array, key: Array, order_key: Array,
                cfg: FFConfig, bench: Bench = BENCH, phase: Phase = "auto"
                ) -> tuple[FFState, dict[str, Array]]:
    """One epoch for one device: ``lax.scan`` over shuffled minibatches (the last partial batch is
    dropped). ``targets``: ``(N, C)`` distributions or ``(N,)`` int labels. ``order_key`` draws
    the data order (give every device the same one for a shared order). Returns the state and
    per-epoch mean metrics.

    ``phase``: ``ff`` (``train_step``) or ``refit`` (``refit_step``, see
    ``readout_refit_epochs``); ``auto`` picks by the state's step counter (a ``lax.cond``, which
    under ``vmap`` runs both branches: populations choose once for all, ``by_phase``)."""
    n = x.shape[0]
    spe = steps_per_epoch(n, cfg)
    if spe == 0:
        raise ValueError(f"train_epoch: {n} examples make no minibatch of {cfg.batch_size}; "
                         "lower batch_size or add data")
    if phase == "auto":
        return by_phase(state.step, cfg, n, lambda p: train_epoch(state, x, targets, key,
                                                                  order_key, cfg, bench, p))
    order = jax.random.permutation(order_key, n)[: spe * cfg.batch_size]
    order = order.reshape(spe, cfg.batch_size)
    step_fn = refit_step if phase == "refit" else train_step

    def body(st: FFState, inp: tuple[Array, Array]) -> tuple[FFState, dict[str, Array]]:
        idx, k = inp
        return step_fn(st, x[idx], targets[idx], k, cfg, spe, bench)

    state, metrics = jax.lax.scan(body, state, (order, jax.random.split(key, spe)))
    return state, jax.tree.map(jnp.mean, metrics)


def by_phase(step: Array, cfg: FFConfig, n_examples: int, epoch: Callable[[Phase], Any]) -> Any:
    """``epoch(phase)`` for the phase that minibatch ``step`` falls in (``ff`` or ``refit``):
    one ``lax.cond``, so that only one branch runs. ``step``: a scalar, or the step counters
    ``(P,)`` of a population, which steps together (the first decides). Without a refit
    (``readout_refit_epochs = 0``) just ``epoch("ff")``."""
    if cfg.readout_refit_epochs == 0:
        return epoch("ff")
    first = jnp.reshape(step, (-1,))[0]
    return jax.lax.cond(in_refit(first, cfg, steps_per_epoch(n_examples, cfg)),
                        lambda: epoch("refit"), lambda: epoch("ff"))


def _population_epoch(states: FFState, x: Array, targets: Array, keys: Array, order_keys: Array,
                      cfg: FFConfig, bench: Bench) -> tuple[FFState, dict[str, Array]]:
    return by_phase(states.step, cfg, x.shape[0], lambda phase: jax.vmap(
        lambda s, k, o: train_epoch(s, x, targets, k, o, cfg, bench, phase))(
            states, keys, order_keys))


population_epoch = jax.jit(_population_epoch, static_argnames=("cfg", "bench"))
population_epoch.__doc__ = """One epoch of a whole population as one compiled program.

states: stacked ``FFState`` (leading axis P); x ``(N, D)`` and targets ``(N, C)`` shared; keys and
order_keys ``(P,)`` (pass one key repeated P times as order_keys for a shared data order)."""


def epoch_keys(key: Array, epoch: int, n_devices: int, cfg: FFConfig) -> tuple[Array, Array]:
    """Per-device step keys and order keys for ``epoch`` (shared order when ``cfg`` says so)."""
    k = jax.random.fold_in(key, epoch)
    step_keys = jax.random.split(jax.random.fold_in(k, 0), n_devices)
    if cfg.shared_order:
        order = jnp.broadcast_to(jax.random.fold_in(k, 1), (n_devices,))
        return step_keys, order
    return step_keys, jax.random.split(jax.random.fold_in(k, 1), n_devices)


def in_chunks(fn: Callable[..., Any], args: tuple[Any, ...], chunk: int) -> Any:
    """``fn`` (written for one device) applied to every device of ``args`` (pytrees with a
    leading population axis of size n): ``lax.map`` over groups of ``chunk`` devices, ``vmap``
    within a group. ``chunk`` ≤ 0 or ≥ n: one ``vmap`` over all. A device's arithmetic depends
    only on the group size, not on n, so splitting a population over accelerators gives the same
    bits whenever every accelerator holds a multiple of ``chunk`` devices (``chunk = 1``: always).
    """
    n = jax.tree.leaves(args)[0].shape[0]
    if chunk <= 0 or chunk >= n:
        return jax.vmap(fn)(*args)
    if n % chunk:
        raise ValueError(f"{n} devices do not split into groups of {chunk}")
    grouped = jax.tree.map(lambda a: a.reshape(n // chunk, chunk, *a.shape[1:]), args)
    out = jax.lax.map(lambda a: jax.vmap(fn)(*a), grouped)
    return jax.tree.map(lambda a: a.reshape(n, *a.shape[2:]), out)


def init_population(population: devices.Device, cfg: FFConfig, steps: int) -> FFState:
    """``init`` vmapped over a population."""
    return jax.vmap(lambda d: init(d, cfg, steps))(population)


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


def _chunks(x: Array, size: int) -> tuple[Array, int]:
    n = x.shape[0]
    n_chunks = -(-n // size)
    pad = n_chunks * size - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    return xp.reshape(n_chunks, size, *x.shape[1:]), n


def evaluate(state: FFState, x: Array, y: Array, key: Array, cfg: FFConfig, chunk: int,
             bench: Bench = BENCH) -> dict[str, Array]:
    """Error rates of ONE device on ``(x, y)`` (measured in chunks of ``chunk`` images):
    ``goodness_error`` / ``goodness_pred`` (argmax of accumulated goodness over every label; the
    readout in unsupervised mode) and ``softmax_error`` / ``softmax_pred`` (one-pass readout)."""
    xs, n = _chunks(x, chunk)
    keys = jax.random.split(key, xs.shape[0])

    def one(inp: tuple[Array, Array]) -> tuple[Array, Array]:
        xc, k = inp
        k1, k2 = jax.random.split(k)
        logits = readout_logits(state, xc, cfg, k1, bench)
        scores = (goodness_scores(state.device, xc, cfg, k2, bench) if cfg.mode == "supervised"
                  else logits)
        return jnp.argmax(scores, -1), jnp.argmax(logits, -1)

    pred_g, pred_r = jax.lax.map(one, (xs, keys))
    pred_g, pred_r = pred_g.reshape(-1)[:n], pred_r.reshape(-1)[:n]
    return {"goodness_error": jnp.mean(pred_g != y), "softmax_error": jnp.mean(pred_r != y),
            "goodness_pred": pred_g, "softmax_pred": pred_r}


evaluate_population = jax.jit(
    jax.vmap(evaluate, in_axes=(0, None, None, 0, None, None, None)),
    static_argnames=("cfg", "chunk", "bench"))
evaluate_population.__doc__ = """Error rates of every device of a population on ``(x, y)``:
goodness readout (argmax of accumulated goodness over all labels; the readout for unsupervised
mode) and one-pass softmax readout. Returns arrays with a leading population axis."""
