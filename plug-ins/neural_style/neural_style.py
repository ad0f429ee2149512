#!/usr/bin/env python3
"""Neural Style for GIMP 3: repaint the selected layers in the style of a picture, or the frames of an
animation, each starting from the one before.

GIMP glue only. The engine (nst_core, with torch) runs as a child process in its own
Python through nst_bridge.py; its presets, defaults and ranges come from the config that
install.py writes beside this file, so nothing about the method is repeated here.
"""

import os
import sys
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_estimate  # noqa: E402
import nst_preview  # noqa: E402

PROC_NAME = "python-fu-neural-style"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
RW = GObject.ParamFlags.READWRITE
U8_PRECISIONS = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
# (name, kind, label, blurb). Ranges, defaults and choices come from the engine through the bridge;
# "share" is the second style's part of the mix.
ARGUMENTS = (
    ("style-file", "file", "St_yle image", "The picture whose style is painted in"),
    ("style-layer", "layer", "Style layer (instead of the file)", "A layer of any open image as the style"),
    ("style2-file", "file", "Second style _image (optional)", "A second picture, blended with the first"),
    ("style2-layer", "layer", "Second style layer (optional)", "A layer as the second style"),
    ("style2-blend", "share", "Second style shar_e", "How much of the style comes from the second picture"),
    (
        "region",
        "region",
        "Re_gion",
        "Where the style goes: everywhere in the selection, or inside the selection (or channel) only, "
        "or the first style inside and the second outside, blended across a feathered edge",
    ),
    (
        "region-channel",
        "channel",
        "Region channel (none: the selection)",
        "A channel whose white is the region, instead of the selection",
    ),
    ("preset", "choice", "_Quality", "Quality preset: more time gives a finer result"),
    ("strength", "double", "Style s_trength", "Multiplies the style weight: higher paints more style"),
    ("keep-colors", "choice", "_Keep original colours", "The layer's colours, the style's texture only"),
    ("style-scale", "double", "Style sc_ale", "Size of the style's brush strokes relative to the picture"),
    ("size", "int", "_Working size (0 = auto)", "Longest side, in pixels, the style is computed at"),
    ("iterations", "int", "Iteratio_ns (0 = preset's)", "Optimisation steps in all"),
    ("seed", "int", "Rando_m seed", "Same seed, same result"),
    ("device", "choice", "_Device", "Where the engine runs"),
    (
        "frames",
        "boolean",
        "Layers are animation _frames",
        "The selected layers are an animation's frames, bottom layer first: each starts from the one "
        "before, and the results go to a new image that Filters > Animation > Playback plays",
    ),
)
FILE_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind == "file"]
LAYER_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind == "layer"]  # one per file
CHOICE_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind in ("choice", "region")]
ENGINE_OPTIONS = [name for name, kind, _label, _blurb in ARGUMENTS if kind in ("choice", "int", "double")]


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
    elif kind == "region":
        choice = Gimp.Choice.new()
        for index, (nick, text) in enumerate(nst_common.REGIONS):
            choice.add(nick, index, text, "")
        procedure.add_choice_argument(name, label, blurb, choice, nst_common.REGION_WHOLE, RW)
    elif kind == "choice":
        items, default = nst_bridge.choices(config, option)
        choice = Gimp.Choice.new()
        for index, (nick, text) in enumerate(items):
            choice.add(nick, index, text, "")
        procedure.add_choice_argument(name, label, blurb, choice, default, RW)
    else:
        low, high, default = nst_bridge.number_range(config, option)
        if kind == "int":
            procedure.add_int_argument(name, label, blurb, int(low), int(high), int(default), RW)
        else:
            procedure.add_double_argument(name, label, blurb, float(low), float(high), float(default), RW)


def read_styles(config: Gimp.ProcedureConfig, eight_bit: bool = False, longest: int = 0) -> list:
    """[(path or StylePixels, weight)]: each style's layer when one is chosen, else its file."""
    styles = []
    for file_name, layer_name in zip(FILE_ARGUMENTS, LAYER_ARGUMENTS, strict=True):
        layer, file = config.get_property(layer_name), config.get_property(file_name)
        styles.append(read_style_layer(layer, eight_bit, longest) if layer else file and file.get_path())
    return nst_common.style_mix(*styles, config.get_property("style2-blend"))


