"""How long a job will take on this device, before it starts: a speed measured once, a cost model.

One iteration costs a fixed part (the style loss's eigendecompositions, kernel launches) plus its
convolutions' FLOPs over the device's achieved rate; a tiled iteration reads its blocks' margins
too and runs the network forward twice (tiling.py). `calibrate` measures the rate and the fixed
part on this device: it times iterations of the engine's own optimiser on generated pictures
(`synthetic_images`, no files needed) at two sizes and fits the cost model through them; `python -m
nst_core calibrate` records the result in the data folder (the installer's self-test runs it), and
until then the defaults below are used. The benchmarks (nst_core.bench) time their steps with the
same `best_time`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import devices, memory, optimize
from .network import autocast_dtype, build_network
from .options import Options, Settings, resolve
from .paths import SPEED_FILE, atomic_path, data_dir
from .weights import resolve_weights

# A tiled iteration runs the network forward, then forward and backward again: three passes, not
# two, so 1.5; with the blocks' sums, copies and gradient additions a 4000 x 3000 `fast` job
# measured 1.9 (nst_core.bench.jobs: 1645 s, estimated 1307 s at 1.5). The last block's first pass
# is now kept for the second, which `plan.scale_seconds` takes off.
TILED_PASSES = 1.9
# Per scale, before its first iteration: the content's features and the style's statistics, about
# one iteration's work.
SCALE_SETUP_ITERATIONS = 1.0


@dataclass(frozen=True)
class Speed:
    """Seconds per iteration = overhead + convolution FLOPs / rate; startup before the first."""

    rate: float  # convolution FLOP/s achieved inside a whole iteration
    overhead: float  # seconds per iteration whatever the size
    startup: float  # seconds from the engine's start to its first iteration
    measured: bool = False
    per_scale: float = 0.0  # seconds per scale whatever its size: objective, targets, preview

    def iteration_seconds(self, settings: Settings, width: int, height: int) -> float:
        return self.overhead + conv_flops(settings, width, height) / self.rate


# Unmeasured devices. CPU: fitted to the scales of whole `fast` jobs on 2 cores (AVX-512): 153
# GFLOP/s, 0.003 s per iteration and 1.1 s per scale reproduced each of six scales (136 to 1024 px)
# within 4% (`calibrate` there: 142 GFLOP/s); per core, scaled by the cores here. Its start: a whole
# one-iteration 32 px job takes 1.5 s on 2 cores (AMD EPYC), importing torch and mapping the weights'
# features copy; 2.0 leaves room for a slower disk. A GPU: a modest one, so that an unmeasured GPU
# is not promised too much.
CPU_RATE_PER_CORE = 75e9
# bf16 on a CPU with AMX (`network.autocast_dtype`): the convolutions' rate, times fp32's, measured by
# `calibrate` on 2 cores (docs/performance.md, "bf16 on CPUs with AMX").
CPU_BF16_SPEEDUP = 2.0
DEFAULTS = {
    "cpu": Speed(rate=CPU_RATE_PER_CORE * 2, overhead=0.005, startup=2.0, per_scale=1.1),
    "cuda": Speed(rate=20e12, overhead=0.02, startup=6.0, per_scale=0.3),
    "mps": Speed(rate=2e12, overhead=0.05, startup=4.0, per_scale=0.5),
}


def conv_flops(settings: Settings, width: int, height: int) -> float:
    """FLOPs of one iteration's convolutions: forward and input gradient (no weight gradients)."""
    layers = settings.content_layers + settings.style_layers
    shapes = memory.layer_shapes(settings.model, layers, height, width)
    return float(
        sum(
            2 * 2 * s.channels_in * s.channels_out * 9 * s.height * s.width
            for s in shapes
            if s.kind == "conv"
        )
    )


def speed_file(folder: Path | None = None) -> Path:
    return (folder or data_dir()) / SPEED_FILE


def default_speed(device_type: str, cores: int | None = None, autocast: torch.dtype | None = None) -> Speed:
    if device_type == "cpu":
        rate = CPU_RATE_PER_CORE * max(1, cores or devices.available_cores())
        rate *= CPU_BF16_SPEEDUP if autocast == torch.bfloat16 else 1.0
        return dataclasses.replace(DEFAULTS["cpu"], rate=rate)
    return DEFAULTS.get(device_type, DEFAULTS["cuda"])


