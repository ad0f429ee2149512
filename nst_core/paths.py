"""Where the engine keeps per-user files (weights, the installer's venv) and where torch caches weights.

Standard library only and Python 3.9 compatible: `install.py` imports this module from the
checkout before any virtual environment exists.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

APP_NAME = "gimp-neural-style"
DATA_DIR_ENV = "NST_DATA_DIR"
SPEED_FILE = "speed.json"  # in the data folder: the device speeds `calibrate` measured (speed.py)


def _home(env: Mapping[str, str]) -> Path:
    # HOME first so tests (and users) can move it; expanduser covers Windows' USERPROFILE.
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def data_dir(system: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The per-user data folder; `system` is a `sys.platform` value, injectable for tests."""
    env = os.environ if env is None else env
    override = env.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    system = sys.platform if system is None else system
    if system.startswith("win"):
        local = env.get("LOCALAPPDATA")
        base = Path(local) if local else _home(env) / "AppData" / "Local"
    elif system == "darwin":
        base = _home(env) / "Library" / "Application Support"
    else:
        xdg = env.get("XDG_DATA_HOME")
        # The XDG spec says a relative value is invalid and must be ignored.
        base = Path(xdg) if xdg and os.path.isabs(xdg) else _home(env) / ".local" / "share"
    return base / APP_NAME


def weights_dir(system: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    return data_dir(system, env) / "weights"


def venv_dir(system: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where `install.py` creates the engine's virtual environment."""
    return data_dir(system, env) / "venv"


def torch_hub_checkpoints(env: Mapping[str, str] | None = None) -> Path:
    """torch.hub's download folder, resolved as torch does (TORCH_HOME, then XDG_CACHE_HOME)."""
    env = os.environ if env is None else env
    torch_home = env.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        cache = env.get("XDG_CACHE_HOME")
        base = (Path(cache) if cache else _home(env) / ".cache") / "torch"
    return base / "hub" / "checkpoints"
