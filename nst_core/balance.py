"""The balance of content and style chosen per picture: the style weight that brings the first scale's
content error to the preset's target.

Why: one fixed style weight over-paints some styles and under-paints others. Measured on ImageNet
VGG16 (docs/quality.md), the weight that keeps a cat recognisable under The Starry Night erases it
under a dark star field, because the relative style error of a sparse, dark style is far larger for
the same picture. What stays comparable across styles is the content error itself (the relative error
of the relu4_2 features: the fraction of the photo's structure given up), so the user presets aim at
one: the first, coarsest scale (a few percent of the job's work) is run with the preset's weight, the
weight is moved along the measured slope of log error against log weight (a secant step), and the
scale is run again from the start until the error is within TOLERANCE of the target or TRIALS are
spent; the trial nearest the target is kept, and the later scales keep its weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from . import losses
from .images import resize_tensor
from .optimize import RunContext

TRIALS = 3  # first-scale runs at most (the plan's): the preset's weight, then two secant steps
TOLERANCE = 1.15  # within this factor of the target error: close enough, no further trial
FIRST_SLOPE = 0.5  # d log(error) / d log(weight) assumed before a second point is measured
SLOPE_RANGE = (0.1, 2.0)
WEIGHT_RANGE = (1e-3, 1e5)

RunScale = Callable[[RunContext], torch.Tensor]


@dataclass(frozen=True)
class Trial:
    style_weight: float
    error: float
    image: torch.Tensor

    def miss(self, target: float) -> float:
        return abs(math.log(max(self.error, 1e-6) / target))


def content_features(ctx: RunContext, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """The content's features at the first scale's `size` (H, W), resized as the scale's own inputs are:
    computed once for all the trials."""
    with torch.no_grad():
        return ctx.network(resize_tensor(ctx.content, size))


def content_error(ctx: RunContext, image: torch.Tensor, content: dict[str, torch.Tensor]) -> float:
    """The relative content error of `image` against the `content` features (`content_features`): the
    content loss's own measure, without its weight."""
    settings = ctx.settings
    with torch.no_grad():
        ours = ctx.network(image)
        terms = {n: losses.content_loss(ours[n], content[n]) for n in settings.content_layers}
        weights = dict(zip(settings.content_layers, settings.content_layer_weights, strict=True))
        return float(losses.weighted_sum(terms, weights))


def next_weight(trials: list[Trial], target: float) -> float:
    """A secant step in log-log space towards `target`, from the last two trials (or the first and the
    assumed slope)."""
    last = trials[-1]
    slope = FIRST_SLOPE
    if len(trials) > 1:
        before = trials[-2]
        rise = math.log(max(last.error, 1e-6) / max(before.error, 1e-6))
        run = math.log(last.style_weight / before.style_weight)
        if run != 0:
            slope = min(max(rise / run, SLOPE_RANGE[0]), SLOPE_RANGE[1])
    weight = last.style_weight * math.exp(math.log(target / max(last.error, 1e-6)) / slope)
    return min(max(weight, WEIGHT_RANGE[0]), WEIGHT_RANGE[1])


def balanced_first_scale(
    ctx: RunContext, allowed: int, run_scale: RunScale
) -> tuple[torch.Tensor, RunContext]:
    """Run the first scale (`run_scale`) up to `allowed` times until its content error meets the target:
    its image, and the context with the chosen style weight (strength folded in) for the later scales.
    A stop (stop-and-keep) during a trial keeps that trial's picture."""
    settings = ctx.settings
    target = settings.effective_content_target
    assert target is not None
    trials: list[Trial] = []
    content: dict[str, torch.Tensor] | None = None
    weight = settings.effective_style_weight
    for index in range(allowed):
        chosen = replace(settings, style_weight=weight, strength=1.0)
        image = run_scale(replace(ctx, settings=chosen, trial=index, trials=allowed))
        if ctx.steering is not None and ctx.steering.stopped:
            return image, replace(ctx, settings=chosen)
        if content is None:
            content = content_features(ctx, (image.shape[-2], image.shape[-1]))
        trials.append(Trial(weight, content_error(ctx, image, content), image))
        if trials[-1].miss(target) < math.log(TOLERANCE):
            break
        weight = next_weight(trials, target)
    best = min(trials, key=lambda t: t.miss(target))
    return best.image, replace(ctx, settings=replace(settings, style_weight=best.style_weight, strength=1.0))
