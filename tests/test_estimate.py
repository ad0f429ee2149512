"""The time estimate of the GIMP 3 dialog (plug-ins/neural_style/nst_estimate.py): the engine's plan
command for the dialog's settings, its one line, and when it is asked for again; once with the real
engine's `plan`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plug-ins" / "neural_style"))

import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_estimate  # noqa: E402

from nst_core.options import describe  # noqa: E402

PLAN = {
    "device": "cpu",
    "working_size": 432,
    "output_size": [4000, 3000],
    "scales": [
        {"width": 216, "height": 162, "iterations": 30, "tile": None, "seconds": 10.4},
        {"width": 432, "height": 324, "iterations": 23, "tile": None, "seconds": 19.4},
    ],
    "iterations": 53,
    "tiles": [],
    "memory": {"estimate": 992922931, "budget": None},
    "estimated_seconds": 29.8,
}


def test_plan_command_passes_the_dialog_options_as_a_job_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    python = tmp_path / "python"
    python.write_text("")
    config = {"python": str(python), "weights": "/w/vgg19.pth", "engine": describe()}
    values = {"preset": "fast", "size": 0, "iterations": 80, "style_scale": 1.5, "device": "cpu", "seed": 0}
    options = nst_bridge.dialog_options(config, values)
    command = nst_estimate.plan_command(config, 4000, 3000, 2, options)
    assert command == [
        str(python),
        "-m",
        "nst_core",
        "plan",
        "--width",
        "4000",
        "--height",
        "3000",
        "--styles",
        "2",
        "--device",
        "cpu",
        "--iterations",
        "80",
        "--preset",
        "fast",
        "--seed",
        "0",
        "--style-scale",
        "1.5",
        "--weights",
        "/w/vgg19.pth",  # the config's, as in a job; size 0 (the preset's) is left out
        "--json",
    ]
    assert nst_common.option_flags({"multiscale": False, "style_blend": [0.25, 0.75], "init": None}) == [
        "--init",
        "None",
        "--no-multiscale",
        "--style-blend",
        "0.25",
        "0.75",
    ]
    masked = nst_estimate.plan_command(config, 4000, 3000, 2, options, masked=True)
    assert masked == [*command[:10], "--masked", *command[10:]]  # a region's styles need more memory
    (tmp_path / "flatpak-info").write_text("")
    monkeypatch.setattr(nst_common, "FLATPAK_INFO", str(tmp_path / "flatpak-info"))
    flatpak = nst_estimate.plan_command({"python": "/host/python"}, 10, 20, 1, {})
    assert flatpak[:5] == [
        "flatpak-spawn",
        "--host",
        "--watch-bus",
        "--env=PYTHONIOENCODING=utf-8",
        "--env=PYTHONUNBUFFERED=1",
    ]
    assert flatpak[5:9] == ["/host/python", "-m", "nst_core", "plan"]
    with pytest.raises(nst_bridge.EngineNotInstalled, match="not installed"):
        nst_estimate.plan_command({}, 10, 20, 1, {})
    monkeypatch.setattr(nst_common, "FLATPAK_INFO", str(tmp_path / "absent"))
    with pytest.raises(nst_bridge.EngineNotInstalled, match="/no/python is missing"):
        nst_estimate.plan_command({"python": "/no/python"}, 10, 20, 1, {})


def test_the_estimate_is_one_short_line() -> None:
    text = nst_estimate.estimate_text(0, json.dumps(PLAN), "")
    assert text == (
        "About 30 s on the CPU at 432\u00d7324 px "
        "(the layer is 4000\u00d73000 px; the result is scaled up to it)"
    )
    tiled = PLAN | {
        "device": "cuda:0 (NVIDIA H100)",
        "output_size": [432, 324],
        "estimated_seconds": 754.0,
        "tiles": [{"scale": 2, "size": 432, "count": 12, "tile": 200}],
    }
    assert (
        nst_estimate.estimate_text(0, json.dumps(tiled), "")
        == "About 13 min on NVIDIA H100 at 432\u00d7324 px, in 12 tiles"
    )
    long = tiled | {"device": "mps", "estimated_seconds": 2 * 3600 + 5 * 60, "tiles": []}
    assert (
        nst_estimate.estimate_text(0, json.dumps(long), "")
        == "About 2 h 05 min on the Apple GPU at 432\u00d7324 px"
    )
    failed = nst_estimate.estimate_text(2, "", "some warning\nerror: Unknown preset 'x': use one of fast.\n")
    assert failed == "No time estimate: Unknown preset 'x': use one of fast."
    assert nst_estimate.estimate_text(-1, "", "") == (
        "No time estimate: the engine failed (exit code -1): run install.py again."
    )
    assert nst_estimate.estimate_text(0, "{not json", "").startswith("No time estimate: the engine's plan")
    assert nst_estimate.ESTIMATING == "Estimating the time\u2026"


class FakeClock:
    """GLib's timeouts on a clock the test moves, and plan commands that finish when it says."""

    def __init__(self) -> None:
        self.now = 0
        self.timers: dict[int, tuple[int, object]] = {}
        self.next_id = 1
        self.started: list[dict] = []
        self.shown: list[str] = []

    def timer(self, ms: int, callback) -> int:
        self.timers[self.next_id] = (self.now + ms, callback)
        self.next_id += 1
        return self.next_id - 1

    def cancel_timer(self, timer_id: int) -> None:
        del self.timers[timer_id]  # a KeyError: the refresher removed a timer that is gone

    def advance(self, ms: int) -> None:
        self.now += ms
        for timer_id, (when, callback) in sorted(self.timers.items()):
            if when <= self.now:
                del self.timers[timer_id]
                assert callback() is False  # one-shot, as GLib.timeout_add needs

    def start(self, argv: list, done) -> object:
        run = {"argv": argv, "done": done, "cancelled": False}
        self.started.append(run)
        return type("Handle", (), {"cancel": lambda _self: run.update(cancelled=True)})()


