"""The optimisation of one scale: its objective, one step per iteration (the pixels' own L-BFGS,
`LBFGS`, or Adam, or plain gradient steps), the best iterate, progress.

Images here are torch tensors 1 x 3 x H x W in [0, 1] on the working device; `run.py` converts
from and to user images and drives the scales of a plan, each through `optimize_scale`, whose
objective evaluates the whole image at once (`objective.Objective`) or block by block
(`tiling.TiledObjective`): the same loss, the same steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from . import regions, tiling
from .errors import Cancelled
from .images import fit_size, from_tensor, resize_tensor
from .losses import StyleTarget
from .network import VGGFeatures
from .objective import (
    Evaluates,
    Objective,
    Statistics,
    Terms,
    blended_style_targets,
    content_features,
    own_style_targets,
    style_statistics,
)
from .options import SNAPSHOT_EVERY, Settings
from .stylecache import ScopedCache
from .tiling import ScalePlan

GD_STEP_FLOOR = 1e-12
FP16_LOSS_SCALE = 1024.0  # static scale so half-precision gradients inside the network do not underflow
LBFGS_HISTORY = 50  # pixel-sized vector pairs kept: part of the memory estimate (memory.py)
LBFGS_FIRST_STEP = 0.03  # mean pixel displacement of each scale's first iteration (pixels in [0, 1])
LBFGS_RETRY_SHRINK = 0.25  # a step that raised the loss is tried again at this share of its length
LBFGS_CURVATURE_FLOOR = 1e-10  # pairs with s.y at or below this take no part (torch uses the same)
# Snapshots keep at least this many times their own cost apart: they take at most ~5% of a run's time.
SNAPSHOT_COST_FACTOR = 20.0


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class Progress:
    scale: int  # 1-based
    scales: int
    iteration: int  # 1-based, within this scale
    iterations: int  # of this scale
    fraction: float  # of the whole job's work (pixel-weighted)
    elapsed: float
    eta: float
    loss: dict[str, float]
    preview: np.ndarray | None = None  # H x W x 3 float32, on the last iteration of each scale
    tiles: int = 1  # the blocks this scale runs in (1: the whole image at once)


ProgressCallback = Callable[[Progress], None]
# The current image (1 x 3 x h x w at its scale), the iterations the job has done, its fraction done, and
# whether the picture is wanted at the output's size (else at the working size).
TakeSnapshot = Callable[[torch.Tensor, int, float, bool], None]
# Called after each step of a scale with the iteration, the scale's iterations and the loss's parts: True
# ends the scale there.
Watch = Callable[[int, int, dict[str, float]], bool]


class Steering:
    """What a front end sees and steers of a run besides progress and cancel: its current picture now
    and then (`take`, every `every` seconds of work at the least), and stop-and-keep (`stop`: the run
    ends after the iteration under way and keeps what it has).

    A snapshot's cost (the picture made and written) is measured each time and the next one waits at
    least SNAPSHOT_COST_FACTOR times that. The first is asked for at the output's size; when that
    alone costs more than the spacing asked for allows, later ones come at the working size."""

    def __init__(
        self, take: TakeSnapshot | None = None, every: float = SNAPSHOT_EVERY, stop: CancelToken | None = None
    ) -> None:
        self.take = take
        self.every = every
        self.stop = stop
        self.iterations = 0  # done in the whole job
        self.stopped = False  # the run ended early at `stop`
        self.full_size = True
        self.taken = 0  # snapshots so far
        self.seconds = 0.0  # their cost in all
        self._due = math.inf

    def begin(self) -> None:
        """The work starts now: the first snapshot is due `every` seconds from here."""
        self._due = time.perf_counter() + self.every

    def after_step(self, image: Callable[[], torch.Tensor], fraction: float) -> bool:
        """One more iteration done: a snapshot when one is due; True when the run is to stop here."""
        self.iterations += 1
        if self.take is not None and time.perf_counter() >= self._due:
            started = time.perf_counter()
            self.take(image(), self.iterations, fraction, self.full_size)
            ended = time.perf_counter()
            cost = ended - started
            self.taken += 1
            self.seconds += cost
            if self.full_size and cost * SNAPSHOT_COST_FACTOR > self.every:
                self.full_size = False
            self._due = ended + max(self.every, cost * SNAPSHOT_COST_FACTOR)
        if self.stop is not None and self.stop.is_set():
            self.stopped = True
        return self.stopped


@dataclass
class ScaleInputs:
    content: torch.Tensor  # 1 x 3 x H x W at this scale
    styles: list[torch.Tensor]  # each resized for this scale
    masks: list[torch.Tensor] | None = None  # one per style, 1 x 1 x H x W at this scale (regions.py)


def build_objective(
    network: VGGFeatures,
    inputs: ScaleInputs,
    settings: Settings,
    autocast_dtype: torch.dtype | None,
    tile: int | None = None,
    cached: CachedStyles | None = None,
) -> Evaluates:
    """The scale's objective, on the whole image at once or (`tile`) block by block; the style targets
    from `cached` where a warm engine kept them."""
    if inputs.masks is None:
        targets = style_targets(network, inputs, settings, autocast_dtype, tile, cached)
        terms = Terms.of(network, settings, targets, autocast_dtype)
    else:
        own = own_targets(network, inputs, settings, autocast_dtype, tile, cached)
        masked = regions.build_regions(own, inputs.masks, settings.style_blend, network.factors)
        terms = Terms.of(network, settings, {}, autocast_dtype, masked)
    if tile is not None:
        return tiling.TiledObjective.build(terms, inputs.content, tile, settings.content_layers)
    if cached is None or cached.content is None:
        return Objective.build(terms, inputs.content, settings.content_layers)
    layers = tuple(settings.content_layers)
    key = ("content", cached.content, tuple(inputs.content.shape[-2:]), layers)
    return Objective(terms, cached.cache.get(key, lambda: content_features(terms, inputs.content, layers)))


@dataclass(frozen=True)
class CachedStyles:
    """A warm engine's cache as one run uses it: `digests` name each style's pixels as the network
    sees them (after keep_colors), the scoped cache's prefix the network, device and precision."""

    cache: ScopedCache
    digests: tuple[str, ...]
    # The content's pixels as the network sees them: hashed once, for every key about this picture.
    picture: str = ""
    # The name of the content's features where they are kept too (a preview: the next one of the picture
    # reads them again at its top scale, a sixth of its time there), else None: a job's content rarely
    # comes twice.
    content: str | None = None

    def style_keys(self, inputs: ScaleInputs, settings: Settings, tile: int | None) -> list[tuple]:
        """Each style's key at this scale: its pixels, the size they are matched at, the tile the
        statistics are summed over, and the settings that shape them."""
        shaping = (tuple(settings.style_layers), settings.style_loss, tile)
        return [
            (digest, tuple(style.shape[-2:]), shaping)
            for digest, style in zip(self.digests, inputs.styles, strict=True)
        ]


