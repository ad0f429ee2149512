"""For the GUI GIMP snippets: ask gui_inside.sh to act on GIMP's window as a user would."""

import os
import time


def ask(work, what):
    """Write WORK/request ("undo", "grab NAME") and wait until gui_inside.sh has done it (it deletes
    the file). Callable from any thread: it makes no PDB call."""
    path = os.path.join(work, "request")
    with open(path + ".tmp", "w") as handle:
        handle.write(what + "\n")
    os.rename(path + ".tmp", path)
    end = time.monotonic() + 30
    while os.path.exists(path) and time.monotonic() < end:
        time.sleep(0.05)
