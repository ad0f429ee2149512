"""A stand-in for GIMP 2.10's `gimpfu`, enough to run the Neural Style plug-in outside GIMP.

It keeps the real module's names and call signatures (register, main, pdb, gimp, PF_*,
image types, layer modes) and the pixel-region semantics the plug-in relies on: regions
address drawable coordinates, writes need a dirty region and reach the drawable on
`flush()`. Every pdb/gimp call is recorded in `calls`, messages in `messages`, so tests
can check what the plug-in asked GIMP to do. Python 2.7 and 3, like the plug-in.
"""

# ruff: noqa: UP004, UP010, UP031
# (Python 2.7 runs this module too: explicit `object` bases, __future__ imports, % formatting.)
from __future__ import absolute_import, division, print_function

import string

# Parameter types, with gimpfu 2.10's values.
PDB_INT32, PDB_INT16, PDB_INT8, PDB_FLOAT, PDB_STRING = 0, 1, 2, 3, 4
PDB_IMAGE, PDB_LAYER, PDB_CHANNEL, PDB_DRAWABLE = 13, 14, 15, 16
PF_INT32, PF_INT16, PF_INT8, PF_FLOAT, PF_STRING = PDB_INT32, PDB_INT16, PDB_INT8, PDB_FLOAT, PDB_STRING
PF_INT = PF_INT32
PF_IMAGE, PF_LAYER, PF_CHANNEL, PF_DRAWABLE = PDB_IMAGE, PDB_LAYER, PDB_CHANNEL, PDB_DRAWABLE
PF_TOGGLE = PF_BOOL = 1000
PF_SLIDER = 1001
PF_SPINNER = PF_ADJUSTMENT = 1002
PF_FONT, PF_FILE, PF_BRUSH, PF_PATTERN, PF_GRADIENT = 1003, 1004, 1005, 1006, 1007
PF_RADIO, PF_TEXT, PF_PALETTE, PF_FILENAME, PF_DIRNAME, PF_OPTION = 1008, 1009, 1010, 1011, 1012, 1013
PF_TYPES = (PDB_INT32, PDB_INT16, PDB_INT8, PDB_FLOAT, PDB_STRING, PDB_IMAGE, PDB_LAYER, PDB_CHANNEL,
            PDB_DRAWABLE) + tuple(range(1000, 1014))  # fmt: skip
ITEM_TYPES = (PF_LAYER, PF_CHANNEL, PF_DRAWABLE)  # the dialog's item menus (gimpui's *Selector)

# Enums the plug-in uses, with GIMP 2.10's values.
RGB, GRAY, INDEXED = 0, 1, 2
RGB_IMAGE, RGBA_IMAGE, GRAY_IMAGE, GRAYA_IMAGE, INDEXED_IMAGE, INDEXEDA_IMAGE = 0, 1, 2, 3, 4, 5
LAYER_MODE_NORMAL = 28
ADD_MASK_WHITE, ADD_MASK_SELECTION = 0, 4
CHANNEL_OP_ADD, CHANNEL_OP_SUBTRACT, CHANNEL_OP_REPLACE = 0, 1, 2
RUN_INTERACTIVE, RUN_NONINTERACTIVE, RUN_WITH_LAST_VALS = 0, 1, 2

BYTES_PER_PIXEL = {
    RGB_IMAGE: 3,
    RGBA_IMAGE: 4,
    GRAY_IMAGE: 1,
    GRAYA_IMAGE: 2,
    INDEXED_IMAGE: 1,
    INDEXEDA_IMAGE: 2,
}
NAME_CHARACTERS = set(string.ascii_letters + string.digits + "_-")
RANGED_TYPES = (PF_SLIDER, PF_SPINNER, PF_RADIO, PF_OPTION)  # gimpfu's dialog reads their 5th field

calls = []  # [(name, args)] of every pdb and gimp call, in order
images = []  # every gimp.Image made, in order: what gimp.image_list() names
messages = []  # what reached the user through pdb.gimp_message / gimp.message
registered = {}  # procedure name -> everything register() was given
displays = []  # the images gimp.Display opened a window for


