"""Host-side tests of plug-ins/neural_style/nst_bridge.py: config, presets, the engine child.

Most tests drive the bridge against a scripted stand-in for the engine child (tests/fake_engine.py,
written to a temporary folder and named as the config's "python"), because what is tested here is the
bridge's side of the protocol: events, exit codes, cancel, parent death, cleanup. One test
runs the real engine. The bridge under Python 2.7 as GIMP 2.10 runs it, Flatpak, Windows and AppImage
are in test_bridge_platforms.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "plug-ins" / "neural_style"
sys.path.insert(0, str(PLUGIN_DIR))

import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
from fake_engine import PIXELS, child_record  # noqa: E402
from interpreters import python27  # noqa: E402
from servers import pid_alive, wait_until  # noqa: E402

from nst_core.options import describe  # noqa: E402
from nst_core.paintings import DEFAULT_PAINTING, PAINTINGS  # noqa: E402


def test_run_returns_result_and_forwards_progress(fake_engine: dict, style_file: str, tmp_path: Path) -> None:
    calls: list[tuple[float, str]] = []
    with nst_bridge.EngineRun(fake_engine) as run:
        folder = run.folder
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        result = run.run([(style_file, 1.0)], {"seed": 3, "size": None}, lambda f, t: calls.append((f, t)))
    assert result == bytes(255 - b for b in PIXELS)
    assert calls[0] == (0.0, "Neural style: starting on cpu")
    assert calls[1:] == [
        (0.5, "Neural style: scale 1/2, iteration 2/2, 1:02 left"),
        (1.0, "Neural style: scale 2/2, iteration 2/2, 0:00 left"),
    ]
    assert not os.path.exists(folder)
    child = child_record(tmp_path)
    assert child["argv"][:3] == ["-m", "nst_core", "run-job"]
    assert child["pythonpath"] is None and child["stdin_is_pipe"]
    job = child["job"]
    assert job["version"] == nst_common.PROTOCOL_VERSION == 1
    layout = {"width": 4, "height": 6, "format": "u8", "channels": 4}
    assert job["content"] == layout | {"raw": os.path.join(child["cwd"], "content.raw")}
    assert job["styles"] == [{"path": style_file, "weight": 1.0}]
    assert job["options"] == {"seed": 3, "weights": fake_engine["weights"]}  # None dropped, weights added
    assert job["output"]["format"] == "u8"


def test_engine_error_event_becomes_engine_error(fake_engine, style_file, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "error")
    with nst_bridge.EngineRun(fake_engine) as run, pytest.raises(nst_bridge.EngineError) as info:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert info.value.code == 4
    assert info.value.message == "Weights file x.pth is truncated: download it again."


def test_crash_without_error_event_reports_exit_code_and_last_stderr_line(
    fake_engine, style_file, monkeypatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "crash")
    with nst_bridge.EngineRun(fake_engine) as run, pytest.raises(nst_bridge.EngineError) as info:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert info.value.code == 1
    assert "exit code 1" in info.value.message and "RuntimeError: boom" in info.value.message
    assert "\n" not in info.value.message


def test_short_result_is_reported(fake_engine, style_file, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "short")
    with nst_bridge.EngineRun(fake_engine) as run, pytest.raises(nst_bridge.EngineError, match="not 96"):
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)


def test_cancel_from_progress_kills_child_and_removes_folder(fake_engine, style_file, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "hang")
    run = nst_bridge.EngineRun(fake_engine)
    folder = run.folder
    run.set_content_raw(PIXELS, 4, 6, "u8", 4)
    with pytest.raises(nst_bridge.EngineError) as info:
        run.run([(style_file, 1.0)], {}, lambda fraction, text: fraction < 0.5)
    assert info.value.code == 130 and info.value.message == "Cancelled."
    assert not pid_alive(child_record(tmp_path)["pid"])
    run.close()
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "problem, message",
    [
        ({}, "not installed: run install.py"),
        ({"python": "/nonexistent/python"}, "/nonexistent/python is missing: run install.py again"),
    ],
)
def test_missing_engine_says_run_install(problem: dict, message: str, style_file: str) -> None:
    with nst_bridge.EngineRun(problem) as run, pytest.raises(nst_bridge.EngineNotInstalled, match=message):
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)


def test_missing_style_is_a_bad_image_error(fake_engine: dict, tmp_path: Path) -> None:
    with nst_bridge.EngineRun(fake_engine) as run, pytest.raises(nst_bridge.EngineError) as info:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(str(tmp_path / "nope.jpg"), 1.0)], {}, lambda f, t: True)
    assert info.value.code == 3 and "nope.jpg not found" in info.value.message
    assert not (tmp_path / "child.json").exists()


def test_buffer_size_must_match_layout(fake_engine: dict) -> None:
    with nst_bridge.EngineRun(fake_engine) as run:
        with pytest.raises(nst_bridge.EngineError, match="does not match 5x6 u8"):
            run.set_content_raw(PIXELS, 5, 6, "u8", 4)
        with pytest.raises(nst_bridge.EngineError, match="use u8 or float32"):
            run.set_content_raw(PIXELS, 4, 6, "u16", 4)


def test_stale_folders_of_dead_plugins_are_removed(fake_engine: dict, tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", PLUGIN_PROCESS_LOCK, str(PLUGIN_DIR)],
        env=dict(os.environ, TMPDIR=str(tmp_path / "tmp")),
        capture_output=True,
        text=True,
    )
    stale = Path(dead.stdout.strip())
    assert dead.returncode == -signal.SIGKILL and stale.is_dir()  # killed: no cleanup ran
    other = tmp_path / "tmp" / "unrelated-123"
    other.mkdir()
    with nst_bridge.EngineRun(fake_engine) as live:
        with nst_bridge.EngineRun(fake_engine):
            assert os.path.isdir(live.folder)  # locked by a live run: kept
    assert not stale.exists() and other.exists()


# A plug-in that dies by SIGKILL with its run open, as GIMP's Cancel kills it.
PLUGIN_PROCESS_LOCK = textwrap.dedent(
    """\
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    import nst_bridge
    run = nst_bridge.EngineRun({})
    print(run.folder, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


# A plug-in process that starts a hanging engine child and reports the child's pid.
PLUGIN_PROCESS = textwrap.dedent(
    """\
    import sys
    sys.path.insert(0, sys.argv[1])
    import nst_bridge
    run = nst_bridge.EngineRun({"python": sys.argv[2]})
    print(run.folder, flush=True)
    run.set_content_raw(bytes(16), 2, 2, "u8", 4)
    run.run([(sys.argv[3], 1.0)], {}, lambda f, t: print("progress", f, flush=True))
    """
)


@pytest.fixture
def hanging_plugin(fake_engine: dict, style_file: str, tmp_path: Path, monkeypatch) -> Iterator[tuple]:
    monkeypatch.setenv("FAKE_MODE", "hang")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    plugin = subprocess.Popen(
        [sys.executable, "-c", PLUGIN_PROCESS, str(PLUGIN_DIR), fake_engine["python"], style_file],
        stdout=subprocess.PIPE,
        text=True,
    )
    folder = plugin.stdout.readline().strip()
    assert plugin.stdout.readline().startswith("progress")  # the child is running
    child = child_record(tmp_path)["pid"]
    yield plugin, child, folder
    plugin.kill()
    plugin.wait()
    if pid_alive(child):
        os.kill(child, signal.SIGKILL)


def test_engine_dies_with_a_killed_plugin(hanging_plugin: tuple) -> None:
    plugin, child, folder = hanging_plugin
    assert pid_alive(child)
    plugin.kill()  # what GIMP's Cancel does
    plugin.wait()
    assert wait_until(lambda: not pid_alive(child)), "engine child outlived its killed parent"
    assert os.path.isdir(folder)  # SIGKILL leaves it; the next run sweeps it (test above)


def test_sigterm_to_plugin_kills_engine_and_removes_folder(hanging_plugin: tuple) -> None:
    plugin, child, folder = hanging_plugin
    plugin.send_signal(signal.SIGTERM)
    assert plugin.wait(timeout=30) == 128 + signal.SIGTERM
    assert wait_until(lambda: not pid_alive(child))
    assert not os.path.exists(folder)


def test_config_file_and_environment_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NST_PLUGIN_CONFIG", raising=False)
    monkeypatch.delenv("NST_ENGINE_PYTHON", raising=False)
    monkeypatch.delenv("NST_WEIGHTS", raising=False)
    assert nst_bridge.load_config(str(tmp_path)) == {}
    config = {"version": 1, "python": "/p/python", "weights": "/w.pth", "engine": describe()}
    (tmp_path / nst_common.CONFIG_NAME).write_text(json.dumps(config))
    assert nst_bridge.load_config(str(tmp_path)) == config
    monkeypatch.setenv("NST_ENGINE_PYTHON", "/other/python")
    monkeypatch.setenv("NST_WEIGHTS", "/other.pth")
    overridden = config | {"python": "/other/python", "weights": "/other.pth"}
    assert nst_bridge.load_config(str(tmp_path)) == overridden
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text("{broken")
    monkeypatch.setenv("NST_PLUGIN_CONFIG", str(elsewhere))
    with pytest.raises(nst_bridge.EngineNotInstalled, match="elsewhere.json is unreadable.*run install.py"):
        nst_bridge.load_config(str(tmp_path))


def test_user_presets_come_from_the_engine_description() -> None:
    engine = describe()
    expected = [(p["name"], p["label"]) for p in engine["presets"] if p["name"] in engine["user_presets"]]
    assert nst_bridge.user_presets({"engine": engine}) == expected
    assert [name for name, _ in expected] == list(engine["user_presets"])
    assert nst_bridge.user_presets({}) == [("balanced", "Balanced")]
    assert nst_bridge.option_spec({"engine": engine}, "strength") == engine["options"]["strength"]
    assert nst_bridge.option_spec({}, "strength") == {}


# -- what both plug-ins share ---------------------------------------------------------------------------


def test_dialog_choices_come_from_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"engine": describe()}
    presets, default = nst_bridge.choices(config, "preset")
    assert presets == nst_bridge.user_presets(config) and default == describe()["default_preset"]
    keep_colors, default = nst_bridge.choices(config, "keep_colors")
    assert [nick for nick, _ in keep_colors] == describe()["options"]["keep_colors"]["choices"]
    assert default == "off" and dict(keep_colors)["luminance"] == "Keep luminance colours"
    monkeypatch.setattr(nst_bridge.sys, "platform", "linux")
    assert [nick for nick, _ in nst_bridge.choices(config, "device")[0]] == ["auto", "cuda", "cpu"]
    monkeypatch.setattr(nst_bridge.sys, "platform", "darwin")
    devices, default = nst_bridge.choices(config, "device")
    assert devices == [("auto", "Automatic (GPU if there is one)"), ("mps", "GPU (Apple)"), ("cpu", "CPU")]
    assert default == "auto"
    # Before install.py described the engine: the dialog still opens, with what is known without it.
    assert nst_bridge.choices({}, "keep_colors") == ([("off", "Off")], "off")
    assert nst_bridge.choices({}, "preset") == ([("balanced", "Balanced")], "balanced")
    assert [nick for nick, _ in nst_bridge.choices({}, "device")[0]] == ["auto", "mps", "cpu"]


