"""Batch snippet for the chroot's GIMP 3: run python-fu-neural-style on the cases of a plan.

    tests/gimp/run_in_gimp.sh ... tests/gimp/batch_neural_style.py PLAN.json

PLAN.json: {"out": folder, "config_path": the installed nst_config.json beside the plug-in,
"cases": [{"name", "canvas": [w, h], "layers": [{"png", "name", "offsets"}] (bottom first),
"select": [[x, y, w, h], "rect" | "ellipse"] or absent, "feather": a radius to feather it by,
"selection_to_channel": save the selection as a channel and select none (the channel is then the
argument value "@channel"), "style_images": {"@name": {"png", "convert", "name"}} images opened beside the
case's (their layer is the argument value "@name"), "convert": "gray" | precision name,
"args": {argument: value}, "engine_config": a config to use for this case only,
"kill_plugin": true to SIGKILL the plug-in, as GIMP's Cancel does, once its engine child runs (for
"kill_after" seconds, 0.5 unless given), or
"service" to do it once the warm engine service runs its job, "repeat_after_deleting": a file
to delete after a first successful call with "args" on another image, before the case's own
call, which is then Filters > Repeat's, WITH_LAST_VALS (see repeat_with_last_values)}]}.

The manifest (OUT/manifest.json) records GIMP's version and, for each case, the call's status
and error message, the layers before and after (top first), and raw pixel dumps of every layer
after the call, which pytest checks on the host, the call's seconds and the pid of the warm engine
service then; whether the image is dirty (it is made clean before the call), how many images GIMP
has before and after, the image the call returned (Layers are animation frames), described as the
image is, and a repeat's first call (status, error).
Any unexpected exception makes GIMP exit non-zero.
"""

import json
import os
import shutil
import signal
import sys
import threading
import time
import urllib.request

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROC_NAME = "python-fu-neural-style"
NONINTERACTIVE = Gimp.RunMode.NONINTERACTIVE


def registration(procedure):
    preset = next(p for p in procedure.get_arguments() if p.name == "preset")
    return {
        "menu_label": procedure.get_menu_label(),
        "menu_paths": list(procedure.get_menu_paths()),
        "image_types": procedure.get_image_types(),
        "arguments": [p.name for p in procedure.get_arguments()],
        "return_values": [p.name for p in procedure.get_return_values()],
        "presets": list(Gimp.param_spec_choice_get_choice(preset).list_nicks()),
    }


def build_image(case):
    image = Gimp.Image.new(case["canvas"][0], case["canvas"][1], Gimp.ImageBaseType.RGB)
    for spec in case["layers"]:
        layer = Gimp.file_load_layer(NONINTERACTIVE, image, Gio.File.new_for_path(spec["png"]))
        layer.set_name(spec["name"])
        image.insert_layer(layer, None, 0)
        layer.set_offsets(*spec["offsets"])
    if case.get("convert") == "gray":
        image.convert_grayscale()
    elif case.get("convert"):
        image.convert_precision(getattr(Gimp.Precision, case["convert"]))
    if case.get("select"):
        (x, y, w, h), shape = case["select"]
        select = image.select_rectangle if shape == "rect" else image.select_ellipse
        select(Gimp.ChannelOps.REPLACE, x, y, w, h)
        if case.get("feather"):
            Gimp.Selection.feather(image, case["feather"])
    return image


def case_objects(case, image):
    """The items the case's arguments name ("@channel", "@style"...): {name: item}, and the images
    opened for them (deleted after the call)."""
    objects, opened = {}, []
    if case.get("selection_to_channel"):
        objects["@channel"] = Gimp.Selection.save(image)
        Gimp.Selection.none(image)
    for name, spec in case.get("style_images", {}).items():
        other = Gimp.file_load(NONINTERACTIVE, Gio.File.new_for_path(spec["png"]))
        if spec.get("convert"):
            other.convert_precision(getattr(Gimp.Precision, spec["convert"]))
        objects[name] = other.get_layers()[0]
        objects[name].set_name(spec.get("name", "Background"))
        opened.append(other)
    return objects, opened


