"""How every script in ``scripts/`` starts: the XLA:CPU settings of ``mortal.xla_cpu``, then its
``main``, with what the user got wrong (a missing or corrupt data file) said in one line and
exit status 1, not a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mortal.data import DataError
from mortal.xla_cpu import tune


def run_script(main: Callable[[], int | None]) -> None:
    """Call ``main`` (after ``mortal.xla_cpu.tune()``, before any JAX computation) and exit
    with its status; a ``DataError`` becomes ``<script>: <message>`` on stderr and status 1."""
    tune()
    try:
        code = main()
    except DataError as exc:
        sys.exit(f"{Path(sys.argv[0]).name}: {exc}")
    sys.exit(code)