class error(RuntimeError):
    pass


def reset():
    """Forget the calls and messages recorded so far (the registry stays)."""
    del calls[:]
    del messages[:]
    del displays[:]


def called(name):
    """The argument tuples of every recorded call to `name`."""
    return [args for call, args in calls if call == name]


def _check_name(name, what):
    if not name or set(name) - NAME_CHARACTERS:
        raise error("%s name %r contains illegal characters" % (what, name))


def _check_param(param):
    if len(param) < 4:
        raise error("parameter definition must contain at least 4 elements: %r" % (param,))
    if param[0] not in PF_TYPES:
        raise error("unknown parameter type in %r" % (param,))
    _check_name(param[1], "parameter")
    if param[0] in RANGED_TYPES and len(param) < 5:
        raise error("%s needs its range or choices as a fifth element" % param[1])


def register(
    proc_name,
    blurb,
    help,
    author,
    copyright,
    date,
    label,
    imagetypes,
    params,
    results,
    function,
    menu=None,
    domain=None,
    on_query=None,
    on_run=None,
):
    """Records the procedure after gimpfu's own sanity checks."""
    _check_name(proc_name, "procedure")
    for param in params:
        _check_param(param)
    if menu is None or not menu.startswith("<"):
        raise error("give the menu path with menu=, like '<Image>/Filters'")
    # gimpfu adds the image and drawable itself only for the old label-as-menu-path form; with menu=
    # its _run hands them to leading PF_IMAGE and PF_DRAWABLE params, else to the first params at all.
    if menu.startswith("<Image>") and [param[0] for param in params[:2]] != [PF_IMAGE, PF_DRAWABLE]:
        raise error("an <Image> procedure's first params must be PF_IMAGE and PF_DRAWABLE")
    registered[proc_name] = {
        "blurb": blurb,
        "help": help,
        "author": author,
        "copyright": copyright,
        "date": date,
        "label": label,
        "imagetypes": imagetypes,
        "params": list(params),
        "results": list(results),
        "function": function,
        "menu": menu,
        "domain": domain,
    }


def main():
    """GIMP would now query or run the procedure; the tests call it directly instead."""


def dialog_values(proc_name):
    """What gimpfu's dialog hands the procedure when the user changes nothing (not part of gimpfu):
    each param's default after the image and drawable, except the item menus. Those are
    gimpui.LayerSelector and friends, libgimpui's item combo boxes, which list every layer of every
    open image and always select one, the first, when given no default: no entry means "none"."""
    values = []
    for param in registered[proc_name]["params"][2:]:
        if param[0] in ITEM_TYPES and param[3] is None:
            layers = [layer for image in images for layer in image.layers]
            values.append(layers[0] if layers else None)
        else:
            values.append(param[3])
    return values


def _record(name, *args):
    calls.append((name, args))


class _Drawable(object):
    """What layers and channels share: pixel regions over real bytes, writes that reach the pixels on
    flush(), as in GIMP's tile cache. `recorded_as` names their calls in `calls`."""

    recorded_as = "drawable"

    def get_pixel_rgn(self, x, y, width, height, dirty=True, shadow=False):
        _record(self.recorded_as + ".get_pixel_rgn", self, x, y, width, height, dirty, shadow)
        if shadow:
            raise error("this stand-in keeps no shadow buffers: write new layers directly")
        return PixelRegion(self, x, y, width, height, dirty, shadow)

    def flush(self):
        _record(self.recorded_as + ".flush", self)
        for start, data in self.pending:
            self.pixels[start : start + len(data)] = data
        del self.pending[:]


class Channel(_Drawable):
    """A layer mask or the selection: one byte of coverage per pixel, a drawable like a layer."""

    recorded_as = "channel"

    def __init__(self, width, height, coverage, name="Channel"):
        self.width, self.height, self.name = width, height, name
        self.pixels = bytearray(coverage)
        self.bpp, self.offsets = 1, (0, 0)
        self.pending = []

    def bounds(self):
        """(x, y, width, height) around the pixels that are not 0, or None (not part of gimpfu)."""
        rows = [row for row in range(self.height) if self._row(row).strip(b"\x00")]
        if not rows:
            return None
        columns = [x for x in range(self.width) if any(self.pixels[r * self.width + x] for r in rows)]
        return columns[0], rows[0], columns[-1] + 1 - columns[0], rows[-1] + 1 - rows[0]

    def _row(self, row):
        return bytes(self.pixels[row * self.width : (row + 1) * self.width])


