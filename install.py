#!/usr/bin/env python3
"""Install GIMP Neural Style: the engine's Python environment, the VGG19 weights, the GIMP plug-ins.

    python3 install.py               # everything, for every GIMP profile found
    python3 install.py --dry-run     # print the plan, change nothing
    python3 install.py --uninstall   # remove exactly what earlier runs installed

Running it again upgrades in place and leaves alone whatever is already right.
Standard library only; see docs/install.md.
"""

# ruff: noqa: E402, UP010, UP031, UP032, B904
# This file must *parse* on Python 2.7 and 3.5 so that an old interpreter reaches the version
# check below and explains itself instead of dying with a SyntaxError: so no f-strings,
# annotations (type comments instead), keyword-only arguments or `raise ... from`, and the
# imports old Pythons lack come after the check.
from __future__ import print_function

import os
import sys

MIN_PYTHON = (3, 9)
ENGINE_MIN_PYTHON = (3, 10)  # pyproject.toml's requires-python for nst_core

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_OLD_PYTHON = 3
EXIT_DISK_SPACE = 4
EXIT_ENGINE = 5
EXIT_WEIGHTS = 6
EXIT_GIMP_NOT_WRITABLE = 7
EXIT_NO_GIMP = 8
EXIT_SELF_TEST = 9
EXIT_CANCELLED = 130

# Environment knobs for tests and unusual machines (documented in docs/install.md).
PYTHON_VERSION_ENV = "NST_INSTALL_PYTHON_VERSION"  # pose as another Python version
PLATFORM_ENV = "NST_INSTALL_PLATFORM"  # linux | windows | macos
MACHINE_ENV = "NST_INSTALL_MACHINE"  # a CPU name as platform.machine() gives it, e.g. arm64
FREE_BYTES_ENV = "NST_INSTALL_FREE_BYTES"  # pretend this much disk space is free
WEIGHTS_URL_ENV = "NST_WEIGHTS_URL"  # a mirror of the official VGG19 file


def running_python_version(environ):
    # type: (dict) -> tuple
    fake = environ.get(PYTHON_VERSION_ENV)
    if fake:
        return tuple(int(part) for part in fake.split(".")[:2])
    return tuple(sys.version_info[:2])


def refuse_old_python():
    # type: () -> None
    version = running_python_version(os.environ)
    if version < MIN_PYTHON:
        sys.stderr.write(
            "error: install.py needs Python {}.{} or newer and this is Python {}.{} ({}): install "
            "Python 3.10 or newer (python.org or your package manager) and run it with that one, "
            "e.g. `python3 install.py`.\n".format(
                MIN_PYTHON[0], MIN_PYTHON[1], version[0], version[1], sys.executable
            )
        )
        sys.exit(EXIT_OLD_PYTHON)


if __name__ == "__main__":
    refuse_old_python()

import argparse
import collections
import glob
import json
import platform
import re
import shlex
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO))  # nst_core.paths and nst_core.weights are stdlib-only: reuse them

from nst_core import paths, weights
from nst_core.errors import NstError

PLATFORMS = {"linux": "linux", "windows": "win32", "macos": "darwin"}  # ours -> sys.platform
MANIFEST_NAME = "install-manifest.json"
MANIFEST_VERSION = 1
CONFIG_VERSION = 1
GIMP_FLATPAK_ID = "org.gimp.GIMP"
FLATPAK_PERMISSION = "flatpak override --user --talk-name=org.freedesktop.Flatpak " + GIMP_FLATPAK_ID

# Where each GIMP generation loads our plug-in: <profile>/plug-ins/<folder>/<folder>.py (executable)
# plus the files matched by `sources` (globs relative to the checkout's plug-ins/ folder).
PluginLayout = collections.namedtuple("PluginLayout", "folder sources")
PLUGIN_LAYOUTS = {
    3: PluginLayout("neural_style", ("neural_style/*.py",)),
    2: PluginLayout("neural_style_gimp2", ("neural_style_gimp2/*.py", "neural_style/nst_bridge.py")),
}

# PyTorch's wheel indexes, newest first; a driver runs wheels built for its CUDA major version.
TORCH_INDEX = "https://download.pytorch.org/whl/"
CUDA_BUILDS = ((13, 0), (12, 8), (12, 6))
ROCM_BUILDS = ((6, 4), (6, 3))
GB = 1000**3
TORCH_DISK = {"cuda": 6 * GB, "rocm": 12 * GB, "cpu": 1 * GB, "mps": 1 * GB}
WEIGHTS_DISK = int(0.6 * GB)
PIP_TAIL_LINES = 15

SELF_TEST_SIZE = (48, 32)
SELF_TEST_OPTIONS = {"preset": "fast", "size": 32, "iterations": 3, "multiscale": False}
SELF_TEST_TIMEOUT = 600

TorchBuild = collections.namedtuple("TorchBuild", "kind index_url reason")
Profile = collections.namedtuple("Profile", "path version flatpak")
WeightsPlan = collections.namedtuple("WeightsPlan", "action source dest")  # keep|copy|reference|download


class InstallError(Exception):
    """A problem the user can fix: the message names it and the fix; `code` is the exit status."""

    def __init__(self, code, message):
        # type: (int, str) -> None
        Exception.__init__(self, message)
        self.code = code


# -- small helpers ---------------------------------------------------------------------------------


def say(text=""):
    # type: (str) -> None
    print(text)
    sys.stdout.flush()


def quoted(command):
    # type: (list) -> str
    parts = [str(part) for part in command]
    return subprocess.list2cmdline(parts) if os.name == "nt" else " ".join(shlex.quote(p) for p in parts)


def gigabytes(count):
    # type: (float) -> str
    return "{:.1f} GB".format(count / float(GB))


