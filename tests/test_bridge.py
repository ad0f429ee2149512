"""Host-side tests of plug-ins/neural_style/nst_bridge.py: config, presets, the engine child.

Most tests drive the bridge against a scripted stand-in for the engine child (written to
a temporary folder and named as the config's "python"), because what is tested here is the
bridge's side of the protocol: events, exit codes, cancel, parent death, cleanup. One test
runs the real engine, and one runs the bridge under Python 2.7 as GIMP 2.10 does.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "plug-ins" / "neural_style"
sys.path.insert(0, str(PLUGIN_DIR))

import fake_engine as fake_engines  # noqa: E402
import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
from fake_engine import child_record  # noqa: E402
from interpreters import python27  # noqa: E402
from servers import pid_alive, wait_until  # noqa: E402

from nst_core.options import describe  # noqa: E402

# A stand-in engine: `FAKE -m nst_core run-job JOB.json`, behaviour chosen by $FAKE_MODE.
FAKE_ENGINE = textwrap.dedent(
    """\
    import json, os, stat, sys, time
    job_path = sys.argv[4]
    job = json.load(open(job_path))
    mode = os.environ.get("FAKE_MODE", "invert")
    def emit(**event):
        print(json.dumps(event), flush=True)
    with open(os.path.join(os.environ["FAKE_LOG"], "child.json"), "w") as fh:
        json.dump({"pid": os.getpid(), "argv": sys.argv[1:], "job": job, "cwd": os.getcwd(),
                   "pythonpath": os.environ.get("PYTHONPATH"),
                   "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
                   "data_dir": os.environ.get("NST_DATA_DIR"),
                   "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
                   "styles_exist": [os.path.isfile(s["path"]) for s in job["styles"]],
                   "stdin_is_pipe": stat.S_ISFIFO(os.fstat(0).st_mode)}, fh)
    emit(event="start", version=1, device="cpu", scales=[32, 48], iterations=4, memory_estimate=1)
    print("a line that is not an event", flush=True)
    if mode == "error":
        emit(event="error", message="Weights file x.pth is truncated: download it again.", code=4)
        sys.exit(4)
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom\\n")
        sys.exit(1)
    for i in (1, 2):
        emit(event="progress", scale=i, scales=2, iteration=2, iterations=2, fraction=i / 2,
             elapsed=1.0, eta=62.0 * (2 - i), unknown_field=1,
             loss={"total": 1.0, "content": 0.5, "style": 0.5, "tv": 0.0})
        if mode == "hang":
            time.sleep(600)
    content = job["content"]
    data = open(content["raw"], "rb").read()
    out = bytes(255 - b for b in data) if mode == "invert" else data[:-1]
    open(job["output"]["raw"], "wb").write(out)
    emit(event="done", output=job["output"]["raw"], seconds=0.1)
    """
)


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    return fake_engines.install(tmp_path, monkeypatch, FAKE_ENGINE)


# A stand-in for Flatpak's flatpak-spawn: records its arguments, then runs the command after its
# options (in --directory, with the --env variables), or fails as flatpak-spawn does ($FAKE_FLATPAK).
FAKE_FLATPAK_SPAWN = textwrap.dedent(
    """\
    import json, os, sys
    args = sys.argv[1:]
    with open(os.path.join(os.environ["FAKE_LOG"], "flatpak-spawn.json"), "w") as fh:
        json.dump(args, fh)
    failure = {
        "denied": "The name org.freedesktop.Flatpak was not provided by any .service files",
        "no-python": "Failed to start command: Failed to execute child process (No such file or directory)",
    }.get(os.environ.get("FAKE_FLATPAK"))
    if failure:
        sys.stderr.write("Portal call failed: %s\\n" % failure)
        sys.exit(1)
    env = dict(os.environ)
    while args[0].startswith("--"):
        option = args.pop(0)
        if option.startswith("--env="):
            name, value = option[len("--env="):].split("=", 1)
            env[name] = value
        elif option.startswith("--directory="):
            os.chdir(option[len("--directory="):])
    os.execve(args[0], args, env)
    """
)


@pytest.fixture
def flatpak(fake_engine: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Inside a Flatpak sandbox (its /.flatpak-info), with a fake flatpak-spawn first on PATH and the
    sandbox's cache folder. The config is the host GIMP's too (Flathub's GIMP shares ~/.config/GIMP):
    it says nothing of Flatpak."""
    info = tmp_path / "flatpak-info"
    info.write_text("[Application]\nname=org.gimp.GIMP\n")
    monkeypatch.setattr(nst_common, "FLATPAK_INFO", str(info))
    tools = tmp_path / "bin"
    tools.mkdir()
    spawn = tools / "flatpak-spawn"
    spawn.write_text(f"#!{sys.executable}\n" + FAKE_FLATPAK_SPAWN)
    spawn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # must come from flatpak-spawn's --env
    return fake_engine | {"flatpak": False}  # what older installers wrote into a shared profile


