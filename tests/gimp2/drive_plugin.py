"""Runs the GIMP 2.10 plug-in on a stand-in image, in this process or as a script.

The tests import its helpers; as a script (`python drive_plugin.py SPEC.json`) it runs the
plug-in in a process of its own, under Python 3 or 2.7, so tests can kill that process
like GIMP's Cancel does, or check the plug-in on a real Python 2.7. Python 2.7 and 3.
"""

# ruff: noqa: UP010, UP015, UP020, UP025, UP031, UP036
# (Python 2.7 runs this file too: __future__ imports, io.open, % formatting, version checks.)
from __future__ import absolute_import, division, print_function, unicode_literals

import base64
import io
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PLUGIN = os.path.join(REPO, "plug-ins", "neural_style_gimp2", "neural_style_gimp2.py")
BRIDGE_DIR = os.path.join(REPO, "plug-ins", "neural_style")


def pattern(width, height, bpp):
    """Smooth gradients with a block of varying alpha: content and alpha are easy to tell apart."""
    data = bytearray()
    for y in range(height):
        for x in range(width):
            values = [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x * y) % 256]
            alpha = 255 if x < width // 2 else 60 + (x + 3 * y) % 190
            if bpp in (1, 2):
                values = [(values[0] + values[1]) // 2]
            data.extend(values[:3] if bpp in (3, 4) else values)
            if bpp in (2, 4):
                data.append(alpha)
    return bytes(data)


def load_plugin(path=PLUGIN, name="neural_style_gimp2"):
    """Imports the plug-in file as a fresh module (registering it with the stand-in gimpfu)."""
    if sys.version_info[0] == 2:
        import imp

        return imp.load_source(name, path)
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def new_image(gimpfu, width, height, layer_type, offsets=(0, 0), name="Photo"):
    """A stand-in image holding one layer filled with `pattern`, as GIMP would hand it over."""
    base = gimpfu.GRAY if layer_type in (gimpfu.GRAY_IMAGE, gimpfu.GRAYA_IMAGE) else gimpfu.RGB
    image = gimpfu.gimp.Image(width + 2 * offsets[0], height + 2 * offsets[1], base)
    layer = gimpfu.gimp.Layer(image, name, width, height, layer_type, 100.0, gimpfu.LAYER_MODE_NORMAL)
    layer.fill_pixels(pattern(width, height, layer.bpp))
    gimpfu.pdb.gimp_image_insert_layer(image, layer, None, 0)
    layer.set_offsets(offsets[0], offsets[1])
    gimpfu.reset()
    return image, layer


# The procedure's arguments after image and drawable, in PARAMS order, and the tests' values for
# them (iterations as GTK's spinners hand them over, a float; device 2 = CPU). A script may pass no
# layer (None) for a layer param; the dialog always hands one over (gimpfu.dialog_values).
ARGUMENT_DEFAULTS = [("style_from", 0), ("painting", 0), ("style", ""), ("style_layer", None),
                     ("style2_from", 0), ("style2_painting", 0), ("style2", ""), ("style2_layer", None),
                     ("blend", 0.5), ("region", 0),
                     ("preset", 0), ("strength", 1.0), ("keep_colors", 0), ("style_scale", 1.0),
                     ("size", 0), ("iterations", 2.0), ("seed", 0), ("device", 2),
                     ("frames", False), ("keep_on_cancel", False)]  # fmt: skip


def plugin_args(style, **values):
    """The procedure's arguments after image and drawable: the style file `style`, then `values` or
    the defaults."""
    values["style"] = style
    return [values.get(name, default) for name, default in ARGUMENT_DEFAULTS]


def _report_progress_to(marker):
    """Makes the stand-in's progress bar also leave `marker`, so a test sees the engine working."""
    import gimpfu

    original = gimpfu.Gimp.progress_update

    def progress_update(self, percentage):
        original(self, percentage)
        with io.open(marker, "a", encoding="utf-8") as handle:
            handle.write("%s\n" % percentage)

    gimpfu.Gimp.progress_update = progress_update


def _record_masks(bridge):
    """The region masks the plug-in hands the engine, base64 encoded, in a list filled as it runs."""
    masks, original = [], bridge.EngineRun.run

    def run(engine_run, styles, options, on_progress, masks_given=None, on_snapshot=None):
        for mask in masks_given or []:
            masks.append(base64.b64encode(bytes(mask.data)).decode("ascii"))
        return original(engine_run, styles, options, on_progress, masks_given, on_snapshot)

    bridge.EngineRun.run = run
    return masks


def _layer_report(layer):
    return {
        "name": layer.name,
        "width": layer.width,
        "height": layer.height,
        "type": layer.type,
        "offsets": list(layer.offsets),
        "mask": layer.mask is not None,
        "pixels": base64.b64encode(bytes(layer.pixels)).decode("ascii"),
    }


def run_script(spec):
    """Runs the plug-in as GIMP would and writes what happened to spec["report"]."""
    sys.path[:0] = [HERE, BRIDGE_DIR]
    import gimpfu

    if spec.get("marker"):
        _report_progress_to(spec["marker"])
    plugin = load_plugin(spec.get("plugin", PLUGIN))
    masks = _record_masks(plugin.nst_bridge)
    image, layer = new_image(
        gimpfu, spec["width"], spec["height"], spec["layer_type"], tuple(spec.get("offsets", (0, 0)))
    )
    values = {"iterations": spec["iterations"], "region": spec.get("region", 0)}
    if spec.get("selection"):
        gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, *spec["selection"])
    if spec.get("style_layer"):  # [width, height, type]: a layer of another image, filled with `pattern`
        width, height, layer_type = spec["style_layer"]
        other = gimpfu.gimp.Image(width, height)
        style = gimpfu.gimp.Layer(other, "Pattern", width, height, layer_type)
        style.fill_pixels(pattern(width, height, style.bpp))
        gimpfu.pdb.gimp_image_insert_layer(other, style, None, 0)
        values.update(style2_from=1, style2_layer=style)
    plugin.neural_style(image, layer, *plugin_args(spec["style"], **values))
    report = {
        "messages": gimpfu.messages,
        "masks": masks,
        "layers": [_layer_report(item) for item in image.layers],
        "open_undo_groups": image.open_undo_groups,
        "python": list(sys.version_info[:2]),
    }
    with io.open(spec["report"], "w", encoding="utf-8") as handle:
        handle.write("%s" % json.dumps(report))


if __name__ == "__main__":
    with io.open(sys.argv[1], "r", encoding="utf-8") as source:
        run_script(json.load(source))
