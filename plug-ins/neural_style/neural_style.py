#!/usr/bin/env python3
"""Neural Style for GIMP 3: repaint the selected layers in the style of a picture.

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

PROC_NAME = "python-fu-neural-style"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
RW = GObject.ParamFlags.READWRITE
U8_PRECISIONS = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
# (name, kind, label, blurb). Ranges, defaults and choices come from the engine through the bridge;
# "share" is the second style's part of the mix.
ARGUMENTS = (
    ("style-file", "file", "St_yle image", "The picture whose style is painted in"),
    ("style2-file", "file", "Second style _image (optional)", "A second picture, blended with the first"),
    ("style2-blend", "share", "Second style shar_e", "How much of the style comes from the second picture"),
    ("preset", "choice", "_Quality", "Quality preset: more time gives a finer result"),
    ("strength", "double", "Style s_trength", "Multiplies the style weight: higher paints more style"),
    ("keep-colors", "choice", "_Keep original colours", "The layer's colours, the style's texture only"),
    ("style-scale", "double", "Style sc_ale", "Size of the style's brush strokes relative to the picture"),
    ("size", "int", "_Working size (0 = auto)", "Longest side, in pixels, the style is computed at"),
    ("iterations", "int", "Iteratio_ns (0 = preset's)", "Optimisation steps in all"),
    ("seed", "int", "Rando_m seed", "Same seed, same result"),
    ("device", "choice", "_Device", "Where the engine runs"),
)
FILE_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind == "file"]
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


def read_styles(config: Gimp.ProcedureConfig) -> list[tuple[str, float]]:
    first, second = (config.get_property(name) for name in FILE_ARGUMENTS)
    share = config.get_property("style2-blend")
    return nst_bridge.style_mix(first and first.get_path(), second and second.get_path(), share)


def read_options(config: Gimp.ProcedureConfig, engine_config: dict) -> dict:
    values = {name.replace("-", "_"): config.get_property(name) for name in ENGINE_OPTIONS}
    return nst_bridge.dialog_options(engine_config, values)


def check_layers(drawables: list) -> list[Gimp.Layer]:
    layers = [d for d in drawables if isinstance(d, Gimp.Layer) and not d.is_group()]
    if not drawables or len(layers) != len(drawables):
        raise nst_bridge.EngineError(nst_bridge.NOT_A_LAYER, nst_bridge.EXIT_USAGE)
    return layers


def pixel_layout(image: Gimp.Image, layer: Gimp.Layer) -> tuple[str, str, int]:
    """(babl format, engine format, channels): 8-bit stays u8, deeper images go through float."""
    u8 = image.get_precision() in U8_PRECISIONS
    model = "Y'A" if layer.is_gray() else "R'G'B'A"
    return model + (" u8" if u8 else " float"), "u8" if u8 else "float32", 2 if layer.is_gray() else 4


def stylize_layer(
    image: Gimp.Image,
    layer: Gimp.Layer,
    styles: list,
    options: dict,
    engine_config: dict,
    report: Callable[[float, str], bool],
) -> dict:
    """Run the engine on the selected part of `layer`; the result and where it goes."""
    found, x, y, width, height = layer.mask_intersect()
    if not found:
        raise nst_bridge.selection_misses(layer.get_name())
    babl, fmt, channels = pixel_layout(image, layer)
    rect = Gegl.Rectangle.new(x, y, width, height)
    pixels = layer.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE)
    with nst_bridge.EngineRun(engine_config) as run:
        run.set_content_raw(pixels, width, height, fmt, channels)
        result = run.run(styles, options, report)
    return {"source": layer, "x": x, "y": y, "width": width, "height": height, "babl": babl, "pixels": result}


def insert_result(image: Gimp.Image, result: dict, styles: list) -> None:
    source = result["source"]
    _, offset_x, offset_y = source.get_offsets()
    kind = Gimp.ImageType.GRAYA_IMAGE if source.is_gray() else Gimp.ImageType.RGBA_IMAGE
    width, height = result["width"], result["height"]
    name = nst_bridge.result_name(source.get_name(), styles)
    layer = Gimp.Layer.new(image, name, width, height, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, source.get_parent(), image.get_item_position(source))
    layer.set_offsets(offset_x + result["x"], offset_y + result["y"])
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, width, height), result["babl"], result["pixels"])
    buffer.flush()
    if not Gimp.Selection.is_empty(image):  # outside a non-rectangular selection stays transparent
        layer.add_mask(layer.create_mask(Gimp.AddMaskType.SELECTION))
        layer.remove_mask(Gimp.MaskApplyMode.APPLY)
    layer.update(0, 0, width, height)


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
ESTIMATE_PROPERTIES = ("preset", "size", "iterations", "device", "style2-file")


def estimate_command(config: Gimp.ProcedureConfig, engine_config: dict, layers: list) -> list[str]:
    """The engine's plan command for the first layer's selected part, with the dialog's settings."""
    found, _x, _y, width, height = check_layers(layers)[0].mask_intersect()
    if not found:
        raise nst_bridge.selection_misses(layers[0].get_name())
    styles = 2 if config.get_property("style2-file") else 1
    options = read_options(config, engine_config)
    return nst_bridge.plan_command(engine_config, width, height, styles, options)