def speed_key(device: torch.device, autocast: torch.dtype | None) -> str:
    """What a speed is recorded under: the device's label, and on a CPU "bf16" where the network runs in
    it, since a CPU's rate then doubles (a GPU always runs in its mixed precision)."""
    bf16 = device.type == "cpu" and autocast == torch.bfloat16
    return devices.describe_device(device) + (" bf16" if bf16 else "")


def device_speed(
    device_key: str, device_type: str, folder: Path | None = None, autocast: torch.dtype | None = None
) -> Speed:
    """The speed recorded for `device_key` (`speed_key`: "cpu", "cpu bf16", "cuda:0 (NVIDIA H100)"), or
    the default for the device's type and the network's precision."""
    default = default_speed(device_type, autocast=autocast)
    try:
        records = json.loads(speed_file(folder).read_text())
        return Speed(**{**asdict(default), **records[device_key], "measured": True})
    except (OSError, ValueError, KeyError, TypeError):
        return default


def record_speed(device_key: str, speed: Speed, folder: Path | None = None) -> Path:
    """Add `speed` for `device_key` to the speed file, written atomically."""
    path = speed_file(folder)
    try:
        records = json.loads(path.read_text())
        records = records if isinstance(records, dict) else {}
    except (OSError, ValueError):
        records = {}
    records[device_key] = {k: v for k, v in asdict(speed).items() if k != "measured"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(records, indent=2) + "\n")
    return path


def fit_speed(samples: list[tuple[float, float]], startup: float, per_scale: float = 0.0) -> Speed:
    """A Speed through (FLOPs, seconds per iteration) samples: least squares for overhead + f / rate."""
    n = len(samples)
    mean_f = sum(f for f, _ in samples) / n
    mean_t = sum(t for _, t in samples) / n
    spread = sum((f - mean_f) ** 2 for f, _ in samples)
    slope = sum((f - mean_f) * (t - mean_t) for f, t in samples) / spread if spread else mean_t / mean_f
    if slope <= 0:
        # Timings that fall as the work grows (another process took the cores during the small size):
        # no line through them means anything, so the whole time is the work's, none of it overhead.
        largest = max(samples)
        return Speed(largest[0] / largest[1], 0.0, startup, measured=True, per_scale=per_scale)
    overhead = max(0.0, mean_t - slope * mean_f)
    return Speed(rate=1 / slope, overhead=overhead, startup=startup, measured=True, per_scale=per_scale)


# -- measuring this device --------------------------------------------------------------------------

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


def calibrate(
    weights: Path, device: torch.device, startup: float, per_scale: float = 0.0, model: str = "vgg19"
) -> Speed:
    """This device's Speed: `balanced` iterations of the engine's optimiser timed at two sizes."""
    settings = resolve(Options(preset="balanced", multiscale=False, model=model))
    network = build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling, device
    )
    dtype = autocast_dtype(device, settings.precision, settings.style_loss)
    steps = CALIBRATION_STEPS.get(device.type, 5)
    samples = []
    for side in CALIBRATION_SIDES.get(device.type, (256, 512)):
        content, style = synthetic_images(side, side, device)
        objective = optimize.build_objective(network, optimize.ScaleInputs(content, [style]), settings, dtype)
        loss_scale = optimize.loss_scale_for(dtype)
        stepper = optimize.Stepper(content, objective, settings.optimizer, settings.learning_rate, loss_scale)
        block = lambda step=stepper.step: [step() for _ in range(steps)]  # noqa: E731
        seconds = best_time(block, device, 3) / steps
        samples.append((conv_flops(settings, side, side), seconds))
    return fit_speed(samples, startup, per_scale)


def calibrate_and_record(
    device_name: str, weights: Path | str | None, announce: Callable[[str], None], model: str = "vgg19"
) -> dict[str, Any]:
    """Measure the device named and record its speed for the plans: what `calibrate` prints. `announce`
    hears the device's name before the minute or two of measuring."""
    started = time.perf_counter()
    device = devices.pick_device(device_name)
    path = resolve_weights(weights, model)
    settings = resolve(Options(preset="balanced", model=model))
    key = speed_key(device, autocast_dtype(device, settings.precision, settings.style_loss))
    default = default_speed(device.type)
    announce(key)
    measured = calibrate(path, device, default.startup, default.per_scale, model)
    recorded = record_speed(key, measured)
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
