"""Images in and out: loading, array and tensor conversions, resizing, alpha handling, and the guided
upscale of a result to the layer's size.

The engine's image type is a numpy float32 array H x W x C in [0, 1], C in 1..4
(gray, gray + alpha, RGB, RGBA), non-linear sRGB as GIMP hands it over.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from .colors import luma
from .errors import ImageError
from .events import note
from .options import LIMITS
from .readable import megapixels, picture_size

if TYPE_CHECKING:  # torch is imported where tensors are made: reading and writing files need none
    import torch

_FIX_IMAGE = "save it again as PNG or JPEG"
_MODE_CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}
# The most pixels a picture may have: the largest square the engine works at. Checked from the header,
# before anything is decoded: a small file can declare a huge picture.
MAX_PIXELS = int(LIMITS["size"][1]) ** 2
# Pillow's own check (a warning from 89 megapixels, an error from 179, both in words about attacks)
# gives way to that one, which every file this package opens goes through (`_opened`).
Image.MAX_IMAGE_PIXELS = None


def load_image(path: str | Path) -> np.ndarray:
    """Any image Pillow reads, as H x W x C float32 in [0, 1] with its own channel count."""
    path = Path(path)
    _check_file(path)
    return _decode(path, str(path), None)


def decode_image(data: bytes, name: str, max_pixels: int | None = None) -> np.ndarray:
    """An image file's bytes (as the service receives them), refused from its header alone when it has
    more than `max_pixels` (a server's limit; None: the engine's own, MAX_PIXELS)."""
    return _decode(io.BytesIO(data), name, max_pixels)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header: the same checks as `load_image`, no decoding."""
    path = Path(path)
    _check_file(path)
    with _opened(path, str(path), None) as image:
        return image.size


def too_many_pixels(name: str, width: int, height: int, server_limit: int | None) -> str:
    """Why a picture is refused for its size, and what to do: a server's limit can be raised."""
    if server_limit is None:
        limit = f"more than the engine opens ({megapixels(MAX_PIXELS)})"
        return f"Image {name} is {picture_size(width, height)}, {limit}: scale it down first."
    return (
        f"Image {name} is {picture_size(width, height)}, more than this server's limit of "
        f"{megapixels(server_limit)}: scale it down, or start the server with a larger --max-pixels."
    )


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise ImageError(
            f"Image {path} is a folder, not a picture: name an image file in it; to repaint every "
            "picture of a folder, use `python -m nst_core batch FOLDER --style STYLE -o OUT_FOLDER`."
        )
    if not path.is_file():
        raise ImageError(f"Image {path} does not exist: check the file name.")


@contextmanager
def _opened(source: Path | io.BytesIO, name: str, max_pixels: int | None) -> Iterator[Image.Image]:
    """`source` opened, its header checked (size); any failure inside as one ImageError."""
    try:
        with Image.open(source) as image:
            width, height = image.size
            if width * height > (MAX_PIXELS if max_pixels is None else max_pixels):
                raise ImageError(too_many_pixels(name, width, height, max_pixels))
            _note_frames(image, name)
            yield image
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"Image {name} cannot be read ({type(exc).__name__}: {exc}): it is corrupt or not an image; "
            f"{_FIX_IMAGE}."
        ) from None


def _note_frames(image: Image.Image, name: str) -> None:
    frames = getattr(image, "n_frames", 1)
    if frames > 1 and image.format != "MPO":  # MPO: a camera's JPEG with a preview inside, one picture
        note(
            f"{name} holds {frames} frames (an animation or pages): only the first is used; to repaint "
            "every frame, save them as separate pictures and run `python -m nst_core batch --frames`."
        )


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int | None) -> np.ndarray:
    with _opened(source, name, max_pixels) as image:
        image.load()
        return to_array(image, name=name)


def _pil_to_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit gray PNGs: keep the precision as float rather than dropping to 8 bits.
        values = np.asarray(image.convert("I"), dtype=np.float32) / 65535.0
        return np.clip(values, 0.0, 1.0)[..., None]
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)[..., None]
    if image.mode not in _MODE_CHANNELS:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        image = image.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def to_array(image: Image.Image | np.ndarray, name: str = "image") -> np.ndarray:
    """A PIL image or numpy array (u8, u16 or float in [0, 1]) as a checked H x W x C float32 array."""
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = _numpy_to_float(image, name)
    else:
        raise ImageError(f"The {name} is a {type(image).__name__}: pass a numpy array or a PIL image.")
    if array.ndim != 3 or not 1 <= array.shape[2] <= 4:
        raise ImageError(f"The {name} has shape {array.shape}: use H x W x C with 1 to 4 channels.")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"The {name} is empty (0 pixels): use an image with at least one pixel.")
    if not np.isfinite(array).all():
        raise ImageError(f"The {name} contains NaN or infinite values: pass values from 0 to 1.")
    return np.ascontiguousarray(np.clip(array, 0.0, 1.0), dtype=np.float32)


