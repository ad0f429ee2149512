"""install.py end to end, in a throw-away home folder laid out as on Linux, Windows and macOS.

The engine Python is this test environment's own (it has torch and nst_core from the checkout),
the weights are the random `vgg19_weights` fixture, so nothing is downloaded and no torch is
installed; the venv + pip path is exercised through --dry-run, a failing pip and unit tests.
"""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tokenize
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
BRIDGE = REPO / "plug-ins/neural_style/nst_bridge.py"
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


def load_installer() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("nst_install", INSTALL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


installer = load_installer()


@pytest.fixture(scope="module", autouse=True)
def engine_python_has_this_checkout() -> None:
    """The installs below use this very Python as the engine: they must find nothing to pip-install."""
    probe = installer.probe_python(Path(sys.executable))
    assert probe and installer.nst_core_current(probe), "first run: pip install -e . (from this checkout)"


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


def check_plugin(profile: Path, folder: str, main: str, flatpak: bool = False) -> dict:
    target = profile / "plug-ins" / folder
    assert os.access(target / main, os.X_OK), f"{target / main} is not executable"
    assert (target / "nst_bridge.py").read_bytes() == BRIDGE.read_bytes()
    config = json.loads((target / "nst_config.json").read_text())
    assert config["version"] == 1
    assert Path(config["python"]).is_absolute() and Path(config["python"]).is_file()
    assert Path(config["weights"]).is_absolute() and Path(config["weights"]).is_file()
    assert config["engine"]["presets"], "the engine description is missing"
    assert config["flatpak"] is flatpak
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
    config = check_plugin(flatpak, "neural_style", "neural_style.py", flatpak=True)
    check_plugin(gimp2, "neural_style_gimp2", "neural_style_gimp2.py")
    assert config["python"] == sys.executable and config["weights"] == str(vgg19_weights)
    assert not (home / ".config/GIMP/2.8/plug-ins").exists()
    assert "Self-test" in first.stdout and "device:" in first.stdout
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
    assert unnamed.returncode == installer.EXIT_USAGE
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
    fake_smi(fake_bin, "12.8")
    before = listing(home)
    result = run_install(home, "--dry-run", PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 0, explain(result)
    venv = home / ".local/share/gimp-neural-style/venv"
    assert f"virtual environment {venv}" in result.stdout
    assert "cuda build from https://download.pytorch.org/whl/cu128" in result.stdout
    assert "download https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in result.stdout
    assert "about 6.6 GB" in result.stdout
    assert listing(home) == before


# -- bad situations --------------------------------------------------------------------------------


def test_no_gimp_still_installs_the_engine(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = run_install(home, *install_args(vgg19_weights, "--skip-self-test"))
    assert result.returncode == installer.EXIT_NO_GIMP, explain(result)
    assert "No GIMP 3.x or 2.10 profile found" in result.stderr and "--gimp-dir" in result.stderr
    assert str(home / ".config/GIMP/3.0") in result.stderr
    assert (home / ".local/share/gimp-neural-style" / MANIFEST).is_file()
    assert run_install(home, "--uninstall").returncode == 0
    assert listing(home) == {}


def test_no_network_for_weights(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    url = f"http://127.0.0.1:{closed_port()}/vgg19-dcbb9e9d.pth"
    result = run_install(home, "--engine-python", sys.executable, NST_WEIGHTS_URL=url)
    assert result.returncode == installer.EXIT_WEIGHTS, explain(result)
    assert "--weights FILE" in result.stderr and url in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


def test_official_name_with_wrong_content_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    fake = tmp_path / "vgg19-dcbb9e9d.pth"
    fake.write_bytes(b"not the weights")
    result = run_install(home, "--engine-python", sys.executable, "--weights", str(fake))
    assert result.returncode == installer.EXIT_WEIGHTS, explain(result)
    assert "incomplete or damaged" in result.stderr
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


def test_not_enough_disk_space(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    before = listing(home)
    result = run_install(home, "--torch", "cpu", NST_INSTALL_FREE_BYTES=str(300 * 1000**2))
    assert result.returncode == installer.EXIT_DISK_SPACE, explain(result)
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
    assert result.returncode == installer.EXIT_ENGINE, explain(result)
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
    assert result.returncode == installer.EXIT_ENGINE, explain(result)
    assert "pip could not install torch" in result.stderr
    assert "retry with:" in result.stderr and f"--index-url {index}" in result.stderr
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
    assert result.returncode == installer.EXIT_GIMP_NOT_WRITABLE, explain(result)
    assert str(profile / "plug-ins") in result.stderr and "move it away" in result.stderr
    assert listing(home) == before


def test_unwritable_data_folder_is_one_line_not_a_traceback(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    (home / "blocker").write_text("a file where the data folder's parent should be")
    prefix = home / "blocker/data"
    result = run_install(home, *install_args(vgg19_weights, "--prefix", str(prefix)))
    assert result.returncode == installer.EXIT_INTERNAL, explain(result)
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert str(prefix) in result.stderr and "Traceback" not in result.stderr
    assert not (home / ".config/GIMP/3.0/plug-ins").exists()


# -- the Python version guard -------------------------------------------------------------------------


def test_too_old_python_gets_a_message(tmp_path: Path) -> None:
    result = run_install(tmp_path, "--dry-run", NST_INSTALL_PYTHON_VERSION="3.5")
    assert result.returncode == installer.EXIT_OLD_PYTHON
    assert "needs Python 3.9 or newer and this is Python 3.5" in result.stderr
    assert "Traceback" not in result.stderr
    for python in old_pythons():  # the real thing, where this machine has one
        real = subprocess.run([python, str(INSTALL)], capture_output=True, text=True, cwd=tmp_path)
        assert real.returncode == installer.EXIT_OLD_PYTHON, f"{python}: {real.stderr}"
        assert "needs Python 3.9 or newer" in real.stderr


def old_pythons() -> list[str]:
    """Interpreters older than 3.9 on PATH or managed by pyenv, those that actually run."""
    candidates = [
        shutil.which(name)
        for name in ("python2.7", "python2", "python3.5", "python3.6", "python3.7", "python3.8")
    ]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        if root:
            candidates += sorted(
                str(p)
                for p in Path(root).glob("versions/*/bin/python")
                if p.parts[-3].startswith(("2.", "3.5", "3.6", "3.7", "3.8"))
            )
    return [
        path
        for path in dict.fromkeys(candidates)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0
    ]


PY3_ONLY = (
    ast.JoinedStr,
    ast.AnnAssign,
    ast.NamedExpr,
    ast.Nonlocal,
    ast.YieldFrom,
    ast.AsyncFunctionDef,
    ast.Await,
    ast.MatMult,
)


def test_install_py_parses_on_python_2_7() -> None:
    """Old interpreters compile the whole file before the guard runs: no Python-3-only syntax anywhere."""
    source = INSTALL.read_text()
    tree = ast.parse(source)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, PY3_ONLY):
            problems.append(f"line {node.lineno}: {type(node).__name__}")
        if isinstance(node, (ast.FunctionDef, ast.Lambda)):
            arguments = node.args
            annotated = [a for a in arguments.args + arguments.kwonlyargs if a.annotation is not None]
            if arguments.kwonlyargs or annotated or getattr(node, "returns", None) is not None:
                problems.append(f"line {node.lineno}: annotations or keyword-only arguments")
        if isinstance(node, ast.Raise) and node.cause is not None:
            problems.append(f"line {node.lineno}: raise ... from")
    assert not problems, problems
    assert "from __future__ import print_function" in source  # print(..., file=) parses on 2.7
    assert "_" not in "".join(t for t in _number_tokens(source)), "digit separators do not parse on 2.7"


def _number_tokens(source: str) -> list[str]:
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [t.string for t in tokens if t.type == tokenize.NUMBER]


# -- the torch build, as a unit ---------------------------------------------------------------------


def fake_smi(folder: Path, cuda: str) -> None:
    smi = folder / "nvidia-smi"
    banner = f"| NVIDIA-SMI 570.00   Driver Version: 570.00   CUDA Version: {cuda} |"
    smi.write_text(f"#!/bin/sh\necho '{banner}'\n")
    smi.chmod(0o755)


@pytest.mark.parametrize(
    ("cuda", "index"),
    [("13.0", "cu130"), ("12.9", "cu128"), ("12.6", "cu126"), ("12.4", "cu126"), ("13.2", "cu130")],
)
def test_nvidia_driver_picks_the_matching_cuda_index(tmp_path: Path, cuda: str, index: str) -> None:
    fake_smi(tmp_path, cuda)
    build = installer.choose_torch("linux", "x86_64", "auto", {"PATH": str(tmp_path)}, tmp_path / "no-rocm")
    assert build.kind == "cuda"
    assert build.index_url == "https://download.pytorch.org/whl/" + index


def test_no_gpu_picks_the_cpu_index(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}
    for system in ("linux", "windows"):
        build = installer.choose_torch(system, "x86_64", "auto", env, tmp_path / "no-rocm")
        assert (build.kind, build.index_url) == ("cpu", "https://download.pytorch.org/whl/cpu")


def test_old_nvidia_driver_falls_back_to_cpu_unless_cuda_is_forced(tmp_path: Path) -> None:
    fake_smi(tmp_path, "11.4")
    env = {"PATH": str(tmp_path)}
    assert installer.choose_torch("linux", "x86_64", "auto", env, tmp_path / "no-rocm").kind == "cpu"
    with pytest.raises(installer.InstallError, match="update the driver"):
        installer.choose_torch("linux", "x86_64", "cuda", env, tmp_path / "no-rocm")


def test_rocm_apple_and_overrides(tmp_path: Path) -> None:
    rocm = tmp_path / "rocm"
    (rocm / ".info").mkdir(parents=True)
    (rocm / ".info/version").write_text("6.3.2-100\n")
    env = {"PATH": str(tmp_path)}
    assert installer.choose_torch("linux", "x86_64", "auto", env, rocm).index_url.endswith("/rocm6.3")
    assert installer.choose_torch("windows", "AMD64", "auto", env, rocm).kind == "cpu"
    assert installer.choose_torch("macos", "arm64", "auto", env, rocm)[:2] == ("mps", None)
    assert installer.choose_torch("macos", "x86_64", "auto", env, rocm)[:2] == ("cpu", None)
    fake_smi(tmp_path, "12.8")
    assert installer.choose_torch("linux", "x86_64", "cpu", env, rocm).kind == "cpu"
    with pytest.raises(installer.InstallError, match="macOS"):
        installer.choose_torch("macos", "arm64", "cuda", env, rocm)
