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
