"""Other Python interpreters the tests need: GIMP 2.10 runs its plug-ins on Python 2.7."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

import pytest


@functools.cache
def python27() -> str:
    """GIMP 2.10's Python: $NST_PYTHON2, python2.7 on PATH, or a pyenv 2.7 build."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [os.environ.get("NST_PYTHON2"), shutil.which("python2.7"), *pyenv.glob("2.7*/bin/python2.7")]
    for candidate in candidates:
        if candidate and subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    pytest.fail("No Python 2.7 found to check the GIMP 2.10 side: set NST_PYTHON2=/path/to/python2.7")
