"""The code revision a benchmark row was measured with, for its JSON record."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_revision(root: Path) -> str:
    """``git rev-parse HEAD`` of ``root``, with ``+uncommitted`` when tracked files other than
    ``scripts/results`` and Markdown documents differ from that commit (the code that ran is
    then not that revision);
    ``"unknown"`` when git is missing or ``root`` is not a checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        rev = git("rev-parse", "HEAD")
        if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!scripts/results",
               ":!*.md"):
            rev += "+uncommitted"
    except (OSError, subprocess.CalledProcessError):
        rev = "unknown"
    return rev
