"""The balance of content and style chosen per picture: the style weight that brings the first scale's
content error to the preset's target.

Why: one fixed style weight over-paints some styles and under-paints others. Measured on ImageNet
VGG16 (docs/quality.md), the weight that keeps a cat recognisable under The Starry Night erases it
under a dark star field, because the relative style error of a sparse, dark style is far larger for
the same picture. What stays comparable across styles is the content error itself (the relative error
of the relu4_2 features: the fraction of the photo's structure given up), so the user presets aim at
one: the first, coarsest scale (a few percent of the job's work) is run with the preset's weight, the
weight is moved along the measured slope of log error against log weight (a secant step), and the
scale is run again until the error is within TOLERANCE of the target or TRIALS are spent; the trial
nearest the target is kept, and the later scales keep its weight. A trial whose error has settled off the
target, by more than TOLERANCE, ends early (`Settling`): its picture would not be kept, so the next trial
carries it on under the new weight instead of starting again (`carried_start`).

A warm engine remembers each picture's trials (`Remembered`: weight and error, which depend on the
content, the style and the settings, not on the target), so the dialog's next preview of the same
picture and style, at the same or another strength, starts from the weight those trials point to and
mostly needs one run of the first scale instead of three.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from . import losses
from .images import resize_tensor
from .optimize import Carry, Curvature, RunContext, initial_image

TRIALS = 3  # first-scale runs at most (the plan's): the preset's weight, then two secant steps
TOLERANCE = 1.15  # within this factor of the target error: close enough, no further trial
FIRST_SLOPE = 0.5  # d log(error) / d log(weight) assumed before a second point is measured
SLOPE_RANGE = (0.1, 2.0)
ERROR_FLOOR = 1e-6  # a content error of 0 (no content weight) still has a logarithm
WEIGHT_RANGE = (1e-3, 1e5)
# A trial ends early once the content errors of its last SETTLE_WINDOW iterations, and their trend carried
# on to its last iteration, all miss the target by more than TOLERANCE on the same side, and not before
# SETTLE_START of its iterations (its first steps move the error most). Measured on ImageNet VGG16 at 384 px,
# 7 pairs and presets (docs/performance.md): a trial's error settles within a fifth of its iterations,
# then drifts by a few percent, once by a fifth over a whole trial; the rule would have ended the 4 of 13
# trials that missed after 25-36% of their iterations, and none of the 9 that landed.
SETTLE_WINDOW = 6
SETTLE_START = 0.25

# A run of the same picture under other weights (the trial after one that ended early; a preview after
# the last one, previews.py) starts from that run's picture and from the newest CARRIED_PAIRS of the
# curvature its L-BFGS learnt (`optimize.Curvature`). Where it asks for less style (a lower content error
# than the picture's), the picture is first eased back towards the run's own start: (target / reached)
# ** EASE_BACK of the way from there to the picture. Measured on ImageNet VGG16 at 256 px for previews,
# strength 1 -> 0.5 -> 0.25, against a preview painted from scratch: 0 (the picture as it is) kept too
# much style (The Starry Night at 0.5: style judge 0.173 against 0.203), 1 gave too little (The Scream
# at 0.5: content judge 0.786 against 0.886), 0.5 came level on both judges on both pairs
# (docs/performance.md). For the balance's trials, see `carried_start`.
EASE_BACK = 0.5
CARRIED_PAIRS = 8

# A run of the first scale: from a picture (None: the run's own start), for a number of iterations (None:
# the scale's).
RunScale = Callable[[RunContext, torch.Tensor | None, int | None], torch.Tensor]


def log_miss(error: float, target: float) -> float:
    """log(error / target): how far, and on which side, a content error misses its target."""
    return math.log(max(error, ERROR_FLOOR) / target)


@dataclass(frozen=True)
class Trial:
    style_weight: float
    error: float
    image: torch.Tensor
    ended_early: bool = False  # by `Settling`: its picture is unfinished

    def miss(self, target: float) -> float:
        return abs(log_miss(self.error, target))


@dataclass
class Settling:
    """A trial's watch (`optimize.Watch`): the content error after each step, from the loss's own content
    term, and whether the trial ends early (see SETTLE_WINDOW). `may_end` False only counts the steps."""

    target: float
    content_weight: float
    may_end: bool
    errors: list[float] = field(default_factory=list)
    iterations: int = 0  # planned for this run (a carried trial plans fewer than the scale has)
    ended: bool = False

    def __call__(self, iteration: int, iterations: int, parts: dict[str, float]) -> bool:
        self.iterations = iterations
        if self.content_weight <= 0:
            self.errors.append(0.0)
            return False
        self.errors.append(parts["content"] / self.content_weight)
        if not self.may_end or iteration <= max(SETTLE_WINDOW, SETTLE_START * iterations):
            return False
        misses = [log_miss(e, self.target) for e in self.errors[-SETTLE_WINDOW:]]
        ahead = misses[-1] + _slope(misses) * (iterations - iteration)
        bound = math.log(TOLERANCE)
        above = min(misses) > bound and ahead > bound
        below = max(misses) < -bound and ahead < -bound
        self.ended = above or below
        return self.ended


def _slope(values: list[float]) -> float:
    """The least-squares slope of `values` against their index."""
    mean_x, mean_y = (len(values) - 1) / 2, sum(values) / len(values)
    spread = sum((x - mean_x) ** 2 for x in range(len(values)))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread


def ease_share(target: float | None, reached: float | None) -> float:
    """How far from a run's own start towards a picture that `reached` a content error the run aiming
    at `target` starts (see EASE_BACK): all the way where it asks for as much style or more."""
    if not reached or target is None:
        return 1.0
    return min(1.0, target / reached) ** EASE_BACK


def eased_start(
    picture: torch.Tensor, share: float, init: str, content: torch.Tensor, init_image: torch.Tensor | None
) -> torch.Tensor:
    """`share` of the way to `picture` from the run's own start (`optimize.initial_image` of `content`,
    at the picture's size, and `init_image`), or from the photo where that start is noise."""
    if share >= 1.0:
        return picture
    origin = initial_image("content" if init == "noise" else init, content, 0, init_image)
    return origin + share * (picture - origin)


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


