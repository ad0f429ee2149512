"""The peak-memory model: its shape, the budget, and agreement with measured peak RSS."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nst_core import devices, memory, tiling
from nst_core.optimize import LBFGS_HISTORY
from nst_core.options import Options, resolve
from nst_core.plan import ScalePlan, build_plan, margin_for, tile_bytes


def test_estimate_grows_with_pixels_and_shrinks_with_half_precision_on_gpus() -> None:
    settings = resolve(Options())
    small, large = (memory.estimate_peak_bytes(settings, s, s, "cpu") for s in (256, 512))
    assert large > small
    per_pixel = (large - small) / (512 * 512 - 256 * 256)
    assert 1000 < per_pixel < 20000  # VGG19 to relu5_1 keeps kilobytes per pixel, not bytes or megabytes
    half = resolve(Options(precision="fp16"))
    full = memory.activation_bytes(settings, 512, 512, "cpu")
    assert memory.activation_bytes(half, 512, 512, "cuda") < full


def test_optimizer_history_is_bounded() -> None:
    settings = resolve(Options())
    few = memory.optimizer_bytes(settings, 256, 256, iterations=2)
    many = memory.optimizer_bytes(settings, 256, 256, iterations=LBFGS_HISTORY)
    assert few < many == memory.optimizer_bytes(settings, 256, 256, iterations=10 * LBFGS_HISTORY)


def test_shallow_networks_need_less() -> None:
    deep = resolve(Options())
    shallow = resolve(Options(style_layers=["relu1_1"], content_layers=["relu1_1"]))
    assert memory.fixed_bytes(shallow, "cpu") < memory.fixed_bytes(deep, "cpu")
    assert memory.activation_bytes(shallow, 512, 512, "cpu") < memory.activation_bytes(deep, 512, 512, "cpu")


def test_budget_is_max_memory_when_given() -> None:
    settings = resolve(Options(max_memory=1500))
    assert memory.budget_bytes(settings, torch.device("cpu")) == 1500 * memory.MIB
    free = memory.budget_bytes(resolve(Options()), torch.device("cpu"))
    assert 0 < free


def test_job_reports_the_largest_scale() -> None:
    plan = build_plan(resolve(Options(size=512)), (800, 600), torch.device("cpu"), Path("w.pth"), 1 << 40)
    last = plan.scales[-1]
    expected = memory.estimate_peak_bytes(plan.settings, last.width, last.height, "cpu", last.iterations)
    assert plan.estimate >= expected > memory.fixed_bytes(plan.settings, "cpu")
    assert plan.job_bytes == plan.estimate - memory.RUNTIME_BYTES["cpu"]


MEASURE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from nst_core import memory, tiling
    from nst_core.options import Options, resolve
    from nst_core.run import stylize

    size = int(sys.argv[1])
    options = Options(size=size, iterations=2, multiscale=False, device="cpu", weights=sys.argv[2],
                      style_loss="gram")
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    content = np.stack([x, y, 0.5 + 0 * x], axis=-1)
    style = np.stack([np.sin(40 * x) * 0.5 + 0.5, y, x * y], axis=-1).astype(np.float32)
    stylize(content, [style], options)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    estimate = memory.estimate_peak_bytes(resolve(options), size, size, "cpu", 2)
    print(json.dumps({"peak": peak, "estimate": estimate}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
@pytest.mark.parametrize("size", [256, 320, 384])
def test_estimate_holds_the_measured_peak(size: int, vgg19_weights: Path) -> None:
    # One process per size, so each peak is that job's alone. The estimate decides whether a scale runs
    # whole within its budget, so the peak must not pass it by more than noise (with a margin of 1.1 and
    # nothing beside the tensors it did, by 4-7%), nor fall far under it, which would tile for nothing.
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(size), str(vgg19_weights)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.splitlines()[-1])
    assert 0.8 <= result["peak"] / result["estimate"] <= 1.02, result


MEASURE_TILED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from nst_core import devices
    from nst_core.options import Options, resolve
    from nst_core.plan import ScalePlan, build_plan, margin_for, tile_bytes
    from nst_core.run import stylize

    width, height, budget = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    if sys.argv[5] == "keep":  # whatever the budget: the job keeps its freed memory
        devices.KEPT_HEAP_GROWTH = 0.0
    # fp32, the precision the model was fitted to: bf16 (the default on a CPU with AMX) peaks lower.
    options = Options(preset="fast", size=width, iterations=2, multiscale=False, device="cpu",
                      weights=sys.argv[4], max_memory=budget, content_target=None, precision="fp32")
    plan = build_plan(resolve(options), (width, height), torch.device("cpu"), sys.argv[4], budget << 20)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    content = np.stack([x / width, y / height, 0.5 + 0 * x], axis=-1)
    style = np.stack([np.sin(x / 7) * 0.5 + 0.5, y / height, x * y / (width * height)], axis=-1)

    def peak():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    before, modules = peak(), set(sys.modules)
    stylize(content, [style[:256, :256]], options)
    imported = sorted(set(sys.modules) - modules)
    print(json.dumps({"job": peak() - before, "tiles": plan.tiles(), "imported": imported}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_tiles_grow_until_the_peak_nears_the_budget(vgg19_weights: Path) -> None:
    # A budget just above what two tiles side by side need: the plan must find that layout (counting
    # a block as tile + 2 margins, it chose 4 tiles and peaked at 70% of the budget), and the job's
    # peak must come within 15% under the budget without going (more than noise) over it.
    width, height = 640, 480
    options = Options(preset="fast", size=width, iterations=2, multiscale=False, content_target=None)
    settings = resolve(options)
    two = tile_bytes(settings, ScalePlan(width, height, 2), 480, "cpu")
    assert tiling.tile_count(width, height, 480, margin_for(settings)[1]) == 2
    budget = math.ceil(two / memory.MIB) + 1
    result = _tiled_job(width, height, budget, vgg19_weights, "default")
    assert [t["count"] for t in result["tiles"]] == [2], result
    assert 0.85 <= result["job"] / (budget * memory.MIB) <= 1.02, result
    # What a job imports counts in its peak and no model foresees it: torch's symbolic shapes (sympy,
    # 35 MiB) came with tensor gradients given to autograd.
    assert "sympy" not in result["imported"], result["imported"]
    # The same job keeping its freed memory (as one well inside its budget does) fragments glibc's heap:
    # its peak must stay within the growth a job is allowed before it may keep it (1.21-1.27x measured
    # here, up to 1.44x at 4000 x 3000).
    kept = _tiled_job(width, height, budget, vgg19_weights, "keep")
    assert kept["tiles"] == result["tiles"]
    assert kept["job"] <= result["job"] * devices.KEPT_HEAP_GROWTH, (kept, result)


def _tiled_job(width: int, height: int, budget: int, weights: Path, mode: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_TILED, str(width), str(height), str(budget), str(weights), mode],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])
