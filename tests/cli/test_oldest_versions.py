"""``scripts/oldest_versions.py`` pins every dependency to the lower bound ``pyproject.toml``
states (the environment it builds needs the package index, so it is run by hand, not here), and
refuses to replace a directory that is not a virtual environment."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from ._scripts import ROOT, SCRIPTS, import_script


@pytest.fixture(scope="module")
def oldest() -> ModuleType:
    return import_script("oldest_versions")


def test_lower_bounds_read_ge_and_eq_and_skip_what_has_none(oldest: ModuleType) -> None:
    pyproject = {"project": {
        "dependencies": ["numpy>=2.0,<3", "Jax >= 0.10.1, <0.11", "tqdm",
                         "h5py==3.11.0; python_version >= '3.11'"],
        "optional-dependencies": {"test": ["pytest<10,>=8"], "docs": ["sphinx>=7"]}}}
    assert oldest.lower_bounds(pyproject) == {"numpy": "2.0", "jax": "0.10.1",
                                             "h5py": "3.11.0", "pytest": "8"}
    assert "sphinx" not in oldest.lower_bounds(pyproject)


def test_every_dependency_of_the_project_has_a_lower_bound_to_check(oldest: ModuleType) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    bounds = oldest.lower_bounds(pyproject)
    project = pyproject["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["test"]:
        name = oldest._REQUIREMENT.match(requirement).group(1).lower()
        assert name in bounds, f"{requirement!r} states no lower bound"


def test_a_venv_directory_that_holds_something_else_is_refused_untouched(tmp_path: Path) -> None:
    """``--venv`` replaces an environment there; a directory with other files is refused in one
    line (exit 2) and left as it was."""
    kept = tmp_path / "notes.txt"
    kept.write_text("mine")
    p = subprocess.run([sys.executable, str(SCRIPTS / "oldest_versions.py"), "--venv",
                        str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "is not a virtual environment" in p.stderr.strip().splitlines()[-1]
    assert sorted(tmp_path.iterdir()) == [kept] and kept.read_text() == "mine"
