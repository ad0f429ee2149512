"""Running out of memory: one detector, one message, the fall back to ever smaller tiles, and real
allocation failures under an address-space limit (not only raised exceptions)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_content_image, make_style_image

from nst_core import memory, network, run
from nst_core.errors import OutOfMemoryError
from nst_core.options import Options, resolve
from nst_core.plan import MIN_TILE, Plan, ScalePlan, build_plan, tile_bytes, tiled

CPU = torch.device("cpu")


def _oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (_oom(), True),
        (MemoryError(), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"), True),
        (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried 1 bytes"), True),
        (RuntimeError("could not create a primitive"), True),
        (RuntimeError("shape mismatch"), False),
        (ValueError("out of memory"), False),
        (OutOfMemoryError("Not enough cpu memory"), False),  # already the message: passed on as it is
    ],
)
def test_one_detector_for_every_allocator(error: BaseException, expected: bool) -> None:
    assert memory.is_out_of_memory(error) is expected


def _scale_run(monkeypatch: pytest.MonkeyPatch, whole, tiles) -> None:  # noqa: ANN001 (callables)
    def scale_run(ctx, index, scale, previous, tile, iterations=None):  # noqa: ANN001, ANN202 (optimize_scale's own)
        return whole() if tile is None else tiles(tile)

    monkeypatch.setattr(run.optimize, "optimize_scale", scale_run)


def _plan(width: int, height: int) -> Plan:
    return build_plan(resolve(Options()), (width, height), CPU, Path("w.pth"), 1 << 40)


def test_out_of_memory_switches_to_ever_smaller_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[int] = []

    def whole() -> torch.Tensor:
        raise _oom()

    def tiles(side: int) -> torch.Tensor:
        tried.append(side)
        if side > 256:
            raise _oom()
        return torch.zeros(1)

    _scale_run(monkeypatch, whole, tiles)
    run._run_scale(None, _plan(2048, 1536), 0, ScalePlan(2048, 1536, 10), None)  # type: ignore[arg-type]
    assert tried == [1024, 512, 256]


def test_out_of_memory_at_the_smallest_tile_is_the_one_message(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[int] = []

    def tiles(side: int) -> torch.Tensor:
        tried.append(side)
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    _scale_run(monkeypatch, lambda: pytest.fail("the plan tiles this scale"), tiles)
    with pytest.raises(OutOfMemoryError) as caught:
        run._run_scale(None, _plan(4096, 4096), 0, ScalePlan(4096, 4096, 10, tile=512), None)  # type: ignore[arg-type]
    assert tried == [512, 256, MIN_TILE]
    message = caught.value.message
    assert message.startswith("Not enough cpu memory for 4096x4096 px (about ") and "\n" not in message
    assert caught.value.code == 6


def test_other_errors_are_not_mistaken_for_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def whole() -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    _scale_run(monkeypatch, whole, lambda side: pytest.fail("no fallback for other errors"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        run._run_scale(None, _plan(512, 512), 0, ScalePlan(512, 512, 10), None)  # type: ignore[arg-type]


def test_budget_too_small_for_any_tile_is_refused_before_running() -> None:
    scale = ScalePlan(2048, 1536, 10)
    explicit = resolve(Options(max_memory=64))
    with pytest.raises(OutOfMemoryError) as caught:
        tiled(explicit, scale, CPU, 64 << 20)
    needed = math.ceil(tile_bytes(explicit, scale, MIN_TILE, "cpu") / memory.MIB)
    assert caught.value.message.startswith("Not enough cpu memory for 2048x1536 px")
    assert f"a budget of 64 MiB): allow at least {needed} MiB (--max-memory)" in caught.value.message
    with pytest.raises(OutOfMemoryError) as caught:
        tiled(resolve(Options()), scale, CPU, 64 << 20)  # the budget is what is free
    assert "64 MiB free): " in caught.value.message and "close other programs" in caught.value.message
    assert "--max-memory" not in caught.value.message


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
@pytest.mark.parametrize("size", [(48, 32), (128, 85), (320, 213), (2048, 1536)])
def test_the_smallest_tiles_never_need_more_than_the_whole_picture(
    size: tuple[int, int], device_type: str
) -> None:
    # A budget too small for the smallest tiles asks for what they need: the least that runs the job,
    # as long as a whole picture is never estimated to need less (its style gradients once went
    # uncounted, and at 320 x 213 the whole picture was estimated 13% under its smallest tiles).
    for options in (
        Options(preset="fast", model="vgg16"),
        Options(content_layers=["relu2_2"], style_layers=["relu1_1"]),
    ):
        settings = resolve(options)
        scale = ScalePlan(*size, 3)
        whole = memory.job_bytes(settings, *size, device_type, 3)
        assert tile_bytes(settings, scale, MIN_TILE, device_type) <= whole, (options, size)


def test_the_message_suggests_the_largest_size_that_fits() -> None:
    settings = resolve(Options(iterations=10, multiscale=False))
    needed = memory.job_bytes(settings, 1024, 768, "mps", 10)
    available = memory.job_bytes(settings, 512, 384, "mps", 10) + 1
    error = memory.not_enough_memory(
        settings, torch.device("mps"), 1024, 768, 10, needed, available=available
    )
    assert error.code == 6
    suggestion = "use a working size of 512 px or less (--size 512)"
    assert error.message.endswith(f": {suggestion}, close other programs or use the CPU (--device cpu).")
    too_large = memory.job_bytes(settings, 528, 396, "mps", 10)
    assert too_large > available  # the next size up, a multiple of 16, would not fit


def test_out_of_memory_outside_the_scales_is_the_same_message(
    monkeypatch: pytest.MonkeyPatch, vgg19_weights: Path
) -> None:
    """The network's upload and the inputs' sit inside the one handler too."""

    def upload(*args: object, **kwargs: object) -> None:
        raise _oom()

    monkeypatch.setattr(network, "build_network", upload)
    content = np.asarray(make_content_image(64, 48), np.float32) / 255
    options = Options(size=64, iterations=2, weights=str(vgg19_weights), device="cpu")
    with pytest.raises(OutOfMemoryError, match=r"^Not enough cpu memory for 64x48 px \(about "):
        run.stylize(content, [content], options)


# -- real allocation failures: the address space capped a little above what the engine holds ----------

LIMITED = textwrap.dedent(
    """
    import resource, sys
    from nst_core import cli, network
    import torch

    network.load_features("vgg19", sys.argv[2])  # torch, its threads and the weights: the fixed part
    torch.ones(256, 256) @ torch.ones(256, 256)
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            cap = int(line.split()[1]) * 1024 + int(sys.argv[1]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.exit(cli.main(sys.argv[3:]))
    """
)


@pytest.fixture(scope="module")
def large_job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("out-of-memory")
    make_content_image(1024, 768).save(folder / "content.png")
    make_style_image(128, 128).save(folder / "style.png")
    return {"content": folder / "content.png", "style": folder / "style.png", "out": folder / "out"}


def _limited_stylize(headroom_mib: int, job: dict[str, Path], weights: Path) -> tuple[int, list[dict], str]:
    """A 1024 x 768 px job whose whole-image estimate (2.8 GiB) fits its budget, under `headroom_mib` of
    address space: the budget says whole, the allocator says no (512 px tiles need 1.0 GiB, 256 px
    tiles 0.7)."""
    job["out"].mkdir(exist_ok=True)
    flags = {
        "--size": "1024",
        "--iterations": "2",
        "--style-loss": "gram",
        "--device": "cpu",
        "--weights": weights,
        "--max-memory": "2900",
        "--progress": "json",
    }
    argv = ["stylize", job["content"], job["style"], "-o", job["out"] / "out.png", "--no-multiscale"]
    argv += [part for flag in flags.items() for part in flag]
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, str(headroom_mib), str(weights), *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_a_real_allocation_failure_falls_back_to_tiles(
    large_job: dict[str, Path], vgg19_weights: Path
) -> None:
    code, events, stderr = _limited_stylize(1100, large_job, vgg19_weights)
    assert code == 0, (events[-1:], stderr[-2000:])
    start, *progress, done = events
    assert (start["scales"], start["iterations"], start["tiles"]) == ([1024], 2, [])  # planned whole ...
    assert progress[-1]["tiles"] > 1  # ... run in tiles
    assert done["event"] == "done" and (large_job["out"] / "out.png").is_file()
    assert sorted(p.name for p in large_job["out"].iterdir()) == ["out.png"]


def test_a_real_allocation_failure_everywhere_is_one_line_and_no_file(
    large_job: dict[str, Path], vgg19_weights: Path
) -> None:
    (large_job["out"] / "out.png").unlink(missing_ok=True)
    code, events, stderr = _limited_stylize(60, large_job, vgg19_weights)
    assert code == 6, (events[-1:], stderr[-2000:])
    error = events[-1]
    assert error["event"] == "error" and error["code"] == 6
    # Here even reading the content fails: the message is the images' (exit 6 all the same).
    assert error["message"].startswith("Not enough memory for the images (") or error["message"].startswith(
        "Not enough cpu memory for 1024x768 px (about "
    )
    assert "\n" not in error["message"]
    assert "Traceback" not in stderr and list(large_job["out"].iterdir()) == []
