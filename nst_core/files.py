"""The files the engine writes: atomically, with the mode a user expects, and never over an input unasked.

Standard library only and Python 3.9+: weights.py writes through it, and install.py imports that
module from the checkout before the engine's environment exists.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

PENDING: set[Path] = set()  # temporary files a hard exit must remove (see remove_pending)


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
