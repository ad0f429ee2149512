"""The GIMP 2.10 plug-in's layers as animation frames, a layer as the style, and the selection as the
region, on the stand-in gimpfu against the real engine (random weights; one case on Python 2.7).
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from drive_plugin import new_image, pattern, plugin_args
from gimp2_harness import PARAM_NAMES, EngineSpy, call_names, channel, run_on_python27

FRAME_NAMES = ["Frame 1 (100ms) (combine)", "Frame 2 (200ms) (replace)", "Frame 3 (100ms)"]


def animation(gimpfu, width: int, height: int, layer_type: int) -> tuple:
    """A stand-in image of three frames (bottom first, as Playback plays them) with a moving block."""
    image, first = new_image(gimpfu, width, height, layer_type, name=FRAME_NAMES[0])
    frames = [first]
    for index, name in enumerate(FRAME_NAMES[1:], start=1):
        layer = gimpfu.gimp.Layer(image, name, width, height, layer_type)
        data = bytearray(pattern(width, height, layer.bpp))
        for row in range(4, 10):
            start = (row * width + 4 * index) * layer.bpp
            data[start : start + 6 * layer.bpp] = b"\xf0" * (6 * layer.bpp)
        layer.fill_pixels(bytes(data))
        gimpfu.pdb.gimp_image_insert_layer(image, layer, None, 0)
        frames.append(layer)
    gimpfu.reset()
    return image, frames


def test_frames_go_to_a_new_image_bottom_layer_first(plugin, gimpfu, monkeypatch, style_file) -> None:
    bridge = plugin.nst_bridge
    handed, add_frame = [], bridge.FramesRun.add_frame

    def spy_add_frame(run, data, width, height, channels, name):
        handed.append((name, data, width, height, channels))
        return add_frame(run, data, width, height, channels, name)

    monkeypatch.setattr(bridge.FramesRun, "add_frame", spy_add_frame)
    image, frames = animation(gimpfu, 40, 36, gimpfu.RGBA_IMAGE)
    sources = [bytes(layer.pixels) for layer in frames]
    # The middle frame is active: the frames are the layers beside it. Working size 32: scaled back up.
    plugin.neural_style(image, frames[1], *plugin_args(style_file, size=32, frames=True))

    assert gimpfu.messages == []
    assert [name for name, *_rest in handed] == FRAME_NAMES
    assert [data for _name, data, *_rest in handed] == sources
    assert image.layers == frames[::-1] and [bytes(layer.pixels) for layer in frames] == sources
    assert gimpfu.displays and len(gimpfu.displays) == 1
    new = gimpfu.displays[0]
    assert new is not image and (new.width, new.height) == (image.width, image.height)
    assert [layer.name for layer in new.layers] == [
        "Frame 3 styled (100ms)",
        "Frame 2 styled (200ms) (replace)",
        "Frame 1 styled (100ms) (combine)",
    ]
    for layer, source in zip(new.layers[::-1], sources, strict=True):
        assert (layer.width, layer.height, layer.type, layer.offsets) == (40, 36, gimpfu.RGBA_IMAGE, (0, 0))
        assert layer.mask is None and bytes(layer.pixels) != source
    assert [args[1:] for args in gimpfu.called("gimp_layer_scale")] == [(40, 36, True)] * 3
    assert new.undo_enabled and image.open_undo_groups == 0
    names = call_names(gimpfu)
    assert names.index("gimp_image_undo_disable") < names.index("gimp_image_insert_layer")
    assert names.index("gimp_image_insert_layer") < names.index("gimp_image_undo_enable")
    texts = [args[0] for args in gimpfu.called("gimp_progress_set_text")]
    assert any(text.startswith("Neural style: frame 3/3") for text in texts)


def test_each_frame_appears_in_the_new_image_as_it_is_finished(plugin, gimpfu, monkeypatch, style_file):
    image, frames = animation(gimpfu, 40, 36, gimpfu.RGB_IMAGE)
    shown: list[list[tuple]] = []  # at each display flush: the new image's frames, bottom first
    monkeypatch.setattr(
        gimpfu.Gimp,
        "displays_flush",
        lambda self: shown.append([(i.name, bytes(i.pixels)) for i in gimpfu.displays[0].layers[::-1]]),
    )
    plugin.neural_style(image, frames[0], *plugin_args(style_file, size=32, frames=True))

    assert gimpfu.messages == []
    final = [(layer.name, bytes(layer.pixels)) for layer in gimpfu.displays[0].layers[::-1]]
    assert len(final) == 3 and shown == [final[:1], final[:2], final]
    assert gimpfu.displays[0].undo_enabled and image.open_undo_groups == 0


def test_cancel_keeps_the_finished_frames_and_a_failure_none(plugin, gimpfu, monkeypatch, style_file):
    image, frames = animation(gimpfu, 40, 36, gimpfu.RGB_IMAGE)
    flushed: list[int] = []
    monkeypatch.setattr(gimpfu.Gimp, "displays_flush", lambda self: flushed.append(1))

    def cancel_after_the_first_frame(self, fraction: float) -> None:
        if flushed:  # GIMP's Cancel ends the plug-in at once: an uncaught exit stands for it
            raise SystemExit(0)

    monkeypatch.setattr(gimpfu.Gimp, "progress_update", cancel_after_the_first_frame)
    with pytest.raises(SystemExit):
        plugin.neural_style(image, frames[0], *plugin_args(style_file, size=32, frames=True))
    kept = gimpfu.displays[0]
    assert [layer.name for layer in kept.layers] == ["Frame 1 styled (100ms) (combine)"]
    assert kept.undo_enabled and not getattr(kept, "deleted", False)

    gimpfu.reset()
    bridge, item = plugin.nst_bridge, plugin.nst_bridge.FramesRun._item

    def fail_the_second_frame(run, event):
        if event.get("status") == "done" and int(event["item"]) == 2:
            event = dict(event, status="failed", message="out of memory")
        return item(run, event)

    monkeypatch.setattr(bridge.FramesRun, "_item", fail_the_second_frame)
    monkeypatch.setattr(gimpfu.Gimp, "progress_update", lambda self, fraction: None)
    plugin.neural_style(image, frames[0], *plugin_args(style_file, size=32, frames=True))
    assert (
        len(gimpfu.messages) == 1 and "Frame 2 (200ms) (replace)' failed: out of memory" in gimpfu.messages[0]
    )
    deleted = [display.image for (display,) in gimpfu.called("gimp_display_delete")]
    assert gimpfu.displays == [] and len(deleted) == 1 and deleted[0].deleted  # frame 1 went with it
    assert image.layers == frames[::-1] and image.open_undo_groups == 0


@pytest.mark.parametrize(
    "setup, words",
    [
        ("one_layer", "needs two or more layers"),
        ("group", "'Group' is a layer group"),
        ("missing_style", "not found"),
    ],
)
def test_frames_that_cannot_run_make_no_image(plugin, gimpfu, style_file, setup: str, words: str) -> None:
    if setup == "one_layer":
        image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
        frames = [layer]
    else:
        image, frames = animation(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    if setup == "group":
        gimpfu.pdb.gimp_image_insert_layer(image, gimpfu.gimp.GroupLayer(image, "Group"), None, 1)
    layers = list(image.layers)
    style = "/no/such/style.png" if setup == "missing_style" else style_file
    plugin.neural_style(image, frames[0], *plugin_args(style, frames=True))
    assert len(gimpfu.messages) == 1 and words in gimpfu.messages[0], gimpfu.messages
    assert "\n" not in gimpfu.messages[0] and "Traceback" not in gimpfu.messages[0]
    assert image.layers == layers and image.open_undo_groups == 0
    assert gimpfu.displays == [] and not gimpfu.called("gimp_image_duplicate")


# A layer as the style, and the selection as the region

PROC = "python-fu-neural-style"


def style_image_layer(gimpfu, path: str, name: str = "Starry layer"):
    """The style file's pixels as the layer of another open image, as File > Open would give them."""
    from PIL import Image as PILImage

    picture = PILImage.open(path).convert("RGB")
    other = gimpfu.gimp.Image(picture.width, picture.height)
    layer = gimpfu.gimp.Layer(other, name, picture.width, picture.height, gimpfu.RGB_IMAGE)
    layer.fill_pixels(picture.tobytes())
    gimpfu.pdb.gimp_image_insert_layer(other, layer, None, 0)
    gimpfu.reset()
    return other, layer


