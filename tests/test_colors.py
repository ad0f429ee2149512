"""Keeping the content's colours: YCbCr recombination and colour-statistics matching."""

from __future__ import annotations

import numpy as np

from nst_core import colors


def _random(seed: int, shape: tuple[int, ...] = (16, 12, 3)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def test_ycbcr_round_trip_and_gray() -> None:
    rgb = _random(0)
    np.testing.assert_allclose(colors.ycbcr_to_rgb(colors.rgb_to_ycbcr(rgb)), rgb, atol=1e-5)
    gray = np.full((2, 2, 3), 0.3, np.float32)
    ycbcr = colors.rgb_to_ycbcr(gray)
    np.testing.assert_allclose(ycbcr[..., 0], 0.3, atol=1e-6)
    np.testing.assert_allclose(ycbcr[..., 1:], 0.0, atol=1e-6)


def test_with_content_chroma_keeps_result_luma_and_content_chroma() -> None:
    content = 0.4 + 0.2 * _random(1)  # mild colours and luma: the recombination never clips
    result = 0.35 + 0.3 * _random(2)
    out = colors.with_content_chroma(result, content)
    np.testing.assert_allclose(colors.luma(out), colors.luma(result), atol=1e-4)
    chroma_out, chroma_in = colors.rgb_to_ycbcr(out)[..., 1:], colors.rgb_to_ycbcr(content)[..., 1:]
    np.testing.assert_allclose(chroma_out, chroma_in, atol=1e-4)


def test_match_color_statistics_gives_content_mean_and_covariance() -> None:
    content = 0.3 + 0.3 * _random(3, (40, 40, 3))
    content[..., 2] *= 0.5
    style = 0.2 + 0.6 * _random(4, (30, 30, 3)) ** 2
    out = colors.match_color_statistics(style, content)
    pixels_out, pixels_in = out.reshape(-1, 3), content.reshape(-1, 3)
    np.testing.assert_allclose(pixels_out.mean(0), pixels_in.mean(0), atol=0.01)
    np.testing.assert_allclose(np.cov(pixels_out.T), np.cov(pixels_in.T), atol=0.003)


def test_match_luminance() -> None:
    content, style = _random(5), _random(6) ** 3
    out = colors.match_luminance(style, content)
    assert out.shape == style.shape and np.allclose(out[..., 0], out[..., 2])
    assert abs(out[..., 0].mean() - colors.luma(content).mean()) < 0.01
    assert abs(out[..., 0].std() - colors.luma(content).std()) < 0.01


def _stats(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pixels = rgb.reshape(-1, 3).astype(np.float64)
    return pixels.mean(0), np.cov(pixels.T, bias=True)


def test_the_photo_in_the_styles_colours_takes_their_pooled_mean_and_covariance() -> None:
    photo = 0.3 + 0.3 * _random(7, (40, 40, 3))
    dark = 0.1 * _random(8, (30, 30, 3))  # a night sky
    dusk = 0.25 + 0.1 * _random(13, (30, 30, 3))
    warm = (0.45 + _random(9, (20, 20, 3)) * [0.3, 0.2, 0.1]).astype(np.float32)
    out = colors.in_style_colors(photo, [dark], [1.0])
    np.testing.assert_allclose(_stats(out)[0], _stats(dark)[0], atol=0.005)
    np.testing.assert_allclose(_stats(out)[1], _stats(dark)[1], atol=0.001)
    # The map is affine in each pixel: the photo's own pattern is all still there.
    assert np.corrcoef(colors.luma(out).ravel(), colors.luma(photo).ravel())[0, 1] > 0.9
    # Two styles at 3 : 1 give the statistics of their pixels pooled 3 : 1 (nothing clipped here).
    pooled = np.concatenate([np.repeat(dusk.reshape(-1, 3), 3 * 4, 0), np.repeat(warm.reshape(-1, 3), 9, 0)])
    out = colors.in_style_colors(photo, [dusk, warm], [3.0, 1.0])
    np.testing.assert_allclose(_stats(out)[0], pooled.mean(0), atol=0.01)
    np.testing.assert_allclose(_stats(out)[1], np.cov(pooled.T, bias=True), atol=0.003)


def test_each_region_takes_its_own_styles_colours_and_the_rest_keeps_the_photos() -> None:
    photo = 0.3 + 0.3 * _random(10, (20, 30, 3))
    dark, bright = 0.1 * _random(11, (16, 16, 3)), 0.8 + 0.2 * _random(12, (16, 16, 3))
    left, right = np.zeros((20, 30), np.float32), np.zeros((20, 30), np.float32)
    left[:, :10], right[:, 20:] = 1.0, 1.0
    out = colors.in_style_colors(photo, [dark, bright], [1.0, 1.0], [left, right])
    assert out[:, :10].mean() < 0.15 and out[:, 20:].mean() > 0.75
    np.testing.assert_array_equal(out[:, 10:20], photo[:, 10:20])
