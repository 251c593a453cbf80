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
    for item in items:
        key = item.partition("=")[0].strip()
        if "=" not in item:
            parser.error(f"--set {item!r}: write --set KEY=VALUE, e.g. --set label_strength=2.0")
        if reserved and key in reserved:
            parser.error(f"--set {key}: this script sets {key} itself; use {reserved[key]}")
    try:
        resolved = config.load_config(sets=[f"train.{item}" for item in items]).train
    except config.ConfigError as exc:
        parser.error(str(exc))
    keys = [item.partition("=")[0].strip() for item in items]
    return {key: getattr(resolved, key) for key in keys}
