"""The optimisation of one scale: its objective, one step per iteration, the best iterate, progress.

Images here are torch tensors 1 x 3 x H x W in [0, 1] on the working device; `run.py` converts
from and to user images and drives the scales of a plan, each through `optimize_whole` here or
`tiling.optimize_tiled`, both stepping through the one loop, `iterate`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from . import lbfgs, losses
from .errors import Cancelled
from .images import fit_size, from_tensor, resize_tensor
from .lbfgs import LBFGS
from .network import VGGFeatures
from .options import Settings
from .plan import ScalePlan

GD_STEP_FLOOR = 1e-12
FP16_LOSS_SCALE = 1024.0  # static scale so half-precision gradients inside the network do not underflow


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


ProgressCallback = Callable[[Progress], None]


@dataclass
class Objective:
    """Everything one scale's loss needs, computed once: content features, style targets, weights."""

    network: VGGFeatures
    content_targets: dict[str, torch.Tensor]
    style_targets: dict[str, losses.StyleTarget]
    content_layer_weights: dict[str, float]
    style_layer_weights: dict[str, float]
    content_weight: float
    style_weight: float
    tv_weight: float
    autocast_dtype: torch.dtype | None = None

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        with _autocast(image.device, self.autocast_dtype):
            features = self.network(image)
        content = losses.weighted_sum(
            {n: losses.content_loss(features[n], t) for n, t in self.content_targets.items()},
            self.content_layer_weights,
        )
        style = losses.style_loss(self.style_targets, features, self.style_layer_weights)
        tv = losses.tv_loss(image) if self.tv_weight else image.new_zeros(())
        parts = {
            "content": self.content_weight * content,
            "style": self.style_weight * style,
            "tv": self.tv_weight * tv,
        }
        return parts["content"] + parts["style"] + parts["tv"], parts


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


@dataclass
class ScaleInputs:
    content: torch.Tensor  # 1 x 3 x H x W at this scale
    styles: list[torch.Tensor]  # each resized for this scale


def build_objective(
    network: VGGFeatures,
    inputs: ScaleInputs,
    settings: Settings,
    autocast_dtype: torch.dtype | None,
    style_targets: dict[str, losses.StyleTarget] | None = None,
) -> Objective:
    """The scale's objective; given `style_targets` (tiles share the whole image's) skip the styles."""
    with torch.no_grad(), _autocast(inputs.content.device, autocast_dtype):
        content_features = network(inputs.content)
        content_targets = {n: content_features[n].float() for n in settings.content_layers}
    if style_targets is None:
        per_style = [style_statistics(network, s, settings, autocast_dtype) for s in inputs.styles]
        style_targets = blended_style_targets(per_style, settings)
    return Objective(
        network=network,
        content_targets=content_targets,
        style_targets=style_targets,
        content_layer_weights=dict(zip(settings.content_layers, settings.content_layer_weights, strict=True)),
        style_layer_weights=dict(zip(settings.style_layers, settings.style_layer_weights, strict=True)),
        content_weight=settings.content_weight,
        style_weight=settings.effective_style_weight,
        tv_weight=settings.tv_weight,
        autocast_dtype=autocast_dtype,
    )


Statistics = dict[str, tuple[torch.Tensor, ...]]


def style_statistics(
    network: VGGFeatures, style: torch.Tensor, settings: Settings, autocast_dtype: torch.dtype | None
) -> Statistics:
    """Per style layer, what one style image contributes to the targets."""
    with torch.no_grad(), _autocast(style.device, autocast_dtype):
        features = network(style)
        return {n: losses.style_statistics(features[n], settings.style_loss) for n in settings.style_layers}


def blended_style_targets(
    per_style: Sequence[Statistics], settings: Settings
) -> dict[str, losses.StyleTarget]:
    """The styles' statistics blended by the style blend weights, as loss targets."""
    return {
        n: losses.style_target(
            losses.blend_statistics([s[n] for s in per_style], settings.style_blend), settings.style_loss
        )
        for n in settings.style_layers
    }


