#!/usr/bin/env python3
"""Install GIMP Neural Style: the engine's Python environment, the VGG19 weights, the GIMP plug-ins.

    python3 install.py               # everything, for every GIMP profile found
    python3 install.py --dry-run     # print the plan, change nothing
    python3 install.py --uninstall   # remove exactly what earlier runs installed

Running it again upgrades in place and leaves alone whatever is already right. Standard library
only; the installer itself is the package nst_install/ beside this file (docs/install.md).
"""

# This file, and nst_install/errors.py which it imports, parse on Python 2.7 and every Python 3, so
# that an old interpreter reaches the version check and says so in one line; the rest is 3.9+.
# ruff: noqa: UP010, UP032 (the spellings Python 2.7 needs)
from __future__ import print_function

import os
import sys

sys.dont_write_bytecode = True  # an old Python's .pyc files would be left in the checkout
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nst_install.errors import EXIT_OLD_PYTHON  # noqa: E402

MIN_PYTHON = (3, 9)
PYTHON_VERSION_ENV = "NST_INSTALL_PYTHON_VERSION"  # pose as another Python version (tests)


def running_python_version(environ):
    # type: (dict) -> tuple
    fake = environ.get(PYTHON_VERSION_ENV)
    if fake:
        return tuple(int(part) for part in fake.split(".")[:2])
    return tuple(sys.version_info[:2])


def refuse_old_python():
    # type: () -> None
    version = running_python_version(os.environ)
    if version < MIN_PYTHON:
        sys.stderr.write(
            "error: install.py needs Python {}.{} or newer and this is Python {}.{} ({}): install "
            "Python 3.10 or newer (python.org or your package manager) and run it with that one, "
            "e.g. `python3 install.py`.\n".format(
                MIN_PYTHON[0], MIN_PYTHON[1], version[0], version[1], sys.executable
            )
        )
        sys.exit(EXIT_OLD_PYTHON)


if __name__ == "__main__":
    refuse_old_python()
    from nst_install.cli import main

    sys.exit(main())