def per_style_statistics(
    network: VGGFeatures,
    inputs: ScaleInputs,
    settings: Settings,
    autocast_dtype: torch.dtype | None,
    tile: int | None,
) -> list[Statistics]:
    if tile is None:
        return [style_statistics(network, s, settings, autocast_dtype) for s in inputs.styles]
    return [
        tiling.style_statistics(network, s, settings.style_layers, settings.style_loss, tile, autocast_dtype)
        for s in inputs.styles
    ]


def style_targets(
    network: VGGFeatures,
    inputs: ScaleInputs,
    settings: Settings,
    autocast_dtype: torch.dtype | None,
    tile: int | None,
    cached: CachedStyles | None,
) -> dict[str, StyleTarget]:
    """The styles' blended targets at this scale, computed or (`cached`) kept from an earlier job."""

    def compute() -> dict[str, StyleTarget]:
        per_style = per_style_statistics(network, inputs, settings, autocast_dtype, tile)
        return blended_style_targets(per_style, settings)

    if cached is None:
        return compute()
    key = ("blend", tuple(cached.style_keys(inputs, settings, tile)), tuple(settings.style_blend))
    return cached.cache.get(key, compute)


def own_targets(
    network: VGGFeatures,
    inputs: ScaleInputs,
    settings: Settings,
    autocast_dtype: torch.dtype | None,
    tile: int | None,
    cached: CachedStyles | None,
) -> list[dict[str, StyleTarget]]:
    """Each style's own targets at this scale (for the masked regions), computed or kept."""
    if cached is None:
        per_style = per_style_statistics(network, inputs, settings, autocast_dtype, tile)
        return [own_style_targets(s, settings) for s in per_style]
    found = []
    for index, key in enumerate(cached.style_keys(inputs, settings, tile)):
        alone = replace(inputs, styles=[inputs.styles[index]])

        def compute(alone: ScaleInputs = alone) -> dict[str, StyleTarget]:
            (statistics,) = per_style_statistics(network, alone, settings, autocast_dtype, tile)
            return own_style_targets(statistics, settings)

        found.append(cached.cache.get(("own", key), compute))
    return found


