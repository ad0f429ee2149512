"""Options -> one frozen plan: the settings, the device, checked weights, the scales (whole or in
tiles), the memory budget and the estimate.

Every entry point (the library's `stylize`, `run-job` and `stylize` on the command line) makes
its plan with `make_plan`, and `run.run_plan` carries it out: what a job does is decided here,
once, before any pixel is processed. `build_plan` is the part that needs no device or file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from . import memory, network
from .devices import pick_device
from .errors import ImageError
from .images import fit_size
from .options import Options, Settings, resolve
from .weights import resolve_weights

# A GPU makes the preset's size cheap: "auto" (no size given) works at twice it there, still
# never above the content's own size, and the memory budget decides whole image or tiles.
GPU_AUTO_SIZE_FACTOR = 2
MIN_TILE = 128  # below this a tile sees too little of the picture to carry a style

# The result's size: the content's, the working size's, or (width, height).
Output = Literal["content", "working"] | tuple[int, int]


@dataclass(frozen=True)
class ScalePlan:
    """One scale of the coarse-to-fine schedule."""

    width: int
    height: int
    iterations: int
    tile: int | None = None  # side of the square tiles the budget allows; None: the whole image at once

    @property
    def longest(self) -> int:
        return max(self.width, self.height)


@dataclass(frozen=True)
class Plan:
    """Everything a run needs decided; `run.run_plan` consumes it."""

    settings: Settings
    device: torch.device
    weights: Path  # verified (an official file's hash) or a file of the user's own
    working_size: int
    scales: tuple[ScalePlan, ...]
    coarse: ScalePlan | None  # a whole-image start when the first scale is tiled
    output_size: tuple[int, int]  # (width, height)
    budget: int  # bytes the job may use beyond the engine's own runtime
    estimate: int  # peak bytes of the largest scale run whole (the start event's memory_estimate)
    autocast: torch.dtype | None

    @property
    def iterations(self) -> int:
        return sum(s.iterations for s in self.scales)

    @property
    def job_bytes(self) -> int:
        """The estimate's part that the budget limits."""
        return self.estimate - memory.RUNTIME_BYTES.get(self.device.type, 0)


def make_plan(
    options: Options,
    content_size: tuple[int, int],
    n_styles: int = 1,
    *,
    output: Output = "content",
    device: torch.device | None = None,
) -> Plan:
    """The plan for a content of `content_size` (width, height): usage errors first, then the init
    image, the device and the weights, each a one-line NstError."""
    settings = resolve(options, n_styles)
    min_side = network.smallest_side(settings.model, (*settings.content_layers, *settings.style_layers))
    if settings.init_path and not Path(settings.init_path).is_file():
        raise ImageError(f"Init image {settings.init_path} does not exist: check --init.")
    device = device or pick_device(settings.device)
    weights = resolve_weights(settings.weights, settings.model)
    budget = memory.budget_bytes(settings, device)
    auto_size = options.size is None
    return build_plan(
        settings, content_size, device, weights, budget, min_side=min_side, output=output, auto_size=auto_size
    )


def build_plan(
    settings: Settings,
    content_size: tuple[int, int],
    device: torch.device,
    weights: Path,
    budget: int,
    *,
    min_side: int = 1,
    output: Output = "content",
    auto_size: bool = False,
) -> Plan:
    """Sizes, scales and tiles for `settings` on `device` within `budget` bytes."""
    width, height = content_size
    size = working_size(settings, content_size, output, auto_size, device.type)
    sides = scale_sizes(size, min(settings.min_scale, size), settings.multiscale)
    counts = split_iterations(settings.iterations, len(sides))
    scales = []
    for side, iterations in zip(sides, counts, strict=True):
        whole = ScalePlan(*fit_size(width, height, side, min_side), iterations=iterations)
        scales.append(
            whole if fits(settings, whole, device.type, budget) else tiled(settings, whole, device, budget)
        )
    coarse = coarse_scale(settings, scales[0], device.type, budget) if scales[0].tile else None
    if output == "content":
        output_size = (width, height)
    elif output == "working":
        output_size = fit_size(width, height, size)
    else:
        output_size = output
    estimate = max(
        memory.estimate_peak_bytes(settings, s.width, s.height, device.type, s.iterations) for s in scales
    )
    return Plan(
        settings=settings,
        device=device,
        weights=weights,
        working_size=size,
        scales=tuple(scales),
        coarse=coarse,
        output_size=output_size,
        budget=budget,
        estimate=estimate,
        autocast=autocast_dtype(device, settings.precision),
    )


