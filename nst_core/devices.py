"""Choosing the compute device (CUDA, then MPS, then CPU) and describing it for `info` and events."""

from __future__ import annotations

import os
import sys
from typing import Any

import torch

from . import host
from .errors import DeviceError

_REINSTALL = "use --device cpu (or auto), or re-run install.py to get a torch build for your GPU"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(name: str = "auto") -> torch.device:
    """The device for `name` (auto | cuda | mps | cpu); an unavailable one is a DeviceError."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif _mps_available():
            name = "mps"
        else:
            name = "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        cpu_only = torch.version.cuda is None and not getattr(torch.version, "hip", None)
        why = "this torch is a CPU-only build" if cpu_only else "no working GPU driver was found"
        raise DeviceError(f"CUDA is not available ({why}): {_REINSTALL}.")
    if name == "mps" and not _mps_available():
        raise DeviceError(f"MPS (Apple GPU) is not available on this machine: {_REINSTALL}.")
    if name not in ("cuda", "mps", "cpu"):
        raise DeviceError(f"Unknown device '{name}': use auto, cuda, mps or cpu.")
    return torch.device("cuda", torch.cuda.current_device()) if name == "cuda" else torch.device(name)


def describe_device(device: torch.device) -> str:
    """A short label for events and logs, e.g. "cpu" or "cuda:0 (NVIDIA H100)"."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def memory(device: torch.device) -> tuple[int | None, int | None]:
    """(total, free) bytes the device can use; None where the platform does not tell."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return int(total), int(free)
    if device.type == "mps" and hasattr(torch.mps, "recommended_max_memory"):
        # Unified memory: the Metal working-set limit is what a run may really use.
        limit = int(torch.mps.recommended_max_memory())
        return limit, max(0, limit - int(torch.mps.driver_allocated_memory()))
    return _system_memory()


def _system_memory() -> tuple[int | None, int | None]:
    try:
        with open("/proc/meminfo", encoding="ascii") as stream:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in stream if line.strip()}
        return info.get("MemTotal"), info.get("MemAvailable", info.get("MemFree"))
    except (OSError, ValueError, IndexError):
        pass
    if sys.platform == "win32":
        return _windows_memory()
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_PHYS_PAGES") * page, None
    except (ValueError, OSError, AttributeError):
        return None, None


def _windows_memory() -> tuple[int | None, int | None]:
    import ctypes

    class MemoryStatus(ctypes.Structure):
        _fields_ = [
            ("length", ctypes.c_ulong),
            ("load", ctypes.c_ulong),
            ("total", ctypes.c_ulonglong),
            ("available", ctypes.c_ulonglong),
            ("rest", ctypes.c_ulonglong * 5),
        ]

    status = MemoryStatus()
    status.length = ctypes.sizeof(MemoryStatus)
    if not ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):  # type: ignore[attr-defined]
        return None, None
    return int(status.total), int(status.available)


def device_info(name: str = "auto") -> dict[str, Any]:
    """What `info` shows: the chosen device, its memory, the threads on CPU, torch's version."""
    device = pick_device(name)
    host.use_all_cores()  # as a job would: the threads it reports are the ones a job gets
    total, free = memory(device)
    return {
        "device": describe_device(device),
        "type": device.type,
        "total_memory": total,
        "free_memory": free,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "mps_available": _mps_available(),
    }


def info_text(info: dict[str, Any]) -> str:
    """`info` in words: the engine, the device, its memory and each model's weights file."""

    def gib(value: int | None) -> str:
        return "unknown" if value is None else f"{value / 2**30:.1f} GiB"

    lines = [
        f"engine   {info['version']} (torch {info['torch']}, CUDA {info['cuda'] or 'none'})",
        f"device   {info['device']}, {info['threads']} threads",
        f"memory   {gib(info['free_memory'])} free of {gib(info['total_memory'])}",
    ]
    for model, state in info["weights"].items():
        check = "SHA-256 verified" if state["verified"] else f"loads as {model}"
        lines.append(
            f"{model:8} {state['path']} ({check})" if state["ok"] else f"{model:8} {state['problem']}"
        )
    return "\n".join(lines)
