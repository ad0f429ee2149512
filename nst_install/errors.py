"""The installer's exit codes (the table in docs/install.md) and its one error type.

Parses on Python 2.7 and every Python 3: install.py imports it before its version check.
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_OLD_PYTHON = 3
EXIT_DISK_SPACE = 4
EXIT_ENGINE = 5
EXIT_WEIGHTS = 6
EXIT_GIMP_NOT_WRITABLE = 7
EXIT_NO_GIMP = 8
EXIT_SELF_TEST = 9
EXIT_CANCELLED = 130


class InstallError(Exception):
    """A problem the user can fix: the message names it and the fix; `code` is the exit status."""

    def __init__(self, code, message):
        Exception.__init__(self, message)
        self.code = code
