"""Keeping the content's colours (Gatys et al., "Preserving Color in Neural Artistic Style Transfer").

- luminance: stylise luminance only (content and styles as gray), then put the content's
  chroma back: YCbCr (ITU-R BT.601, full range, as JPEG) with the result's Y.
- histogram: before stylising, give each style the content's colour mean and covariance
  (a linear map x -> A (x - mu_s) + mu_c with A = Sigma_c^1/2 Sigma_s^-1/2).

The same map the other way gives the user presets their start (`in_style_colors`): the photo in the
style's colours, so the optimiser spends its iterations on the strokes rather than on moving every
pixel's colour (a dark style's most of all; docs/quality.md).

Arrays are H x W x 3 float32 in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)
_EPS = 1e-6


def luma(rgb: np.ndarray) -> np.ndarray:
    """Y of BT.601: H x W x 3 -> H x W."""
    return (rgb @ _RGB_TO_YCBCR[0].astype(np.float32)).astype(np.float32)


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Y in [0, 1], Cb and Cr centred on 0 (in [-0.5, 0.5])."""
    return (rgb.astype(np.float64) @ _RGB_TO_YCBCR.T).astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    return np.clip(ycbcr.astype(np.float64) @ _YCBCR_TO_RGB.T, 0.0, 1.0).astype(np.float32)


def gray_rgb(rgb: np.ndarray) -> np.ndarray:
    """The luminance repeated into three channels: what the network sees in luminance mode."""
    return np.repeat(luma(rgb)[..., None], 3, axis=2)


def match_luminance(style_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """The style's luminance with the content's mean and spread, as gray RGB (what luminance mode feeds)."""
    y_style, y_content = luma(style_rgb), luma(content_rgb)
    scale = y_content.std() / max(float(y_style.std()), _EPS)
    y = (y_style - y_style.mean()) * scale + y_content.mean()
    return np.repeat(np.clip(y, 0.0, 1.0)[..., None], 3, axis=2).astype(np.float32)


def with_content_chroma(result_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """The result's luminance with the content's Cb and Cr (same size arrays)."""
    ycbcr = rgb_to_ycbcr(content_rgb)
    ycbcr[..., 0] = luma(result_rgb)
    return ycbcr_to_rgb(ycbcr)


_STAT_PIXELS = 1 << 20  # a colour mean and covariance from at most this many pixels: as exact, cheaper


def _mean_cov(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = rgb.reshape(-1, 3)
    pixels = pixels[:: max(1, len(pixels) // _STAT_PIXELS)].astype(np.float64)
    mean = pixels.mean(axis=0)
    centred = pixels - mean
    return mean, centred.T @ centred / len(pixels) + _EPS * np.eye(3)


def _sym_power(matrix: np.ndarray, power: float) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.clip(values, _EPS, None) ** power) @ vectors.T


def match_color_statistics(style_rgb: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
    """The style recoloured to the content's colour mean and covariance."""
    return _transferred(style_rgb, _mean_cov(style_rgb), _mean_cov(content_rgb))


def _transferred(
    rgb: np.ndarray, source: tuple[np.ndarray, np.ndarray], target: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """`rgb`, whose colours have the mean and covariance `source`, mapped to those of `target`."""
    (mean_s, cov_s), (mean_t, cov_t) = source, target
    transform = _sym_power(cov_t, 0.5) @ _sym_power(cov_s, -0.5)
    pixels = (rgb.reshape(-1, 3) - mean_s) @ transform.T + mean_t
    return np.clip(pixels, 0.0, 1.0).reshape(rgb.shape).astype(np.float32)


def _mixture(
    stats: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """The mean and covariance of the styles' pixels pooled in proportion to `weights`."""
    shares = np.asarray(weights, dtype=np.float64) / float(np.sum(weights))
    mean = sum(w * m for w, (m, _) in zip(shares, stats, strict=True))
    second = sum(w * (c + np.outer(m, m)) for w, (m, c) in zip(shares, stats, strict=True))
    return mean, second - np.outer(mean, mean)


def in_style_colors(
    content_rgb: np.ndarray,
    styles: Sequence[np.ndarray],
    blend: Sequence[float],
    planes: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The content recoloured to the styles' colour mean and covariance: without `planes` to the
    styles' pixels pooled by `blend`, with them (H x W, one per style, summing to at most 1) each
    region to its own style, and what no region covers left as it is."""
    own = _mean_cov(content_rgb)
    stats = [_mean_cov(s) for s in styles]
    if planes is None:
        return _transferred(content_rgb, own, _mixture(stats, blend))
    out = content_rgb * (1.0 - np.sum(planes, axis=0))[..., None]
    for plane, target in zip(planes, stats, strict=True):
        out += plane[..., None] * _transferred(content_rgb, own, target)
    return out.astype(np.float32)
