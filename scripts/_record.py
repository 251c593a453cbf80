"""How the scripts in ``scripts/`` store a result: JSON written whole or not at all, and where
it came from."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _revision import git_revision


def provenance(root: Path, started: float) -> dict[str, Any]:
    """``git_revision`` of ``root``, ``elapsed_s`` since ``started`` (``time.perf_counter``) and
    the ``command`` line that ran."""
    return {"git_revision": git_revision(root),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "command": " ".join([sys.executable, *sys.argv])}


def write_json(path: Path, payload: dict[str, Any], indent: int = 2,
               default: Callable[[Any], Any] | None = None) -> None:
    """``payload`` as JSON at ``path`` (folders made; ``indent`` and ``default`` as in
    ``json.dumps``): written to ``<path>.part`` first and renamed, so a crash never leaves a
    partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(payload, indent=indent, default=default))
    os.replace(tmp, path)
