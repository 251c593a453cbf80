"""Run configuration: TOML files mapped onto frozen dataclasses, ``section.key=value`` overrides.

A run's configuration has five sections::

    [run]      seed, phases, checkpoint_every
    [data]     dataset, data_dir, train_limit, eval_every, eval_limit
    [device]   preset, widths, population, matmul_dtype, and [device.spec] overrides of the recipe
    [train]    the learner (every field of ``mortal.ff.FFConfig``)
    [distill]  students, recipe, epochs, teacher, transfer set, temperature ...

The defaults are the demo: the embedded digits, 8 ``rram`` devices (read gain 0.5), trained with
Forward-Forward, then the best one distilled into 8 fresh devices. ``load_config`` reads a TOML
file (stdlib ``tomllib``), applies ``--set`` overrides, checks every key and value and returns a
``RunConfig``; ``to_toml`` writes the resolved configuration back as text (stored in run files).
Unknown keys are errors with a "did you mean" hint.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mortal.ff import FFConfig

PHASES = ("train", "distill")
TRANSFER_SETS = ("train", "fraction", "without", "noise", "hybrid")
# jax.random.key keeps only the low 32 bits of a seed (64-bit integers are off in JAX by
# default): 2**32 would fabricate the same devices as 0 while numpy's transfer-set draws
# differed, and numpy refuses negative seeds. Every seed of the command line lies in [0, 2**32).
SEED_LIMIT = 2**32


class ConfigError(ValueError):
    """A configuration key or value is wrong; the message names it and the fix."""


def seed_problem(value: object) -> str | None:
    """Why ``value`` is not a usable seed (None if it is one): an integer in [0, 2**32)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer, got {value!r}"
    if not 0 <= value < SEED_LIMIT:
        return f"must be an integer in [0, 2**32 - 1 = {SEED_LIMIT - 1}], got {value}"
    return None


@dataclass(frozen=True)
class RunSection:
    """``seed``: every random draw of the run derives from it (fab draws, data order, read and
    write noise); an integer in [0, 2**32) (``SEED_LIMIT``). ``phases``: ``train``
    (Forward-Forward on a fresh population), ``distill`` (students learn a teacher's soft
    targets), in order. ``checkpoint_every``: epochs between device-state checkpoints (a
    resumed run restarts from the last one). ``chunk``: devices stepped together (``vmap``) on
    one accelerator, groups run one after the other; with ``chunk = 1`` results are
    bit-identical for every split of the population over accelerators (larger groups can
    change the last bits between splits under XLA's default optimisation: README, *Many
    accelerators, many hosts*)."""

    seed: int = 0
    phases: tuple[str, ...] = PHASES
    checkpoint_every: int = 1
    chunk: int = 8

    def __post_init__(self) -> None:
        problem = seed_problem(self.seed)
        if problem is not None:
            raise ConfigError(f"run.seed {problem}")
        if not self.phases or any(p not in PHASES for p in self.phases):
            raise ConfigError(f"run.phases must be a non-empty list drawn from {list(PHASES)}, "
                              f"got {list(self.phases)}")
        if list(self.phases) != sorted(self.phases, key=PHASES.index) or len(
                set(self.phases)) != len(self.phases):
            raise ConfigError(f"run.phases must be in the order {list(PHASES)} without repeats")
        if self.checkpoint_every < 1:
            raise ConfigError("run.checkpoint_every must be >= 1")
        if self.chunk < 1:
            raise ConfigError("run.chunk must be >= 1")


