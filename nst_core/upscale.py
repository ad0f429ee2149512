"""Edge-aware upscaling of the stylised result, guided by the full-resolution layer.

The engine stylises at a working size that can be well below the layer's. Resized by an
interpolating filter alone the result keeps the working size's softness: at 4x a step edge rises
over about 4 output pixels where the photo's rises over 1. The fast guided filter for upsampling
(He & Sun 2015, built on the guided filter of He et al. 2010) fits, in every small window at the
working size, the result as a linear function of the photo's colour, q = A·I + b, then applies those
coefficients, bilinearly upsampled, to the full-resolution photo: colours come from the
stylisation, where the edges lie and how sharp they are from the photo.

One change to the published filter: b also carries what the fit leaves over at the working size
(the result minus the filtered result), so the stylisation's own fine texture, which the photo
cannot explain, survives at the working size's resolution instead of being smoothed away.
"""

from __future__ import annotations

import numpy as np

from . import images

# Chosen on joint-upsampling tests: photos recoloured, posterised and TV-flattened (stand-ins for a
# stylisation), with and without added fine texture, upscaled 1.25x to 4x, PSNR against the same
# operation done at full size. Window radius in working-size pixels: 1 gained most over Lanczos
# (4.8 dB mean at 4x; 2 and 3 gave 4.7 and 4.6): wider windows blur the stylisation's own changes.
RADIUS = 1
# Regularisation relative to [0, 1] values: windows whose colour spread is below ~0.1 (sqrt EPS) are
# taken as flat, so the photo's faint texture stays out while its edges come through. 1e-3 suits a
# plain recolouring best but carries photo texture into flattened areas (TV: +5.2 dB, here +7.5);
# 3e-2 starts to lose the edges (recolouring +5.3 dB, here +8.1).
EPS = 1e-2
# The residual of the docstring: without it, at 2x and 1.25x the filter does worse than Lanczos on
# average (the stylisation's fine texture is smoothed away); with it, better at every factor tried.
KEEP_DETAIL = True
# Below this factor Lanczos softens a step by under half a pixel (10-90% rise 1.26 px at 1.25x, the
# photo's 0.8): too little to be worth a filter that can also carry photo texture into the result.
MIN_FACTOR = 1.25
# Output rows per band: a band's upsampled coefficients (12 planes, twice) take 74 MB at 6000 px
# wide, and the fit runs on the band's working-size rows alone: no stage holds full-size planes.
BAND_ROWS = 128


def guided_upscale(result: np.ndarray, guide: np.ndarray, width: int, height: int) -> np.ndarray:
    """`result` (h x w x 3, the working size) at width x height, its edges taken from `guide`.

    `guide` is the content at the output size, H x W x 3; both float32 in [0, 1]. Returns
    H x W x 3 float32 in [0, 1].
    """
    low_h, low_w = result.shape[:2]
    if guide.shape[:2] != (height, width):
        raise ValueError(f"the guide is {guide.shape[1]} x {guide.shape[0]}, the output {width} x {height}")
    if min(width / low_w, height / low_h) < MIN_FACTOR:
        return images.resize(result, width, height)
    # The resize that made the engine's working-size content, so that guide and result line up.
    small_guide = images.resize(guide, low_w, low_h)
    rows, cols = _bilinear_taps(height, low_h), _bilinear_taps(width, low_w)
    out = np.empty((height, width, 3), np.float32)
    for top in range(0, height, BAND_ROWS):
        band = slice(top, min(top + BAND_ROWS, height))
        first, last = rows[0][band][0], rows[1][band][-1] + 1  # the working-size rows the band reads
        # Coefficients depend on rows up to 2 RADIUS away (two box filters): fit with that margin.
        lo, hi = max(first - 2 * RADIUS, 0), min(last + 2 * RADIUS, low_h)
        coeffs = _coefficients(_planes(small_guide[lo:hi]), _planes(result[lo:hi]))
        band_rows = tuple(t[band] - first for t in rows[:2]) + (rows[2][band],)
        out[band] = _apply(coeffs[:, first - lo : last - lo], guide[band], band_rows, cols)
    return out


def _planes(rgb: np.ndarray) -> list[np.ndarray]:
    return [np.ascontiguousarray(rgb[..., c], dtype=np.float32) for c in range(3)]


