"""The GIMP 2.10 plug-in, run on the stand-in gimpfu against the real engine (random weights).

Images are tiny and runs take 2 iterations: these tests check the glue (registration,
pixels in and out, layers, undo, progress, errors, cleanup), never how results look.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from drive_plugin import load_plugin, new_image, pattern, plugin_args
from gimp2_harness import BRIDGE, BRIDGE_MODULES, HERE, PLUGIN, engine_config
from interpreters import python27
from servers import pid_alive, wait_until

from nst_core.options import KEEP_COLORS, LIMITS, Options
from nst_core.presets import DEFAULT_PRESET, PRESETS, USER_PRESETS

PARAM_NAMES = [
    "style_from",
    "style",
    "style_layer",
    "style2_from",
    "style2",
    "style2_layer",
    "blend",
    "region",
    "preset",
    "strength",
    "keep_colors",
    "style_scale",
    "size",
    "iterations",
    "seed",
    "device",
    "frames",
]


class EngineSpy:
    """Keeps what the plug-in gave the bridge and what the (real) engine returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bridge) -> None:
        self.content: tuple | None = None
        self.styles: list | None = None
        self.options: dict | None = None
        self.result: bytes | None = None
        self.masks: list | None = None
        set_content, run = bridge.EngineRun.set_content_raw, bridge.EngineRun.run

        def spy_set_content(engine_run, data, width, height, fmt, channels):
            self.content = (data, width, height, fmt, channels)
            return set_content(engine_run, data, width, height, fmt, channels)

        def spy_run(engine_run, styles, options, on_progress, masks=None):
            self.styles, self.options, self.masks = styles, options, masks
            self.result = run(engine_run, styles, options, on_progress, masks)
            return self.result

        monkeypatch.setattr(bridge.EngineRun, "set_content_raw", spy_set_content)
        monkeypatch.setattr(bridge.EngineRun, "run", spy_run)


def channel(data: bytes, bpp: int, index: int) -> bytes:
    return data[index::bpp]


