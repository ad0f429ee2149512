#!/usr/bin/env python3
"""Neural Style for GIMP 3: repaint the selected layers in the style of a picture, or the frames of an
animation, each starting from the one before.

GIMP glue only: the registration, the run and putting its results in the image. The engine (nst_core,
with torch) runs as a child process in its own Python through nst_bridge.py; its presets, defaults and
ranges come from the config that install.py writes beside this file, so nothing about the method is
repeated here. The procedure's arguments and what is read through them are in nst_procedure.py, the
dialog in nst_dialog.py.
"""

import os
import sys
import time
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
from nst_dialog import show_dialog  # noqa: E402
from nst_procedure import (  # noqa: E402
    ARGUMENTS,
    PROC_NAME,
    SECOND_SOURCES,
    SOURCE_FILE,
    STYLE_SOURCES,
    check_layers,
    read_options,
    read_part,
    read_region,
    read_styles,
)

PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
RW = GObject.ParamFlags.READWRITE
NORMAL = Gimp.LayerMode.NORMAL


def add_argument(
    procedure: Gimp.Procedure, name: str, kind: str, label: str, blurb: str, config: dict
) -> None:
    option = name.replace("-", "_")
    if kind == "file":
        # ANY, not OPEN: GIMP refuses a missing OPEN file before the plug-in runs, with no message.
        # The dialog still opens files (file_chooser); the run checks the file and says what is wrong.
        procedure.add_file_argument(name, label, blurb, Gimp.FileChooserAction.ANY, True, None, RW)
    elif kind == "share":
        procedure.add_double_argument(name, label, blurb, 0.0, 1.0, 0.5, RW)
    elif kind == "boolean":
        procedure.add_boolean_argument(name, label, blurb, False, RW)
    elif kind == "layer":
        procedure.add_layer_argument(name, label, blurb, True, RW)
    elif kind == "channel":
        procedure.add_channel_argument(name, label, blurb, True, RW)
    elif kind in FIXED_CHOICES:
        add_choice_argument(procedure, name, label, blurb, *FIXED_CHOICES[kind])
    elif kind in ("choice", "painting"):
        items, default = nst_bridge.choices(config, "painting" if kind == "painting" else option)
        add_choice_argument(procedure, name, label, blurb, items, default)
    else:
        low, high, default = nst_bridge.number_range(config, option)
        if kind == "int":
            procedure.add_int_argument(name, label, blurb, int(low), int(high), int(default), RW)
        else:
            procedure.add_double_argument(name, label, blurb, float(low), float(high), float(default), RW)


# The choices the plug-in makes itself: (items, default). A source's default keeps older callers'
# meaning (see nst_procedure.STYLE_SOURCES); the dialog shows a painting when no style is given yet.
FIXED_CHOICES = {
    "region": (nst_common.REGIONS, nst_common.REGION_WHOLE),
    "source": (STYLE_SOURCES, SOURCE_FILE),
    "source2": (SECOND_SOURCES, SOURCE_FILE),
}


def add_choice_argument(
    procedure: Gimp.Procedure, name: str, label: str, blurb: str, items: tuple, default: str
) -> None:
    choice = Gimp.Choice.new()
    for index, (nick, text) in enumerate(items):
        choice.add(nick, index, text, "")
    procedure.add_choice_argument(name, label, blurb, choice, default, RW)


def stylize_layer(
    image: Gimp.Image,
    layer: Gimp.Layer,
    styles: list,
    options: dict,
    engine_config: dict,
    report: Callable[[float, str], bool],
    config: Gimp.ProcedureConfig,
    live: "LiveLayers | None" = None,
) -> dict:
    """Run the engine on the selected part of `layer`, or on all of it in its region; the result and
    where it goes. With `live`, the result layer forms on the canvas at each snapshot."""
    masks = read_region(image, layer, config, styles)
    part = read_part(image, layer, whole=masks is not None)
    with nst_bridge.EngineRun(engine_config) as run:
        run.set_content_raw(part["pixels"], part["width"], part["height"], part["format"], part["channels"])
        painter = live.painter(part) if live else None
        part["pixels"] = run.run(styles, options, report, masks, on_snapshot=painter)
    return part


