"""One scale's objective: the loss terms' targets and weights, and the loss with its gradient.

`Objective` evaluates the whole image at once; `tiling.TiledObjective` evaluates the same loss
block by block for images larger than memory. Both give `value_and_grad`, which is all the
optimiser (`optimize.Stepper`) asks of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from . import losses
from . import regions as guided
from .network import VGGFeatures, autocast
from .options import Settings

Statistics = dict[str, tuple[torch.Tensor, ...]]
Evaluation = tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]  # total, parts, gradient


class Evaluates(Protocol):
    def value_and_grad(self, image: torch.Tensor, loss_scale: float = 1.0) -> Evaluation: ...


@dataclass(frozen=True)
class Terms:
    """What every evaluation of one scale's loss shares: the network, the style targets, the weights."""

    network: VGGFeatures
    style_targets: dict[str, losses.StyleTarget]
    content_layer_weights: dict[str, float]
    style_layer_weights: dict[str, float]
    content_weight: float
    style_weight: float
    tv_weight: float
    autocast_dtype: torch.dtype | None = None
    # With style masks: each style's own targets under its mask (`style_targets` is then empty).
    regions: tuple[guided.Region, ...] = ()

    @classmethod
    def of(
        cls,
        network: VGGFeatures,
        settings: Settings,
        style_targets: dict[str, losses.StyleTarget],
        autocast_dtype: torch.dtype | None,
        regions: tuple[guided.Region, ...] = (),
    ) -> Terms:
        return cls(
            network=network,
            style_targets=style_targets,
            content_layer_weights=dict(
                zip(settings.content_layers, settings.content_layer_weights, strict=True)
            ),
            style_layer_weights=dict(zip(settings.style_layers, settings.style_layer_weights, strict=True)),
            content_weight=settings.content_weight,
            style_weight=settings.effective_style_weight,
            tv_weight=settings.tv_weight,
            autocast_dtype=autocast_dtype,
            regions=regions,
        )

    def style_regions(self) -> tuple[guided.Region, ...]:
        """The style term as regions: the masked ones, or the blended targets over the whole image."""
        if self.regions or not self.style_targets:
            return self.regions  # none: masks black everywhere leave only the content loss
        return (guided.Region(self.style_targets),)


def content_features(terms: Terms, content: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """The content loss's targets: the content's features at `layers`."""
    with torch.no_grad(), autocast(content.device, terms.autocast_dtype):
        features = terms.network(content)
        return {n: features[n].float() for n in layers}


@dataclass(frozen=True)
class Objective:
    """The loss of the whole image at once, its content features computed once."""

    terms: Terms
    content_targets: dict[str, torch.Tensor]

    @classmethod
    def build(cls, terms: Terms, content: torch.Tensor, layers: Sequence[str]) -> Objective:
        return cls(terms, content_features(terms, content, layers))

    @property
    def style_targets(self) -> dict[str, losses.StyleTarget]:
        return self.terms.style_targets

    @property
    def network(self) -> VGGFeatures:
        return self.terms.network

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = self.terms
        with autocast(image.device, terms.autocast_dtype):
            features = terms.network(image)
        content = losses.weighted_sum(
            {n: losses.content_loss(features[n], t) for n, t in self.content_targets.items()},
            terms.content_layer_weights,
        )
        if terms.regions:
            style = guided.style_loss(terms.regions, features, terms.style_layer_weights)
        elif terms.style_targets:
            style = losses.style_loss(terms.style_targets, features, terms.style_layer_weights)
        else:  # masks black everywhere
            style = image.new_zeros(())
        tv = losses.tv_loss(image) if terms.tv_weight else image.new_zeros(())
        parts = {
            "content": terms.content_weight * content,
            "style": terms.style_weight * style,
            "tv": terms.tv_weight * tv,
        }
        return parts["content"] + parts["style"] + parts["tv"], parts

    def value_and_grad(self, image: torch.Tensor, loss_scale: float = 1.0) -> Evaluation:
        pixels = image.detach().requires_grad_(True)
        total, parts = self(pixels)
        (total * loss_scale).backward()
        assert pixels.grad is not None
        grad = pixels.grad if loss_scale == 1.0 else pixels.grad.div_(loss_scale)
        return total.detach(), {k: v.detach() for k, v in parts.items()}, grad


def style_statistics(
    network: VGGFeatures, style: torch.Tensor, settings: Settings, autocast_dtype: torch.dtype | None
) -> Statistics:
    """Per style layer, what one style image contributes to the targets."""
    with torch.no_grad(), autocast(style.device, autocast_dtype):
        features = network(style)
        return {n: losses.style_statistics(features[n], settings.style_loss) for n in settings.style_layers}


def own_style_targets(statistics: Statistics, settings: Settings) -> dict[str, losses.StyleTarget]:
    """One style's statistics as loss targets, not blended with the others' (a region's)."""
    return {n: losses.style_target(statistics[n], settings.style_loss) for n in settings.style_layers}


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
