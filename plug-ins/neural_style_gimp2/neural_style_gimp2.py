#!/usr/bin/env python2
# -*- coding: utf-8 -*-
"""Neural Style for GIMP 2.10 (Python-Fu, Python 2.7).

GIMP 2.10's Python cannot load torch, so this file is GIMP glue only: it reads the active
layer's pixels inside the selection, hands them to the engine (its own Python 3) through
nst_bridge.py, the job protocol shared with the GIMP 3 plug-in (docs/protocol.md), and puts
the result on a new layer above the source, in one undo step.

With "Layers are animation frames" the frames are the layers beside the active one (gimpfu hands
over one drawable): the image's top-level layers, which Filters > Animation > Playback plays, or
those of the active layer's group, bottom first. Each starts from the one before, and the results go
to a new image of their own, the only thing Playback plays as the stylised animation.

A style is a file, or a layer of any open image ("Style from: Layer"). gimpfu's layer menu cannot be
left empty: it lists every layer of every open image and always has one selected, the first, so a
layer param alone would quietly make some layer (perhaps the content itself) the style. "Style from"
therefore says which one counts, File by default; the layer is read whole, alpha included.

"Region" other than Everywhere makes the selection the styles' region: the whole active layer goes to
the engine with the selection over it as the mask (Style inside: the picture is kept outside; split:
the first style inside, the second outside), and the result covers the whole layer without a layer
mask, since the engine blends the region's edge itself (a feathered selection gives a soft edge).
Everywhere keeps the selection's old meaning: only the selected part is stylised, and masked.

Pixels travel as 8-bit: GIMP 2.10 gives gimpfu pixel regions in its 8-bit compatibility
format whatever the image's precision, and converts them back when they are written.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

from gimpfu import *  # noqa: F401,F403 (gimpfu's register, main, pdb, gimp, PF_* and enums)

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
BRIDGE_FILE = "nst_bridge.py"
# What the bridge imports in turn, from beside it (the service client, the modules every side shares).
BRIDGE_MODULES = ("nst_service.py", "nst_common.py", "nst_tiff.py")
# install.py puts the bridge, its modules and nst_config.json beside this file. Should the plug-in
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
    import nst_common
except ImportError:  # a broken install: the menu entry still appears and says so
    nst_bridge = nst_common = None

PROC_NAME = "python-fu-neural-style"
MISSING_BRIDGE = ("Neural Style is incompletely installed (%s is missing beside %s): run install.py again."
                  % (" or ".join((BRIDGE_FILE,) + BRIDGE_MODULES), os.path.basename(__file__)))
STRENGTH_SLIDER_MAX = 10.0  # the engine accepts more, but a wider slider is too coarse to use


class PluginError(Exception):
    """A one-line message for the user about something the plug-in itself checks."""

    def __init__(self, message):
        Exception.__init__(self, message)
        self.message = message  # like nst_common.EngineError: str() of unicode fails on Python 2


def _load_config():
    if nst_bridge is None:
        return {}
    try:
        return nst_bridge.load_config(SUPPORT_DIR)
    except nst_common.EngineError:
        return {}  # registering must not fail: running reports the problem


CONFIG = _load_config()


def _choices(name):
    """[(nick, label)] and the default's index; a placeholder when the bridge itself is missing."""
    if name in FIXED_CHOICES:
        return FIXED_CHOICES[name], 0
    if nst_bridge is None:
        return [("", "Default")], 0
    items, default = nst_bridge.choices(CONFIG, name)
    return items, [nick for nick, _label in items].index(default)


def _number_param(kind, name, label, step, cap=None):
    """A slider or spinner with the engine's default and limits (up to `cap`)."""
    low, high, default = nst_bridge.number_range(CONFIG, name) if nst_bridge else (0, 2 ** 31 - 1, 0)
    return (kind, name, label, default, (low, high if cap is None else min(high, cap), step))


def _option_param(name, label):
    items, default = CHOICES[name]
    return (PF_OPTION, name, label, default, [text for _nick, text in items])