def refresher(clock: FakeClock, command) -> nst_estimate.EstimateRefresh:
    return nst_estimate.EstimateRefresh(
        command, clock.start, clock.shown.append, clock.timer, clock.cancel_timer
    )


def test_estimate_refresh_is_debounced_and_the_newest_request_wins() -> None:
    clock = FakeClock()
    settings = {"size": 100}
    refresh = refresher(clock, lambda: ["plan", "--size", str(settings["size"])])
    refresh.changed()
    assert clock.shown == [nst_estimate.ESTIMATING] and clock.started == []
    for size in (200, 300):  # quicker than the delay: one command, for the last value
        clock.advance(nst_estimate.ESTIMATE_DELAY_MS - 100)
        settings["size"] = size
        refresh.changed(object(), object())  # what a notify:: handler gets
    assert clock.started == []
    clock.advance(nst_estimate.ESTIMATE_DELAY_MS)
    assert [run["argv"] for run in clock.started] == [["plan", "--size", "300"]]
    first = clock.started[0]
    # A change while it runs: the running one is cancelled, and its late result is not shown.
    settings["size"] = 400
    refresh.changed()
    clock.advance(nst_estimate.ESTIMATE_DELAY_MS)
    second = clock.started[1]
    assert first["cancelled"] and not second["cancelled"] and second["argv"][-1] == "400"
    first["done"](0, json.dumps(PLAN | {"estimated_seconds": 999.0}), "")
    assert clock.shown[-1] == nst_estimate.ESTIMATING
    second["done"](0, json.dumps(PLAN), "")
    assert clock.shown[-1].startswith("About 30 s on the CPU")
    assert clock.timers == {}


def test_estimate_refresh_stops_when_the_dialog_closes() -> None:
    clock = FakeClock()
    refresh = refresher(clock, lambda: ["plan"])
    refresh.changed()
    clock.advance(nst_estimate.ESTIMATE_DELAY_MS)
    running = clock.started[0]
    refresh.changed()  # a pending timer and a running command
    refresh.close()
    assert clock.timers == {} and running["cancelled"]
    shown = list(clock.shown)
    running["done"](0, json.dumps(PLAN), "")
    refresh.changed()
    clock.advance(10 * nst_estimate.ESTIMATE_DELAY_MS)
    assert clock.shown == shown and len(clock.started) == 1


def test_estimate_refresh_shows_why_there_is_none() -> None:
    clock = FakeClock()

    def command() -> list:
        raise nst_common.selection_misses("Portrait")

    refresh = refresher(clock, command)
    refresh.changed()
    clock.advance(nst_estimate.ESTIMATE_DELAY_MS)
    assert clock.started == []
    assert clock.shown[-1].startswith("No time estimate: The selection does not touch layer 'Portrait'")


def test_real_engine_plan_through_the_bridge(vgg19_weights: Path) -> None:
    """The real `nst_core plan`, started as the dialog starts it: its line for a 4000 x 3000 layer."""
    config = {"python": sys.executable, "weights": str(vgg19_weights), "engine": describe()}
    options = nst_bridge.dialog_options(
        config, {"preset": "fast", "size": 0, "iterations": 0, "device": "cpu"}
    )
    command = nst_estimate.plan_command(config, 4000, 3000, 1, options)
    env = nst_common.child_environment(nst_common.engine_environment(config))
    env["PYTHONPATH"] = str(REPO)  # this checkout's engine (the installed one needs no path)
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    text = nst_estimate.estimate_text(done.returncode, done.stdout, done.stderr)
    last = plan["scales"][-1]
    assert text.startswith("About ") and f" on the CPU at {last['width']}\u00d7{last['height']} px" in text
    assert text.endswith("(the layer is 4000\u00d73000 px; the result is scaled up to it)")
    bad = nst_estimate.plan_command(config, 4000, 3000, 1, dict(options, preset="no-such-preset"))
    done = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=120)
    text = nst_estimate.estimate_text(done.returncode, done.stdout, done.stderr)
    assert done.returncode == 2 and text.startswith("No time estimate: Unknown preset 'no-such-preset'")
