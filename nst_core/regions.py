"""Regions: one mask per style, white = that style (guided statistics, Gatys et al. 2017,
"Controlling Perceptual Factors in Neural Style Transfer"), in one run, not runs pasted together.

- A mask is a grayscale image (colour counts by its luma, transparency as black), resized to the
  content. Where the masks add up to more than 1 each is divided by their sum, so overlapping styles
  share a pixel; where they add up to less, the rest of the pixel keeps only the content loss (one
  style with one mask: that style inside, the photo outside).
- At each scale a mask is averaged down to the scale's size, and at each layer over the pooling's
  cells (`layer_masks`): a soft edge stays soft, and a block of a tiled scale reads the very values
  the whole image has.
- Each style's target is its own whole-image statistics (styles are not blended); the output's
  statistics at a layer are those of its features weighted by the mask and normalised by the
  mask's sum: the guided Gram X^T diag(m) X / sum(m), or the weighted mean and covariance for w2
  (`losses.LayerSums` with weights).
- A region's term is weighted by its area (the mask's mean) times its strength (its blend weight over
  the blend weights' mean): the gradient at a pixel is then m(p) times what that style alone would
  give there, so a small region is styled as strongly as a large one, and masks that cover the
  image once give a style term on the scale of one unmasked style.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import losses
from .colors import luma
from .images import resize


def mask_plane(array: np.ndarray) -> np.ndarray:
    """A checked H x W x C image (`images.to_array`) as an H x W mask in [0, 1]: gray or luma, times
    alpha (a transparent pixel belongs to no style)."""
    channels = array.shape[2]
    color = array[..., 0] if channels <= 2 else luma(array[..., :3])
    if channels in (2, 4):
        color = color * array[..., -1]
    return np.clip(color, 0.0, 1.0).astype(np.float32)


def content_masks(masks: Sequence[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    """The masks (checked images) at the content's size, divided by their sum where it is over 1."""
    planes = [mask_plane(resize(m, width, height) if m.shape[:2] != (height, width) else m) for m in masks]
    total = np.sum(planes, axis=0)
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-12), 1.0).astype(np.float32)
    return [plane * scale for plane in planes]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """1 x 1 x H x W to `size`: averaged over each output pixel's area when shrinking (soft edges
    stay soft and no weight appears or vanishes), bilinear when growing."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    if size[0] <= mask.shape[-2] and size[1] <= mask.shape[-1]:
        return F.interpolate(mask, size=size, mode="area")
    return F.interpolate(mask, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def layer_masks(
    mask: torch.Tensor, factors: Mapping[str, int], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """A scale's mask at each layer's feature grid: the mean over each f x f cell of the pixels a
    feature position stands for (the rows and columns a floor-sized feature map leaves out are left
    out here too)."""
    height, width = mask.shape[-2:]
    out = {}
    for name in layers:
        f = factors[name]
        h, w = height // f, width // f
        out[name] = F.avg_pool2d(mask[..., : h * f, : w * f], f) if f > 1 else mask
    return out


@dataclass(frozen=True)
class Region:
    """One style's part of a scale's style term: its own targets, its mask per layer (empty: the whole
    image, unweighted), and the term's weight (area times strength)."""

    targets: dict[str, losses.StyleTarget]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    weight: float = 1.0

    def mask(self, name: str, rows: slice = slice(None), columns: slice = slice(None)) -> torch.Tensor | None:
        """The layer's mask over those feature rows and columns, None when the region is unmasked."""
        whole = self.masks.get(name)
        return None if whole is None else whole[..., rows, columns]

    def sums(self) -> dict[str, losses.LayerSums]:
        return losses.sums_for(self.targets)

    def gradient(
        self, gradient: losses.FeatureGradient, features: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """d (weight x loss) / d features at the positions of `features`, whose mask is `mask`."""
        grad = gradient(features)
        scale = self.weight if mask is None else mask * self.weight
        return (grad * scale).to(features.dtype)


def build_regions(
    per_style: Sequence[dict[str, losses.StyleTarget]],
    masks: Sequence[torch.Tensor],
    blend: Sequence[float],
    factors: Mapping[str, int],
) -> tuple[Region, ...]:
    """The regions of a scale whose masks (1 x 1 x H x W at its size) are `masks`. A layer where a
    mask has no weight is left out of its region (the others' shares grow), a style whose mask is
    black everywhere is left out: nothing to match there."""
    mean_blend = sum(blend) / len(blend)
    regions = []
    for targets, mask, strength in zip(per_style, masks, blend, strict=True):
        area = float(mask.mean())
        if area <= 0 or strength <= 0:
            continue
        at_layers = layer_masks(mask, factors, list(targets))
        kept = [name for name, m in at_layers.items() if float(m.sum()) > 0]
        if kept:
            regions.append(
                Region(
                    {n: targets[n] for n in kept},
                    {n: at_layers[n] for n in kept},
                    area * strength / mean_blend,
                )
            )
    return tuple(regions)


def loss_from_sums(
    regions: Sequence[Region],
    sums: Sequence[Mapping[str, losses.LayerSums]],
    weights: Mapping[str, float],
    zero: torch.Tensor,
) -> tuple[torch.Tensor, list[dict[str, losses.FeatureGradient]]]:
    """The regions' weighted style term from their (masked) sums (`zero` when there are none), and per
    region its gradients per layer (of the unweighted loss: `Region.gradient` applies weight and mask)."""
    total = zero
    gradients = []
    for region, region_sums in zip(regions, sums, strict=True):
        loss, grads = losses.style_loss_from_sums(region.targets, region_sums, weights)
        total = total + loss * region.weight
        gradients.append(grads)
    return total, gradients


def style_loss(
    regions: Sequence[Region], features: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> torch.Tensor:
    """The regions' style term of a whole image: the statistics under each mask gathered as sums (the
    formulas of the tiled path), their gradient handed to autograd."""
    with torch.no_grad():
        sums = [region.sums() for region in regions]
        for region, region_sums in zip(regions, sums, strict=True):
            for name, layer in region_sums.items():
                layer.add(features[name].detach(), region.mask(name))
        zero = next(iter(features.values())).new_zeros((), dtype=torch.float32)
        value, gradients = loss_from_sums(regions, sums, weights, zero)
        names = sorted({name for region in regions for name in region.targets})
        per_layer: dict[str, torch.Tensor] = {}
        for region, grads in zip(regions, gradients, strict=True):
            for name, gradient in grads.items():
                grad = region.gradient(gradient, features[name].detach(), region.mask(name))
                per_layer[name] = grad if name not in per_layer else per_layer[name] + grad
    return losses.with_gradient(value, [per_layer[n] for n in names], [features[n] for n in names])
