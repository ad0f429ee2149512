"""GUI GIMP snippet (run by gui_inside.sh for make_screenshots.sh): the photo WORK/photo.png opened in a
window, Neural Style run on it with "On Cancel: keep the picture so far" and the arguments in
WORK/plan.json ("harness": this folder, "args", "every": seconds between grabs), GIMP's window grabbed
to WORK/forming-NN.png every "every" seconds while it paints and to WORK/forming-end.png after it.
WORK/result.json: the call's status and the seconds of each grab."""

import json
import os
import sys
import threading
import time

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp, Gio  # noqa: E402

WORK = sys.argv[1]
with open(os.path.join(WORK, "plan.json")) as handle:
    PLAN = json.load(handle)
sys.path.insert(0, PLAN["harness"])
import batch_neural_style as harness  # noqa: E402
from gui_hands import ask  # noqa: E402


def grab_while(running, started, grabs):
    while not running.wait(PLAN["every"]):
        name = f"forming-{len(grabs):02d}"
        ask(WORK, f"grab {name}")
        grabs.append([name, round(time.monotonic() - started, 1)])


def main():
    procedure = Gimp.get_pdb().lookup_procedure(harness.PROC_NAME)
    photo = Gio.File.new_for_path(os.path.join(WORK, "photo.png"))
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, photo)
    Gimp.Display.new(image)
    image.set_selected_layers(image.get_layers())
    time.sleep(2)  # the window drawn before the first grab
    started, grabs, ended = time.monotonic(), [], threading.Event()
    grabber = threading.Thread(target=grab_while, args=(ended, started, grabs))
    grabber.start()
    args = PLAN["args"] | {"keep-on-cancel": True}
    status, error, _ = harness.call_plugin(procedure, image, args)
    seconds = round(time.monotonic() - started, 1)
    ended.set()
    grabber.join()
    Gimp.displays_flush()
    time.sleep(1)
    ask(WORK, "grab forming-end")
    with open(os.path.join(WORK, "result.json"), "w") as handle:
        json.dump({"status": status, "error": error, "seconds": seconds, "grabs": grabs}, handle)


main()
