"""The engine's Python: what it holds (probed without importing torch), pip, the import and weights
check, the engine's own commands, and the self-test, which runs a job as GIMP does."""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .checkout import REPO, nst_bridge, nst_common, paths, project
from .errors import EXIT_ENGINE, EXIT_OLD_PYTHON, EXIT_SELF_TEST, EXIT_WEIGHTS, InstallError
from .system import last_line, quoted, run_quiet, say
from .torch_build import TorchBuild, satisfies

PIP_TAIL_LINES = 15
ENGINE_TIMEOUT = 600  # a hung engine must not hang the installer
SELF_TEST_SIZE = (48, 32)
SELF_TEST_OPTIONS = {"preset": "fast", "size": 32, "iterations": 3, "multiscale": False}

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
for module, dist in json.loads(sys.argv[1]):
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        info[module] = {"error": "No module named %s" % module}
        continue
    try:
        version = metadata.version(dist)
    except Exception:
        version = "?"
    info[module] = {"version": version, "file": spec.origin}
if "file" in info.get("torch", {}):
    with open(os.path.join(os.path.dirname(info["torch"]["file"]), "version.py")) as handle:
        text = handle.read()
    for name in ("cuda", "hip"):
        found = re.search(r"^%s\s*(?::[^=\n]*)?=\s*'([^']*)'" % name, text, re.M)
        info["torch"][name] = found.group(1) if found else None
print(json.dumps(info))
"""

# Imports torch for real (a missing CUDA library shows here) and loads a weights file the way the
# engine does, with the checkout's nst_core (it may not be installed there yet). Exit 3: torch is
# broken; exit 4: the weights are unusable (one line on stderr).
ENGINE_CHECK = r"""
import sys
try:
    import torch, torchvision
except Exception as exc:
    sys.stderr.write("%s: %s\n" % (type(exc).__name__, exc))
    sys.exit(3)
if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[1])
    from nst_core.errors import NstError
    from nst_core.network import load_features
    try:
        load_features(sys.argv[3], sys.argv[2])
    except NstError as error:
        sys.stderr.write(error.message + "\n")
        sys.exit(4)
"""


def venv_python(venv: Path, system: str) -> Path:
    return venv / "Scripts" / "python.exe" if system == "windows" else venv / "bin" / "python"


def probe_python(python: Path) -> dict | None:
    """What `python` can import (the engine's dependencies and nst_core); None if it is no working Python."""
    dists = [*project().modules, ("nst_core", project().name)]
    try:
        result = run_quiet([python, "-c", PROBE, json.dumps(dists)], timeout=300)
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def package_files(folder: Path) -> dict[str, bytes]:
    """The package's sources and its data (the bundled paintings): an engine lacking either is outdated."""
    files = [*folder.rglob("*.py"), *folder.glob("styles/*")]
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(files)
        if "__pycache__" not in path.parts
    }


def nst_core_current(probe: dict, dev: bool = False) -> bool:
    """The engine's nst_core has exactly the checkout's sources (with `dev`: it is the checkout itself)."""
    module_file = probe.get("nst_core", {}).get("file")
    if not module_file:
        return False
    installed, source = Path(module_file).parent.resolve(), (REPO / "nst_core").resolve()
    if installed == source:
        return True
    return not dev and package_files(installed) == package_files(source)


def torch_fits(probe: dict, build: TorchBuild) -> bool:
    """torch and torchvision (and what the build pins) are there, of the tested releases (or the build's
    pins), and built for `build`'s device."""
    for name in dict.fromkeys(["torch", "torchvision", *build.pinned]):
        version = probe.get(name, {}).get("version")
        if version is None or not satisfies(version, build.requirement(name)):
            return False
    torch = probe["torch"]
    if build.kind == "cuda":
        return bool(torch.get("cuda"))
    if build.kind == "rocm":
        return bool(torch.get("hip"))
    return True  # any build runs on the CPU (or MPS)


def import_problems(probe: dict, names: Sequence[str]) -> list[str]:
    return [f"{name} ({probe[name]['error']})" for name in names if "error" in probe.get(name, {})]


