"""The GIMP 3 plug-in in a real GIMP, end to end: GIMP 3.0 (Debian trixie) and GIMP 3.2 (Debian
forky), each headless in its own chroot.

For each version one GIMP run covers every case (see batch_neural_style.py); the tests below
check its manifest. The plug-in is installed by install.py into the profile folder that GIMP then
uses; the engine is this test environment's own Python (`--engine-python`), made visible
inside the chroot by bind mounts, with the random test weights. Needs root (chroot, mount
namespaces); each chroot is built on first use (tests/gimp/make_chroot.sh, about 70-120 s).
Set NST_SKIP_GIMP=1 to skip these tests on a machine without root, NST_GIMP_VERSIONS=3.2 (or 3.0)
to test one version only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gimp_harness import (
    ENGINE_OPTIONS,
    INSTALLED,
    PLUGIN_SOURCE,
    STYLED,
    assert_styled,
    case,
    layer_named,
    pixels,
)
from PIL import Image

from nst_core.options import describe

pytestmark = pytest.mark.gimp


def test_gimp_ran_the_version_of_its_chroot(gimp: dict) -> None:
    """The 3.2 run really ran GIMP 3.2 (3.2.6 in forky when written), the 3.0 run 3.0 (3.0.4)."""
    ran = gimp["manifest"]["gimp_version"]
    assert ran.startswith(gimp["version"] + ".") and ran == gimp["package_version"]
    print(f"GIMP {ran}")


def test_install_py_placed_the_plugin_and_its_config(gimp: dict, vgg19_weights: Path) -> None:
    folder = gimp["profile"] / INSTALLED
    for source in PLUGIN_SOURCE.glob("*.py"):  # the plug-in and every module beside it
        assert (folder / source.name).read_bytes() == source.read_bytes()
    assert os.access(folder / "neural_style.py", os.X_OK)
    config = gimp["config"]
    assert Path(config["python"]) == Path(sys.executable).absolute()
    assert Path(config["weights"]) == vgg19_weights and "flatpak" not in config  # found at run time
    assert config["engine"] == json.loads(json.dumps(describe()))


def test_gimp_registered_the_installed_plugin(gimp: dict) -> None:
    manifest = gimp["manifest"]
    assert manifest["registered"], gimp["log"][-3000:]
    # GIMP records where each procedure came from in the profile's pluginrc (${gimp_dir} = the profile).
    pluginrc = (gimp["profile"] / "pluginrc").read_bytes().decode("utf-8", "replace")  # icons are binary
    plugins = {entry.split('"')[1]: entry for entry in pluginrc.split("(plug-in-def ")[1:]}
    installed = "${gimp_dir}/" + (INSTALLED / "neural_style.py").as_posix()
    assert '(proc-def "python-fu-neural-style"' in plugins[installed]
    assert [path for path, entry in plugins.items() if "python-fu-neural-style" in entry] == [installed]
    registration = manifest["registration"]
    assert registration["menu_label"] == "Neural _Style..."
    assert registration["menu_paths"] == ["<Image>/Filters"]
    assert registration["image_types"] == "RGB*, GRAY*"
    assert registration["presets"] == list(gimp["config"]["engine"]["user_presets"])
    for argument in (
        "style-source",
        "style-painting",
        "style-file",
        "style2-source",
        "style2-painting",
        "style2-file",
        "style2-blend",
        "preset",
        "strength",
        "keep-colors",
        "style-scale",
        "size",
        "iterations",
        "seed",
        "device",
        "frames",
        "keep-on-cancel",
    ):
        assert argument in registration["arguments"]
    assert registration["return_values"] == ["new-image"]


def test_two_selected_layers_get_styled_layers_above_them(gimp: dict) -> None:
    result = case(gimp, "two_layers")
    assert result["status"] == "success", result["error"]
    assert [layer["name"] for layer in result["layers"]] == [
        "Partly transparent" + STYLED,
        "Partly transparent",
        "Opaque" + STYLED,
        "Opaque",
    ]
    for name in ("Opaque", "Partly transparent"):
        source, styled = layer_named(result, name), layer_named(result, name + STYLED)
        assert styled["size"] == source["size"] and styled["offsets"] == source["offsets"]
        before, after = pixels(source), pixels(styled)
        assert np.array_equal(after[..., 3], before[..., 3])  # the source's alpha is kept
        visible = before[..., 3] > 0
        assert np.abs(after[visible][:, :3].astype(int) - before[visible][:, :3]).mean() > 2
    assert layer_named(result, "Partly transparent")["offsets"] == [20, 18]
    assert pixels(layer_named(result, "Partly transparent" + STYLED))[..., 3].min() == 0


def test_rectangular_selection_limits_the_new_layer(gimp: dict) -> None:
    """The new layer covers exactly the selection (nothing visible outside it), opaque and restyled."""
    result = case(gimp, "rect_selection")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["offsets"] == [14, 10] and layer["size"] == [24, 16]
    assert (styled[..., 3] == 255).all()
    original = np.asarray(Image.open(gimp["inputs"]["opaque"]).convert("RGBA"))
    assert np.array_equal(source, original)  # the source layer is untouched
    inside = source[4:20, 6:30]  # the selection in the source layer's coordinates (offset 8, 6)
    assert np.abs(styled[..., :3].astype(int) - inside[..., :3]).mean() > 2


def test_pixels_outside_a_round_selection_stay_transparent(gimp: dict) -> None:
    result = case(gimp, "ellipse_selection")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["offsets"] == [10, 8] and layer["size"] == [30, 20]
    # The ellipse inscribed in the 30 x 20 box: opaque well inside, transparent well outside.
    rows, columns = np.mgrid[0:20, 0:30] + 0.5
    radius = ((columns - 15) / 15) ** 2 + ((rows - 10) / 10) ** 2
    alpha = styled[..., 3]
    assert (alpha[radius < 0.8] == 255).all() and (alpha[radius > 1.25] == 0).all()
    inside = source[2:22, 2:32]  # the ellipse's box in the source layer's coordinates (offset 8, 6)
    visible = radius < 0.8
    assert np.abs(styled[visible][:, :3].astype(int) - inside[visible][:, :3]).mean() > 2


def test_grayscale_image_gets_a_gray_layer(gimp: dict) -> None:
    result = case(gimp, "gray")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["gray"] and layer["channels"] == 2 and layer["size"] == [48, 32]
    assert np.abs(styled[..., 0].astype(int) - source[..., 0]).mean() > 2


def test_16_bit_image_goes_through_float_pixels(gimp: dict) -> None:
    result = case(gimp, "deep")
    assert result["status"] == "success", result["error"]
    assert result["image"]["precision"] == "u16-non-linear"
    source = pixels(layer_named(result, "Opaque"), deep=True)
    styled = pixels(layer_named(result, "Opaque" + STYLED), deep=True)
    assert styled.shape == source.shape
    assert np.allclose(styled[..., 3], 1.0)
    assert np.abs(styled[..., :3] - source[..., :3]).mean() > 0.01
    # Not just 8-bit values: a 16-bit result has levels between the 256 steps.
    assert np.abs(styled[..., :3] * 255 - np.round(styled[..., :3] * 255)).max() > 0.01


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_style", "no-such-style.jpg not found: choose an existing image file"),
        ("repeat_missing_style", "repeat-style.png not found: choose an existing image file"),
        ("broken_python", "engine failed (exit code 3): engine exploded"),
        ("corrupt_weights", "corrupt-weights.pth"),
        ("not_installed", "not installed: run install.py"),
        ("frames_one_layer", "Layers are animation frames needs two or more layers"),
        ("frames_failed", "corrupt-weights.pth"),
        ("frames_region", "Regions are not available for animation frames"),
        ("region_split_one_style", "needs a second style"),
        ("region_empty", "The region is empty"),
    ],
)
def test_failures_return_an_execution_error_and_add_no_layer(gimp: dict, name: str, message: str) -> None:
    """Nor a new image, nor a change that marks the image as changed."""
    result = case(gimp, name)
    assert result["status"] == "execution-error"
    assert message in result["error"] and "\n" not in result["error"]
    assert [layer["name"] for layer in result["layers"]] == result["before"] and not result["dirty"]
    assert result["returned"] is None and result["images"][1] == result["images"][0]


def test_repeat_after_the_style_file_went_says_so_once(gimp: dict) -> None:
    """Filters > Repeat (WITH_LAST_VALS) fails with the last run's style file gone, and the message is
    shown: GIMP 3.0 shows a failing call's message itself; 3.2 not outside interactive runs, so the
    plug-in does, there only. On the console's stderr 3.0 prints "GIMP-Error: Calling error for
    procedure 'python-fu-neural-style':" and the message on the next line, 3.2 "Neural Style-Warning: "
    and the message."""
    result = case(gimp, "repeat_missing_style")
    assert result["first"] == ["success", None]
    assert result["status"] == "execution-error"
    assert result["error"].startswith("Style image ") and "repeat-style.png not found" in result["error"]
    assert gimp["log"].count(result["error"]) == 1, gimp["log"][-3000:]
    at = gimp["log"].index(result["error"])
    start = gimp["log"].rfind("\n", 0, gimp["log"].rfind("\n", 0, at)) + 1  # the line before too
    print(f"GIMP {gimp['version']} showed:\n{gimp['log'][start : gimp['log'].find(chr(10), at)]}")


def test_cancel_kills_the_engine_and_leaves_no_layer_or_files(gimp: dict) -> None:
    """GIMP's Cancel kills the plug-in: its engine must die too, and its folder go at the next run."""
    result = case(gimp, "cancelled")
    killed = result["killed"]
    assert killed.get("engine_pid"), "the engine never started"
    assert killed["engine_died"], "the engine outlived its killed plug-in"
    assert result["status"] != "success"
    assert [layer["name"] for layer in result["layers"]] == result["before"]
    assert os.path.basename(killed["folder"]).startswith("nst-plugin-")
    assert gimp["manifest"]["left_behind"] == []