# (style weight, content error) points kept per picture: the latest few, around where the targets were.
Remembered = list[tuple[float, float]]
REMEMBERED_POINTS = 6


def secant_weight(point: tuple[float, float], other: tuple[float, float] | None, target: float) -> float:
    """A secant step in log-log space from `point` (weight, error) towards `target`, its slope measured
    against `other` (or assumed: FIRST_SLOPE), kept within SLOPE_RANGE and the weight within WEIGHT_RANGE."""
    weight, error = point
    slope = FIRST_SLOPE
    if other is not None and other[0] != weight:
        rise = log_miss(error, max(other[1], ERROR_FLOOR))
        slope = min(max(rise / math.log(weight / other[0]), SLOPE_RANGE[0]), SLOPE_RANGE[1])
    weight *= math.exp(-log_miss(error, target) / slope)
    return min(max(weight, WEIGHT_RANGE[0]), WEIGHT_RANGE[1])


def first_weight(remembered: Remembered, target: float, default: float) -> float:
    """The weight to try first: where the remembered points' curve meets `target` (a secant through the
    nearest point and the nearest on the target's other side, else the next nearest), or `default`."""
    if not remembered:
        return default
    points = sorted(remembered, key=lambda p: abs(log_miss(p[1], target)))
    nearest, rest = points[0], points[1:]
    above = nearest[1] > target
    other = next((p for p in rest if (p[1] > target) != above), rest[0] if rest else None)
    return secant_weight(nearest, other, target)


