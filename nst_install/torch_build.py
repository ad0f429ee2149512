"""Which torch build suits this machine (CUDA, ROCm, MPS or CPU), where pip gets it, and which releases:
the range pyproject.toml says the project is tested with."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import EXIT_USAGE, InstallError
from .system import GB, run_quiet

# PyTorch's wheel indexes, newest first; a driver runs wheels built for its CUDA major version.
TORCH_INDEX = "https://download.pytorch.org/whl/"
CUDA_BUILDS = ((13, 0), (12, 8), (12, 6))
ROCM_BUILDS = ((6, 4), (6, 3))
DISK = {"cuda": 6 * GB, "rocm": 12 * GB, "cpu": 1 * GB, "mps": 1 * GB}


@dataclass(frozen=True)
class TorchBuild:
    kind: str  # cuda | rocm | mps | cpu
    index_url: str | None  # None: PyPI
    reason: str

    @property
    def disk(self) -> int:
        return DISK[self.kind]


def nvidia_cuda_version(environ: Mapping[str, str]) -> tuple[int, int] | None:
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


def rocm_version(environ: Mapping[str, str], rocm_root: Path) -> tuple[int, int] | None:
    """The installed ROCm version ((0, 0) when present but unversioned); None without ROCm."""
    version_file = rocm_root / ".info" / "version"
    if version_file.is_file():
        match = re.match(r"(\d+)\.(\d+)", version_file.read_text(errors="replace"))
        if match:
            return int(match.group(1)), int(match.group(2))
    if rocm_root.is_dir() or shutil.which("rocminfo", path=environ.get("PATH")):
        return (0, 0)
    return None


def pick_build(version: tuple[int, int] | None, builds: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """The newest build not newer than `version`; else the oldest of its major version."""
    if version is None:
        return builds[0]
    for build in builds:
        if build <= version and build[0] == version[0]:
            return build
    same_major = [build for build in builds if build[0] == version[0]]
    return same_major[-1] if same_major else None


def cuda_build(version: tuple[int, int] | None, forced: bool) -> TorchBuild | None:
    build = pick_build(version, CUDA_BUILDS)
    if build is None:
        if forced:
            assert version is not None
            raise InstallError(
                EXIT_USAGE,
                f"The NVIDIA driver supports CUDA {version[0]}.{version[1]} only, older than any current "
                "PyTorch build: update the driver, or use --torch cpu.",
            )
        return None
    seen = f"driver supports CUDA {version[0]}.{version[1]}" if version else "asked for with --torch cuda"
    reason = f"NVIDIA GPU ({seen}): CUDA {build[0]}.{build[1]} build"
    return TorchBuild("cuda", f"{TORCH_INDEX}cu{build[0]}{build[1]}", reason)


def choose_torch(
    system: str, machine: str, requested: str, environ: Mapping[str, str], rocm_root: Path = Path("/opt/rocm")
) -> TorchBuild:
    """Which torch build suits this machine, and where pip gets it (None = PyPI)."""
    if system == "macos":
        if requested in ("cuda", "rocm"):
            raise InstallError(EXIT_USAGE, f"There is no {requested} torch for macOS: use --torch auto.")
        if machine.lower() in ("arm64", "aarch64"):
            return TorchBuild("mps", None, "Apple Silicon: PyPI's build with the Metal (MPS) backend")
        return TorchBuild("cpu", None, "Intel Mac: PyPI's CPU build")
    if requested == "rocm" and system != "linux":
        raise InstallError(EXIT_USAGE, "ROCm torch builds exist for Linux only: use --torch auto or cpu.")
    cpu = TorchBuild("cpu", TORCH_INDEX + "cpu", "no supported GPU found: CPU build (slow but works)")
    if requested == "cpu":
        return replace(cpu, reason="asked for with --torch cpu")
    if requested in ("auto", "cuda"):
        version = nvidia_cuda_version(environ)
        if version is not None or requested == "cuda":
            build = cuda_build(version, requested == "cuda")
            if build is not None:
                return build
            return replace(
                cpu, reason="NVIDIA driver too old for current PyTorch (update it for GPU speed): CPU build"
            )
    if system == "linux" and requested in ("auto", "rocm"):
        version = rocm_version(environ, rocm_root)
        if version is not None or requested == "rocm":
            build = (
                pick_build(version if version and version != (0, 0) else None, ROCM_BUILDS) or ROCM_BUILDS[0]
            )
            return TorchBuild(
                "rocm",
                f"{TORCH_INDEX}rocm{build[0]}.{build[1]}",
                f"AMD GPU (ROCm): ROCm {build[0]}.{build[1]} build",
            )
    return cpu


def release(version: str) -> tuple[int, ...]:
    """(2, 14, 1) of '2.14.1+cu128': the numeric release, local build tags dropped."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])


def satisfies(version: str, requirement: str) -> bool:
    """Whether `version` meets every clause of a pip specifier such as 'torch>=2.14,<2.15'."""
    ours = release(version)
    for operator, bound in re.findall(r"(>=|<=|==|!=|<|>)\s*([\d.]+)", requirement):
        theirs = release(bound)
        width = max(len(ours), len(theirs))
        a, b = ours + (0,) * (width - len(ours)), theirs + (0,) * (width - len(theirs))
        held = {">=": a >= b, "<=": a <= b, "==": a == b, "!=": a != b, "<": a < b, ">": a > b}[operator]
        if not held:
            return False
    return True
