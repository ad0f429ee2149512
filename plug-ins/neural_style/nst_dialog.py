"""The GIMP 3 plug-in's dialog: the procedure's controls (GIMP draws them from its arguments), the style
files' choosers, the time estimate (nst_estimate.py) and the preview (nst_preview.py) beside them.
"""

import json
import os
import sys
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import nst_common  # noqa: E402
import nst_estimate  # noqa: E402
import nst_preview  # noqa: E402
from gi.repository import Gegl, Gimp, Gio, GLib, GObject  # noqa: E402
from nst_procedure import (  # noqa: E402
    CHOICE_ARGUMENTS,
    PROC_NAME,
    SOURCE_FILE,
    SOURCE_LAYER,
    SOURCE_NONE,
    SOURCE_PAINTING,
    STYLE_PREFIXES,
    check_layers,
    has_region,
    read_options,
    read_region,
    read_styles,
    region_part,
    style_count,
)

# The dialog's groups, as GIMP's own filters group theirs: (id, title, rows), each row an argument. The
# style's rows show the one source chosen (follow_sources); Advanced starts closed.
GROUPS = (
    (
        "style",
        "Style",
        (
            "style-source",
            "style-painting",
            "style-file",
            "style-layer",
            "style2-source",
            "style2-painting",
            "style2-file",
            "style2-layer",
            "style2-blend",
        ),
    ),
    ("where", "Where", ("region", "region-channel")),
    ("look", "Look", ("preset", "strength", "keep-colors", "style-scale")),
    ("advanced", "Ad_vanced", ("size", "iterations", "seed", "device", "frames", "keep-on-cancel")),
)
FILE_ROWS = ("style-file", "style2-file")  # not GIMP's widgets: file_chooser's
# Check boxes that share one row: stacked, they made GIMP 3.0's dialog taller than a 768-pixel screen.
TOGGLE_ROW = ("frames", "keep-on-cancel")


def file_chooser(config: Gimp.ProcedureConfig, name: str) -> object:
    """An OPEN chooser bound to an ANY-action file argument (see neural_style.add_argument)."""
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
ESTIMATE_PROPERTIES = (
    "preset",
    "size",
    "iterations",
    "device",
    "style2-source",
    "style2-file",
    "style2-layer",
    "region",
)


def estimate_command(config: Gimp.ProcedureConfig, engine_config: dict, layers: list) -> list[str]:
    """The engine's plan command for the first layer's selected part (all of it with a region), with
    the dialog's settings."""
    layer = check_layers(layers)[0]
    masked = has_region(config)
    _x, _y, width, height = region_part(layer, masked)
    styles = style_count(config)
    options = read_options(config, engine_config)
    return nst_estimate.plan_command(engine_config, width, height, styles, options, masked)


def start_sources(config: Gimp.ProcedureConfig) -> None:
    """A style given neither as a file nor as a layer shows as what it means: the first style a painting
    (so that OK works on first use), the second none."""
    for prefix, empty in zip(STYLE_PREFIXES, (SOURCE_PAINTING, SOURCE_NONE), strict=True):
        given = config.get_property(prefix + "-file") or config.get_property(prefix + "-layer")
        if config.get_property(prefix + "-source") in (SOURCE_FILE, SOURCE_LAYER) and not given:
            config.set_property(prefix + "-source", empty)


def keep_chosen_sources(config: Gimp.ProcedureConfig) -> None:
    """On OK: a file and a layer both given read as the layer (nst_procedure.read_style), so the one the
    source does not name is cleared, and the run uses what the dialog showed."""
    for prefix in STYLE_PREFIXES:
        source = config.get_property(prefix + "-source")
        if source == SOURCE_FILE:
            config.set_property(prefix + "-layer", None)
        elif source == SOURCE_LAYER:
            config.set_property(prefix + "-file", None)


def follow_sources(config: Gimp.ProcedureConfig, rows: dict) -> None:
    """Each style shows the row of its source only (and the second's share when there is one), and the
    region's channel only with a region: rows hidden rather than greyed keep the dialog short."""

    def update(*_ignored: object) -> None:
        for prefix in STYLE_PREFIXES:
            source = config.get_property(prefix + "-source")
            for kind in (SOURCE_PAINTING, SOURCE_FILE, SOURCE_LAYER):
                rows[f"{prefix}-{kind}"].set_visible(source == kind)
        rows["style2-blend"].set_visible(config.get_property("style2-source") != SOURCE_NONE)
        rows["region-channel"].set_visible(has_region(config))

    for name in ("style-source", "style2-source", "region"):
        config.connect("notify::" + name, update)
    update()


PREVIEW_DELAY_MS = 800  # after a first preview, settings that stop changing this long are previewed again
PREVIEW_HINT = "Preview: the settings on a small copy of the layer."