def check_frames(count: int, config: Gimp.ProcedureConfig) -> None:
    nst_common.check_frames(count)
    nst_common.check_frames_region(config.get_property("region"))


def frame_order(image: Gimp.Image, layers: list[Gimp.Layer]) -> list[Gimp.Layer]:
    """`layers` in the order Playback plays frames: from the bottom of the layer stack up."""
    stack: list[int] = []
    pending = list(image.get_layers())
    while pending:  # depth first, top to bottom: a group's layers lie between it and the layer below it
        item = pending.pop(0)
        stack.append(item.get_id())
        if item.is_group():
            pending[:0] = item.get_children()
    place = {layer_id: index for index, layer_id in enumerate(stack)}
    return sorted(layers, key=lambda layer: place[layer.get_id()], reverse=True)


def stylize_frames(
    image: Gimp.Image,
    layers: list[Gimp.Layer],
    styles: list,
    options: dict,
    engine_config: dict,
    report: Callable[[float, str], bool],
    animation: "LiveAnimation",
) -> None:
    """Run the engine on the selected part of every frame, in frame order, each frame starting from the one
    before; each result (at the working size: `pixel_size`) goes into `animation` as soon as it is done."""
    parts = [read_part(image, layer, eight_bit=True) for layer in frame_order(image, layers)]

    def add(index: int, pixels: bytes, width: int, height: int) -> None:
        parts[index].update(pixels=pixels, pixel_size=(width, height))
        animation.add(parts[index])

    with nst_bridge.FramesRun(engine_config) as run:
        for part in parts:
            run.add_frame(
                part["pixels"], part["width"], part["height"], part["channels"], part["source"].get_name()
            )
        results = run.run(styles, options, report, add)
    for index, result in enumerate(results):
        if index == animation.count:  # a run on the engine service hands the frames over at the end
            add(index, *result)


def insert_result(
    image: Gimp.Image, result: dict, name: str, parent: Gimp.Layer | None, position: int
) -> None:
    """The result as a new layer `name` at `position` in `parent`, over its source's selected part."""
    source = result["source"]
    _, offset_x, offset_y = source.get_offsets()
    kind = Gimp.ImageType.GRAYA_IMAGE if source.is_gray() else Gimp.ImageType.RGBA_IMAGE
    width, height = result["width"], result["height"]
    pixel_width, pixel_height = result.get("pixel_size", (width, height))
    layer = Gimp.Layer.new(image, name, pixel_width, pixel_height, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, parent, position)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, pixel_width, pixel_height), result["babl"], result["pixels"])
    buffer.flush()
    if (pixel_width, pixel_height) != (width, height):  # a frame comes back at the working size
        layer.scale(width, height, True)
    layer.set_offsets(offset_x + result["x"], offset_y + result["y"])
    # Outside a non-rectangular selection stays transparent; a region's edge the engine blended itself.
    if result.get("clip", True) and not Gimp.Selection.is_empty(image):
        layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
        layer.remove_mask(Gimp.MaskApplyMode.APPLY)
    layer.update(0, 0, width, height)


class LiveLayers:
    """The result layers forming on the canvas (On Cancel: keep the picture so far): each appears above
    its source at its run's first snapshot and follows the snapshots, in one undo group with the rest of
    the run. GIMP's Cancel ends the plug-in at once: what is on the canvas stays, and GIMP closes the
    group, so one Undo removes it. A failure removes the layers."""

    def __init__(self, image: Gimp.Image, styles: list) -> None:
        self.image, self.styles, self.parts = image, styles, []

    def painter(self, part: dict) -> Callable[[bytes, int, int, int, float], bool]:
        def paint(pixels: bytes, width: int, height: int, channels: int, fraction: float) -> bool:
            if "live" not in part:
                self.parts.append(part)
                part["live"] = self.new_layer(part)
                note_time("first live layer")
            write_pixels(part["live"], part, pixels, (width, height))
            Gimp.displays_flush()
            return True

        return paint

    def new_layer(self, part: dict) -> Gimp.Layer:
        source = part["source"]
        _, offset_x, offset_y = source.get_offsets()
        kind = Gimp.ImageType.GRAYA_IMAGE if source.is_gray() else Gimp.ImageType.RGBA_IMAGE
        name = nst_common.result_name(source.get_name(), self.styles)
        layer = Gimp.Layer.new(
            self.image, name, part["width"], part["height"], kind, 100.0, Gimp.LayerMode.NORMAL
        )
        self.image.insert_layer(layer, source.get_parent(), self.image.get_item_position(source))
        layer.set_offsets(offset_x + part["x"], offset_y + part["y"])
        if part.get("clip", True) and not Gimp.Selection.is_empty(self.image):  # applied at the end
            layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
        return layer

    def finish(self, result: dict) -> bool:
        """The final pixels into the result's live layer; False when it has none."""
        layer = result.pop("live", None)
        if layer is None:
            return False
        write_pixels(layer, result, result["pixels"], (result["width"], result["height"]))
        if layer.get_mask() is not None:
            layer.remove_mask(Gimp.MaskApplyMode.APPLY)
        return True

    def remove(self) -> None:
        for part in self.parts:
            layer = part.pop("live", None)
            if layer is not None and layer.is_valid():
                self.image.remove_layer(layer)