def test_the_bundled_paintings_come_from_the_engine_description() -> None:
    config = {"engine": describe()}
    assert nst_bridge.choices(config, "painting") == (
        [(p.name, p.title) for p in PAINTINGS.values()],
        nst_bridge.DEFAULT_PAINTING,
    )
    assert nst_bridge.DEFAULT_PAINTING == DEFAULT_PAINTING  # the plug-ins cannot import nst_core
    assert nst_bridge.painting_path(config, "shipwreck") == str(PAINTINGS["shipwreck"].path)
    with pytest.raises(nst_common.EngineError) as error:
        nst_bridge.painting_path(config, "mona-lisa")
    assert error.value.message == (
        "The installed engine has no painting 'mona-lisa': run install.py again, or choose a file."
    )
    # Before install.py described the engine: a placeholder, and a run says to install.
    assert nst_bridge.choices({}, "painting") == ([("starry-night", "Painting")], "starry-night")
    with pytest.raises(nst_common.EngineError, match="run install.py again"):
        nst_bridge.painting_path({}, "starry-night")


def test_numbers_and_what_zero_means() -> None:
    config = {"engine": describe()}
    limits = describe()["options"]
    assert nst_bridge.number_range(config, "strength") == (
        limits["strength"]["min"],
        limits["strength"]["max"],
        limits["strength"]["default"],
    )
    assert nst_bridge.number_range(config, "size") == (0, limits["size"]["max"], 0)  # 0: the preset's
    assert nst_bridge.number_range(config, "iterations")[::2] == (0, 0)
    assert nst_bridge.number_range({}, "seed") == (0, 2**31 - 1, 0)
    values = {"preset": "fast", "size": 0, "iterations": 0, "seed": 0, "strength": 0.0, "device": "cpu"}
    assert nst_bridge.dialog_options(config, values) == {
        "preset": "fast",
        "seed": 0,
        "strength": 0.0,
        "device": "cpu",
    }
    assert nst_bridge.dialog_options(config, dict(values, size=256))["size"] == 256
    # Installed for VGG16 (install.py --model vgg16): every job, preview and estimate asks for it.
    assert nst_bridge.dialog_options(dict(config, model="vgg16"), values)["model"] == "vgg16"