@pytest.fixture
def style_file(tmp_path: Path) -> str:
    path = tmp_path / "style.png"
    path.write_bytes(b"not read by the stand-in engine")
    return str(path)


PIXELS = bytes(range(48)) * 2  # 8 RGBA u8 pixels, 4x2


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


@pytest.mark.parametrize("flatpak_config", [False, True], ids=["native", "flatpak"])
def test_bridge_runs_on_python27(
    fake_engine: dict, style_file: str, tmp_path: Path, request, flatpak_config: bool
) -> None:
    if flatpak_config:
        request.getfixturevalue("flatpak")
    driver = textwrap.dedent(
        """\
        import sys
        sys.path.insert(0, sys.argv[1])
        import nst_bridge
        import nst_common
        nst_common.FLATPAK_INFO = sys.argv[4]
        run = nst_bridge.EngineRun({"python": sys.argv[2]})
        run.set_content_raw(b"\\x00\\x10\\x20\\xff" * 6, 3, 2, "u8", 4)
        texts = []
        result = run.run([(sys.argv[3], 1.0)], {"seed": 1}, lambda f, t: texts.append(t))
        run.close()
        assert result == b"\\xff\\xef\\xdf\\x00" * 6, repr(result)
        print(texts[-1])
        print(nst_bridge.user_presets({}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TMPDIR",)}
    done = subprocess.run(
        [
            python27(),
            "-c",
            driver,
            str(PLUGIN_DIR),
            fake_engine["python"],
            style_file,
            nst_common.FLATPAK_INFO if flatpak_config else str(tmp_path / "no-flatpak-info"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Neural style: scale 2/2, iteration 2/2, 0:00 left"
    assert (tmp_path / "flatpak-spawn.json").exists() is flatpak_config


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


def test_flatpak_runs_the_engine_on_the_host_with_folders_it_sees(flatpak, style_file, tmp_path) -> None:
    with nst_bridge.EngineRun(flatpak) as run:
        folder = run.folder
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        result = run.run([(style_file, 1.0)], {"seed": 3}, lambda f, t: True)
    assert result == bytes(255 - b for b in PIXELS)
    # Not the sandbox's private /tmp: its cache folder, the same path on the host.
    assert os.path.dirname(folder) == str(tmp_path / "cache" / "gimp-neural-style")
    arguments = json.loads((tmp_path / "flatpak-spawn.json").read_text())
    assert arguments == [
        "--host",
        "--watch-bus",
        f"--directory={folder}",
        "--env=PYTHONIOENCODING=utf-8",
        "--env=PYTHONUNBUFFERED=1",
        flatpak["python"],
        "-m",
        "nst_core",
        "run-job",
        os.path.join(folder, "job.json"),
    ]
    child = child_record(tmp_path)
    assert child["cwd"] == folder and child["stdin_is_pipe"] and child["unbuffered"] == "1"
    assert child["pythonpath"] is None
    # The style is copied into the run folder: a sandbox path may not exist on the host.
    assert os.path.dirname(child["job"]["styles"][0]["path"]) == folder and child["styles_exist"] == [True]
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


@pytest.mark.parametrize(
    "failure, message",
    [
        (
            "denied",
            "outside the Flatpak sandbox (Portal call failed: The name org.freedesktop.Flatpak was "
            "not provided by any .service files): allow it once with `flatpak override --user "
            "--talk-name=org.freedesktop.Flatpak org.gimp.GIMP`, then restart GIMP.",
        ),
        ("no-python", "cannot start on the host (Portal call failed: Failed to start command"),
    ],
)
def test_flatpak_spawn_failure_is_one_line_with_the_fix(flatpak, style_file, monkeypatch, failure, message):
    monkeypatch.setenv("FAKE_FLATPAK", failure)
    with nst_bridge.EngineRun(flatpak) as run, pytest.raises(nst_bridge.EngineError) as info:
        folder = run.folder
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert message in info.value.message and "\n" not in info.value.message
    assert not os.path.exists(folder)


def test_the_sandbox_is_found_at_run_time_not_in_the_config(fake_engine, style_file, tmp_path, monkeypatch):
    """A profile shared by the host's and the Flatpak's GIMP: the same config, whatever it says, runs the
    engine directly outside the sandbox."""
    monkeypatch.setattr(nst_common, "FLATPAK_INFO", str(tmp_path / "absent"))
    for said in (True, False):
        with nst_bridge.EngineRun(fake_engine | {"flatpak": said}) as run:
            run.set_content_raw(PIXELS, 4, 6, "u8", 4)
            assert run.run([(style_file, 1.0)], {}, lambda f, t: True) == bytes(255 - b for b in PIXELS)
    assert not (tmp_path / "flatpak-spawn.json").exists()


def test_a_sandbox_without_flatpak_spawn_is_one_line(flatpak, style_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with nst_bridge.EngineRun(flatpak) as run, pytest.raises(nst_bridge.EngineNotInstalled) as info:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert "cannot run flatpak-spawn inside the Flatpak sandbox (" in info.value.message
    assert "\n" not in info.value.message


def test_flatpak_cancel_stops_the_engine_and_sweeps_stale_folders(flatpak, style_file, tmp_path, monkeypatch):
    runs = tmp_path / "cache" / "gimp-neural-style"
    stale = runs / "nst-plugin-1-dead"
    stale.mkdir(parents=True)
    (stale / ".lock").write_bytes(b"")  # nobody holds it: its plug-in died
    monkeypatch.setenv("FAKE_MODE", "hang")
    with nst_bridge.EngineRun(flatpak) as run, pytest.raises(nst_bridge.EngineError) as info:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda fraction, text: fraction < 0.5)
    assert info.value.code == 130
    assert not pid_alive(child_record(tmp_path)["pid"])
    assert os.listdir(runs) == []


# -- platforms: Windows' Python 2.7, Windows' file semantics, AppImage --------------------------------------

# GIMP 2.10's side under the real Python 2.7: every argument and environment value that reaches Popen is a
# native str (Windows' Python 2.7 refuses unicode there), with non-ASCII names in every path.
PYTHON27_NATIVE_TYPES = textwrap.dedent(
    """\
    # -*- coding: utf-8 -*-
    import json, subprocess, sys
    sys.path.insert(0, sys.argv[1])
    import nst_bridge
    seen = []
    real_popen = subprocess.Popen
    def recording_popen(args, **kwargs):
        env = kwargs.get("env") or {}
        seen.extend(type(v).__name__ for v in list(args) + list(env) + list(env.values()) + [kwargs["cwd"]])
        return real_popen(args, **kwargs)
    subprocess.Popen = recording_popen
    config = json.loads(open(sys.argv[2], "rb").read().decode("utf-8"))  # unicode, as the config is read
    style = sys.argv[3]  # bytes in UTF-8, as gimpfu gives a file name
    run = nst_bridge.EngineRun(config)
    run.set_content_raw(b"\\x00\\x10\\x20\\xff" * 6, 3, 2, "u8", 4)
    result = run.run([(style, 1.0)], {}, lambda f, t: True)
    run.close()
    assert result == b"\\xff\\xef\\xdf\\x00" * 6, repr(result)
    print(json.dumps(sorted(set(seen))))
    """
)


def test_python27_passes_native_strings_and_non_ascii_paths(fake_engine, tmp_path: Path) -> None:
    home = tmp_path / "Jos\u00e9 \u65e5\u672c"
    (home / "venv").mkdir(parents=True)
    engine = home / "venv" / "python"
    engine.write_bytes(Path(fake_engine["python"]).read_bytes())
    engine.chmod(0o755)
    style = home / "st\u00eff.png"
    style.write_bytes(b"style")
    config = tmp_path / "nst_config.json"
    config.write_text(json.dumps({"python": str(engine), "data_dir": str(home / "data")}), encoding="utf-8")
    temp = home / "Temp"
    temp.mkdir()
    done = subprocess.run(
        [python27(), "-c", PYTHON27_NATIVE_TYPES, str(PLUGIN_DIR), str(config), str(style)],
        capture_output=True,
        text=True,
        env=dict(os.environ, TMPDIR=str(temp), LANG="C.UTF-8", LC_ALL="C.UTF-8"),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == ["str"]  # Python 2's native (byte) str only
    child = child_record(tmp_path)
    assert child["data_dir"] == str(home / "data") and child["styles_exist"] == [True]
    assert os.listdir(temp) == []


PYTHON27_WINDOWS_ENCODING = textwrap.dedent(
    """\
    # -*- coding: utf-8 -*-
    import sys
    sys.path.insert(0, sys.argv[1])
    import nst_common
    shorts = {u"C:\\\\Users\\\\\u65e5\u672c\\\\python.exe": u"C:\\\\Users\\\\5E5D~1\\\\python.exe"}
    # Windows' ANSI code page 1252 (Western Europe) stands in for "mbcs", which only Windows has.
    latin = nst_common.native_argument(u"C:\\\\Users\\\\Jos\u00e9\\\\python.exe", "cp1252", shorts.get)
    assert latin == b"C:\\\\Users\\\\Jos\\xe9\\\\python.exe", repr(latin)
    short = nst_common.native_argument(u"C:\\\\Users\\\\\u65e5\u672c\\\\python.exe", "cp1252", shorts.get)
    assert short == b"C:\\\\Users\\\\5E5D~1\\\\python.exe", repr(short)
    try:
        nst_common.native_environment({u"NST_DATA_DIR": u"D:\\\\\u65e5\u672c"}, "cp1252", shorts.get)
    except nst_common.EngineError as error:
        print(error.message.encode("utf-8"))
    """
)


def test_python27_on_windows_spells_paths_in_the_code_page_or_says_why(tmp_path: Path) -> None:
    done = subprocess.run(
        [python27(), "-c", PYTHON27_WINDOWS_ENCODING, str(PLUGIN_DIR)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip()  # a name with neither a spelling in the code page nor a short name
    assert last.startswith("GIMP 2.10's Python 2 cannot pass D:\\\u65e5\u672c to the engine")
    assert "code page (cp1252)" in last and "--prefix" in last


def test_any_failure_to_start_the_engine_is_one_line(fake_engine, style_file, monkeypatch) -> None:
    def refuses(*args: object, **kwargs: object) -> None:
        raise TypeError("environment can only contain strings")  # Windows' Python 2.7 on unicode

    monkeypatch.setattr(nst_bridge.subprocess, "Popen", refuses)
    with nst_bridge.EngineRun(fake_engine) as run, pytest.raises(nst_bridge.EngineNotInstalled) as info:
        folder = run.folder
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert info.value.message == (
        f"Neural style engine {fake_engine['python']} cannot start (TypeError: environment can only "
        "contain strings): run install.py again."
    )
    assert not os.path.exists(folder)


def open_files() -> set[str]:
    """The files this process holds open, from the kernel's own table."""
    fds = Path("/proc/self/fd")
    return {os.path.realpath(fds / fd) for fd in os.listdir(fds)}


def test_windows_sweeps_folders_of_killed_plugins(fake_engine, tmp_path, monkeypatch) -> None:
    """Windows has no flock: a live plug-in holds its lock file open, and Windows refuses to delete an open
    file (simulated here from the kernel's list of open files), so a removable lock marks a dead run."""
    real_remove = os.remove

    def windows_remove(path: str) -> None:
        if os.path.realpath(path) in open_files():
            raise PermissionError(13, "The process cannot access the file because it is being used", path)
        real_remove(path)

    real_rmtree = shutil.rmtree

    def windows_rmtree(path: str, ignore_errors: bool = False) -> None:
        inside = {
            os.path.realpath(os.path.join(top, name)) for top, _, names in os.walk(path) for name in names
        }
        if inside & open_files():
            assert ignore_errors
            return  # Windows deletes nothing of a folder that holds an open file
        real_rmtree(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(nst_common, "fcntl", None)
    monkeypatch.setattr(nst_common.os, "remove", windows_remove)
    monkeypatch.setattr(nst_common.shutil, "rmtree", windows_rmtree)
    runs = tmp_path / "tmp"
    killed = runs / "nst-plugin-7-killed"  # TerminateProcess: no cleanup ran, nobody has the lock open
    killed.mkdir()
    (killed / ".lock").write_bytes(b"")
    (killed / "content.raw").write_bytes(b"pixels")
    being_made = runs / "nst-plugin-8-new"  # no lock yet: young, so kept
    being_made.mkdir()
    old_unlocked = runs / "nst-plugin-9-old"
    old_unlocked.mkdir()
    os.utime(old_unlocked, (time.time() - 3600, time.time() - 3600))
    with nst_bridge.EngineRun(fake_engine) as live:
        with nst_bridge.EngineRun(fake_engine):
            assert os.path.isdir(live.folder)  # its lock is open: kept
        assert not killed.exists() and being_made.exists() and not old_unlocked.exists()
    assert sorted(os.listdir(runs)) == ["nst-plugin-8-new"]


def test_an_appimage_gimp_keeps_its_libraries_to_itself(fake_engine, style_file, tmp_path, monkeypatch):
    appdir = "/tmp/.mount_GIMP-3.0abc"
    ours = f"{appdir}/usr/lib:{appdir}/usr/lib/x86_64-linux-gnu"
    monkeypatch.setenv("APPIMAGE", "/home/me/GIMP-3.0.4-x86_64.AppImage")
    monkeypatch.setenv("APPDIR", appdir)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{ours}:/opt/cuda/lib64")
    monkeypatch.setenv("LD_PRELOAD", f"{appdir}/usr/lib/libgimp-hook.so")
    with nst_bridge.EngineRun(fake_engine) as run:
        run.set_content_raw(PIXELS, 4, 6, "u8", 4)
        run.run([(style_file, 1.0)], {}, lambda f, t: True)
    assert child_record(tmp_path)["ld_library_path"] == "/opt/cuda/lib64"  # the user's own entry stays
    env = nst_common.child_environment({}, {"APPDIR": appdir, "APPIMAGE": "x", "LD_LIBRARY_PATH": ours})
    assert "LD_LIBRARY_PATH" not in env
    plain = {"LD_LIBRARY_PATH": "/tmp/.mount_x/lib", "LD_PRELOAD": "/lib/x.so"}  # not an AppImage: untouched
    assert nst_common.child_environment({}, plain) == plain