def _numpy_to_float(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = array[..., None]
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise ImageError(f"The {name} has pixel type {array.dtype}: use uint8, uint16 or float32 in [0, 1].")


def to_pil(array: np.ndarray) -> Image.Image:
    """8-bit PIL image of an H x W x C array in [0, 1] (for saving)."""
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    data = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    return Image.fromarray(data[..., 0] if mode == "L" else data, mode)


def fit_size(width: int, height: int, longest: int, min_side: int = 1) -> tuple[int, int]:
    """(width, height) scaled so the longest side is `longest`, no side below `min_side`."""
    scale = longest / max(width, height)
    return max(min_side, round(width * scale)), max(min_side, round(height * scale))


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos resize of an H x W x C float array (antialiased when shrinking)."""
    if array.shape[1] == width and array.shape[0] == height:
        return array.copy()
    planes = [Image.fromarray(np.ascontiguousarray(array[..., c])) for c in range(array.shape[2])]
    channels = [np.asarray(p.resize((width, height), Image.LANCZOS)) for p in planes]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_tensor(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of N x C x H x W to `size` = (H, W), antialiased when shrinking."""
    import torch.nn.functional as F

    if tuple(image.shape[-2:]) == tuple(size):
        return image.clone()
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    try:
        out = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    except (NotImplementedError, RuntimeError):  # some back ends lack antialiased bicubic
        out = F.interpolate(image, size=size, mode="bicubic", align_corners=False)
    return out.clamp(0, 1)


def to_tensor(rgb: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """H x W x 3 array -> 1 x 3 x H x W float32 tensor."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32)).permute(2, 0, 1)[None]
    return tensor.contiguous().to(device)


def from_tensor(image: torch.Tensor) -> np.ndarray:
    return image.detach()[0].permute(1, 2, 0).float().cpu().numpy().astype(np.float32, copy=True)


def split_alpha(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(RGB, alpha or None); gray is repeated to RGB."""
    channels = array.shape[2]
    color = array[..., : 1 if channels <= 2 else 3]
    alpha = array[..., -1] if channels in (2, 4) else None
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    return np.ascontiguousarray(color), alpha


def merge_alpha(rgb: np.ndarray, alpha: np.ndarray | None, channels: int) -> np.ndarray:
    """Back to `channels` channels: gray layouts take the luminance of `rgb`."""
    color = luma(rgb)[..., None] if channels <= 2 else rgb
    parts = [color] if alpha is None else [color, alpha[..., None]]
    return np.clip(np.concatenate(parts, axis=2), 0.0, 1.0).astype(np.float32)


def fill_transparent(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Replace fully transparent pixels' colour by the nearby visible colours (push-pull).

    Transparent pixels often hold arbitrary colour; left in place it would be stylised and
    bleed into the visible edge through the network's receptive field.
    """
    hidden = alpha <= 0
    if not hidden.any():
        return rgb
    if hidden.all():
        return np.full_like(rgb, 0.5)
    weight = (~hidden).astype(np.float32)[..., None]
    filled = _push_pull(rgb * weight, weight)
    return np.where(hidden[..., None], filled, rgb).astype(np.float32)


def _push_pull(premultiplied: np.ndarray, weight: np.ndarray) -> np.ndarray:
    height, width = weight.shape[:2]
    if max(height, width) <= 1 or weight.min() > 0:
        return premultiplied / np.maximum(weight, 1e-12)
    coarse = _push_pull(_halve(premultiplied), _halve(weight))
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:height, :width]
    # Known pixels keep their (averaged) colour; holes take the coarser level's estimate.
    own = premultiplied / np.maximum(weight, 1e-12)
    return np.where(weight > 0, own, up)


def _halve(array: np.ndarray) -> np.ndarray:
    height, width = array.shape[:2]
    padded = np.pad(array, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    return 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


# -- the guided upscale of a result to the layer's size ---------------------------------------------
#
# Edge-aware upscaling of the stylised result, guided by the full-resolution layer.
#
# The engine stylises at a working size that can be well below the layer's. Resized by an
# interpolating filter alone the result keeps the working size's softness: at 4x a step edge rises
# over about 4 output pixels where the photo's rises over 1. The fast guided filter for upsampling
# (He & Sun 2015, built on the guided filter of He et al. 2010) fits, in every small window at the
# working size, the result as a linear function of the photo's colour, q = A·I + b, then applies those
# coefficients, bilinearly upsampled, to the full-resolution photo: colours come from the
# stylisation, where the edges lie and how sharp they are from the photo.
#
# One change to the published filter: b also carries what the fit leaves over at the working size
# (the result minus the filtered result), so the stylisation's own fine texture, which the photo
# cannot explain, survives at the working size's resolution instead of being smoothed away.

# Chosen on joint-upsampling tests: photos recoloured, posterised and TV-flattened (stand-ins for a
# stylisation), with and without added fine texture, upscaled 1.25x to 4x, PSNR against the same
# operation done at full size. Window radius in working-size pixels: 1 gained most over Lanczos
# (4.8 dB mean at 4x; 2 and 3 gave 4.7 and 4.6): wider windows blur the stylisation's own changes.
UPSCALE_RADIUS = 1
# Regularisation relative to [0, 1] values: windows whose colour spread is below ~0.1 (its square
# root) are taken as flat, so the photo's faint texture stays out while its edges come through. 1e-3 suits a
# plain recolouring best but carries photo texture into flattened areas (TV: +5.2 dB, here +7.5);
# 3e-2 starts to lose the edges (recolouring +5.3 dB, here +8.1).
UPSCALE_EPS = 1e-2
# The residual above (b carries what the fit leaves over): without it, at 2x and 1.25x the filter
# does worse than Lanczos on average (the stylisation's fine texture is smoothed away); with it,
# better at every factor tried.
UPSCALE_KEEP_DETAIL = True
# Below this factor Lanczos softens a step by under half a pixel (10-90% rise 1.26 px at 1.25x, the
# photo's 0.8): too little to be worth a filter that can also carry photo texture into the result.
UPSCALE_MIN_FACTOR = 1.25
# Output rows per band: a band's upsampled coefficients (12 planes, twice) take 74 MB at 6000 px
# wide, and the fit runs on the band's working-size rows alone: no stage holds full-size planes.
UPSCALE_BAND_ROWS = 128


def guided_upscale(result: np.ndarray, guide: np.ndarray, width: int, height: int) -> np.ndarray:
    """`result` (h x w x 3, the working size) at width x height, its edges taken from `guide`.

    `guide` is the content at the output size, H x W x 3; both float32 in [0, 1]. Returns
    H x W x 3 float32 in [0, 1].
    """
    low_h, low_w = result.shape[:2]
    if guide.shape[:2] != (height, width):
        raise ValueError(f"the guide is {guide.shape[1]} x {guide.shape[0]}, the output {width} x {height}")
    if min(width / low_w, height / low_h) < UPSCALE_MIN_FACTOR:
        return resize(result, width, height)
    # The resize that made the engine's working-size content, so that guide and result line up.
    small_guide = resize(guide, low_w, low_h)
    rows, cols = _bilinear_taps(height, low_h), _bilinear_taps(width, low_w)
    out = np.empty((height, width, 3), np.float32)
    for top in range(0, height, UPSCALE_BAND_ROWS):
        band = slice(top, min(top + UPSCALE_BAND_ROWS, height))
        first, last = rows[0][band][0], rows[1][band][-1] + 1  # the working-size rows the band reads
        # Coefficients depend on rows up to 2 UPSCALE_RADIUS away (two box filters): fit with that margin.
        lo, hi = max(first - 2 * UPSCALE_RADIUS, 0), min(last + 2 * UPSCALE_RADIUS, low_h)
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
    s = {}  # the guide's colour covariance per window, plus UPSCALE_EPS on the diagonal
    for k in range(3):
        for m in range(k, 3):
            s[k, m] = s[m, k] = (
                mean(guide[k] * guide[m]) - mean_i[k] * mean_i[m] + (UPSCALE_EPS if k == m else 0.0)
            )
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
    # Each pixel lies in (2 UPSCALE_RADIUS + 1)^2 windows: the guided filter averages their coefficients.
    for plane in coeffs:
        plane[...] = mean(plane)
    if UPSCALE_KEEP_DETAIL:  # b such that A·I + b is the result itself at the working size
        for c in range(3):
            coeffs[9 + c] = result[c] - sum(coeffs[3 * k + c] * guide[k] for k in range(3))
    return coeffs


def _box(plane: np.ndarray) -> np.ndarray:
    """Sums over (2 r + 1)^2 windows (r: UPSCALE_RADIUS) clipped at the borders: cumulative sums, O(1)
    in r."""
    for axis in (0, 1):
        n = plane.shape[axis]
        # float64 sums: a float32 running sum over thousands of pixels would lose the small variances.
        sums = np.concatenate([np.zeros_like(plane.take([0], axis)), plane], axis).cumsum(axis, np.float64)
        ends, starts = (
            np.minimum(np.arange(n) + UPSCALE_RADIUS + 1, n),
            np.maximum(np.arange(n) - UPSCALE_RADIUS, 0),
        )
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
