"""Watching a run: snapshots of the picture so far, and stop-and-keep (docs/protocol.md, "Snapshots"),
in the library, the job protocol and the command line, on tiny images with random weights."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from samples import JobFiles, make_content_image, make_style_image

import nst_core
from nst_core import cli
from nst_core.errors import Cancelled
from nst_core.events import Sink
from nst_core.job import JobRequest, execute
from nst_core.options import Options, describe, resolve
from nst_core.output import Output
from nst_core.plan import build_plan
from nst_core.run import Snapshot, Watch, run_plan

pytestmark = pytest.mark.usefixtures("isolated_data")

LONG = {"iterations": 100000, "size": 64, "seed": 0, "device": "cpu", "preset": "fast", "multiscale": False}


def _rgba(width: int, height: int) -> np.ndarray:
    rgb = np.asarray(make_content_image(width, height), dtype=np.float32) / 255
    y, x = np.mgrid[0:height, 0:width]
    alpha = ((x * 7 + y * 3) % 256).astype(np.float32)[..., None] / 255  # every value differs
    return np.concatenate([rgb, alpha], axis=2)


def _style() -> np.ndarray:
    return np.asarray(make_style_image(48, 48), dtype=np.float32) / 255


class StopAfter:
    """A snapshot callback that keeps every snapshot and asks for a stop after the `count`th."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.snapshots: list[Snapshot] = []
        self.stop = threading.Event()

    def __call__(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        if len(self.snapshots) == self.count:
            self.stop.set()


def test_snapshots_are_whole_pictures_and_a_stop_keeps_the_last(vgg19_weights: Path) -> None:
    content = _rgba(64, 48)
    taker = StopAfter(3)
    watch = Watch(taker, every=0.0, stop=taker.stop)
    options = Options(**{**LONG, "iterations": 500, "weights": str(vgg19_weights)})
    result = nst_core.stylize(content, [_style()], options, watch=watch)
    assert len(taker.snapshots) == 3
    for snapshot in taker.snapshots:
        assert snapshot.image.shape == (48, 64, 4) and snapshot.full_size
        np.testing.assert_array_equal(snapshot.image[..., 3], content[..., 3])  # alpha copied back
    iterations = [s.iteration for s in taker.snapshots]
    assert iterations == sorted(set(iterations))
    assert watch.stopped and watch.iteration == iterations[-1] < 500
    np.testing.assert_array_equal(result, taker.snapshots[-1].image)


def test_a_stop_at_a_coarse_scale_gives_the_output_s_size(vgg19_weights: Path) -> None:
    taker = StopAfter(1)
    options = Options(size=96, iterations=200, seed=0, device="cpu", weights=str(vgg19_weights))
    watch = Watch(taker, every=0.0, stop=taker.stop)
    result = nst_core.stylize(_rgba(96, 64), [_style()], options, watch=watch)
    assert watch.stopped and watch.iteration == 1
    assert result.shape == (64, 96, 4)


def test_a_stop_in_tiles_keeps_the_whole_picture_of_that_iteration(vgg19_weights: Path) -> None:
    """A tiled scale steps the whole image each iteration (block by block): a stop keeps all of it."""
    content = np.asarray(make_content_image(256, 192), np.float32) / 255
    options = Options(size=256, iterations=50, multiscale=False, seed=0, weights=str(vgg19_weights))
    plan = build_plan(resolve(options), (256, 192), torch.device("cpu"), vgg19_weights, 1 << 40)
    plan = dataclasses.replace(plan, scales=(dataclasses.replace(plan.scales[0], tile=128),))
    taker, tiles = StopAfter(2), set()
    watch = Watch(taker, every=0.0, stop=taker.stop)
    result = run_plan(plan, content, [_style()], lambda report: tiles.add(report.tiles), watch=watch)
    assert tiles == {4} and watch.stopped and watch.iteration == taker.snapshots[-1].iteration
    np.testing.assert_array_equal(result, taker.snapshots[-1].image)


def test_without_a_watch_nothing_is_taken_and_nothing_stops(vgg19_weights: Path) -> None:
    options = Options(**{**LONG, "iterations": 3, "weights": str(vgg19_weights)})
    watch = Watch(stop=threading.Event())
    nst_core.stylize(_rgba(64, 48), [_style()], options, watch=watch)
    assert not watch.stopped and watch.iteration == 3


class CancelAtSecondSnapshot(Sink):
    """Keeps the events; cancels the run when the second snapshot is announced."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[dict] = []
        self.cancel = threading.Event()

    def _show(self, event: dict) -> None:
        self.events.append(event)
        if sum(e["event"] == "snapshot" for e in self.events) == 2:
            self.cancel.set()


def test_a_cancel_after_snapshots_writes_no_result(tmp_path: Path, job_files: JobFiles) -> None:
    sink = CancelAtSecondSnapshot()
    options = Options(**{**LONG, "weights": str(job_files.weights)})
    out, snap = tmp_path / "out.png", tmp_path / "snap.png"
    request = JobRequest(job_files.content, (job_files.style,), options, Output(out), snapshot=Output(snap))
    with pytest.raises(Cancelled):
        execute(replace(request, snapshot_every=0.2), sink, sink.cancel)
    assert not out.exists()
    shots = [e for e in sink.events if e["event"] == "snapshot"]
    assert len(shots) == 2 and shots[0]["format"] == "png"
    # The first at the content's size; later ones at the working size if the upscale cost too much.
    assert (shots[0]["width"], shots[0]["height"], shots[0]["full_size"]) == (96, 64, True)
    size = (shots[-1]["width"], shots[-1]["height"])
    assert size == ((96, 64) if shots[-1]["full_size"] else (64, 43))
    with Image.open(snap) as image:  # the last snapshot, whole
        assert image.size == size


# -- the job protocol: a `stop` line on stdin ---------------------------------------------------------


def _job(folder: Path, job_files: JobFiles, **snapshot: object) -> Path:
    job = {
        "version": 1,
        "content": {"path": str(job_files.content)},
        "styles": [{"path": str(job_files.style)}],
        "options": {**LONG, "weights": str(job_files.weights)},
        "output": {"raw": "out.raw", "format": "u8"},
        "snapshot": {"raw": "snap.raw", "format": "u8", "every": 0.2, **snapshot},
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    return path


def _events_until(stream, kinds: tuple[str, ...]) -> list[dict]:  # noqa: ANN001 (a text pipe)
    events: list[dict] = []
    while line := stream.readline():
        events.append(json.loads(line))
        if events[-1]["event"] in kinds:
            break
    return events


def test_a_stop_line_keeps_what_a_run_of_that_many_iterations_makes(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    job = _job(tmp_path, job_files)
    command = [sys.executable, "-m", "nst_core", "run-job", str(job)]
    engine = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = _events_until(engine.stdout, ("snapshot", "error"))
        engine.stdin.write("stop\n")
        engine.stdin.flush()
        rest = _events_until(engine.stdout, ("done", "error"))
        code = engine.wait(timeout=60)
    finally:
        engine.kill()
        engine.wait()
    snapshot, done = first[-1], rest[-1]
    assert snapshot["event"] == "snapshot", first
    assert (snapshot["width"], snapshot["height"], snapshot["channels"], snapshot["format"]) == (
        96,
        64,
        3,
        "u8",
    )
    assert snapshot["full_size"] is True and 0 < snapshot["fraction"] < 1
    assert code == 0 and done["event"] == "done" and done["stopped"] is True
    assert done["iteration"] >= snapshot["iteration"]
    # The file holds the last snapshot whole: at the content's size, or the working size when the
    # upscale cost too much.
    last = [e for e in first + rest if e["event"] == "snapshot"][-1]
    assert (tmp_path / "snap.raw").stat().st_size == last["width"] * last["height"] * 3
    kept = (tmp_path / "out.raw").read_bytes()
    # The same job told to run exactly that many iterations makes the same picture.
    again = json.loads(job.read_text())
    again["options"]["iterations"] = done["iteration"]
    again["output"]["raw"] = "again.raw"
    del again["snapshot"]
    job.write_text(json.dumps(again))
    assert cli.main(["run-job", str(job)]) == 0
    capsys.readouterr()
    assert kept == (tmp_path / "again.raw").read_bytes()


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        ({"every": 0.1}, "`snapshot.every` is 0.1; use seconds from 0.2 to 3600"),
        ({"every": "2"}, "`snapshot.every` is '2'; use seconds from 0.2 to 3600"),
        ({"format": "u16"}, "raw output `format` is 'u16'; use u8 or float32"),
    ],
)
def test_bad_snapshot_entries(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str], snapshot: dict, message: str
) -> None:
    assert cli.main(["run-job", str(_job(tmp_path, job_files, **snapshot))]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["message"] == f"Bad job file: {message} (see docs/protocol.md)."


def test_describe_lists_snapshots_and_stop() -> None:
    description = describe()
    assert {"snapshots", "stop"} <= set(description["features"])
    assert description["snapshot_every"] == {"default": 2.0, "min": 0.2, "max": 3600.0}


# -- the command line: --snapshot and --keep-on-stop with a real Ctrl-C ---------------------------------


def _stylize(job_files: JobFiles, out: Path, *flags: str) -> subprocess.Popen:
    argv = job_files.stylize(
        out, *(f"--{k.replace('_', '-')}={v}" for k, v in LONG.items() if k != "multiscale")
    )
    argv += ["--no-multiscale", "--keep-on-stop", *flags]
    return subprocess.Popen(
        [sys.executable, "-m", "nst_core", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), process.stderr.read() if process.poll() is not None else "no snapshot in time"


def test_ctrl_c_with_keep_on_stop_writes_the_picture_so_far(tmp_path: Path, job_files: JobFiles) -> None:
    out, snap = tmp_path / "out.png", tmp_path / "snap.png"
    process = _stylize(job_files, out, "--snapshot", str(snap), "--snapshot-every", "0.2")
    try:
        _wait_for(snap, process)
        with Image.open(snap) as image:
            assert image.size == (64, 43)  # the working size: --size 64 for a 96 x 64 content
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    line = err.strip().splitlines()[-1]
    iteration = int(line.split("Stopped after iteration ")[1].split(":")[0])
    assert 1 <= iteration < LONG["iterations"] and f"wrote {out}" in line
    with Image.open(out) as image:
        assert image.size == (64, 43)


def test_a_second_ctrl_c_cancels_and_writes_nothing(tmp_path: Path, job_files: JobFiles) -> None:
    out = tmp_path / "out.png"
    # Iterations long enough that the second Ctrl-C lands in the one the first asked to end.
    process = _stylize(job_files, out, "--progress", "json", "--size", "256")
    try:
        assert _events_until(process.stdout, ("start",))[-1]["event"] == "start"
        process.send_signal(signal.SIGINT)
        assert "press Ctrl-C again to cancel" in process.stderr.readline()
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 130, err
    assert json.loads(rest.splitlines()[-1]) == {"event": "error", "message": "Cancelled.", "code": 130}
    assert not out.exists()


def test_snapshot_every_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["stylize", "c.png", "s.png", "-o", "o.png", "--snapshot", "s.png", "--snapshot-every", "0"]
    )
    assert code == 2
    assert (
        capsys.readouterr().err
        == "error: --snapshot-every 0 is out of range: use a value from 0.2 to 3600.\n"
    )


@pytest.mark.parametrize("role", ["content", "output"])
def test_a_snapshot_file_that_is_an_input_or_the_output_is_refused_before_the_run(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str], role: str
) -> None:
    out = tmp_path / "out.png"
    before = job_files.content.read_bytes()
    target = job_files.content if role == "content" else out
    argv = job_files.stylize(out, "--snapshot", str(target), "--iterations", "1", "--size", "32")
    assert cli.main(argv) == 5
    line = capsys.readouterr().err
    assert line == (
        f"error: Snapshot file {target} is the {'content image' if role == 'content' else 'output'} "
        f"{target}: snapshots would replace it; choose another snapshot file.\n"
    )
    assert job_files.content.read_bytes() == before and not out.exists()


def test_snapshots_and_keep_on_stop_are_refused_with_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stylize", "c.png", "s.png", "-o", "o.png", "--server", "http://127.0.0.1:1", "--keep-on-stop"]
    assert cli.main(argv) == 2
    expected = "error: --snapshot and --keep-on-stop watch a run on this machine: leave out --server.\n"
    assert capsys.readouterr().err == expected
