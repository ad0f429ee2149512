"""`python -m nst_core`: the command line (see nst_core/cli.py)."""

import os
import sys

from .cli import main

code = main()
try:
    sys.stdout.flush()
    sys.stderr.flush()
except OSError:
    pass  # the reader is gone; the exit code still tells
# Skip the interpreter's teardown: with torch loaded it can take seconds, and a cancelled job must
# free the GPU and exit promptly. Every output is already written and flushed.
os._exit(code)
