"""Which torch build suits this machine (CUDA, ROCm, MPS or CPU), where pip gets it, and which releases:
the range pyproject.toml says the project is tested with, or a stated fallback where a platform lacks it.

The build table is our own, for the tested torch release (TESTED_TORCH; a test fails when pyproject.toml
moves to another release and the table was not revisited). docs/install.md says why it is not a
library's (torchruntime, light-the-torch)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .checkout import project, requirement_name
from .errors import EXIT_OLD_PYTHON, EXIT_USAGE, InstallError
from .system import GB, run_quiet

TORCH_INDEX = "https://download.pytorch.org/whl/"
TESTED_TORCH = (2, 14)  # the release this table describes: pyproject.toml's torch range
DISK = {"cuda": 6 * GB, "rocm": 12 * GB, "cpu": 1 * GB, "mps": 1 * GB}

Capability = tuple[int, int]


@dataclass(frozen=True)
class CudaBuild:
    tag: str  # the index's name: download.pytorch.org/whl/<tag>
    cuda: tuple[int, int]  # the CUDA release it is built with; a driver runs it if it supports that major
    lowest: Capability  # the oldest GPU generation it has kernels for (compute capability)
    highest: Capability | None  # the newest; None: every newer one


# torch 2.14's CUDA builds, newest first. cu126 is the last with kernels for Maxwell, Pascal and Volta
# (5.0-7.0), and has none for Blackwell; cu130 and cu132 start at Turing (7.5): on a GTX 1080 they
# fail with "no kernel image is available".
CUDA_BUILDS = (
    CudaBuild("cu132", (13, 2), (7, 5), None),
    CudaBuild("cu130", (13, 0), (7, 5), None),
    CudaBuild("cu126", (12, 6), (5, 0), (9, 0)),
)
# torch 2.14's ROCm build. Its wheels bring the ROCm runtime along: the host needs the amdgpu kernel
# driver (/dev/kfd), not a ROCm install. These GPU architectures have kernels in it.
ROCM_BUILD = "rocm7.2"
ROCM_ARCHITECTURES = (
    "gfx908",
    "gfx90a",
    "gfx942",
    "gfx950",
    "gfx1030",
    "gfx1100",
    "gfx1101",
    "gfx1102",
    "gfx1151",
    "gfx1200",
    "gfx1201",
)
# Intel Macs: PyPI's last torch for them is 2.2.2 (Python 3.12 at most), built against NumPy 1.
INTEL_MAC_PINS = ("torch==2.2.2", "torchvision==0.17.2", "numpy>=1.23,<2")
INTEL_MAC_MAX_PYTHON = (3, 12)


@dataclass(frozen=True)
class TorchBuild:
    kind: str  # cuda | rocm | mps | cpu
    index_url: str | None  # None: PyPI
    reason: str
    pins: tuple[str, ...] = ()  # requirements that replace the project's (same names), where it lacks them
    max_python: tuple[int, int] | None = None  # the newest Python this build has wheels for

    @property
    def disk(self) -> int:
        return DISK[self.kind]

    @property
    def pinned(self) -> tuple[str, ...]:
        """The names of the packages this build pins."""
        return tuple(requirement_name(pin) for pin in self.pins)

    def requirement(self, name: str, default: str | None = None) -> str:
        """This build's specifier for `name`: its pin if it has one, else `default`, else pyproject.toml's."""
        pinned = next((pin for pin in self.pins if requirement_name(pin) == name), None)
        return pinned or default or project().requirement(name)


@dataclass(frozen=True)
class NvidiaGpus:
    cuda: tuple[int, int] | None  # the newest CUDA the driver runs, from nvidia-smi's banner
    driver: str | None
    names: tuple[str, ...]
    capabilities: tuple[Capability, ...]  # empty when the driver is too old to say


def version_pair(text: str) -> tuple[int, int] | None:
    match = re.match(r"\s*(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def nvidia_gpus(environ: Mapping[str, str]) -> NvidiaGpus | None:
    """The NVIDIA driver's CUDA version and the GPUs with their compute capability; None without a driver."""
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if not smi:
        return None
    try:
        banner = run_quiet([smi], timeout=30).stdout
        query = run_quiet(
            [smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"], timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*(\d+\.\d+)", banner)
    cuda = version_pair(match.group(1)) if match else None
    rows = [[cell.strip() for cell in line.split(",")] for line in query.stdout.splitlines() if line.strip()]
    rows = [row for row in rows if len(row) == 3 and version_pair(row[1])] if query.returncode == 0 else []
    if cuda is None and not rows:
        return None
    return NvidiaGpus(
        cuda,
        rows[0][2] if rows else None,
        tuple(row[0] for row in rows),
        tuple(version_pair(row[1]) for row in rows),  # type: ignore[misc]
    )


def runs_on(build: CudaBuild, driver: tuple[int, int] | None) -> bool:
    """The driver runs the build: an older CUDA major, or the same major up to the driver's own minor."""
    return driver is None or build.cuda[0] < driver[0] or build.cuda <= driver


def cuda_build(gpus: NvidiaGpus | None) -> tuple[CudaBuild | None, str]:
    """The newest build with kernels for every GPU that the driver runs (one of the driver's major
    release newer than its minor also runs, by CUDA's minor-version compatibility); or None and why."""
    capabilities = gpus.capabilities if gpus else ()
    driver = gpus.cuda if gpus else None
    has_kernels = [
        build
        for build in CUDA_BUILDS
        if all(
            build.lowest <= cap and (build.highest is None or cap <= build.highest) for cap in capabilities
        )
    ]
    if not has_kernels:
        return None, (
            f"no PyTorch {TESTED_TORCH[0]}.{TESTED_TORCH[1]} build has kernels for compute capability "
            f"{' and '.join(f'{a}.{b}' for a, b in sorted(set(capabilities)))}"
        )
    runnable = [build for build in has_kernels if runs_on(build, driver)]
    if not runnable and driver is not None:
        runnable = [build for build in reversed(has_kernels) if build.cuda[0] == driver[0]]
    if not runnable:
        assert driver is not None  # without a driver's word every build counts as runnable
        needed = has_kernels[-1].cuda[0]
        return None, (
            f"the driver supports CUDA {driver[0]}.{driver[1]} and the builds for this GPU need CUDA "
            f"{needed} or newer: update the NVIDIA driver"
        )
    return runnable[0], ""


def describe_gpus(gpus: NvidiaGpus | None) -> str:
    if gpus is None:
        return "asked for with --torch cuda, no nvidia-smi to tell the GPU"
    parts = [", ".join(sorted(set(gpus.names))) or "NVIDIA GPU"]
    if gpus.capabilities:
        parts.append("compute capability " + ", ".join(f"{a}.{b}" for a, b in sorted(set(gpus.capabilities))))
    if gpus.cuda:
        parts.append(f"driver for CUDA {gpus.cuda[0]}.{gpus.cuda[1]}")
    return "; ".join(parts)


def amd_architectures(root: Path) -> list[str]:
    """The AMD GPUs the amdgpu kernel driver offers for compute (gfx names from its KFD topology);
    nothing of ROCm needs to be installed for this."""
    if not (root / "dev" / "kfd").exists():
        return []
    found = []
    for properties in sorted((root / "sys/class/kfd/kfd/topology/nodes").glob("*/properties")):
        match = re.search(r"^gfx_target_version\s+(\d+)", properties.read_text(errors="replace"), re.M)
        version = int(match.group(1)) if match else 0
        if version:  # 0: a CPU node
            major, minor, stepping = version // 10000, version // 100 % 100, version % 100
            found.append(f"gfx{major}{minor}{stepping:x}")
    return found


def mac_build(machine: str, requested: str, environ: Mapping[str, str]) -> TorchBuild:
    if requested in ("cuda", "rocm"):
        raise InstallError(EXIT_USAGE, f"There is no {requested} torch for macOS: use --torch auto.")
    if machine.lower() in ("arm64", "aarch64"):
        return TorchBuild("mps", None, "Apple Silicon: PyPI's build with the Metal (MPS) backend")
    if under_rosetta(environ):
        raise InstallError(
            EXIT_OLD_PYTHON,
            "This Python is an Intel (x86_64) build running under Rosetta 2 on an Apple Silicon Mac: its "
            "torch would be an old CPU-only one. Run install.py with a native Python: `arch -arm64 python3 "
            "install.py` (python.org's universal2 Python), or Homebrew's /opt/homebrew/bin/python3.",
        )
    return TorchBuild(
        "cpu",
        None,
        "Intel Mac: PyPI's last build for it, torch 2.2.2 on NumPy 1 (CPU)",
        pins=INTEL_MAC_PINS,
        max_python=INTEL_MAC_MAX_PYTHON,
    )


def under_rosetta(environ: Mapping[str, str]) -> bool:
    """macOS says whether this process is translated (sysctl.proc_translated is 1 under Rosetta 2)."""
    sysctl = shutil.which("sysctl", path=environ.get("PATH")) or "/usr/sbin/sysctl"
    try:
        return run_quiet([sysctl, "-n", "sysctl.proc_translated"], timeout=30).stdout.strip() == "1"
    except (OSError, subprocess.SubprocessError):
        return False  # older macOS, no Rosetta at all


def choose_torch(
    system: str, machine: str, requested: str, environ: Mapping[str, str], root: Path = Path("/")
) -> TorchBuild:
    """Which torch build suits this machine, and where pip gets it (None = PyPI). `root`: where /dev and
    /sys are (tests)."""
    if system == "macos":
        return mac_build(machine, requested, environ)
    if requested == "rocm" and system != "linux":
        raise InstallError(EXIT_USAGE, "ROCm torch builds exist for Linux only: use --torch auto or cpu.")
    cpu = TorchBuild("cpu", TORCH_INDEX + "cpu", "no supported GPU found: CPU build (slow but works)")
    if requested == "cpu":
        return replace(cpu, reason="asked for with --torch cpu")
    why_not = []
    if requested in ("auto", "cuda"):
        gpus = nvidia_gpus(environ)
        if gpus is not None or requested == "cuda":
            build, problem = cuda_build(gpus)
            if build is not None:
                reason = f"{describe_gpus(gpus)}: CUDA {build.cuda[0]}.{build.cuda[1]} build"
                return TorchBuild("cuda", TORCH_INDEX + build.tag, reason)
            if requested == "cuda":
                raise InstallError(EXIT_USAGE, f"No CUDA torch for this GPU: {problem}, or use --torch cpu.")
            why_not.append(f"NVIDIA GPU, but {problem} for GPU speed")
    if system == "linux" and requested in ("auto", "rocm"):
        architectures = amd_architectures(root)
        usable = [arch for arch in architectures if arch in ROCM_ARCHITECTURES]
        if usable or requested == "rocm":
            seen = ", ".join(architectures) or "no GPU seen by the amdgpu driver"
            return TorchBuild("rocm", TORCH_INDEX + ROCM_BUILD, f"AMD GPU ({seen}): ROCm 7.2 build")
        if architectures:
            why_not.append(
                f"AMD GPU {', '.join(architectures)} has no kernels in PyTorch's ROCm build (--torch rocm "
                "tries anyway)"
            )
    if why_not:
        return replace(cpu, reason="; ".join(why_not) + ": CPU build")
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
