"""The engine's process set-up: freed memory kept by glibc instead of faulted in again each iteration."""

from __future__ import annotations

import json
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