def test_on_cancel_the_layer_formed_so_far_stays(gimp: dict) -> None:
    """On Cancel: keep the picture so far, against the stand-in engine painting a snapshot every 0.3 s:
    the result layer appeared before the run ended and followed the snapshots (it holds a later one
    than the first, which was at half the width), and GIMP's Cancel keeps it as it was then."""
    result = case(gimp, "painting_kept")
    assert result["killed"]["engine_died"] and result["status"] != "success"
    assert [layer["name"] for layer in result["layers"]] == ["Opaque" + STYLED, "Opaque"]
    kept, source = (pixels(layer).astype(np.int64) for layer in result["layers"])
    steps = {int(k) for k in np.unique((kept[..., :3] + source[..., :3] - 255) % 256)}
    assert len(steps) == 1 and steps.pop() >= 2  # one snapshot whole: the inverted layer plus its number
    print(f"GIMP kept the picture of snapshot {int((kept[0, 0, 0] + source[0, 0, 0] - 255) % 256)}")


def test_the_second_run_uses_the_warm_engine_the_first_started(gimp: dict) -> None:
    cold, warm = case(gimp, "cold"), case(gimp, "warm")
    _, first = assert_styled(cold, "Opaque")
    _, second = assert_styled(warm, "Opaque")
    assert cold["service_pid"] and warm["service_pid"] == cold["service_pid"]
    assert np.array_equal(first, second)
    print(f"GIMP, OK to the new layer: cold {cold['seconds']:.2f} s, warm {warm['seconds']:.2f} s")