def read_style_layer(layer: Gimp.Layer, eight_bit: bool, longest: int = 0) -> nst_common.StylePixels:
    """A layer's pixels as a style, at its image's bit depth (8-bit for frames), alpha included; shrunk
    to `longest` pixels when given (a preview: the engine shrinks a style to its working size anyway)."""
    if not layer.is_valid():
        raise nst_common.EngineError(
            "The style layer no longer exists (its image was closed): choose another layer or a file.",
            nst_common.EXIT_USAGE,
        )
    babl, fmt, channels = pixel_layout(layer.get_image(), layer, eight_bit)
    scale = nst_preview.fit_scale(layer.get_width(), layer.get_height(), longest) if longest else 1.0
    width, height = nst_preview.scaled_size(layer.get_width(), layer.get_height(), scale)
    data = layer.get_buffer().get(Gegl.Rectangle.new(0, 0, width, height), scale, babl, Gegl.AbyssPolicy.NONE)
    return nst_common.StylePixels(data, width, height, fmt, channels, layer.get_name())


def has_region(config: Gimp.ProcedureConfig) -> bool:
    """Whether a region says where the styles go (then the whole layer is computed)."""
    return config.get_property("region") != nst_common.REGION_WHOLE


def region_part(layer: Gimp.Layer, whole: bool) -> tuple[int, int, int, int]:
    """(x, y, width, height) of what is computed: all of `layer` when `whole`, else its selected part."""
    return (0, 0, layer.get_width(), layer.get_height()) if whole else selected_part(layer)


def read_region(
    image: Gimp.Image, layer: Gimp.Layer, config: Gimp.ProcedureConfig, styles: list, scale: float = 1.0
):
    """The styles' masks over the whole of `layer` (None: no region, the styles everywhere): the
    chosen channel, else the selection, as 8-bit gray where the layer lies."""
    if not has_region(config):
        return None
    region = config.get_property("region")
    channel = config.get_property("region-channel")
    if channel is None and Gimp.Selection.is_empty(image):
        return nst_common.region_masks(region, None, len(styles))  # the one-line "empty region" error
    channel = channel or image.get_selection()
    _, layer_x, layer_y = layer.get_offsets()
    _, channel_x, channel_y = channel.get_offsets()
    width, height = nst_preview.scaled_size(layer.get_width(), layer.get_height(), scale)
    rect = Gegl.Rectangle.new(
        round((layer_x - channel_x) * scale), round((layer_y - channel_y) * scale), width, height
    )
    fmt = mask_format(image, channel)
    data = channel.get_buffer().get(rect, scale, fmt, Gegl.AbyssPolicy.NONE)  # outside the channel: 0
    return nst_common.region_masks(region, nst_common.RegionMask(data, width, height), len(styles))


def mask_format(image: Gimp.Image, channel: Gimp.Channel) -> str:
    """The babl format that reads `channel` as the grey its user sees: the selection holds linear
    coverage ("Y"); a channel holds its image's encoding, perceptual ("Y'") unless the image is linear,
    so 50% grey painted into it is a half share, as in the Channels dialog."""
    if channel.get_id() == image.get_selection().get_id():
        return "Y u8"
    precision = channel.get_image().get_precision().value_nick  # e.g. "u8-non-linear"
    return "Y u8" if precision.split("-", 1)[1] == "linear" else "Y' u8"


def read_options(config: Gimp.ProcedureConfig, engine_config: dict) -> dict:
    values = {name.replace("-", "_"): config.get_property(name) for name in ENGINE_OPTIONS}
    return nst_bridge.dialog_options(engine_config, values)


def check_layers(drawables: list) -> list[Gimp.Layer]:
    layers = [d for d in drawables if isinstance(d, Gimp.Layer) and not d.is_group()]
    if not drawables or len(layers) != len(drawables):
        raise nst_common.EngineError(nst_bridge.NOT_A_LAYER, nst_common.EXIT_USAGE)
    return layers


