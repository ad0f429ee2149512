#!/usr/bin/env python3
"""Neural Style for GIMP 3: repaint the selected layers in the style of a picture.

GIMP glue only. The engine (nst_core, with torch) runs as a child process in its own
Python through nst_bridge.py; its presets, defaults and ranges come from the config that
install.py writes beside this file, so nothing about the method is repeated here.
"""

import functools
import os
import sys
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nst_bridge  # noqa: E402

PROC_NAME = "python-fu-neural-style"
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))
RW = GObject.ParamFlags.READWRITE
FILE_ARGUMENTS = ("style-file", "style2-file")
U8_PRECISIONS = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
CHOICE_LABELS = {
    "auto": "Automatic (GPU if there is one)",
    "cuda": "GPU (CUDA / ROCm)",
    "mps": "GPU (Apple)",
    "cpu": "CPU",
    "off": "Off",
    "luminance": "Keep luminance colours",
    "histogram": "Match colour histogram",
}
# Used only before install.py has written a config: a run then stops with "not installed".
UNKNOWN_RANGE = {"int": (0, 2**31 - 1), "double": (0.0, 1e6)}


def number_argument(
    procedure: Gimp.Procedure, kind: str, name: str, label: str, blurb: str, spec: dict, auto: bool = False
) -> None:
    """An int/double argument with the engine's limits; auto=True adds 0 meaning 'engine decides'."""
    low, high = spec.get("min", UNKNOWN_RANGE[kind][0]), spec.get("max", UNKNOWN_RANGE[kind][1])
    default = 0 if auto else spec.get("default", low)
    low = 0 if auto else low
    if kind == "int":
        procedure.add_int_argument(name, label, blurb, int(low), int(high), int(default), RW)
    else:
        procedure.add_double_argument(name, label, blurb, float(low), float(high), float(default), RW)


def choice_argument(
    procedure: Gimp.Procedure, name: str, label: str, blurb: str, items: list, default: str | None
) -> None:
    choice = Gimp.Choice.new()
    for index, (nick, text) in enumerate(items):
        choice.add(nick, index, text, "")
    nicks = [nick for nick, _ in items]
    procedure.add_choice_argument(name, label, blurb, choice, default if default in nicks else nicks[0], RW)


def engine_choices(config: dict, name: str, fallback: str) -> tuple[list, str | None]:
    spec = nst_bridge.option_spec(config, name)
    nicks = spec.get("choices") or [fallback]
    return [(nick, CHOICE_LABELS.get(nick, nick.capitalize())) for nick in nicks], spec.get("default")


def add_arguments(procedure: Gimp.Procedure, config: dict) -> None:
    # ANY, not OPEN: GIMP refuses a missing OPEN file before the plug-in runs, with no message.
    # The dialog still opens files (file_choosers); the run checks the file and says what is wrong.
    open_file = Gimp.FileChooserAction.ANY
    spec = functools.partial(nst_bridge.option_spec, config)
    procedure.add_file_argument(
        "style-file", "St_yle image", "The picture whose style is painted in", open_file, True, None, RW
    )
    procedure.add_file_argument(
        "style2-file",
        "Second style _image (optional)",
        "A second style picture, blended with the first",
        open_file,
        True,
        None,
        RW,
    )
    procedure.add_double_argument(
        "style2-blend",
        "Second style shar_e",
        "How much of the style comes from the second picture",
        0.0,
        1.0,
        0.5,
        RW,
    )
    presets = nst_bridge.user_presets(config)
    default_preset = nst_bridge.engine_description(config).get("default_preset")
    choice_argument(
        procedure,
        "preset",
        "_Quality",
        "Quality preset: more time gives a finer result",
        presets,
        default_preset,
    )
    number_argument(
        procedure,
        "double",
        "strength",
        "Style s_trength",
        "Multiplies the style weight: higher paints more style",
        spec("strength"),
    )
    keep_colors, default = engine_choices(config, "keep_colors", "off")
    choice_argument(
        procedure,
        "keep-colors",
        "_Keep original colours",
        "Keep the layer's colours and take only the style's texture",
        keep_colors,
        default,
    )
    number_argument(
        procedure,
        "double",
        "style-scale",
        "Style sc_ale",
        "Size of the style's brush strokes relative to the picture",
        spec("style_scale"),
    )
    number_argument(
        procedure,
        "int",
        "size",
        "_Working size (0 = auto)",
        "Longest side, in pixels, the style is computed at",
        spec("size"),
        auto=True,
    )
    number_argument(
        procedure,
        "int",
        "iterations",
        "Iteratio_ns (0 = preset's)",
        "Optimisation steps in all",
        spec("iterations"),
        auto=True,
    )
    number_argument(procedure, "int", "seed", "Rando_m seed", "Same seed, same result", spec("seed"))
    devices, default = engine_choices(config, "device", "auto")
    choice_argument(procedure, "device", "_Device", "Where the engine runs", devices, default)


