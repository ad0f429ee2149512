"""Stylising images larger than memory: overlapping tiles, shifted between passes, feathered.

The optimisation of one tile only sees that tile, so three things keep the tiles agreeing:
the start is an upsampled full-image result (the composition is already settled), the style
targets are computed once for the whole output, and every tile is pasted back through a mask
that falls smoothly to zero at its inner edges, so the picture stays continuous across borders.
The grid moves by half a step between passes, so no border sits at the same place twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from . import losses, memory, optimize
from .errors import OutOfMemoryError
from .images import fit_size, resize_tensor
from .network import VGGFeatures
from .options import Settings

MIN_TILE = 128  # below this a tile sees too little of the picture to carry a style
MIN_OVERLAP = 32


@dataclass(frozen=True)
class Tile:
    """A window [x0, x1) x [y0, y1) of the image, in pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def overlap_for(tile: int) -> int:
    """A quarter of the tile: wide enough that the ramp hides the change of neighbourhood."""
    return max(MIN_OVERLAP, tile // 4)


def _spans(length: int, tile: int, overlap: int, shift: int) -> list[tuple[int, int]]:
    """[start, end) windows of at most `tile` covering [0, length), neighbours sharing `overlap`.

    The first window starts `shift` before 0 and is cut there; the last is cut at the end and
    stays wider than the overlap. Cutting rather than sliding keeps the borders of a shifted
    pass away from those of the pass before.
    """
    if length <= tile:
        return [(0, length)]
    step = tile - overlap
    first = -(shift % step)
    return [(max(p, 0), min(p + tile, length)) for p in range(first, length - overlap, step)]


def plan_tiles(width: int, height: int, tile: int, overlap: int, pass_index: int = 0) -> list[Tile]:
    """The tile grid of one pass; odd passes move the grid by half a step on both axes."""
    step = max(1, tile - overlap)
    shift = (step // 2) * (pass_index % 2)
    xs = _spans(width, tile, overlap, shift)
    ys = _spans(height, tile, overlap, shift)
    return [Tile(x0, y0, x1, y1) for y0, y1 in ys for x0, x1 in xs]


def _ramp(length: int, overlap: int, fade_start: bool, fade_end: bool) -> np.ndarray:
    """1 in the middle, a raised-cosine fall to near 0 over `overlap` pixels at faded ends."""
    weight = np.ones(length, np.float32)
    n = min(overlap, length // 2)
    if n <= 0:
        return weight
    t = (np.arange(n, dtype=np.float32) + 0.5) / n
    rise = 0.5 - 0.5 * np.cos(np.pi * t)
    if fade_start:
        weight[:n] = rise
    if fade_end:
        weight[length - n :] = rise[::-1]
    return weight


def feather_mask(tile: Tile, width: int, height: int, overlap: int) -> np.ndarray:
    """A (height, width) weight for pasting `tile`: ramps only on edges inside the image."""
    wx = _ramp(tile.width, overlap, tile.x0 > 0, tile.x1 < width)
    wy = _ramp(tile.height, overlap, tile.y0 > 0, tile.y1 < height)
    return wy[:, None] * wx[None, :]


def paste(canvas: torch.Tensor, patch: torch.Tensor, tile: Tile, mask: torch.Tensor) -> None:
    """Blend `patch` (1 x C x h x w) into `canvas` (1 x C x H x W) in place through `mask` (h x w)."""
    region = canvas[..., tile.y0 : tile.y1, tile.x0 : tile.x1]
    region.mul_(1.0 - mask).add_(patch * mask)


def tile_schedule(iterations: int) -> tuple[int, int]:
    """(passes, iterations per tile) spending about a scale's `iterations` on every pixel.

    A tile needs two iterations at least: the optimiser keeps the best *evaluated* iterate,
    and the result of a tile's last step is only evaluated by the step after it.
    """
    passes = 2 if iterations >= 4 else 1
    return passes, max(2, iterations // passes)


def tile_windows(width: int, height: int, tile: int, passes: int) -> Iterator[tuple[int, Tile, np.ndarray]]:
    """(pass index, tile, feather mask) over all passes, in paste order."""
    overlap = overlap_for(tile)
    for index in range(passes):
        for window in plan_tiles(width, height, tile, overlap, index):
            yield index, window, feather_mask(window, width, height, overlap)


def largest_fitting_tile(fits: Callable[[int], bool], longest_side: int) -> int | None:
    """The largest square tile side (a multiple of 16, at least MIN_TILE) that `fits`, or None."""
    low, high = MIN_TILE, max(MIN_TILE, longest_side)
    if not fits(low):
        return None
    while high - low > 16:
        middle = (low + high) // 2 // 16 * 16
        if middle <= low:
            break
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


def partition(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) pieces of nearly equal size, at most `tile` long, covering [0, length) once."""
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


# ---- running a scale in tiles ----------------------------------------------------------------


def whole_style_targets(
    network: VGGFeatures,
    styles: Sequence[torch.Tensor],
    settings: Settings,
    size: tuple[int, int],
    tile: int,
    autocast_dtype: torch.dtype | None,
) -> dict[str, losses.StyleTarget]:
    """Style targets for the whole output, each style's statistics averaged over its pieces.

    Statistics are means over positions, so the pixel-weighted average of the pieces' is the
    whole image's (up to the padding at piece borders), whatever the style's size.
    """
    longest = round(max(size) * settings.style_scale)
    per_style = []
    for style in styles:
        h, w = style.shape[-2:]
        sw, sh = fit_size(w, h, longest, network.min_side)
        style = resize_tensor(style, (sh, sw))
        pieces, weights = [], []
        for y0, y1 in partition(sh, tile):
            for x0, x1 in partition(sw, tile):
                crop = style[..., y0:y1, x0:x1]
                pieces.append(optimize.style_statistics(network, crop, settings, autocast_dtype))
                weights.append(float((y1 - y0) * (x1 - x0)))
        per_style.append(
            {n: losses.blend_statistics([p[n] for p in pieces], weights) for n in settings.style_layers}
        )
    return optimize.blended_style_targets(per_style, settings)


@dataclass
class TiledScale:
    """One scale of the schedule optimised tile by tile over a full-size canvas."""

    network: VGGFeatures
    settings: Settings
    clock: optimize.Clock
    scale: int
    tile: int
    autocast_dtype: torch.dtype | None = None
    progress: optimize.ProgressCallback | None = None
    cancel: optimize.CancelToken | None = None

    def run(self, content: torch.Tensor, styles: Sequence[torch.Tensor], start: torch.Tensor) -> torch.Tensor:
        plan = self.clock.plans[self.scale]
        size = (plan.height, plan.width)
        content = resize_tensor(content, size)
        canvas = optimize.start_image(start, content, self.settings, None)
        targets = whole_style_targets(
            self.network, styles, self.settings, size, self.tile, self.autocast_dtype
        )
        passes, per_tile = tile_schedule(plan.iterations)
        windows = list(tile_windows(plan.width, plan.height, self.tile, passes))
        total = len(windows) * per_tile
        for number, (_, window, mask) in enumerate(windows):
            patch = self._optimise_tile(content, canvas, window, targets, per_tile, number * per_tile, total)
            paste(canvas, patch, window, torch.from_numpy(mask).to(canvas.device, canvas.dtype))
        return canvas

    def _optimise_tile(
        self,
        content: torch.Tensor,
        canvas: torch.Tensor,
        window: Tile,
        targets: dict[str, losses.StyleTarget],
        iterations: int,
        done: int,
        total: int,
    ) -> torch.Tensor:
        crop = (..., slice(window.y0, window.y1), slice(window.x0, window.x1))
        inputs = optimize.ScaleInputs(content[crop], [])
        objective = optimize.build_objective(
            self.network, inputs, self.settings, self.autocast_dtype, style_targets=targets
        )
        stepper = optimize.Stepper(
            canvas[crop],
            objective,
            self.settings.optimizer,
            self.settings.learning_rate,
            optimize.loss_scale_for(self.autocast_dtype),
        )
        for iteration in range(1, iterations + 1):
            optimize.check_cancel(self.cancel)
            parts = stepper.step()
            self._report(done + iteration, total, parts, canvas)
        return stepper.result()

    def _report(self, done: int, total: int, parts: dict[str, float], canvas: torch.Tensor) -> None:
        if self.progress is None:
            return
        plan = self.clock.plans[self.scale]
        report = self.clock.progress(self.scale, plan.iterations * done / total, parts)
        report.iteration, report.iterations = done, total  # tile steps: what the user sees advance
        if done == total:
            report.preview = optimize.to_preview(canvas)
        self.progress(report)


# ---- deciding when to tile, and falling back on out-of-memory ----------------------------------


def is_out_of_memory(exc: BaseException) -> bool:
    """torch.OutOfMemoryError on CUDA; a plain RuntimeError from the CPU and MPS allocators."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _release_cached_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def smaller_tile(tile: int) -> int | None:
    """The next tile side to try after running out of memory, or None when none is left."""
    smaller = tile // 2 // 16 * 16
    return smaller if smaller >= MIN_TILE else None


def with_tile_fallback(
    run_whole: Callable[[], torch.Tensor] | None,
    run_tiles: Callable[[int], torch.Tensor],
    first_tile: int,
    what: str,
) -> torch.Tensor:
    """Run a scale whole (when `run_whole` is given), then in ever smaller tiles while memory runs out."""
    if run_whole is not None:
        try:
            return run_whole()
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        _release_cached_memory()
    tile: int | None = first_tile
    while tile is not None:
        try:
            return run_tiles(tile)
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        _release_cached_memory()
        tile = smaller_tile(tile)
    raise OutOfMemoryError(
        f"Not enough memory for {what} even in {MIN_TILE} px tiles: "
        "close other programs, use a smaller --size, or --device cpu."
    )


def _whole_image_bytes(width: int, height: int) -> int:
    """The full-size canvas, content, start and the upsampling's scratch, in float32."""
    return 4 * 3 * width * height * 4


def fits(settings: Settings, plan: optimize.ScalePlan, device_type: str, budget: int) -> bool:
    return memory.job_bytes(settings, plan.width, plan.height, device_type, plan.iterations) <= budget


def choose_tile(settings: Settings, plan: optimize.ScalePlan, device_type: str, budget: int) -> int:
    """The largest tile whose optimisation fits `budget` beside the full-size images."""
    _, per_tile = tile_schedule(plan.iterations)
    spare = budget - _whole_image_bytes(plan.width, plan.height)

    def tile_fits(side: int) -> bool:
        return memory.job_bytes(settings, side, side, device_type, per_tile) <= spare

    tile = largest_fitting_tile(tile_fits, max(plan.width, plan.height))
    if tile is None:
        need = memory.job_bytes(settings, MIN_TILE, MIN_TILE, device_type, per_tile)
        need = (need + _whole_image_bytes(plan.width, plan.height)) // memory.MIB + 1
        raise OutOfMemoryError(
            f"A memory budget of {budget // memory.MIB} MiB is too small for {plan.width}x{plan.height} px "
            f"even in tiles: allow at least {need} MiB (--max-memory) or use a smaller --size."
        )
    return tile


def coarse_plan(
    settings: Settings, plan: optimize.ScalePlan, device_type: str, budget: int
) -> optimize.ScalePlan:
    """The largest whole-image scale that fits, with half the first scale's iterations."""

    def side_fits(side: int) -> bool:
        w, h = fit_size(plan.width, plan.height, side)
        return fits(settings, optimize.ScalePlan(w, h, plan.iterations), device_type, budget)

    side = largest_fitting_tile(side_fits, max(plan.width, plan.height)) or MIN_TILE
    width, height = fit_size(plan.width, plan.height, side)
    return optimize.ScalePlan(width, height, max(1, plan.iterations // 2))


@dataclass
class BudgetedRun:
    """Coarse to fine like `optimize.run`; a scale over the budget (or out of memory) runs in tiles."""

    network: VGGFeatures
    content: torch.Tensor
    styles: Sequence[torch.Tensor]
    settings: Settings
    device_type: str
    budget: int
    init_image: torch.Tensor | None = None
    autocast_dtype: torch.dtype | None = None
    progress: optimize.ProgressCallback | None = None
    cancel: optimize.CancelToken | None = None

    def run(self, plans: Sequence[optimize.ScalePlan]) -> torch.Tensor:
        clock = optimize.Clock(plans)
        image: torch.Tensor | None = None
        for scale, plan in enumerate(plans):
            whole = fits(self.settings, plan, self.device_type, self.budget)
            if image is None and not whole:
                image = self._coarse_start(plan)  # tiles must agree on the composition: settle it first
            image = self._run_scale(clock, scale, image, whole)
        assert image is not None
        return image

    def _coarse_start(self, plan: optimize.ScalePlan) -> torch.Tensor:
        coarse = coarse_plan(self.settings, plan, self.device_type, self.budget)
        return optimize.run(
            self.network,
            self.content,
            self.styles,
            self.settings,
            [coarse],
            init_image=self.init_image,
            autocast_dtype=self.autocast_dtype,
            cancel=self.cancel,
        )

    def _run_scale(
        self, clock: optimize.Clock, scale: int, previous: torch.Tensor | None, whole: bool
    ) -> torch.Tensor:
        plan = clock.plans[scale]

        def run_whole() -> torch.Tensor:
            return optimize.optimize_scale(
                self.network,
                self.content,
                self.styles,
                self.settings,
                clock,
                scale,
                previous,
                init_image=self.init_image,
                autocast_dtype=self.autocast_dtype,
                progress=self.progress,
                cancel=self.cancel,
            )

        def run_tiles(tile: int) -> torch.Tensor:
            start = previous
            if start is None:  # a whole scale ran out of memory before any result existed
                content = resize_tensor(self.content, (plan.height, plan.width))
                start = optimize.start_image(None, content, self.settings, self.init_image)
            tiled = TiledScale(
                self.network,
                self.settings,
                clock,
                scale,
                tile,
                self.autocast_dtype,
                self.progress,
                self.cancel,
            )
            return tiled.run(self.content, self.styles, start)

        if whole:
            return with_tile_fallback(run_whole, run_tiles, _half(plan), f"{plan.width}x{plan.height} px")
        first = choose_tile(self.settings, plan, self.device_type, self.budget)
        return with_tile_fallback(None, run_tiles, first, f"{plan.width}x{plan.height} px")


def _half(plan: optimize.ScalePlan) -> int:
    """The first tile to try when a scale that should fit runs out of memory anyway."""
    return max(MIN_TILE, max(plan.width, plan.height) // 2 // 16 * 16)