def next_weight(trials: list[Trial], target: float) -> float:
    """A secant step in log-log space towards `target`, from the last two trials (or the first and the
    assumed slope)."""
    last = trials[-1]
    before = (trials[-2].style_weight, trials[-2].error) if len(trials) > 1 else None
    return secant_weight((last.style_weight, last.error), before, target)


@dataclass(frozen=True)
class Carried:
    """Where the trial after one that ended early starts (`carried_start`)."""

    image: torch.Tensor
    iterations: int
    curvature: Curvature | None


def carried_start(
    ctx: RunContext, trial: Trial, steps: int, iterations: int, curvature: Curvature | None, target: float
) -> Carried:
    """The next trial after `trial`, which ended early after `steps` of the scale's `iterations`: from its
    picture, eased back where the next asks for less style (`ease_share`), and its L-BFGS's newest
    curvature, for the iterations it left (at least SETTLE_START of the scale's, so that the new weight
    settles): a second trial's picture then has the scale's iterations in all. On ImageNet VGG16 at 384
    px (docs/performance.md) the cat under the star field at strength 3 takes 44 first-scale iterations
    instead of 58, the job 8% less time, and the picture is level on both judges with the one from a
    second trial started afresh, as on three other pairs whose first trial ended early."""
    size = (trial.image.shape[-2], trial.image.shape[-1])
    content = resize_tensor(ctx.content, size)
    share = ease_share(target, trial.error)
    image = eased_start(trial.image, share, ctx.settings.init, content, ctx.init_image)
    left = max(iterations - steps, math.ceil(SETTLE_START * iterations))
    return Carried(image, left, curvature)


def balanced_first_scale(
    ctx: RunContext, allowed: int, run_scale: RunScale, remembered: Remembered | None = None
) -> tuple[torch.Tensor, RunContext]:
    """Run the first scale (`run_scale`) up to `allowed` times until its content error meets the target:
    its image, and the context with the chosen style weight (strength folded in) for the later scales.
    A trial after one that ended early carries that one's picture on (`carried_start`). A stop
    (stop-and-keep) during a trial keeps that trial's picture. `remembered`: this picture's earlier trials
    (a warm engine's), which choose the first weight and are added to."""
    settings = ctx.settings
    target = settings.effective_content_target
    assert target is not None
    trials: list[Trial] = []
    content: dict[str, torch.Tensor] | None = None
    memory = [] if remembered is None else remembered
    weight = first_weight(memory, target, settings.effective_style_weight)
    given = None if ctx.carry is None else ctx.carry.given
    carried: Carried | None = None
    steps, planned = 0, 1
    for index in range(allowed):
        chosen = replace(settings, style_weight=weight, strength=1.0)
        watch = Settling(target, chosen.content_weight, may_end=index < allowed - 1)
        carry = Carry(CARRIED_PAIRS, given=given if carried is None else carried.curvature)
        run = replace(ctx, settings=chosen, steps_before=steps, watch=watch, carry=carry)
        start, iterations = (None, None) if carried is None else (carried.image, carried.iterations)
        image = run_scale(run, start, iterations)
        if ctx.steering is not None and ctx.steering.stopped:
            return image, replace(ctx, settings=chosen)
        steps, planned = steps + len(watch.errors), max(planned, watch.iterations)
        if content is None:
            content = content_features(ctx, (image.shape[-2], image.shape[-1]))
        trials.append(Trial(weight, content_error(ctx, image, content), image, watch.ended))
        memory.append((weight, trials[-1].error))
        del memory[:-REMEMBERED_POINTS]
        if trials[-1].miss(target) < math.log(TOLERANCE):
            break
        weight = next_weight(trials, target)
        ran = len(watch.errors)
        carried = carried_start(ctx, trials[-1], ran, planned, carry.left, target) if watch.ended else None
    ctx.clock.settle(0, steps / (allowed * planned))
    finished = [t for t in trials if not t.ended_early] or trials
    best = min(finished, key=lambda t: t.miss(target))
    return best.image, replace(ctx, settings=replace(settings, style_weight=best.style_weight, strength=1.0))