# gimpfu's layer menu cannot say "none": it lists every layer of every open image and always selects one
# (the first), so whether a style comes from its file, its layer or a painting installed with the engine
# is a choice of its own. File stays first, as callers knew it; the first style's File with no file
# given is its painting, so a first run, with nothing chosen, paints The Starry Night.
STYLE_FROM_FILE, STYLE_FROM_LAYER, STYLE_FROM_PAINTING = "file", "layer", "painting"
STYLE_SOURCES = [(STYLE_FROM_FILE, "File"), (STYLE_FROM_LAYER, "Layer"), (STYLE_FROM_PAINTING, "Painting")]
FIXED_CHOICES = {
    "style_from": STYLE_SOURCES,
    "style2_from": STYLE_SOURCES,
    "region": list(nst_common.REGIONS) if nst_bridge else [("whole", "Everywhere (within the selection)")],
}
ENGINE_CHOICES = ("preset", "keep_colors", "device")
CHOICES = dict((name, _choices(name)) for name in tuple(FIXED_CHOICES) + ENGINE_CHOICES + ("painting",))
CHOICES["style2_painting"] = CHOICES["painting"]

# gimpfu hands the image and the active drawable to these two; the dialog shows the rest.
TARGET_PARAMS = [
    (PF_IMAGE, "image", "Input image", None),
    (PF_DRAWABLE, "drawable", "Input drawable", None),
]
PARAMS = [
    _option_param("style_from", "Style from"),
    _option_param("painting", "Style painting"),
    (PF_FILE, "style", "Style image", ""),
    (PF_LAYER, "style_layer", "Style layer (instead of the file)", None),
    _option_param("style2_from", "Second style from"),
    _option_param("style2_painting", "Second style painting"),
    (PF_FILE, "style2", "Second style image (optional)", ""),
    (PF_LAYER, "style2_layer", "Second style layer (instead of the file)", None),
    (PF_SLIDER, "blend", "Second style share", 0.5, (0.0, 1.0, 0.05)),
    _option_param("region", "Region"),
    _option_param("preset", "Quality"),
    _number_param(PF_SLIDER, "strength", "Style strength", 0.1, STRENGTH_SLIDER_MAX),
    _option_param("keep_colors", "Keep original colours"),
    _number_param(PF_SLIDER, "style_scale", "Style scale", 0.05),
    _number_param(PF_SPINNER, "size", "Working size in pixels (0 = auto)", 32),
    _number_param(PF_SPINNER, "iterations", "Iterations (0 = preset's)", 10),
    _number_param(PF_SPINNER, "seed", "Random seed", 1),
    _option_param("device", "Device"),
    (PF_TOGGLE, "frames", "Layers are animation frames", False),
    (PF_TOGGLE, "keep_on_cancel", "On Cancel: keep the picture so far", False),
]
PARAM_NAMES = [param[1] for param in PARAMS]
LABELS = dict((param[1], param[2]) for param in PARAMS)
STYLE_PARAMS = (
    ("style_from", "style", "style_layer", "painting"),
    ("style2_from", "style2", "style2_layer", "style2_painting"),
)
NUMBERS = {"strength": float, "style_scale": float, "size": int, "iterations": int, "seed": int}


def _choice(name, index):
    """The nick of choice `index` of option `name` (gimpfu hands over the index)."""
    items = CHOICES[name][0]
    index = int(index)
    if not 0 <= index < len(items):
        raise PluginError("%s choice %d is out of range: use 0 to %d." % (LABELS[name], index, len(items) - 1))
    return items[index][0]


def _options(values):
    """The engine options the dialog's values mean (GTK spinners hand gimpfu floats: made ints here)."""
    options = dict((name, _choice(name, values[name])) for name in ENGINE_CHOICES)
    options.update((name, kind(values[name])) for name, kind in NUMBERS.items())
    return nst_bridge.dialog_options(CONFIG, options)


def _layer_style(layer, from_name, layer_name):
    """The whole of `layer` as a style: its 8-bit pixels, alpha included, named after it."""
    if layer is None:
        raise PluginError("%s is Layer but no layer is given: choose one for %s, or choose File."
                          % (LABELS[from_name], LABELS[layer_name]))
    if pdb.gimp_drawable_is_indexed(layer):
        raise PluginError("Style layer '%s' is in an indexed image: convert that image to RGB (Image > "
                          "Mode > RGB), or choose another layer." % layer.name)
    width, height = layer.width, layer.height
    region = layer.get_pixel_rgn(0, 0, width, height, False, False)
    return nst_common.StylePixels(region[0:width, 0:height], width, height, "u8", region.bpp, layer.name)


