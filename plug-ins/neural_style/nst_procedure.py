"""The GIMP 3 plug-in's procedure: its arguments, and what a run and its dialog read through them from
GIMP (the layers' pixels, the styles, the region, the engine options). GIMP glue only, below the
dialog (nst_dialog.py) and the plug-in (neural_style.py).
"""

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_preview  # noqa: E402
from gi.repository import Gegl, Gimp  # noqa: E402

PROC_NAME = "python-fu-neural-style"
U8_PRECISIONS = (Gimp.Precision.U8_LINEAR, Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.U8_PERCEPTUAL)
# Where a style comes from. "file" covers a layer too, as before there was a choice: the layer when one
# is given, else the file; so callers that set only style-file or style-layer keep working (the dialog
# clears the one not chosen). The second style's "file" with neither given means none.
SOURCE_NONE, SOURCE_PAINTING, SOURCE_FILE, SOURCE_LAYER = "none", "painting", "file", "layer"
STYLE_SOURCES = (
    (SOURCE_PAINTING, "A painting that comes with the plug-in"),
    (SOURCE_FILE, "An image file"),
    (SOURCE_LAYER, "A layer of an open image"),
)
SECOND_SOURCES = ((SOURCE_NONE, "None"), *STYLE_SOURCES)
STYLE_PREFIXES = ("style", "style2")  # each with -source, -painting, -file and -layer
# (name, kind, label, blurb). Ranges, defaults and choices come from the engine through the bridge;
# "share" is the second style's part of the mix. The mnemonics are unique across the dialog.
ARGUMENTS = (
    ("style-file", "file", "Style fil_e", "The picture whose style is painted in"),
    ("style-layer", "layer", "Style l_ayer", "A layer of any open image as the style"),
    ("style2-file", "file", "Second style file", "A second picture, blended with the first"),
    ("style2-layer", "layer", "Second style layer", "A layer as the second style"),
    ("style2-blend", "share", "S_hare of the second", "How much of the style comes from the second picture"),
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
    ("strength", "double", "Style s_trength", "More or less style: higher paints more, 0 keeps the picture"),
    ("keep-colors", "choice", "_Keep original colours", "The layer's colours, the style's texture only"),
    ("style-scale", "double", "_Brush size", "Size of the style's brush strokes relative to the picture"),
    ("size", "int", "_Working size (0 = auto)", "Longest side, in pixels, the style is computed at"),
    ("iterations", "int", "_Iterations (0 = preset's)", "Optimisation steps in all"),
    ("seed", "int", "Rando_m seed", "Same seed, same result"),
    ("device", "choice", "_Device", "Where the engine runs"),
    (
        "frames",
        "boolean",
        "Layers are animation _frames",
        "The selected layers are an animation's frames, bottom layer first: each starts from the one "
        "before, and the results go to a new image that Filters > Animation > Playback plays",
    ),
    # Last, so that the arguments' places stay what they were for callers that give them in order.
    ("style-source", "source", "So_urce", "Where the style comes from: a painting, a file or a layer"),
    ("style-painting", "painting", "Pai_nting", "A public-domain painting installed with the engine"),
    ("style2-source", "source2", "Second st_yle", "An optional second style, blended with the first"),
    ("style2-painting", "painting", "Second painting", "A bundled painting as the second style"),
    (
        "keep-on-cancel",
        "boolean",
        "On Cancel: keep the picture so far",
        "The result layer forms on the canvas while the engine works, and Cancel keeps it as it is then "
        "(one Undo removes it); off, the layer comes at the end and Cancel changes nothing",
    ),
)
FILE_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind == "file"]
LAYER_ARGUMENTS = [name for name, kind, _label, _blurb in ARGUMENTS if kind == "layer"]  # one per file
CHOICE_ARGUMENTS = [
    name
    for name, kind, _label, _blurb in ARGUMENTS
    if kind in ("choice", "region", "source", "source2", "painting")
]
ENGINE_OPTIONS = [name for name, kind, _label, _blurb in ARGUMENTS if kind in ("choice", "int", "double")]


def read_styles(
    config: Gimp.ProcedureConfig, engine_config: dict, eight_bit: bool = False, longest: int = 0
) -> list:
    """[(path or StylePixels, weight)]: each style from its source (see STYLE_SOURCES)."""
    styles = [read_style(config, engine_config, prefix, eight_bit, longest) for prefix in STYLE_PREFIXES]
    return nst_common.style_mix(*styles, config.get_property("style2-blend"))


def read_style(config: Gimp.ProcedureConfig, engine_config: dict, prefix: str, eight_bit: bool, longest: int):
    """One style: a bundled painting's path, a layer's pixels or a file's path; None for none."""
    source = config.get_property(prefix + "-source")
    if source == SOURCE_NONE:
        return None
    if source == SOURCE_PAINTING:
        return nst_bridge.painting_path(engine_config, config.get_property(prefix + "-painting"))
    layer, file = config.get_property(prefix + "-layer"), config.get_property(prefix + "-file")
    return read_style_layer(layer, eight_bit, longest) if layer else file and file.get_path()


def style_count(config: Gimp.ProcedureConfig) -> int:
    """How many styles the settings name (1 or 2), without reading any."""
    source = config.get_property("style2-source")
    second = source == SOURCE_PAINTING or (
        source != SOURCE_NONE and (config.get_property("style2-file") or config.get_property("style2-layer"))
    )
    return 2 if second else 1


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
