"""Where the engine keeps per-user files (weights, the installer's venv), where torch caches weights, and
how the engine writes files: atomically, with the mode a user expects, and never over an input unasked.

Standard library only and Python 3.9 compatible: `install.py` imports this module (and weights.py,
which writes through it) from the checkout before any virtual environment exists.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

APP_NAME = "gimp-neural-style"
DATA_DIR_ENV = "NST_DATA_DIR"
SPEED_FILE = "speed.json"  # in the data folder: the device speeds `calibrate` measured (speed.py)
PENDING: set[Path] = set()  # temporary files a hard exit must remove (see remove_pending)


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


# -- writing files ---------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A new empty file beside `path` for the caller to write; when the block ends without an error it
    replaces `path` in one rename, otherwise it is removed: a reader never sees half a file.

    It takes the mode `path` has when it replaces it, else the one the umask gives any new file (0644
    under 022); `tempfile.mkstemp`'s 0600 would hide a result from other users and change the mode of
    a shared file it replaced.
    """
    path = Path(path)
    temporary = _new_file_beside(path)
    PENDING.add(temporary)
    try:
        yield temporary
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    finally:
        PENDING.discard(temporary)
        with contextlib.suppress(OSError):
            temporary.unlink()


def _new_file_beside(path: Path) -> Path:
    """`.NAME.RANDOM.tmp` in `path`'s folder (the name a sweep of leftovers looks for), made with O_EXCL
    and mode 0666, which the kernel narrows by the umask as it does for any new file."""
    for _ in range(100):
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return temporary
    raise FileExistsError(f"no free temporary name beside {path}")


def remove_pending() -> None:
    """Remove the temporary files of writes still under way: a process about to end hard calls this."""
    for temporary in list(PENDING):
        with contextlib.suppress(OSError):
            temporary.unlink()


def file_id(path: Path) -> tuple[int, int] | None:
    """What tells an existing file apart however it is named (a relative path, a symbolic or hard link):
    its device and inode; None when there is no file."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one existing file (a missing path names none)."""
    key = file_id(first)
    return key is not None and key == file_id(second)
