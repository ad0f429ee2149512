"""The machine the installer runs on: its platform, home, free disk space, and the programs it starts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from .checkout import nst_common
from .errors import EXIT_USAGE, InstallError

PLATFORMS = {"linux": "linux", "windows": "win32", "macos": "darwin"}  # ours -> sys.platform
GB = 1000**3

# Environment knobs for tests and unusual machines (documented in docs/install.md).
PLATFORM_ENV = "NST_INSTALL_PLATFORM"  # linux | windows | macos
MACHINE_ENV = "NST_INSTALL_MACHINE"  # a CPU name as platform.machine() gives it, e.g. arm64
FREE_BYTES_ENV = "NST_INSTALL_FREE_BYTES"  # pretend this much disk space is free
WEIGHTS_URL_ENV = "NST_WEIGHTS_URL"  # a mirror of the official VGG19 file


def say(text: str = "") -> None:
    print(text, flush=True)


def quoted(command: Sequence[object]) -> str:
    parts = [str(part) for part in command]
    return subprocess.list2cmdline(parts) if os.name == "nt" else " ".join(shlex.quote(p) for p in parts)


def gigabytes(count: float) -> str:
    return f"{count / GB:.1f} GB"


def detect_platform(environ: Mapping[str, str]) -> str:
    forced = environ.get(PLATFORM_ENV)
    if forced:
        if forced not in PLATFORMS:
            raise InstallError(
                EXIT_USAGE, f"{PLATFORM_ENV}={forced} is unknown: use one of {', '.join(PLATFORMS)}."
            )
        return forced
    if sys.platform.startswith("win"):
        return "windows"
    return "macos" if sys.platform == "darwin" else "linux"


def home_dir(environ: Mapping[str, str]) -> Path:
    home = environ.get("HOME") or environ.get("USERPROFILE")
    return Path(home) if home else Path.home()


def free_bytes(folder: Path, environ: Mapping[str, str]) -> int:
    """Free space on the disk that holds `folder` (or the nearest folder above it that exists)."""
    while not folder.exists():
        folder = folder.parent
    forced = environ.get(FREE_BYTES_ENV)
    return int(forced) if forced else shutil.disk_usage(str(folder)).free


def run_quiet(
    command: Sequence[object], timeout: float = 300, extra_env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a helper program from a neutral folder (so a checkout in the cwd is not imported), in the
    environment the plug-ins give the engine (nst_common.child_environment) plus `extra_env`."""
    return subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env=nst_common.child_environment(dict(extra_env or {})),
        timeout=timeout,
    )


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
