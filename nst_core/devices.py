"""Choosing the compute device (CUDA, then MPS, then CPU) and describing it for `info` and events; how
the engine uses its host process: every core it may run on, and freed memory kept for reuse."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time
from typing import Any

import torch

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
    use_all_cores()  # as a job would: the threads it reports are the ones a job gets
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


# -- the host process --------------------------------------------------------------------------------

# glibc's mallopt parameters (malloc.h) and its defaults, to switch back
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEEP_ALL = 2**31 - 1

# Kept freed memory fragments glibc's heap: a job's peak rose 1.21-1.44x over the same job's without it,
# whole and tiled alike (640 x 480 to 4000 x 3000, docs/performance.md), and a tiled scale is sized to
# fill its budget. So a job keeps it only where its estimate, grown by this much, still fits the budget.
KEPT_HEAP_GROWTH = 1.5


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))  # honours taskset and container CPU sets
    return max(1, os.cpu_count() or 1)


_thread_limit: int | None = None


def limit_threads(count: int | None) -> None:
    """Use at most `count` threads from now on: a cluster task shares its machine with other engines,
    and threads beyond its CPUs would fight theirs (measured: 4x slower with two engines on two cores)."""
    global _thread_limit
    _thread_limit = count


def use_all_cores() -> None:
    """torch defaults to the physical cores; the optimisation is compute bound, so use every core, or
    the cluster task's share of them, or as many as OMP_NUM_THREADS says when it is set."""
    cores = available_cores()
    limit = _thread_limit or _threads_asked() or cores
    torch.set_num_threads(min(cores, limit))


# A core that another program keeps busy stalls every step: the engine's threads meet at the end of each
# operation, and the one that shares a core arrives last. So a CPU job leaves the cores that others keep
# busy to them, judged over this long at its start (ten of the kernel's clock ticks per core).
BUSY_SAMPLE_SECONDS = 0.1
# Cores that others use at least this much of count as theirs. Measured with `fast` at 384 px on 2 cores
# beside a process busy for a share of each 20 ms (docs/performance.md, "Beside a busy program"): at a
# whole core one thread took 0.64 of the time of two, at three quarters they were level, at a half and a
# quarter two threads took 0.79 and 0.74 of one's.
BUSY_CORE_SHARE = 0.75


def cpu_ticks(stat: str, cpus: set[int]) -> tuple[int, int]:
    """(busy, all) clock ticks summed over `cpus` from /proc/stat's text. Busy is user, nice, system,
    irq and softirq time; steal (another machine's) and idle and iowait are not."""
    busy = total = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        ticks = [int(field) for field in fields[:8]]
        busy += ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]
        total += sum(ticks)
    return busy, total


def _read_stat() -> str | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            return stat.read()
    except OSError:  # not Linux
        return None


def cores_busy_elsewhere(seconds: float = BUSY_SAMPLE_SECONDS) -> float:
    """How many of this process's cores other programs kept busy over the next `seconds`: the cores'
    busy time less this process's own, in cores; 0.0 where the system does not say."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    first = _read_stat()
    if first is None or not cpus:
        return 0.0
    own = time.process_time()
    time.sleep(seconds)
    second = _read_stat()
    own = time.process_time() - own
    if second is None:
        return 0.0
    (busy_before, total_before), (busy_after, total_after) = cpu_ticks(first, cpus), cpu_ticks(second, cpus)
    ticks_per_core = (total_after - total_before) / len(cpus)
    if ticks_per_core <= 0:
        return 0.0
    own_ticks = own * os.sysconf("SC_CLK_TCK")
    return max(0.0, (busy_after - busy_before - own_ticks) / ticks_per_core)


def use_idle_cores() -> None:
    """`use_all_cores` for a CPU job, less the cores other programs keep busy now (a look of
    BUSY_SAMPLE_SECONDS); a count given by a cluster task or OMP_NUM_THREADS is kept as it is."""
    cores = available_cores()
    if _thread_limit or _threads_asked() or cores == 1:
        use_all_cores()
        return
    busy = int(cores_busy_elsewhere() + 1 - BUSY_CORE_SHARE)
    if torch.get_num_threads() != max(1, cores - busy):  # a look that finds nothing new changes nothing
        torch.set_num_threads(max(1, cores - busy))


# How often a long CPU job looks again (between two of its steps): other programs' load comes and goes.
LOOK_AGAIN_SECONDS = 30.0


class IdleCoresPace:
    """Between a CPU job's steps: `use_idle_cores` again once `every` seconds have passed since the last
    look, so that a job that began beside a busy program takes its cores back when that one ends, and
    one that began alone gives a core up to a program that starts later. A look costs
    BUSY_SAMPLE_SECONDS, a third of a percent of the time between looks."""

    def __init__(self, every: float | None = None) -> None:
        self.every = LOOK_AGAIN_SECONDS if every is None else every
        self.last = time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every:
            use_idle_cores()
            self.last = time.monotonic()


def _threads_asked() -> int | None:
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else None


@functools.cache
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):  # not glibc
        return None
    return libc


def keep_freed_memory(keep: bool = True) -> bool:
    """Have glibc serve large blocks from its heap and keep freed memory instead of unmapping it
    (or, with keep=False, go back to its defaults and hand free memory back now).

    Every iteration frees and re-allocates the same activation maps, up to 64 MiB each at 512 px.
    By default glibc maps blocks over 32 MiB fresh and unmaps them on free, so the kernel faults
    in and zeroes every page again on each iteration: 4x the system time and about 5% of the wall
    time of an iteration at 512 px on a CPU (docs/performance.md). False where there is no glibc.
    """
    libc = _libc()
    if libc is None:
        return False
    if keep:
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_ALL))
    done = bool(libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
    )
    libc.malloc_trim(0)
    return done


def prepare(device: torch.device, estimate: int, budget: int) -> None:
    """Before each job on `device` whose peak is estimated at `estimate` bytes within `budget`."""
    if device.type == "cpu":
        use_idle_cores()
        keep_freed_memory(estimate * KEPT_HEAP_GROWTH <= budget)
    else:
        use_all_cores()
    # cuDNN times its algorithms on each new shape and keeps the fastest: a job has one shape per
    # scale (and per tile size), each run for many iterations, so the trials pay for themselves.
    torch.backends.cudnn.benchmark = device.type == "cuda"


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
