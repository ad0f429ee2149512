"""install.py end to end, in a throw-away home folder laid out as on Linux, Windows and macOS.

The engine Python is this test environment's own (it has torch and nst_core from the checkout),
the weights are the random `vgg19_weights` fixture, so nothing is downloaded and no torch is
installed; the venv + pip path is exercised through --dry-run, a failing pip and unit tests.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import plistlib
import re
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from interpreters import python27, python39
from servers import serving, start_server, stop_server

from nst_install import engine, errors, plan, steps, torch_build
from nst_install.checkout import nst_bridge, nst_service, project

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
BRIDGE = REPO / "plug-ins/neural_style/nst_bridge.py"
# What the GIMP 2.10 plug-in takes from the GIMP 3 one's folder: the bridge and the modules it imports.
BRIDGE_MODULES = ("nst_bridge.py", "nst_service.py", "nst_common.py")
MANIFEST = "install-manifest.json"
CLEARED_ENV = (
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "APPDATA",
    "LOCALAPPDATA",
    "USERPROFILE",
    "TORCH_HOME",
    "NST_DATA_DIR",
    "NST_WEIGHTS",
    "NST_WEIGHTS_URL",
    "NST_INSTALL_PLATFORM",
    "NST_INSTALL_FREE_BYTES",
    "NST_INSTALL_PYTHON_VERSION",
    "NST_INSTALL_MACHINE",
    "PYTHONPATH",
)


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def engine_python_has_this_checkout() -> None:
    """The installs below use this very Python as the engine: they must find nothing to pip-install."""
    probe = engine.probe_python(Path(sys.executable))
    assert probe and engine.nst_core_current(probe), "first run: pip install -e . (from this checkout)"


def run_install(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    environ.update(HOME=str(home), **env)
    return subprocess.run(
        [sys.executable, str(INSTALL), *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=home,
        timeout=600,
    )


def install_args(weights: Path, *extra: str) -> list[str]:
    return ["--engine-python", sys.executable, "--weights", str(weights), *extra]


def listing(root: Path) -> dict[str, tuple]:
    """Every entry under `root` with its kind, and a file's size, mode and mtime."""
    entries = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode):
            entries[path.relative_to(root).as_posix()] = ("dir",)
        else:
            entries[path.relative_to(root).as_posix()] = (
                "file",
                info.st_size,
                info.st_mode,
                info.st_mtime_ns,
            )
    return entries


def make_profiles(home: Path, *relative: str) -> list[Path]:
    folders = [home / r for r in relative]
    for folder in folders:
        folder.mkdir(parents=True)
    return folders


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_plugin(profile: Path, folder: str, main: str) -> dict:
    target = profile / "plug-ins" / folder
    assert os.access(target / main, os.X_OK), f"{target / main} is not executable"
    gimp3 = folder == "neural_style"  # the whole folder; GIMP 2.10's takes the bridge and its modules
    for name in [path.name for path in BRIDGE.parent.glob("*.py")] if gimp3 else BRIDGE_MODULES:
        assert (target / name).read_bytes() == (BRIDGE.parent / name).read_bytes(), name
    config = json.loads((target / "nst_config.json").read_text())
    assert config["version"] == 1
    assert Path(config["python"]).is_absolute() and Path(config["python"]).is_file()
    assert Path(config["weights"]).is_absolute() and Path(config["weights"]).is_file()
    assert config["engine"]["presets"], "the engine description is missing"
    assert "flatpak" not in config  # the plug-in finds out at run time: a profile may be shared
    return config


def explain(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# -- whole installs ------------------------------------------------------------------------------


def test_linux_install_rerun_upgrade_uninstall(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    flatpak_profile = ".var/app/org.gimp.GIMP/config/GIMP/3.0"
    gimp3, gimp32, gimp2, flatpak = make_profiles(
        home, ".config/GIMP/3.0", ".config/GIMP/3.2", ".config/GIMP/2.10", flatpak_profile
    )
    make_profiles(home, ".config/GIMP/2.8")  # too old: left alone
    before = listing(home)

    first = run_install(home, *install_args(vgg19_weights))
    assert first.returncode == 0, explain(first)
    for profile in (gimp3, gimp32):
        check_plugin(profile, "neural_style", "neural_style.py")
    config = check_plugin(flatpak, "neural_style", "neural_style.py")
    check_plugin(gimp2, "neural_style_gimp2", "neural_style_gimp2.py")
    assert config["python"] == sys.executable and config["weights"] == str(vgg19_weights)
    assert config["data_dir"] == str(home / ".local/share/gimp-neural-style")  # the engine's too
    assert not (home / ".config/GIMP/2.8/plug-ins").exists()
    assert "Self-test" in first.stdout and "device:" in first.stdout
    assert re.search(r"speed: \d+ GFLOP/s on .*, recorded", first.stdout), first.stdout  # calibrate --json
    assert "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP" in first.stdout
    assert "Filters > Neural Style" in first.stdout and "--uninstall" in first.stdout

    installed = listing(home)
    second = run_install(home, *install_args(vgg19_weights), "--skip-self-test")
    assert second.returncode == 0, explain(second)
    assert listing(home) == installed, "a second run rewrote files"
    assert "Nothing changed" in second.stdout

    stale = gimp3 / "plug-ins/neural_style/neural_style.py"
    stale.write_text("# an older version\n")
    third = run_install(home, *install_args(vgg19_weights), "--skip-self-test")
    assert third.returncode == 0, explain(third)
    assert stale.read_bytes() == (REPO / "plug-ins/neural_style/neural_style.py").read_bytes()
    assert os.access(stale, os.X_OK)
    after = listing(home)
    changed = [name for name in after if after[name] != installed.get(name)]
    assert changed == [stale.relative_to(home).as_posix()], "an upgrade rewrote more than the changed file"

    removed = run_install(home, "--uninstall")
    assert removed.returncode == 0, explain(removed)
    assert listing(home) == before


def test_servers_go_into_the_config_and_the_self_test_runs_a_job_on_each(tmp_path, vgg19_weights) -> None:
    home = tmp_path / "home"
    (gimp3,) = make_profiles(home, ".config/GIMP/3.0")
    with serving(tmp_path / "remote", vgg19_weights) as remote:
        server = ["--server", remote.url, "--token-file", str(remote.token_file)]
        result = run_install(home, *install_args(vgg19_weights), *server)
    assert result.returncode == 0, explain(result)
    assert f"Server {remote.url}" in result.stdout and "device: cpu; the test picture took" in result.stdout
    config = check_plugin(gimp3, "neural_style", "neural_style.py")
    assert config["servers"] == [{"url": remote.url, "token_file": str(remote.token_file)}]
    assert config["service"] is True

    gone = run_install(home, *install_args(vgg19_weights), *server)  # the same server, stopped now
    assert gone.returncode == errors.EXIT_SELF_TEST, explain(gone)
    assert "does not answer" in gone.stderr and gone.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--server", "http://127.0.0.1:1"], "--server needs --token-file"),
        (["--token-file", "t"], "--token-file goes with --server"),
        (["--server", "http://127.0.0.1:1", "--token-file", "missing"], "Cannot read the server token file"),
        (["--server", "127.0.0.1:8642", "--token-file", "token"], "is not a URL"),
    ],
)
def test_bad_server_arguments_are_one_line_before_any_change(tmp_path, vgg19_weights, arguments, message):
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    (home / "token").write_text("a-token-long-enough-for-this\n")
    before = listing(home)
    result = run_install(home, *install_args(vgg19_weights), *arguments)
    assert result.returncode == errors.EXIT_USAGE, explain(result)
    assert message in result.stderr and result.stderr.count("\n") == 1
    assert listing(home) == before