def _styles(values):
    """[(style, weight)]: each style its file, its layer or its painting, as its "from" choice says."""
    chosen = []
    for from_name, file_name, layer_name, painting_name in STYLE_PARAMS:
        source = _choice(from_name, values[from_name])
        if source == STYLE_FROM_LAYER:
            chosen.append(_layer_style(values[layer_name], from_name, layer_name))
        elif source == STYLE_FROM_PAINTING or (from_name == "style_from" and not values[file_name]):
            chosen.append(nst_bridge.painting_path(CONFIG, _choice(painting_name, values[painting_name])))
        else:
            chosen.append(values[file_name])
    return nst_common.style_mix(chosen[0], chosen[1], values["blend"])


def _selection_mask(image, layer):
    """The selection over the whole layer as 8-bit coverage (0 where the layer lies off the image), or
    None when nothing is selected. The selection is a channel the image's size; the layer may be offset,
    or larger than the image."""
    if pdb.gimp_selection_is_empty(image):
        return None
    width, height = layer.width, layer.height
    offset_x, offset_y = layer.offsets
    x1, y1 = max(offset_x, 0), max(offset_y, 0)
    x2, y2 = min(offset_x + width, image.width), min(offset_y + height, image.height)
    coverage = bytearray(width * height)
    if x2 > x1 and y2 > y1:
        span = x2 - x1
        rows = image.selection.get_pixel_rgn(x1, y1, span, y2 - y1, False, False)[x1:x2, y1:y2]
        for row in range(y2 - y1):
            start = (y1 - offset_y + row) * width + x1 - offset_x
            coverage[start:start + span] = rows[row * span:(row + 1) * span]
    return nst_common.RegionMask(bytes(coverage), width, height)


def _selection_bounds(drawable):
    """(x, y, width, height) of the selection inside the layer, in layer coordinates."""
    if not pdb.gimp_item_is_layer(drawable):
        raise PluginError(nst_bridge.NOT_A_LAYER)
    non_empty, x, y, width, height = pdb.gimp_drawable_mask_intersect(drawable)
    if not non_empty or width < 1 or height < 1:
        raise nst_common.selection_misses(drawable.name)
    return x, y, width, height


def _on_progress(fraction, text):
    gimp.progress_update(fraction)
    if text:
        pdb.gimp_progress_set_text(text)
    return True  # gimpfu has no cancel button: GIMP's Cancel kills the plug-in and the bridge its child


def _stylise_pixels(pixels, bounds, bpp, styles, options, masks=None, on_snapshot=None):
    """The engine's result for `pixels`, in the same layout (8-bit, `bpp` channels); `masks`, one
    RegionMask a style (nst_common.region_masks), confine the styles to their regions."""
    gimp.progress_init("Neural Style: starting the engine...")
    with nst_bridge.EngineRun(nst_bridge.load_config(SUPPORT_DIR)) as run:
        run.set_content_raw(pixels, bounds[2], bounds[3], "u8", bpp)
        return run.run(styles, options, _on_progress, masks, on_snapshot=on_snapshot)


def _stylise_into_layer(image, drawable, pixels, bounds, bpp, styles, options, values, masks=None,
                        masked=True):
    """The result on a new layer above `drawable`. With "On Cancel: keep the picture so far" the layer
    forms at each snapshot: GIMP's Cancel ends the plug-in at once, what is on the canvas stays, and
    GIMP closes the run's undo group, so one Undo removes it. A failure removes it."""
    name = nst_common.result_name(drawable.name, styles)
    live = []

    def paint(pixels, width, height, channels, fraction):
        if not live:
            pixels = _scaled(pixels, (width, height), (bounds[2], bounds[3]), channels)
            live.append(_add_result_layer(image, drawable, pixels, bounds, name, masked=masked))
        else:
            _repaint(live[0], pixels, bounds, (width, height))
        gimp.displays_flush()
        return True

    try:
        result = _stylise_pixels(pixels, bounds, bpp, styles, options, masks,
                                 paint if values.get("keep_on_cancel") else None)
    except Exception:
        for layer in live:
            pdb.gimp_image_remove_layer(image, layer)
        raise
    if live:
        _repaint(live[0], result, bounds, (bounds[2], bounds[3]))
    else:
        _add_result_layer(image, drawable, result, bounds, name, masked=masked)


