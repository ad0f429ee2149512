"""The GIMP 3 dialog's preview (plug-ins/neural_style/nst_preview.py) with the real engine: a preview
shows at its small size, a newer request or a changed setting cancels the one in flight (its engine
stopped, its result never shown), closing the dialog waits for every engine to stop, and no file is left."""

from __future__ import annotations

import json
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from servers import pid_alive, stop_local_service, wait_until

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plug-ins" / "neural_style"))

import nst_common  # noqa: E402
import nst_preview  # noqa: E402

from nst_core.options import describe  # noqa: E402
from nst_core.presets import PREVIEW_ITERATIONS, PREVIEW_SIZE  # noqa: E402

WIDTH, HEIGHT = 40, 30


def pixels(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 6, y * 8, 128 + 0 * x, 255 + 0 * x], axis=-1).astype(np.uint8).tobytes()


class Dialog:
    """What the dialog sees: the worker's posts run when the test pumps them, as GLib's main loop would."""

    def __init__(self) -> None:
        self.posted: queue.Queue = queue.Queue()
        self.shown: list[tuple] = []
        self.failed: list[str] = []
        self.progress: list[float] = []

    def post(self, function, *args) -> None:
        self.posted.put((function, args))

    def pump(self, until, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            assert time.monotonic() < deadline, "the preview did not finish"
            try:
                function, args = self.posted.get(timeout=0.1)
            except queue.Empty:
                continue
            function(*args)

    def worker(self, config: dict) -> nst_preview.PreviewWorker:
        return nst_preview.PreviewWorker(
            config,
            self.post,
            lambda *shown: self.shown.append(shown),
            self.failed.append,
            lambda fraction, _text: self.progress.append(fraction),
        )


@pytest.fixture
def config(tmp_path: Path, vgg19_weights: Path):
    engine = json.loads(json.dumps(describe()))
    config = {
        "python": sys.executable,
        "weights": str(vgg19_weights),
        "data_dir": str(tmp_path / "data"),
        "engine": engine,
        "service": False,
    }
    yield config
    stop_local_service(tmp_path / "data")


def job(style: Path, **options: object) -> nst_preview.PreviewJob:
    settings = {"device": "cpu", "seed": 0, **options}
    return nst_preview.PreviewJob(pixels(), WIDTH, HEIGHT, 4, [(str(style), 1.0)], settings)


def run_folders() -> list[Path]:
    """This process's run folders (other test processes may have theirs)."""
    return list(Path(nst_common.runs_folder()).glob(f"{nst_common.TEMP_PREFIX}{os.getpid()}-*"))


def engine_children() -> list[int]:
    """This process's engine children still alive (run-job or the service's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat[1]) == os.getpid() and b"run-job" in cmdline and stat[0] != "Z":
                found.append(int(entry.name))
    return found


def test_the_preview_settings_come_from_the_engine(config: dict) -> None:
    assert nst_preview.preview_settings(config) == (PREVIEW_SIZE, PREVIEW_ITERATIONS)
    assert nst_preview.preview_settings({}) == (256, 30)
    assert nst_preview.preview_scale(config, 4000, 3000) == PREVIEW_SIZE / 4000
    assert nst_preview.preview_scale(config, 100, 80) == 1.0
    assert nst_preview.scaled_size(4000, 3000, 0.064) == (256, 192)
    options = nst_preview.preview_options(
        config, {"iterations": 500, "size": 2048, "strength": 2.0}, 256, 192
    )
    assert options == {"iterations": PREVIEW_ITERATIONS, "size": 256, "strength": 2.0}
    assert nst_preview.preview_options(config, {}, 20, 10)["size"] == 32  # the engine's smallest


def test_a_preview_shows_at_its_size_and_leaves_nothing(config: dict, style_png: Path) -> None:
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(style_png))
    dialog.pump(lambda: dialog.shown or dialog.failed)
    assert dialog.failed == []
    ((result, width, height, channels),) = dialog.shown
    assert (width, height, channels) == (WIDTH, HEIGHT, 4) and len(result) == WIDTH * HEIGHT * 4
    assert result != pixels()
    assert dialog.progress and dialog.progress[-1] == pytest.approx(1.0)
    worker.close()
    assert not worker.busy() and run_folders() == []


def test_a_changed_setting_cancels_the_preview_in_flight(config: dict, style_png: Path) -> None:
    config["engine"]["preview"] = {"size": 256, "iterations": 100000}
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(style_png))
    dialog.pump(lambda: dialog.progress and engine_children())  # the engine is computing
    worker.cancel()
    started = time.monotonic()
    wait_until(lambda: not worker.busy(), 30)
    assert time.monotonic() - started < 30
    dialog.pump(lambda: dialog.posted.empty(), timeout=5)
    assert dialog.shown == [] and dialog.failed == []  # a cancelled preview says nothing
    assert engine_children() == [] and run_folders() == []


def test_the_newest_preview_wins(config: dict, style_png: Path, tmp_path: Path) -> None:
    config["engine"]["preview"] = {"size": 256, "iterations": 100000}
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(style_png))
    dialog.pump(lambda: dialog.progress)
    config["engine"]["preview"] = {"size": 256, "iterations": 2}
    worker.start(job(style_png, strength=3.0))
    dialog.pump(lambda: dialog.shown or dialog.failed)
    assert dialog.failed == [] and len(dialog.shown) == 1
    worker.close()
    assert engine_children() == [] and run_folders() == []


def test_closing_the_dialog_stops_the_engine(config: dict, style_png: Path) -> None:
    config["engine"]["preview"] = {"size": 256, "iterations": 100000}
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(style_png))
    dialog.pump(lambda: dialog.progress and engine_children())
    worker.close()
    assert not worker.busy() and engine_children() == [] and run_folders() == []
    assert dialog.shown == []


def test_a_failing_preview_says_why_in_one_line(config: dict, tmp_path: Path) -> None:
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(tmp_path / "no-such-style.png"))
    dialog.pump(lambda: dialog.failed)
    (message,) = dialog.failed
    assert "no-such-style.png not found" in message and "\n" not in message
    worker.close()


@pytest.mark.parametrize("listed", [True, False], ids=["engine-lists-previews", "older-engine"])
def test_a_preview_through_the_warm_engine(config: dict, style_png: Path, listed: bool) -> None:
    """An engine whose `describe` lacks "previews" (it would refuse the key) is sent none."""
    config["service"] = True
    if not listed:
        config["engine"]["features"].remove("previews")
    dialog = Dialog()
    worker = dialog.worker(config)
    reported = []
    for index, strength in enumerate((1.0, 4.0, 4.0)):
        dialog.progress.clear()
        worker.start(job(style_png, strength=strength))
        dialog.pump(lambda n=index: len(dialog.shown) > n or dialog.failed, timeout=120)
        reported.append([f for f in dialog.progress if f > 0])
    assert dialog.failed == [] and len(dialog.shown) == 3
    assert dialog.shown[0][0] != dialog.shown[1][0]  # the second one's setting was used
    # The same settings again: the service's last preview (docs/protocol.md, `preview`), no iteration.
    assert reported[1] and (reported[2] == []) == listed and dialog.shown[2] == dialog.shown[1]
    worker.close()
    service = json.loads((Path(config["data_dir"]) / "service" / "service.json").read_text())
    assert pid_alive(service["pid"])  # the warm engine ran them, and stays for the next preview
    assert run_folders() == []


def test_opening_the_dialog_starts_the_warm_engine(config: dict, style_png: Path) -> None:
    config["service"] = True
    state = Path(config["data_dir"]) / "service" / "service.json"
    assert not state.exists()
    nst_preview.warm_up(config).join(120)
    service = json.loads(state.read_text())
    assert pid_alive(service["pid"])
    dialog = Dialog()
    worker = dialog.worker(config)
    worker.start(job(style_png))
    dialog.pump(lambda: dialog.shown or dialog.failed, timeout=120)
    worker.close()
    assert dialog.failed == [] and len(dialog.shown) == 1
    assert json.loads(state.read_text())["pid"] == service["pid"]  # the preview ran on the one started