@dataclass
class Stepper:
    """One optimiser over one scale's image; `step()` is the per-iteration work."""

    image: torch.Tensor
    objective: Evaluates
    kind: str
    learning_rate: float
    loss_scale: float = 1.0
    best_loss: float = math.inf
    best_image: torch.Tensor | None = None
    last_parts: dict[str, float] = field(default_factory=dict)
    best_parts: dict[str, float] = field(default_factory=dict)
    rejected: int = 0  # L-BFGS steps taken back (they raised the loss)
    warm: Curvature | None = None  # where L-BFGS starts (a followed preview's)
    _optimizer: torch.optim.Optimizer | None = None
    _lbfgs: LBFGS | None = None

    def __post_init__(self) -> None:
        self.image = self.image.detach().contiguous().clone().requires_grad_(True)
        if self.kind == "lbfgs":
            self._lbfgs = LBFGS(LBFGS_HISTORY, warm=self.warm)
        elif self.kind == "adam":
            self._optimizer = torch.optim.Adam([self.image], lr=self.learning_rate)

    def _evaluate(self) -> torch.Tensor:
        """Loss and gradient at the current pixels; remembers them if they are the best so far (a tie
        counts as better: L-BFGS steps from the latest of equals)."""
        total, parts, self.image.grad = self.objective.value_and_grad(self.image.detach(), self.loss_scale)
        # The one read back to the host per iteration (on a GPU, its one wait): all values at once.
        values = torch.stack([total.detach().float(), *(v.detach().float() for v in parts.values())]).tolist()
        value = values[0]
        self.last_parts = {"total": value, **dict(zip(parts, values[1:], strict=True))}
        if value <= self.best_loss:
            self.best_loss = value
            self.best_image = self.image.detach().clone()
            self.best_parts = self.last_parts
        return total

    def step(self) -> dict[str, float]:
        if self._lbfgs is not None:
            self._lbfgs_step()
            return self.last_parts
        elif self._optimizer is not None:
            self._optimizer.step(self._evaluate)
        else:
            self._evaluate()
            with torch.no_grad():
                grad = self.image.grad
                # Step length in pixel units, as for Adam: the raw gradient's scale depends on the weights.
                self.image -= self.learning_rate * grad / grad.abs().mean().clamp_min(GD_STEP_FLOOR)
        with torch.no_grad():
            self.image.clamp_(0, 1)
        return self.last_parts

    def _lbfgs_step(self) -> None:
        """One L-BFGS iteration with one evaluation, the loss never rising: every step starts from the
        best picture so far, so a step that raised the loss (the first of a finer scale overshoots,
        and without this the loss jumped up by up to 24% there on real features) is taken back to
        that picture and tried at a quarter of its length. The iteration reports the picture it holds."""
        best = self.best_loss
        self._evaluate()
        assert self._lbfgs is not None and self.image.grad is not None and self.best_image is not None
        with torch.no_grad():
            if self.last_parts["total"] > best:
                self.rejected += 1
                self.image.copy_(self.best_image)
                self.image.view(-1).add_(self._lbfgs.shorten(LBFGS_RETRY_SHRINK))
                self.last_parts = self.best_parts
            else:
                self.image.view(-1).add_(self._lbfgs.step(self.image.grad.reshape(-1)))
            self.image.clamp_(0, 1)

    def result(self) -> torch.Tensor:
        return self.best_image if self.best_image is not None else self.image.detach()

    def curvature(self, newest: int) -> Curvature | None:
        return None if self._lbfgs is None else self._lbfgs.curvature(newest)


def initial_image(
    init: str, content: torch.Tensor, seed: int, init_image: torch.Tensor | None = None
) -> torch.Tensor:
    if init == "noise":
        generator = torch.Generator().manual_seed(seed)  # on the CPU: the same noise on every device
        return torch.rand(content.shape, generator=generator).to(content.device)
    if init in ("image", "style-colors") and init_image is not None:
        return resize_tensor(init_image, content.shape[-2:])
    return content.clone()


