#!/usr/bin/env python2
# -*- coding: utf-8 -*-
"""Neural Style for GIMP 2.10 (Python-Fu, Python 2.7).

GIMP 2.10's Python cannot load torch, so this file is GIMP glue only: it reads the active
layer's pixels inside the selection, hands them to the engine (its own Python 3) through
nst_bridge.py, the job protocol shared with the GIMP 3 plug-in (docs/protocol.md), and puts
the result on a new layer above the source, in one undo step.

Pixels travel as 8-bit: GIMP 2.10 gives gimpfu pixel regions in its 8-bit compatibility
format whatever the image's precision, and converts them back when they are written.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

from gimpfu import *  # noqa: F401,F403 (gimpfu's register, main, pdb, gimp, PF_* and enums)

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
BRIDGE_FILE = "nst_bridge.py"
# install.py puts nst_bridge.py and nst_config.json beside this file. Should the plug-in
# file lie loose in plug-ins/, they live in a folder named like it, which GIMP does not
# run as a plug-in because it holds no neural_style_gimp2.py.
SUPPORT_DIRS = (PLUGIN_DIR, os.path.join(PLUGIN_DIR, "neural_style_gimp2"))


def _support_dir():
    for folder in SUPPORT_DIRS:
        if os.path.isfile(os.path.join(folder, BRIDGE_FILE)):
            return folder
    return PLUGIN_DIR


SUPPORT_DIR = _support_dir()
sys.path.insert(0, SUPPORT_DIR)
try:
    import nst_bridge
except ImportError:  # a broken install: the menu entry still appears and says so
    nst_bridge = None

PROC_NAME = "python-fu-neural-style"
MISSING_BRIDGE = ("Neural Style is incompletely installed (%s is missing beside %s): run install.py again."
                  % (BRIDGE_FILE, os.path.basename(__file__)))
DEVICE_CHOICES = [("auto", "Automatic (GPU if there is one)"),
                  ("mps", "GPU (Apple)") if sys.platform == "darwin" else ("cuda", "GPU (CUDA / ROCm)"),
                  ("cpu", "CPU")]
KEEP_COLORS_LABELS = {"off": "Off", "luminance": "Keep luminance colours",
                      "histogram": "Match colour histogram"}
STRENGTH_SLIDER_MAX = 10.0  # the engine accepts more, but a wider slider is too coarse to use
# Before install.py has described the engine the dialog still opens (and a run says "not installed").
UNKNOWN_SPEC = {"default": 1, "min": 0, "max": 2 ** 31 - 1}


class PluginError(Exception):
    """A one-line message for the user about something the plug-in itself checks."""

    def __init__(self, message):
        Exception.__init__(self, message)
        self.message = message  # like nst_bridge.EngineError: str() of unicode fails on Python 2


def _load_config():
    if nst_bridge is None:
        return {}
    try:
        return nst_bridge.load_config(SUPPORT_DIR)
    except nst_bridge.EngineError:
        return {}  # registering must not fail: running reports the problem


CONFIG = _load_config()


def _spec(name):
    return nst_bridge.option_spec(CONFIG, name) if nst_bridge else {}


def _number_param(kind, name, label, step, cap=None):
    """A slider or spinner with the engine's default and limits (up to `cap`).

    An option whose engine default is None ("the preset decides") gets 0 for that.
    """
    spec = dict(UNKNOWN_SPEC, **_spec(name))
    low, high, default = spec["min"], spec["max"] if cap is None else min(spec["max"], cap), spec["default"]
    if default is None:
        low, default = 0, 0
    return (kind, name, label, default, (low, high, step))


def _preset_choices():
    if nst_bridge is None:
        return [("", "Default")]
    return nst_bridge.user_presets(CONFIG)


def _keep_colors_choices():
    choices = _spec("keep_colors").get("choices") or ["off"]
    return [(name, KEEP_COLORS_LABELS.get(name, name.capitalize())) for name in choices]


def _default_index(choices, wanted):
    names = [name for name, _label in choices]
    return names.index(wanted) if wanted in names else 0


def _option_param(name, label, choices, wanted):
    return (PF_OPTION, name, label, _default_index(choices, wanted), [text for _name, text in choices])


PRESETS = _preset_choices()
KEEP_COLORS = _keep_colors_choices()
DEFAULT_PRESET = nst_bridge.engine_description(CONFIG).get("default_preset") if nst_bridge else None

PARAMS = [
    (PF_FILE, "style", "Style image", ""),
    (PF_FILE, "style2", "Second style image (optional)", ""),
    (PF_SLIDER, "blend", "Second style share", 0.5, (0.0, 1.0, 0.05)),
    _option_param("preset", "Quality", PRESETS, DEFAULT_PRESET),
    _number_param(PF_SLIDER, "strength", "Style strength", 0.1, STRENGTH_SLIDER_MAX),
    _option_param("keep_colors", "Keep original colours", KEEP_COLORS, _spec("keep_colors").get("default")),
    _number_param(PF_SLIDER, "style_scale", "Style scale", 0.05),
    _number_param(PF_SPINNER, "size", "Working size in pixels (0 = auto)", 32),
    _number_param(PF_SPINNER, "iterations", "Iterations (0 = preset's)", 10),
    _number_param(PF_SPINNER, "seed", "Random seed", 1),
    _option_param("device", "Device", DEVICE_CHOICES, _spec("device").get("default")),
]
PARAM_NAMES = [param[1] for param in PARAMS]


def _choice(choices, index, what):
    index = int(index)
    if not 0 <= index < len(choices):
        raise PluginError("%s choice %d is out of range: use 0 to %d." % (what, index, len(choices) - 1))
    return choices[index][0]


def _styles(values):
    """[(path, weight)]: the second style, when given, takes `blend` of the mix."""
    first, second = values["style"] or "", values["style2"] or ""
    if not first:
        raise PluginError("No style image chosen: pick a style image file in the Neural Style dialog.")
    if not second:
        return [(first, 1.0)]
    blend = min(max(float(values["blend"]), 0.0), 1.0)
    return [(first, 1.0 - blend), (second, blend)]


def _options(values):
    """The engine options (nst_core.options names); 0 leaves size and iterations to the preset."""
    options = {
        "strength": float(values["strength"]),
        "keep_colors": _choice(KEEP_COLORS, values["keep_colors"], "Keep colours"),
        "style_scale": float(values["style_scale"]),
        "seed": int(values["seed"]),
        "device": _choice(DEVICE_CHOICES, values["device"], "Device"),
    }
    preset = _choice(PRESETS, values["preset"], "Quality")
    if preset:
        options["preset"] = preset
    for name in ("size", "iterations"):
        if int(values[name]) > 0:
            options[name] = int(values[name])
    return options


def _selection_bounds(drawable):
    """(x, y, width, height) of the selection inside the layer, in layer coordinates."""
    if not pdb.gimp_item_is_layer(drawable):
        raise PluginError("Neural Style works on layers: select a layer (not a mask or channel) and retry.")
    non_empty, x, y, width, height = pdb.gimp_drawable_mask_intersect(drawable)
    if not non_empty or width < 1 or height < 1:
        raise PluginError("The selection does not touch the active layer: select part of the layer, "
                          "or use Select > None.")
    return x, y, width, height


def _on_progress(fraction, text):
    gimp.progress_update(fraction)
    if text:
        pdb.gimp_progress_set_text(text)
    return True  # gimpfu has no cancel button: GIMP's Cancel kills the plug-in and the bridge its child


def _stylise_pixels(pixels, bounds, bpp, styles, options):
    """The engine's result for `pixels`, in the same layout (8-bit, `bpp` channels)."""
    gimp.progress_init("Neural Style: starting the engine...")
    with nst_bridge.EngineRun(nst_bridge.load_config(SUPPORT_DIR)) as run:
        run.set_content_raw(pixels, bounds[2], bounds[3], "u8", bpp)
        return run.run(styles, options, _on_progress)


