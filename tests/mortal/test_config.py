"""Run configuration: TOML ↔ frozen dataclasses, --set overrides, did-you-mean errors."""

from __future__ import annotations

import pytest

from mortal.config import ConfigError, RunConfig, load_config, parse_set, to_toml


def test_defaults_round_trip_through_toml() -> None:
    cfg = load_config()
    assert cfg == RunConfig()
    assert load_config(text=to_toml(cfg)) == cfg


def test_file_then_set_then_seed(tmp_path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[train]\nlr = 0.5\nepochs = 7\n[device]\npreset = "pcm"\n'
                 "[device.spec]\nsynapse.write_noise = 0.0\n")
    cfg = load_config(f, ["train.lr=0.25", "device.widths=[74, 8, 8]"], seed=9)
    assert (cfg.train.lr, cfg.train.epochs, cfg.device.preset) == (0.25, 7, "pcm")
    assert cfg.device.widths == (74, 8, 8) and cfg.run.seed == 9
    # recipe overrides add to the defaults' (read.gain = 0.5) instead of replacing them
    assert dict(cfg.device.spec) == {"read.gain": 0.5, "synapse.write_noise": 0.0}
    again = load_config(text=to_toml(cfg))
    assert again == cfg


def test_set_values_are_read_as_toml_or_plain_strings() -> None:
    assert parse_set("train.lr=1e-3") == ("train.lr", 1e-3)
    assert parse_set("run.phases=[\"train\"]") == ("run.phases", ["train"])
    assert parse_set("device.preset=pcm") == ("device.preset", "pcm")
    assert parse_set("train.shared_order=true") == ("train.shared_order", True)


@pytest.mark.parametrize(("sets", "message"), [
    (["train.lrr=1"], "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
    (["trian.lr=1"], "unknown section 'trian' (did you mean 'train'?)"),
    (["train.lr=abc"], "train.lr must be a number, got 'abc'"),
    (["train.epochs=2.5"], "train.epochs must be an integer"),
    (["train.negatives=hardd"], "did you mean 'hard'?"),
    (["device.spec.read.gian=1"], "unknown recipe field 'read.gian' (did you mean 'read.gain'?)"),
    (["device.spec.raed.gain=1"], "unknown recipe part 'raed' (did you mean 'read'?)"),
    (["device.widths=[5]"], "device.widths needs at least 2"),
    (["run.phases=[\"distill\", \"train\"]"], "run.phases must be in the order"),
    (["train.epochs=0"], "epochs must be >= 1"),
    (["distill.transfer=fractoin"], "did you mean 'fraction'?"),
    (["distill.positive_temperature=0"], "distill.positive_temperature must be a positive"),
    (["distill.teacher_reads=0"], "distill.teacher_reads must be an integer >= 1"),
    (["distill.goodness_kl_weight=-0.1"], "distill.goodness_kl_weight must be a number >= 0"),
    (["distill.goodness_kl_start=1"], "distill.goodness_kl_start must lie in"),
    (["distill.goodness_kl_start=0.5", "distill.goodness_kl_weight=0"],
     "distill.goodness_kl_start has no effect"),
    (["distill.negatives=excesss"], "did you mean 'excess'?"),
    (["distill.bias_images=0"], "distill.bias_images must be an integer >= 1"),
    (["distill.bias_correction=1"], "distill.bias_correction must be"),
    (["train"], "write --set section.key=value"),
    (["train.lr.x=1"], "train.lr is not a table"),
    (["train.lr=nan"], "train.lr must be a number, got nan"),
])
def test_bad_keys_and_values_name_the_key(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(sets=sets)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_files(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    top = tmp_path / "top.toml"
    top.write_text("lr = 1\n")
    with pytest.raises(ConfigError, match="must be a \\[section\\]"):
        load_config(top)


def test_distill_section_reaches_the_learner() -> None:
    from mortal import cli_jobs

    cfg = load_config(None, ["distill.teacher_reads=3", "distill.positive_temperature=0.5",
                             "distill.temperature=8", "distill.hard_weight=0.25"])
    d = cli_jobs.distill_config(cfg)
    assert (d.teacher_reads, d.positive_temperature, d.temperature, d.hard_weight) == (
        3, 0.5, 8.0, 0.25)
    # the demo's students match every label's goodness (κ = 0.15) and the learner's negatives
    assert (d.goodness_kl_weight, d.negatives, d.negative_belief) == (0.15, None, None)
    assert d.goodness_kl_temperature == "fit"
    assert d.goodness_kl_start == 0.0
    d = cli_jobs.distill_config(load_config(None, ["distill.goodness_kl_weight=0",
                                                   "distill.negatives=excess",
                                                   "distill.negative_belief=goodness",
                                                   "distill.goodness_kl_temperature=targets"]))
    assert (d.goodness_kl_weight, d.negatives, d.negative_belief) == (0.0, "excess",
                                                                      "goodness")
    assert d.goodness_kl_temperature == "targets"
    d = cli_jobs.distill_config(load_config(None, ["distill.goodness_kl_start=0.5"]))
    assert (d.goodness_kl_weight, d.goodness_kl_start) == (0.15, 0.5)
    with pytest.raises(ConfigError, match=r"distill\.teacher_reads must be an integer"):
        load_config(None, ["distill.teacher_reads=1.5"])
