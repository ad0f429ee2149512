"""GUI GIMP snippet (run by gui_inside.sh): a user's OK and a user's Cancel with "On Cancel: keep the
picture so far", each followed by one Ctrl+Z on the image's window. WORK/plan.json holds "harness" (this
folder), "config_path", "canvas", "layers" and "args" as a case of batch_neural_style.py, and
"painter_config" (the stand-in engine that paints until killed). WORK/result.json gets, for each of
"ok" and "kept": the layer names and pixel digests before the call, after it and after the undo."""

import hashlib
import json
import os
import shutil
import sys
import threading

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp  # noqa: E402

WORK = sys.argv[1]
with open(os.path.join(WORK, "plan.json")) as handle:
    PLAN = json.load(handle)
sys.path.insert(0, PLAN["harness"])
import batch_neural_style as harness  # noqa: E402
from gui_hands import ask  # noqa: E402


def state(image):
    """[name, digest of the pixels] of each layer, top first."""
    layers = []
    for layer in image.get_layers():
        rect = Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height())
        raw = layer.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.NONE)
        layers.append([layer.get_name(), hashlib.sha256(bytes(raw)).hexdigest()])
    return layers


def user_run(procedure, case, kill_after=None):
    image = harness.build_image(case)
    Gimp.Display.new(image)
    image.set_selected_layers(image.get_layers())
    image.clean_all()
    before = state(image)
    killed = {}
    if kill_after is not None:  # GIMP's Cancel: the plug-in killed
        watcher = threading.Thread(target=harness.kill_plugin_when_engine_runs, args=(killed, kill_after))
        watcher.start()
    status, error, _ = harness.call_plugin(procedure, image, case["args"])
    if kill_after is not None:
        watcher.join(130)
    after = state(image)
    ask(WORK, "undo")
    undone = state(image)
    image.delete()
    return {"status": status, "error": error, "killed": killed, "before": before, "after": after,
            "undone": undone}  # fmt: skip


def main():
    procedure = Gimp.get_pdb().lookup_procedure(harness.PROC_NAME)
    case = {"canvas": PLAN["canvas"], "layers": PLAN["layers"], "args": PLAN["args"]}
    result = {"ok": user_run(procedure, case)}
    saved = PLAN["config_path"] + ".saved"
    shutil.copyfile(PLAN["config_path"], saved)
    try:
        with open(PLAN["config_path"], "w") as handle:
            json.dump(PLAN["painter_config"], handle)
        kept = case | {"args": case["args"] | {"keep-on-cancel": True}}
        result["kept"] = user_run(procedure, kept, kill_after=2.0)
    finally:
        shutil.move(saved, PLAN["config_path"])
    with open(os.path.join(WORK, "result.json"), "w") as handle:
        json.dump(result, handle, indent=1)


main()