def pixel_layout(image: Gimp.Image, layer: Gimp.Layer, eight_bit: bool = False) -> tuple[str, str, int]:
    """(babl format, engine format, channels): 8-bit stays u8, deeper images go through float unless
    `eight_bit` (animation frames travel as 8-bit files)."""
    u8 = eight_bit or image.get_precision() in U8_PRECISIONS
    model = "Y'A" if layer.is_gray() else "R'G'B'A"
    return model + (" u8" if u8 else " float"), "u8" if u8 else "float32", 2 if layer.is_gray() else 4


def selected_part(layer: Gimp.Layer) -> tuple[int, int, int, int]:
    """(x, y, width, height) of the selection within `layer`, in its coordinates."""
    found, x, y, width, height = layer.mask_intersect()
    if not found:
        raise nst_common.selection_misses(layer.get_name())
    return x, y, width, height


def read_part(image: Gimp.Image, layer: Gimp.Layer, eight_bit: bool = False, whole: bool = False) -> dict:
    """The selected part of `layer` (all of it when `whole`: a region decides where the styles go):
    where it lies, its pixel layout and its pixels."""
    x, y, width, height = region_part(layer, whole)
    babl, fmt, channels = pixel_layout(image, layer, eight_bit)
    pixels = layer.get_buffer().get(Gegl.Rectangle.new(x, y, width, height), 1.0, babl, Gegl.AbyssPolicy.NONE)
    part = {"source": layer, "x": x, "y": y, "width": width, "height": height, "babl": babl}
    return part | {"format": fmt, "channels": channels, "pixels": pixels, "clip": not whole}


def stylize_layer(
    image: Gimp.Image,
    layer: Gimp.Layer,
    styles: list,
    options: dict,
    engine_config: dict,
    report: Callable[[float, str], bool],
    config: Gimp.ProcedureConfig,
) -> dict:
    """Run the engine on the selected part of `layer`, or on all of it in its region; the result and
    where it goes."""
    masks = read_region(image, layer, config, styles)
    part = read_part(image, layer, whole=masks is not None)
    with nst_bridge.EngineRun(engine_config) as run:
        run.set_content_raw(part["pixels"], part["width"], part["height"], part["format"], part["channels"])
        part["pixels"] = run.run(styles, options, report, masks)
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
) -> list[dict]:
    """Run the engine on the selected part of every frame, in frame order, each frame starting from the one
    before; the results (at the working size: `pixel_size`) and where they go."""
    parts = [read_part(image, layer, eight_bit=True) for layer in frame_order(image, layers)]
    with nst_bridge.FramesRun(engine_config) as run:
        for part in parts:
            run.add_frame(
                part["pixels"], part["width"], part["height"], part["channels"], part["source"].get_name()
            )
        results = run.run(styles, options, report)
    for part, (pixels, width, height) in zip(parts, results, strict=True):
        part.update(pixels=pixels, pixel_size=(width, height))
    return parts


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


def new_animation(image: Gimp.Image, frames: list[dict]) -> Gimp.Image:
    """A new image holding the stylised frames alone, the first at the bottom, named as their sources with
    their timing tags: Playback (and the GIF export) play an image's top-level layers, all of them, and a
    layer group as one frame, so only an image of their own plays them as the animation. It is a copy of
    `image` (size, precision, colour profile, selection) with the layers replaced."""
    animation = image.duplicate()
    animation.undo_disable()  # the frames are where the new image starts, not a step to undo
    try:
        for layer in animation.get_layers():
            animation.remove_layer(layer)
        for frame in frames:
            insert_result(animation, frame, nst_common.frame_name(frame["source"].get_name()), None, 0)
    except Exception:
        animation.delete()
        raise
    animation.undo_enable()
    return animation


