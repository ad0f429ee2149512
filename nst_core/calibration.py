"""This device's speed, measured for the plans' time estimates (`python -m nst_core calibrate`).

`calibrate` times iterations of the engine's own optimiser on generated pictures (`synthetic_images`,
no files needed) at two sizes and fits speed.py's cost model through them. The benchmarks
(nst_core.bench) time their steps with the same `best_time`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from . import optimize, speed
from .devices import describe_device, pick_device
from .network import build_network
from .options import Options, resolve
from .plan import autocast_dtype
from .weights import resolve_weights

CALIBRATION_SIDES = {"cpu": (128, 256), "cuda": (512, 1024), "mps": (256, 512)}
CALIBRATION_STEPS = {"cpu": 3, "cuda": 10, "mps": 5}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time(fn: Callable[[], object], device: torch.device, repeats: int = 5) -> float:
    """The fastest of `repeats` timed calls after one warm-up: the least disturbed by other load."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def synthetic_images(width: int, height: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth content and a striped style (1 x 3 x H x W in [0, 1]); no files needed."""
    y, x = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    content = torch.stack([x, y, 0.5 + 0.3 * torch.sin(6 * x * y)])
    style = torch.stack([0.5 + 0.5 * torch.sin(40 * (x + 2 * y)), 0.5 + 0.5 * torch.cos(33 * x), y])
    return content[None].to(device), style[None].to(device)


def calibrate(weights: Path, device: torch.device, startup: float, per_scale: float = 0.0) -> speed.Speed:
    """This device's Speed: `balanced` iterations of the engine's optimiser timed at two sizes."""
    settings = resolve(Options(preset="balanced", multiscale=False))
    network = build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling, device
    )
    dtype = autocast_dtype(device, settings.precision)
    steps = CALIBRATION_STEPS.get(device.type, 5)
    samples = []
    for side in CALIBRATION_SIDES.get(device.type, (256, 512)):
        content, style = synthetic_images(side, side, device)
        objective = optimize.build_objective(network, optimize.ScaleInputs(content, [style]), settings, dtype)
        loss_scale = optimize.loss_scale_for(dtype)
        stepper = optimize.Stepper(content, objective, settings.optimizer, settings.learning_rate, loss_scale)
        block = lambda step=stepper.step: [step() for _ in range(steps)]  # noqa: E731
        seconds = best_time(block, device, 3) / steps
        samples.append((speed.conv_flops(settings, side, side), seconds))
    return speed.fit_speed(samples, startup, per_scale)


def calibrate_and_record(
    device_name: str, weights: Path | str | None, announce: Callable[[str], None]
) -> dict[str, Any]:
    """Measure the device named and record its speed for the plans: what `calibrate` prints. `announce`
    hears the device's name before the minute or two of measuring."""
    started = time.perf_counter()
    device = pick_device(device_name)
    path = resolve_weights(weights, "vgg19")
    default = speed.default_speed(device.type)
    key = describe_device(device)
    announce(key)
    measured = calibrate(path, device, default.startup, default.per_scale)
    recorded = speed.record_speed(key, measured)
    took = round(time.perf_counter() - started, 1)
    return {
        "device": key,
        "rate": measured.rate,
        "overhead": measured.overhead,
        "file": str(recorded),
        "seconds": took,
    }


def calibration_text(result: dict[str, Any]) -> str:
    """calibrate's one line: 'cpu: 142 GFLOP/s, 3 ms more per iteration; recorded in FILE for ...'."""
    rate = result["rate"]
    flops = f"{rate / 1e12:.1f} TFLOP/s" if rate >= 1e12 else f"{rate / 1e9:.0f} GFLOP/s"
    overhead = result["overhead"]
    fixed = f"{overhead * 1000:.0f} ms" if overhead < 1 else f"{overhead:.2f} s"
    return (
        f"{result['device']}: {flops}, {fixed} more per iteration; recorded in {result['file']} for the "
        f"time estimates and automatic sizes (measured in {result['seconds']:.0f} s)."
    )
