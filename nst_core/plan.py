"""Options -> one frozen plan: the settings, the device, checked weights, the scales (whole or in
tiles), the memory budget and the estimate.

Every entry point (the library's `stylize`, `run-job` and `stylize` on the command line) makes
its plan with `make_plan`, and `run.run_plan` carries it out: what a job does is decided here,
once, before any pixel is processed. `build_plan` is the part that needs no device or file.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from . import balance, memory, network, tiling
from .devices import describe_device, pick_device
from .errors import ImageError
from .images import fit_size
from .options import Options, Settings, preset_by_name, resolve
from .readable import data_size, duration
from .speed import (
    SCALE_SETUP_ITERATIONS,
    TILED_PASSES,
    Speed,
    conv_flops,
    default_speed,
    device_speed,
    speed_key,
)
from .tiling import ScalePlan
from .weights import resolve_weights

MIN_TILE = 128  # below this the margins make a block mostly margin: the cost would grow several-fold
# Above the preset's size the ladder grows the side by up to about 2x a step, each scale with half the
# iterations of the one below and at least this share of the preset's: the composition is settled
# lower down, the top scales add texture, and the job's cost grows about linearly with its pixels.
TOP_ITERATION_SHARE = 0.05
MIN_TOP_ITERATIONS = 2
# The sides above the preset's are spaced evenly, each step at most 2/0.9 (about 2.2) times the last:
# as few steps as doubling would take, without a last one of 1.3x at the full size. At 4000 x 3000 that
# last step had been a second tiled scale (3072 px, a third of the job); evenly spaced, the scale below
# the top is 2227 px and runs whole. On ImageNet VGG16 at 2048 px the even steps judged level with the
# doubling ones or better (docs/performance.md, "The top of the ladder").
TOP_STEP_SLACK = math.log2(1 / 0.9)

# The result's size: the content's, the working size's, or (width, height).
Output = Literal["content", "working"] | tuple[int, int]


@dataclass(frozen=True)
class Plan:
    """Everything a run needs decided; `run.run_plan` consumes it."""

    settings: Settings
    device: torch.device
    weights: Path  # verified (an official file's hash) or a file of the user's own
    working_size: int
    scales: tuple[ScalePlan, ...]
    output_size: tuple[int, int]  # (width, height)
    budget: int  # bytes the job may use beyond the engine's own runtime
    estimate: int  # peak bytes of the largest scale as planned (the start event's memory_estimate)
    autocast: torch.dtype | None
    seconds: tuple[float, ...] = ()  # per scale, estimated
    startup: float = 0.0  # estimated seconds before the first scale

    @property
    def estimated_seconds(self) -> float:
        return self.startup + sum(self.seconds)

    def tiles(self) -> list[dict[str, int]]:
        """The scales that run in tiles: 1-based scale, its size, how many tiles of what side."""
        margin, grid = margin_for(self.settings)
        return [
            {
                "scale": i + 1,
                "size": s.longest,
                "count": tiling.tile_count(s.width, s.height, s.tile, grid),
                "tile": s.tile,
            }
            for i, s in enumerate(self.scales)
            if s.tile is not None
        ]

    def summary(self) -> dict[str, Any]:
        """The plan as JSON-ready data: `stylize --dry-run` prints it, the start event carries it."""
        return {
            "working_size": self.working_size,
            "output_size": list(self.output_size),
            "scales": [
                {
                    "width": s.width,
                    "height": s.height,
                    "iterations": s.iterations,
                    "trials": s.trials,
                    "tile": s.tile,
                    "seconds": round(t, 1),
                }
                for s, t in zip(self.scales, self.seconds, strict=True)
            ],
            "iterations": self.iterations,
            "tiles": self.tiles(),
            "memory": {
                "estimate": self.estimate,
                "budget": None if self.budget >= memory.UNKNOWN_BUDGET else self.budget,
            },
            "estimated_seconds": round(self.estimated_seconds, 1),
        }

    @property
    def iterations(self) -> int:
        return sum(s.steps for s in self.scales)

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
    masked: bool = False,
    framed: bool = False,
) -> Plan:
    """The plan for a content of `content_size` (width, height): usage errors first, then the init
    image, the device and the weights, each a one-line NstError. `masked`: the styles have masks;
    `framed`: an animation's frame that starts from the previous one (`build_plan`)."""
    settings = replace(resolve(options, n_styles), masked=masked)
    min_side = network.smallest_side(settings.model, (*settings.content_layers, *settings.style_layers))
    if settings.init_path and not Path(settings.init_path).is_file():
        raise ImageError(f"Init image {settings.init_path} does not exist: check --init.")
    device = device or pick_device(settings.device)
    weights = resolve_weights(settings.weights, settings.model)
    budget = memory.budget_bytes(settings, device)
    auto_size = options.size is None
    autocast = network.autocast_dtype(device, settings.precision, settings.style_loss)
    speed = device_speed(speed_key(device, autocast), device.type, autocast=autocast)
    return build_plan(
        settings,
        content_size,
        device,
        weights,
        budget,
        min_side=min_side,
        output=output,
        auto_size=auto_size,
        speed=speed,
        framed=framed,
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
    speed: Speed | None = None,
    framed: bool = False,
) -> Plan:
    """Sizes, scales and tiles for `settings` on `device` within `budget` bytes; with `auto_size`, the
    largest working size whose estimate fits the preset's time on `speed`. A `framed` plan (a frame
    that starts from the previous one) keeps the weights: no balance trials, but the working size of
    the animation's first frame, which has them, so that every frame is painted at one size."""
    autocast = network.autocast_dtype(device, settings.precision, settings.style_loss)
    speed = speed or default_speed(device.type, autocast=autocast)
    width, height = content_size
    cap = size_cap(settings, content_size, output, auto_size)
    seconds = preset_by_name(settings.name).seconds
    if auto_size and seconds is not None:

        def in_time(side: int) -> bool:
            return (
                _scales_plan(settings, content_size, side, device, budget, min_side, speed, framed=False)[2]
                <= seconds
            )

        low = min(settings.min_scale, cap)
        size = cap if cap <= low or in_time(cap) else memory.largest_side(in_time, low, cap) or low
    else:
        size = max(1, min(settings.size, cap))
    scales, times, total = _scales_plan(
        settings, content_size, size, device, budget, min_side, speed, framed=framed
    )
    if output == "content":
        output_size = (width, height)
    elif output == "working":
        output_size = fit_size(width, height, size)
    else:
        output_size = output
    estimate = max(_scale_bytes(settings, s, device.type) for s in scales) + memory.RUNTIME_BYTES.get(
        device.type, 0
    )
    return Plan(
        settings=settings,
        device=device,
        weights=weights,
        working_size=size,
        scales=tuple(scales),
        output_size=output_size,
        budget=budget,
        estimate=estimate,
        autocast=autocast,
        seconds=tuple(times),
        startup=speed.startup,
    )


