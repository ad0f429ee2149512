"""Stylising images larger than memory: overlapping tiles, shifted between passes, feathered.

The optimisation of one tile only sees that tile, so three things keep the tiles agreeing:
the start is an upsampled full-image result (the composition is already settled), the style
targets are computed once for the whole output, and every tile is pasted back through a mask
that falls smoothly to zero at its inner edges, so the picture stays continuous across borders.
The grid moves by half a step between passes, so no border sits at the same place twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import losses, optimize
from .images import fit_size, resize_tensor
from .optimize import RunContext
from .plan import ScalePlan, tile_schedule

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


def tile_windows(width: int, height: int, tile: int, passes: int) -> Iterator[tuple[int, Tile, np.ndarray]]:
    """(pass index, tile, feather mask) over all passes, in paste order."""
    overlap = overlap_for(tile)
    for index in range(passes):
        for window in plan_tiles(width, height, tile, overlap, index):
            yield index, window, feather_mask(window, width, height, overlap)


def partition(length: int, tile: int) -> list[tuple[int, int]]:
    """[start, end) pieces of nearly equal size, at most `tile` long, covering [0, length) once."""
    count = max(1, math.ceil(length / tile))
    edges = [round(i * length / count) for i in range(count + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


# ---- running a scale in tiles ----------------------------------------------------------------


def whole_style_targets(ctx: RunContext, size: tuple[int, int], tile: int) -> dict[str, losses.StyleTarget]:
    """Style targets for the whole output, each style's statistics averaged over its pieces.

    Statistics are means over positions, so the pixel-weighted average of the pieces' is the
    whole image's (up to the padding at piece borders), whatever the style's size.
    """
    settings, network = ctx.settings, ctx.network
    longest = round(max(size) * settings.style_scale)
    per_style = []
    for style in ctx.styles:
        h, w = style.shape[-2:]
        sw, sh = fit_size(w, h, longest, network.min_side)
        style = resize_tensor(style, (sh, sw))
        pieces, weights = [], []
        for y0, y1 in partition(sh, tile):
            for x0, x1 in partition(sw, tile):
                crop = style[..., y0:y1, x0:x1]
                pieces.append(optimize.style_statistics(network, crop, settings, ctx.autocast))
                weights.append(float((y1 - y0) * (x1 - x0)))
        per_style.append(
            {n: losses.blend_statistics([p[n] for p in pieces], weights) for n in settings.style_layers}
        )
    return optimize.blended_style_targets(per_style, settings)


def optimize_tiled(
    ctx: RunContext, index: int | None, scale: ScalePlan, tile: int, previous: torch.Tensor | None
) -> torch.Tensor:
    """Scale number `index` optimised tile by tile over a full-size canvas started from `previous`
    (or, when no scale ran before, from the init)."""
    ctx.check_cancel()
    size = (scale.height, scale.width)
    content = resize_tensor(ctx.content, size)
    canvas = optimize.start_image(previous, content, ctx.settings, ctx.init_image)
    targets = whole_style_targets(ctx, size, tile)
    passes, per_tile = tile_schedule(scale.iterations)
    windows = list(tile_windows(scale.width, scale.height, tile, passes))
    total = len(windows) * per_tile
    last: dict[str, float] = {}
    for number, (_, window, mask) in enumerate(windows):
        crop = (..., slice(window.y0, window.y1), slice(window.x0, window.x1))
        inputs = optimize.ScaleInputs(content[crop], [])
        objective = optimize.build_objective(ctx.network, inputs, ctx.settings, ctx.autocast, targets)
        done = number * per_tile

        def on_step(iteration: int, parts: dict[str, float], done: int = done) -> None:
            last.update(parts)
            if done + iteration < total:  # the last step is reported once its tile is pasted
                ctx.report(index, done + iteration, total, parts)

        patch = optimize.iterate(ctx, ctx.stepper(canvas[crop], objective), per_tile, on_step)
        paste(canvas, patch, window, torch.from_numpy(mask).to(canvas.device, canvas.dtype))
    ctx.report(index, total, total, last, canvas)
    return canvas
