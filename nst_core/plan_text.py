"""A plan in words: what `plan` and `stylize --dry-run` print unless asked for JSON.

The scales with their sizes, iterations, tiles and times; then why the iterations differ from the
preset's, how the memory compares with the budget, and the time, each in one line.
"""

from __future__ import annotations

from typing import Any

from . import memory
from .devices import describe_device
from .options import preset_by_name
from .plan import Plan
from .readable import data_size, duration
from .speed import device_speed


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-ready data, with its device (docs/protocol.md, "The plan before running")."""
    return {"device": describe_device(plan.device), **plan.summary()}


def describe_plan(plan: Plan) -> str:
    width, height = plan.output_size
    count = len(plan.scales)
    lines = [
        f"Plan on {describe_device(plan.device)}: working size {plan.working_size} px, result "
        f"{width}x{height} px, {count} scale{'s' if count > 1 else ''}:"
    ]
    tiles = {entry["scale"]: entry["count"] for entry in plan.tiles()}
    for index, (scale, seconds) in enumerate(zip(plan.scales, plan.seconds, strict=True), start=1):
        line = f"  {index}. {scale.width}x{scale.height} px, {scale.iterations} iterations"
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
    if total - added > settings.iterations:
        reasons.append(f"each of the {len(plan.scales)} scales takes at least 1")
    if above:
        reasons.append(
            f"the {len(above)} scale{'s' if len(above) > 1 else ''} above {preset.name}'s {preset.size} px "
            f"add {added} for the detail of the larger sizes"
        )
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
    measured = device_speed(describe_device(plan.device), plan.device.type).measured
    speed = "this device's measured speed" if measured else "a typical speed (`calibrate` measures this one)"
    total, start = duration(plan.estimated_seconds), duration(plan.startup)
    return f"Time: about {total}, {start} of it to start, at {speed}."