def note_time(event: str) -> None:
    """With NST_TIMING_LOG naming a file (the real-GIMP timings), append when `event` happened on the
    system's monotonic clock, which the process that called the procedure reads too."""
    path = os.environ.get("NST_TIMING_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(f"{event} {time.monotonic()}\n")


def write_pixels(layer: Gimp.Layer, part: dict, pixels: bytes, size: tuple[int, int]) -> None:
    """`pixels` of `size` into `layer`, scaled to it when smaller (a snapshot at the working size)."""
    width, height, babl = part["width"], part["height"], part["babl"]
    if size != (width, height):  # through a scratch layer: a Gegl.Buffer of our own crashes GIMP 3.2
        scratch = Gimp.Layer.new(layer.get_image(), "scratch", size[0], size[1], layer.type(), 100.0, NORMAL)
        small = scratch.get_buffer()
        small.set(Gegl.Rectangle.new(0, 0, size[0], size[1]), babl, pixels)
        small.flush()
        pixels = scratch.get_buffer().get(
            Gegl.Rectangle.new(0, 0, width, height), width / size[0], babl, Gegl.AbyssPolicy.CLAMP
        )
        scratch.delete()
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), babl, pixels)
    buffer.flush()
    layer.update(0, 0, width, height)


class LiveAnimation:
    """A new image holding the stylised frames alone, the first at the bottom, named as their sources with
    their timing tags: Playback (and the GIF export) play an image's top-level layers, all of them, and a
    layer group as one frame, so only an image of their own plays them as the animation. It is a copy of
    `image` (size, precision, colour profile, selection) with the layers replaced, made at the first
    finished frame and shown then (unless `shown` is False), each later frame added as it is finished.
    GIMP's Cancel ends the plug-in at once: the frames finished so far stay. A failure deletes it."""

    def __init__(self, image: Gimp.Image, shown: bool) -> None:
        self.source, self.shown, self.count = image, shown, 0
        self.image: Gimp.Image | None = None
        self.display: Gimp.Display | None = None

    def add(self, frame: dict) -> None:
        fresh = self.image is None
        if self.image is None:
            self.image = self.source.duplicate()
        self.image.undo_disable()  # the frames are where the new image starts, not steps to undo
        try:
            for layer in self.image.get_layers() if fresh else []:
                self.image.remove_layer(layer)
            insert_result(self.image, frame, nst_common.frame_name(frame["source"].get_name()), None, 0)
        finally:
            self.image.undo_enable()
        self.count += 1
        if self.shown and self.display is None:
            self.display = Gimp.Display.new(self.image)
        Gimp.displays_flush()
        note_time("frame shown")

    def delete(self) -> None:
        if self.display is not None:
            self.display.delete()  # the image's only window: the image goes with it
        elif self.image is not None:
            self.image.delete()


def progress_reporter(index: int, count: int) -> Callable[[float, str], bool]:
    def report(fraction: float, text: str) -> bool:
        Gimp.progress_update((index + fraction) / count)
        Gimp.progress_set_text(text if count == 1 else f"{text} (layer {index + 1}/{count})")
        return True

    return report


