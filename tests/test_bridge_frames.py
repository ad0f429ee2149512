"""The bridge's animation frames (plug-ins/neural_style/nst_bridge.py, FramesRun): frame names that keep
Playback's tags, the frames in and out of `batch --frames` in order, progress over the animation, and
that a failed or cancelled run leaves nothing behind.

Most tests drive a scripted stand-in for the engine's `batch` (it reads the frame files with Pillow and
writes TIFFs, as the engine does); one runs the real engine, and one the bridge on Python 2.7.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, TiffImagePlugin

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "plug-ins" / "neural_style"
sys.path.insert(0, str(PLUGIN_DIR))

import fake_engine  # noqa: E402
import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_tiff  # noqa: E402
from fake_engine import child_record  # noqa: E402
from interpreters import python27  # noqa: E402
from servers import pid_alive  # noqa: E402

# `FAKE -m nst_core batch IN... --style S -o DIR --format tif --frames --progress json ...`: every frame
# inverted (alpha kept) and, with $FAKE_HALF, at half the size, as a working size would make it.
FAKE_BATCH = textwrap.dedent(
    """\
    import json, os, sys, time
    from PIL import Image, ImageOps
    args = sys.argv[4:]
    inputs = []
    while not args[0].startswith("--"):
        inputs.append(args.pop(0))
    output = args[args.index("-o") + 1]
    mode = os.environ.get("FAKE_MODE", "invert")
    with open(os.path.join(os.environ["FAKE_LOG"], "child.json"), "w") as fh:
        json.dump({"pid": os.getpid(), "argv": sys.argv[1:], "cwd": os.getcwd(),
                   "pythonpath": os.environ.get("PYTHONPATH")}, fh)
    def emit(**event):
        print(json.dumps(event), flush=True)
    count = len(inputs)
    for index, path in enumerate(inputs):
        emit(event="start", item=index + 1, items=count, version=1, device="cpu", scales=[8], iterations=2)
        if mode == "error":
            emit(event="error", message="Weights file x.pth is truncated: download it again.", code=4)
            sys.exit(4)
        if mode == "fail" and index == 1:
            emit(event="item", item=2, items=count, input=path, status="failed",
                 message="Image %s cannot be read: it is corrupt." % path)
            time.sleep(600)  # the bridge must not wait for the rest
        for step in (1, 2):
            emit(event="progress", item=index + 1, items=count, scale=1, scales=1, iteration=step,
                 iterations=2, fraction=(index + step / 2) / count, elapsed=2.0 * step, eta=2.0 * (2 - step))
            if mode == "hang":
                time.sleep(600)
        image = Image.open(path)
        bands = image.split()
        alpha = bands[-1] if image.mode in ("LA", "RGBA") else None
        color = Image.merge(image.mode.rstrip("A") or "L", bands[: len(bands) - (alpha is not None)])
        inverted = ImageOps.invert(color.convert("RGB")).convert(color.mode)
        result = Image.merge(image.mode, inverted.split() + ((alpha,) if alpha else ()))
        if os.environ.get("FAKE_HALF"):
            result = result.resize((image.width // 2, image.height // 2), Image.NEAREST)
        name = os.path.splitext(os.path.basename(path))[0] + ".tif"
        result.save(os.path.join(output, name))
        emit(event="item", item=index + 1, items=count, input=path, output=name, status="done")
    emit(event="done", output=output, seconds=0.1, done=count, skipped=0, failed=0)
    """
)


@pytest.fixture
def fake_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    return fake_engine.install(tmp_path, monkeypatch, FAKE_BATCH)


@pytest.fixture
def style_file(tmp_path: Path) -> str:
    path = tmp_path / "style.png"
    path.write_bytes(b"not read by the stand-in engine")
    return str(path)


def pixels(width: int, height: int, channels: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8).tobytes()


def inverted(data: bytes, channels: int) -> bytes:
    """The stand-in's result: colour inverted, alpha (the last of 2 or 4 channels) kept."""
    array = np.frombuffer(data, np.uint8).reshape(-1, channels).copy()
    colour = channels - 1 if channels in (2, 4) else channels
    array[:, :colour] = 255 - array[:, :colour]
    return array.tobytes()


# -- names -----------------------------------------------------------------------------------------------


def playback_tags(name: str) -> tuple[int, str | None]:
    """(duration in ms or -1, disposal or None) as GIMP's Playback reads a layer name (animation-play.c:
    parse_ms_tag takes the first "(NNms)" found scanning from each position, parse_disposal_tag a
    "(combine)" or "(replace)" that ends the name). Written as that scan, not as the bridge's regex."""
    duration = -1
    for start in range(len(name)):
        rest = name[start:]
        if not rest.startswith("("):
            continue
        offset = 1
        while offset < len(rest) and rest[offset] == " ":
            offset += 1
        digits = offset
        while offset < len(rest) and rest[offset] in "0123456789":
            offset += 1
        if offset == digits or len(rest) - offset <= 2:
            continue
        value = int(rest[digits:offset])
        while offset < len(rest) and rest[offset] == " ":
            offset += 1
        if len(rest) - offset <= 2 or rest[offset : offset + 2].upper() != "MS":
            continue
        offset += 2
        while offset < len(rest) and rest[offset] == " ":
            offset += 1
        if offset < len(rest) and rest[offset] == ")":
            duration = value
            break
    disposal = next((tag for tag in ("(combine)", "(replace)") if name.endswith(tag)), None)
    return duration, disposal


@pytest.mark.parametrize(
    "source, styled",
    [
        ("Frame 3 (100ms) (combine)", "Frame 3 styled (100ms) (combine)"),
        ("Frame 2 (replace)", "Frame 2 styled (replace)"),
        ("Background", "Background styled"),
        ("(50ms)", "styled (50ms)"),
        ("Walk ( 40 MS ) left (replace)", "Walk styled ( 40 MS ) left (replace)"),
        ("Frame 1 (unknown disposal)", "Frame 1 (unknown disposal) styled"),
        ("A (combine) in the middle", "A (combine) in the middle styled"),
        ("Frame (12 frames) (80ms)", "Frame (12 frames) styled (80ms)"),
    ],
)
def test_frame_names_keep_the_tags_playback_reads(source: str, styled: str) -> None:
    assert nst_common.frame_name(source) == styled
    assert playback_tags(styled) == playback_tags(source)


def test_the_tag_scan_of_the_test_reads_names_as_playback_does() -> None:
    assert playback_tags("Frame 3 (100ms) (combine)") == (100, "(combine)")
    assert playback_tags("x (5 ms) (7ms)") == (5, None)
    assert playback_tags("x (ms) (replace) y") == (-1, None)


def test_gimp_210_names_stay_utf8_byte_strings() -> None:
    name = "Bühne (60ms)".encode()
    # Python 3 gives text either way; the Python 2.7 test below checks the byte string there.
    assert nst_common.frame_name(name) == "Bühne styled (60ms)"


# -- progress ----------------------------------------------------------------------------------------


def test_progress_text_counts_frames_and_the_time_the_animation_has_left() -> None:
    event = {"event": "progress", "item": 2, "items": 3, "scale": 1, "scales": 2, "iteration": 5}
    event |= {"iterations": 10, "elapsed": 5.0, "eta": 10.0}
    # This frame's 10 s, and one frame after it taking as long as this one does (5 + 10 s).
    assert nst_common.progress_text(event) == "Neural style: frame 2/3, scale 1/2, iteration 5/10, 0:25 left"
    assert nst_common.start_text({"device": "cpu", "item": 3, "items": 3}) == (
        "Neural style: frame 3/3, starting on cpu"
    )
    assert nst_common.start_fraction({"item": 3, "items": 4}) == 0.5
    single = {"event": "progress", "scales": 1, "iteration": 2, "iterations": 4, "eta": 70.0, "elapsed": 9.0}
    assert nst_common.progress_text(single) == "Neural style: iteration 2/4, 1:10 left"
    assert nst_common.start_text({"device": "cpu"}) == "Neural style: starting on cpu"


# -- runs ------------------------------------------------------------------------------------------------

FRAMES = [  # (width, height, channels, name): as GIMP 2.10 may hand them over, mixed
    (6, 4, 4, "Frame 1 (100ms)"),
    (6, 4, 2, "Frame 2 (100ms)"),
    (5, 3, 3, "Frame 3 (200ms) (replace)"),
]


def add_frames(run: nst_bridge.FramesRun) -> list[bytes]:
    datas = []
    for index, (width, height, channels, name) in enumerate(FRAMES):
        datas.append(pixels(width, height, channels, index))
        run.add_frame(datas[-1], width, height, channels, name)
    return datas


def test_frames_go_through_batch_in_order_and_come_back(
    fake_batch, style_file, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_HALF", "1")
    calls: list[tuple[float, str]] = []
    with nst_bridge.FramesRun(fake_batch) as run:
        folder = run.folder
        datas = add_frames(run)
        results = run.run(
            [(style_file, 0.75), (style_file, 0.25)],
            {"seed": 3, "size": None, "keep_colors": "off"},
            lambda f, t: calls.append((f, t)),
        )
    for (width, height, channels, _name), data, (result, got_width, got_height) in zip(
        FRAMES, datas, results, strict=True
    ):
        assert (got_width, got_height) == (width // 2, height // 2)  # the working size, as the engine gave
        half = Image.frombytes({2: "LA", 3: "RGB", 4: "RGBA"}[channels], (width, height), data)
        expected = inverted(half.resize((width // 2, height // 2), Image.NEAREST).tobytes(), channels)
        assert result == expected
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []

    child = child_record(tmp_path)
    argv = child["argv"]
    assert argv[:3] == ["-m", "nst_core", "batch"] and child["pythonpath"] is None
    inputs = argv[3:6]
    assert [os.path.basename(p) for p in inputs] == ["frame-0000.png", "frame-0001.png", "frame-0002.png"]
    assert all(os.path.dirname(p) == child["cwd"] for p in inputs)
    flags = argv[6:]
    assert flags[flags.index("-o") + 1] == os.path.join(child["cwd"], "styled")
    assert flags.count("--style") == 2 and flags[flags.index("--style") + 1] == style_file
    for pair in (["--format", "tif"], ["--progress", "json"], ["--seed", "3"], ["--keep-colors", "off"]):
        assert flags[flags.index(pair[0]) : flags.index(pair[0]) + 2] == pair
    assert "--frames" in flags and "--size" not in flags  # None: the preset decides
    blend = flags.index("--style-blend")
    assert flags[blend + 1 : blend + 3] == ["0.75", "0.25"]
    assert flags[flags.index("--weights") + 1] == fake_batch["weights"]

    assert calls[0] == (0.0, "Neural style: frame 1/3, starting on cpu")
    texts = [text for _f, text in calls]
    assert "Neural style: frame 2/3, iteration 1/2, 0:06 left" in texts  # 2 s of this frame, 4 s of the next
    assert (pytest.approx(1 / 3), "Neural style: frame 2/3, starting on cpu") in calls
    fractions = [f for f, _t in calls]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def run_frames(config: dict, style: str, on_progress=lambda f, t: True) -> tuple[str, pytest.ExceptionInfo]:
    run = nst_bridge.FramesRun(config)
    folder = run.folder
    add_frames(run)
    with pytest.raises(nst_bridge.EngineError) as info:
        run.run([(style, 1.0)], {}, on_progress)
    run.close()
    return folder, info


def test_a_failed_frame_stops_the_run_and_names_its_layer(
    fake_batch, style_file, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "fail")
    folder, info = run_frames(fake_batch, style_file)
    assert info.value.message.startswith("Frame 'Frame 2 (100ms)' failed: Image ")
    assert info.value.message.endswith("frame-0001.png cannot be read: it is corrupt.")
    assert not pid_alive(child_record(tmp_path)["pid"])  # not left to do the third frame
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


def test_an_engine_error_is_its_one_line(fake_batch, style_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "error")
    folder, info = run_frames(fake_batch, style_file)
    assert (
        info.value.code == 4 and info.value.message == "Weights file x.pth is truncated: download it again."
    )
    assert not os.path.exists(folder)


def test_cancel_stops_the_engine_and_leaves_nothing(fake_batch, style_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    folder, info = run_frames(fake_batch, style_file, lambda fraction, text: "iteration" not in text)
    assert info.value.code == 130 and info.value.message == "Cancelled."
    assert not pid_alive(child_record(tmp_path)["pid"])
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "frames, options, message",
    [
        (1, {}, nst_common.FRAMES_NEED_TWO),
        (2, {"device": nst_common.REMOTE}, nst_common.FRAMES_NOT_REMOTE),
    ],
    ids=["one-frame", "remote"],
)
def test_one_frame_or_a_remote_device_is_refused_before_the_engine_starts(
    fake_batch, style_file, tmp_path, frames: int, options: dict, message: str
) -> None:
    with nst_bridge.FramesRun(fake_batch) as run, pytest.raises(nst_bridge.EngineError) as info:
        for _ in range(frames):
            run.add_frame(pixels(4, 3, 4, 0), 4, 3, 4, "Frame")
        run.run([(style_file, 1.0)], options, lambda f, t: True)
    assert info.value.message == message and info.value.code == nst_common.EXIT_USAGE
    assert not (tmp_path / "child.json").exists()


# -- the image files -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_frame_files_are_pngs_pillow_reads_back_exactly(mode: str) -> None:
    channels = len(mode)
    data = pixels(7, 5, channels, 1)
    image = Image.open(io.BytesIO(nst_common.png_bytes(data, 7, 5, channels)))
    assert (image.mode, image.size, image.tobytes()) == (mode, (7, 5), data)


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("libtiff", [False, True], ids=["pillow", "libtiff-strips"])
def test_results_are_read_from_the_tiffs_pillow_writes(mode, libtiff, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(TiffImagePlugin, "WRITE_LIBTIFF", libtiff)  # libtiff cuts the rows into strips
    channels = len(mode)
    data = pixels(150, 120, channels, 2)
    Image.frombytes(mode, (150, 120), data).save(tmp_path / "r.tif")
    assert nst_tiff.read_tiff((tmp_path / "r.tif").read_bytes()) == (data, 150, 120, channels)


def test_unreadable_results_are_value_errors(tmp_path: Path) -> None:
    Image.new("RGB", (20, 10)).save(tmp_path / "packed.tif", compression="tiff_lzw")
    Image.new("I;16", (20, 10)).save(tmp_path / "deep.tif")
    whole = (tmp_path / "deep.tif").read_bytes()
    for blob in ((tmp_path / "packed.tif").read_bytes(), whole, b"GIF89a", whole[:12]):
        with pytest.raises(ValueError):
            nst_tiff.read_tiff(blob)


# -- GIMP 2.10's Python, and the real engine ----------------------------------------------------------------


def test_frames_run_on_python27(fake_batch, style_file: str, tmp_path: Path) -> None:
    driver = textwrap.dedent(
        """\
        import sys
        sys.path.insert(0, sys.argv[1])
        import nst_bridge
        import nst_common
        run = nst_bridge.FramesRun({"python": sys.argv[2]})
        run.add_frame(b"\\x00\\x10\\x20\\xff" * 6, 3, 2, 4, "Frame 1 (50ms)")
        run.add_frame(b"\\x40\\x80" * 6, 3, 2, 2, b"B\\xc3\\xbchne (50ms) (replace)")
        texts = []
        results = run.run([(sys.argv[3], 1.0)], {"seed": 1}, lambda f, t: texts.append(t))
        run.close()
        assert results == [(b"\\xff\\xef\\xdf\\xff" * 6, 3, 2), (b"\\xbf\\x80" * 6, 3, 2)], repr(results)
        name = nst_common.frame_name(b"B\\xc3\\xbchne (50ms) (replace)")
        assert isinstance(name, bytes) and name == b"B\\xc3\\xbchne styled (50ms) (replace)", repr(name)
        print(texts[-1])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"} | {"TMPDIR": str(tmp_path / "tmp")}
    done = subprocess.run(
        [python27(), "-c", driver, str(PLUGIN_DIR), fake_batch["python"], style_file],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "Neural style: frame 2/2, iteration 2/2, 0:00 left"
    assert os.listdir(tmp_path / "tmp") == []


def test_real_engine_frames_through_the_bridge(vgg19_weights: Path, style_png: Path) -> None:
    """The real `batch --frames` takes the bridge's command line and files: a square moving in 3 frames."""
    frames = []
    for step in range(3):
        array = np.full((24, 32, 4), (40, 90, 160, 255), np.uint8)
        array[6:16, 4 + 4 * step : 14 + 4 * step, :3] = (230, 200, 30)
        array[:, 28:, 3] = 90
        frames.append(array.tobytes())
    fractions: list[float] = []
    with nst_bridge.FramesRun({"python": sys.executable, "weights": str(vgg19_weights)}) as run:
        for index, data in enumerate(frames):
            run.add_frame(data, 32, 24, 4, f"Frame {index + 1} (100ms)")
        results = run.run(
            [(str(style_png), 1.0)],
            {"iterations": 2, "size": 32, "device": "cpu", "seed": 0},
            lambda f, t: fractions.append(f),
        )
    assert [(width, height) for _data, width, height in results] == [(32, 24)] * 3
    for source, (result, _w, _h) in zip(frames, results, strict=True):
        assert len(result) == len(source) and result != source
        assert result[3::4] == source[3::4]  # alpha kept
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_the_real_engine_s_frames_stop_when_the_bridge_s_pipe_closes(
    tmp_path: Path, vgg19_weights: Path, style_png: Path
) -> None:
    """The bridge's `batch --frames` command ends (130, the Cancelled event, no frame written) when the
    pipe the bridge keeps on its stdin closes: how it stops with a plug-in that died."""
    inputs = []
    for index in range(2):
        inputs.append(str(tmp_path / f"frame-{index}.png"))
        Image.new("RGB", (32, 24), (40 * index, 90, 160)).save(inputs[-1])
    styled = tmp_path / "styled"
    styled.mkdir()
    options = {"iterations": 100000, "size": 32, "device": "cpu", "preset": "fast"}
    config = {"python": sys.executable, "weights": str(vgg19_weights)}
    command = nst_bridge.frames_command(
        config, sys.executable, inputs, [(str(style_png), 1.0)], options, str(styled), str(tmp_path)
    )
    engine = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for line in engine.stdout:
            if '"progress"' in line:
                break
        engine.stdin.close()
        code = engine.wait(timeout=30)
        last = engine.stdout.read().splitlines()[-1]
    finally:
        engine.kill()
        engine.wait()
    assert code == 130 and json.loads(last) == {"event": "error", "message": "Cancelled.", "code": 130}
    assert os.listdir(styled) == []


def test_each_frame_comes_as_soon_as_it_is_finished(fake_batch, style_file: str) -> None:
    """on_frame gets frame i before any progress of frame i + 1: a plug-in can show it at once."""
    log: list[tuple] = []
    with nst_bridge.FramesRun(fake_batch) as run:
        add_frames(run)
        results = run.run(
            [(style_file, 1.0)],
            {},
            lambda f, t: log.append(("progress", f)),
            lambda index, *frame: log.append(("frame", index, frame)),
        )
    frames = [entry for entry in log if entry[0] == "frame"]
    assert [(index, frame) for _kind, index, frame in frames] == list(enumerate(results))
    for index, entry in enumerate(frames[:-1]):
        next_work = next(
            n for n, e in enumerate(log) if e[0] == "progress" and e[1] > (index + 1.1) / len(FRAMES)
        )
        assert log.index(entry) < next_work
