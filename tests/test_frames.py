"""Animation frames (nst_core/frames.py, `batch --frames`): the flow follows the motion, its reliability
drops where something appears, frames flicker far less than independent pictures, and nothing of the
previous frame ghosts onto an object that appears."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from nst_core import frames, images

SIZE = (72, 48)  # working size of the generated clips


def photo() -> np.ndarray:
    return data.astronaut().astype(np.float32) / 255


def pan(count: int, step: int = 10) -> list[np.ndarray]:
    base = photo()
    return [images.resize(base[120:280, 80 + step * i : 320 + step * i], *SIZE) for i in range(count)]


def zoom(count: int) -> list[np.ndarray]:
    base = photo()
    clip = []
    for i in range(count):
        m = 14 * i
        clip.append(images.resize(base[60 + m : 380 - m, 40 + int(1.5 * m) : 520 - int(1.5 * m)], *SIZE))
    return clip


def test_the_flow_follows_a_pan_and_the_warp_undoes_it() -> None:
    before, here = pan(2, step=8)
    backward = frames.flow(here, before)
    inner = backward[8:-8, 8:-8]
    shift = 8 * SIZE[0] / 240  # the crop moves 8 px of the photo: this many at the working size
    assert np.median(inner[..., 0]) == pytest.approx(shift, abs=0.5)
    assert np.median(np.abs(inner[..., 1])) < 0.5
    warped = frames.warp(before, backward)
    assert np.abs(warped - here)[8:-8, 8:-8].mean() < 0.5 * np.abs(before - here)[8:-8, 8:-8].mean()


def test_nothing_is_reliable_where_an_object_appears() -> None:
    before = pan(1)[0]
    here = before.copy()
    here[14:34, 26:46] = (1.0, 0.9, 0.1)  # a yellow square comes in
    mask = frames.reliable(frames.flow(here, before), frames.flow(before, here), here, before)
    assert mask[14:34, 26:46].max() == 0
    assert mask[:10].mean() > 0.9 and mask[:, :16].mean() > 0.8  # away from it the flow holds


def write_clip(folder: Path, clip: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for index, frame in enumerate(clip):
        images.to_pil(frame).save(folder / f"frame{index:03d}.png")
    return folder


def run_batch(clip_dir: Path, out: Path, style: Path, weights: Path, *extra: str) -> list[np.ndarray]:
    out.mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "nst_core",
        "batch",
        str(clip_dir),
        "--style",
        str(style),
        "-o",
        str(out),
    ]
    flags = ["--size", str(max(SIZE)), "--iterations", "30", "--seed", "0", "--progress", "json", *extra]
    done = subprocess.run(
        [*command, *flags],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NST_WEIGHTS": str(weights)},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["event"] == "done"
    return [images.load_image(path) for path in sorted(out.iterdir())]


@pytest.mark.parametrize("motion", ["pan", "zoom"])
def test_frames_flicker_far_less_than_independent_pictures(
    motion, tmp_path, style_png, vgg19_weights
) -> None:
    clip = pan(5) if motion == "pan" else zoom(5)
    clip_dir = write_clip(tmp_path / "clip", clip)
    alone = run_batch(clip_dir, tmp_path / "alone", style_png, vgg19_weights)
    linked = run_batch(clip_dir, tmp_path / "linked", style_png, vgg19_weights, "--frames")
    contents = [images.load_image(path) for path in sorted(clip_dir.iterdir())]
    independent, temporal = frames.flicker(alone, contents), frames.flicker(linked, contents)
    ratio = float(np.mean(temporal) / np.mean(independent))
    print(f"{motion}: flicker independent {np.mean(independent):.4f}, frames {np.mean(temporal):.4f}")
    print(f"{motion}: frames / independent x{ratio:.3f}, per frame {temporal} against {independent}")
    assert ratio <= 0.6
    assert np.array_equal(alone[0], linked[0])  # the first frame has nothing before it


def test_an_appearing_object_is_painted_anew_not_ghosted(tmp_path, style_png, vgg19_weights) -> None:
    before = pan(1)[0]
    here = before.copy()
    here[14:34, 26:46] = (1.0, 0.9, 0.1)
    clip_dir = write_clip(tmp_path / "clip", [before, here])
    alone = run_batch(clip_dir, tmp_path / "alone", style_png, vgg19_weights)
    linked = run_batch(clip_dir, tmp_path / "linked", style_png, vgg19_weights, "--frames")
    square = (slice(16, 32), slice(28, 44))  # inside the square, off its edge
    backward = frames.flow(here, before)
    ghost = frames.warp(linked[0], backward)[square]  # the previous frame's strokes carried there
    moved_on = np.abs(linked[1][square] - ghost).mean()
    fresh = np.abs(alone[1][square] - frames.warp(alone[0], backward)[square]).mean()
    assert moved_on >= 0.5 * fresh
    outside = (slice(0, 10), slice(None))
    steady = np.abs(linked[1][outside] - frames.warp(linked[0], backward)[outside]).mean()
    assert steady < 0.5 * moved_on  # where nothing changed the strokes stay


def test_a_frames_rerun_picks_up_from_the_frames_already_done(tmp_path, style_png, vgg19_weights) -> None:
    clip_dir = write_clip(tmp_path / "clip", pan(3))
    first = run_batch(clip_dir, tmp_path / "out", style_png, vgg19_weights, "--frames")
    last = sorted((tmp_path / "out").iterdir())[-1]
    last.unlink()
    command = [sys.executable, "-m", "nst_core", "batch", str(clip_dir), "--style", str(style_png)]
    flags = ["-o", str(tmp_path / "out"), "--size", str(max(SIZE)), "--iterations", "30", "--frames"]
    done = subprocess.run(
        [*command, *flags, "--progress", "json"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NST_WEIGHTS": str(vgg19_weights)},
    )
    assert done.returncode == 0, done.stderr
    seen = [json.loads(line) for line in done.stdout.splitlines()]
    statuses = [event["status"] for event in seen if event["event"] == "item"]
    assert statuses == ["skipped", "skipped", "done"]
    again = images.load_image(last)
    # Started from the second frame's saved result: as steady as the first run's third frame was.
    contents = [images.load_image(p) for p in sorted(clip_dir.iterdir())]
    assert (
        frames.flicker([first[1], again], contents[1:])[0]
        < 2 * frames.flicker(first[1:], contents[1:])[0] + 0.01
    )