@dataclass(frozen=True)
class DataSection:
    """``dataset``: ``digits`` (embedded), ``mnist``, ``fashion-mnist``, or ``npz:PATH`` (arrays
    x_train, y_train, x_val, y_val, x_test, y_test; images flattened, values in [0, 1], of one
    width in every split, none empty; labels class indices 0 .. C − 1; checked when loaded).
    ``data_dir``: folder of the IDX files (empty: ``$MORTAL_DATA`` or ``../shared/data``).
    ``train_limit``: use only the first N training images (0: all). ``eval_every``: epochs
    between validation measurements. ``eval_limit``: validate on the first N images (0: all)."""

    dataset: str = "digits"
    data_dir: str = ""
    train_limit: int = 0
    eval_every: int = 2
    eval_limit: int = 0

    def __post_init__(self) -> None:
        for name in ("train_limit", "eval_limit"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0 (0 means all)")
        if self.eval_every < 1:
            raise ConfigError("data.eval_every must be >= 1")


@dataclass(frozen=True)
class DeviceSection:
    """``preset``: the recipe (``mortal devices`` lists them); ``widths``: layer widths, input
    first (the input must hold the image, plus the label lines when
    ``train.label_placement = "prepend"``); ``population``: devices trained side by side;
    ``spec``: overrides of the recipe as ``part.field`` = value (e.g. ``read.gain = 0.5``),
    applied to every layer of a per-layer recipe. ``matmul_dtype``: the simulator's operand
    precision for every crossbar and request product, of the trained devices and the students
    (``float32``, or ``bfloat16``: what accelerators' matrix units compute fast; accumulation
    stays float32; ``DeviceSpec.matmul_dtype``)."""

    preset: str = "rram"
    widths: tuple[int, ...] = (74, 200, 200, 200)
    population: int = 8
    spec: tuple[tuple[str, Any], ...] = (("read.gain", 0.5),)
    matmul_dtype: Literal["float32", "bfloat16"] = "float32"

    def __post_init__(self) -> None:
        if self.population < 1:
            raise ConfigError("device.population must be >= 1")
        if len(self.widths) < 2 or min(self.widths) < 1:
            raise ConfigError("device.widths needs at least 2 positive widths (input first)")


@dataclass(frozen=True)
class DistillSection:
    """``students``: fresh devices that learn from the teacher; ``preset`` / ``spec``: their
    recipe (empty preset: the same recipe as ``[device]``; the widths are always the device's);
    ``epochs``; ``generations``: a chain: the best student of each generation teaches the next
    generation of fresh students; ``teacher``: ``best`` (lowest validation error of the trained
    population) or a device index; ``teacher_run``: a finished run file to take the teacher from
    (empty: this run's ``train`` phase). ``transfer``: the transfer set: ``train`` (all training
    images, no labels), ``fraction`` (a random ``fraction`` of them), ``without`` (classes
    ``leave_out`` removed), ``noise`` / ``hybrid`` (synthetic, as many as the training set).
    ``temperature`` T of the soft targets the students' readouts match, ``positive_temperature``
    τ at which the students' positive classes are drawn from the teacher's scores, ``source`` of
    the teacher's scores (``goodness`` or ``readout``), ``teacher_reads`` R: reads of the
    teacher averaged per step (its read noise is c2c), ``hard_weight`` λ of hard labels (only
    for the labelled transfer sets ``train`` and ``fraction``). ``goodness_kl_weight`` κ: the
    students also match the teacher's probabilities on their goodness scores over every label
    (C passes per example instead of 2). The default 0.15 is for students of the teacher's own
    recipe: on the demo it took the students' median test error from 8.8 to 6.5 % and their
    agreement from 93.3 to 95.3 % (seed 1: 9.5 → 7.0 %, 93.7 → 95.7 %) for 3 s more; on MNIST,
    from 6.9 to 5.7 %. Set it to 0 for students of another recipe (``preset``): MNIST ``pcm``
    students of an ``rram`` teacher reached 4.5 % with κ = 0, and with 0.15 11.4 % (at T) or
    8.1 % (fitted temperature). It is measured for short runs: MNIST ``rram`` students given
    30 epochs instead of 10 did worse with it (6.5 % against 5.1 % at 10 epochs) and better
    without it (5.2 %); for long runs, set it to 0, or start it late (``goodness_kl_start``).
    ``goodness_kl_temperature``: ``fit`` (the default: the term matches each student's goodness
    softmax at the temperature that brings it closest to the targets on each minibatch, so the
    teacher's goodness scale is not imposed; on the demo the students' mean test error went
    from 6.50 to 6.12 % and their median agreement from 95.3 to 95.5 %, seed 1: 7.04 → 6.71 %,
    95.7 → 96.7 %), ``fit_exact`` (the same fit with the exact gradient of ``κ T² KL`` at it, a
    pull ``T / T_s`` times weaker) or ``targets`` (at T, Hinton et al.'s convention).
    ``goodness_kl_start``: the fraction of the students' schedule before which the term is off
    (0: from the start; 0.5: only while the learning rate decays). MNIST ``rram`` students of 30
    epochs with the term from 0.5 on: 5.0 % and 97.7 % agreement with the teacher, against
    4.9 % and 97.0 % without the term (2 students, goodness-belief negatives); at 10 epochs a
    late start loses the term's gain (6.0 % against 5.4 % from the start).
    ``negatives``: the students' negative classes (``learner``: as ``[train]`` says; ``hard``,
    ``random`` or ``excess``). ``negative_belief``: what the students' ``hard`` and ``excess``
    negatives are drawn from (``learner``: as ``[train]`` says; ``readout`` or ``goodness``, their
    goodness over every label, C passes per example). ``bias_correction``: fit per-class offsets of
    each student's goodness scores (divided by T) on the first ``bias_images`` labelled validation
    images (Hinton et al. 2015: what a class missing from the transfer set costs is mostly such an
    offset; a digital correction, the devices are not touched) and report the corrected test error,
    and with ``transfer = without`` the accuracy on the left-out classes' test images before and
    after."""

    students: int = 8
    preset: str = ""
    spec: tuple[tuple[str, Any], ...] = ()
    epochs: int = 20
    generations: int = 1
    teacher: str = "best"
    teacher_run: str = ""
    transfer: str = "train"
    fraction: float = 0.05
    leave_out: tuple[int, ...] = (3,)
    temperature: float = 20.0
    positive_temperature: float = 1.0
    teacher_reads: int = 1
    source: Literal["goodness", "readout"] = "goodness"
    hard_weight: float = 0.0
    goodness_kl_weight: float = 0.15
    goodness_kl_temperature: Literal["targets", "fit", "fit_exact"] = "fit"
    goodness_kl_start: float = 0.0
    negatives: Literal["learner", "hard", "random", "excess"] = "learner"
    negative_belief: Literal["learner", "readout", "goodness"] = "learner"
    bias_correction: bool = False
    bias_images: int = 1000

    def __post_init__(self) -> None:
        if self.students < 1:
            raise ConfigError("distill.students must be >= 1")
        if self.epochs < 1:
            raise ConfigError("distill.epochs must be >= 1")
        if self.generations < 1:
            raise ConfigError("distill.generations must be >= 1")
        if self.transfer not in TRANSFER_SETS:
            raise ConfigError(f"distill.transfer must be one of {list(TRANSFER_SETS)}, got "
                              f"{self.transfer!r}{_hint(self.transfer, TRANSFER_SETS)}")
        if not 0 < self.fraction <= 1:
            raise ConfigError("distill.fraction must lie in (0, 1]")
        if self.teacher != "best" and not self.teacher.isdigit():
            raise ConfigError(f"distill.teacher must be 'best' or a device index, got "
                              f"{self.teacher!r}")
        if not self.temperature > 0 or not math.isfinite(self.temperature):
            raise ConfigError("distill.temperature must be a positive number")
        if not self.positive_temperature > 0 or not math.isfinite(self.positive_temperature):
            raise ConfigError("distill.positive_temperature must be a positive number")
        if not isinstance(self.teacher_reads, int) or self.teacher_reads < 1:
            raise ConfigError("distill.teacher_reads must be an integer >= 1")
        if not 0 <= self.hard_weight <= 1:
            raise ConfigError("distill.hard_weight must lie in [0, 1]")
        if not self.goodness_kl_weight >= 0 or not math.isfinite(self.goodness_kl_weight):
            raise ConfigError("distill.goodness_kl_weight must be a number >= 0")
        if not 0 <= self.goodness_kl_start < 1:
            raise ConfigError("distill.goodness_kl_start must lie in [0, 1) (a fraction of the "
                              "students' schedule)")
        if self.goodness_kl_start > 0 and self.goodness_kl_weight == 0:
            raise ConfigError("distill.goodness_kl_start has no effect with "
                              "distill.goodness_kl_weight = 0; set one or the other")
        if not isinstance(self.bias_images, int) or self.bias_images < 1:
            raise ConfigError("distill.bias_images must be an integer >= 1")
        if self.negatives not in ("learner", "hard", "random", "excess"):
            raise ConfigError(f"distill.negatives must be 'learner', 'hard', 'random' or "
                              f"'excess', got {self.negatives!r}")


# the demo's learner: the digits recipe measured in scripts/ff_benchmarks.py (digits-rram),
# label lines driven at strength 2 (goodness test error 6.2 % -> 3.2 % there)
TRAIN_DEFAULTS = FFConfig(epochs=30, batch_size=20, lr=0.015, accumulate=8.0,
                          label_placement="prepend", label_strength=2.0)


@dataclass(frozen=True)
class RunConfig:
    """The whole resolved configuration of a run (hashable, static)."""

    run: RunSection = field(default_factory=RunSection)
    data: DataSection = field(default_factory=DataSection)
    device: DeviceSection = field(default_factory=DeviceSection)
    train: FFConfig = TRAIN_DEFAULTS
    distill: DistillSection = field(default_factory=DistillSection)


SECTIONS: dict[str, type] = {"run": RunSection, "data": DataSection, "device": DeviceSection,
                             "train": FFConfig, "distill": DistillSection}
_NESTED = {("device", "spec"), ("distill", "spec")}  # tables of dotted recipe overrides


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------


def _hint(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flatten(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in table.items():
        if isinstance(v, Mapping):
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(where: str, value: Any, tp: Any) -> Any:
    """``value`` (from TOML) as type ``tp``, or a ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        unset = value is None or (isinstance(value, str) and value.lower() in ("none", ""))
        if unset and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(where, value, a)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where} got {value!r}")
    if origin is Literal:
        options = typing.get_args(tp)
        if value not in options:
            raise ConfigError(f"{where} must be one of {list(options)}, got {value!r}"
                              f"{_hint(str(value), map(str, options))}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, e.g. [1, 2], got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(f"{where}[{i}]", v, args[0]) for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(f"{where}[{i}]", v, a) for i, (v, a) in enumerate(zip(
            value, args, strict=True)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        if math.isnan(value):
            raise ConfigError(f"{where} must be a number, got nan")
        return float(value)
    if tp is str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # e.g. --set distill.teacher=2 (a device index)
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise ConfigError(f"{where}: values of type {_type_name(tp)} cannot be configured")


def _build(tables: dict[str, dict[str, Any]]) -> RunConfig:
    sections: dict[str, Any] = {}
    defaults = RunConfig()
    for name, cls in SECTIONS.items():
        given = tables.get(name, {})
        hints = typing.get_type_hints(cls)
        base = getattr(defaults, name)
        kwargs: dict[str, Any] = {}
        for key, value in given.items():
            if (name, key) in _NESTED:
                merged = dict(getattr(base, key))  # overrides add to the defaults' overrides
                merged.update(value)
                kwargs[key] = tuple(sorted(merged.items()))
            else:
                kwargs[key] = _coerce(f"{name}.{key}", value, hints[key])
        try:
            sections[name] = dataclasses.replace(base, **kwargs)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"[{name}] {exc}") from None
    return RunConfig(**sections)


def _merge(tables: dict[str, dict[str, Any]], source: str, flat: list[tuple[str, Any]]) -> None:
    """Put dotted ``section.key`` values into ``tables``, checking every key."""
    for dotted, value in flat:
        parts = dotted.split(".")
        section = parts[0]
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown section {section!r}{_hint(section, SECTIONS)}; "
                              f"sections are {', '.join(SECTIONS)}")
        if len(parts) < 2:
            raise ConfigError(f"{source}: {dotted!r} names a section, not a key; write "
                              f"{section}.KEY=VALUE")
        key = parts[1]
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if key not in names:
            close = _first(key, names)
            hint = f" (did you mean '{section}.{close}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{section}.{key}'{hint}")
        if (section, key) in _NESTED:
            if len(parts) == 2:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{source}: {section}.{key} is a table of recipe "
                                      f"overrides, e.g. {section}.{key}.read.gain=0.5")
                for sub, v in _flatten(value):
                    _check_spec_key(f"{source}: {section}.{key}", sub)
                    tables.setdefault(section, {}).setdefault(key, {})[sub] = v
                continue
            sub = ".".join(parts[2:])
            _check_spec_key(f"{source}: {section}.{key}", sub)
            tables.setdefault(section, {}).setdefault(key, {})[sub] = value
            continue
        if len(parts) > 2:
            raise ConfigError(f"{source}: {section}.{key} is not a table; write "
                              f"{section}.{key}=VALUE")
        tables.setdefault(section, {})[key] = value


def _first(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return close[0] if close else ""


def _spec_fields() -> dict[str, list[str]]:
    import devices

    d = devices.preset("ideal", (2, 2)).to_dict()
    return {part: list(v) for part, v in d.items() if isinstance(v, dict)}


def _check_spec_key(where: str, sub: str) -> None:
    fields = _spec_fields()
    parts = sub.split(".")
    if len(parts) != 2:
        raise ConfigError(f"{where}: recipe overrides are PART.FIELD (parts: "
                          f"{', '.join(fields)}), got {sub!r}")
    part, name = parts
    if part not in fields:
        raise ConfigError(f"{where}: unknown recipe part {part!r}{_hint(part, fields)}; parts "
                          f"are {', '.join(fields)}")
    if name not in fields[part]:
        close = _first(name, fields[part])
        hint = f" (did you mean '{part}.{close}'?)" if close else ""
        raise ConfigError(f"{where}: unknown recipe field '{part}.{name}'{hint}")


def parse_set(item: str) -> tuple[str, Any]:
    """``section.key=value`` → (``section.key``, value). The value is read as TOML (numbers,
    booleans, lists, quoted strings); anything else is taken as a plain string."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: write --set section.key=value")
    key, raw = item.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"--set {item!r}: the key is empty; write --set section.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def read_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a directory; name a TOML file")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None


def load_config(path: str | Path | None = None, sets: Iterable[str] = (),
                seed: int | None = None, text: str | None = None) -> RunConfig:
    """The resolved configuration: defaults ← TOML file (or ``text``) ← ``--set`` items ← seed.

    Raises ``ConfigError`` (one line, naming the key) for unknown keys or bad values.
    """
    tables: dict[str, dict[str, Any]] = {}
    if text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"stored config is not valid TOML: {exc}") from None
        _merge(tables, "config", _sections_flat(data, "config"))
    if path is not None:
        _merge(tables, str(path), _sections_flat(read_toml(path), str(path)))
    for item in sets:
        key, value = parse_set(item)
        _merge(tables, f"--set {key}", [(key, value)])
    if seed is not None:
        tables.setdefault("run", {})["seed"] = seed
    return _build(tables)


