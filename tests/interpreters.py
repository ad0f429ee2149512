"""Other Python interpreters the tests need: GIMP 2.10 runs its plug-ins on Python 2.7, and the installer
must run on Python 3.9 (macOS's python3)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _first_working(candidates: list, what: str, variable: str) -> str:
    for candidate in candidates:
        if candidate and subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    pytest.fail(f"No {what} found: set {variable}=/path/to/it")


def _pyenv(pattern: str) -> list[Path]:
    return sorted((Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions").glob(pattern))


@functools.cache
def python27() -> str:
    """GIMP 2.10's Python: $NST_PYTHON2, python2.7 on PATH, or a pyenv 2.7 build."""
    candidates = [os.environ.get("NST_PYTHON2"), shutil.which("python2.7"), *_pyenv("2.7*/bin/python2.7")]
    return _first_working(candidates, "Python 2.7 to check the GIMP 2.10 side", "NST_PYTHON2")


@functools.cache
def python39() -> str:
    """The oldest Python the installer runs on: $NST_PYTHON39, python3.9 on PATH, or a pyenv 3.9 build."""
    candidates = [os.environ.get("NST_PYTHON39"), shutil.which("python3.9"), *_pyenv("3.9*/bin/python3.9")]
    return _first_working(candidates, "Python 3.9 to run the installer on", "NST_PYTHON39")