def progress_reporter(index: int, count: int) -> Callable[[float, str], bool]:
    def report(fraction: float, text: str) -> bool:
        Gimp.progress_update((index + fraction) / count)
        Gimp.progress_set_text(text if count == 1 else f"{text} (layer {index + 1}/{count})")
        return True

    return report


def file_chooser(config: Gimp.ProcedureConfig, name: str) -> object:
    """An OPEN chooser bound to an ANY-action file argument (see add_argument)."""
    from gi.repository import GimpUi

    spec = config.find_property(name)
    chooser = GimpUi.FileChooser.new(
        Gimp.FileChooserAction.OPEN, spec.get_nick(), spec.get_blurb(), config.get_property(name)
    )
    config.bind_property(
        name, chooser, "file", GObject.BindingFlags.SYNC_CREATE | GObject.BindingFlags.BIDIRECTIONAL
    )
    chooser.show()
    return chooser


# The settings the time estimate depends on: a change re-estimates it (debounced, see EstimateRefresh).
ESTIMATE_PROPERTIES = ("preset", "size", "iterations", "device", "style2-file", "style2-layer", "region")


def estimate_command(config: Gimp.ProcedureConfig, engine_config: dict, layers: list) -> list[str]:
    """The engine's plan command for the first layer's selected part (all of it with a region), with
    the dialog's settings."""
    layer = check_layers(layers)[0]
    masked = has_region(config)
    _x, _y, width, height = region_part(layer, masked)
    styles = 2 if config.get_property("style2-file") or config.get_property("style2-layer") else 1
    options = read_options(config, engine_config)
    return nst_estimate.plan_command(engine_config, width, height, styles, options, masked)


def one_style_source(config: Gimp.ProcedureConfig) -> None:
    """A style is a file or a layer: choosing one clears the other, so the dialog shows what is used."""

    def clear(chosen: str, other: str) -> Callable:
        return lambda config, _spec: config.get_property(chosen) and config.set_property(other, None)

    for file_name, layer_name in zip(FILE_ARGUMENTS, LAYER_ARGUMENTS, strict=True):
        config.connect("notify::" + file_name, clear(file_name, layer_name))
        config.connect("notify::" + layer_name, clear(layer_name, file_name))


PREVIEW_DELAY_MS = 800  # after a first preview, settings that stop changing this long are previewed again
PREVIEW_HINT = "Preview: the settings on a small copy of the layer."


def preview_job(image: Gimp.Image, layers: list, config: Gimp.ProcedureConfig, engine_config: dict):
    """A small copy of the first layer (its selected part, or all of it in a region) and what runs on it."""
    layer = check_layers(layers)[0]
    styles = read_styles(config, longest=2 * nst_preview.preview_settings(engine_config)[0])
    options = read_options(config, engine_config)
    if options.get("device") == nst_common.REMOTE:
        options.pop("device")  # a preview is computed here: a server's queue is no place for a quick look
    whole = has_region(config)
    x, y, width, height = region_part(layer, whole)
    scale = nst_preview.preview_scale(engine_config, width, height)
    small_width, small_height = nst_preview.scaled_size(width, height, scale)
    rect = Gegl.Rectangle.new(round(x * scale), round(y * scale), small_width, small_height)
    pixels = layer.get_buffer().get(rect, scale, "R'G'B'A u8", Gegl.AbyssPolicy.NONE)
    masks = read_region(image, layer, config, styles, scale) if whole else None
    return nst_preview.PreviewJob(pixels, small_width, small_height, 4, styles, options, masks)


