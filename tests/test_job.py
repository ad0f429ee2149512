"""The job protocol end to end: job files, raw buffers in and out, events, cancel, parent death."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest
from samples import JobFiles

from nst_core import cli
from nst_core.errors import UsageError
from nst_core.job import RawImage, parse_job, read_raw
from nst_core.options import STARTS

TINY = {"iterations": 2, "size": 48, "seed": 0, "device": "cpu"}
TINY_FLAGS = [f"--{name}={value}" for name, value in TINY.items()]
RAW = {"raw": "c.raw", "width": 4, "height": 2, "format": "u8", "channels": 3}


def write_job(folder: Path, **overrides: object) -> Path:
    job = {
        "version": 1,
        "content": {"path": "content.png"},
        "styles": [{"path": "style.png"}],
        "options": dict(TINY),
        "output": {"path": "result.png"},
    }
    job.update(overrides)
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def run_job(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict]]:
    code = cli.main(["run-job", str(path)])
    lines = capsys.readouterr().out.splitlines()
    return code, [json.loads(line) for line in lines]


def rgba_pixels(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    alpha = ((x * 7 + y * 3) % 256).astype(np.uint8)  # every value differs: an exact copy is visible
    return np.stack([x * 255 // width, y * 255 // height, 128 + 0 * x, alpha], axis=-1).astype(np.uint8)


# -- parsing ------------------------------------------------------------------------------------------


def test_relative_paths_are_relative_to_the_job_file(tmp_path: Path) -> None:
    data = {
        "version": 1,
        "content": {"raw": "c.raw", "width": 4, "height": 2, "format": "u8", "channels": 3},
        "styles": [{"path": "s1.png", "weight": 2}, {"path": "/abs/s2.png"}],
        "options": {"weights": "w.pth", "init": "start.png", "size": 64},
        "output": {"raw": "out.raw", "format": "float32"},
    }
    job = parse_job(data, tmp_path)
    assert job.content == RawImage(tmp_path / "c.raw", 4, 2, "u8", 3)
    assert job.styles == (tmp_path / "s1.png", Path("/abs/s2.png"))
    assert job.options.style_blend == [2.0, 1.0]
    assert job.options.weights == str(tmp_path / "w.pth") and job.options.init == str(tmp_path / "start.png")
    assert job.output.path == tmp_path / "out.raw" and job.output.raw_format == "float32"
    assert job.result_size == "content"  # run-job always answers at the content's size


def test_a_start_named_by_a_word_is_no_file(tmp_path: Path) -> None:
    for start in STARTS:
        data = {
            "version": 1,
            "content": {"path": "c.png"},
            "styles": [{"path": "s.png"}],
            "options": {"init": start},
            "output": {"path": "o.png"},
        }
        assert parse_job(data, tmp_path).options.init == start


def test_parsing_leaves_the_options_as_given(tmp_path: Path) -> None:
    """The options are frozen: paths and blend weights from the job make a new object."""
    options = {"weights": "w.pth", "size": 64}
    data = {
        "version": 1,
        "content": {"path": "c.png"},
        "styles": [{"path": "s.png", "weight": 3}],
        "options": options,
        "output": {"path": "o.png"},
    }
    job = parse_job(data, tmp_path)
    assert options == {"weights": "w.pth", "size": 64}
    assert (job.options.weights, job.options.style_blend) == (str(tmp_path / "w.pth"), [3.0])
    with pytest.raises(FrozenInstanceError):
        job.options.size = 128  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "Job version 2 is not supported"),
        ({"version": None}, "Job version None is not supported"),
        ({"styles": []}, "`styles` must be a non-empty list"),
        ({"extra": 1}, "unknown key.s. extra"),
        ({"options": {"sharpness": 3}}, "Unknown option sharpness"),
        ({"options": {"size": "big"}}, "Option size must be a whole number"),
        ({"content": {**RAW, "format": "u16"}}, "use u8 or float32"),
        ({"content": {**RAW, "channels": 5}}, "use 1 to 4"),
        ({"content": {**RAW, "width": 0}}, "positive whole `width`"),
        ({"output": {"raw": "o.raw"}}, "raw output `format` is None"),
        ({"styles": [{"path": "s.png", "weight": "x"}]}, "must be a number"),
        ({"styles": [{"path": "s.png", "weight": 1}], "options": {"style_blend": [1]}}, "not both"),
    ],
)
def test_bad_job_files(tmp_path: Path, change: dict, message: str) -> None:
    data = {
        "version": 1,
        "content": {"path": "c.png"},
        "styles": [{"path": "s.png"}],
        "options": {},
        "output": {"path": "o.png"},
    }
    data.update(change)
    with pytest.raises(UsageError, match=message) as caught:
        parse_job(data, tmp_path)
    assert caught.value.code == 2 and "\n" not in caught.value.message


def test_raw_buffer_of_wrong_size(tmp_path: Path) -> None:
    (tmp_path / "c.raw").write_bytes(bytes(4 * 2 * 3 - 1))
    with pytest.raises(UsageError, match=r"has 23 bytes but 4x2x3 u8 needs 24"):
        read_raw(RawImage(tmp_path / "c.raw", 4, 2, "u8", 3))


def test_raw_float32_is_little_endian(tmp_path: Path) -> None:
    values = np.array([0.0, 0.25, 0.5, 1.0], dtype="<f4")
    (tmp_path / "c.raw").write_bytes(values.tobytes())
    array = read_raw(RawImage(tmp_path / "c.raw", 2, 1, "float32", 2))
    assert array.shape == (1, 2, 2) and np.array_equal(array.ravel(), values)


# -- running (in process: tiny images, two iterations) --------------------------------------------------


def _write_result(path: Path) -> None:
    from nst_core.output import Output, write_output

    write_output(np.full((2, 3, 3), 0.5, np.float32), Output(path, "u8" if path.suffix == ".raw" else None))


def _write_speed(path: Path) -> None:
    from nst_core import speed

    speed.record_speed("cpu test", speed.Speed(1e9, 0.01, 1.0), path.parent)


@pytest.mark.parametrize(
    ("writer", "name"),
    [(_write_result, "result.png"), (_write_result, "result.raw"), (_write_speed, "speed.json")],
)
def test_written_files_take_the_umask_mode_and_keep_a_replaced_file_s(
    tmp_path: Path,
    writer,
    name: str,  # noqa: ANN001 (a writer above)
) -> None:
    from nst_core.paths import SPEED_FILE

    path = tmp_path / (SPEED_FILE if name == "speed.json" else name)
    previous = os.umask(0o022)
    try:
        writer(path)
        assert path.stat().st_mode & 0o777 == 0o644  # as any new file: others may read it
        path.chmod(0o660)
        writer(path)
        assert path.stat().st_mode & 0o777 == 0o660  # the file replaced keeps its mode
        path.unlink()
        os.umask(0o077)
        writer(path)
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("fmt", ["u8", "float32"])
def test_raw_rgba_in_and_out(
    tmp_path: Path, style_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    width, height = 40, 28
    pixels = rgba_pixels(width, height)
    data = pixels if fmt == "u8" else (pixels / 255.0).astype("<f4")
    (tmp_path / "content.raw").write_bytes(data.tobytes())
    path = write_job(
        tmp_path,
        content={"raw": "content.raw", "width": width, "height": height, "format": fmt, "channels": 4},
        styles=[{"path": str(style_png)}],
        options={**TINY, "size": 32, "weights": str(vgg19_weights)},
        output={"raw": "out.raw", "format": fmt},
    )
    code, events = run_job(path, capsys)
    assert code == 0, events
    assert [e["event"] for e in events][0] == "start" and events[-1]["event"] == "done"
    assert events[-1]["output"] == str(tmp_path / "out.raw")
    dtype = np.uint8 if fmt == "u8" else np.dtype("<f4")
    out = np.frombuffer((tmp_path / "out.raw").read_bytes(), dtype=dtype)
    assert out.size == width * height * 4
    out = out.reshape(height, width, 4)
    assert np.array_equal(out[..., 3], data[..., 3])  # alpha copied exactly
    assert not np.array_equal(out[..., :3], data[..., :3])  # the colour was repainted
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_job_events_follow_the_protocol(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_job(tmp_path, options={**TINY, "weights": str(job_files.weights), "preset": "fast"})
    code, events = run_job(path, capsys)
    assert code == 0, events
    start, *progress, done = events
    assert start["event"] == "start" and start["version"] == 1 and start["device"] == "cpu"
    assert start["scales"] == [48] and start["iterations"] == 2 and start["memory_estimate"] > 0
    assert [e["event"] for e in progress] == ["progress"] * len(progress) and progress
    last = progress[-1]
    assert last["fraction"] == pytest.approx(1.0) and last["iteration"] == last["iterations"]
    assert set(last["loss"]) >= {"total", "content", "style", "tv"}
    assert done == {"event": "done", "output": str(tmp_path / "result.png"), "seconds": done["seconds"]}
    from PIL import Image

    with Image.open(tmp_path / "result.png") as result:
        assert result.size == (96, 64)  # the content's size, whatever the working size


# -- the lifeline: end of stdin, parent death (real processes) -------------------------------------------

LONG = {"iterations": 100000, "size": 64, "device": "cpu", "preset": "fast"}


def engine_command(job: Path) -> list[str]:
    return [sys.executable, "-m", "nst_core", "run-job", str(job)]


def wait_for_progress(stream, seconds: float = 120) -> list[dict]:  # noqa: ANN001 (a text pipe)
    events: list[dict] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        events.append(json.loads(line))
        if events[-1]["event"] != "start":
            break
    return events


def test_closing_stdin_cancels_promptly(tmp_path: Path, job_files: JobFiles) -> None:
    job = write_job(tmp_path, options={**LONG, "weights": str(job_files.weights)})
    engine = subprocess.Popen(
        engine_command(job), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        events = wait_for_progress(engine.stdout)
        assert events and events[-1]["event"] == "progress", engine.stderr.read()
        closed = time.monotonic()
        engine.stdin.close()
        code = engine.wait(timeout=30)
        waited = time.monotonic() - closed
        rest = [json.loads(line) for line in engine.stdout.read().splitlines()]
    finally:
        engine.kill()
        engine.wait()
    assert code == 130
    assert rest[-1] == {"event": "error", "message": "Cancelled.", "code": 130}
    assert waited < 15
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "job.json", "style.png"]


LONG_FLAGS = [f"--{name}={value}" for name, value in LONG.items()]


def test_stylize_in_a_shell_loop_leaves_the_loop_s_stdin_alone(tmp_path: Path, job_files: JobFiles) -> None:
    """`ls | while read f; do ... stylize "$f" ...; done`: stdin is the loop's list, its end no cancel."""
    out = tmp_path / "out.png"
    argv = [sys.executable, "-m", "nst_core", *job_files.stylize(out, *TINY_FLAGS)]
    done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=300)  # a pipe, closed
    assert (done.returncode, done.stderr) == (0, "")
    assert out.is_file()