def dump_layer(layer, path):
    """Raw u8 pixels (Y'A or R'G'B'A) of the whole layer, plus float ones for deep images."""
    model = "Y'A" if layer.is_gray() else "R'G'B'A"
    rect = Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height())
    buffer = layer.get_buffer()
    with open(path, "wb") as handle:
        handle.write(buffer.get(rect, 1.0, model + " u8", Gegl.AbyssPolicy.NONE))
    with open(path + ".float", "wb") as handle:
        handle.write(buffer.get(rect, 1.0, model + " float", Gegl.AbyssPolicy.NONE))


def describe_layers(image, out, tag):
    layers = []
    for index, layer in enumerate(image.get_layers()):
        _, x, y = layer.get_offsets()
        raw = os.path.join(out, f"{tag}-{index}.raw")
        dump_layer(layer, raw)
        layers.append(
            {
                "name": layer.get_name(),
                "offsets": [x, y],
                "raw": raw,
                "size": [layer.get_width(), layer.get_height()],
                "gray": layer.is_gray(),
                "has_alpha": layer.has_alpha(),
                "channels": 2 if layer.is_gray() else 4,
            }
        )
    return layers


def call_plugin(procedure, image, args, run_mode=NONINTERACTIVE, objects=None):
    config = procedure.create_config()
    config.set_property("run-mode", run_mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", image.get_selected_layers())
    for name, value in args.items():
        if isinstance(value, str) and value.startswith("@"):
            value = objects[value]
        elif name.endswith("-file"):
            value = Gio.File.new_for_path(value)
        config.set_property(name, value)
    values = procedure.run(config)
    status = values.index(0)
    error = Gimp.get_pdb().get_last_error() if status != Gimp.PDBStatusType.SUCCESS else None
    returned = values.index(1) if status == Gimp.PDBStatusType.SUCCESS and values.length() > 1 else None
    return status.value_nick, error, returned


def engine_processes():
    """{pid: (parent pid, working folder)} of running `-m nst_core run-job` (or `batch`) processes."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            if (b"run-job" in argv or b"batch" in argv) and b"nst_core" in argv and fields[0] != "Z":
                found[int(pid)] = (int(fields[1]), os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
    return found


def first_engine(end):
    """(pid, plug-in pid, folder) of the first engine child to run before the monotonic time `end`, or
    None."""
    while time.monotonic() < end and not engine_processes():
        time.sleep(0.05)
    engines = engine_processes()
    if not engines:
        return None
    pid, (plugin, folder) = next(iter(engines.items()))
    return pid, plugin, folder


def kill_plugin_when_engine_runs(report, after=0.5):
    """Watcher thread: SIGKILL the plug-in `after` seconds under a live engine, then see whether the
    engine dies."""
    end = time.monotonic() + 120
    engine = first_engine(end)
    if engine is None:
        return
    time.sleep(after)
    pid, plugin, folder = engine
    report.update(engine_pid=pid, folder=folder)
    os.kill(plugin, signal.SIGKILL)
    while time.monotonic() < end and pid in engine_processes():
        time.sleep(0.05)
    report["engine_died"] = pid not in engine_processes()


def pause_engine_after_its_first_frame(report):
    """Watcher thread: once the engine child has written its first frame (and said so), stop it, so that
    no later frame can finish, give the plug-in a moment to show that frame, then SIGKILL the plug-in."""
    end = time.monotonic() + 120
    engine = first_engine(end)
    if engine is None:
        return
    pid, plugin, folder = engine
    first = os.path.join(folder, "styled", "frame-0000.tif")
    while time.monotonic() < end and not os.path.exists(first):
        time.sleep(0.02)
    time.sleep(0.1)  # its done event follows the file at once
    os.kill(pid, signal.SIGSTOP)
    time.sleep(2)
    report.update(engine_pid=pid, folder=folder, first_frame=os.path.exists(first))
    os.kill(plugin, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


def marks_since(event, started):
    """The times (monotonic) the plug-in marked `event` in NST_TIMING_LOG since `started`."""
    path = os.environ.get("NST_TIMING_LOG")
    if not path or not os.path.exists(path):
        return []
    with open(path) as handle:
        marks = [float(line.split()[-1]) for line in handle if line.startswith(event + " ")]
    return [mark for mark in marks if mark >= started]


def kill_plugin_when_a_frame_is_shown(report, started, plan):
    """Watcher thread: SIGKILL the plug-in as soon as it has shown its first frame in the new image
    (from the warm service: the frames after it must not appear), then wait until the service has let
    the killed plug-in's job go, so that the next case does not meet it still running."""
    end = time.monotonic() + 120
    while time.monotonic() < end and not marks_since("frame shown", started):
        time.sleep(0.02)
    plugins = plugin_processes()
    if not plugins or not marks_since("frame shown", started):
        return
    os.kill(plugins[0], signal.SIGKILL)
    report.update(plugin_pid=plugins[0], frame_shown=True)
    report["service_freed"] = service_freed(plan, end)


def first_live_layer(started):
    """Seconds from the call to the plug-in's first live layer of this case, when NST_TIMING_LOG asks."""
    marks = marks_since("first live layer", started)
    return marks[0] - started if marks else None


def service_state(plan):
    """(state, token) of the warm engine service the installed config's plug-ins use, or (None, None)."""
    with open(plan["config_path"]) as handle:
        folder = os.path.join(json.load(handle).get("data_dir", ""), "service")
    try:
        with (
            open(os.path.join(folder, "service.json")) as handle,
            open(os.path.join(folder, "token")) as token,
        ):
            return json.load(handle), token.read().strip()
    except (OSError, ValueError):
        return None, None


def service_health(plan):
    state, token = service_state(plan)
    if state is None:
        return {}
    request = urllib.request.Request(
        state["url"] + "/v1/health", headers={"Authorization": "Bearer " + token}
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.load(response)
    except (OSError, ValueError):
        return {}


def service_freed(plan, end):
    """Whether the service holds no job (any more) by the monotonic time `end`."""
    while time.monotonic() < end and service_health(plan).get("jobs", 1) != 0:
        time.sleep(0.05)
    return service_health(plan).get("jobs") == 0


def plugin_processes():
    """Pids of running neural_style.py plug-ins."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if any(arg.endswith(b"/neural_style.py") for arg in argv):
            found.append(int(pid))
    return found


def kill_plugin_when_service_runs(report, plan):
    """Watcher thread: SIGKILL the plug-in while the service runs its job, then see the job freed."""
    end = time.monotonic() + 120
    # Both: a job left running by an earlier case must not stand for this plug-in's.
    while time.monotonic() < end and not (plugin_processes() and service_health(plan).get("running")):
        time.sleep(0.05)
    plugins = plugin_processes()
    if not plugins:
        return
    time.sleep(0.5)
    report["plugin_pid"] = plugins[0]
    os.kill(plugins[0], signal.SIGKILL)
    report["service_freed"] = service_freed(plan, end)


def repeat_with_last_values(procedure, case):
    """Filters > Repeat after the style file of the last run was moved away: one successful call with
    the case's arguments (on an image of its own), then the file deleted. Repeat calls the procedure
    WITH_LAST_VALS, and libgimp puts the values it stored after the last interactive run in place
    of the arguments. It stores none for a NONINTERACTIVE run, so in this headless GIMP there are
    none, and libgimp keeps the arguments passed: the case's call passes the first call's again, to
    stand for them. The first call's status and error, for the manifest."""
    first = build_image(case)
    first.set_selected_layers(first.get_layers())
    status, error, _ = call_plugin(procedure, first, case["args"])
    first.delete()
    os.remove(case["repeat_after_deleting"])
    return status, error


def run_case(procedure, case, plan):
    first = repeat_with_last_values(procedure, case) if "repeat_after_deleting" in case else None
    image = build_image(case)
    objects, opened = case_objects(case, image)
    image.set_selected_layers(image.get_layers())  # after the channel, which saving selects
    image.clean_all()
    before = [layer.get_name() for layer in image.get_layers()]
    images_before = len(Gimp.get_images())
    ids_before = {other.get_id() for other in Gimp.get_images()}
    saved = plan["config_path"] + ".saved"
    if "engine_config" in case:
        shutil.copyfile(plan["config_path"], saved)
        with open(plan["config_path"], "w") as handle:
            json.dump(case["engine_config"], handle)
    killed = {}
    if case.get("kill_plugin") == "service":
        watcher = threading.Thread(target=kill_plugin_when_service_runs, args=(killed, plan), daemon=True)
        watcher.start()
    elif case.get("kill_plugin") == "first_frame":
        watcher = threading.Thread(target=pause_engine_after_its_first_frame, args=(killed,), daemon=True)
        watcher.start()
    elif case.get("kill_plugin") == "frame_shown":
        shown_after = time.monotonic()
        watcher = threading.Thread(target=kill_plugin_when_a_frame_is_shown, args=(killed, shown_after, plan))
        watcher.daemon = True
        watcher.start()
    elif case.get("kill_plugin"):
        after = case.get("kill_after", 0.5)
        watcher = threading.Thread(target=kill_plugin_when_engine_runs, args=(killed, after), daemon=True)
        watcher.start()
    started = time.monotonic()
    try:
        if first:
            status, error, returned = call_plugin(procedure, image, case["args"], Gimp.RunMode.WITH_LAST_VALS)
        else:
            status, error, returned = call_plugin(procedure, image, case["args"], objects=objects)
        seconds = time.monotonic() - started
        if case.get("kill_plugin"):
            watcher.join(130)
    finally:
        if "engine_config" in case:
            shutil.move(saved, plan["config_path"])
    result = {
        "status": status,
        "error": error,
        "before": before,
        "layers": describe_layers(image, plan["out"], case["name"]),
        "image": {
            "precision": image.get_precision().value_nick,
            "size": [image.get_width(), image.get_height()],
        },
        "killed": killed,
        "seconds": seconds,
        "service_pid": (service_state(plan)[0] or {}).get("pid"),
        "dirty": image.is_dirty(),
        "images": [images_before, len(Gimp.get_images())],
        "returned": None,
        "first": first,
        "kept": None,
        "first_live_layer": first_live_layer(started),
    }
    if case.get("kill_plugin") in ("first_frame", "frame_shown"):  # what the killed plug-in left
        for kept in [other for other in Gimp.get_images() if other.get_id() not in ids_before]:
            result["kept"] = {
                "layers": describe_layers(kept, plan["out"], case["name"] + "-kept"),
                "undo_enabled": kept.undo_is_enabled(),
            }
            kept.delete()
    if returned is not None:
        result["returned"] = {
            "layers": describe_layers(returned, plan["out"], case["name"] + "-returned"),
            "size": [returned.get_width(), returned.get_height()],
            "precision": returned.get_precision().value_nick,
            "undo_enabled": returned.undo_is_enabled(),
        }
        returned.delete()
    image.delete()
    for other in opened:
        other.delete()
    return result


def main():
    with open(sys.argv[1]) as handle:
        plan = json.load(handle)
    procedure = Gimp.get_pdb().lookup_procedure(PROC_NAME)
    manifest = {"gimp_version": Gimp.version(), "registered": procedure is not None, "cases": {}}
    if procedure is not None:
        manifest["registration"] = registration(procedure)
        for case in plan["cases"]:
            manifest["cases"][case["name"]] = run_case(procedure, case, plan)
        # A killed plug-in cannot clean up; the next run sweeps its folder (there is one after it).
        manifest["left_behind"] = [
            c["killed"]["folder"]
            for c in manifest["cases"].values()
            if c["killed"].get("folder") and os.path.exists(c["killed"]["folder"])
        ]
    with open(os.path.join(plan["out"], "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)


if __name__ == "__main__":
    main()