def working_size(
    settings: Settings, content_size: tuple[int, int], output: Output, auto_size: bool, device_type: str
) -> int:
    """The preset's size (twice it on a GPU when the size is left to the engine), at most the content's
    longest side unless a larger output is asked for: an explicit output size, or an explicit size
    for a result at the working size."""
    size = settings.size * (GPU_AUTO_SIZE_FACTOR if auto_size and device_type != "cpu" else 1)
    cap = max(content_size)
    if isinstance(output, tuple):
        cap = max(cap, *output)
    elif output == "working" and not auto_size:
        cap = max(cap, size)
    return max(1, min(size, cap))


def scale_sizes(target: int, min_scale: int, multiscale: bool) -> list[int]:
    """Longest sides from `min_scale` to `target`, each about sqrt(2) times the previous."""
    if not multiscale or target <= min_scale:
        return [target]
    count = math.floor(math.log(target / min_scale, math.sqrt(2)) + 1e-9)
    return [round(target / math.sqrt(2) ** k) for k in range(count, 0, -1)] + [target]


def split_iterations(total: int, count: int) -> list[int]:
    """Iterations per scale falling by sqrt(2) per scale: most work where it is cheap; at least 1 each."""
    shares = [math.sqrt(2) ** -k for k in range(count)]
    counts = [max(1, math.floor(total * s / sum(shares))) for s in shares]
    counts[0] += max(0, total - sum(counts))
    return counts


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision for the network on CUDA; statistics and losses stay float32 (losses.py).

    On CPU only when asked for (`bf16`) and the CPU has bf16 instructions; `auto` stays fp32
    there: bf16 moved the final loss of a Gram run by 17% (docs/performance.md).
    """
    if device.type == "cpu":
        return torch.bfloat16 if precision == "bf16" and _cpu_has_bf16() else None
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions natively (elsewhere it emulates them, slower)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


# ---- tiles: when a scale is over the budget ----------------------------------------------------


def tile_schedule(iterations: int) -> tuple[int, int]:
    """(passes, iterations per tile) spending about a scale's `iterations` on every pixel.

    A tile needs two iterations at least: the optimiser keeps the best *evaluated* iterate,
    and the result of a tile's last step is only evaluated by the step after it.
    """
    passes = 2 if iterations >= 4 else 1
    return passes, max(2, iterations // passes)


def fits(settings: Settings, scale: ScalePlan, device_type: str, budget: int) -> bool:
    return memory.job_bytes(settings, scale.width, scale.height, device_type, scale.iterations) <= budget


def tile_bytes(settings: Settings, scale: ScalePlan, tile: int, device_type: str) -> int:
    """A tile's optimisation beside the scale's full-size images."""
    _, per_tile = tile_schedule(scale.iterations)
    return memory.job_bytes(settings, tile, tile, device_type, per_tile) + memory.canvas_bytes(
        scale.width, scale.height
    )


def tiled(settings: Settings, scale: ScalePlan, device: torch.device, budget: int) -> ScalePlan:
    """`scale` in the largest tiles whose optimisation fits `budget` beside the full-size images."""
    tile = memory.largest_side(
        lambda side: tile_bytes(settings, scale, side, device.type) <= budget, MIN_TILE, scale.longest
    )
    if tile is None:
        needed = tile_bytes(settings, scale, MIN_TILE, device.type)
        raise memory.not_enough_memory(
            settings, device, scale.width, scale.height, scale.iterations, needed, available=budget
        )
    return ScalePlan(scale.width, scale.height, scale.iterations, tile)


def coarse_scale(settings: Settings, first: ScalePlan, device_type: str, budget: int) -> ScalePlan:
    """The largest whole-image scale that fits, with half the first scale's iterations: tiles must
    agree on the composition, so it is settled first."""

    def side_fits(side: int) -> bool:
        w, h = fit_size(first.width, first.height, side)
        return fits(settings, ScalePlan(w, h, first.iterations), device_type, budget)

    side = memory.largest_side(side_fits, MIN_TILE, first.longest) or MIN_TILE
    return ScalePlan(*fit_size(first.width, first.height, side), iterations=max(1, first.iterations // 2))


def next_tile(tile: int | None, scale: ScalePlan) -> int | None:
    """The tile side to try after running out of memory at `tile` (None: the whole image), or None
    when no smaller tile is left."""
    if tile is None:
        return max(MIN_TILE, scale.longest // 2 // 16 * 16)
    smaller = tile // 2 // 16 * 16
    return smaller if smaller >= MIN_TILE else None