class PixelRegion(object):
    def __init__(self, drawable, x, y, width, height, dirty, shadow):
        self.drawable, self.dirty, self.shadow = drawable, dirty, shadow
        self.x, self.y, self.w, self.h = x, y, width, height
        self.bpp = drawable.bpp
        if x < 0 or y < 0 or x + width > drawable.width or y + height > drawable.height:
            raise error("pixel region %r lies outside the drawable" % ((x, y, width, height),))

    def _rows(self, key):
        columns, rows = key
        x1, x2, y1, y2 = columns.start, columns.stop, rows.start, rows.stop
        if not (self.x <= x1 < x2 <= self.x + self.w and self.y <= y1 < y2 <= self.y + self.h):
            raise error("slice %r is outside the region" % (key,))
        stride, bpp = self.drawable.width * self.bpp, self.bpp
        return [(row * stride + x1 * bpp, row * stride + x2 * bpp) for row in range(y1, y2)]

    def __getitem__(self, key):
        source = self.drawable.pixels
        return bytes(b"".join(bytes(source[start:stop]) for start, stop in self._rows(key)))

    def __setitem__(self, key, data):
        if not self.dirty:
            raise error("writing to a pixel region that was not opened dirty")
        if not isinstance(data, bytes):
            raise TypeError("pixel data must be a byte string")
        rows = self._rows(key)
        if len(data) != sum(stop - start for start, stop in rows):
            raise error("pixel data does not fill the slice")
        pending = self.drawable.pending
        offset = 0
        for start, stop in rows:
            pending.append((start, data[offset : offset + stop - start]))
            offset += stop - start


class Layer(_Drawable):
    """gimp.Layer(image, name, width, height, type, opacity, mode) with real pixel bytes."""

    def __init__(self, image, name, width, height, type, opacity=100.0, mode=LAYER_MODE_NORMAL):
        self.image, self.name, self.width, self.height, self.type = image, name, width, height, type
        self.opacity, self.mode = opacity, mode
        self.bpp = BYTES_PER_PIXEL[type]
        self.has_alpha = type in (RGBA_IMAGE, GRAYA_IMAGE, INDEXEDA_IMAGE)
        self.offsets = (0, 0)
        self.pixels = bytearray(width * height * self.bpp)
        self.pending = []
        self.mask = None
        self.updates = []

    def update(self, x, y, width, height):
        _record("drawable.update", self, x, y, width, height)
        self.updates.append((x, y, width, height))

    def set_offsets(self, x, y):
        _record("layer.set_offsets", self, x, y)
        self.offsets = (x, y)

    def copy(self, image):
        """The layer as it would be in a duplicate of its image (not part of gimpfu)."""
        twin = Layer(image, self.name, self.width, self.height, self.type, self.opacity, self.mode)
        twin.pixels[:] = self.pixels
        twin.offsets = self.offsets
        return twin

    def fill_pixels(self, data):
        """Test setup: the layer's whole content at once (not part of gimpfu)."""
        if len(data) != len(self.pixels):
            raise error("wrong pixel count for the layer")
        self.pixels[:] = data

    def __repr__(self):
        return "<Layer %r>" % (self.name,)


class GroupLayer(Layer):
    """gimp.GroupLayer(image, name): here only something to tell apart from a plain layer."""

    def __init__(self, image, name="Layer Group"):
        Layer.__init__(self, image, name, 1, 1, RGBA_IMAGE)
        self.children = []


