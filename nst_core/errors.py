"""One-line user errors and their exit codes (the table in docs/protocol.md)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    BAD_IMAGE = 3
    WEIGHTS = 4
    OUTPUT = 5
    OUT_OF_MEMORY = 6
    DEVICE = 7
    CANCELLED = 130
    BROKEN_PIPE = 141  # what a shell reports for a tool that SIGPIPE ended: its reader stopped reading


class NstError(Exception):
    """An error the user can fix: the message names the problem and the fix, on one line."""

    code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        # Messages travel as one JSON field and one GIMP dialog line: never multi-line.
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class UsageError(NstError):
    code = ExitCode.USAGE


class ImageError(NstError):
    code = ExitCode.BAD_IMAGE


class WeightsError(NstError):
    code = ExitCode.WEIGHTS


class OutputError(NstError):
    code = ExitCode.OUTPUT


class OutOfMemoryError(NstError):
    code = ExitCode.OUT_OF_MEMORY


class DeviceError(NstError):
    code = ExitCode.DEVICE


class Cancelled(NstError):
    code = ExitCode.CANCELLED

    def __init__(self, message: str = "Cancelled.") -> None:
        super().__init__(message)


def describe_error(exc: BaseException) -> NstError:
    """Any exception as a one-line NstError (unexpected ones as an internal error to report)."""
    if isinstance(exc, NstError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return Cancelled()
    if isinstance(exc, MemoryError):  # outside the run's own handler: reading or writing the images
        return OutOfMemoryError(
            f"Not enough memory for the images ({exc}): close other programs or use a smaller image."
        )
    return NstError(f"internal error: {type(exc).__name__}: {exc} (please report)")