def test_sigterm_cancels_stylize_with_its_one_line(tmp_path: Path, job_files: JobFiles) -> None:
    out = tmp_path / "out.png"
    argv = [sys.executable, "-m", "nst_core", *job_files.stylize(out, *LONG_FLAGS, "--progress", "bar")]
    engine = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in engine.stderr:  # text mode: each redraw of the bar (ended by \r) is a line
            if line.startswith("["):
                break
        engine.send_signal(signal.SIGTERM)
        code = engine.wait(timeout=30)
        rest = engine.stderr.read().splitlines()
    finally:
        engine.kill()
        engine.wait()
    assert (code, rest[-1]) == (130, "error: Cancelled.")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "style.png"]


PARENT = """
import subprocess, sys, time
engine = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
print(engine.pid, flush=True)
for line in engine.stdout:
    if b'"progress"' in line:
        print("running", flush=True)
        break
time.sleep(600)
"""


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie has exited; only its parent's reaping is left


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to see the orphan")
def test_engine_exits_when_its_parent_dies(tmp_path: Path, job_files: JobFiles) -> None:
    """stdin is /dev/null here, so only the parent-pid watch can notice the death."""
    job = write_job(tmp_path, options={**LONG, "weights": str(job_files.weights)})
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *engine_command(job)], stdout=subprocess.PIPE, text=True
    )
    engine_pid = int(parent.stdout.readline())
    try:
        assert parent.stdout.readline().strip() == "running"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while not process_gone(engine_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_gone(engine_pid)
    finally:
        if not process_gone(engine_pid):
            os.kill(engine_pid, signal.SIGKILL)
    assert not (tmp_path / "result.png").exists()


def test_a_stuck_run_is_ended_hard_after_the_grace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nst_core import cancel, paths

    exits: list[int] = []
    aborted: list[str] = []
    monkeypatch.setattr(cancel.os, "_exit", exits.append)
    pending = tmp_path / ".result.png.tmp"
    pending.write_bytes(b"half")
    monkeypatch.setattr(paths, "PENDING", {pending})
    stuck = cancel.CancelWatcher(on_abort=lambda: aborted.append("error event"), grace=0.05)
    stuck.set()
    deadline = time.monotonic() + 10
    while not exits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (exits, aborted, pending.exists()) == ([130], ["error event"], False)

    # A cancel after the run's last event (the plug-in closing our stdin after `done`) must not kill.
    finished = cancel.CancelWatcher(on_abort=lambda: aborted.append("late"), grace=0.05)
    finished.finish()
    finished.set()
    time.sleep(0.3)
    assert finished.is_set() and exits == [130] and aborted == ["error event"]


# -- styles and masks as raw pixels (an editor's layer and selection) ------------------------------------


def _raw_entry(folder: Path, name: str, pixels: np.ndarray, fmt: str) -> dict:
    data = pixels if fmt == "u8" else (pixels / 255.0).astype("<f4")
    (folder / name).write_bytes(np.ascontiguousarray(data).tobytes())
    height, width, channels = pixels.shape
    return {"raw": name, "width": width, "height": height, "format": fmt, "channels": channels}


@pytest.mark.parametrize("fmt", ["u8", "float32"])
def test_raw_style_and_mask_give_what_their_files_give(
    tmp_path: Path, content_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """The same pixels as files or as raw buffers: the same result, to the byte (a partly transparent style
    is read the same way by both roads)."""
    from PIL import Image

    style = rgba_pixels(36, 30)
    mask = np.zeros((20, 30, 1), np.uint8)
    mask[:, :12] = 255
    mask[:, 12:18] = 128
    Image.fromarray(style, "RGBA").save(tmp_path / "style.png")
    Image.fromarray(mask[..., 0], "L").save(tmp_path / "mask.png")
    options = {**TINY, "weights": str(vgg19_weights)}
    by_files = write_job(
        tmp_path,
        content={"path": str(content_png)},
        styles=[{"path": "style.png", "mask": "mask.png"}],
        options=options,
        output={"raw": "files.raw", "format": "u8"},
    )
    assert run_job(by_files, capsys)[0] == 0
    raw_style = _raw_entry(tmp_path, "style.raw", style, fmt)
    raw_mask = _raw_entry(tmp_path, "mask.raw", mask, fmt)
    by_raw = write_job(
        tmp_path,
        content={"path": str(content_png)},
        styles=[{**raw_style, "mask": raw_mask}],
        options=options,
        output={"raw": "raw.raw", "format": "u8"},
    )
    code, events = run_job(by_raw, capsys)
    assert code == 0, events
    files, raw = ((tmp_path / name).read_bytes() for name in ("files.raw", "raw.raw"))
    assert files == raw
    unmasked = write_job(
        tmp_path,
        content={"path": str(content_png)},
        styles=[raw_style],
        options=options,
        output={"raw": "unmasked.raw", "format": "u8"},
    )
    assert run_job(unmasked, capsys)[0] == 0
    assert (tmp_path / "unmasked.raw").read_bytes() != raw  # the mask was read, not dropped


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ({"raw": "s.raw", "width": 4, "height": 2, "format": "u16", "channels": 3}, "use u8 or float32"),
        ({"raw": "s.raw", "width": 4, "format": "u8", "channels": 3}, "raw a style needs positive whole"),
        ({"width": 4}, "a style needs a `path` or `raw`"),
        ({"path": "s.png", "mask": {"raw": "m.raw", "channels": 9}}, "raw a style `mask` needs"),
        ({"path": "s.png", "mask": [1]}, "a style `mask` must be a file name"),
    ],
)
def test_bad_raw_styles(tmp_path: Path, style: dict, message: str) -> None:
    data = {"version": 1, "content": {"path": "c.png"}, "styles": [style], "output": {"path": "o.png"}}
    with pytest.raises(UsageError, match=message):
        parse_job(data, tmp_path)


def test_a_raw_style_of_the_wrong_size_is_one_line_and_no_output(
    tmp_path: Path, content_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "style.raw").write_bytes(bytes(10))
    path = write_job(
        tmp_path,
        content={"path": str(content_png)},
        styles=[{"raw": "style.raw", "width": 4, "height": 2, "format": "u8", "channels": 3}],
        options={**TINY, "weights": str(vgg19_weights)},
    )
    code, events = run_job(path, capsys)
    assert code == 2 and events[-1]["event"] == "error"
    assert "has 10 bytes but 4x2x3 u8 needs 24" in events[-1]["message"]
    assert not (tmp_path / "result.png").exists()