def test_an_upgrade_and_an_uninstall_stop_the_running_engine_service(tmp_path, vgg19_weights) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    before = listing(home)
    data = home / ".local/share/gimp-neural-style"
    first = run_install(home, *install_args(vgg19_weights, "--skip-self-test"))
    assert first.returncode == 0, explain(first)
    service = start_server(data / nst_service.SERVICE_FOLDER, vgg19_weights)  # as the plug-ins start it
    try:
        again = run_install(home, *install_args(vgg19_weights, "--skip-self-test"))
        assert again.returncode == 0, explain(again)
        assert f"stopped the running engine service (pid {service.process.pid})" in again.stdout
        assert service.process.wait(30) == 0
        service = start_server(data / nst_service.SERVICE_FOLDER, vgg19_weights)
        removed = run_install(home, "--uninstall")
        assert removed.returncode == 0, explain(removed)
        assert "stopped the running engine service" in removed.stdout and service.process.wait(30) == 0
    finally:
        stop_server(service)
    assert listing(home) == before  # the service's token, state and log went too


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_install_and_uninstall_on_other_platforms(tmp_path: Path, vgg19_weights: Path, system: str) -> None:
    home = tmp_path / "home"
    if system == "windows":
        roaming, local = home / "AppData/Roaming", home / "AppData/Local"
        env = {"APPDATA": str(roaming), "LOCALAPPDATA": str(local), "USERPROFILE": str(home)}
        gimp3, gimp2 = make_profiles(home, "AppData/Roaming/GIMP/3.0", "AppData/Roaming/GIMP/2.10")
        data = local / "gimp-neural-style"
    else:
        env = {}
        gimp3, gimp2 = make_profiles(
            home, "Library/Application Support/GIMP/3.0", "Library/Application Support/GIMP/2.10"
        )
        data = home / "Library/Application Support/gimp-neural-style"
    before = listing(home)

    # The self-test runs the same engine on every platform: the Linux test covers it.
    result = run_install(
        home, *install_args(vgg19_weights, "--skip-self-test"), NST_INSTALL_PLATFORM=system, **env
    )
    assert result.returncode == 0, explain(result)
    check_plugin(gimp3, "neural_style", "neural_style.py")
    check_plugin(gimp2, "neural_style_gimp2", "neural_style_gimp2.py")
    assert (data / MANIFEST).is_file()

    removed = run_install(home, "--uninstall", NST_INSTALL_PLATFORM=system, **env)
    assert removed.returncode == 0, explain(removed)
    assert listing(home) == before