class Image(object):
    """gimp.Image(width, height, base_type): a flat layer stack and the selection, a channel the
    image's size (all 0: nothing selected, which GIMP treats as everything)."""

    def __init__(self, width, height, base_type=RGB):
        self.width, self.height, self.base_type = width, height, base_type
        self.layers = []
        self.selection = Channel(width, height, bytearray(width * height), "Selection Mask")
        self.open_undo_groups = 0
        self.undo_enabled = True
        self.deleted = False
        self.filename, self.name = None, "Untitled"
        images.append(self)

    def select(self, coverage):
        """Test setup: the selection's pixels at once, e.g. a feathered one (not part of gimpfu)."""
        if len(coverage) != self.width * self.height:
            raise error("wrong pixel count for the selection")
        self.selection.pixels[:] = coverage


class Display(object):
    """gimp.Display(image): a window on the image."""

    def __init__(self, image):
        _record("gimp.Display", image)
        displays.append(image)
        self.image = image


def _selection_in(image, drawable):
    """The selection's bounds inside the drawable, in drawable coordinates, or None if outside."""
    offset_x, offset_y = drawable.offsets
    bounds = image.selection.bounds()
    if bounds is None:
        return 0, 0, drawable.width, drawable.height
    sx, sy, sw, sh = bounds
    x1, y1 = max(sx - offset_x, 0), max(sy - offset_y, 0)
    x2, y2 = min(sx + sw - offset_x, drawable.width), min(sy + sh - offset_y, drawable.height)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2 - x1, y2 - y1