class DialogPreview:
    """The dialog's Preview button, its picture and its line of text. After the first press, a change of
    settings previews again once they rest; any change cancels the preview in flight."""

    def __init__(self, image: Gimp.Image, layers: list, config: Gimp.ProcedureConfig, engine_config: dict):
        from gi.repository import Gtk

        self.image, self.layers, self.config, self.engine_config = image, layers, config, engine_config
        self.worker = nst_preview.PreviewWorker(
            engine_config, GLib.idle_add, self.show, self.say, self.progress
        )
        self.wanted = False
        self.timer = 0
        size = nst_preview.preview_settings(engine_config)[0]
        self.box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6, margin_top=6)
        self.box.set_size_request(size, -1)
        self.button = Gtk.Button.new_with_mnemonic("_Preview")
        self.button.connect("clicked", self.start)
        self.label = Gtk.Label(label=PREVIEW_HINT, xalign=0.0, wrap=True, max_width_chars=30)
        self.picture = Gtk.Image(valign=Gtk.Align.START)
        self.box.pack_start(self.button, False, False, 0)
        self.box.pack_start(self.label, False, False, 0)
        self.box.pack_start(self.picture, False, False, 0)
        self.box.show_all()
        self.picture.hide()
        config.connect("notify", self.changed)

    def start(self, *_ignored: object) -> None:
        self.wanted = True
        self._stop_timer()
        try:
            job = preview_job(self.image, self.layers, self.config, self.engine_config)
        except nst_common.EngineError as error:
            self.worker.cancel()
            self.say(error.message)
            return
        self.worker.start(job)
        self.say("Preview: starting the engine\u2026")

    def changed(self, *_ignored: object) -> None:
        self.worker.cancel()
        self._stop_timer()
        if self.wanted:
            self.say("Preview: settings changed\u2026")
            self.timer = GLib.timeout_add(PREVIEW_DELAY_MS, self._rested)

    def _rested(self) -> bool:
        self.timer = 0
        self.start()
        return False

    def _stop_timer(self) -> None:
        if self.timer:
            GLib.source_remove(self.timer)
            self.timer = 0

    def show(self, pixels: bytes, width: int, height: int, channels: int) -> None:
        from gi.repository import GdkPixbuf

        picture = GdkPixbuf.Pixbuf.new_from_bytes(
            GLib.Bytes.new(pixels), GdkPixbuf.Colorspace.RGB, True, 8, width, height, width * channels
        )
        self.picture.set_from_pixbuf(picture)
        self.picture.show()
        self.say(f"Preview at {width}\u00d7{height} px: press OK to render the layer.")

    def progress(self, fraction: float, text: str) -> None:
        text = text.removeprefix("Neural style: ")  # the progress bar's wording
        self.say(f"Preview: {text}" if text else f"Preview: {fraction:.0%}")

    def say(self, text: str) -> None:
        self.label.set_text(text)
        if os.environ.get("NST_DEBUG") == "1":  # the dialog's tests read it there
            print(f"neural-style preview: {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """The dialog closes: stop the preview's engine and wait for its files to go."""
        self._stop_timer()
        self.worker.close()


class PlanProcess:
    """One plan command running under GLib: its output goes to done(code, stdout, stderr) unless cancelled."""

    def __init__(self, argv: list[str], env: dict, done: Callable[[int, str, str], None]) -> None:
        flags = Gio.SubprocessFlags.STDOUT_PIPE | Gio.SubprocessFlags.STDERR_PIPE
        launcher = Gio.SubprocessLauncher.new(flags)
        launcher.set_environ([f"{name}={value}" for name, value in env.items()])
        try:
            self.process = launcher.spawnv(argv)
        except GLib.Error as error:
            raise nst_common.EngineNotInstalled(
                f"Neural style engine {argv[0]} cannot start ({error.message}): run install.py again."
            ) from None
        self.cancellable = Gio.Cancellable()
        self.done = done
        self.process.communicate_utf8_async(None, self.cancellable, self.finished)

    def finished(self, process: Gio.Subprocess, result: Gio.AsyncResult) -> None:
        try:
            _ok, stdout, stderr = process.communicate_utf8_finish(result)
        except GLib.Error:
            return  # cancelled
        code = process.get_exit_status() if process.get_if_exited() else -1
        self.done(code, stdout or "", stderr or "")

    def cancel(self) -> None:
        self.cancellable.cancel()
        self.process.force_exit()


def estimate_label(config: Gimp.ProcedureConfig, engine_config: dict, layers: list) -> tuple:
    """A label with the time estimate, kept up to date while the dialog is open; (label, refresh)."""
    from gi.repository import Gtk

    label = Gtk.Label(xalign=0.0, wrap=True, max_width_chars=60, margin_top=6, margin_bottom=6)
    env = nst_common.child_environment(nst_common.engine_environment(engine_config))

    def show(text: str) -> None:
        label.set_text(text)
        if os.environ.get("NST_DEBUG") == "1":  # the dialog's tests read it there
            print(f"neural-style estimate: {text}", file=sys.stderr, flush=True)

    refresh = nst_estimate.EstimateRefresh(
        command=lambda: estimate_command(config, engine_config, layers),
        start=lambda argv, done: PlanProcess(argv, env, done),
        show=show,
        timer=GLib.timeout_add,
        cancel_timer=GLib.source_remove,
    )
    for name in ESTIMATE_PROPERTIES:
        config.connect("notify::" + name, refresh.changed)
    label.show()
    return label, refresh


def beside(content: object, right: object) -> None:
    """Everything in the dialog's `content` box in a column on the left, `right` beside it: the preview
    goes next to the controls, not under them, so the dialog fits a laptop's screen."""
    from gi.repository import Gtk

    left = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=content.get_spacing())
    for child in content.get_children():
        expand, fill, padding, _pack = content.query_child_packing(child)
        content.remove(child)
        left.pack_start(child, expand, fill, padding)
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=12)
    row.pack_start(left, True, True, 0)
    row.pack_start(right, False, False, 0)
    content.pack_start(row, True, True, 0)
    left.show()
    row.show()