def test_a_style_layer_of_another_image_gives_what_its_file_gives(plugin, gimpfu, monkeypatch, style_file):
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    other, style_layer = style_image_layer(gimpfu, style_file)
    style_pixels = bytes(style_layer.pixels)

    plugin.neural_style(image, layer, *plugin_args(style_file, seed=3))
    by_file = image.layers[0]
    # The file stays chosen too: Style from Layer makes the layer count instead.
    plugin.neural_style(image, layer, *plugin_args(style_file, style_from=1, style_layer=style_layer, seed=3))

    assert gimpfu.messages == []
    by_layer = image.layers[1]  # each result goes directly above the source
    assert [item.name for item in image.layers] == [
        "Photo (Neural Style: Starry night)",
        "Photo (Neural Style: Starry layer)",
        "Photo",
    ]
    ((style, weight),) = spy.styles
    assert isinstance(style, plugin.nst_common.StylePixels) and weight == 1.0
    assert (style.width, style.height, style.format, style.channels) == (48, 48, "u8", 3)
    assert style.data == style_pixels
    assert bytes(by_layer.pixels) == bytes(by_file.pixels) != bytes(layer.pixels)
    assert other.layers == [style_layer] and bytes(style_layer.pixels) == style_pixels  # only read


def test_a_style_layer_with_partial_alpha(plugin, gimpfu, monkeypatch, style_file) -> None:
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGBA_IMAGE)
    other = gimpfu.gimp.Image(36, 28)
    style_layer = gimpfu.gimp.Layer(other, "Glass", 36, 28, gimpfu.RGBA_IMAGE)
    style_layer.fill_pixels(pattern(36, 28, 4))  # opaque on the left, alpha from 60 to 249 on the right
    gimpfu.pdb.gimp_image_insert_layer(other, style_layer, None, 0)
    # As the second style, mixed with the file.
    args = plugin_args(style_file, style2_from=1, style2_layer=style_layer, blend=0.25, seed=2)
    plugin.neural_style(image, layer, *args)

    assert gimpfu.messages == []
    (first, first_weight), (second, second_weight) = spy.styles
    assert (first, first_weight, second_weight) == (style_file, 0.75, 0.25)
    assert (second.width, second.height, second.channels) == (36, 28, 4)
    assert second.data == bytes(style_layer.pixels) and len(set(second.data[3::4])) > 50
    result = image.layers[0]
    assert result.name == "Photo (Neural Style: Starry night + Glass)"
    assert bytes(result.pixels) == spy.result != bytes(layer.pixels)