def child_env():
    # type: () -> dict
    """Our environment minus what would make another Python load the wrong modules."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


def run_quiet(command, timeout=300):
    # type: (list, float) -> subprocess.CompletedProcess
    """Run a helper program from a neutral folder (so a checkout in the cwd is not imported)."""
    return subprocess.run(
        [str(part) for part in command],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),
        env=child_env(),
        timeout=timeout,
    )


def last_line(text):
    # type: (str) -> str
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# -- where things go -------------------------------------------------------------------------------


def detect_platform(environ):
    # type: (dict) -> str
    forced = environ.get(PLATFORM_ENV)
    if forced:
        if forced not in PLATFORMS:
            raise InstallError(
                EXIT_USAGE,
                "{}={} is unknown: use one of {}.".format(PLATFORM_ENV, forced, ", ".join(PLATFORMS)),
            )
        return forced
    if sys.platform.startswith("win"):
        return "windows"
    return "macos" if sys.platform == "darwin" else "linux"


def home_dir(environ):
    # type: (dict) -> Path
    home = environ.get("HOME") or environ.get("USERPROFILE")
    return Path(home) if home else Path.home()


def gimp_config_roots(system, environ):
    # type: (str, dict) -> list
    """[(folder holding X.Y profiles, is_flatpak)] for `system`."""
    home = home_dir(environ)
    if system == "windows":
        appdata = environ.get("APPDATA")
        return [((Path(appdata) if appdata else home / "AppData" / "Roaming") / "GIMP", False)]
    if system == "macos":
        return [(home / "Library" / "Application Support" / "GIMP", False)]
    xdg = environ.get("XDG_CONFIG_HOME")
    config = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    flatpak = home / ".var" / "app" / GIMP_FLATPAK_ID / "config" / "GIMP"
    return [(config / "GIMP", False), (flatpak, True)]


def parse_gimp_version(name):
    # type: (str) -> tuple | None
    match = re.match(r"^(\d+)\.(\d+)$", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def supported_gimp(version):
    # type: (tuple) -> bool
    return version[0] == 3 or version == (2, 10)


def find_profiles(system, environ):
    # type: (str, dict) -> tuple
    """(supported profiles, folders of GIMP versions we cannot serve)."""
    found, unsupported = [], []
    for root, flatpak in gimp_config_roots(system, environ):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            version = parse_gimp_version(child.name)
            if version is None or not child.is_dir():
                continue
            if supported_gimp(version):
                found.append(Profile(child, version, flatpak))
            else:
                unsupported.append(child)
    return found, unsupported


def explicit_profiles(folders, version_text):
    # type: (list, str | None) -> list
    profiles = []
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        version = parse_gimp_version(version_text) if version_text else parse_gimp_version(path.name)
        if version is None:
            raise InstallError(
                EXIT_USAGE,
                "Cannot tell the GIMP version of {}: name the folder like 3.0 "
                "or pass --gimp-version 3.0 (or 2.10).".format(path),
            )
        if not supported_gimp(version):
            raise InstallError(
                EXIT_USAGE, "GIMP {}.{} is not supported: use GIMP 3.x or 2.10.".format(*version)
            )
        if not path.is_dir():
            raise InstallError(
                EXIT_GIMP_NOT_WRITABLE,
                "GIMP profile folder {} does not exist or is not a folder: start that GIMP once, "
                "or fix --gimp-dir.".format(path),
            )
        flatpak = (".var/app/" + GIMP_FLATPAK_ID + "/") in path.as_posix() + "/"
        profiles.append(Profile(path, version, flatpak))
    return profiles


def plugin_dir(profile):
    # type: (Profile) -> Path
    return profile.path / "plug-ins" / PLUGIN_LAYOUTS[profile.version[0]].folder


def check_writable(profile):
    # type: (Profile) -> None
    """Refuse a profile we could not finish writing, before anything is placed in it."""
    for folder in (profile.path / "plug-ins", plugin_dir(profile)):
        if folder.exists() and not folder.is_dir():
            raise InstallError(
                EXIT_GIMP_NOT_WRITABLE,
                "Cannot install into {}: {} is a file where a "
                "folder should be: move it away and run install.py "
                "again.".format(profile.path, folder),
            )
    existing = next(f for f in (plugin_dir(profile), profile.path / "plug-ins", profile.path) if f.exists())
    if not os.access(str(existing), os.W_OK | os.X_OK):
        raise InstallError(
            EXIT_GIMP_NOT_WRITABLE,
            "GIMP profile folder {} is not writable: fix its "
            "owner or permissions (GIMP once run with sudo?) or "
            "pick another with --gimp-dir.".format(existing),
        )


# -- the torch build -------------------------------------------------------------------------------


def nvidia_cuda_version(environ):
    # type: (dict) -> tuple | None
    """The CUDA version the NVIDIA driver supports, from nvidia-smi; None without a working driver."""
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if not smi:
        return None
    try:
        output = run_quiet([smi], timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+)\.(\d+)", output)
    return (int(match.group(1)), int(match.group(2))) if match else None


def rocm_version(environ, rocm_root):
    # type: (dict, Path) -> tuple | None
    """The installed ROCm version ((0, 0) when present but unversioned); None without ROCm."""
    version_file = rocm_root / ".info" / "version"
    if version_file.is_file():
        match = re.match(r"(\d+)\.(\d+)", version_file.read_text(errors="replace"))
        if match:
            return int(match.group(1)), int(match.group(2))
    if rocm_root.is_dir() or shutil.which("rocminfo", path=environ.get("PATH")):
        return (0, 0)
    return None


def pick_build(version, builds):
    # type: (tuple | None, tuple) -> tuple | None
    """The newest build not newer than `version`; else the oldest of its major version."""
    if version is None:
        return builds[0]
    for build in builds:
        if build <= version and build[0] == version[0]:
            return build
    same_major = [build for build in builds if build[0] == version[0]]
    return same_major[-1] if same_major else None


def cuda_build(version, forced):
    # type: (tuple | None, bool) -> TorchBuild | None
    build = pick_build(version, CUDA_BUILDS)
    if build is None:
        if forced:
            raise InstallError(
                EXIT_USAGE,
                "The NVIDIA driver supports CUDA {}.{} only, older than any "
                "current PyTorch build: update the driver, or use --torch cpu.".format(*version),
            )
        return None
    tag = "cu{}{}".format(*build)
    seen = "driver supports CUDA {}.{}".format(*version) if version else "asked for with --torch cuda"
    return TorchBuild(
        "cuda", TORCH_INDEX + tag, "NVIDIA GPU ({}): CUDA {}.{} build".format(seen, build[0], build[1])
    )


def choose_torch(system, machine, requested, environ, rocm_root=Path("/opt/rocm")):
    # type: (str, str, str, dict, Path) -> TorchBuild
    """Which torch build suits this machine, and where pip gets it (None = PyPI)."""
    if system == "macos":
        if requested in ("cuda", "rocm"):
            raise InstallError(
                EXIT_USAGE, "There is no {} torch for macOS: use --torch auto.".format(requested)
            )
        if machine.lower() in ("arm64", "aarch64"):
            return TorchBuild("mps", None, "Apple Silicon: PyPI's build with the Metal (MPS) backend")
        return TorchBuild("cpu", None, "Intel Mac: PyPI's CPU build")
    if requested == "rocm" and system != "linux":
        raise InstallError(EXIT_USAGE, "ROCm torch builds exist for Linux only: use --torch auto or cpu.")
    cpu = TorchBuild("cpu", TORCH_INDEX + "cpu", "no supported GPU found: CPU build (slow but works)")
    if requested == "cpu":
        return cpu._replace(reason="asked for with --torch cpu")
    if requested in ("auto", "cuda"):
        version = nvidia_cuda_version(environ)
        if version is not None or requested == "cuda":
            build = cuda_build(version, requested == "cuda")
            if build is not None:
                return build
            return cpu._replace(
                reason="NVIDIA driver too old for current PyTorch (update it for GPU speed): CPU build"
            )
    if system == "linux" and requested in ("auto", "rocm"):
        version = rocm_version(environ, rocm_root)
        if version is not None or requested == "rocm":
            build = pick_build(version if version and version != (0, 0) else None, ROCM_BUILDS)
            build = build or ROCM_BUILDS[0]
            return TorchBuild(
                "rocm",
                TORCH_INDEX + "rocm{}.{}".format(*build),
                "AMD GPU (ROCm): ROCm {}.{} build".format(*build),
            )
    return cpu


# Runs in the engine's Python (any version, even 2.7) and reports, as JSON, what is installed there,
# without importing it: importing torch takes seconds, so ENGINE_CHECK does that once, later.
PROBE = r"""
import json, os, re, sys
info = {"python": list(sys.version_info[:3])}
try:
    import importlib.util
    from importlib import metadata
