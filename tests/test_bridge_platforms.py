"""The bridge (plug-ins/neural_style/nst_bridge.py) on each platform's terms: inside a Flatpak sandbox
(the engine on the host through flatpak-spawn), Python 2.7 as GIMP 2.10 runs the bridge, Windows'
Python 2.7 and file semantics, an AppImage GIMP's libraries. The engine child is the scripted stand-in
of tests/fake_engine.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
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
    os.execvpe(args[0], args, env)  # as on the host: a bare name is looked up on PATH
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


# -- the warm engine service from inside the sandbox ------------------------------------------------------


@pytest.fixture
def sandboxed_service(flatpak: dict, vgg19_weights: Path, tmp_path: Path):
    """The sandboxed plug-in's config asking for the warm engine (the real one); its service, which lives
    in the sandbox's cache folder, is stopped after the test."""
    import nst_service

    config = {
        **flatpak,
        "python": sys.executable,
        "weights": str(vgg19_weights),
        "data_dir": str(tmp_path / "data"),
        "service": True,
    }
    yield config
    nst_service.stop_local_service(str(tmp_path / "cache" / "gimp-neural-style"))


def run_engine(config: dict, style: Path) -> tuple[bytes, nst_bridge.EngineRun]:
    with nst_bridge.EngineRun(config) as run:
        run.set_content_raw(SERVICE_PIXELS, 12, 8, "u8", 4)
        return run.run([(str(style), 1.0)], {"size": 32, "iterations": 2, "seed": 2}, lambda f, t: True), run


SERVICE_PIXELS = bytes(v for y in range(8) for x in range(12) for v in (x * 20, y * 30, 128, 255))


def test_flatpak_starts_the_warm_engine_on_the_host_and_reaches_it_on_loopback(
    sandboxed_service, style_png, tmp_path
) -> None:
    log = tmp_path / "flatpak-spawn.json"
    served, engine = run_engine(sandboxed_service, style_png)
    arguments = json.loads(log.read_text())
    start = arguments.index(sys.executable)
    assert arguments[0] == "--host" and "--watch-bus" not in arguments  # it outlives this plug-in run
    assert arguments[start : start + 4] == [sys.executable, "-m", "nst_core", "serve"]
    folder = tmp_path / "cache" / "gimp-neural-style" / "service"  # the token where host and sandbox see it
    assert str(folder / "token") in arguments
    assert engine.server is not None and engine.server.startswith("http://127.0.0.1:")
    log.unlink()
    again, second = run_engine(sandboxed_service, style_png)
    assert second.server == engine.server and not log.exists()  # warm: nothing spawned
    child, third = run_engine({**sandboxed_service, "service": False}, style_png)
    assert third.server is None and served == again == child


def test_flatpak_without_loopback_to_the_host_runs_the_child_and_stops_trying(
    sandboxed_service, style_png, tmp_path, monkeypatch
) -> None:
    import nst_service

    def no_loopback(self, timeout=0.0):  # a sandbox whose network is not the host's
        raise nst_service.Unavailable("connection refused")

    monkeypatch.setattr(nst_service.Server, "health", no_loopback)
    monkeypatch.setattr(nst_service, "UNREACHABLE_SECONDS", 0.5)
    folder = tmp_path / "cache" / "gimp-neural-style" / "service"
    result, engine = run_engine(sandboxed_service, style_png)
    assert engine.server is None and len(result) == 12 * 8 * 4  # the child process painted it
    assert (folder / "unreachable").exists()
    assert wait_until(lambda: not (folder / "service.json").exists())  # the host's service was stopped
    (tmp_path / "flatpak-spawn.json").unlink()
    run_engine(sandboxed_service, style_png)
    arguments = json.loads((tmp_path / "flatpak-spawn.json").read_text())
    assert "serve" not in arguments and "run-job" in arguments  # straight to the child, no new service
    assert not (folder / "service.json").exists()
