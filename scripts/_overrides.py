"""``--set KEY=VALUE`` learner-config overrides shared by the benchmark scripts."""

from __future__ import annotations

import argparse
from typing import Any

from mortal import config


def parse_overrides(items: list[str], parser: argparse.ArgumentParser,
                    reserved: dict[str, str] | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` learner-config overrides, read and checked exactly like the command line's
    ``--set train.KEY=VALUE`` (TOML values, typed against ``ff.FFConfig``, one-line errors via
    ``parser.error``). ``reserved`` maps keys the script sets itself to the flag that sets them.
    Returns only the keys that were given, with their typed values."""
    keys, sets = [], []
    for item in items:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals:
            parser.error(f"--set {item!r}: write --set KEY=VALUE, e.g. --set label_strength=2.0")
        if reserved and key in reserved:
            parser.error(f"--set {key}: this script sets {key} itself; use {reserved[key]}")
        keys.append(key)
        sets.append(f"train.{key}={value}")
    try:
        resolved = config.load_config(sets=sets).train
    except config.ConfigError as exc:
        parser.error(str(exc))
    return {key: getattr(resolved, key) for key in keys}
