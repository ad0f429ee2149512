"""Measures of a stylised picture that neither of the engine's losses optimises, for quality tests.

The style loss matches per-layer moments (Gram matrices, or Gaussian W2 fits) and the content loss
the features at relu4_2; these judge otherwise:
- `Judges.style_distance`: the sliced Wasserstein distance of the whole feature distributions at the
  ends of VGG16's first four blocks, along fixed random directions, each layer in units of the
  style's own spread there (0: the style's features; the content photo's own distance is the yardstick).
- `Judges.content_distance`: the relative distance of the features at relu3_3 (a mid layer the
  content loss does not read) to the content's.
- `edge_agreement`: the correlation of the luminance edge maps, lightly blurred so that the style's
  finest strokes count less than the picture's structure (1: the content's edges).

Pictures are H x W x 3 float arrays in [0, 1]. The judges are meant for real features
(tests/real_features.py): random weights see colour and blur, not strokes or objects.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage import filters

from nst_core import network
from nst_core.images import fit_size, resize, to_tensor

STYLE_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
CONTENT_LAYER = "relu3_3"
PROJECTIONS = 128
QUANTILES = 256
SEED = 0
EDGE_SIGMA = 1.0  # pixels


class Judges:
    """The feature-based judges on one VGG16 weights file."""

    def __init__(self, weights: Path) -> None:
        layers = (*STYLE_LAYERS, CONTENT_LAYER)
        self.net = network.build_network("vgg16", weights, dict.fromkeys(layers))

    def features(self, picture: np.ndarray) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.net(to_tensor(picture))

    def style_distance(self, picture: np.ndarray, style: np.ndarray) -> float:
        """Mean over STYLE_LAYERS of the sliced Wasserstein distance to `style`, which is first resized
        to `picture`'s longest side (the scale the engine matches it at by default)."""
        height, width = style.shape[:2]
        style = resize(style, *fit_size(width, height, max(picture.shape[:2])))
        ours, theirs = self.features(picture), self.features(style)
        distances = [sliced_wasserstein(positions(ours[n]), positions(theirs[n])) for n in STYLE_LAYERS]
        return float(np.mean(distances))

    def content_distance(self, picture: np.ndarray, content: np.ndarray) -> float:
        """|F(picture) - F(content)| / |F(content)| at CONTENT_LAYER; `content` is resized to `picture`."""
        content = resize(content, picture.shape[1], picture.shape[0])
        ours, theirs = self.features(picture)[CONTENT_LAYER], self.features(content)[CONTENT_LAYER]
        return float((ours - theirs).norm() / theirs.norm())


def positions(features: torch.Tensor) -> torch.Tensor:
    """1 x C x H x W -> (H W) x C: one sample of the layer's distribution per position."""
    return features[0].flatten(1).T


def sliced_wasserstein(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """The 2-Wasserstein distance between the projections of two N x C sample sets along PROJECTIONS
    fixed random directions, root-mean-square over the directions, over the reference's spread along
    them (so layers of any scale weigh alike and 1 is as far as the reference is wide)."""
    generator = torch.Generator().manual_seed(SEED)
    directions = torch.randn(reference.shape[1], PROJECTIONS, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    levels = torch.linspace(0, 1, QUANTILES, dtype=torch.float64)
    ours = torch.quantile(samples.double() @ directions, levels, dim=0)
    theirs = torch.quantile(reference.double() @ directions, levels, dim=0)
    spread = theirs.std(dim=0).pow(2).mean().sqrt()
    return float((ours - theirs).pow(2).mean().sqrt() / spread)


def edge_agreement(picture: np.ndarray, content: np.ndarray) -> float:
    """Pearson correlation of the blurred luminance edge magnitudes; `content` is resized to `picture`."""
    content = resize(content, picture.shape[1], picture.shape[0])
    ours, theirs = (edges(p).ravel() for p in (picture, content))
    return float(np.corrcoef(ours, theirs)[0, 1])


def edges(picture: np.ndarray) -> np.ndarray:
    luminance = picture[..., :3] @ np.asarray([0.299, 0.587, 0.114], np.float32)
    return filters.sobel(filters.gaussian(luminance, sigma=EDGE_SIGMA))