def check_existing_python(python: Path) -> dict:
    """--engine-python must be a Python new enough that imports what the engine needs."""
    probe = probe_python(python)
    if probe is None:
        raise InstallError(
            EXIT_ENGINE,
            f"--engine-python {python} is not a working Python: give the path of the python executable of an "
            "environment with torch.",
        )
    version, wanted = tuple(probe["python"][:2]), project().min_python
    if version < wanted:
        raise InstallError(
            EXIT_ENGINE,
            f"--engine-python {python} is Python {version[0]}.{version[1]}; the engine needs "
            f"{wanted[0]}.{wanted[1]} or newer: pick another, or leave out --engine-python.",
        )
    missing = import_problems(probe, project().imports)
    if missing:
        requirements = " ".join(f"'{r}'" for r in project().requirements)
        raise InstallError(
            EXIT_ENGINE,
            f"--engine-python {python} cannot import {'; '.join(missing)}: install them there first "
            f"(python -m pip install {requirements}), or leave out --engine-python to let install.py make "
            "its own environment.",
        )
    return probe


def base_python(
    environ: Mapping[str, str],
    running: tuple[int, int],
    executable: str,
    newest: tuple[int, int] | None = None,
) -> str:
    """A Python for the engine to build its venv from, new enough (and not newer than `newest`, where the
    torch build has no wheels for later ones): this one, or one on PATH. Never the Microsoft Store's."""
    wanted = project().min_python
    if running >= wanted and (newest is None or running <= newest) and not store_python(executable):
        return executable
    top = newest[1] if newest else 20
    for minor in range(top, wanted[1] - 1, -1):
        found = shutil.which(f"python3.{minor}", path=environ.get("PATH"))
        if found and not store_python(found):
            return found
    limit = (
        f" and at most {newest[0]}.{newest[1]} (the newest this machine's torch has wheels for)"
        if newest
        else ""
    )
    raise InstallError(
        EXIT_OLD_PYTHON,
        f"The engine needs Python {wanted[0]}.{wanted[1]} or newer{limit} and none was found: install one "
        "(python.org or your package manager) and run install.py with it.",
    )


def store_python(executable: str) -> bool:
    """A Microsoft Store Python (under WindowsApps): Windows redirects what it writes below AppData into
    the app's private folder (python/cpython#85368), where GIMP would see neither venv nor plug-ins."""
    return "windowsapps" in executable.replace("/", "\\").lower().split("\\")


def pip_install(python: Path, arguments: Sequence[str], what: str) -> None:
    """Run pip, echoing its output; on failure show its last lines and the command to retry."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *arguments]
    say(f"  installing {what}: {quoted(command)}")
    tail: collections.deque[str] = collections.deque(maxlen=PIP_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=nst_common.child_environment(),
        cwd=tempfile.gettempdir(),
    )
    assert process.stdout is not None
    for line in process.stdout:
        tail.append(line.rstrip())
        say("    | " + line.rstrip())
    if process.wait() != 0:
        last = "\n".join("  " + line for line in tail)
        raise InstallError(
            EXIT_ENGINE,
            f"pip could not install {what} (exit {process.returncode}). Its last lines:\n{last}\nFix the "
            f"cause (network, proxy, disk space, Python version) and retry with:\n  {quoted(command)}\nthen "
            "run install.py again.",
        )


def check_engine(python: Path, weights: Path | None, model: str = "vgg19") -> None:
    """Import torch for real and, given a weights file of the user's own, load it as the engine does."""
    extra = [str(REPO), str(weights), model] if weights else []
    result = run_quiet([python, "-c", ENGINE_CHECK, *extra], timeout=ENGINE_TIMEOUT)
    problem = last_line(result.stderr + result.stdout)
    if result.returncode == 4:
        raise InstallError(
            EXIT_WEIGHTS,
            f"The engine cannot use {weights}: {problem} Pass {model.upper()} weights in torchvision's "
            "format with --weights (or --model for the network they are for), or leave it out to download "
            "the official file.",
        )
    if result.returncode != 0:
        raise InstallError(
            EXIT_ENGINE,
            f"torch does not work in {python} ({problem}): run install.py again to repair it (or fix that "
            "environment, for --engine-python).",
        )


