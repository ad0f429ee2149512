"""The GIMP 3 plug-in's "Layers are animation frames" in a real GIMP (both versions): a new image that
plays the styled frames in order, equal to the engine's batch run, at a working size, and cancelled.
See test_gimp_plugin.py for the set-up.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from gimp_harness import ENGINE_OPTIONS, FRAME_SIZE, FRAMES, FRAMES_STYLED, case, layer_named, pixels
from PIL import Image

pytestmark = pytest.mark.gimp


# -- Layers are animation frames ---------------------------------------------------------------------------


def frame_pixels(gimp: dict, index: int) -> np.ndarray:
    return np.asarray(Image.open(gimp["inputs"][f"frame{index}"]).convert("RGBA"))


def assert_source_untouched(gimp: dict, result: dict) -> None:
    """The frames' image as it was: its layers, their pixels, not even marked changed."""
    assert [layer["name"] for layer in result["layers"]] == result["before"] == FRAMES[::-1]
    for index, name in enumerate(FRAMES):
        assert np.array_equal(pixels(layer_named(result, name)), frame_pixels(gimp, index))
    assert not result["dirty"]


def test_frames_go_to_a_new_image_that_plays_them_in_order(gimp: dict) -> None:
    """Playback plays an image's top-level layers from the bottom up, reading each name's timing tags."""
    result = case(gimp, "frames")
    assert result["status"] == "success", result["error"]
    returned = result["returned"]
    assert (
        returned["size"] == result["image"]["size"] and returned["precision"] == result["image"]["precision"]
    )
    assert [layer["name"] for layer in returned["layers"]][::-1] == FRAMES_STYLED
    for index, layer in enumerate(returned["layers"][::-1]):
        assert layer["size"] == [FRAME_SIZE, FRAME_SIZE] and layer["offsets"] == [0, 0]
        styled, source = pixels(layer), frame_pixels(gimp, index)
        assert (styled[..., 3] == 255).all()
        assert np.abs(styled[..., :3].astype(int) - source[..., :3]).mean() > 2
    assert returned["undo_enabled"]
    assert result["images"][1] == result["images"][0] + 1
    assert_source_untouched(gimp, result)
    print(f"GIMP, OK to the new image of 3 frames: {result['seconds']:.1f} s")


def test_frames_equal_the_engines_batch_run_directly(gimp: dict) -> None:
    """The plug-in hands the frames over in frame order and adds nothing: `batch --frames` on the same
    files, with the same options, agrees (a wrong order would start frames 2 and 3 from other frames)."""
    work = gimp["work"] / "direct-frames"
    work.mkdir()
    flags = []
    for name, value in (ENGINE_OPTIONS | {"size": 48, "weights": gimp["weights"]}).items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    inputs = [gimp["inputs"][f"frame{index}"] for index in range(len(FRAMES))]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nst_core",
            "batch",
            *inputs,
            "--style",
            gimp["inputs"]["style"],
            "-o",
            str(work),
        ]
        + ["--format", "tif", "--frames", "--progress", "none", "--style-blend", "1.0", *flags],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    returned = case(gimp, "frames")["returned"]["layers"][::-1]
    for index, layer in enumerate(returned):
        direct = np.asarray(Image.open(work / f"frame{index}.tif").convert("RGBA")).astype(int)
        assert np.abs(direct - pixels(layer)).max() <= 1, f"frame {index + 1}"


def test_frames_at_a_smaller_working_size_are_scaled_to_the_selection(gimp: dict) -> None:
    result = case(gimp, "frames_scaled")
    assert result["status"] == "success", result["error"]
    layers = result["returned"]["layers"][::-1]
    assert [layer["name"] for layer in layers] == FRAMES_STYLED
    for index, layer in enumerate(layers):
        assert layer["size"] == [40, 40] and layer["offsets"] == [4, 4]
        inside = frame_pixels(gimp, index)[4:44, 4:44]
        assert np.abs(pixels(layer)[..., :3].astype(int) - inside[..., :3]).mean() > 2
    assert_source_untouched(gimp, result)


def test_killing_the_plugin_frees_its_frames_job_on_the_service(gimp: dict) -> None:
    result = case(gimp, "frames_served_cancel")
    assert result["killed"].get("plugin_pid"), "the service never ran the frames"
    assert result["killed"]["service_freed"], "the service kept the killed plug-in's frames"
    assert result["status"] != "success" and result["returned"] is None
    assert result["images"][1] == result["images"][0]
    assert_source_untouched(gimp, result)


def test_cancelling_frames_kills_the_engine_and_makes_no_image(gimp: dict) -> None:
    result = case(gimp, "frames_cancelled")
    killed = result["killed"]
    assert killed.get("engine_pid"), "the engine never started"
    assert killed["engine_died"], "the engine outlived its killed plug-in"
    assert result["status"] != "success" and result["returned"] is None
    assert result["images"][1] == result["images"][0]
    assert_source_untouched(gimp, result)


def test_cancel_keeps_the_frames_finished_so_far_in_the_new_image(gimp: dict) -> None:
    """Each frame goes into the new image as soon as it is finished: the plug-in killed (GIMP's Cancel)
    while the engine is held after its first frame leaves that frame there, undo on, the source as it was."""
    result = case(gimp, "frames_kept_on_cancel")
    assert result["killed"].get("first_frame"), "the engine never finished a frame"
    assert result["status"] != "success" and result["returned"] is None
    assert result["images"][1] == result["images"][0] + 1
    kept = result["kept"]
    assert [layer["name"] for layer in kept["layers"]] == FRAMES_STYLED[:1] and kept["undo_enabled"]
    styled, source = pixels(kept["layers"][0]), frame_pixels(gimp, 0)
    assert np.abs(styled[..., :3].astype(int) - source[..., :3]).mean() > 2
    assert_source_untouched(gimp, result)


def test_frames_from_the_warm_service_appear_one_by_one_and_cancel_keeps_them(gimp: dict) -> None:
    """On the warm engine service (the installed default) the frames come one by one as well: the
    plug-in killed (GIMP's Cancel) as soon as it showed the first one leaves that frame in the new image,
    and none of the frames the service had not finished."""
    result = case(gimp, "frames_served_kept_on_cancel")
    assert result["killed"].get("frame_shown"), "the plug-in never showed a frame"
    assert result["killed"]["service_freed"], "the service kept the killed plug-in's frames job"
    assert result["status"] != "success" and result["returned"] is None
    assert result["images"][1] == result["images"][0] + 1
    names = [layer["name"] for layer in result["kept"]["layers"]]
    assert names == FRAMES_STYLED[: len(names)] and 1 <= len(names) < len(FRAMES), names
    styled, source = pixels(result["kept"]["layers"][-1]), frame_pixels(gimp, 0)
    assert np.abs(styled[..., :3].astype(int) - source[..., :3]).mean() > 2
    assert_source_untouched(gimp, result)