@dataclass
class Clock:
    """Progress as a fraction of the job's work, each scale weighted by its estimated cost (the
    plan's seconds), so that the time left extrapolates from the time taken."""

    costs: Sequence[float]
    start: float = field(default_factory=time.perf_counter)
    # After `settle`: (the fraction shown when the costs changed, the same point under the new costs).
    anchor: tuple[float, float] = (0.0, 0.0)

    def work_done(self, scale: int, step: float, steps: int) -> float:
        """The share of the job's estimated work done after `step` of the `steps` of scale `scale`."""
        done = sum(self.costs[:scale]) + self.costs[scale] * step / steps
        return min(1.0, done / sum(self.costs))

    def fraction(self, scale: int, step: float, steps: int) -> float:
        """Done after `step` of the `steps` that scale `scale` takes, as the bar shows it: the work done,
        carried on from where the bar stood when the costs last changed."""
        shown, then = self.anchor
        done = self.work_done(scale, step, steps)
        return min(1.0, shown + (done - then) * (1 - shown) / (1 - then)) if then < 1 else done

    def settle(self, scale: int, share: float) -> None:
        """Scale `scale` ended after `share` of the work planned for it (the balance's first trial
        landed): its cost shrinks to what it took, so the time left is right, and the bar runs on from
        where it stands over the rest instead of leaping over the runs that never came."""
        shown = self.fraction(scale, share, 1)
        costs = list(self.costs)
        costs[scale] *= share
        self.costs = costs
        self.anchor = (shown, self.work_done(scale, 1, 1))

    def progress(self, scale: int, step: int, steps: int, parts: dict[str, float]) -> Progress:
        elapsed = time.perf_counter() - self.start
        done = self.work_done(scale, step, steps)
        eta = elapsed * (1 - done) / done if done > 0 else 0.0
        return Progress(
            scale=scale + 1,
            scales=len(self.costs),
            iteration=step,
            iterations=steps,
            fraction=self.fraction(scale, step, steps),
            elapsed=elapsed,
            eta=eta,
            loss=dict(parts),
        )


@dataclass(frozen=True)
class Temporal:
    """A frame's temporal term (Ruder et al. 2016): the previous result warped onto this frame, and
    where the flow is reliable (1) or not (0: occluded, a motion boundary, from outside the frame)."""

    target: torch.Tensor  # 1 x 3 x H x W at the output's size
    mask: torch.Tensor  # 1 x 1 x H x W
    weight: float


class TemporalObjective:
    """An objective plus `weight` x the masked mean squared difference to the warped previous result.

    A pixel-space term, cheap beside the network's: its gradient is written out, and it wraps a
    whole-image and a tiled objective alike."""

    def __init__(self, inner: Evaluates, temporal: Temporal, size: tuple[int, int]) -> None:
        self.inner = inner
        self.target = resize_tensor(temporal.target, size)
        self.mask = F.interpolate(temporal.mask, size=size, mode="bilinear", align_corners=False)
        self.scale = temporal.weight / self.target.numel()

    def __getattr__(self, name: str) -> object:  # blocks, network ...: the inner objective's
        return getattr(self.inner, name)

    def value_and_grad(self, image: torch.Tensor, loss_scale: float = 1.0):  # noqa: ANN201 (Evaluation)
        total, parts, grad = self.inner.value_and_grad(image, loss_scale)
        difference = (image.detach() - self.target) * self.mask
        temporal = self.scale * difference.pow(2).sum()
        grad = grad + (2 * self.scale) * difference
        return total + temporal, {**parts, "temporal": temporal}, grad


@dataclass(frozen=True)
class RunContext:
    """What every scale of one run shares: the network, the recipe, the full-size inputs on the
    device, the precision, and where progress and cancel go."""

    network: VGGFeatures
    settings: Settings
    content: torch.Tensor  # 1 x 3 x H x W at the output's size
    styles: Sequence[torch.Tensor]
    init_image: torch.Tensor | None
    autocast: torch.dtype | None
    clock: Clock
    progress: ProgressCallback | None = None
    cancel: CancelToken | None = None
    temporal: Temporal | None = None
    masks: Sequence[torch.Tensor] | None = None  # one per style, 1 x 1 x H x W at the output's size
    style_cache: CachedStyles | None = None  # a warm engine's kept targets (stylecache.py)
    steering: Steering | None = None
    steps_before: int = 0  # iterations of this scale run before this run (the balance's trials)
    watch: Watch | None = None  # may end a run of a scale early (a balance trial settled off its target)
    carry: Carry | None = None  # a preview's curvature, from the last one and for the next (previews.py)
    pace: Callable[[], None] | None = None  # called between steps (devices.IdleCoresPace on a CPU)

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def stepper(self, start: torch.Tensor, objective: Evaluates) -> Stepper:
        settings = self.settings
        return Stepper(
            start,
            objective,
            settings.optimizer,
            settings.learning_rate,
            loss_scale_for(self.autocast),
            warm=None if self.carry is None else self.carry.given,
        )

    def report(
        self,
        scale: int | None,
        step: int,
        steps: int,
        parts: dict[str, float],
        preview: torch.Tensor | None = None,
        tiles: int = 1,
    ) -> None:
        """Progress after `step` of `steps` in scale `scale` (None: outside the schedule, not reported)."""
        if self.progress is None or scale is None:
            return
        report = self.clock.progress(scale, step, steps, parts)
        report.preview = None if preview is None else from_tensor(preview)
        report.tiles = tiles
        self.progress(report)


