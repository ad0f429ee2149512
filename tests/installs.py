"""What the installer's tests share: running install.py in a throw-away home folder, reading what it
left there, and stand-ins for the machine it looks at (nvidia-smi, install.py's arguments)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install.py"
BRIDGE = REPO / "plug-ins/neural_style/nst_bridge.py"
# What the GIMP 2.10 plug-in takes from the GIMP 3 one's folder: the bridge and the modules it imports.
BRIDGE_MODULES = ("nst_bridge.py", "nst_service.py", "nst_common.py", "nst_tiff.py")
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


def install_namespace(**changes: object) -> argparse.Namespace:
    values = {
        "prefix": None,
        "torch": "auto",
        "index_url": None,
        "engine_python": None,
        "dev": False,
        "weights": None,
        "model": "vgg19",
        "gimp_dir": None,
        "gimp_version": None,
        "skip_self_test": False,
        "yes": False,
        "dry_run": False,
        "uninstall": False,
        "platform": None,
    }
    return argparse.Namespace(**{**values, **changes})
