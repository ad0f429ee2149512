"""install.py end to end, in a throw-away home folder laid out as on Linux, Windows and macOS: whole
installs, reruns, upgrades and uninstalls, the platforms' GIMP profiles, and bad situations.

The engine Python is this test environment's own (it has torch and nst_core from the checkout),
the weights are the random `vgg19_weights` fixture, so nothing is downloaded and no torch is
installed; the venv + pip path is exercised through --dry-run, a failing pip and unit tests.
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from installs import (
    MANIFEST,
    REPO,
    check_plugin,
    closed_port,
    explain,
    fake_smi,
    install_args,
    listing,
    make_profiles,
    run_install,
)
from servers import serving, start_server, stop_server

from nst_install import errors
from nst_install.checkout import nst_service, project

pytestmark = pytest.mark.usefixtures("engine_python_has_this_checkout")


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


def test_a_vgg16_install_runs_its_self_test_and_the_plug_ins_on_vgg16(tmp_path, vgg16_weights) -> None:
    """VGG16 weights are refused for the default network, in one line naming --model; with --model
    vgg16 the engine loads them, the self-test paints with them and the plug-ins' config asks for VGG16."""
    home = tmp_path / "home"
    (gimp3,) = make_profiles(home, ".config/GIMP/3.0")
    refused = run_install(home, *install_args(vgg16_weights, "--skip-self-test"))
    assert refused.returncode == errors.EXIT_WEIGHTS, explain(refused)
    assert "Pass VGG19 weights" in refused.stderr and "--model" in refused.stderr
    assert refused.stderr.count("\n") == 1
    result = run_install(home, *install_args(vgg16_weights, "--model", "vgg16"))
    assert result.returncode == 0, explain(result)
    assert re.search(r"test picture, \d+ iterations: [\d.]+ s", result.stdout), result.stdout  # painted
    assert re.search(r"speed: \d+ GFLOP/s on .*, recorded", result.stdout), result.stdout  # calibrated
    config = check_plugin(gimp3, "neural_style", "neural_style.py")
    assert config["model"] == "vgg16" and config["weights"] == str(vgg16_weights)
    again = run_install(home, *install_args(vgg16_weights))  # loaded before, but as VGG16: checked again
    assert again.returncode == errors.EXIT_WEIGHTS and "--model" in again.stderr, explain(again)
    fresh = tmp_path / "fresh"
    make_profiles(fresh, ".config/GIMP/3.0")
    planned = run_install(fresh, "--engine-python", sys.executable, "--model", "vgg16", "--dry-run")
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in planned.stdout, explain(planned)


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