def test_style_mix_and_the_result_layer_name() -> None:
    with pytest.raises(nst_bridge.EngineError, match="No style image chosen") as caught:
        nst_common.style_mix(None, "/b.png", 0.5)
    assert caught.value.code == nst_common.EXIT_USAGE
    assert nst_common.style_mix("/a.png", "", 0.3) == [("/a.png", 1.0)]
    assert nst_common.style_mix("/a.png", "/b.png", 0.25) == [("/a.png", 0.75), ("/b.png", 0.25)]
    assert nst_common.style_mix("/a.png", "/b.png", 7) == [("/a.png", 0.0), ("/b.png", 1.0)]
    styles = nst_common.style_mix("/x/Starry night.jpg", "/y/ink.png", 0.5)
    assert nst_common.result_name("Portrait", styles) == "Portrait (Neural Style: Starry night + ink)"
    error = nst_common.selection_misses("Portrait")
    assert error.code == 2 and error.message.startswith("The selection does not touch layer 'Portrait'")


PY27_NAMES = """\
# -*- coding: utf-8 -*-
import sys
sys.path.insert(0, sys.argv[1])
import nst_common
name = nst_common.result_name(b"Caf\\xc3\\xa9", [(b"/tmp/\\xc3\\xa9t\\xc3\\xa9.png", 1.0)])
assert type(name) is str and name == b"Caf\\xc3\\xa9 (Neural Style: \\xc3\\xa9t\\xc3\\xa9)", repr(name)
assert u"Caf\\xe9" in nst_common.selection_misses(b"Caf\\xc3\\xa9").message
print("ok")
"""