def loss_scale_for(autocast_dtype: torch.dtype | None) -> float:
    return FP16_LOSS_SCALE if autocast_dtype == torch.float16 else 1.0


def iterate(
    ctx: RunContext,
    stepper: Stepper,
    iterations: int,
    steps: int,
    on_step: Callable[[int, dict[str, float]], None],
    index: int | None = None,
) -> torch.Tensor:
    """The step loop of every scale, whole or tiled: cancel checked before each step, stop and snapshots
    after it; the best iterate. `steps`: the scale's, its balance trials included (`ScalePlan.steps`)."""
    for iteration in range(1, iterations + 1):
        ctx.check_cancel()
        parts = stepper.step()
        on_step(iteration, parts)
        steering = ctx.steering
        if steering is not None:
            step = ctx.steps_before + iteration
            fraction = 0.0 if index is None else ctx.clock.fraction(index, step, steps)
            if steering.after_step(stepper.result, fraction):
                break
        if ctx.watch is not None and ctx.watch(iteration, iterations, parts):
            break
        if ctx.pace is not None:
            ctx.pace()
    return stepper.result()


def optimize_scale(
    ctx: RunContext,
    index: int | None,
    scale: ScalePlan,
    previous: torch.Tensor | None,
    tile: int | None,
    iterations: int | None = None,
) -> torch.Tensor:
    """Scale number `index` of the schedule from `previous` (or the init), whole or in `tile` blocks, for
    its own iterations or `iterations` (a balance trial that carries on another's picture)."""
    run = scale.iterations if iterations is None else iterations
    ctx.check_cancel()
    size = (scale.height, scale.width)
    inputs = scale_inputs(
        ctx.content, ctx.styles, size, ctx.settings.style_scale, ctx.network.min_side, ctx.masks
    )
    objective = build_objective(ctx.network, inputs, ctx.settings, ctx.autocast, tile, ctx.style_cache)
    tiles = len(objective.blocks) if isinstance(objective, tiling.TiledObjective) else 1
    if ctx.temporal is not None:
        objective = TemporalObjective(objective, ctx.temporal, size)
    stepper = ctx.stepper(start_image(previous, inputs.content, ctx.settings, ctx.init_image), objective)

    def on_step(iteration: int, parts: dict[str, float]) -> None:
        last = iteration == run
        step = ctx.steps_before + iteration
        ctx.report(index, step, scale.steps, parts, stepper.result() if last else None, tiles)

    image = iterate(ctx, stepper, run, scale.steps, on_step, index)
    if ctx.carry is not None:
        ctx.carry.left = stepper.curvature(ctx.carry.newest)
    return image


def start_image(
    previous: torch.Tensor | None, content: torch.Tensor, settings: Settings, init_image: torch.Tensor | None
) -> torch.Tensor:
    """The first scale starts from the init; later ones from the previous result, upsampled."""
    if previous is None:
        return initial_image(settings.init, content, settings.seed, init_image)
    size = tuple(content.shape[-2:])
    return F.interpolate(previous, size=size, mode="bicubic", align_corners=False).clamp(0, 1)


def scale_inputs(
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    size: tuple[int, int],
    style_scale: float,
    min_side: int,
    masks: Sequence[torch.Tensor] | None = None,
) -> ScaleInputs:
    """Content and masks at this scale's size; styles with longest side style_scale x this scale's
    longest side."""
    longest = round(max(size) * style_scale)
    resized = []
    for style in styles:
        h, w = style.shape[-2:]
        sw, sh = fit_size(w, h, longest, min_side)
        resized.append(resize_tensor(style, (sh, sw)))
    scaled_masks = None if masks is None else [regions.resize_mask(m, size) for m in masks]
    return ScaleInputs(resize_tensor(content, size), resized, scaled_masks)