def show_dialog(
    procedure: Gimp.Procedure,
    config: Gimp.ProcedureConfig,
    engine_config: dict,
    image: Gimp.Image,
    drawables: list,
) -> bool:
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi, Gtk

    GimpUi.init(PROC_NAME)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config)
    # Every choice a combo box: GIMP 3.2 would draw those of three options as radio buttons, making
    # the dialog taller than a laptop's screen; asked for before fill(), the combo is what fill() packs.
    for name in CHOICE_ARGUMENTS:
        dialog.get_widget(name, Gtk.ComboBox)
    # The styles come first, what the user must choose: each one's file, then its layer instead.
    names = [p.name for p in procedure.get_arguments()[3:] if p.name not in FILE_ARGUMENTS]
    dialog.fill(LAYER_ARGUMENTS + [name for name in names if name not in LAYER_ARGUMENTS])
    content = dialog.get_content_area()
    for index, name in enumerate(FILE_ARGUMENTS):
        chooser = file_chooser(config, name)
        content.pack_start(chooser, False, False, 0)
        content.reorder_child(chooser, 2 * index)
    one_style_source(config)
    # Under the controls: the time the current settings take, and their preview, before OK.
    label, refresh = estimate_label(config, engine_config, drawables)
    content.pack_start(label, False, False, 0)
    preview = DialogPreview(image, drawables, config, engine_config)
    beside(content, preview.box)
    refresh.changed()
    accepted = dialog.run()
    preview.close()
    refresh.close()
    dialog.destroy()
    return accepted


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
    Gimp.progress_init("Neural style")
    try:
        styles, options = read_styles(config, eight_bit=animate), read_options(config, engine_config)
        layers = check_layers(drawables)
        # Every layer is computed before any is inserted: a failure leaves the image untouched.
        if animate:
            check_frames(len(layers), config)
            results = stylize_frames(image, layers, styles, options, engine_config, progress_reporter(0, 1))
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
                )
                for index, layer in enumerate(layers)
            ]
    except nst_common.EngineError as error:
        return failed(procedure, run_mode, error.message)
    finally:
        Gimp.progress_end()
    if animate:
        return animation_made(procedure, run_mode, new_animation(image, results))
    image.undo_group_start()
    try:
        for result in results:
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


def animation_made(
    procedure: Gimp.Procedure, run_mode: Gimp.RunMode, animation: Gimp.Image
) -> Gimp.ValueArray:
    """Success, the new image its return value; shown in a window unless a script called."""
    if run_mode != Gimp.RunMode.NONINTERACTIVE:
        Gimp.Display.new(animation)
        Gimp.displays_flush()
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
