"""The GIMP 2.10 plug-in, run on the stand-in gimpfu against the real engine (random weights):
registration, a run's layer, the selection, errors.

Images are tiny and runs take 2 iterations: these tests check the glue (registration,
pixels in and out, layers, undo, progress, errors, cleanup), never how results look.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from drive_plugin import load_plugin, new_image, plugin_args
from gimp2_harness import PARAM_NAMES, PLUGIN, EngineSpy, call_names, channel

from nst_core.options import KEEP_COLORS, LIMITS, Options
from nst_core.paintings import PAINTINGS
from nst_core.presets import DEFAULT_PRESET, PRESETS, USER_PRESETS

# Registration


def test_registration_takes_presets_defaults_and_ranges_from_the_engine(plugin, gimpfu) -> None:
    entry = gimpfu.registered["python-fu-neural-style"]
    assert entry["label"] == "Neural _Style..."
    assert (entry["menu"], entry["imagetypes"]) == ("<Image>/Filters", "RGB*, GRAY*")
    assert entry["results"] == [] and entry["function"] is plugin.neural_style
    # gimpfu hands the image and the active drawable only to leading PF_IMAGE and PF_DRAWABLE params.
    assert [param[0] for param in entry["params"][:2]] == [gimpfu.PF_IMAGE, gimpfu.PF_DRAWABLE]
    params = {param[1]: param for param in entry["params"][2:]}
    assert list(params) == PARAM_NAMES
    kinds = {
        gimpfu.PF_LAYER: "layer",
        gimpfu.PF_FILE: "file",
        gimpfu.PF_SLIDER: "slider",
        gimpfu.PF_OPTION: "option",
        gimpfu.PF_SPINNER: "spinner",
        gimpfu.PF_TOGGLE: "toggle",
    }
    assert [kinds[params[name][0]] for name in PARAM_NAMES] == [
        "option",
        "option",
        "file",
        "layer",
        "option",
        "option",
        "file",
        "layer",
        "slider",
        "option",
        "option",
        "slider",
        "option",
        "slider",
        "spinner",
        "spinner",
        "spinner",
        "option",
        "toggle",
        "toggle",
    ]

    user = [PRESETS[name] for name in USER_PRESETS]
    assert params["preset"][4] == [preset.label for preset in user]
    assert params["preset"][3] == USER_PRESETS.index(DEFAULT_PRESET)
    defaults = Options()
    assert params["strength"][3:] == (defaults.strength, (LIMITS["strength"][0], 10.0, 0.1))
    assert params["style_scale"][3:] == (defaults.style_scale, LIMITS["style_scale"] + (0.05,))
    assert params["size"][3:] == (0, (0, LIMITS["size"][1], 32))
    assert params["iterations"][3:] == (0, (0, LIMITS["iterations"][1], 10))
    assert params["seed"][3:] == (defaults.seed, (0, LIMITS["seed"][1], 1))
    assert len(params["keep_colors"][4]) == len(KEEP_COLORS)
    assert params["keep_colors"][3] == KEEP_COLORS.index(defaults.keep_colors)
    assert [label.split(" ")[0] for label in params["device"][4]] == ["Automatic", "GPU", "CPU"]
    assert params["device"][3] == 0
    assert (params["style"][3], params["style2"][3], params["blend"][3]) == ("", "", 0.5)
    assert params["frames"][2:] == ("Layers are animation frames", False)
    assert params["keep_on_cancel"][2:] == ("On Cancel: keep the picture so far", False)
    # A layer menu always has a layer selected, so the source says which one counts, File first.
    for name in ("style_from", "style2_from"):
        assert params[name][3:] == (0, ["File", "Layer", "Painting"])
    titles = [painting.title for painting in PAINTINGS.values()]
    assert (
        params["painting"][3:] == params["style2_painting"][3:] == (titles.index("The Starry Night"), titles)
    )
    assert params["style_layer"][2:] == ("Style layer (instead of the file)", None)
    assert params["style2_layer"][2:] == ("Second style layer (instead of the file)", None)
    common = plugin.nst_common
    assert params["region"][3:] == (0, [label for _nick, label in common.REGIONS])
    assert common.REGIONS[0][0] == common.REGION_WHOLE


def test_registration_works_without_a_config_and_running_says_install(
    gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style_file: str
) -> None:
    monkeypatch.setenv("NST_PLUGIN_CONFIG", str(tmp_path / "no-such-config.json"))
    monkeypatch.delenv("NST_ENGINE_PYTHON", raising=False)
    plugin = load_plugin(str(PLUGIN))
    params = {param[1]: param for param in gimpfu.registered["python-fu-neural-style"]["params"]}
    assert params["preset"][4] == ["Balanced"] and params["keep_colors"][4] == ["Off"]
    assert params["region"][4] == [label for _nick, label in plugin.nst_common.REGIONS]

    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    plugin.neural_style(image, layer, *plugin_args(style_file))
    assert len(gimpfu.messages) == 1 and "install.py" in gimpfu.messages[0]
    assert image.layers == [layer] and image.open_undo_groups == 0


# A run with the real engine


def test_run_adds_the_engines_result_as_a_layer_above_the_source(plugin, gimpfu, monkeypatch, style_file):
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGBA_IMAGE, offsets=(5, 7), name="Portrait")
    below = gimpfu.gimp.Layer(image, "Background", 60, 50, gimpfu.RGB_IMAGE)
    gimpfu.pdb.gimp_image_insert_layer(image, below, None, 1)
    source = bytes(layer.pixels)
    gimpfu.reset()

    # GTK spinners hand gimpfu floats: iterations 2.0 must still reach the engine as 2.
    plugin.neural_style(image, layer, *plugin_args(style_file, iterations=2.0, seed=3.0))

    assert gimpfu.messages == []
    assert [item.name for item in image.layers] == [
        "Portrait (Neural Style: Starry night)",
        "Portrait",
        "Background",
    ]
    result = image.layers[0]
    assert (result.width, result.height, result.type, result.offsets) == (40, 30, gimpfu.RGBA_IMAGE, (5, 7))
    assert result.mask is None  # no selection: nothing to mask
    assert spy.content == (source, 40, 30, "u8", 4)
    assert spy.styles == [(style_file, 1.0)]
    assert spy.options == {
        "preset": USER_PRESETS[0],
        "strength": 1.0,
        "keep_colors": "off",
        "style_scale": 1.0,
        "seed": 3,
        "device": "cpu",
        "iterations": 2,
    }
    assert bytes(result.pixels) == spy.result
    assert channel(spy.result, 4, 3) == channel(source, 4, 3)  # alpha kept exactly
    assert bytes(layer.pixels) == source  # the source layer is untouched

    names = call_names(gimpfu)
    assert names.count("gimp_image_undo_group_start") == names.count("gimp_image_undo_group_end") == 1
    assert names.index("gimp_image_undo_group_start") < names.index("gimp_image_insert_layer")
    assert names.index("gimp_image_insert_layer") < names.index("gimp_image_undo_group_end")
    assert names.index("drawable.flush") < names.index("gimp_image_undo_group_end")
    assert image.open_undo_groups == 0
    assert gimpfu.called("gimp.progress_init")
    fractions = [args[0] for args in gimpfu.called("gimp.progress_update")]
    assert fractions and all(0.0 <= f <= 1.0 for f in fractions) and max(fractions) > 0
    assert any("iteration" in args[0] for args in gimpfu.called("gimp_progress_set_text"))


def test_a_bundled_painting_is_the_style_when_chosen(plugin, gimpfu, monkeypatch, style_file) -> None:
    """Style from Painting: the engine gets the painting's file, not the file also given; the same for the
    second style, which then takes its share."""
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 24, 16, gimpfu.RGB_IMAGE, name="Photo")
    names = list(PAINTINGS)
    args = plugin_args(
        style_file, style_from=2, painting=names.index("the-scream"), style2_from=2, style2_painting=2
    )
    plugin.neural_style(image, layer, *args)
    assert gimpfu.messages == []
    scream, shipwreck = str(PAINTINGS["the-scream"].path), str(PAINTINGS["shipwreck"].path)
    assert spy.styles == [(scream, 0.5), (shipwreck, 0.5)]
    assert image.layers[0].name == "Photo (Neural Style: the_scream + shipwreck)"


def test_a_dialog_left_alone_paints_the_default_painting(plugin, gimpfu, monkeypatch) -> None:
    """A first run with nothing chosen: Style from File with no file is the painting its menu shows."""
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 24, 16, gimpfu.RGB_IMAGE, name="Photo")
    values = dict(zip(PARAM_NAMES, gimpfu.dialog_values("python-fu-neural-style"), strict=True))
    values.update(iterations=2.0, device=2)
    plugin.neural_style(image, layer, *values.values())
    assert gimpfu.messages == []
    assert spy.styles == [(str(PAINTINGS["starry-night"].path), 1.0)]
    assert image.layers[0].name == "Photo (Neural Style: starry_night)"


def test_selection_limits_the_run_and_masks_the_new_layer(plugin, gimpfu, monkeypatch, style_file) -> None:
    spy = EngineSpy(monkeypatch, plugin.nst_bridge)
    image, layer = new_image(gimpfu, 40, 30, gimpfu.GRAY_IMAGE, offsets=(3, 4))
    gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, 13, 9, 20, 16)
    source = bytes(layer.pixels)
    gimpfu.reset()

    plugin.neural_style(image, layer, *plugin_args(style_file, style2=style_file, blend=0.25))

    assert gimpfu.messages == []
    crop = b"".join(source[row * 40 + 10 : row * 40 + 30] for row in range(5, 21))  # layer coordinates
    assert spy.content == (crop, 20, 16, "u8", 1)
    assert spy.styles == [(style_file, 0.75), (style_file, 0.25)]
    result = image.layers[0]
    assert result.name == "Photo (Neural Style: Starry night + Starry night)"  # both styles, as in GIMP 3
    assert (result.width, result.height, result.type, result.offsets) == (20, 16, gimpfu.GRAY_IMAGE, (13, 9))
    assert bytes(result.pixels) == spy.result
    assert result.mask is not None and set(result.mask.pixels) == {255}
    assert image.open_undo_groups == 0


# Errors and cancelling


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"style_from": 1, "style_layer": None}, "no layer is given"),  # no file: see the default painting
        ({"style": "/no/such/style.png"}, "not found"),
        ({"preset": 7}, "out of range"),
    ],
    ids=["no-style-layer", "missing-style", "bad-choice"],
)
def test_errors_reach_the_user_and_leave_the_image_alone(plugin, gimpfu, style_file, change, words) -> None:
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGBA_IMAGE)
    values = dict(zip(PARAM_NAMES, plugin_args(style_file), strict=True))
    values.update(change)
    plugin.neural_style(image, layer, *values.values())
    assert len(gimpfu.messages) == 1 and words in gimpfu.messages[0]
    assert "\n" not in gimpfu.messages[0] and "Traceback" not in gimpfu.messages[0]
    assert image.layers == [layer] and not gimpfu.called("gimp_layer_new")
    assert image.open_undo_groups == 0 and gimpfu.called("gimp_image_undo_group_end")


def test_engine_errors_reach_the_user(plugin, gimpfu, tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    plugin.neural_style(image, layer, *plugin_args(str(broken)))
    assert len(gimpfu.messages) == 1 and "broken.png" in gimpfu.messages[0], gimpfu.messages
    assert "\n" not in gimpfu.messages[0] and "Traceback" not in gimpfu.messages[0]
    assert image.layers == [layer] and image.open_undo_groups == 0


def test_selection_outside_the_layer_is_refused(plugin, gimpfu, style_file) -> None:
    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE, offsets=(2, 2))
    # The image is 44 x 34 and the selection stays on it (GIMP clips it there): a corner off the layer.
    gimpfu.pdb.gimp_image_select_rectangle(image, gimpfu.CHANNEL_OP_REPLACE, 42, 32, 5, 5)
    plugin.neural_style(image, layer, *plugin_args(style_file))
    assert len(gimpfu.messages) == 1 and "selection does not touch" in gimpfu.messages[0]
    assert image.layers == [layer] and image.open_undo_groups == 0