def _repaint(layer, pixels, bounds, size):
    """New pixels for the live layer, scaled to it when the engine sent them at the working size."""
    width, height = bounds[2], bounds[3]
    pixels = _scaled(pixels, size, (width, height), layer.bpp)
    layer.get_pixel_rgn(0, 0, width, height, True, False)[0:width, 0:height] = pixels
    layer.flush()
    layer.update(0, 0, width, height)


def _scaled(pixels, size, target, bpp):
    """Nearest-neighbour `pixels` of `size` at `target`: a glimpse of the picture so far, so the speed
    of plain Python counts more than smoothness (each source row is built once)."""
    (width, height), (to_width, to_height) = size, target
    if size == target:
        return pixels
    columns = [column * width // to_width for column in range(to_width)]
    rows = {}
    for row in range(to_height):
        source = row * height // to_height
        if source not in rows:
            line = pixels[source * width * bpp:(source + 1) * width * bpp]
            rows[source] = b"".join(line[column * bpp:(column + 1) * bpp] for column in columns)
    return b"".join(rows[row * height // to_height] for row in range(to_height))


def _add_result_layer(image, drawable, pixels, bounds, name, place=None, size=None, masked=True):
    """A new layer with `pixels` above `drawable` (or at `place`, (parent, position)), at the selection's
    place, masked to it unless not `masked`; pixels of another `size` (a frame's working size) are scaled
    to the selection."""
    x, y, width, height = bounds
    pixel_width, pixel_height = size or (width, height)
    layer = pdb.gimp_layer_new(image, pixel_width, pixel_height, drawable.type, name, 100.0,
                               LAYER_MODE_NORMAL)
    region = layer.get_pixel_rgn(0, 0, pixel_width, pixel_height, True, False)
    region[0:pixel_width, 0:pixel_height] = pixels
    layer.flush()
    offset_x, offset_y = drawable.offsets
    layer.set_offsets(offset_x + x, offset_y + y)
    if place is None:
        place = pdb.gimp_item_get_parent(drawable), pdb.gimp_image_get_item_position(image, drawable)
    pdb.gimp_image_insert_layer(image, layer, place[0], place[1])
    try:
        if (pixel_width, pixel_height) != (width, height):
            pdb.gimp_layer_scale(layer, width, height, True)
            layer.set_offsets(offset_x + x, offset_y + y)
        if masked and not pdb.gimp_selection_is_empty(image):
            pdb.gimp_layer_add_mask(layer, pdb.gimp_layer_create_mask(layer, ADD_MASK_SELECTION))
        layer.update(0, 0, width, height)
    except Exception:
        pdb.gimp_image_remove_layer(image, layer)
        raise
    return layer


def _frame_layers(image, drawable):
    """The layers beside `drawable`, bottom first: the frames Playback plays when they are top-level."""
    if not pdb.gimp_item_is_layer(drawable):
        raise PluginError(nst_bridge.NOT_A_LAYER)
    parent = pdb.gimp_item_get_parent(drawable)
    layers = list(reversed(parent.children if parent else image.layers))
    for layer in layers:
        if pdb.gimp_item_is_group(layer):
            raise PluginError("Layer '%s' is a layer group: animation frames must be plain layers (merge the "
                              "group, or put the frames in a group of their own)." % layer.name)
    nst_common.check_frames(len(layers))
    return layers


def _stylise_frames(image, drawable, styles, options):
    """Every frame through the engine, each starting from the one before, into a new image that opens at
    the first finished frame and takes each frame as it is finished. GIMP's Cancel ends the plug-in: the
    new image keeps the frames finished so far. A failure deletes it."""
    frames = []
    animation = _Animation(image)
    gimp.progress_init("Neural Style: starting the engine...")
    try:
        with nst_bridge.FramesRun(nst_bridge.load_config(SUPPORT_DIR)) as run:
            for layer in _frame_layers(image, drawable):
                x, y, width, height = bounds = _selection_bounds(layer)
                region = layer.get_pixel_rgn(x, y, width, height, False, False)
                run.add_frame(region[x:x + width, y:y + height], width, height, region.bpp, layer.name)
                frames.append((layer, bounds))

            def add(index, pixels, width, height):
                animation.add(frames[index], pixels, (width, height))

            results = run.run(styles, options, _on_progress, add)
        for index, (pixels, width, height) in enumerate(results):
            if index == len(animation.added):  # a run on the engine service hands them over at the end
                add(index, pixels, width, height)
    except Exception:
        animation.delete()
        raise


class _Animation(object):
    """The new image of the stylised frames, the first at the bottom. A copy keeps the image's size, mode,
    resolution and selection; only the frames are swapped."""

    def __init__(self, image):
        self.image, self.animation, self.display, self.added = image, None, None, []

    def add(self, frame, pixels, size):
        layer, bounds = frame
        fresh = self.animation is None
        if fresh:
            self.animation = pdb.gimp_image_duplicate(self.image)
        # Undo off while a frame goes in: the frames are where the new image starts, not steps to undo.
        pdb.gimp_image_undo_disable(self.animation)
        try:
            for old in list(self.animation.layers) if fresh else []:
                pdb.gimp_image_remove_layer(self.animation, old)
            name = nst_common.frame_name(layer.name)
            _add_result_layer(self.animation, layer, pixels, bounds, name, (None, 0), size)
        finally:
            pdb.gimp_image_undo_enable(self.animation)
        self.added.append(layer)
        if self.display is None:
            try:
                self.display = gimp.Display(self.animation)
            except RuntimeError:
                self.display = False  # GIMP without its interface (batch mode) has no windows
        gimp.displays_flush()

    def delete(self):
        if self.display:
            pdb.gimp_display_delete(self.display)  # its image's last window: the image goes with it
        elif self.animation is not None:
            pdb.gimp_image_delete(self.animation)


def _stylise(image, drawable, values):
    if nst_bridge is None:
        raise PluginError(MISSING_BRIDGE)
    region_choice = _choice("region", values["region"])
    if values.get("frames"):
        nst_common.check_frames_region(region_choice)
    styles = _styles(values)
    options = _options(values)
    if values.get("frames"):
        _stylise_frames(image, drawable, styles, options)
        return
    if region_choice != nst_common.REGION_WHOLE:
        _stylise_region(image, drawable, region_choice, styles, options, values)
        return
    bounds = _selection_bounds(drawable)
    x, y, width, height = bounds
    region = drawable.get_pixel_rgn(x, y, width, height, False, False)
    _stylise_into_layer(image, drawable, region[x:x + width, y:y + height], bounds, region.bpp, styles,
                        options, values)


def _stylise_region(image, drawable, region, styles, options, values):
    """The whole layer through the engine with the styles confined by the selection: the result covers
    the layer, unmasked, since the engine already blends the region's edge (soft where it is feathered)."""
    if not pdb.gimp_item_is_layer(drawable):
        raise PluginError(nst_bridge.NOT_A_LAYER)
    masks = nst_common.region_masks(region, _selection_mask(image, drawable), len(styles))
    width, height = drawable.width, drawable.height
    bounds = (0, 0, width, height)
    pixels = drawable.get_pixel_rgn(0, 0, width, height, False, False)
    _stylise_into_layer(image, drawable, pixels[0:width, 0:height], bounds, pixels.bpp, styles, options,
                        values, masks, masked=False)


def neural_style(image, drawable, *args):
    """The registered procedure: every failure becomes one message and leaves the image as it was."""
    user_errors = (PluginError,) + ((nst_common.EngineError,) if nst_bridge else ())
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
    "features keep the layer's content and take the style image's textures; a style may also be a "
    "layer of any open image (Style from: Layer). The result is a new layer above the source. With a "
    "Region other than Everywhere the selection says where the styles go (a feathered edge stays soft) "
    "and the result covers the whole layer. With 'Layers are animation frames' the layers beside the "
    "active one are an animation's frames, bottom first: each starts from the one before, and the "
    "results go to a new image. It runs in the engine's own Python 3, installed by install.py.",
    "GIMP Neural Style contributors",
    "GPL-3.0-or-later",
    "2025",
    "Neural _Style...",
    "RGB*, GRAY*",
    TARGET_PARAMS + PARAMS,
    [],
    neural_style,
    menu="<Image>/Filters",
)

if __name__ == "__main__":
    main()