except ImportError:
    print(json.dumps(info))
    sys.exit(0)
for module, dist in (("torch", "torch"), ("torchvision", "torchvision"), ("PIL", "pillow"),
                     ("numpy", "numpy"), ("nst_core", "gimp-neural-style")):
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        info[module] = {"error": "No module named %s" % module}
        continue
    try:
        version = metadata.version(dist)
    except Exception:
        version = "?"
    info[module] = {"version": version, "file": spec.origin}
if "file" in info["torch"]:
    with open(os.path.join(os.path.dirname(info["torch"]["file"]), "version.py")) as handle:
        text = handle.read()
    for name in ("cuda", "hip"):
        found = re.search(r"^%s\s*(?::[^=\n]*)?=\s*'([^']*)'" % name, text, re.M)
        info["torch"][name] = found.group(1) if found else None
print(json.dumps(info))
"""

# Imports torch for real (a missing CUDA library shows here) and loads a weights file the way the
# engine does. Exit 3: torch is broken; exit 4: the weights are unusable (one line on stderr).
ENGINE_CHECK = r"""
import sys
try:
    import torch, torchvision
except Exception as exc:
    sys.stderr.write("%s: %s\n" % (type(exc).__name__, exc))
    sys.exit(3)
if len(sys.argv) > 1:
    from nst_core.errors import NstError
    from nst_core.network import load_features
    try:
        load_features("vgg19", sys.argv[1])
    except NstError as error:
        sys.stderr.write(error.message + "\n")
        sys.exit(4)
"""


def venv_python(venv, system):
    # type: (Path, str) -> Path
    return venv / "Scripts" / "python.exe" if system == "windows" else venv / "bin" / "python"


def probe_python(python):
    # type: (Path) -> dict | None
    """What `python` can import; None when it is not a working Python."""
    try:
        result = run_quiet([python, "-c", PROBE], timeout=300)
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def package_files(folder):
    # type: (Path) -> dict
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def nst_core_current(probe):
    # type: (dict) -> bool
    """True when the engine's nst_core has exactly the checkout's sources (editable or copied)."""
    module_file = probe.get("nst_core", {}).get("file")
    if not module_file:
        return False
    installed = Path(module_file).parent
    source = REPO / "nst_core"
    return installed.resolve() == source.resolve() or package_files(installed) == package_files(source)


def torch_build_fits(probe, build):
    # type: (dict, TorchBuild) -> bool
    torch = probe.get("torch", {})
    if "version" not in torch or "version" not in probe.get("torchvision", {}):
        return False
    if build.kind == "cuda":
        return bool(torch.get("cuda"))
    if build.kind == "rocm":
        return bool(torch.get("hip"))
    return True  # any build runs on the CPU (or MPS)


def import_problems(probe, names):
    # type: (dict, tuple) -> list
    return ["{} ({})".format(name, probe[name]["error"]) for name in names if "error" in probe.get(name, {})]


def check_existing_python(python):
    # type: (Path) -> dict
    """--engine-python must be a Python new enough, with torch, torchvision, Pillow and NumPy."""
    probe = probe_python(python)
    if probe is None:
        raise InstallError(
            EXIT_ENGINE,
            "--engine-python {} is not a working Python: give the path of the python executable "
            "of an environment with torch.".format(python),
        )
    version = tuple(probe["python"][:2])
    if version < ENGINE_MIN_PYTHON:
        raise InstallError(
            EXIT_ENGINE,
            "--engine-python {} is Python {}.{}; the engine needs {}.{} or "
            "newer: pick another, or leave out --engine-python.".format(
                python, version[0], version[1], *ENGINE_MIN_PYTHON
            ),
        )
    missing = import_problems(probe, ("torch", "torchvision", "PIL", "numpy"))
    if missing:
        raise InstallError(
            EXIT_ENGINE,
            "--engine-python {} cannot import {}: install them there first (python -m pip install "
            "torch torchvision pillow numpy), or leave out --engine-python to let install.py make "
            "its own environment.".format(python, "; ".join(missing)),
        )
    return probe


def engine_base_python(environ):
    # type: (dict) -> str
    """A Python new enough for the engine to build its venv from: this one, or one on PATH."""
    if tuple(sys.version_info[:2]) >= ENGINE_MIN_PYTHON:
        return sys.executable
    for minor in range(20, ENGINE_MIN_PYTHON[1] - 1, -1):
        found = shutil.which("python3.{}".format(minor), path=environ.get("PATH"))
        if found:
            return found
    raise InstallError(
        EXIT_OLD_PYTHON,
        "The engine needs Python {}.{} or newer and none was found: install "
        "one (python.org or your package manager) and run install.py with it.".format(*ENGINE_MIN_PYTHON),
    )


def pip_install(python, arguments, what):
    # type: (Path, list, str) -> None
    """Run pip, echoing its output; on failure show its last lines and the command to retry."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check"] + arguments
    say("  installing {}: {}".format(what, quoted(command)))
    tail = collections.deque(maxlen=PIP_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        env=child_env(),
        cwd=tempfile.gettempdir(),
    )
    for line in process.stdout:
        tail.append(line.rstrip())
        say("    | " + line.rstrip())
    if process.wait() != 0:
        raise InstallError(
            EXIT_ENGINE,
            "pip could not install {} (exit {}). Its last lines:\n{}\nFix the "
            "cause (network, proxy, disk space, Python version) and retry with:\n"
            "  {}\nthen run install.py again.".format(
                what, process.returncode, "\n".join("  " + t for t in tail), quoted(command)
            ),
        )