def _scales_plan(
    settings: Settings,
    content_size: tuple[int, int],
    size: int,
    device: torch.device,
    budget: int,
    min_side: int,
    speed: Speed,
    *,
    framed: bool,
) -> tuple[list[ScalePlan], list[float], float]:
    """The scales up to `size`, each whole or tiled within `budget`, their estimated seconds, and the
    job's (startup included); `framed` as `build_plan`'s."""
    width, height = content_size
    scales = []
    for side, iterations in ladder(settings, size):
        whole = ScalePlan(*fit_size(width, height, side, min_side), iterations=iterations)
        scales.append(
            whole if fits(settings, whole, device.type, budget) else tiled(settings, whole, device, budget)
        )
    # Only a coarse first scale is worth repeating: a single-scale plan keeps the weights.
    balanced = settings.effective_content_target is not None and settings.init != "image"
    if balanced and not framed and len(scales) > 1:
        scales[0] = replace(scales[0], trials=balance.TRIALS)
    times = [scale_seconds(settings, s, speed) for s in scales]
    return scales, times, speed.startup + sum(times)


def _scale_bytes(settings: Settings, scale: ScalePlan, device_type: str) -> int:
    if scale.tile is None:
        return memory.job_bytes(settings, scale.width, scale.height, device_type, scale.iterations)
    return tile_bytes(settings, scale, scale.tile, device_type)


def scale_seconds(settings: Settings, scale: ScalePlan, speed: Speed) -> float:
    """A scale's estimated seconds: its iterations and its setup, whole or in blocks."""
    if scale.tile is None:
        per_iteration = speed.iteration_seconds(settings, scale.width, scale.height)
    else:
        margin, grid = margin_for(settings)
        blocks = tiling.plan_blocks(scale.width, scale.height, scale.tile, margin, grid)
        flops = [conv_flops(settings, b.padded.width, b.padded.height) for b in blocks]
        # The last block's statistics pass is kept for autograd: a third of its passes is not run.
        per_iteration = speed.overhead + TILED_PASSES * (sum(flops) - flops[-1] / 3) / speed.rate
    return (scale.iterations + SCALE_SETUP_ITERATIONS) * scale.trials * per_iteration + speed.per_scale