def _coefficients(guide: list[np.ndarray], result: list[np.ndarray]) -> np.ndarray:
    """12 x h x w: the window-averaged A (plane 3 k + c: guide channel k to output c), then b."""
    count = _box(np.ones_like(guide[0]))

    def mean(plane: np.ndarray) -> np.ndarray:
        return _box(plane) / count

    mean_i = [mean(g) for g in guide]
    mean_p = [mean(p) for p in result]
    s = {}  # the guide's colour covariance per window, plus EPS on the diagonal
    for k in range(3):
        for m in range(k, 3):
            s[k, m] = s[m, k] = mean(guide[k] * guide[m]) - mean_i[k] * mean_i[m] + (EPS if k == m else 0.0)
    # Inverse of the symmetric 3 x 3 by cofactors: a closed form per pixel, no batched solver.
    inverse = {
        (0, 0): s[1, 1] * s[2, 2] - s[1, 2] ** 2,
        (0, 1): s[0, 2] * s[1, 2] - s[0, 1] * s[2, 2],
        (0, 2): s[0, 1] * s[1, 2] - s[0, 2] * s[1, 1],
        (1, 1): s[0, 0] * s[2, 2] - s[0, 2] ** 2,
        (1, 2): s[0, 2] * s[0, 1] - s[0, 0] * s[1, 2],
        (2, 2): s[0, 0] * s[1, 1] - s[0, 1] ** 2,
    }
    for k, m in ((0, 1), (0, 2), (1, 2)):
        inverse[m, k] = inverse[k, m]
    det = s[0, 0] * inverse[0, 0] + s[0, 1] * inverse[0, 1] + s[0, 2] * inverse[0, 2]
    del s
    coeffs = np.empty((12, *count.shape), np.float32)
    for c in range(3):
        cov = [mean(guide[k] * result[c]) - mean_i[k] * mean_p[c] for k in range(3)]
        for k in range(3):
            coeffs[3 * k + c] = sum(inverse[k, m] * cov[m] for m in range(3)) / det
        coeffs[9 + c] = mean_p[c] - sum(coeffs[3 * k + c] * mean_i[k] for k in range(3))
    # Each pixel lies in (2 RADIUS + 1)^2 windows: the guided filter averages their coefficients.
    for plane in coeffs:
        plane[...] = mean(plane)
    if KEEP_DETAIL:  # b such that A·I + b is the result itself at the working size
        for c in range(3):
            coeffs[9 + c] = result[c] - sum(coeffs[3 * k + c] * guide[k] for k in range(3))
    return coeffs


def _box(plane: np.ndarray) -> np.ndarray:
    """Sums over (2 RADIUS + 1)^2 windows clipped at the borders: cumulative sums, O(1) in RADIUS."""
    for axis in (0, 1):
        n = plane.shape[axis]
        # float64 sums: a float32 running sum over thousands of pixels would lose the small variances.
        sums = np.concatenate([np.zeros_like(plane.take([0], axis)), plane], axis).cumsum(axis, np.float64)
        ends, starts = np.minimum(np.arange(n) + RADIUS + 1, n), np.maximum(np.arange(n) - RADIUS, 0)
        plane = sums.take(ends, axis) - sums.take(starts, axis)
    return plane.astype(np.float32)


def _bilinear_taps(size: int, low: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output index, its two working-size neighbours and the second's weight (pixel centres)."""
    position = np.clip((np.arange(size) + 0.5) * (low / size) - 0.5, 0, low - 1)
    first = np.floor(position).astype(np.intp)
    second = np.minimum(first + 1, low - 1)
    return first, second, (position - first).astype(np.float32)


def _apply(coeffs: np.ndarray, guide: np.ndarray, rows: tuple, cols: tuple) -> np.ndarray:
    """q = A·I + b for a band of output rows, from the coefficients of the working-size rows it reads."""
    (r0, r1, wr), (c0, c1, wc) = rows, cols
    wide = coeffs[..., c0]
    wide += (coeffs[..., c1] - wide) * wc  # columns first: on the band's few working-size rows
    ab, step = wide[:, r0], wide[:, r1]
    step -= ab
    step *= wr[:, None]
    ab += step
    del step
    q = np.empty(guide.shape, np.float32)
    for c in range(3):
        q[..., c] = ab[9 + c] + ab[c] * guide[..., 0] + ab[3 + c] * guide[..., 1] + ab[6 + c] * guide[..., 2]
    return np.clip(q, 0.0, 1.0, out=q)
