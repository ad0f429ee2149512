"""Cancelling a run from outside: the end of stdin, the parent's death, SIGTERM (docs/protocol.md).

A cancelled run stops at its next iteration and reports the one `Cancelled.` line; one that does not
stop within a grace is ended hard, its temporary files removed, so a cancelled job never keeps the GPU.
Stop-and-keep comes the same ways: a `stop` line on stdin, or (`keep_on_stop`) the first Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
from collections.abc import Callable
from typing import Any

from .errors import Cancelled
from .events import note
from .paths import remove_pending

STOP_LINE = b"stop"  # on the engine's stdin: stop-and-keep (docs/protocol.md)


class CancelWatcher:
    """A cancel token (`is_set()`) that watches the process's lifeline.

    The plug-in keeps a pipe on our stdin and writes to it only the line `stop` (stop-and-keep, which
    sets `stop`): end of file means it closed the run or died. A changed parent pid catches a parent
    that died while someone else holds the pipe. A run that does not stop within `grace` seconds is
    ended hard, so a cancelled job never keeps the GPU.
    """

    def __init__(
        self, on_abort: Callable[[], None] | None = None, grace: float = 3.0, poll: float = 0.25
    ) -> None:
        self._event = threading.Event()
        self._finished = threading.Event()
        self._on_abort = on_abort
        self._grace = grace
        self._poll = poll
        self._previous_sigterm: Any = None
        self._previous_sigint: Any = None
        self.stop = threading.Event()  # stop-and-keep: the run ends after its iteration and keeps its picture

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        if not self._event.is_set():
            self._event.set()
            threading.Thread(target=self._abort_later, name="nst-abort", daemon=True).start()

    def finish(self) -> None:
        """The run has ended (its last event is out): a late cancel must not kill the process."""
        self._finished.set()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def start(
        self, watch_stdin: bool, watch_parent: bool = True, keep_on_stop: bool = False
    ) -> CancelWatcher:
        """Watch stdin's end and the parent's death where asked (a caller's lifeline), SIGTERM always;
        with `keep_on_stop` the first SIGINT (Ctrl-C) stops and keeps, the second cancels."""
        if watch_stdin:
            threading.Thread(target=self._watch_stdin, name="nst-stdin", daemon=True).start()
        if watch_parent:
            threading.Thread(
                target=self._watch_parent, args=(os.getppid(),), name="nst-parent", daemon=True
            ).start()
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: self.set())
            if keep_on_stop:
                self._previous_sigint = signal.signal(signal.SIGINT, self._interrupted)
        return self

    def _interrupted(self, *_: Any) -> None:
        if self.stop.is_set():
            self.set()
        else:
            self.stop.set()
            note("stopping after this iteration to write the picture so far; press Ctrl-C again to cancel")

    def _watch_stdin(self) -> None:
        fd = sys.stdin.fileno()
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                *lines, pending = (pending + chunk).split(b"\n")
                pending = pending[-len(STOP_LINE) - 2 :]  # a line without an end: only its tail can matter
                if any(line.strip() == STOP_LINE for line in lines):
                    self.stop.set()
        except OSError:
            pass
        self.set()

    def _watch_parent(self, parent: int) -> None:
        while not self._finished.wait(self._poll):
            if os.getppid() != parent:
                self.set()
                return

    def _abort_later(self) -> None:
        if self._finished.wait(self._grace):
            return
        if self._on_abort is not None:
            try:
                self._on_abort()
            except Exception:
                pass  # the reader may be gone: exit regardless
        remove_pending()
        os._exit(int(Cancelled.code))


def stdin_is_pipe() -> bool:
    """Watch stdin only where end of file means something: a pipe or socket, not a TTY or /dev/null."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