@dataclass
class Stepper:
    """One optimiser over one scale's image; `step()` is the per-iteration work."""

    image: torch.Tensor
    objective: Objective
    kind: str
    learning_rate: float
    loss_scale: float = 1.0
    best_loss: float = math.inf
    best_image: torch.Tensor | None = None
    last_parts: dict[str, float] = field(default_factory=dict)
    _optimizer: torch.optim.Optimizer | None = None
    _lbfgs: LBFGS | None = None

    def __post_init__(self) -> None:
        self.image = self.image.detach().contiguous().clone().requires_grad_(True)
        if self.kind == "lbfgs":
            self._lbfgs = LBFGS(lbfgs.HISTORY)
        elif self.kind == "adam":
            self._optimizer = torch.optim.Adam([self.image], lr=self.learning_rate)

    def _evaluate(self) -> torch.Tensor:
        """Loss and gradient at the current pixels; remembers them if they are the best so far."""
        self.image.grad = None
        total, parts = self.objective(self.image)
        (total * self.loss_scale).backward()
        if self.loss_scale != 1.0:
            self.image.grad.div_(self.loss_scale)
        # The one read back to the host per iteration (on a GPU, its one wait): all values at once.
        values = torch.stack([total.detach().float(), *(v.detach().float() for v in parts.values())]).tolist()
        value = values[0]
        if value < self.best_loss:
            self.best_loss = value
            self.best_image = self.image.detach().clone()
        self.last_parts = {"total": value, **dict(zip(parts, values[1:], strict=True))}
        return total.detach()

    def step(self) -> dict[str, float]:
        if self._lbfgs is not None:
            self._evaluate()
            with torch.no_grad():
                assert self.image.grad is not None
                self.image.view(-1).add_(self._lbfgs.step(self.image.grad.reshape(-1)))
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

    def result(self) -> torch.Tensor:
        return self.best_image if self.best_image is not None else self.image.detach()


def initial_image(
    init: str, content: torch.Tensor, seed: int, init_image: torch.Tensor | None = None
) -> torch.Tensor:
    if init == "noise":
        generator = torch.Generator().manual_seed(seed)  # on the CPU: the same noise on every device
        return torch.rand(content.shape, generator=generator).to(content.device)
    if init == "image" and init_image is not None:
        return resize_tensor(init_image, content.shape[-2:])
    return content.clone()


@dataclass
class Clock:
    """Progress as a fraction of the job's work, weighting each iteration by its pixel count."""

    scales: Sequence[ScalePlan]
    start: float = field(default_factory=time.perf_counter)

    def fraction(self, scale: int, step: float, steps: int) -> float:
        """Done after `step` of the `steps` that scale `scale` takes (its iterations, or its tile steps)."""
        cost = [s.width * s.height * s.iterations for s in self.scales]
        done = sum(cost[:scale]) + cost[scale] * step / steps
        return min(1.0, done / sum(cost))

    def progress(self, scale: int, step: int, steps: int, parts: dict[str, float]) -> Progress:
        elapsed = time.perf_counter() - self.start
        fraction = self.fraction(scale, step, steps)
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else 0.0
        return Progress(
            scale=scale + 1,
            scales=len(self.scales),
            iteration=step,
            iterations=steps,
            fraction=fraction,
            elapsed=elapsed,
            eta=eta,
            loss=dict(parts),
        )


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

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled()

    def stepper(self, start: torch.Tensor, objective: Objective) -> Stepper:
        settings = self.settings
        return Stepper(
            start, objective, settings.optimizer, settings.learning_rate, loss_scale_for(self.autocast)
        )

    def report(
        self,
        scale: int | None,
        step: int,
        steps: int,
        parts: dict[str, float],
        preview: torch.Tensor | None = None,
    ) -> None:
        """Progress after `step` of `steps` in scale `scale` (None: outside the schedule, not reported)."""
        if self.progress is None or scale is None:
            return
        report = self.clock.progress(scale, step, steps, parts)
        report.preview = None if preview is None else from_tensor(preview)
        self.progress(report)


def loss_scale_for(autocast_dtype: torch.dtype | None) -> float:
    return FP16_LOSS_SCALE if autocast_dtype == torch.float16 else 1.0


def iterate(
    ctx: RunContext, stepper: Stepper, iterations: int, on_step: Callable[[int, dict[str, float]], None]
) -> torch.Tensor:
    """The step loop of every scale, whole or tiled: cancel checked before each step; the best iterate."""
    for iteration in range(1, iterations + 1):
        ctx.check_cancel()
        on_step(iteration, stepper.step())
    return stepper.result()


def optimize_whole(
    ctx: RunContext, index: int | None, scale: ScalePlan, previous: torch.Tensor | None
) -> torch.Tensor:
    """Scale number `index` of the schedule on the whole image, from `previous` (or the init)."""
    ctx.check_cancel()
    size = (scale.height, scale.width)
    inputs = scale_inputs(ctx.content, ctx.styles, size, ctx.settings.style_scale, ctx.network.min_side)
    objective = build_objective(ctx.network, inputs, ctx.settings, ctx.autocast)
    stepper = ctx.stepper(start_image(previous, inputs.content, ctx.settings, ctx.init_image), objective)

    def on_step(iteration: int, parts: dict[str, float]) -> None:
        last = iteration == scale.iterations
        ctx.report(index, iteration, scale.iterations, parts, stepper.result() if last else None)

    return iterate(ctx, stepper, scale.iterations, on_step)


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
) -> ScaleInputs:
    """Content at this scale's size; styles with longest side style_scale x this scale's longest side."""
    longest = round(max(size) * style_scale)
    resized = []
    for style in styles:
        h, w = style.shape[-2:]
        sw, sh = fit_size(w, h, longest, min_side)
        resized.append(resize_tensor(style, (sh, sw)))
    return ScaleInputs(resize_tensor(content, size), resized)