def test_layer_names_of_gimp_210_stay_utf8_byte_strings(tmp_path: Path) -> None:
    """GIMP 2.10 hands names over as UTF-8 byte strings and takes them back as such."""
    done = subprocess.run([python27(), "-c", PY27_NAMES, str(PLUGIN_DIR)], capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "ok\n"), done.stderr


def test_the_engine_gets_the_installed_data_folder_and_the_start_event_is_kept(
    fake_engine: dict, style_file: str, tmp_path: Path
) -> None:
    config = dict(fake_engine, data_dir=str(tmp_path / "data"))
    with nst_bridge.EngineRun(config) as run:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
        assert run.started["event"] == "start" and run.started["device"] == "cpu"
    assert child_record(tmp_path)["data_dir"] == str(tmp_path / "data")
    env = nst_common.child_environment({"EXTRA": "1"})
    assert env["EXTRA"] == "1" and "PYTHONPATH" not in env  # the fixture set it: GIMP's, not the engine's


def test_real_engine_through_the_bridge(vgg19_weights: Path, style_png: Path) -> None:
    config = {"python": sys.executable, "weights": str(vgg19_weights)}
    pixels = bytearray()
    for y in range(32):
        for x in range(48):
            pixels += bytes((x * 5, y * 7, 128, 255 if x < 40 else 100))
    fractions: list[float] = []
    with nst_bridge.EngineRun(config) as run:
        run.set_content_raw(bytes(pixels), 48, 32, "u8", 4)
        result = run.run(
            [(str(style_png), 1.0)],
            {"iterations": 2, "size": 32, "device": "cpu", "seed": 0},
            lambda f, t: fractions.append(f),
        )
    assert len(result) == len(pixels) and result != bytes(pixels)
    assert result[3::4] == bytes(pixels)[3::4]  # alpha copied back exactly
    assert fractions and fractions[-1] == pytest.approx(1.0)