def test_killing_the_plugin_frees_its_job_on_the_service(gimp: dict) -> None:
    result = case(gimp, "served_cancel")
    assert result["killed"].get("plugin_pid"), "the service never ran the job"
    assert result["killed"]["service_freed"], "the service kept the killed plug-in's job"
    assert result["status"] != "success"
    assert [layer["name"] for layer in result["layers"]] == result["before"]


def test_corrupt_weights_message_comes_from_the_engine(gimp: dict) -> None:
    error = case(gimp, "corrupt_weights")["error"]
    assert "weights" in error.lower() and "Traceback" not in error


def test_result_equals_the_engine_run_directly(gimp: dict) -> None:
    """The plug-in adds nothing to the pixels: same input and options through run-job agree."""
    result = case(gimp, "two_layers")
    source, styled = assert_styled(result, "Opaque")
    work = gimp["work"]
    height, width, channels = source.shape
    source.tofile(work / "direct-content.raw")
    job = {
        "version": 1,
        "content": {
            "raw": "direct-content.raw",
            "width": width,
            "height": height,
            "format": "u8",
            "channels": channels,
        },
        "styles": [{"path": gimp["inputs"]["style"], "weight": 1.0}],
        "options": ENGINE_OPTIONS | {"weights": gimp["weights"]},
        "output": {"raw": "direct-result.raw", "format": "u8"},
    }
    (work / "direct-job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, "-m", "nst_core", "run-job", str(work / "direct-job.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    direct = np.fromfile(work / "direct-result.raw", dtype=np.uint8).reshape(source.shape)
    assert np.abs(direct.astype(int) - styled).max() <= 1
