"""Importing the benchmark scripts (``scripts/``, not a package) in tests."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def import_script(name: str) -> ModuleType:
    """The module ``scripts/<name>.py`` (its own imports of sibling scripts resolve while it
    loads; ``scripts/`` leaves ``sys.path`` afterwards)."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPTS))