class PlanProcess:
    """One plan command running under GLib: its output goes to done(code, stdout, stderr) unless cancelled."""

    def __init__(self, argv: list[str], env: dict, done: Callable[[int, str, str], None]) -> None:
        flags = Gio.SubprocessFlags.STDOUT_PIPE | Gio.SubprocessFlags.STDERR_PIPE
        launcher = Gio.SubprocessLauncher.new(flags)
        launcher.set_environ([f"{name}={value}" for name, value in env.items()])
        try:
            self.process = launcher.spawnv(argv)
        except GLib.Error as error:
            raise nst_bridge.EngineNotInstalled(
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
    env = nst_bridge.child_environment(nst_bridge.engine_environment(engine_config))

    def show(text: str) -> None:
        label.set_text(text)
        if os.environ.get("NST_DEBUG") == "1":  # the dialog's tests read it there
            print(f"neural-style estimate: {text}", file=sys.stderr, flush=True)

    refresh = nst_bridge.EstimateRefresh(
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


def show_dialog(
    procedure: Gimp.Procedure, config: Gimp.ProcedureConfig, engine_config: dict, drawables: list
) -> bool:
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    from gi.repository import GimpUi

    GimpUi.init(PROC_NAME)
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config)
    dialog.fill([p.name for p in procedure.get_arguments()[3:] if p.name not in FILE_ARGUMENTS])
    # The style pictures come first: they are what the user must choose.
    content = dialog.get_content_area()
    for position, name in enumerate(FILE_ARGUMENTS):
        chooser = file_chooser(config, name)
        content.pack_start(chooser, False, False, 0)
        content.reorder_child(chooser, position)
    # Under the controls: the time the current settings take, before OK.
    label, refresh = estimate_label(config, engine_config, drawables)
    content.pack_start(label, False, False, 0)
    refresh.changed()
    accepted = dialog.run()
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
    except nst_bridge.EngineError as error:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(error.message))
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config, engine_config, drawables):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    Gimp.progress_init("Neural style")
    try:
        styles, options = read_styles(config), read_options(config, engine_config)
        layers = check_layers(drawables)
        # Every layer is computed before any is inserted: a failure leaves the image untouched.
        results = [
            stylize_layer(image, layer, styles, options, engine_config, progress_reporter(index, len(layers)))
            for index, layer in enumerate(layers)
        ]
    except nst_bridge.EngineError as error:
        return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(error.message))
    finally:
        Gimp.progress_end()
    image.undo_group_start()
    try:
        for result in results:
            insert_result(image, result, styles)
    finally:
        image.undo_group_end()
    Gimp.displays_flush()
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


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
            "as a new layer above it.",
            name,
        )
        procedure.set_attribution("GIMP Neural Style authors", "GPL-3.0-or-later", "2025")
        try:
            config = nst_bridge.load_config(PLUGIN_DIR)
        except nst_bridge.EngineError:
            config = {}  # still register; a run reports how to fix the config
        for argument in ARGUMENTS:
            add_argument(procedure, *argument, config)
        return procedure


Gimp.main(NeuralStyle.__gtype__, sys.argv)
