"""Images larger than memory: tiles split the computation, never the optimisation.

A tiled scale optimises the same whole-image objective as an untiled one, with the network run
block by block (the method of Galerne et al., "Scaling Painting Style Transfer", 2024):

1. each block is the tile (its *core*) plus a margin as wide as the zero padding at a crop's border
   reaches into the deepest layer (`network.border_margin`), starting on the deepest pooling's
   grid, so the features of its core are the whole image's features, exactly;
2. a forward pass per block adds its core's features to running sums, from which the whole image's
   statistics, the loss, and the loss's gradient with respect to every feature (linear per
   position, `losses.FeatureGradient`) follow once;
3. a second forward pass per block, this time kept for autograd, back-propagates that gradient from
   its core; the blocks' input gradients add up to the whole image's, margins included. The last
   block's first pass is already kept for autograd, and the second pass starts with it, so it runs
   the network once (a block holds its graph in the second pass anyway);
4. the optimiser takes one step on the whole image.

So the result is the untiled one up to floating-point rounding, at the price of the margins and of
a second forward pass for all blocks but one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from . import losses
from . import regions as guided
from .network import VGGFeatures, autocast
from .objective import Terms


@dataclass(frozen=True)
class ScalePlan:
    """One scale of the coarse-to-fine schedule (plan.py), whole or in tiles: what a scale's optimisation
    (optimize.py) is given."""

    width: int
    height: int
    iterations: int
    tile: int | None = None  # side of the square tiles the budget allows; None: the whole image at once
    trials: int = 1  # runs of this scale at most, each from the start (balance.py: the first scale)

    @property
    def steps(self) -> int:
        """Iterations the scale may take, its trials included: what the plan and the progress count."""
        return self.iterations * self.trials

    @property
    def longest(self) -> int:
        return max(self.width, self.height)


@dataclass(frozen=True)
class Window:
    """[x0, x1) x [y0, y1), in pixels of the image."""

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

    def crop(self, image: torch.Tensor) -> torch.Tensor:
        return image[..., self.y0 : self.y1, self.x0 : self.x1]


@dataclass(frozen=True)
class Block:
    """A tile (`core`) and the larger window the network reads to compute the core's features."""

    core: Window
    padded: Window

    def core_features(self, features: torch.Tensor, factor: int) -> torch.Tensor:
        """The core's part of features computed from the padded window, `factor` times smaller.

        Floor division gives the whole image's feature grid: the padded window starts on it, and a
        core ending at the image's edge ends where the whole image's features end.
        """
        top, left = self.padded.y0 // factor, self.padded.x0 // factor
        rows = slice(self.core.y0 // factor - top, self.core.y1 // factor - top)
        columns = slice(self.core.x0 // factor - left, self.core.x1 // factor - left)
        return features[..., rows, columns]

    def core_slices(self, factor: int) -> tuple[slice, slice]:
        """The rows and columns of the whole image's feature grid, `factor` times smaller, that the
        core covers (what `core_features` keeps, in the whole image's coordinates)."""
        rows = slice(self.core.y0 // factor, self.core.y1 // factor)
        return rows, slice(self.core.x0 // factor, self.core.x1 // factor)


def axis_pieces(length: int, tile: int, align: int) -> list[tuple[int, int]]:
    """[start, end) pieces covering [0, length) once, at most `tile` long, inner edges on multiples of
    `align` (the deepest pooling's grid)."""
    count = math.ceil(length / tile)
    while True:  # rounding the edges to the grid can make a piece longer than `tile`: one more piece
        edges = [0] + [round(i * length / count / align) * align for i in range(1, count)] + [length]
        pieces = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
        if max(b - a for a, b in pieces) <= tile or count >= length:
            return pieces
        count += 1


def plan_blocks(width: int, height: int, tile: int, margin: int, align: int) -> list[Block]:
    """The blocks of a width x height image in tiles of at most `tile` px, row by row."""
    blocks = []
    for y0, y1 in axis_pieces(height, tile, align):
        for x0, x1 in axis_pieces(width, tile, align):
            padded = Window(
                max(0, x0 - margin), max(0, y0 - margin), min(width, x1 + margin), min(height, y1 + margin)
            )
            blocks.append(Block(Window(x0, y0, x1, y1), padded))
    return blocks


def blocks_for(network: VGGFeatures, width: int, height: int, tile: int) -> list[Block]:
    return plan_blocks(width, height, tile, network.margin, network.min_side)


def layer_sums(
    network: VGGFeatures,
    image: torch.Tensor,
    layers: Iterable[str],
    blocks: Iterable[Block],
    autocast_dtype: torch.dtype | None,
) -> dict[str, losses.LayerSums]:
    """The sums over the whole image's positions of each layer's features, block by block."""
    sums = {name: losses.LayerSums() for name in layers}
    for block in blocks:
        with torch.no_grad(), autocast(image.device, autocast_dtype):
            features = network(block.padded.crop(image))
        for name, layer in sums.items():
            layer.add(block.core_features(features[name], network.factors[name]))
    return sums


def style_statistics(
    network: VGGFeatures,
    style: torch.Tensor,
    layers: Iterable[str],
    kind: str,
    tile: int,
    autocast_dtype: torch.dtype | None,
) -> dict[str, tuple[torch.Tensor, ...]]:
    """`losses.style_statistics` of a whole style image, computed in blocks."""
    height, width = style.shape[-2:]
    sums = layer_sums(network, style, layers, blocks_for(network, width, height, tile), autocast_dtype)
    return {name: layer.statistics(kind) for name, layer in sums.items()}


@dataclass(frozen=True)
class TiledObjective:
    """The whole-image objective (`optimize.Objective`) evaluated block by block."""

    terms: Terms
    blocks: tuple[Block, ...]
    content_targets: tuple[dict[str, torch.Tensor], ...]  # per block, its core's content features
    content_norms: dict[str, torch.Tensor]  # per content layer, |P|^2 of the whole image

    @classmethod
    def build(cls, terms: Terms, content: torch.Tensor, tile: int, layers: tuple[str, ...]) -> TiledObjective:
        network = terms.network
        height, width = content.shape[-2:]
        blocks = tuple(blocks_for(network, width, height, tile))
        targets = []
        for block in blocks:
            with torch.no_grad(), autocast(content.device, terms.autocast_dtype):
                features = network(block.padded.crop(content))
            targets.append(
                {n: block.core_features(features[n], network.factors[n]).float().clone() for n in layers}
            )
        norms = {n: sum(t[n].pow(2).sum() for t in targets) + losses.EPS for n in layers}
        return cls(terms, blocks, tuple(targets), norms)  # type: ignore[arg-type]

    def _forward(self, block: Block, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A block's pass kept for autograd: its crop of `image`, a leaf that will hold its gradient, and
        the features."""
        crop = block.padded.crop(image).detach().requires_grad_(True)
        with autocast(image.device, self.terms.autocast_dtype):
            return crop, self.terms.network(crop)

    def value_and_grad(
        self, image: torch.Tensor, loss_scale: float = 1.0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        terms, network = self.terms, self.terms.network
        content_layers = tuple(self.content_norms)
        # Pass 1: the whole image's statistics (each region's under its mask), and the content error,
        # block by block; the last block's pass is kept for autograd, for pass 2 to start with.
        regions = terms.style_regions()
        sums = [region.sums() for region in regions]
        errors = dict.fromkeys(content_layers, image.new_zeros(()))
        last = len(self.blocks) - 1
        kept: tuple[torch.Tensor, dict[str, torch.Tensor]] | None = None
        for index, (block, targets) in enumerate(zip(self.blocks, self.content_targets, strict=True)):
            if index == last:
                kept = self._forward(block, image)
                features = {name: value.detach() for name, value in kept[1].items()}
            else:
                with torch.no_grad(), autocast(image.device, terms.autocast_dtype):
                    features = network(block.padded.crop(image))
            for region, region_sums in zip(regions, sums, strict=True):
                for name, layer in region_sums.items():
                    factor = network.factors[name]
                    mask = region.mask(name, *block.core_slices(factor))
                    layer.add(block.core_features(features[name], factor), mask)
            for name in content_layers:
                core = block.core_features(features[name], network.factors[name]).float()
                errors[name] = errors[name] + (core - targets[name]).pow(2).sum()
            del features
        style, region_gradients = guided.loss_from_sums(
            regions, sums, terms.style_layer_weights, image.new_zeros((), dtype=torch.float32)
        )
        content_shares = losses.shares(terms.content_layer_weights, content_layers)
        content = sum(errors[n] / self.content_norms[n] * content_shares[n] for n in content_layers)
        # Pass 2: each block back-propagates the whole image's gradient from its core, the kept one first.
        grad = torch.zeros_like(image)
        for index in (last, *range(last)):
            block, targets = self.blocks[index], self.content_targets[index]
            if kept is not None:
                (crop, features), kept = kept, None
            else:
                crop, features = self._forward(block, image)
            outputs, output_grads = [], []
            style_grads: dict[str, torch.Tensor] = {}
            for region, gradients in zip(regions, region_gradients, strict=True):
                for name, gradient in gradients.items():
                    factor = network.factors[name]
                    core = block.core_features(features[name], factor).detach()
                    part = region.gradient(gradient, core, region.mask(name, *block.core_slices(factor)))
                    style_grads[name] = part if name not in style_grads else style_grads[name] + part
            for name, part in style_grads.items():
                outputs.append(block.core_features(features[name], network.factors[name]))
                output_grads.append(part * (terms.style_weight * loss_scale))
            for name in content_layers:
                core = block.core_features(features[name], network.factors[name])
                scale = (
                    2 * terms.content_weight * content_shares[name] * loss_scale / self.content_norms[name]
                )
                outputs.append(core)
                output_grads.append(((core.float() - targets[name]) * scale).to(core.dtype))
            losses.with_gradient(image.new_zeros(()), output_grads, outputs).backward()
            assert crop.grad is not None
            block.padded.crop(grad).add_(crop.grad.float())
        if loss_scale != 1.0:
            grad.div_(loss_scale)
        tv = image.new_zeros(())
        if terms.tv_weight:
            pixels = image.detach().requires_grad_(True)
            tv = losses.tv_loss(pixels)
            grad.add_(torch.autograd.grad(tv * terms.tv_weight, pixels)[0])
            tv = tv.detach()
        parts = {
            "content": terms.content_weight * content,
            "style": terms.style_weight * style.detach(),
            "tv": terms.tv_weight * tv,
        }
        return parts["content"] + parts["style"] + parts["tv"], parts, grad


def tile_count(width: int, height: int, tile: int, align: int) -> int:
    return len(axis_pieces(width, tile, align)) * len(axis_pieces(height, tile, align))
