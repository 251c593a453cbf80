"""Run the test suite against the oldest versions that ``pyproject.toml`` allows.

    python scripts/oldest_versions.py [--venv DIR] [--out RESULT.json] [-- PYTEST ARGS]

Reads the lower bounds (``>=``) of the project's dependencies and of its ``test`` extra, makes a
fresh virtual environment (``--venv``; default: a temporary one, removed afterwards), installs
the project there with every direct dependency pinned to its lower bound (a pip constraints
file: what those packages need in turn is left to pip), prints the versions it got, and runs
the README's test command (``ruff check .``, then ``python -m pytest``) from the repository root
with that environment. Exit status: 0 when both pass, else 1 (pytest's own status is printed
and written), or 2 with one line when the environment cannot be built (for instance, a lower
bound that pip cannot install beside the others: then that bound is wrong).

Why: a range in ``pyproject.toml`` is a claim that every version in it works. The newest
versions are what the README's test command installs; this checks the other end. Session 47
found that the bounds it had then (jax 0.6, numpy 1.26, h5py 3.10, ruff 0.6, import-linter 2.0)
did not hold:

* jax 0.6.0: a program loaded from JAX's compilation cache rounded differently from the same
  program compiled afresh (``test_a_stopped_ff_benchmark_resumes_to_the_same_bits``);
* jax 0.6.0 to 0.10.0: the bias line of a 3-cell synapse was not the read weights' last row to
  the bit;
* jax 0.10.1: loading a cached program printed error lines about CPU features on stderr, so an
  error was no longer one line (``test_full_disk_keeps_completed_epochs``);
* h5py 3.10 does not import beside numpy 2, which jax 0.10 requires;
* import-linter 2.0 missed one of two broken contracts; ruff before 0.13 flags 7 lines.

Needs the package index (the registry) once per run, and about as long as the test suite.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)$")


def lower_bounds(pyproject: dict, extras: tuple[str, ...] = ("test",)) -> dict[str, str]:
    """``{name: version}`` of every ``>=`` bound among the project's dependencies and the given
    extras. A requirement without one is skipped (nothing to pin); ``==`` counts as its own
    lower bound."""
    project = pyproject["project"]
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        requirements += project.get("optional-dependencies", {}).get(extra, [])
    bounds = {}
    for requirement in requirements:
        match = _REQUIREMENT.match(requirement.split(";")[0])
        if match is None:
            raise ValueError(f"cannot read the requirement {requirement!r} in pyproject.toml")
        name, _, spec = match.groups()
        for clause in (c.strip() for c in spec.split(",")):
            for op in (">=", "=="):
                if clause.startswith(op):
                    bounds[name.lower()] = clause[len(op):].strip()
    return bounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, help="where to make the environment (default: a "
                        "temporary directory, removed afterwards)")
    parser.add_argument("--out", type=Path, help="write the versions and the outcome as JSON")
    parser.add_argument("pytest_args", nargs="*", help="arguments for pytest (after --)")
    args = parser.parse_args()
    if args.venv is not None and args.venv.exists() and (
            not args.venv.is_dir() or (any(args.venv.iterdir())
                                       and not (args.venv / "pyvenv.cfg").exists())):
        parser.error(f"--venv {args.venv} exists and is not a virtual environment; name a new "
                     "directory (an existing environment there is replaced)")

    bounds = lower_bounds(tomllib.loads((ROOT / "pyproject.toml").read_text()))
    print("lower bounds:", ", ".join(f"{n}=={v}" for n, v in sorted(bounds.items())))
    with tempfile.TemporaryDirectory(prefix="mortal-oldest-") as tmp:
        env_dir = args.venv or Path(tmp) / "venv"
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
        except (OSError, subprocess.CalledProcessError) as exc:
            print(f"oldest_versions: cannot make a virtual environment in {env_dir} ({exc}); "
                  "pass --venv with a writable new directory", file=sys.stderr)
            return 2
        python = str(env_dir / "bin" / "python")
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{n}=={v}\n" for n, v in sorted(bounds.items())))
        pip = [python, "-m", "pip", "--disable-pip-version-check"]
        install = subprocess.run([*pip, "install", "--quiet", "-c", str(constraints), "-e",
                                  f"{ROOT}[test]"], capture_output=True, text=True)
        if install.returncode != 0:
            why = [ln for ln in install.stderr.splitlines() if ln.startswith("ERROR")]
            print(f"oldest_versions: pip cannot install the lower bounds together "
                  f"({why[0] if why else 'see pip'}); raise the bound it names in "
                  "pyproject.toml", file=sys.stderr)
            return 2
        listed = subprocess.run([*pip, "list", "--format", "json"], capture_output=True,
                                text=True)
        installed = {p["name"].lower(): p["version"] for p in json.loads(listed.stdout)}
        got = {n: installed.get(n, "?") for n in sorted({*bounds, "jaxlib"})}
        print("installed:", ", ".join(f"{n} {v}" for n, v in got.items()))
        lint = subprocess.run([python, "-m", "ruff", "check", "."], cwd=ROOT)
        tests = subprocess.run([python, "-m", "pytest", *args.pytest_args], cwd=ROOT)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        part = args.out.with_name(args.out.name + ".part")
        part.write_text(json.dumps({"lower_bounds": bounds, "installed": got,
                                    "ruff_exit_status": lint.returncode,
                                    "pytest_exit_status": tests.returncode}, indent=1) + "\n")
        part.replace(args.out)
    print(f"oldest versions: ruff exit status {lint.returncode}, pytest exit status "
          f"{tests.returncode}")
    return 0 if lint.returncode == tests.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