def ladder(settings: Settings, size: int) -> list[tuple[int, int]]:
    """(longest side, iterations) per scale: the preset's coarse-to-fine ladder up to its own size (or
    `size` if smaller), then in even steps of up to about 2x up to `size` with few iterations each
    (TOP_ITERATION_SHARE)."""
    top = min(size, preset_by_name(settings.name).size) if settings.multiscale else size
    sides = scale_sizes(top, min(settings.min_scale, top), settings.multiscale)
    steps = list(zip(sides, split_iterations(settings.iterations, len(sides)), strict=True))
    floor = max(MIN_TOP_ITERATIONS, math.ceil(settings.iterations * TOP_ITERATION_SHARE))
    side, iterations = steps[-1]
    if side < size:
        count = max(1, math.ceil(math.log2(size / side) - TOP_STEP_SLACK))
        ratio = (size / side) ** (1 / count)
        for step in range(1, count + 1):
            iterations = max(floor, iterations // 2)
            steps.append((size if step == count else round(side * ratio**step), iterations))
    return steps


def size_cap(settings: Settings, content_size: tuple[int, int], output: Output, auto_size: bool) -> int:
    """The largest working size: the content's longest side, unless a larger output is asked for (an
    explicit output size, or an explicit size for a result at the working size)."""
    cap = max(content_size)
    if isinstance(output, tuple):
        cap = max(cap, *output)
    elif output == "working" and not auto_size:
        cap = max(cap, settings.size)
    return cap


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


# ---- tiles: when a scale is over the budget ----------------------------------------------------


def margin_for(settings: Settings) -> tuple[int, int]:
    """(margin, grid) of the blocks a tiled scale runs in: how far the padding at a crop's border
    reaches into the deepest layer, and the deepest pooling's cell, where blocks start."""
    return _margin(settings.model, (*settings.content_layers, *settings.style_layers))


@functools.cache
def _margin(model: str, layers: tuple[str, ...]) -> tuple[int, int]:
    # Cached: the tile search asks for it at every side it tries, and the layout is built each time.
    deepest = max(network.layer_index(model, n) for n in layers)
    stack = list(network.blank_features(model))[: deepest + 1]
    return network.border_margin(stack), network.smallest_side(model, layers)


def fits(settings: Settings, scale: ScalePlan, device_type: str, budget: int) -> bool:
    return memory.job_bytes(settings, scale.width, scale.height, device_type, scale.iterations) <= budget


def tile_bytes(settings: Settings, scale: ScalePlan, tile: int, device_type: str) -> int:
    """A scale run in blocks of `tile`: its largest block's network pass beside the whole image's vectors.

    The blocks are the ones the run will use (`tiling.plan_blocks`): the pieces share each side evenly
    and have no margin at the image's edges, so they are smaller than `tile` plus two margins (counting
    that square over-estimated a 4000 x 3000 job by 1.6x)."""
    margin, grid = margin_for(settings)
    blocks = tiling.plan_blocks(scale.width, scale.height, tile, margin, grid)
    return memory.tiled_job_bytes(
        settings,
        scale.width,
        scale.height,
        ((b.padded.width, b.padded.height) for b in blocks),
        device_type,
        scale.iterations,
    )


def tiled(settings: Settings, scale: ScalePlan, device: torch.device, budget: int) -> ScalePlan:
    """`scale` in the largest tiles whose blocks fit `budget` beside the whole image's vectors."""
    tile = memory.largest_side(
        lambda side: tile_bytes(settings, scale, side, device.type) <= budget, MIN_TILE, scale.longest
    )
    if tile is None:
        # The least that runs it: the smallest tiles never need more than the whole image.
        needed = tile_bytes(settings, scale, MIN_TILE, device.type)
        raise memory.not_enough_memory(
            settings, device, scale.width, scale.height, scale.iterations, needed, available=budget
        )
    return ScalePlan(scale.width, scale.height, scale.iterations, tile)


def next_tile(tile: int | None, scale: ScalePlan) -> int | None:
    """The tile side to try after running out of memory at `tile` (None: the whole image), or None
    when no smaller tile is left."""
    if tile is None:
        return max(MIN_TILE, scale.longest // 2 // 16 * 16)
    smaller = tile // 2 // 16 * 16
    return smaller if smaller >= MIN_TILE else None


# -- the plan in words: what `plan` and `stylize --dry-run` print unless asked for JSON ------------------


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data, with its device (docs/protocol.md, "The plan before running")."""
    return {"device": describe_device(plan.device), **plan.summary()}


def describe_plan(plan: Plan) -> str:
    width, height = plan.output_size
    count = len(plan.scales)
    # A CPU runs the network in bf16 only where it has AMX (network.autocast_dtype): say so, as the
    # pictures differ from an fp32 machine's by rounding.
    bf16 = " (the network in bf16)" if plan.device.type == "cpu" and plan.autocast == torch.bfloat16 else ""
    lines = [
        f"Plan on {describe_device(plan.device)}{bf16}: working size {plan.working_size} px, result "
        f"{width}x{height} px, {count} scale{'s' if count > 1 else ''}:"
    ]
    tiles = {entry["scale"]: entry["count"] for entry in plan.tiles()}
    for index, (scale, seconds) in enumerate(zip(plan.scales, plan.seconds, strict=True), start=1):
        line = f"  {index}. {scale.width}x{scale.height} px, {scale.iterations} iterations"
        if scale.trials > 1:
            line += f" (run up to {scale.trials} times to find the balance of content and style)"
        if scale.tile is not None:
            line += f", in {tiles[index]} tiles of {scale.tile} px (whole, it is over the memory budget)"
        lines.append(f"{line}, {duration(seconds)}")
    lines += [iterations_line(plan), memory_line(plan), time_line(plan)]
    return "\n".join(lines)


def iterations_line(plan: Plan) -> str:
    """The iterations, and why they differ from the preset's when they do."""
    settings, preset = plan.settings, preset_by_name(plan.settings.name)
    total = plan.iterations
    if total == preset.iterations:
        return f"Iterations: {total}, the preset's ({preset.name})."
    reasons = []
    if settings.iterations != preset.iterations:
        reasons.append(f"{settings.iterations} asked for (--iterations)")
    above = [s for s in plan.scales if settings.multiscale and s.longest > preset.size]
    added = sum(s.iterations for s in above)
    trials = sum(s.steps - s.iterations for s in plan.scales)
    if total - added - trials > settings.iterations:
        reasons.append(f"each of the {len(plan.scales)} scales takes at least 1")
    if above:
        reasons.append(
            f"the {len(above)} scale{'s' if len(above) > 1 else ''} above {preset.name}'s {preset.size} px "
            f"add {added} for the detail of the larger sizes"
        )
    if trials:
        reasons.append(f"up to {trials} more while the first scale finds the balance of content and style")
    return f"Iterations: {total}, not the preset's {preset.iterations}: {'; '.join(reasons)}."


def memory_line(plan: Plan) -> str:
    """The peak memory against the budget, and why a peak above the budget is no contradiction."""
    peak = f"Memory: about {data_size(plan.estimate)} at the largest scale"
    if plan.budget >= memory.UNKNOWN_BUDGET:
        return f"{peak}; no budget (this device does not say how much memory is free)."
    source = "--max-memory" if plan.settings.max_memory else f"{memory.FREE_SHARE:.0%} of the free memory"
    budget = f"the budget of {data_size(plan.budget)} ({source})"
    if plan.estimate <= plan.budget:
        return f"{peak}, within {budget}."
    if plan.job_bytes <= plan.budget:
        own = data_size(plan.estimate - plan.job_bytes)
        return (
            f"{peak}, more than {budget}: {own} of it is the engine's own (torch and its libraries), "
            f"which the budget leaves out; the job's {data_size(plan.job_bytes)} is within it."
        )
    return f"{peak}, more than {budget}: it may run out of memory; give a smaller --size."


def time_line(plan: Plan) -> str:
    measured = device_speed(speed_key(plan.device, plan.autocast), plan.device.type).measured
    speed = "this device's measured speed" if measured else "a typical speed (`calibrate` measures this one)"
    total, start = duration(plan.estimated_seconds), duration(plan.startup)
    return f"Time: about {total}, {start} of it to start, at {speed}."