def test_a_dialog_left_alone_takes_the_style_file(plugin, gimpfu, monkeypatch, style_file) -> None:
    """gimpfu's layer menus always select a layer, here the content itself: Style from File keeps it out."""
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    values = dict(zip(PARAM_NAMES, gimpfu.dialog_values(PROC), strict=True))
    assert values["style_layer"] is layer and values["style2_layer"] is layer  # what the menus show
    values.update(style=style_file, iterations=2.0, device=2)  # the user picks a file, and a short run
    plugin.neural_style(image, layer, *values.values())

    assert gimpfu.messages == []
    assert spy.styles == [(style_file, 1.0)] and spy.masks is None
    assert image.layers[0].name == "Photo (Neural Style: Starry night)"


def mean_change(before: bytes, after: bytes, coverage: bytes, bpp: int, inside: bool) -> float:
    """The mean absolute change of the pixels inside (or outside) `coverage`, colour channels only."""
    import numpy as np

    old = np.frombuffer(before, np.uint8).reshape(-1, bpp)[:, :3].astype(float)
    new = np.frombuffer(after, np.uint8).reshape(-1, bpp)[:, :3].astype(float)
    where = np.frombuffer(coverage, np.uint8) == 255 if inside else np.frombuffer(coverage, np.uint8) == 0
    return float(np.abs(new - old)[where].mean())


def rectangle_coverage(width: int, height: int, x: int, y: int, w: int, h: int) -> bytes:
    coverage = bytearray(width * height)
    for row in range(y, y + h):
        coverage[row * width + x : row * width + x + w] = b"\xff" * w
    return bytes(coverage)


def test_region_inside_styles_the_selection_on_the_whole_layer(plugin, gimpfu, monkeypatch, style_file):
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    # A layer wider than the image and off its left edge: the selection cannot reach the columns off it.
    image = gimpfu.gimp.Image(44, 44)
    layer = gimpfu.gimp.Layer(image, "Photo", 48, 36, gimpfu.RGB_IMAGE)
    layer.fill_pixels(pattern(48, 36, 3))
    gimpfu.pdb.gimp_image_insert_layer(image, layer, None, 0)
    layer.set_offsets(-4, 6)
    gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, 0, 12, 24, 20)
    source = bytes(layer.pixels)
    gimpfu.reset()

    plugin.neural_style(image, layer, *plugin_args(style_file, region=1, iterations=4.0, seed=1))

    assert gimpfu.messages == []
    expected = rectangle_coverage(48, 36, 4, 6, 24, 20)  # image x 0..24 is layer x 4..28; 0..4 is off it
    assert [mask.data for mask in spy.masks] == [expected]
    assert spy.content == (source, 48, 36, "u8", 3)  # the whole layer, not the selection's box
    result = image.layers[0]
    assert result.name == "Photo (Neural Style: Starry night)"
    assert (result.width, result.height, result.offsets) == (48, 36, (-4, 6))
    assert result.mask is None and bytes(result.pixels) == spy.result
    # Random weights, 4 iterations: measured 51 inside, 15 outside, 11 from 8 px off the region on (where
    # a run without a region changes the same pixels by 38 and 45).
    inside = mean_change(source, spy.result, expected, 3, True)
    outside = mean_change(source, spy.result, expected, 3, False)
    far = rectangle_coverage(48, 36, 0, 0, 36, 36)  # its outside: columns 36 on, 8 px off the region
    beyond = mean_change(source, spy.result, far, 3, False)
    assert inside > 2 * outside and inside > 3 * beyond, (inside, outside, beyond)
    assert image.open_undo_groups == 0 and bytes(layer.pixels) == source


