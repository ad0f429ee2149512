"""A warm engine's previews, each started from the last one of the same picture when only weights moved.

Why: the dialog previews again each time a setting comes to rest, and the setting a user moves most is
the style's strength. A preview from scratch runs the whole coarse-to-fine ladder (at 256 px: 128,
181 and 256 px, of which the first scales are most of the work); from the last preview of the same
picture, already painted in that style at that size, only the top scale's iterations are needed to
move it to the new weights. A repeat with nothing changed is the last preview itself.

What may differ between a preview and the one it follows: the weights of the terms and the strength
(`WEIGHTS`). Anything else (the pixels of the content, the styles or the masks, the preset, the layers,
the loss, the start, the seed, the size) makes a new picture, painted from scratch. The last preview is
kept per picture in the worker's `stylecache.StyleCache`, so its bytes count against the same budget.
Only jobs that ask for it (`preview` in docs/protocol.md) follow or are kept: any other job's picture
never depends on the jobs before it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from . import balance, stylecache
from .optimize import CachedStyles, Curvature
from .options import Settings
from .plan import Plan

# A followed preview's iterations at its top scale, its L-BFGS starting from the curvature the last one
# left (`Kept.curvature`: its newest balance.CARRIED_PAIRS pairs, each as large as the picture), and its
# picture from the last one's, eased back where it asks for less style (`balance.ease_share`). Measured on
# ImageNet VGG16 at 256 px, strength 1 -> 0.5 -> 0.25 -> 1 -> 2, on The Starry Night and The Scream
# (docs/performance.md): from the curvature, 4 iterations moved more style than the 6 of the top scale
# from a first step that knows nothing, at the same distance to the photo, and 4 without it lagged: a
# preview with no curvature to start from (Adam leaves none) runs the scale's own.
FOLLOW_ITERATIONS = 4

# The settings a preview may change and still start from the last one (the weights of the terms), and
# the one value each takes in a picture's key.
WEIGHTS = {
    "style_weight": 0.0,
    "strength": 1.0,
    "content_target": None,
    "content_weight": 0.0,
    "tv_weight": 0.0,
    "style_blend": (),
}


@dataclass(frozen=True)
class Kept:
    """A finished preview: its last scale's picture (1 x 3 x H x W, on the run's device), the
    settings it was asked for, and the curvature its L-BFGS ended with (None for another optimiser)."""

    image: torch.Tensor
    settings: Settings
    curvature: Curvature | None = None


@dataclass(frozen=True)
class Follow:
    """How a preview runs from the last one (`kept`): `settings` with the style weight it runs at
    (strength folded in); `share`: how far from the run's own start towards `kept` its picture starts
    (1: `kept` itself); `same`: the same settings again, so `kept` is the result."""

    kept: Kept
    settings: Settings
    share: float = 1.0
    same: bool = False


def picture_key(cached: CachedStyles, plan: Plan, masks: Sequence[np.ndarray] | None) -> Hashable:
    """What a preview shares with the one it may follow: everything but `WEIGHTS`."""
    settings = replace(plan.settings, **WEIGHTS)
    return (
        "preview",
        cached.picture,
        cached.digests,
        tuple(stylecache.pixels_digest(m) for m in masks or ()),
        plan.scales,
        settings,
    )


def follow(
    cached: CachedStyles, key: Hashable, settings: Settings, remembered: balance.Remembered | None
) -> Follow | None:
    """The way from this picture's last preview to one with `settings`, or None (none kept: paint it
    from scratch). A balanced preset's weight is where the balance's remembered trials meet its target
    (`balance.first_weight`), as a new run would try first."""
    kept = cached.cache.peek(key)
    if not isinstance(kept, Kept):
        return None
    if kept.settings == settings:
        return Follow(kept, settings, same=True)
    weight = settings.effective_style_weight
    target = settings.effective_content_target
    if remembered and target is not None:
        weight = balance.first_weight(remembered, target, weight)
    chosen = replace(settings, style_weight=weight, strength=1.0)
    share = balance.ease_share(target, kept.settings.effective_content_target)
    if not weight:
        share = 0.0  # no style at all: the photo's own start, nothing of the last painting
    return Follow(kept, chosen, share)


def start(way: Follow, content: torch.Tensor, init_image: torch.Tensor | None) -> torch.Tensor:
    """The picture a following preview starts from: `share` of the way to the last preview from the
    run's own start (`balance.eased_start`, `content` and `init_image` the last scale's)."""
    return balance.eased_start(way.kept.image, way.share, way.settings.init, content, init_image)


def keep(
    cached: CachedStyles, key: Hashable, image: torch.Tensor, settings: Settings, curvature: Curvature | None
) -> None:
    """Keep a finished preview for the next one to follow."""
    cached.cache.put(key, Kept(image.detach(), settings, curvature))
