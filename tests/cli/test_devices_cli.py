"""``mortal devices``: presets, population tables, transfer-curve plots, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mortal.cli import main


def test_lists_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("ideal", "rram", "pcm", "ecram", "harsh"):
        assert name in out


def test_shows_a_preset_with_d2d_and_c2c_marked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--preset", "rram"]) == 0
    out = capsys.readouterr().out
    assert "write_noise" in out and "56.0" in out
    assert any(line.split()[:1] == ["step_noise"] and line.endswith("c2c")
               for line in out.splitlines())
    assert any(line.split()[:1] == ["dw_min_sigma"] and line.endswith("d2d")
               for line in out.splitlines())


def test_population_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "curves.png"
    assert main(["devices", "--preset", "harsh", "-n", "3", "--widths", "16", "8", "4",
                 "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    table = out.split("population of 3")[1].splitlines()
    assert sum(1 for line in table if line.strip()[:1].isdigit()) == 3
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000
    assert not list(tmp_path.glob("*.part"))
    # an existing output is not overwritten without --force
    assert main(["devices", "--preset", "harsh", "-n", "2", "--widths", "16", "8",
                 "--plot", str(png)]) == 2
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "needle"), [
    (["devices", "--preset", "nope"], "unknown device preset 'nope'"),
    (["devices", "--preset", "ideal", "--widths", "5", "0"], "widths[1]"),
    (["devices", "--preset", "ideal", "-n", "0"], "-n must be a positive"),
    (["devices", "--preset", "ideal", "-n", "2", "--layer", "7"], "--layer must be in"),
    (["devices", "--preset", "ideal", "--plot", "/no/such/dir/x.png"], "does not exist"),
    (["devices", "-n", "x"], "invalid int value"),
    (["bogus"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(argv: list[str], needle: str,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_entry_point_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "mortal", "devices", "--preset", "nope"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("mortal: error:") and "Traceback" not in result.stderr