def preview_job(image: Gimp.Image, layers: list, config: Gimp.ProcedureConfig, engine_config: dict):
    """A small copy of the first layer (its selected part, or all of it in a region) and what runs on it."""
    layer = check_layers(layers)[0]
    styles = read_styles(config, engine_config, longest=2 * nst_preview.preview_settings(engine_config)[0])
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
        if os.environ.get("NST_DEBUG") == "1":  # the dialog's tests click it where it is
            self.button.connect("size-allocate", self.report_place)
        self.label = Gtk.Label(label=PREVIEW_HINT, xalign=0.0, wrap=True, max_width_chars=30)
        self.picture = Gtk.Image(valign=Gtk.Align.START)
        self.box.pack_start(self.button, False, False, 0)
        self.box.pack_start(self.label, False, False, 0)
        self.box.pack_start(self.picture, False, False, 0)
        self.box.show_all()
        self.picture.hide()
        config.connect("notify", self.changed)
        nst_preview.warm_up(engine_config)
        GLib.idle_add(self.read_ahead)

    def read_ahead(self) -> bool:
        """Read what a preview reads once, as the dialog opens. The first read of a layer at the preview's
        scale waits for GIMP to hand its tiles over (0.23 s for a 512x512 layer); the press of Preview
        then finds them here. Whatever is wrong (no style yet) is for the press to say."""
        try:
            preview_job(self.image, self.layers, self.config, self.engine_config)
        except Exception:  # only reading ahead: the press reads again and reports what is wrong
            pass
        return False  # GLib.idle_add: once

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

    def report_place(self, button: object, _allocation: object) -> None:
        """For the dialog's tests (NST_DEBUG=1): the button's middle in its window, where they click it
        as a user would (a key press on a GTK button shows it pressed for 0.25 s before it acts)."""
        place = button.translate_coordinates(button.get_toplevel(), 0, 0)
        if place is None:
            return  # not in a shown window yet: it is allocated again when it is
        x, y = place
        x, y = x + button.get_allocated_width() // 2, y + button.get_allocated_height() // 2
        print(f"neural-style preview button: {x} {y}", file=sys.stderr, flush=True)

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


def fill_groups(dialog: object, config: Gimp.ProcedureConfig) -> dict:
    """GROUPS in the dialog: a frame each, Advanced an expander (closed: GTK's default); {row: widget}."""
    rows = {}
    for group, title, names in GROUPS:
        entries = group_entries(dialog, group, names)
        box = dialog.fill_box(group + "-rows", [name for name in entries if name not in FILE_ROWS])
        for place, name in enumerate(entries):
            if name in FILE_ROWS:
                rows[name] = file_chooser(config, name)
                box.pack_start(rows[name], False, False, 0)
                box.reorder_child(rows[name], place)
        rows.update({name: dialog.get_widget(name, GObject.TYPE_NONE) for name in names if name not in rows})
        label = dialog.get_label(group + "-title", title, False, True)
        if group == "advanced":
            label.set_mnemonic_widget(dialog.fill_expander(group, group + "-title", False, group + "-rows"))
        else:
            dialog.fill_frame(group, group + "-title", False, group + "-rows")
    dialog.fill([group for group, _title, _names in GROUPS])
    return rows


def group_entries(dialog: object, group: str, names: tuple) -> list:
    """A group's rows in order, the TOGGLE_ROW among them as one horizontal box of GIMP's check boxes."""
    toggles = [name for name in names if name in TOGGLE_ROW]
    if len(toggles) < 2:
        return list(names)
    from gi.repository import Gtk

    row = group + "-toggles"
    box = dialog.fill_box(row, toggles)
    box.set_orientation(Gtk.Orientation.HORIZONTAL)
    box.set_spacing(12)
    entries = [name for name in names if name not in toggles[1:]]
    entries[entries.index(toggles[0])] = row
    return entries


def report_layout(dialog: object, rows: dict) -> None:
    """For the dialog's tests (NST_DEBUG=1): each group's shown rows, and whether Advanced is open."""
    if os.environ.get("NST_DEBUG") != "1":
        return
    layout = {}
    for group, _title, names in GROUPS:
        container = dialog.get_widget(group, GObject.TYPE_NONE)
        shown = [name for name in names if rows[name].get_visible() and rows[name].is_ancestor(container)]
        layout[group] = shown
    layout["advanced-open"] = dialog.get_widget("advanced", GObject.TYPE_NONE).get_expanded()
    print("neural-style dialog: " + json.dumps(layout), file=sys.stderr, flush=True)


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
    start_sources(config)
    rows = fill_groups(dialog, config)
    follow_sources(config, rows)
    dialog.connect("map", lambda *_ignored: report_layout(dialog, rows))
    content = dialog.get_content_area()
    # Under the controls: the time the current settings take, and their preview, before OK.
    label, refresh = estimate_label(config, engine_config, drawables)
    content.pack_start(label, False, False, 0)
    preview = DialogPreview(image, drawables, config, engine_config)
    beside(content, preview.box)
    refresh.changed()
    accepted = dialog.run()
    if accepted:
        keep_chosen_sources(config)
    preview.close()
    refresh.close()
    dialog.destroy()
    return accepted