def project_name():
    # type: () -> str
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    return re.search(r'^name\s*=\s*"([^"]+)"', text, re.M).group(1)


class Manifest:
    """What the installer created, so that --uninstall removes exactly that and nothing else."""

    KINDS = ("files", "dirs", "trees", "pip", "checked")

    def __init__(self, path):
        # type: (Path) -> None
        self.path = path
        self.data = {"version": MANIFEST_VERSION}  # type: dict
        if path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                raise InstallError(
                    EXIT_INTERNAL,
                    "The install record {} is damaged: delete it and run install.py again.".format(path),
                )
        for kind in self.KINDS:
            self.data.setdefault(kind, [])

    def add(self, kind, value):
        # type: (str, object) -> None
        value = value if isinstance(value, list) else str(value)
        if value not in self.data[kind]:
            self.data[kind].append(value)
            self.save()

    def discard(self, kind, value):
        # type: (str, str) -> None
        if str(value) in self.data[kind]:
            self.data[kind].remove(str(value))
            self.save()

    def save(self):
        # type: () -> None
        write_if_changed(self.path, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def make_dirs(folder, manifest):
    # type: (Path, Manifest) -> None
    """mkdir -p that records each level it creates."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        level.mkdir()
    for level in reversed(missing):  # after the mkdirs: the manifest itself may live in the deepest one
        manifest.add("dirs", level)


def write_if_changed(path, content, mode):
    # type: (Path, bytes, int) -> bool
    """Write atomically unless the file already holds `content`; fix a wrong mode in place."""
    if path.is_file() and path.read_bytes() == content:
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
            return True
        return False
    temporary = path.with_name("." + path.name + ".new-{}".format(os.getpid()))
    temporary.write_bytes(content)
    temporary.chmod(mode)
    os.replace(str(temporary), str(path))
    return True


# -- the plan --------------------------------------------------------------------------------------


class Installer:
    """One run: preflight checks and a printed plan first, then the steps; every change is recorded."""

    def __init__(self, args, environ):
        # type: (argparse.Namespace, dict) -> None
        self.args = args
        self.environ = environ
        self.system = args.platform or detect_platform(environ)
        sys_name = PLATFORMS[self.system]
        if args.prefix:
            self.data_dir = Path(args.prefix).expanduser().resolve()
        else:
            self.data_dir = paths.data_dir(sys_name, environ)
        # weights.verify keeps its hash cache in the data folder: make it ours (for this run and the engine).
        os.environ[paths.DATA_DIR_ENV] = str(self.data_dir)
        paths_env = {paths.DATA_DIR_ENV: str(self.data_dir)}
        self.venv = paths.venv_dir(sys_name, paths_env)
        self.weights_dir = paths.weights_dir(sys_name, paths_env)
        self.manifest = Manifest(self.data_dir / MANIFEST_NAME)
        self.changes = []  # type: list
        self.engine_python = None  # type: Path | None
        self.weights_path = None  # type: Path | None
        self.weights_to_load = None  # type: Path | None

    def changed(self, text):
        # type: (str) -> None
        self.changes.append(text)
        say("  " + text)

    # preflight -------------------------------------------------------------------------------------------

    def plan(self):
        # type: () -> dict
        args = self.args
        if args.gimp_dir:
            profiles, unsupported = explicit_profiles(args.gimp_dir, args.gimp_version), []
        else:
            profiles, unsupported = find_profiles(self.system, self.environ)
        for profile in profiles:
            check_writable(profile)
        engine = self.plan_engine()
        weights_plan = self.plan_weights()
        need = engine["disk"] + (WEIGHTS_DISK if weights_plan.action in ("download", "copy") else 0)
        return {
            "profiles": profiles,
            "unsupported": unsupported,
            "engine": engine,
            "weights": weights_plan,
            "disk": need,
        }

    def plan_engine(self):
        # type: () -> dict
        if self.args.engine_python:
            python = Path(os.path.abspath(str(Path(self.args.engine_python).expanduser())))
            return {"mode": "existing", "python": python, "probe": check_existing_python(python), "disk": 0}
        python = venv_python(self.venv, self.system)
        build = choose_torch(
            self.system, self.environ.get(MACHINE_ENV) or platform.machine(), self.args.torch, self.environ
        )
        if self.args.index_url:
            build = build._replace(index_url=self.args.index_url, reason=build.reason + " (--index-url)")
        probe = probe_python(python) if python.is_file() else None
        needs_torch = probe is None or not torch_build_fits(probe, build)
        return {
            "mode": "venv",
            "python": python,
            "build": build,
            "probe": probe,
            "disk": TORCH_DISK[build.kind] if needs_torch else 0,
        }

    def plan_weights(self):
        # type: () -> WeightsPlan
        entry = weights.official("vgg19")
        dest = self.weights_dir / entry.filename
        if self.args.weights:
            source = Path(self.args.weights).expanduser().resolve()
            if not source.is_file():
                raise InstallError(
                    EXIT_WEIGHTS,
                    "Weights file {} not found: check the path given with --weights.".format(source),
                )
            if source == dest:
                return WeightsPlan("keep", source, dest)
            if weights.official_for_file(source) is not None:
                return WeightsPlan("copy", source, dest)
            return WeightsPlan("reference", source, source)
        if dest.is_file():
            return WeightsPlan("keep", dest, dest)
        cached = paths.torch_hub_checkpoints(self.environ) / entry.filename
        if cached.is_file():
            return WeightsPlan("reference", cached, cached)
        return WeightsPlan("download", self.environ.get(WEIGHTS_URL_ENV) or entry.url, dest)

    def check_disk(self, need):
        # type: (int) -> None
        if not need:
            return
        folder = self.data_dir
        while not folder.exists():
            folder = folder.parent
        forced = self.environ.get(FREE_BYTES_ENV)
        free = int(forced) if forced else shutil.disk_usage(str(folder)).free
        if free < need:
            raise InstallError(
                EXIT_DISK_SPACE,
                "Not enough disk space in {}: the install needs about {} and {} is free: free some "
                "space, or install elsewhere with --prefix DIR (a CPU-only torch, --torch cpu, needs "
                "about {}).".format(
                    folder, gigabytes(need), gigabytes(free), gigabytes(TORCH_DISK["cpu"] + WEIGHTS_DISK)
                ),
            )

    def print_plan(self, plan):
        # type: (dict) -> None
        engine, weights_plan = plan["engine"], plan["weights"]
        say("GIMP Neural Style installer ({}, data folder {})".format(self.system, self.data_dir))
        if engine["mode"] == "existing":
            say(
                "  engine: the existing Python {} (nst_core goes into it if missing or outdated)".format(
                    engine["python"]
                )
            )
        else:
            build = engine["build"]
            say("  engine: virtual environment {}".format(self.venv))
            say("  torch: {} build from {} ({})".format(build.kind, build.index_url or "PyPI", build.reason))
        say("  weights: {}".format(describe_weights(weights_plan)))
        for profile in plan["profiles"]:
            say(
                "  GIMP {}.{}{}: plug-in into {}".format(
                    profile.version[0],
                    profile.version[1],
                    " (Flatpak)" if profile.flatpak else "",
                    plugin_dir(profile),
                )
            )
        for folder in plan["unsupported"]:
            say("  skipped {}: only GIMP 3.x and 2.10 are supported".format(folder))
        if not plan["profiles"]:
            say("  GIMP: no profile found (plug-ins would go to {})".format(self.where_plugins_would_go()))
        if plan["disk"]:
            say("  disk: about {} needed".format(gigabytes(plan["disk"])))

    def no_gimp_error(self):
        # type: () -> InstallError
        return InstallError(EXIT_NO_GIMP, no_gimp_message(self.where_plugins_would_go(), self.args.dry_run))

    def where_plugins_would_go(self):
        # type: () -> str
        root = gimp_config_roots(self.system, self.environ)[0][0]
        return str(root / "3.0" / "plug-ins" / PLUGIN_LAYOUTS[3].folder)

    # the steps -------------------------------------------------------------------------------------------

    def run(self):
        # type: () -> int
        plan = self.plan()
        self.print_plan(plan)
        self.check_disk(plan["disk"])
        if not plan["profiles"] and self.args.dry_run:
            raise self.no_gimp_error()
        if self.args.dry_run:
            say("Dry run: nothing was changed.")
            return EXIT_OK
        say()
        make_dirs(self.data_dir, self.manifest)
        self.manifest.add("files", self.data_dir / weights.STAMP_NAME)  # the engine's hash cache
        self.setup_engine(plan["engine"])
        self.setup_weights(plan["weights"])
        self.check_engine()
        description = self.describe_engine()
        if not self.args.skip_self_test:
            self.self_test()
        for profile in plan["profiles"]:
            self.install_plugin(profile, description)
        self.summary(plan)
        if not plan["profiles"]:
            raise self.no_gimp_error()
        return EXIT_OK

    def setup_engine(self, engine):
        # type: (dict) -> None
        say("Engine")
        if engine["mode"] == "existing":
            self.use_existing_python(engine["python"], engine["probe"])
            return
        python, build = engine["python"], engine["build"]
        probe = engine["probe"]
        if probe is None:
            base = engine_base_python(self.environ)
            created = not self.venv.exists()
            self.changed("creating the virtual environment {}".format(self.venv))
            make_dirs(self.venv.parent, self.manifest)
            result = run_quiet([base, "-m", "venv", "--clear", self.venv], timeout=600)
            if created:
                self.manifest.add("trees", self.venv)
            if result.returncode != 0 or not python.is_file():
                raise InstallError(
                    EXIT_ENGINE,
                    "Cannot create the virtual environment {}: {}: on Debian or "
                    "Ubuntu install python3-venv, then run install.py again.".format(
                        self.venv, last_line(result.stderr + result.stdout)
                    ),
                )
            probe = probe_python(python) or {}
        if not torch_build_fits(probe, build):
            if "version" in probe.get("torch", {}):
                run_quiet([python, "-m", "pip", "uninstall", "-y", "torch", "torchvision"])
            index = ["--index-url", build.index_url] if build.index_url else []
            pip_install(python, ["torch", "torchvision"] + index, "torch ({})".format(build.kind))
            self.changes.append("torch installed")
            probe = probe_python(python) or {}
        if not self.nst_core_right(probe) or import_problems(probe, ("PIL", "numpy")):
            pip_install(python, self.nst_core_arguments(), "nst_core with Pillow and NumPy")
            self.changes.append("nst_core installed")
        else:
            say("  torch {}, nst_core up to date in {}".format(probe["torch"]["version"], self.venv))
        self.engine_python = python

    def nst_core_arguments(self):
        # type: () -> list
        return ["-e", str(REPO)] if self.args.dev else [str(REPO)]

    def use_existing_python(self, python, probe):
        # type: (Path, dict) -> None
        if self.nst_core_right(probe):
            say("  nst_core up to date in {} (torch {})".format(python, probe["torch"]["version"]))
        else:
            self.engine_python = python
            self.check_engine()  # torch must really import there before we add to that environment
            pip_install(python, ["--no-deps"] + self.nst_core_arguments(), "nst_core")
            self.manifest.add("pip", python)
            self.changes.append("nst_core installed into {}".format(python))
        self.engine_python = python

    def nst_core_right(self, probe):
        # type: (dict) -> bool
        """The checkout's nst_core is there (and, with --dev, as the checkout itself)."""
        if not nst_core_current(probe):
            return False
        editable = Path(probe["nst_core"]["file"]).parent.resolve() == (REPO / "nst_core").resolve()
        return editable or not self.args.dev

    def engine(self, *arguments):
        # type: (str) -> subprocess.CompletedProcess
        return run_quiet([self.engine_python, "-m", "nst_core"] + list(arguments), timeout=SELF_TEST_TIMEOUT)

    def setup_weights(self, plan):
        # type: (WeightsPlan) -> None
        say("Weights")
        try:
            if plan.action == "download":
                self.download_weights(plan.source, plan.dest)
            elif plan.action == "copy":
                weights.verify(plan.source, "vgg19")
                self.copy_weights(plan.source, plan.dest)
            elif weights.official_for_file(plan.dest):
                weights.verify(plan.dest, "vgg19")
                say("  {} present and verified".format(plan.dest))
            else:
                self.weights_to_load = self.unchecked_user_weights(plan.dest)
        except NstError as exc:
            raise InstallError(EXIT_WEIGHTS, exc.message)
        self.weights_path = plan.dest

    def download_weights(self, url, dest):
        # type: (str, Path) -> None
        make_dirs(dest.parent, self.manifest)
        self.manifest.add("files", dest.with_name(dest.name + ".part"))
        say("  downloading {}".format(url))
        try:
            weights.download(url, dest, weights.official("vgg19").sha256, DownloadProgress())
        except NstError as exc:
            raise InstallError(
                EXIT_WEIGHTS,
                "{} Without network here: download {} elsewhere, copy it to "
                "this machine and run `python3 install.py --weights FILE`.".format(
                    exc.message, weights.official("vgg19").url
                ),
            )
        self.manifest.add("files", dest)
        self.changed("downloaded and verified {}".format(dest))

    def copy_weights(self, source, dest):
        # type: (Path, Path) -> None
        if dest.is_file() and dest.stat().st_size == source.stat().st_size:
            try:
                weights.verify(dest, "vgg19")
                say("  {} present and verified".format(dest))
                return
            except NstError:
                pass
        make_dirs(dest.parent, self.manifest)
        # Copied, not referenced: the official file belongs in the data folder, where the engine
        # looks by default, and the install keeps working if the download is moved or deleted.
        temporary = dest.with_name(dest.name + ".part")
        shutil.copyfile(str(source), str(temporary))
        os.replace(str(temporary), str(dest))
        self.manifest.add("files", dest)
        self.changed("copied the verified {} to {}".format(source, dest))

    def unchecked_user_weights(self, path):
        # type: (Path) -> Path | None
        """A file of the user's own has no hash to compare: the engine must load it (once per version)."""
        # Referenced in place, not copied: it is the user's file, and uninstall must not touch it.
        if self.weights_stamp(path) in self.manifest.data["checked"]:
            say("  using {} where it is (the engine loaded it before; unchanged since)".format(path))
            return None
        return path

    @staticmethod
    def weights_stamp(path):
        # type: (Path) -> list
        return [str(path), path.stat().st_size, path.stat().st_mtime_ns]

    def check_engine(self):
        # type: () -> None
        """Import torch for real, and load the user's own weights file if there is one to check."""
        extra = [str(self.weights_to_load)] if self.weights_to_load else []
        result = run_quiet([self.engine_python, "-c", ENGINE_CHECK] + extra, timeout=SELF_TEST_TIMEOUT)
        problem = last_line(result.stderr + result.stdout)
        if result.returncode == 4:
            raise InstallError(
                EXIT_WEIGHTS,
                "The engine cannot use {}: {} Pass VGG19 weights in "
                "torchvision's format with --weights, or leave it out to "
                "download the official file.".format(self.weights_to_load, problem),
            )
        if result.returncode != 0:
            raise InstallError(
                EXIT_ENGINE,
                "torch does not work in {} ({}): run install.py again to repair "
                "it (or fix that environment, for --engine-python).".format(self.engine_python, problem),
            )
        if self.weights_to_load:
            path = str(self.weights_to_load)
            self.manifest.data["checked"] = [s for s in self.manifest.data["checked"] if s[0] != path]
            self.manifest.add("checked", self.weights_stamp(self.weights_to_load))
            say("  using {} where it is (the engine loads it)".format(path))

    def describe_engine(self):
        # type: () -> dict
        result = self.engine("describe", "--json")
        try:
            if result.returncode == 0:
                return json.loads(result.stdout)
        except ValueError:
            pass
        raise InstallError(
            EXIT_ENGINE,
            "The engine does not start ({}): run install.py again; if it persists, report this line.".format(
                last_line(result.stderr + result.stdout)
            ),
        )

    def self_test(self):
        # type: () -> None
        say("Self-test")
        info = engine_info(self.engine("info", "--json"))
        start = time.time()
        outcome = run_self_test(self.engine_python, self.weights_path)
        seconds = time.time() - start
        device = outcome.get("device") or info.get("device", "?")
        on_cpu = info.get("type") == "cpu" and "threads" in info
        threads = ", {} threads".format(info["threads"]) if on_cpu else ""
        say("  device: {}{}{}".format(device, threads, memory_text(info)))
        say(
            "  a {}x{} test picture, {} iterations: {:.1f} s, starting the engine included".format(
                SELF_TEST_SIZE[0], SELF_TEST_SIZE[1], SELF_TEST_OPTIONS["iterations"], seconds
            )
        )

    def install_plugin(self, profile, description):
        # type: (Profile, dict) -> None
        say(
            "GIMP {}.{}{} ({})".format(
                profile.version[0], profile.version[1], ", Flatpak" if profile.flatpak else "", profile.path
            )
        )
        target = plugin_dir(profile)
        files = plugin_files(PLUGIN_LAYOUTS[profile.version[0]])
        config = {
            "version": CONFIG_VERSION,
            "python": str(Path(os.path.abspath(str(self.engine_python)))),
            "weights": str(self.weights_path),
            "engine": description,
            "flatpak": profile.flatpak,
        }
        files["nst_config.json"] = ((json.dumps(config, indent=2, sort_keys=True) + "\n").encode(), 0o644)
        make_dirs(target.parent, self.manifest)
        try:
            written = place_files(target, files, self.manifest)
        except OSError as exc:
            raise InstallError(
                EXIT_GIMP_NOT_WRITABLE,
                "Cannot write the plug-in into {} ({}): fix the "
                "folder's permissions or pick another profile with "
                "--gimp-dir.".format(target, exc.strerror or exc),
            )
        for name in written:
            self.changed("wrote {}".format(target / name))
        if not written:
            say("  plug-in up to date in {}".format(target))
        if profile.flatpak:
            say("  Flatpak GIMP: allow it to start the engine outside its sandbox, once:")
            say("    " + FLATPAK_PERMISSION)

    def summary(self, plan):
        # type: (dict) -> None
        say()
        say("Summary")
        say("  engine Python: {}".format(self.engine_python))
        say("  weights: {}".format(self.weights_path))
        for profile in plan["profiles"]:
            say("  plug-in: {}".format(plugin_dir(profile)))
        say("  install record: {}".format(self.manifest.path))
        if not self.changes:
            say("Nothing changed: everything was already installed and up to date.")
        if plan["profiles"]:
            say("Start GIMP (restart it if it is running) and open Filters > Neural Style...")
        uninstall = "python3 install.py --uninstall"
        if self.args.prefix:
            uninstall += " --prefix " + shlex.quote(str(self.data_dir))
        say("To uninstall: " + uninstall)


def describe_weights(plan):
    # type: (WeightsPlan) -> str
    if plan.action == "download":
        return "download {} to {} (checked against its SHA-256)".format(plan.source, plan.dest)
    if plan.action == "copy":
        return "copy {} to {} after checking its SHA-256".format(plan.source, plan.dest)
    if plan.action == "reference":
        return "use {} where it is (checked by the engine)".format(plan.source)
    return "{} (already there)".format(plan.dest)


def no_gimp_message(where, dry_run):
    # type: (str, bool) -> str
    done = "no plug-in would be placed" if dry_run else "the engine is ready, but no plug-in was placed"
    return (
        "No GIMP 3.x or 2.10 profile found: {}. Start GIMP once so that it makes its profile folder "
        "and run install.py again, or name the folder with --gimp-dir DIR (e.g. --gimp-dir {}).".format(
            done, Path(where).parents[1]
        )
    )


# -- plug-in files ---------------------------------------------------------------------------------


def plugin_files(layout):
    # type: (PluginLayout) -> dict
    """{file name: (content, mode)} of one plug-in folder; the entry point is executable."""
    files = {}
    for pattern in layout.sources:
        for source in sorted(glob.glob(str(REPO / "plug-ins" / pattern))):
            files[os.path.basename(source)] = Path(source).read_bytes()
    main = layout.folder + ".py"
    if main not in files:
        raise InstallError(
            EXIT_INTERNAL,
            "This checkout lacks plug-ins/{}/{}: update it (git pull) and run install.py again.".format(
                layout.folder, main
            ),
        )
    return {name: (content, 0o755 if name == main else 0o644) for name, content in files.items()}


def place_files(target, files, manifest):
    # type: (Path, dict, Manifest) -> list
    """Bring `target` to exactly `files`; a new folder appears whole (staged, then renamed)."""
    if not target.exists():
        stage = Path(tempfile.mkdtemp(prefix="." + target.name + ".staging-", dir=str(target.parent)))
        try:
            for name, (content, mode) in files.items():
                write_if_changed(stage / name, content, mode)
            stage.chmod(0o755)
            os.rename(str(stage), str(target))
        except OSError:
            shutil.rmtree(str(stage), ignore_errors=True)
            raise
        manifest.add("dirs", target)
        for name in files:
            manifest.add("files", target / name)
        return sorted(files)
    written = [
        name
        for name, (content, mode) in sorted(files.items())
        if write_if_changed(target / name, content, mode)
    ]
    for name in written:
        manifest.add("files", target / name)
    for old in [Path(p) for p in manifest.data["files"] if Path(p).parent == target]:
        if old.name not in files and old.is_file():
            old.unlink()  # shipped by an earlier version, gone from this one
            manifest.discard("files", old)
            written.append(old.name + " (removed)")
    return written


# -- self-test -------------------------------------------------------------------------------------


def png_bytes(width, height, pixel):
    # type: (int, int, object) -> bytes
    """A minimal RGB PNG; `pixel(x, y)` gives (r, g, b) in 0..255."""
    rows = b"".join(
        b"\x00" + bytes(bytearray(c for x in range(width) for c in pixel(x, y))) for y in range(height)
    )

    def chunk(kind, data):
        # type: (bytes, bytes) -> bytes
        checksum = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def png_size(path):
    # type: (Path) -> tuple
    head = path.read_bytes()[:24]
    return struct.unpack(">II", head[16:24]) if head.startswith(b"\x89PNG") else (0, 0)


def run_self_test(python, weights_path):
    # type: (Path, Path) -> dict
    """Stylise a small generated picture through the real job protocol; the `start` event's fields."""
    width, height = SELF_TEST_SIZE
    folder = Path(tempfile.mkdtemp(prefix="nst-install-test-"))
    try:
        (folder / "content.png").write_bytes(png_bytes(width, height, lambda x, y: (x * 5, y * 7, 128)))
        (folder / "style.png").write_bytes(png_bytes(32, 32, lambda x, y: ((x * y) % 256, 255 * (x % 2), 40)))
        options = dict(SELF_TEST_OPTIONS, weights=str(weights_path))
        job = {
            "version": 1,
            "content": {"path": "content.png"},
            "styles": [{"path": "style.png"}],
            "options": options,
            "output": {"path": "result.png"},
        }
        (folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
        events, stderr = follow_job(python, folder)
        last = events[-1] if events else {}
        if last.get("event") != "done" or png_size(folder / "result.png") != (width, height):
            problem = last.get("message") or last_line(stderr)
            raise InstallError(
                EXIT_SELF_TEST,
                "The self-test failed: {} (the engine ran with {}); fix that "
                "and run install.py again, or --skip-self-test to place the "
                "plug-ins anyway.".format(problem, python),
            )
        return next((e for e in events if e.get("event") == "start"), {})
    finally:
        shutil.rmtree(str(folder), ignore_errors=True)


def follow_job(python, folder):
    # type: (Path, Path) -> tuple
    """Run a job and collect its JSON events; stdin stays open (the engine stops at its end)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        process = subprocess.Popen(
            [str(python), "-m", "nst_core", "run-job", "job.json"],
            cwd=str(folder),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            universal_newlines=True,
            env=child_env(),
        )
        watchdog = threading.Timer(SELF_TEST_TIMEOUT, process.kill)  # a hung engine must not hang us
        watchdog.start()
        events = []
        for line in process.stdout:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        process.wait()
        watchdog.cancel()
        process.stdin.close()
        errors.seek(0)
        return events, errors.read()


def engine_info(result):
    # type: (subprocess.CompletedProcess) -> dict
    try:
        info = json.loads(result.stdout)
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def memory_text(info):
    # type: (dict) -> str
    """`info --json`'s memory fields (bytes; None where the device does not say)."""
    total, free = info.get("total_memory"), info.get("free_memory")
    if not total:
        return ""
    return (
        ", {} memory ({} free)".format(gigabytes(total), gigabytes(free))
        if free
        else ", {} memory".format(gigabytes(total))
    )


class DownloadProgress:
    """A progress bar on a terminal, a line per tenth otherwise (logs stay short)."""

    def __init__(self):
        # type: () -> None
        self.shown = -1
        self.tty = sys.stdout.isatty()

    def __call__(self, done, total):
        # type: (int, int | None) -> None
        if not total:
            return
        percent = done * 100 // total
        step = percent if self.tty else percent // 10 * 10
        if step == self.shown:
            return
        self.shown = step
        bar = "#" * (percent // 4) + "-" * (25 - percent // 4)
        text = "  [{}] {:3d}% of {}".format(bar, percent, gigabytes(total))
        if self.tty:
            sys.stdout.write("\r" + text + ("\n" if done >= total else ""))
            sys.stdout.flush()
        else:
            say(text)


# -- uninstall -------------------------------------------------------------------------------------


def uninstall(manifest):
    # type: (Manifest) -> int
    if not manifest.path.is_file():
        say(
            "Nothing to uninstall: no install record at {} (pass the --prefix used to install).".format(
                manifest.path
            )
        )
        return EXIT_OK
    data = manifest.data
    package = project_name()
    for python in data["pip"]:
        if Path(python).is_file():
            say("removing {} from {}".format(package, python))
            run_quiet([python, "-m", "pip", "uninstall", "-y", package])
    for tree in data["trees"]:
        if Path(tree).is_dir():
            say("removing {}".format(tree))
            shutil.rmtree(tree)
    for name in data["files"]:
        if Path(name).is_file():
            say("removing {}".format(name))
            Path(name).unlink()
    manifest.path.unlink()
    kept = []
    for folder in sorted((Path(d) for d in data["dirs"]), key=lambda p: len(p.parts), reverse=True):
        shutil.rmtree(str(folder / "__pycache__"), ignore_errors=True)  # left by GIMP's Python
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            kept.append(folder)
    for folder in kept:
        say("kept {}: it holds files install.py did not put there".format(folder))
    say("Uninstalled.")
    return EXIT_OK


# -- command line ----------------------------------------------------------------------------------


def parse_args(argv):
    # type: (list) -> argparse.Namespace
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install (or upgrade, or remove) GIMP Neural Style: the engine's "
        "Python environment, the VGG19 weights and the GIMP plug-ins. See docs/install.md.",
    )
    parser.add_argument(
        "--prefix",
        help="data folder for the engine's environment and weights (default: the per-user data folder)",
    )
    parser.add_argument(
        "--torch",
        choices=("auto", "cpu", "cuda", "rocm"),
        default="auto",
        help="torch build (default: auto-detect the GPU)",
    )
    parser.add_argument("--index-url", help="pip index for torch and torchvision (overrides --torch's)")
    parser.add_argument(
        "--engine-python",
        metavar="PATH",
        help="use this existing Python (with torch and torchvision) instead of a new venv",
    )
    parser.add_argument("--dev", action="store_true", help="install nst_core editable from this checkout")
    parser.add_argument("--weights", metavar="FILE", help="VGG19 weights file you already have")
    parser.add_argument(
        "--gimp-dir",
        metavar="DIR",
        action="append",
        help="GIMP profile folder to install into (e.g. ~/.config/GIMP/3.0); repeatable",
    )
    parser.add_argument(
        "--gimp-version", metavar="X.Y", help="GIMP version of --gimp-dir when its name does not say"
    )
    parser.add_argument("--skip-self-test", action="store_true", help="do not run the engine on a test image")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    parser.add_argument("--uninstall", action="store_true", help="remove what earlier runs installed")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None):
    # type: (list | None) -> int
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        installer = Installer(args, dict(os.environ))
        if args.uninstall:
            return uninstall(installer.manifest)
        return installer.run()
    except InstallError as exc:
        sys.stderr.write("error: {}\n".format(exc))
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; run install.py again to finish (it resumes).\n")
        return EXIT_CANCELLED
    except OSError as exc:  # a folder we may not write, a full disk: no traceback for those
        sys.stderr.write(
            "error: {} ({}): check that folder's permissions and the free disk space, "
            "then run install.py again.\n".format(exc.strerror or exc, exc.filename or "?")
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
