"""Stylising images larger than memory: overlapping tiles, shifted between passes, feathered.

The optimisation of one tile only sees that tile, so three things keep the tiles agreeing:
the start is an upsampled full-image result (the composition is already settled), the style
targets are computed once for the whole output, and every tile is pasted back through a mask
that falls smoothly to zero at its inner edges, so the picture stays continuous across borders.
The grid moves by half a step between passes, so no border sits at the same place twice.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

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


def _starts(length: int, tile: int, overlap: int, shift: int) -> list[int]:
    """Start positions of windows of `tile` covering [0, length), every neighbour overlapping."""
    if length <= tile:
        return [0]
    step = tile - overlap
    first = -(shift % step)
    positions = range(first, length - overlap, step)
    return sorted({min(max(p, 0), length - tile) for p in positions})


def plan_tiles(width: int, height: int, tile: int, overlap: int, pass_index: int = 0) -> list[Tile]:
    """The tile grid of one pass; odd passes move the grid by half a step on both axes."""
    step = max(1, tile - overlap)
    shift = (step // 2) * (pass_index % 2)
    xs = _starts(width, tile, overlap, shift)
    ys = _starts(height, tile, overlap, shift)
    return [
        Tile(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs
    ]


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


def paste(canvas: np.ndarray, patch: np.ndarray, tile: Tile, mask: np.ndarray) -> None:
    """Blend `patch` (h, w, c) into `canvas` (H, W, c) in place through `mask` (h, w)."""
    region = canvas[tile.y0 : tile.y1, tile.x0 : tile.x1]
    m = mask[..., None]
    region *= 1.0 - m
    region += patch * m


def passes_for(iterations: int, tiles_per_pass: int, iterations_per_tile: int) -> int:
    """How many passes spend `iterations` (counted per tile) at `iterations_per_tile` each."""
    return max(1, math.ceil(iterations / max(1, tiles_per_pass * iterations_per_tile)))


def tile_windows(
    width: int, height: int, tile: int, passes: int
) -> Iterator[tuple[int, Tile, np.ndarray]]:
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