def test_region_split_gives_each_style_its_side_of_a_feathered_selection(
    plugin, gimpfu, monkeypatch, style_file
) -> None:
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 48, 32, gimpfu.RGBA_IMAGE, offsets=(2, 3))
    _other, style_layer = style_image_layer(gimpfu, style_file)
    # A selection feathered over 16 columns: the left of the image selected, fading out to the right.
    ramp = [255] * 16 + [255 - 16 * i for i in range(16)] + [0] * 20
    image.select(bytes(ramp) * 38)
    source = bytes(layer.pixels)
    args = plugin_args(style_file, style2_from=1, style2_layer=style_layer, region=2, seed=4)
    plugin.neural_style(image, layer, *args)

    assert gimpfu.messages == []
    coverage = bytes(ramp[2:50]) * 32  # the layer starts at x 2
    inside, outside = spy.masks
    assert inside.data == coverage and outside.data == bytes(255 - value for value in coverage)
    assert [weight for _style, weight in spy.styles] == [0.5, 0.5]
    result = image.layers[0]
    assert result.name == "Photo (Neural Style: Starry night + Starry layer)"
    assert (result.width, result.height, result.offsets) == (48, 32, (2, 3)) and result.mask is None
    assert bytes(result.pixels) == spy.result != source
    assert channel(spy.result, 4, 3) == channel(source, 4, 3)


@pytest.mark.parametrize(
    ("setup", "words"),
    [
        ("split_one_style", "needs a second style"),
        ("inside_no_selection", "The region is empty"),
        ("inside_selection_off_the_layer", "The region is empty"),
        ("frames_with_region", "Regions are not available for animation frames"),
        ("layer_style_without_layer", "Style from is Layer but no layer is given"),
    ],
)
def test_regions_and_layers_that_cannot_be_change_nothing(plugin, gimpfu, style_file, setup, words) -> None:
    image, frames = animation(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    values = {"region": 1}
    if setup == "split_one_style":
        values["region"] = 2
        gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, 0, 0, 20, 30)
    elif setup == "inside_selection_off_the_layer":
        frames[-1].set_offsets(20, 0)  # half off the canvas, and the selection on the other half
        gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, 0, 0, 10, 30)
    elif setup == "frames_with_region":
        values["frames"] = True
    elif setup == "layer_style_without_layer":
        values.update(region=0, style_from=1)
    layers, pixels = list(image.layers), [bytes(layer.pixels) for layer in image.layers]
    selection = bytes(image.selection.pixels)
    gimpfu.reset()

    plugin.neural_style(image, frames[-1], *plugin_args(style_file, **values))

    assert len(gimpfu.messages) == 1 and words in gimpfu.messages[0], gimpfu.messages
    assert "\n" not in gimpfu.messages[0] and "Traceback" not in gimpfu.messages[0]
    assert image.layers == layers and [bytes(layer.pixels) for layer in image.layers] == pixels
    assert bytes(image.selection.pixels) == selection
    assert not gimpfu.called("gimp_layer_new") and not gimpfu.called("gimp_image_duplicate")
    assert gimpfu.displays == [] and image.open_undo_groups == 0


def test_a_style_layer_and_a_region_on_python27(config_file, style_file, tmp_path: Path) -> None:
    report = run_on_python27(
        tmp_path,
        style=style_file,
        width=24,
        height=20,
        layer_type=1,
        offsets=[4, 6],
        iterations=2,
        region=2,
        selection=[0, 0, 16, 40],
        style_layer=[20, 18, 1],
    )
    assert report["python"] == [2, 7] and report["messages"] == [] and report["open_undo_groups"] == 0
    inside = rectangle_coverage(24, 20, 0, 0, 12, 20)  # image x 0..16 is layer x 0..12
    assert [base64.b64decode(mask) for mask in report["masks"]] == [
        inside,
        bytes(255 - value for value in inside),
    ]
    result = report["layers"][0]
    assert result["name"] == "Photo (Neural Style: Starry night + Pattern)"
    assert (result["width"], result["height"], result["offsets"], result["mask"]) == (24, 20, [4, 6], False)