def _layer_name(drawable, style_path):
    stem = os.path.splitext(os.path.basename(style_path))[0]
    return "%s (Neural Style: %s)" % (drawable.name, stem)


def _add_result_layer(image, drawable, pixels, bounds, name):
    """A new layer with `pixels` above `drawable`, at the selection's place, masked to it."""
    x, y, width, height = bounds
    layer = pdb.gimp_layer_new(image, width, height, drawable.type, name, 100.0, LAYER_MODE_NORMAL)
    region = layer.get_pixel_rgn(0, 0, width, height, True, False)
    region[0:width, 0:height] = pixels
    layer.flush()
    offset_x, offset_y = drawable.offsets
    layer.set_offsets(offset_x + x, offset_y + y)
    position = pdb.gimp_image_get_item_position(image, drawable)
    pdb.gimp_image_insert_layer(image, layer, pdb.gimp_item_get_parent(drawable), position)
    try:
        if not pdb.gimp_selection_is_empty(image):
            pdb.gimp_layer_add_mask(layer, pdb.gimp_layer_create_mask(layer, ADD_MASK_SELECTION))
        layer.update(0, 0, width, height)
    except Exception:
        pdb.gimp_image_remove_layer(image, layer)
        raise
    return layer


def _stylise(image, drawable, values):
    if nst_bridge is None:
        raise PluginError(MISSING_BRIDGE)
    styles = _styles(values)
    options = _options(values)
    bounds = _selection_bounds(drawable)
    x, y, width, height = bounds
    region = drawable.get_pixel_rgn(x, y, width, height, False, False)
    result = _stylise_pixels(region[x:x + width, y:y + height], bounds, region.bpp, styles, options)
    _add_result_layer(image, drawable, result, bounds, _layer_name(drawable, styles[0][0]))


def neural_style(image, drawable, *args):
    """The registered procedure: every failure becomes one message and leaves the image as it was."""
    user_errors = (PluginError,) + ((nst_bridge.EngineError,) if nst_bridge else ())
    pdb.gimp_image_undo_group_start(image)
    try:
        _stylise(image, drawable, dict(zip(PARAM_NAMES, args)))
    except user_errors as error:
        pdb.gimp_message("Neural Style: %s" % error.message)
    except Exception as error:  # a bug: one line in GIMP rather than a traceback dialog
        pdb.gimp_message("Neural Style failed unexpectedly (%s: %s): please report this bug."
                         % (type(error).__name__, error))
    finally:
        pdb.gimp_image_undo_group_end(image)


register(
    PROC_NAME,
    "Repaint the layer (or the selection) in the style of another picture.",
    "Neural style transfer (Gatys et al.): the engine optimises the pixels so that their VGG19 "
    "features keep the layer's content and take the style image's textures. The result is a new "
    "layer above the source. It runs in the engine's own Python 3, installed by install.py.",
    "GIMP Neural Style contributors",
    "GPL-3.0-or-later",
    "2025",
    "Neural _Style...",
    "RGB*, GRAY*",
    PARAMS,
    [],
    neural_style,
    menu="<Image>/Filters",
)

if __name__ == "__main__":
    main()
