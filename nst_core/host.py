"""How the engine uses its host process: every core it may run on, and freed memory kept for reuse."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

import torch

# glibc's mallopt parameters (malloc.h) and its defaults, to switch back
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_KEEP_ALL = 2**31 - 1

# A job whose estimate leaves this share of the memory budget free keeps its freed memory: glibc's
# heap then fragments by a few percent (2-5% higher peak measured), which a tiled job, sized to
# fill its budget, cannot afford (27% over a 2 GiB budget measured).
KEEP_MEMORY_SHARE = 0.8


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
    use_all_cores()
    if device.type == "cpu":
        keep_freed_memory(estimate <= KEEP_MEMORY_SHARE * budget)
    # cuDNN times its algorithms on each new shape and keeps the fastest: a job has one shape per
    # scale (and per tile size), each run for many iterations, so the trials pay for themselves.
    torch.backends.cudnn.benchmark = device.type == "cuda"