def call_names(gimpfu) -> list[str]:
    return [name for name, _args in gimpfu.calls]


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
        "file",
        "layer",
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
    # A layer menu always has a layer selected, so File (the first choice) says which one counts.
    for name in ("style_from", "style2_from"):
        assert params[name][3:] == (0, ["File", "Layer"])
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
        ({"style": ""}, "No style image chosen"),
        ({"style": "/no/such/style.png"}, "not found"),
        ({"preset": 7}, "out of range"),
    ],
    ids=["no-style", "missing-style", "bad-choice"],
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


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def run_on_python27(tmp_path: Path, report: str = "report.json", **spec) -> dict:
    """Run the plug-in on a real Python 2.7 as GIMP 2.10 does, as `spec` says; the driver's report."""
    report_path = tmp_path / report
    path = write_spec(tmp_path, **spec, report=str(report_path))
    done = subprocess.run(
        [python27(), str(HERE / "drive_plugin.py"), str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(report_path.read_text(encoding="utf-8"))


def write_spec(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killing_the_plugin_stops_the_engine(config_file, style_file, tmp_path: Path, how) -> None:
    marker = tmp_path / "progress.txt"
    spec = write_spec(
        tmp_path,
        style=style_file,
        width=40,
        height=30,
        layer_type=1,
        iterations=100000,
        marker=str(marker),
        report=str(tmp_path / "report.json"),
    )
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(private_tmp))  # where the bridge makes its run folder
    plugin = subprocess.Popen([sys.executable, str(HERE / "drive_plugin.py"), str(spec)], env=env)
    try:
        # Wait until the engine is optimising, as when a user cancels a long run.
        def working() -> bool:
            return marker.exists() and len(marker.read_text().split()) > 2

        assert wait_until(lambda: working() or plugin.poll() is not None, 120) and working(), (
            "the engine never got to work: " + (tmp_path / "report.json").read_text()
            if plugin.poll() is not None
            else "no progress within 2 minutes"
        )
        engines = children_of(plugin.pid)
        assert len(engines) == 1 and pid_alive(engines[0])
        os.kill(plugin.pid, how)
        # SIGTERM: the bridge kills the engine, removes its folder and exits as killed by the signal.
        assert plugin.wait(timeout=30) == (128 + how if how == signal.SIGTERM else -how)
        assert wait_until(lambda: not pid_alive(engines[0]), 20), "the engine outlived the plug-in"
    finally:
        if plugin.poll() is None:
            plugin.kill()
    assert not (tmp_path / "report.json").exists()
    if how == signal.SIGTERM:
        assert list(private_tmp.iterdir()) == []


# Installed layouts and GIMP 2.10's own Python


@pytest.mark.parametrize("flat", [False, True], ids=["own-folder", "loose-file"])
def test_finds_bridge_and_config_where_the_installer_puts_them(
    gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flat: bool
) -> None:
    plugins = tmp_path / "plug-ins"
    support = plugins / "neural_style_gimp2"
    support.mkdir(parents=True)
    shutil.copy(PLUGIN, (plugins if flat else support) / PLUGIN.name)
    for module in BRIDGE_MODULES:
        shutil.copy(module, support / module.name)
    config = engine_config(None)
    config["engine"]["presets"][0]["label"] = "Renamed by the installed config"
    config["engine"]["user_presets"] = [config["engine"]["presets"][0]["name"]]
    (support / "nst_config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.delenv("NST_PLUGIN_CONFIG", raising=False)
    for module in BRIDGE_MODULES:
        monkeypatch.delitem(sys.modules, module.stem, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != BRIDGE.parent])

    plugin = load_plugin(str((plugins if flat else support) / PLUGIN.name))

    for module in (plugin.nst_bridge, plugin.nst_bridge.nst_service, plugin.nst_common):
        assert Path(module.__file__).resolve().parent == support.resolve()
    params = {param[1]: param for param in gimpfu.registered["python-fu-neural-style"]["params"]}
    assert params["preset"][4] == ["Renamed by the installed config"]


@pytest.mark.parametrize("missing", ["nst_service.py", "nst_common.py"])
def test_a_module_missing_beside_the_bridge_is_one_line_to_reinstall(
    gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style_file: str, missing: str
) -> None:
    """The bridge imports its modules when the plug-in loads: one left out of a copied folder is the
    plug-in's one line, before any run, not an error in the middle of one."""
    support = tmp_path / "plug-ins" / "neural_style_gimp2"
    support.mkdir(parents=True)
    shutil.copy(PLUGIN, support / PLUGIN.name)
    for module in BRIDGE_MODULES:
        if module.name != missing:
            shutil.copy(module, support / module.name)
    (support / "nst_config.json").write_text(json.dumps(engine_config(None)), encoding="utf-8")
    monkeypatch.delenv("NST_PLUGIN_CONFIG", raising=False)
    for module in BRIDGE_MODULES:
        monkeypatch.delitem(sys.modules, module.stem, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != BRIDGE.parent])
    plugin = load_plugin(str(support / PLUGIN.name))

    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    plugin.neural_style(image, layer, *plugin_args(style_file))
    assert gimpfu.messages == [
        "Neural Style: Neural Style is incompletely installed (nst_bridge.py or nst_service.py or "
        "nst_common.py is missing beside neural_style_gimp2.py): run install.py again."
    ]
    assert image.layers == [layer] and image.open_undo_groups == 0


def test_runs_end_to_end_on_python27(config_file, style_file, tmp_path: Path) -> None:
    report = run_on_python27(
        tmp_path, style=style_file, width=24, height=20, layer_type=3, offsets=[4, 6], iterations=2
    )
    assert report["python"] == [2, 7] and report["messages"] == [] and report["open_undo_groups"] == 0
    result, source = report["layers"][0], report["layers"][1]
    assert result["name"] == "Photo (Neural Style: Starry night)"
    assert (result["width"], result["height"], result["offsets"]) == (24, 20, [4, 6])
    pixels = base64.b64decode(result["pixels"])
    assert base64.b64decode(source["pixels"]) == pattern(24, 20, 2)
    assert len(pixels) == 24 * 20 * 2 and channel(pixels, 2, 1) == channel(pattern(24, 20, 2), 2, 1)


def test_runs_on_the_warm_engine_on_python27(config_file, style_file, tmp_path: Path) -> None:
    """Installed, the plug-in starts the engine service on its first run; the second run uses it."""
    sys.path.insert(0, str(BRIDGE.parent))
    import nst_service

    data = tmp_path / "data"
    config = json.loads(config_file.read_text()) | {"service": True, "data_dir": str(data)}
    config_file.write_text(json.dumps(config))
    state = data / nst_service.SERVICE_FOLDER / nst_service.STATE_NAME
    pids, layers = [], []
    try:
        for run in range(2):
            report = run_on_python27(
                tmp_path,
                f"report-{run}.json",
                style=style_file,
                width=24,
                height=20,
                layer_type=1,
                iterations=2,
            )
            assert report["messages"] == []
            layers.append(report["layers"][0]["pixels"])
            pids.append(json.loads(state.read_text())["pid"])
    finally:
        nst_service.stop_local_service(str(data))
    assert pids[0] == pids[1] and layers[0] == layers[1]


# Layers are animation frames

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
