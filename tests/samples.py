"""Test inputs made on the spot: random-weight VGG files in torchvision's format, sample images.

Imported by the tests as `samples` (a plain module, because several folders have a conftest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def make_random_vgg_weights(path: Path, model: str = "vgg19", seed: int = 0) -> Path:
    """A features-only state dict with torchvision's keys, reproducible from `seed`."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    net = getattr(torchvision.models, model)(weights=None).features
    state = {f"features.{k}": v.clone() for k, v in net.state_dict().items()}
    torch.save(state, path)
    return path


def make_official_like_weights(path: Path, features: Path) -> Path:
    """`features`' tensors as torchvision ships its files: in torch's legacy (non-zip) format and with a
    classifier beside them (a small one: the engine never reads it)."""
    import torch

    generator = torch.Generator().manual_seed(1)
    state = dict(torch.load(features, weights_only=True))
    for index, shape in ((0, (8, 16)), (3, (8, 8)), (6, (4, 8))):
        state[f"classifier.{index}.weight"] = torch.randn(shape, generator=generator)
        state[f"classifier.{index}.bias"] = torch.randn(shape[0], generator=generator)
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def make_content_image(width: int = 96, height: int = 64) -> Image.Image:
    """Smooth shapes: a gradient sky, a disc and a bar, so content structure is easy to measure."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width, y / height, 0.5 + 0 * x], axis=-1)
    disc = (x - width * 0.35) ** 2 + (y - height * 0.5) ** 2 < (min(width, height) * 0.25) ** 2
    rgb[disc] = (0.9, 0.2, 0.1)
    rgb[int(height * 0.7) : int(height * 0.8), int(width * 0.55) : int(width * 0.9)] = (0.1, 0.1, 0.8)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


def make_style_image(width: int = 80, height: int = 80, seed: int = 1) -> Image.Image:
    """High-frequency coloured stripes and speckles: a texture that differs clearly from the content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((x + 2 * y) / 2.5)
    rgb = np.stack([stripes, 1 - stripes, 0.3 + 0.4 * rng.random((height, width))], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")


@dataclass(frozen=True)
class JobFiles:
    """What a job on files needs: a content and a style picture, and the random VGG19 weights."""

    content: Path
    style: Path
    weights: Path

    def stylize(
        self, output: Path, *flags: str | Path, content: Path | None = None, styles: tuple[Path, ...] = ()
    ) -> list[str]:
        """`stylize` arguments for these files (or `content`, `styles`) with the random weights; a later
        --weights in `flags` wins."""
        inputs = (content or self.content, *(styles or (self.style,)))
        return [str(a) for a in ("stylize", *inputs, "-o", output, "--weights", self.weights, *flags)]