def read_styles(config: Gimp.ProcedureConfig) -> list[tuple[str, float]]:
    first, second = config.get_property("style-file"), config.get_property("style2-file")
    if first is None or not first.get_path():
        raise nst_bridge.EngineError("No style image chosen: pick a picture in 'Style image'.", 2)
    if second is None or not second.get_path():
        return [(first.get_path(), 1.0)]
    share = config.get_property("style2-blend")
    return [(first.get_path(), 1.0 - share), (second.get_path(), share)]


def read_options(config: Gimp.ProcedureConfig) -> dict:
    return {
        "preset": config.get_property("preset"),
        "strength": config.get_property("strength"),
        "keep_colors": config.get_property("keep-colors"),
        "style_scale": config.get_property("style-scale"),
        "size": config.get_property("size") or None,
        "iterations": config.get_property("iterations") or None,
        "seed": config.get_property("seed"),
        "device": config.get_property("device"),
    }


def check_layers(drawables: list) -> list[Gimp.Layer]:
    layers = [d for d in drawables if isinstance(d, Gimp.Layer) and not d.is_group()]
    if not drawables or len(layers) != len(drawables):
        raise nst_bridge.EngineError(
            "Neural Style works on layers: select one or more layers (not groups, masks or channels).", 2
        )
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
        raise nst_bridge.EngineError(
            f"The selection does not touch layer '{layer.get_name()}': select part "
            "of it or use Select > All.",
            2,
        )
    babl, fmt, channels = pixel_layout(image, layer)
    rect = Gegl.Rectangle.new(x, y, width, height)
    pixels = layer.get_buffer().get(rect, 1.0, babl, Gegl.AbyssPolicy.NONE)
    with nst_bridge.EngineRun(engine_config) as run:
        run.set_content_raw(pixels, width, height, fmt, channels)
        result = run.run(styles, options, report)
    return {"source": layer, "x": x, "y": y, "width": width, "height": height, "babl": babl, "pixels": result}


def insert_result(image: Gimp.Image, result: dict, style_names: str) -> None:
    source = result["source"]
    _, offset_x, offset_y = source.get_offsets()
    kind = Gimp.ImageType.GRAYA_IMAGE if source.is_gray() else Gimp.ImageType.RGBA_IMAGE
    width, height = result["width"], result["height"]
    name = f"{source.get_name()} (Neural Style: {style_names})"
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
    """An OPEN chooser bound to an ANY-action file argument (see add_arguments)."""
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


def show_dialog(procedure: Gimp.Procedure, config: Gimp.ProcedureConfig) -> bool:
    gi.require_version("GimpUi", "3.0")
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
    accepted = dialog.run()
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
    if run_mode == Gimp.RunMode.INTERACTIVE and not show_dialog(procedure, config):
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    Gimp.progress_init("Neural style")
    try:
        engine_config = nst_bridge.load_config(PLUGIN_DIR)
        styles, options = read_styles(config), read_options(config)
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
    style_names = " + ".join(os.path.splitext(os.path.basename(path))[0] for path, _ in styles)
    image.undo_group_start()
    try:
        for result in results:
            insert_result(image, result, style_names)
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
        add_arguments(procedure, config)
        return procedure


Gimp.main(NeuralStyle.__gtype__, sys.argv)