def test_explicit_gimp_dir_and_version(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    (profile,) = make_profiles(home, "portable/gimp-profile")
    result = run_install(
        home,
        *install_args(vgg19_weights, "--skip-self-test", "--gimp-dir", str(profile), "--gimp-version", "3.0"),
    )
    assert result.returncode == 0, explain(result)
    check_plugin(profile, "neural_style", "neural_style.py")

    unnamed = run_install(home, *install_args(vgg19_weights, "--gimp-dir", str(profile)))
    assert unnamed.returncode == errors.EXIT_USAGE
    assert "--gimp-version" in unnamed.stderr


def test_dry_run_changes_nothing(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0", ".var/app/org.gimp.GIMP/config/GIMP/3.2")
    before = listing(home)
    result = run_install(home, *install_args(vgg19_weights, "--dry-run"))
    assert result.returncode == 0, explain(result)
    assert listing(home) == before
    assert "Dry run: nothing was changed" in result.stdout
    assert ".config/GIMP/3.0/plug-ins/neural_style" in result.stdout
    assert "GIMP 3.2 (Flatpak)" in result.stdout


def test_dry_run_plans_a_venv_with_the_cuda_index(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_smi(fake_bin, "13.0")
    before = listing(home)
    result = run_install(home, "--dry-run", PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 0, explain(result)
    venv = home / ".local/share/gimp-neural-style/venv"
    assert f"virtual environment {venv}" in result.stdout
    assert "cuda build from https://download.pytorch.org/whl/cu130" in result.stdout
    assert "download https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in result.stdout
    assert "about 6.6 GB" in result.stdout
    assert listing(home) == before


def test_uninstall_dry_run_says_what_it_would_remove_and_removes_nothing(tmp_path, vgg19_weights) -> None:
    home, prefix = tmp_path / "home", tmp_path / "scratch"
    make_profiles(home, ".config/GIMP/3.0")
    installed = run_install(home, *install_args(vgg19_weights, "--skip-self-test", "--prefix", str(prefix)))
    assert installed.returncode == 0, explain(installed)
    service = start_server(prefix / nst_service.SERVICE_FOLDER, vgg19_weights)
    try:
        before = listing(tmp_path)
        dry = run_install(home, "--uninstall", "--dry-run", "--prefix", str(prefix))
        assert dry.returncode == 0, explain(dry)
        assert listing(tmp_path) == before and service.process.poll() is None, "the dry run changed something"
        assert "would stop the engine service of this data folder, if it runs" in dry.stdout
        assert dry.stdout.endswith("Dry run: nothing was changed.\n") and "Uninstalled" not in dry.stdout
        would = {
            line.split("would remove ", 1)[1] for line in dry.stdout.splitlines() if "would remove " in line
        }
        assert str(prefix / MANIFEST) in would and f"the folder {prefix}" in would

        removed = run_install(home, "--uninstall", "--prefix", str(prefix))
        assert removed.returncode == 0, explain(removed)
        done = {
            line.removeprefix("removing ")
            for line in removed.stdout.splitlines()
            if line.startswith("removing ")
        }
        assert done and done <= would, "the dry run did not name what the uninstall removed"
        assert not prefix.exists() and service.process.wait(30) == 0
    finally:
        stop_server(service)


def test_dry_runs_on_an_installed_home_change_nothing(tmp_path: Path, vgg19_weights: Path) -> None:
    """An upgrade, a --server and an official --weights file to copy: each only printed."""
    home = tmp_path / "home"
    (gimp3,) = make_profiles(home, ".config/GIMP/3.0")
    installed = run_install(home, *install_args(vgg19_weights, "--skip-self-test"))
    assert installed.returncode == 0, explain(installed)
    (gimp3 / "plug-ins/neural_style/neural_style.py").write_text("# an older version\n")
    (tmp_path / "token").write_text("a-token-long-enough-for-this\n")
    official = tmp_path / "vgg19-dcbb9e9d.pth"
    official.write_bytes(b"only the name is official")
    url = f"http://127.0.0.1:{closed_port()}"
    server = ["--server", url, "--token-file", str(tmp_path / "token")]
    cases = {
        "upgrade": (install_args(vgg19_weights), f"use {vgg19_weights} where it is"),
        "--server": (install_args(vgg19_weights, *server), f"server: {url} for the dialog's Device"),
        "--weights": (
            ["--engine-python", sys.executable, "--weights", str(official)],
            f"copy {official} to ",
        ),
    }
    for name, (arguments, planned) in cases.items():
        before = listing(tmp_path)
        result = run_install(home, *arguments, "--dry-run")
        assert result.returncode == 0, f"{name}: {explain(result)}"
        assert listing(tmp_path) == before, f"the dry run of {name} changed something"
        assert planned in result.stdout and "Dry run: nothing was changed" in result.stdout, name


# -- platforms: Flatpak, the Microsoft Store, a GIMP never started ---------------------------------------

# A stand-in for the flatpak program: Flathub's GIMP 3.0.4 is installed; `override --user --talk-name=...`
# is recorded in $FAKE_LOG and then shows in `override --user --show`, as flatpak keeps it.
FAKE_FLATPAK = """#!/bin/sh
log="$FAKE_LOG/flatpak-calls"
echo "$*" >> "$log"
bus='[Session Bus Policy]'
case "$*" in
  "info org.gimp.GIMP")
    printf 'GNU Image Manipulation Program\\n\\n          ID: org.gimp.GIMP\\n     Version: 3.0.4\\n' ;;
  "info --show-permissions org.gimp.GIMP")
    printf '[Context]\\nshared=network;ipc;\\n\\n%s\\norg.gtk.vfs.*=talk\\n' "$bus" ;;
  "override --user --show org.gimp.GIMP")
    grep -q talk-name "$log" && printf '%s\\norg.freedesktop.Flatpak=talk\\n' "$bus" ;;
  "override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP") ;;
  *) exit 1 ;;
esac
exit 0
"""


def fake_program(folder: Path, name: str, script: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text(script)
    program.chmod(0o755)
    return program


def test_a_profile_shared_with_the_flatpak_gets_its_permission(tmp_path: Path, vgg19_weights: Path) -> None:
    """Flathub's GIMP reads the host's ~/.config/GIMP/3.0: the installer says so and prints the one override,
    applies it with --yes, and knows when it is already there."""
    home = tmp_path / "home"
    gimp30, gimp32 = make_profiles(home, ".config/GIMP/3.0", ".config/GIMP/3.2")
    tools = tmp_path / "bin"
    fake_program(tools, "flatpak", FAKE_FLATPAK)
    env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path)}
    override = "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP"

    first = run_install(home, *install_args(vgg19_weights, "--skip-self-test"), **env)
    assert first.returncode == 0, explain(first)
    assert f"GIMP 3.0 (also the Flatpak GIMP's): plug-in into {gimp30}" in first.stdout
    assert f"GIMP 3.2: plug-in into {gimp32}" in first.stdout  # not the Flatpak's version
    assert "needs a permission to start the engine outside its sandbox (asked last)" in first.stdout
    assert f"allow it to start the engine outside its sandbox, once:\n    {override}" in first.stdout
    assert "--talk-name" not in (tmp_path / "flatpak-calls").read_text()  # no terminal: printed, not run
    check_plugin(gimp30, "neural_style", "neural_style.py")

    second = run_install(home, *install_args(vgg19_weights, "--skip-self-test", "--yes"), **env)
    assert second.returncode == 0, explain(second)
    assert f"ran {override}" in second.stdout
    calls = (tmp_path / "flatpak-calls").read_text().splitlines()
    assert calls.count("override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP") == 1

    third = run_install(home, *install_args(vgg19_weights, "--skip-self-test"), **env)
    assert third.returncode == 0, explain(third)
    assert "may already start the engine outside its sandbox" in third.stdout
    assert override not in third.stdout and "Nothing changed" in third.stdout


def test_the_microsoft_store_gimp_profile_is_found(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    local = home / "AppData/Local"
    (store,) = make_profiles(
        home, "AppData/Local/Packages/GIMP.GIMP_0a1b2c3d4e5f6/LocalCache/Roaming/GIMP/3.0"
    )
    env = {"APPDATA": str(home / "AppData/Roaming"), "LOCALAPPDATA": str(local), "USERPROFILE": str(home)}
    result = run_install(
        home, *install_args(vgg19_weights, "--skip-self-test"), NST_INSTALL_PLATFORM="windows", **env
    )
    assert result.returncode == 0, explain(result)
    assert f"GIMP 3.0 (Microsoft Store): plug-in into {store / 'plug-ins/neural_style'}" in result.stdout
    check_plugin(store, "neural_style", "neural_style.py")
    assert run_install(home, "--uninstall", NST_INSTALL_PLATFORM="windows", **env).returncode == 0
    assert not (store / "plug-ins").exists()


def test_a_gimp_never_started_is_named_with_its_version(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    tools = tmp_path / "bin"
    fake_program(tools, "gimp-3.2", "#!/bin/sh\necho 'GNU Image Manipulation Program version 3.2.6'\n")
    env = {"PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    alone = run_install(home, *install_args(vgg19_weights, "--skip-self-test", "--dry-run"), **env)
    assert alone.returncode == errors.EXIT_NO_GIMP, explain(alone)
    assert (
        alone.stderr.count("\n") == 1 and f"GIMP 3.2 ({tools / 'gimp-3.2'}) was never started" in alone.stderr
    )
    assert f"(it makes {home / '.config/GIMP/3.2'} and brings over an older GIMP's settings)" in alone.stderr

    (older,) = make_profiles(home, ".config/GIMP/3.0")  # 3.0 was used; 3.2, just installed, never started
    result = run_install(home, *install_args(vgg19_weights, "--skip-self-test"), **env)
    assert result.returncode == 0, explain(result)
    assert "  note: GIMP 3.2 (" in result.stdout and "run install.py again" in result.stdout
    check_plugin(older, "neural_style", "neural_style.py")


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_a_gimp_never_started_on_windows_and_macos(tmp_path: Path, system: str) -> None:
    home = tmp_path / "home"
    if system == "windows":
        program = home / "Programs/GIMP 3/bin/gimp-3.2.exe"
        program.parent.mkdir(parents=True)
        program.write_bytes(b"MZ")
        env = {
            "ProgramFiles": str(home / "Programs"),
            "APPDATA": str(home / "Roaming"),
            "LOCALAPPDATA": str(home),
        }
        profile = home / "Roaming/GIMP/3.2"
    else:
        plist = home / "Applications/GIMP.app/Contents/Info.plist"
        plist.parent.mkdir(parents=True)
        plist.write_bytes(plistlib.dumps({"CFBundleShortVersionString": "3.2.6"}))
        env, profile = {}, home / "Library/Application Support/GIMP/3.2"
    result = run_install(home, "--dry-run", "--skip-self-test", NST_INSTALL_PLATFORM=system, **env)
    assert result.returncode == errors.EXIT_NO_GIMP, explain(result)
    assert "GIMP 3.2 (" in result.stderr and f"(it makes {profile} " in result.stderr


# -- bad situations --------------------------------------------------------------------------------


def test_no_gimp_still_installs_the_engine(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = run_install(home, *install_args(vgg19_weights, "--skip-self-test"))
    assert result.returncode == errors.EXIT_NO_GIMP, explain(result)
    assert "No GIMP 3.x or 2.10 profile found" in result.stderr and "--gimp-dir" in result.stderr
    assert (
        str(home / ".config/GIMP/3.2") in result.stderr
        and "Start GIMP (3.2, 3.0 or 2.10) once" in result.stderr
    )
    assert (home / ".local/share/gimp-neural-style" / MANIFEST).is_file()
    assert run_install(home, "--uninstall").returncode == 0
    assert listing(home) == {}


def test_no_network_for_weights(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    url = f"http://127.0.0.1:{closed_port()}/vgg19-dcbb9e9d.pth"
    result = run_install(home, "--engine-python", sys.executable, NST_WEIGHTS_URL=url)
    assert result.returncode == errors.EXIT_WEIGHTS, explain(result)
    assert "--weights FILE" in result.stderr and url in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


def test_official_name_with_wrong_content_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    fake = tmp_path / "vgg19-dcbb9e9d.pth"
    fake.write_bytes(b"not the weights")
    result = run_install(home, "--engine-python", sys.executable, "--weights", str(fake))
    assert result.returncode == errors.EXIT_WEIGHTS, explain(result)
    assert "incomplete or damaged" in result.stderr
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


def test_not_enough_disk_space(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    before = listing(home)
    result = run_install(home, "--torch", "cpu", NST_INSTALL_FREE_BYTES=str(300 * 1000**2))
    assert result.returncode == errors.EXIT_DISK_SPACE, explain(result)
    assert "Not enough disk space" in result.stderr
    assert "needs about 1.6 GB and 0.3 GB is free" in result.stderr
    assert listing(home) == before


def test_engine_python_without_torch(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    result = run_install(home, "--engine-python", str(python), "--weights", str(vgg19_weights))
    assert result.returncode == errors.EXIT_ENGINE, explain(result)
    assert "cannot import torch" in result.stderr and "--engine-python" in result.stderr
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


def test_pip_failure_shows_its_last_lines_and_the_retry_command(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    index = f"http://127.0.0.1:{closed_port()}/simple"
    result = run_install(
        home,
        "--torch",
        "cpu",
        "--index-url",
        index,
        "--weights",
        str(vgg19_weights),
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
        PIP_NO_CACHE_DIR="1",
    )
    assert result.returncode == errors.EXIT_ENGINE, explain(result)
    assert "pip could not install torch" in result.stderr
    assert "retry with:" in result.stderr and f"--index-url {index}" in result.stderr
    assert f"'{project().requirement('torch')}'" in result.stderr  # the tested releases, not the newest
    assert "ERROR:" in result.stderr, "pip's own last lines are missing"
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()
    assert run_install(home, "--uninstall").returncode == 0
    assert not (home / ".local").exists(), "uninstall left the half-made venv"


def test_profile_not_writable(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    (profile,) = make_profiles(home, ".config/GIMP/3.0")
    (profile / "plug-ins").write_text("a file where GIMP's plug-in folder should be")
    before = listing(home)
    result = run_install(home, *install_args(vgg19_weights))
    assert result.returncode == errors.EXIT_GIMP_NOT_WRITABLE, explain(result)
    assert str(profile / "plug-ins") in result.stderr and "move it away" in result.stderr
    assert listing(home) == before


def test_unwritable_data_folder_is_one_line_not_a_traceback(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    (home / "blocker").write_text("a file where the data folder's parent should be")
    prefix = home / "blocker/data"
    result = run_install(home, *install_args(vgg19_weights, "--prefix", str(prefix)))
    assert result.returncode == errors.EXIT_INTERNAL, explain(result)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert str(prefix) in result.stderr and "Traceback" not in result.stderr
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


# -- the Python version guard -------------------------------------------------------------------------

# What Python 2.7 must parse: install.py and what it imports before its version check.
GUARD_FILES = (INSTALL, REPO / "nst_install/__init__.py", REPO / "nst_install/errors.py")


def test_too_old_python_gets_a_message(tmp_path: Path) -> None:
    """Python 2.7 is the oldest that must get the one line (a `python install.py` on an old system):
    it runs here for real, with every other Python older than 3.9 this machine has."""
    result = run_install(tmp_path, "--dry-run", NST_INSTALL_PYTHON_VERSION="3.5")
    assert result.returncode == errors.EXIT_OLD_PYTHON
    assert "needs Python 3.9 or newer and this is Python 3.5" in result.stderr
    assert "Traceback" not in result.stderr
    pythons = list(dict.fromkeys([python27(), *old_pythons()]))
    for python in pythons:
        real = subprocess.run([python, str(INSTALL)], capture_output=True, text=True, cwd=tmp_path)
        assert real.returncode == errors.EXIT_OLD_PYTHON, f"{python}: {real.stderr}"
        assert "needs Python 3.9 or newer" in real.stderr and len(real.stderr.splitlines()) == 1
    assert not list((REPO / "nst_install").glob("*.pyc")), "an old Python left its bytecode in the checkout"


def old_pythons() -> list[str]:
    """Interpreters older than 3.9 on PATH or managed by pyenv, those that actually run."""
    names = ("python2.7", "python2", "python3.5", "python3.6", "python3.7", "python3.8")
    candidates = [shutil.which(name) for name in names]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        if root:
            old = ("2.", "3.5", "3.6", "3.7", "3.8")
            candidates += sorted(
                str(p) for p in Path(root).glob("versions/*/bin/python") if p.parts[-3].startswith(old)
            )
    return [
        path
        for path in dict.fromkeys(candidates)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0
    ]


def test_the_installer_runs_on_python_3_9(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | {"HOME": str(home)}
    argv = [python39(), str(INSTALL), *install_args(vgg19_weights, "--dry-run")]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=home, timeout=300)
    assert done.returncode == 0, explain(done)
    assert "Dry run: nothing was changed" in done.stdout and "GIMP 3.0: plug-in into" in done.stdout


@pytest.mark.parametrize("path", GUARD_FILES, ids=lambda p: p.name)
def test_the_guard_compiles_on_python_2_7(path: Path) -> None:
    check = "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')"
    done = subprocess.run([python27(), "-c", check, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", sorted((REPO / "nst_install").glob("*.py")), ids=lambda p: p.name)
def test_the_installer_is_stdlib_and_python_3_9(path: Path) -> None:
    """It runs before any environment exists, possibly on Python 3.9 (macOS's python3)."""
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    ours = ("nst_bridge", "nst_common", "nst_service", "nst_core")  # the plug-ins' stdlib modules, and ours
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name.split(".")[0] in (*sys.stdlib_module_names, *ours) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module.split(".")[0] in (*sys.stdlib_module_names, *ours)
    if path not in GUARD_FILES:
        assert "from __future__ import annotations" in source  # annotations may use X | Y on 3.9


# -- the torch build, as a unit ---------------------------------------------------------------------


def fake_smi(folder: Path, cuda: str, *gpus: str) -> None:
    """nvidia-smi's banner with the driver's CUDA version and, for --query-gpu, one CSV line per GPU
    ("name, compute capability, driver"); with no GPUs given, an old driver that has no compute_cap."""
    smi = folder / "nvidia-smi"
    banner = f"| NVIDIA-SMI 580.00   Driver Version: 580.00   CUDA Version: {cuda} |"
    rows = "\\n".join(gpus)
    query = (
        f"printf '{rows}\\n'"
        if gpus
        else "echo 'Field \"compute_cap\" is not a valid field to query.'; exit 2"
    )
    smi.write_text(f"#!/bin/sh\nif [ -n \"$1\" ]; then {query}; fi\necho '{banner}'\n")
    smi.chmod(0o755)


RTX_4090 = "NVIDIA GeForce RTX 4090, 8.9, 580.65"
GTX_1080 = "NVIDIA GeForce GTX 1080, 6.1, 580.65"
RTX_5090 = "NVIDIA GeForce RTX 5090, 12.0, 570.86"
TESLA_K80 = "Tesla K80, 3.7, 470.82"


def choose(tmp_path: Path, requested: str = "auto", system: str = "linux") -> torch_build.TorchBuild:
    return torch_build.choose_torch(system, "x86_64", requested, {"PATH": str(tmp_path)}, tmp_path / "root")


@pytest.mark.parametrize(
    ("cuda", "gpus", "index"),
    [
        ("13.0", [RTX_4090], "cu130"),
        ("13.2", [RTX_4090], "cu132"),
        ("12.9", [RTX_4090], "cu126"),  # torch 2.14 has no cu128: a 12.x driver runs cu126
        ("12.4", [RTX_4090], "cu126"),  # the driver's major release, by minor-version compatibility
        ("13.0", [GTX_1080], "cu126"),  # Pascal: cu130 has no kernels for it ("no kernel image")
        ("13.0", [GTX_1080, RTX_4090], "cu126"),  # one build for every GPU
        ("13.0", [], "cu130"),  # an old driver that cannot say the compute capability
    ],
)
def test_the_cuda_build_follows_the_gpu_and_the_driver(
    tmp_path: Path, cuda: str, gpus: list, index: str
) -> None:
    fake_smi(tmp_path, cuda, *gpus)
    build = choose(tmp_path)
    assert (build.kind, build.index_url) == ("cuda", "https://download.pytorch.org/whl/" + index)
    assert f"CUDA {cuda}" in build.reason


@pytest.mark.parametrize(
    ("cuda", "gpu", "why"),
    [
        ("12.8", RTX_5090, "the builds for this GPU need CUDA 13 or newer: update the NVIDIA driver"),
        ("11.4", TESLA_K80, "no PyTorch 2.14 build has kernels for compute capability 3.7"),
        ("11.4", RTX_4090, "the driver supports CUDA 11.4 and the builds for this GPU need CUDA 12"),
    ],
)
def test_a_gpu_without_a_build_gets_the_cpu_one_and_says_why(tmp_path: Path, cuda: str, gpu: str, why: str):
    fake_smi(tmp_path, cuda, gpu)
    build = choose(tmp_path)
    assert build.kind == "cpu" and why in build.reason
    with pytest.raises(errors.InstallError, match="No CUDA torch for this GPU: ") as info:
        choose(tmp_path, "cuda")
    assert why in str(info.value)


def test_no_gpu_picks_the_cpu_index(tmp_path: Path) -> None:
    for system in ("linux", "windows"):
        build = choose(tmp_path, system=system)
        assert (build.kind, build.index_url) == ("cpu", "https://download.pytorch.org/whl/cpu")


def amd_gpu(root: Path, *versions: int) -> None:
    """What the amdgpu kernel driver shows, without any ROCm installed: /dev/kfd and the KFD topology."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/kfd").write_text("")
    for node, version in enumerate((0, *versions)):  # node 0: the CPU
        folder = root / f"sys/class/kfd/kfd/topology/nodes/{node}"
        folder.mkdir(parents=True)
        (folder / "properties").write_text(
            f"cpu_cores_count 0\ngfx_target_version {version}\nvendor_id 4098\n"
        )


def test_rocm_needs_only_the_kernel_driver_and_a_gpu_it_has_kernels_for(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert choose(tmp_path).kind == "cpu"  # no /dev/kfd
    amd_gpu(root, 110000)  # gfx1100: a Radeon RX 7900
    build = choose(tmp_path)
    assert (build.kind, build.index_url) == ("rocm", "https://download.pytorch.org/whl/rocm7.2")
    assert "gfx1100" in build.reason and not (root / "opt/rocm").exists()
    assert choose(tmp_path, system="windows").kind == "cpu"
    other = tmp_path / "other"
    other.mkdir()
    amd_gpu(other / "root", 90012)  # gfx90c: a Ryzen APU's graphics, not in the build
    build = choose(other)
    assert build.kind == "cpu" and "gfx90c has no kernels in PyTorch's ROCm build" in build.reason
    assert choose(other, "rocm").kind == "rocm"


def test_apple_silicon_intel_macs_rosetta_and_overrides(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}
    apple = torch_build.choose_torch("macos", "arm64", "auto", env)
    assert (apple.kind, apple.index_url, apple.pins) == ("mps", None, ())
    sysctl = tmp_path / "sysctl"
    sysctl.write_text("#!/bin/sh\necho 0\n")  # a real Intel Mac: not translated
    sysctl.chmod(0o755)
    intel = torch_build.choose_torch("macos", "x86_64", "auto", env)
    assert (intel.kind, intel.index_url, intel.max_python) == ("cpu", None, (3, 12))
    assert intel.requirement("torch", "torch>=2.14,<2.15") == "torch==2.2.2"
    assert intel.requirement("numpy", "numpy>=1.23") == "numpy>=1.23,<2"  # 2.2.2 fails on NumPy 2
    assert intel.requirement("pillow", "pillow>=9") == "pillow>=9"
    sysctl.write_text("#!/bin/sh\necho 1\n")  # an Intel Python under Rosetta 2 on Apple Silicon
    with pytest.raises(errors.InstallError, match="under Rosetta 2") as info:
        torch_build.choose_torch("macos", "x86_64", "auto", env)
    assert "arch -arm64" in str(info.value) and info.value.code == errors.EXIT_OLD_PYTHON
    fake_smi(tmp_path, "13.0", RTX_4090)
    assert choose(tmp_path, "cpu").kind == "cpu"
    with pytest.raises(errors.InstallError, match="macOS"):
        torch_build.choose_torch("macos", "arm64", "cuda", env)


def test_the_build_table_is_for_the_tested_torch() -> None:
    """Moving pyproject.toml to another torch release must come with a look at the build table."""
    major, minor = torch_build.TESTED_TORCH
    assert torch_build.satisfies(f"{major}.{minor}.0", project().requirement("torch"))
    assert not torch_build.satisfies(f"{major}.{minor + 1}.0", project().requirement("torch"))


def test_the_venv_python_fits_the_build_and_is_never_the_stores(tmp_path: Path) -> None:
    python312 = tmp_path / "python3.12"
    python312.write_text("#!/bin/sh\n")
    python312.chmod(0o755)
    env = {"PATH": str(tmp_path)}
    assert engine.base_python(env, (3, 13), "/usr/bin/python3.13", (3, 12)) == str(python312)
    assert engine.base_python(env, (3, 12), "/usr/bin/python3.12", (3, 12)) == "/usr/bin/python3.12"
    with pytest.raises(errors.InstallError, match="at most 3.12"):
        engine.base_python({"PATH": str(tmp_path / "none")}, (3, 13), "/usr/bin/python3.13", (3, 12))
    store = (
        r"C:\Users\me\AppData\Local\Microsoft\WindowsApps\PythonSoftwareFoundation.Python.3.12_x\python.exe"
    )
    assert engine.store_python(store) and not engine.store_python(r"C:\Program Files\Python312\python.exe")
    aliases = tmp_path / "WindowsApps"  # where the Store's python3.12 alias lies on PATH: passed over
    aliases.mkdir()
    python312.rename(aliases / "python3.12")
    with pytest.raises(errors.InstallError, match="none was found"):
        engine.base_python({"PATH": str(aliases)}, (3, 9), "/usr/bin/python3.9")


def test_a_store_python_is_refused_before_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, "AppData/Roaming/GIMP/3.0")
    store = (
        r"C:\Program Files\WindowsApps\PythonSoftwareFoundation.Python.3.12_x64__qbz5n2kfra8p0\python3.12.exe"
    )
    args = install_namespace(platform="windows")
    before = listing(home)
    with pytest.raises(errors.InstallError) as info:
        plan.make_plan(args, {"HOME": str(home), "APPDATA": str(home / "AppData/Roaming")}, executable=store)
    assert info.value.code == errors.EXIT_OLD_PYTHON and "\n" not in str(info.value)
    assert str(info.value).startswith(f"This Python ({store}) is the Microsoft Store's")
    assert "python.org" in str(info.value) and listing(home) == before


def test_tested_torch_releases() -> None:
    """The venv gets the releases the project is tested with: pyproject.toml's range, which holds the
    test environment's pins, and a torch outside it is replaced."""
    pins = dict(
        line.split("==") for line in (REPO / "tests/requirements.txt").read_text().split() if "==" in line
    )
    for name in ("torch", "torchvision"):
        assert torch_build.satisfies(pins[name], project().requirement(name)), (
            pins[name],
            project().requirements,
        )
    assert torch_build.satisfies("2.14.1+cu128", "torch>=2.14,<2.15")
    assert not torch_build.satisfies("2.15.0", "torch>=2.14,<2.15")
    assert not torch_build.satisfies("2.13.9", "torch>=2.14,<2.15")
    assert torch_build.satisfies("0.29.1", "torchvision==0.29.1") and not torch_build.satisfies(
        "0.29", "x==0.29.1"
    )
    build = torch_build.TorchBuild("cpu", None, "test")
    probe = {"torch": {"version": "2.14.1"}, "torchvision": {"version": "0.29.1"}}
    assert engine.torch_fits(probe, build)
    assert not engine.torch_fits(
        {**probe, "torch": {"version": "2.16.0"}}, build
    )  # a newer one is not trusted


# -- the plan and its carrying out, in this process -----------------------------------------------------


def install_namespace(**changes: object) -> argparse.Namespace:
    values = {
        "prefix": None,
        "torch": "auto",
        "index_url": None,
        "engine_python": None,
        "dev": False,
        "weights": None,
        "gimp_dir": None,
        "gimp_version": None,
        "skip_self_test": False,
        "yes": False,
        "dry_run": False,
        "uninstall": False,
        "platform": None,
    }
    return argparse.Namespace(**{**values, **changes})


def test_the_plan_is_one_typed_object_made_before_any_change(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    gimp3, flatpak = make_profiles(home, ".config/GIMP/3.2", ".var/app/org.gimp.GIMP/config/GIMP/3.0")
    before = listing(home)
    args = install_namespace(engine_python=sys.executable, weights=str(vgg19_weights))
    made = plan.make_plan(args, {"HOME": str(home), "PATH": os.environ["PATH"]})
    assert listing(home) == before
    assert made.engine.existing and not made.engine.install_torch and not made.engine.install_nst_core
    assert (made.weights.action, made.weights.dest) == ("reference", vgg19_weights)
    assert [(p.path, p.version, p.flatpak) for p in made.profiles] == [
        (gimp3, (3, 2), False),
        (flatpak, (3, 0), True),
    ]
    assert made.disk == 0 and made.data_dir == home / ".local/share/gimp-neural-style"
    lines = plan.describe(made)
    assert lines[0].startswith("GIMP Neural Style installer (linux, data folder ")
    assert f"  GIMP 3.0 (Flatpak): plug-in into {flatpak / 'plug-ins/neural_style'}" in lines
    with pytest.raises(AttributeError):
        made.disk = 1  # type: ignore[misc]


def test_the_engine_is_checked_once_and_the_self_test_runs_as_gimp_does(
    tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One import check (with the user's weights) for --engine-python; the self-test sends raw pixels
    through the plug-ins' bridge and gets raw pixels back."""
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    monkeypatch.setenv("HOME", str(home))
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    checks, jobs = [], []
    check_engine = steps.check_engine
    monkeypatch.setattr(steps, "check_engine", lambda *a: checks.append(a) or check_engine(*a))
    write_job = nst_bridge.EngineRun._write_job

    def spy(run: nst_bridge.EngineRun, styles: list, options: dict, masks: list | None = None) -> str:
        path = write_job(run, styles, options, masks)
        jobs.append(json.loads(Path(path).read_text()))
        return path

    monkeypatch.setattr(nst_bridge.EngineRun, "_write_job", spy)
    args = install_namespace(engine_python=sys.executable, weights=str(vgg19_weights))
    made = plan.make_plan(args, dict(os.environ))
    changes = steps.carry_out(made, steps.Manifest(made.data_dir / "install-manifest.json"))
    assert checks == [(Path(sys.executable), vgg19_weights)]
    [job] = jobs
    assert job["content"] | {"raw": "-"} == {
        "raw": "-",
        "width": 48,
        "height": 32,
        "format": "u8",
        "channels": 4,
    }
    assert job["output"]["format"] == "u8" and job["options"]["weights"] == str(vgg19_weights)
    assert [text for text in changes.done if "nst_config.json" in text]


def test_an_intel_mac_gets_its_pinned_torch_and_numpy_and_nst_core_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip would replace torch 2.2.2 by pyproject.toml's range: nst_core goes in without its dependencies,
    after them with the Mac's pins."""
    calls: list[list[str]] = []
    monkeypatch.setattr(steps, "pip_install", lambda python, arguments, what: calls.append(list(arguments)))
    monkeypatch.setattr(steps, "run_quiet", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    sysctl = tmp_path / "sysctl"
    sysctl.write_text("#!/bin/sh\necho 0\n")
    sysctl.chmod(0o755)
    build = torch_build.choose_torch("macos", "x86_64", "auto", {"PATH": str(tmp_path)})
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text("")
    made = plan.EnginePlan(venv / "bin/python", False, venv, None, build, True, True)
    install = plan.InstallPlan(
        system="macos",
        data_dir=tmp_path,
        engine=made,
        weights=plan.WeightsPlan("keep", "w", tmp_path / "w"),
        profiles=(),
        unsupported=(),
        installed=(),
        not_started=(),
        no_profile_hint=tmp_path / "GIMP/3.2",
        flatpak=None,
        self_test=False,
        assume_yes=False,
        dev=False,
        prefix=False,
    )
    manifest = steps.Manifest(tmp_path / "manifest.json")
    steps.make_environment(made, manifest, steps.Changes())
    steps.install_nst_core(install, manifest, steps.Changes())
    assert calls == [
        ["torch==2.2.2", "torchvision==0.17.2"],  # PyPI: no --index-url on a Mac
        ["pillow>=9", "numpy>=1.23,<2", "tqdm>=4.60", "aiohttp>=3.9", "opencv-python-headless>=4.8"],
        ["--no-deps", str(REPO)],
    ]


def test_official_weights_get_a_features_copy_that_the_record_holds(
    tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine writes the copy (`weights fetch`, here in this process, so that the test's official
    table holds); a failure is said, not raised; a file of one's own gets none."""
    from dataclasses import replace
    from types import SimpleNamespace

    from samples import make_official_like_weights

    from nst_core import cli, weights

    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    official = make_official_like_weights(data / "weights" / "vgg19-test.pth", vgg19_weights)
    digest, size = weights.sha256_of(official), official.stat().st_size
    monkeypatch.setitem(
        weights.OFFICIAL,
        "vgg19",
        replace(weights.OFFICIAL["vgg19"], filename=official.name, sha256=digest, size=size),
    )
    runs: list[tuple[str, ...]] = []

    def engine_here(python: Path, data_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
        runs.append(arguments)
        monkeypatch.setenv("NST_DATA_DIR", str(data_dir))
        return subprocess.CompletedProcess(arguments, cli.main(list(arguments)), "", "")

    monkeypatch.setattr(steps, "run_engine", engine_here)
    install = SimpleNamespace(
        weights=plan.WeightsPlan("keep", str(official), official),
        data_dir=data,
        engine=SimpleNamespace(python=Path(sys.executable)),
    )
    manifest = steps.Manifest(data / MANIFEST)
    assert steps.set_up_weights(install.weights, data, manifest, steps.Changes()) is None  # verified
    changes = steps.Changes()
    steps.make_features_file(install, manifest, changes)  # type: ignore[arg-type]
    copy = official.with_name("vgg19-test.features.pt")
    assert runs == [("weights", "fetch", "--dir", str(official.parent))]
    assert weights.verified_features(official, data / weights.STAMP_NAME) == copy
    assert str(copy) in manifest.data["files"]  # uninstall removes it
    assert changes.done == [f"wrote and verified {copy}, the engine's quicker start"]

    again = steps.Changes()
    steps.make_features_file(install, manifest, again)  # type: ignore[arg-type]
    assert len(runs) == 1 and again.done == []
    assert f"{copy} present and verified" in capsys.readouterr().out

    copy.unlink()
    note = f"note: Cannot write {copy} (No space left on device): free some disk space.\n"
    monkeypatch.setattr(
        steps, "run_engine", lambda *a: subprocess.CompletedProcess(a, 0, str(official), note)
    )
    steps.make_features_file(install, manifest, steps.Changes())  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert f"the engine reads the whole weights file: Cannot write {copy} (No space left" in out

    own = SimpleNamespace(**{**vars(install), "weights": plan.WeightsPlan("reference", "x", vgg19_weights)})
    monkeypatch.setattr(steps, "run_engine", lambda *a: pytest.fail("the engine ran for a file of one's own"))
    steps.make_features_file(own, manifest, steps.Changes())  # type: ignore[arg-type]
