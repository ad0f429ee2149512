"""Before/after crops and numbers for docs/performance.md, "Upscaling: guided by the photo's edges".

Run from the repository root: python tests/make_upscale_crops.py. Not a test (pytest does not
collect it). The "stylised result" is a stand-in: skimage's astronaut at a quarter of its size,
blurred and posterised, so that it has colours and flat areas of its own like a stylisation.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data, filters

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nst_core import images  # noqa: E402
from nst_core.images import guided_upscale  # noqa: E402

OUTPUT = REPO / "docs" / "images" / "upscale-bicubic-vs-guided.png"
FACTOR = 4  # a working size a quarter of the layer's: a 6000 px layer stylised at 1500 px
CROP = (slice(60, 316), slice(150, 406))  # 256 x 256: the helmet's rim, the face, the flag


def bicubic(array: np.ndarray, width: int, height: int) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    out = F.interpolate(tensor, size=(height, width), mode="bicubic", align_corners=False)
    return out[0].permute(1, 2, 0).clamp(0, 1).numpy()


def stand_in_result(photo: np.ndarray) -> np.ndarray:
    small = images.resize(photo, photo.shape[1] // FACTOR, photo.shape[0] // FACTOR)
    blurred = filters.gaussian(small, sigma=1.0, channel_axis=-1)
    return (np.round(blurred * 8) / 8).astype(np.float32)


def rise_width(profile: np.ndarray) -> float:
    """10-90% rise in pixels of a step profile, levels taken from its two ends."""
    p = (profile - profile[:10].mean()) / (profile[-10:].mean() - profile[:10].mean())

    def crossing(level: float) -> float:
        i = int(np.argmax(p >= level))
        return i - 1 + (level - p[i - 1]) / (p[i] - p[i - 1])

    return crossing(0.9) - crossing(0.1)


def edge_widths(size: int = 192) -> dict[str, float]:
    """Median rise across a slanted sharp step (every sub-pixel position), upscaled FACTOR times."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    cover = np.clip(x + 0.5 - (0.45 * size + 0.15 * y), 0, 1)[..., None]
    photo = (0.2 + 0.6 * cover).repeat(3, axis=2).astype(np.float32)
    result = 1.0 - images.resize(photo, size // FACTOR, size // FACTOR)  # new colours, same edge
    ups = {
        "photo": photo,
        "bicubic": bicubic(result, size, size),
        "Lanczos (images.resize)": images.resize(result, size, size),
        "guided": guided_upscale(result, photo, size, size),
    }
    return {
        name: float(np.median([rise_width(u[r, :, 0]) for r in range(16, size - 16)]))
        for name, u in ups.items()
    }


def seconds_for(width: int, height: int, repeats: int = 3) -> float:
    guide = images.resize(data.astronaut().astype(np.float32) / 255.0, width, height)
    result = images.resize(guide, width // FACTOR, height // FACTOR)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        guided_upscale(result, guide, width, height)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    photo = data.astronaut().astype(np.float32) / 255.0
    height, width = photo.shape[:2]
    result = stand_in_result(photo)
    panels = [
        bicubic(result, width, height)[CROP],
        guided_upscale(result, photo, width, height)[CROP],
        photo[CROP],
    ]
    gap = np.ones((256, 8, 3), np.float32)
    strip = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(OUTPUT, optimize=True)
    print(f"{OUTPUT.relative_to(REPO)}: {OUTPUT.stat().st_size // 1024} KB")
    for name, value in edge_widths().items():
        print(f"10-90% edge rise, {name}: {value:.2f} px")
    print(f"4000 x 3000 output from 1000 x 750: {seconds_for(4000, 3000):.2f} s (best of 3)")


if __name__ == "__main__":
    main()