def _sections_flat(data: dict[str, Any], source: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: top-level key {section!r} must be a [section]; "
                              f"sections are {', '.join(SECTIONS)}")
        for key, value in table.items():
            if (section, key) in _NESTED and isinstance(value, dict):
                out += [(f"{section}.{key}.{sub}", v) for sub, v in _flatten(value)]
            else:
                out.append((f"{section}.{key}", value))
    return out


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def toml_value(v: Any) -> str:
    """``v`` written as a TOML value (what ``to_toml`` writes, and ``--set`` reads back)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: RunConfig) -> str:
    """The configuration as TOML text (``load_config(text=...)`` reads it back exactly). Fields
    that are unset (None) are written as comments."""
    lines: list[str] = []
    for name in SECTIONS:
        section = getattr(cfg, name)
        lines.append(f"[{name}]")
        nested: list[tuple[str, tuple[tuple[str, Any], ...]]] = []
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if (name, f.name) in _NESTED:
                nested.append((f.name, v))
            elif v is None:
                lines.append(f"# {f.name} = (unset)")
            else:
                lines.append(f"{f.name} = {toml_value(v)}")
        for key, pairs in nested:
            lines.append(f"[{name}.{key}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in pairs]
        lines.append("")
    return "\n".join(lines)


def apply_spec_overrides(spec: Any, overrides: tuple[tuple[str, Any], ...], where: str) -> Any:
    """The recipe with ``part.field = value`` overrides (every layer of a per-layer part)."""
    import devices

    if not overrides:
        return spec
    d = spec.to_dict()
    for dotted, value in overrides:
        part, name = dotted.split(".")
        targets = d[part] if isinstance(d[part], list) else [d[part]]
        for t in targets:
            t[name] = value
    try:
        return devices.DeviceSpec.from_dict(d)
    except (devices.SpecError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def differences(a: RunConfig, b: RunConfig) -> list[str]:
    """``section.key`` names whose values differ between two configurations."""
    out = []
    for name in SECTIONS:
        sa, sb = getattr(a, name), getattr(b, name)
        out += [f"{name}.{f.name}" for f in dataclasses.fields(sa)
                if getattr(sa, f.name) != getattr(sb, f.name)]
    return out