def run_engine(python: Path, data_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
    """`python -m nst_core ARGUMENTS`, with the installer's data folder as the engine's."""
    env = {paths.DATA_DIR_ENV: str(data_dir)}
    return run_quiet([python, "-m", "nst_core", *arguments], timeout=ENGINE_TIMEOUT, extra_env=env)


def describe_engine(python: Path, data_dir: Path) -> dict:
    """`describe --json`: the presets and option ranges the plug-ins build their dialogs from."""
    result = run_engine(python, data_dir, "describe", "--json")
    try:
        if result.returncode == 0:
            return json.loads(result.stdout)
    except ValueError:
        pass
    raise InstallError(
        EXIT_ENGINE,
        f"The engine does not start ({last_line(result.stderr + result.stdout)}): run install.py again; if "
        "it persists, report this line.",
    )


def engine_info(python: Path, data_dir: Path) -> dict:
    """`info --json`: the device, its memory and the CPU threads ({} if the engine cannot tell)."""
    try:
        info = json.loads(run_engine(python, data_dir, "info", "--json").stdout)
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def self_test(
    python: Path,
    weights: Path,
    data_dir: Path,
    server: tuple[str, Path] | None = None,
    model: str = "vgg19",
) -> tuple[dict, float]:
    """Stylise a generated picture as GIMP does: raw pixels through the plug-ins' bridge to run-job and
    back, or to `server` (URL, token file) as the dialog's "Remote server" sends it. The engine's start
    event and the seconds it all took."""
    width, height = SELF_TEST_SIZE
    content = bytes(v for y in range(height) for x in range(width) for v in (x * 5, y * 7, 128, 255 - x))
    config: dict = {"python": str(python), "weights": str(weights), "data_dir": str(data_dir)}
    options = dict(SELF_TEST_OPTIONS, model=model)
    if server is not None:
        config["servers"] = [{"url": server[0], "token_file": str(server[1])}]
        options["device"] = nst_common.REMOTE
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="nst-install-test-") as folder,
        nst_bridge.EngineRun(config) as run,
    ):
        style = Path(folder) / "style.ppm"  # binary Netpbm: a header line, then the RGB bytes
        pattern = bytes(v for y in range(32) for x in range(32) for v in ((x * y) % 256, 255 * (x % 2), 40))
        style.write_bytes(b"P6 32 32 255\n" + pattern)
        timed_out = threading.Event()
        watchdog = threading.Timer(ENGINE_TIMEOUT, lambda: (timed_out.set(), run.close_child()))
        watchdog.start()
        try:
            run.set_content_raw(content, width, height, "u8", 4)
            result = run.run([(str(style), 1.0)], options, lambda fraction, text: True)
            if server is not None and run.server != server[0]:
                raise nst_common.EngineError(
                    f"the server {server[0]} does not answer; check that it runs there"
                )
        except nst_common.EngineError as error:
            problem = f"it did not finish in {ENGINE_TIMEOUT} s" if timed_out.is_set() else error.message
            where = f"on the server {server[0]}" if server else f"the engine ran with {python}"
            raise InstallError(
                EXIT_SELF_TEST,
                f"The self-test failed: {problem} ({where}); fix that and run "
                "install.py again, or --skip-self-test to place the plug-ins anyway.",
            ) from None
        finally:
            watchdog.cancel()
    if result[3::4] != content[3::4]:
        raise InstallError(
            EXIT_SELF_TEST, "The self-test's result lost the picture's transparency: please report."
        )
    return run.started, time.time() - started


def measure_speed(python: Path, weights: Path, data_dir: Path, model: str = "vgg19") -> dict | None:
    """`nst_core calibrate`: this device's speed, recorded in the data folder for the time estimates
    and the automatic working size. None (and the defaults stay) if it fails: not worth an abort."""
    done = run_engine(python, data_dir, "calibrate", "--json", "--weights", str(weights), "--model", model)
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