class Pdb(object):
    """The procedures the plug-in may call, with GIMP 2.10's signatures and return values."""

    def __getattr__(self, name):
        raise AttributeError("the gimpfu stand-in has no pdb procedure %s: add it if GIMP 2.10 has it" % name)

    def gimp_image_undo_group_start(self, image):
        _record("gimp_image_undo_group_start", image)
        image.open_undo_groups += 1

    def gimp_image_undo_group_end(self, image):
        _record("gimp_image_undo_group_end", image)
        if image.open_undo_groups < 1:
            raise error("undo group ended without a start")
        image.open_undo_groups -= 1

    def gimp_message(self, message):
        _record("gimp_message", message)
        messages.append(message)

    def gimp_progress_set_text(self, message):
        _record("gimp_progress_set_text", message)

    def gimp_item_is_group(self, item):
        _record("gimp_item_is_group", item)
        return int(isinstance(item, GroupLayer))

    def gimp_image_duplicate(self, image):
        _record("gimp_image_duplicate", image)
        twin = Image(image.width, image.height, image.base_type)
        twin.layers = [layer.copy(twin) for layer in image.layers]
        twin.selection.pixels[:] = image.selection.pixels
        return twin

    def gimp_image_delete(self, image):
        _record("gimp_image_delete", image)
        image.deleted = True

    def gimp_display_delete(self, display):
        """The window goes; its image with it, as it was the image's last window."""
        _record("gimp_display_delete", display)
        displays.remove(display.image)
        display.image.deleted = True

    def gimp_image_undo_disable(self, image):
        _record("gimp_image_undo_disable", image)
        image.undo_enabled = False

    def gimp_image_undo_enable(self, image):
        _record("gimp_image_undo_enable", image)
        image.undo_enabled = True

    def gimp_layer_scale(self, layer, width, height, local_origin):
        """Nearest-neighbour here (GIMP interpolates); the offsets keep the centre with local_origin."""
        _record("gimp_layer_scale", layer, width, height, local_origin)
        if layer not in layer.image.layers:
            raise error("gimp_layer_scale needs a layer in an image")
        bpp, pixels = layer.bpp, bytearray()
        for row in range(height):
            source_row = row * layer.height // height
            for column in range(width):
                start = (source_row * layer.width + column * layer.width // width) * bpp
                pixels += layer.pixels[start : start + bpp]
        if local_origin:
            x, y = layer.offsets
            layer.offsets = (x + (layer.width - width) // 2, y + (layer.height - height) // 2)
        layer.width, layer.height, layer.pixels = width, height, pixels

    def gimp_drawable_is_indexed(self, drawable):
        _record("gimp_drawable_is_indexed", drawable)
        return int(getattr(drawable, "type", None) in (INDEXED_IMAGE, INDEXEDA_IMAGE))

    def gimp_item_is_layer(self, item):
        _record("gimp_item_is_layer", item)
        return int(isinstance(item, Layer))

    def gimp_item_get_parent(self, item):
        _record("gimp_item_get_parent", item)
        return None  # this stand-in has no layer groups

    def gimp_drawable_mask_intersect(self, drawable):
        _record("gimp_drawable_mask_intersect", drawable)
        bounds = _selection_in(drawable.image, drawable)
        return (0, 0, 0, 0, 0) if bounds is None else (1,) + bounds

    def gimp_selection_is_empty(self, image):
        _record("gimp_selection_is_empty", image)
        return int(not image.selection.pixels.strip(b"\x00"))

    def gimp_image_select_rectangle(self, image, operation, x, y, width, height):
        _record("gimp_image_select_rectangle", image, operation, x, y, width, height)
        if operation != CHANNEL_OP_REPLACE:
            raise error("this stand-in only replaces the selection")
        coverage = bytearray(image.width * image.height)
        x1, y1 = max(x, 0), max(y, 0)
        x2, y2 = min(x + width, image.width), min(y + height, image.height)
        for row in range(y1, y2):
            coverage[row * image.width + x1 : row * image.width + x2] = b"\xff" * max(x2 - x1, 0)
        image.selection.pixels[:] = coverage

    def gimp_layer_new(self, image, width, height, type, name, opacity, mode):
        _record("gimp_layer_new", image, width, height, type, name, opacity, mode)
        return Layer(image, name, width, height, type, opacity, mode)

    def gimp_image_get_item_position(self, image, item):
        _record("gimp_image_get_item_position", image, item)
        return image.layers.index(item)

    def gimp_image_insert_layer(self, image, layer, parent, position):
        _record("gimp_image_insert_layer", image, layer, parent, position)
        if layer.image is not image or layer in image.layers or parent is not None:
            raise error("cannot insert %r here" % (layer,))
        image.layers.insert(max(0, min(position, len(image.layers))), layer)

    def gimp_image_remove_layer(self, image, layer):
        _record("gimp_image_remove_layer", image, layer)
        image.layers.remove(layer)

    def gimp_layer_create_mask(self, layer, mask_type):
        _record("gimp_layer_create_mask", layer, mask_type)
        if mask_type == ADD_MASK_WHITE:
            return Channel(layer.width, layer.height, b"\xff" * (layer.width * layer.height))
        if mask_type != ADD_MASK_SELECTION:
            raise error("this stand-in makes white and selection masks only")
        # The selection's own values over the layer's area (a feathered edge stays soft); 0 off the image.
        selection, (offset_x, offset_y) = layer.image.selection, layer.offsets
        coverage = bytearray(layer.width * layer.height)
        for row in range(layer.height):
            for column in range(layer.width):
                x, y = column + offset_x, row + offset_y
                if 0 <= x < selection.width and 0 <= y < selection.height:
                    coverage[row * layer.width + column] = selection.pixels[y * selection.width + x]
        return Channel(layer.width, layer.height, coverage)

    def gimp_layer_add_mask(self, layer, mask):
        _record("gimp_layer_add_mask", layer, mask)
        if layer not in layer.image.layers or layer.mask is not None:
            raise error("a mask needs a layer in the image that has none yet")
        layer.mask = mask


class Gimp(object):
    """The `gimp` module: progress, messages, and the Image and Layer constructors."""

    Image = Image
    Layer = Layer
    GroupLayer = GroupLayer
    Display = Display

    def __init__(self, pdb):
        self.pdb = pdb

    def progress_init(self, message=None):
        _record("gimp.progress_init", message)

    def progress_update(self, percentage):
        _record("gimp.progress_update", percentage)

    def message(self, message):
        _record("gimp.message", message)
        messages.append(message)

    def image_list(self):
        _record("gimp.image_list")
        return [image for image in images if not image.deleted]

    def displays_flush(self):
        _record("gimp.displays_flush")


pdb = Pdb()
gimp = Gimp(pdb)
