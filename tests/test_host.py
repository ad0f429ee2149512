"""The engine's process set-up: freed memory kept by glibc instead of faulted in again each iteration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from nst_core import devices

MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from nst_core import devices
    kept = devices.keep_freed_memory() if sys.argv[1] == "keep" else None
    if sys.argv[1] == "back":  # kept, then switched back for a job that needs its budget
        kept = devices.keep_freed_memory() and devices.keep_freed_memory(False)
    torch.empty(1)
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(2):  # warm-up: the first round faults in whatever it uses either way
        torch.ones(64, 512, 512).sum()
    before = faults()
    for _ in range(20):  # 64 MiB maps, freed and made again as in every iteration at 512 px
        torch.ones(64, 512, 512).sum()
    print(json.dumps({"kept": kept, "faults": faults() - before}))
    """
)


def _faults(mode: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, mode], capture_output=True, text=True, timeout=120, check=True
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator is Linux-only")
def test_keeping_freed_memory_stops_the_page_faults() -> None:
    default, kept, back = _faults("default"), _faults("keep"), _faults("back")
    assert kept["kept"] is True and back["kept"] is True
    # Each 64 MiB map is 16384 pages: by default every one is faulted in again each round.
    assert int(default["faults"]) > 20 * 16384 * 0.9
    # glibc still grows its heap a few times while freed blocks coalesce; then it reuses them.
    assert int(kept["faults"]) < int(default["faults"]) / 4
    assert int(back["faults"]) > int(default["faults"]) * 0.9


def test_only_jobs_well_inside_their_budget_keep_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(devices, "keep_freed_memory", calls.append)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    devices.prepare(cpu, 600, 1000)
    devices.prepare(cpu, 700, 1000)  # its kept heap could outgrow the budget (test_memory.py measures it)
    devices.prepare(cuda, 100, 1000)  # GPU memory has its own caching allocator
    assert calls == [True, False]


def test_cudnn_picks_its_algorithms_by_timing_them_on_cuda_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    devices.prepare(torch.device("cuda"), 100, 1000)
    assert torch.backends.cudnn.benchmark
    devices.prepare(torch.device("cpu"), 100, 1000)
    assert not torch.backends.cudnn.benchmark


def test_the_engine_takes_every_core_unless_a_cluster_task_or_omp_num_threads_says_fewer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(devices, "available_cores", lambda: 4)
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        devices.use_all_cores()
        assert torch.get_num_threads() == 4
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        devices.use_all_cores()
        assert torch.get_num_threads() == 3
        devices.limit_threads(1)  # a one-CPU Ray task: its share wins over both
        devices.use_all_cores()
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a number: ignored
        devices.limit_threads(None)
        devices.use_all_cores()
        assert torch.get_num_threads() == 4
    finally:
        devices.limit_threads(None)
        torch.set_num_threads(before)


def test_cpu_ticks_sum_the_busy_and_all_ticks_of_the_cores_asked_for() -> None:
    stat = (
        "cpu  40 1 20 900 9 1 2 7 0 0\n"
        "cpu0 10 0 5 300 3 0 1 2 0 0\n"
        "cpu1 20 1 10 250 4 1 1 5 0 0\n"
        "cpu10 10 0 5 350 2 0 0 0 0 0\n"
        "intr 66601 0 0\n"
    )
    # busy: user, nice, system, irq, softirq; steal (the 8th field) counts in all ticks, not as busy
    assert devices.cpu_ticks(stat, {1, 10}) == (20 + 1 + 10 + 1 + 1 + 10 + 5, 292 + 367)
    assert devices.cpu_ticks(stat, {0}) == (16, 321)
    assert devices.cpu_ticks(stat, {5}) == (0, 0)


BUSY_LOOP = "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); print(flush=True)\nwhile True: pass"


@pytest.mark.skipif(devices.available_cores() < 2, reason="needs a core to leave to another program")
def test_a_cpu_job_leaves_the_core_another_program_keeps_busy_until_it_ends_unless_a_count_was_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before, cores = torch.get_num_threads(), devices.available_cores()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    busy = subprocess.Popen(
        [sys.executable, "-c", BUSY_LOOP, str(max(os.sched_getaffinity(0)))], stdout=subprocess.PIPE
    )
    try:
        assert busy.stdout is not None and busy.stdout.readline()  # pinned and looping
        assert devices.cores_busy_elsewhere() > 0.7
        devices.prepare(torch.device("cpu"), 1, 2**30)
        assert torch.get_num_threads() <= cores - 1
        monkeypatch.setenv("OMP_NUM_THREADS", str(cores))  # asked for: kept, busy or not
        devices.prepare(torch.device("cpu"), 1, 2**30)
        assert torch.get_num_threads() == cores
        monkeypatch.delenv("OMP_NUM_THREADS")
        devices.prepare(torch.device("cpu"), 1, 2**30)
        pace = devices.IdleCoresPace(every=3600.0)
        busy.kill()
        busy.wait()
        pace()  # too soon to look again
        assert torch.get_num_threads() <= cores - 1
        pace.every = 0.0
        pace()  # the busy program has ended: its core is the job's again
        assert torch.get_num_threads() == cores
    finally:
        busy.kill()
        busy.wait()
        torch.set_num_threads(before)
