"""The architecture's import rules (DESIGN.md), checked by import-linter's contracts in
pyproject.toml, and a check that the contracts themselves are not toothless."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports not found: install the test extra (pip install -e '.[test]')")
    return subprocess.run([exe, "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)},
                          timeout=120)


def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.split("Contracts:")[-1].split("kept")[0]


def test_a_learner_importing_device_internals_breaks_the_contract(tmp_path: Path) -> None:
    for package in ("devices", "mortal", "distill"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "mortal" / "sneaky.py").write_text("from devices._device import LayerPhysics\n")
    (tmp_path / "devices" / "leaky.py").write_text("import mortal\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "mortal.sneaky -> devices._device" in result.stdout
    assert "devices.leaky -> mortal" in result.stdout
