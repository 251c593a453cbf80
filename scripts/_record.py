"""What a diagnostic script stores beside its result: where it came from, written whole or not
at all."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from _revision import git_revision


def provenance(root: Path, started: float) -> dict[str, Any]:
    """``git_revision`` of ``root``, ``elapsed_s`` since ``started`` (``time.perf_counter``) and
    the ``command`` line that ran."""
    return {"git_revision": git_revision(root),
            "elapsed_s": round(time.perf_counter() - started, 1),
            "command": " ".join([sys.executable, *sys.argv])}


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as JSON at ``path`` (folders made): written to ``<path>.part`` first and
    renamed, so a crash never leaves a partial file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)
