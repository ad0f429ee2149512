"""`python -m nst_core.bench`: one iteration against the machine's floor (iteration.py)."""

import sys

from .iteration import main

sys.exit(main())