# -- L-BFGS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curvature:
    """What L-BFGS learnt of the loss's curvature near the picture it ended at: its newest pairs (s, y,
    1/s.y) and gamma. A run of the same picture at the same size under other weights of the same terms
    starts from it (previews.py) instead of from a first step that knows nothing."""

    pairs: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], ...]
    gamma: torch.Tensor


@dataclass
class Carry:
    """Curvature carried between runs of one picture (previews.py): `given` is where the L-BFGS of the
    run's scales starts, and each scale leaves its own in `left` (the last scale's is the run's)."""

    newest: int  # how many pairs a scale leaves
    given: Curvature | None = None
    left: Curvature | None = None


class LBFGS:
    """Steps for a flat vector, given its gradient at each iteration: L-BFGS over the pixels, one
    evaluation per iteration, no line search (the caller clamps to [0, 1], and takes a step that
    raised the loss back to a shorter one: `shorten`).

    Ours rather than torch.optim.LBFGS for its first step. Torch's is lr * min(1, 1/|g|_1): with a
    million pixel values |g|_1 is large and the first iteration of every scale barely moves the
    image (the loss changed by 0.03%). Here the first step moves the mean pixel by LBFGS_FIRST_STEP; with
    it `balanced` ends 3% lower in total loss, and lower in both content and style, in the same
    iterations (docs/performance.md).

    The update is the classic two-loop recursion (Nocedal & Wright, algorithm 7.4) with the initial
    inverse Hessian gamma I, gamma = s.y / y.y of the newest pair. As in torch, s is the step
    proposed, not the one left after the clamp: pairing with the clamped step measured worse
    (total loss 0.544 against 0.529 on `balanced`). Nothing is read back to the host: a pair with
    too little curvature is kept with weight 0 rather than tested and dropped.
    """

    def __init__(
        self, history: int, first_step: float = LBFGS_FIRST_STEP, warm: Curvature | None = None
    ) -> None:
        self.history = history
        self.first_step = first_step
        # s, y, 1/s.y (or 0); from `warm`, the first step is already a quasi-Newton one
        self._pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = list(warm.pairs) if warm else []
        self._gamma: torch.Tensor | None = warm.gamma if warm else None
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # the previous gradient and step

    @torch.no_grad()
    def step(self, gradient: torch.Tensor) -> torch.Tensor:
        """The step to add to the vector whose gradient this is."""
        if self._last is None and not self._pairs:
            tiny = torch.finfo(gradient.dtype).tiny
            step = gradient * (-self.first_step / gradient.abs().mean().clamp_min(tiny))
        elif self._last is None:
            step = self._two_loop(gradient)
        else:
            previous_gradient, previous_step = self._last
            self._remember(previous_step, gradient - previous_gradient)
            step = self._two_loop(gradient)
        self._last = (gradient.clone(), step)
        return step

    def curvature(self, newest: int) -> Curvature | None:
        """The `newest` pairs and gamma, for a run of the same vector under other weights to start from."""
        if not self._pairs or self._gamma is None:
            return None
        return Curvature(tuple(self._pairs[-newest:]), self._gamma)

    def shorten(self, factor: float) -> torch.Tensor:
        """Instead of the last step, `factor` x it from the same picture: the step to add to that
        picture. The next gradient pairs with this shorter step."""
        assert self._last is not None
        gradient, step = self._last
        self._last = (gradient, step * factor)
        return self._last[1]

    def _remember(self, s: torch.Tensor, y: torch.Tensor) -> None:
        sy, yy = s.dot(y), y.dot(y)
        curved = sy > LBFGS_CURVATURE_FLOOR
        rho = torch.where(curved, 1 / torch.where(curved, sy, 1.0), 0.0)
        gamma = torch.where(curved, sy / yy.clamp_min(torch.finfo(s.dtype).tiny), 1.0)
        self._gamma = gamma if self._gamma is None else torch.where(curved, gamma, self._gamma)
        self._pairs.append((s, y, rho))
        if len(self._pairs) > self.history:
            self._pairs.pop(0)

    def _two_loop(self, gradient: torch.Tensor) -> torch.Tensor:
        q = gradient.neg()
        alphas = []
        for s, y, rho in reversed(self._pairs):
            alpha = rho * s.dot(q)
            q.sub_(y * alpha)
            alphas.append(alpha)
        assert self._gamma is not None
        r = q.mul_(self._gamma)
        for (s, y, rho), alpha in zip(self._pairs, reversed(alphas), strict=True):
            beta = rho * y.dot(r)
            r.add_(s * (alpha - beta))
        return r
