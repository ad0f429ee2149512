"""A layer as the style and the selection as the region, through the shared bridge (both plug-ins): the
same pixels give the same result as a file, by the child process and by the warm service; the masks a
region makes, and what the bridge refuses before any job is sent."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import stop_local_service

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plug-ins" / "neural_style"))

import nst_bridge  # noqa: E402
import nst_common  # noqa: E402

from nst_core.options import describe  # noqa: E402

WIDTH, HEIGHT = 48, 32
OPTIONS = {"size": 32, "iterations": 3, "seed": 6, "device": "cpu"}


def content() -> bytes:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    rgba = np.stack([x * 5, y * 7, 128 + 0 * x, np.where(x < 40, 255, 100)], axis=-1)
    return rgba.astype(np.uint8).tobytes()


def style_pixels() -> np.ndarray:
    """A striped, partly transparent style: alpha must be read as a file's would be."""
    y, x = np.mgrid[0:30, 0:36]
    stripes = np.where((x // 3) % 2 == 0, 230, 20)
    alpha = np.where(y < 6, 80, 255)
    return np.stack([stripes, 255 - stripes, 40 + 0 * x, alpha], axis=-1).astype(np.uint8)


def left_half() -> nst_common.RegionMask:
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, : WIDTH // 2] = 255
    return nst_common.RegionMask(mask.tobytes(), WIDTH, HEIGHT)


@pytest.fixture
def config(tmp_path: Path, vgg19_weights: Path):
    """An installed config (with the engine's description, as install.py writes it); its warm service,
    when a test asks for one, is stopped afterwards."""
    config = {
        "python": sys.executable,
        "weights": str(vgg19_weights),
        "data_dir": str(tmp_path / "data"),
        "engine": json.loads(json.dumps(describe())),
        "service": False,
    }
    yield config
    stop_local_service(tmp_path / "data")


def run(config: dict, styles: list, masks: list | None = None) -> tuple[bytes, str | None]:
    with nst_bridge.EngineRun(config) as engine:
        engine.set_content_raw(content(), WIDTH, HEIGHT, "u8", 4)
        result = engine.run(styles, dict(OPTIONS), lambda f, t: True, masks)
        return result, engine.server


def test_a_layer_as_the_style_gives_what_its_file_gives(config: dict, tmp_path: Path) -> None:
    pixels = style_pixels()
    path = tmp_path / "stripes.png"
    Image.fromarray(pixels, "RGBA").save(path)
    layer = nst_bridge.StylePixels(pixels.tobytes(), 36, 30, "u8", 4, "Stripes")
    deep = nst_bridge.StylePixels((pixels / 255.0).astype("<f4").tobytes(), 36, 30, "float32", 4, "Stripes")
    by_file, _ = run(config, [(str(path), 1.0)])
    by_layer, _ = run(config, [(layer, 1.0)])
    by_deep_layer, _ = run(config, [(deep, 1.0)])
    assert by_layer == by_file and by_deep_layer == by_file
    assert by_file != content()
    assert nst_common.result_name("Photo", [(layer, 0.5), (str(path), 0.5)]) == (
        "Photo (Neural Style: Stripes + stripes)"
    )


def test_two_styles_in_two_regions_by_the_child_and_by_the_service(
    config: dict, tmp_path: Path, style_png: Path
) -> None:
    layer = nst_bridge.StylePixels(style_pixels().tobytes(), 36, 30, "u8", 4, "Stripes")
    styles = [(layer, 0.5), (str(style_png), 0.5)]
    masks = nst_common.region_masks(nst_common.REGION_SPLIT, left_half(), 2)
    child, server = run(config, styles, masks)
    assert server is None
    blended, _ = run(config, styles)
    assert child != blended  # the regions were painted, not the blend everywhere
    served, server = run({**config, "service": True}, styles, masks)
    assert server is not None
    assert np.abs(np.frombuffer(served, np.uint8).astype(int) - np.frombuffer(child, np.uint8)).max() <= 1
    assert list(Path(nst_common.runs_folder()).glob(f"{nst_common.TEMP_PREFIX}{os.getpid()}-*")) == []


def test_the_masks_a_region_makes() -> None:
    mask = left_half()
    assert nst_common.region_masks(nst_common.REGION_WHOLE, mask, 2) is None
    assert nst_common.region_masks(nst_common.REGION_WHOLE, None, 1) is None
    inside = nst_common.region_masks(nst_common.REGION_INSIDE, mask, 2)
    assert [m.data for m in inside] == [mask.data, mask.data]
    first, second = nst_common.region_masks(nst_common.REGION_SPLIT, mask, 2)
    assert first.data == mask.data
    assert all(a + b == 255 for a, b in zip(bytearray(first.data), bytearray(second.data), strict=True))
    assert [nick for nick, _label in nst_common.REGIONS] == ["whole", "inside", "split"]


@pytest.mark.parametrize(
    ("region", "mask", "styles", "message"),
    [
        ("split", "left", 1, "needs a second style"),
        ("inside", "empty", 1, "The region is empty"),
        ("inside", None, 1, "The region is empty"),
        ("corner", "left", 1, "Unknown region 'corner'"),
    ],
)
def test_regions_that_cannot_be(region: str, mask: str | None, styles: int, message: str) -> None:
    masks = {"left": left_half(), "empty": nst_common.RegionMask(bytes(WIDTH * HEIGHT), WIDTH, HEIGHT)}
    with pytest.raises(nst_bridge.EngineError, match=message) as caught:
        nst_common.region_masks(region, masks.get(mask or ""), styles)
    assert caught.value.code == nst_common.EXIT_USAGE and "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("features", "layer", "masked", "message"),
    [
        (["raw_styles"], False, True, "cannot paint regions: run install.py again"),
        (["style_masks"], True, False, "cannot take a layer as the style: run install.py again"),
    ],
)
def test_an_older_engine_is_told_apart_before_any_job(
    config: dict, style_png: Path, features: list, layer: bool, masked: bool, message: str
) -> None:
    config["engine"]["features"] = features
    style = (
        nst_bridge.StylePixels(style_pixels().tobytes(), 36, 30, "u8", 4, "S") if layer else str(style_png)
    )
    with pytest.raises(nst_bridge.EngineError, match=message):
        run(config, [(style, 1.0)], [left_half()] if masked else None)


def test_a_layer_as_the_style_of_animation_frames(config: dict) -> None:
    layer = nst_bridge.StylePixels(style_pixels().tobytes(), 36, 30, "u8", 4, "Stripes")
    frame = content()
    with nst_bridge.FramesRun(config) as run_frames:
        for index in range(2):
            run_frames.add_frame(frame, WIDTH, HEIGHT, 4, f"Frame {index}")
        results = run_frames.run([(layer, 1.0)], dict(OPTIONS, iterations=2), lambda f, t: True)
    assert [(w, h) for _data, w, h in results] == [(32, 21), (32, 21)]
    deep = nst_bridge.StylePixels(bytes(36 * 30 * 16), 36, 30, "float32", 4, "Deep")
    with nst_bridge.FramesRun(config) as run_frames:
        for index in range(2):
            run_frames.add_frame(frame, WIDTH, HEIGHT, 4, f"Frame {index}")
        with pytest.raises(nst_bridge.EngineError, match="8-bit style layer"):
            run_frames.run([(deep, 1.0)], dict(OPTIONS), lambda f, t: True)