def neural_style(
    procedure: Gimp.Procedure,
    run_mode: Gimp.RunMode,
    image: Gimp.Image,
    drawables: list,
    config: Gimp.ProcedureConfig,
    data: object,
) -> Gimp.ValueArray:
    try:
        engine_config = nst_bridge.load_config(PLUGIN_DIR)
    except nst_common.EngineError as error:
        return failed(procedure, run_mode, error.message)
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(
        procedure, config, engine_config, image, drawables
    ):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    animate = config.get_property("frames")
    live = None
    Gimp.progress_init("Neural style")
    try:
        styles = read_styles(config, engine_config, eight_bit=animate)
        options = read_options(config, engine_config)
        layers = check_layers(drawables)
        if config.get_property("keep-on-cancel") and not animate:
            live = LiveLayers(image, styles)
            image.undo_group_start()  # GIMP ends it if Cancel ends the plug-in
        # Every layer is computed before any is inserted: a failure leaves the image untouched.
        if animate:
            check_frames(len(layers), config)
            animation = LiveAnimation(image, run_mode != Gimp.RunMode.NONINTERACTIVE)
            try:
                stylize_frames(
                    image, layers, styles, options, engine_config, progress_reporter(0, 1), animation
                )
            except Exception:
                animation.delete()
                raise
        else:
            results = [
                stylize_layer(
                    image,
                    layer,
                    styles,
                    options,
                    engine_config,
                    progress_reporter(index, len(layers)),
                    config,
                    live,
                )
                for index, layer in enumerate(layers)
            ]
    except nst_common.EngineError as error:
        if live:
            live.remove()
            image.undo_group_end()
        return failed(procedure, run_mode, error.message)
    finally:
        Gimp.progress_end()
    if animate:
        return animation_made(procedure, animation.image)
    if not live:
        image.undo_group_start()
    try:
        for result in results:
            if live and live.finish(result):
                continue
            source = result["source"]
            name = nst_common.result_name(source.get_name(), styles)
            insert_result(image, result, name, source.get_parent(), image.get_item_position(source))
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def failed(procedure: Gimp.Procedure, run_mode: Gimp.RunMode, message: str) -> Gimp.ValueArray:
    """EXECUTION_ERROR with the message. GIMP 3.0 shows it in every run mode; 3.2 and later only in
    interactive runs, so Filters > Repeat (WITH_LAST_VALS) would fail silently: say it here then."""
    if run_mode != Gimp.RunMode.INTERACTIVE and gimp_version() >= (3, 2):
        Gimp.message(message)
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(message))


def gimp_version() -> tuple[int, ...]:
    """The running GIMP's (major, minor), e.g. (3, 2)."""
    return tuple(int(part) for part in Gimp.version().split(".")[:2])


def animation_made(procedure: Gimp.Procedure, animation: Gimp.Image) -> Gimp.ValueArray:
    """Success, the new image (shown since its first frame unless a script called) its return value."""
    values = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())
    values.remove(1)  # the default (no image) gives way to this one
    values.insert(1, GObject.Value(Gimp.Image, animation))
    return values


class NeuralStyle(Gimp.PlugIn):
    def do_query_procedures(self) -> list[str]:
        return [PROC_NAME]

    def do_set_i18n(self, name: str) -> bool:
        return False

    def do_create_procedure(self, name: str) -> Gimp.Procedure:
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, neural_style, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(
            Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        )
        procedure.set_menu_label("Neural _Style...")
        procedure.add_menu_path("<Image>/Filters")
        procedure.set_documentation(
            "Repaint layers in the style of a picture",
            "Neural style transfer (Gatys et al.): each selected layer, within the "
            "selection, is repainted in the style of the chosen picture and added "
            "as a new layer above it. With 'Layers are animation frames' the selected "
            "layers are an animation's frames: each starts from the one before, and the "
            "results go to a new image, returned as new-image.",
            name,
        )
        procedure.set_attribution("GIMP Neural Style authors", "GPL-3.0-or-later", "2025")
        try:
            config = nst_bridge.load_config(PLUGIN_DIR)
        except nst_common.EngineError:
            config = {}  # still register; a run reports how to fix the config
        for argument in ARGUMENTS:
            add_argument(procedure, *argument, config)
        procedure.add_image_return_value(
            "new-image",
            "New image",
            "The stylised animation (Layers are animation frames), else none",
            True,
            RW,
        )
        return procedure


Gimp.main(NeuralStyle.__gtype__, sys.argv)
