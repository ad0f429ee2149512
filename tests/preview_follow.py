"""The dialog's previews as a warm engine runs them, side by side: each from scratch (the style's targets
and the balance's trials kept, as before) and each following the last one (nst_core/previews.py), over a
sequence of strengths, with the seconds and the real-feature judges (tests/judges.py). Not a test.

    python tests/preview_follow.py --weights vgg16-imagenet.pth --out DIR \\
        --pairs astronaut:starry_night chelsea:the_scream --strengths 1 0.5 0.25 1 2

WEIGHTS: the converted ImageNet VGG16 (tests/real_features.py). Each preview is the dialog's (256 px,
30 iterations, the preset's balance), in one process whose network is loaded; the first preview of each
pair fills both engines' caches and is not timed. The pictures go to DIR, with a contact sheet.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from judges import Judges
from PIL import Image
from quality_sweep import contact_sheet, load_picture

from nst_core.images import fit_size, resize
from nst_core.options import Options
from nst_core.presets import PREVIEW_ITERATIONS, PREVIEW_SIZE
from nst_core.run import stylize
from nst_core.stylecache import StyleCache

STYLE_SIDE = 512  # the dialog reads a style file at twice the preview's size


def fitted(picture: np.ndarray, side: int) -> np.ndarray:
    height, width = picture.shape[:2]
    return resize(picture, *fit_size(width, height, side))


def preview(
    args: argparse.Namespace,
    content: np.ndarray,
    style: np.ndarray,
    cache: StyleCache,
    strength: float,
    follow: bool,
) -> tuple[np.ndarray, float]:
    """One preview as the dialog asks for it, through a warm engine's `cache`: the picture, its seconds."""
    options = Options(
        preset=args.preset,
        size=max(content.shape[:2]),
        iterations=PREVIEW_ITERATIONS,
        model="vgg16",
        weights=str(args.weights),
        strength=strength,
        device="cpu",
    )
    started = time.perf_counter()
    result = stylize(content, [style], options, style_cache=cache, preview=follow)
    return result, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", nargs="+", default=["astronaut:starry_night", "chelsea:the_scream"])
    parser.add_argument("--strengths", nargs="+", type=float, default=[1.0, 0.5, 0.25, 1.0, 2.0])
    parser.add_argument("--preset", default="balanced")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    judges = Judges(args.weights)
    for pair in args.pairs:
        content_name, style_name = pair.split(":")
        content = fitted(load_picture(content_name), PREVIEW_SIZE)
        style = fitted(load_picture(style_name), STYLE_SIDE)

        caches = {"scratch": StyleCache(), "follow": StyleCache()}
        for kind, cache in caches.items():
            preview(args, content, style, cache, args.strengths[0], kind == "follow")
        pictures, labels = [], []
        for step, strength in enumerate(args.strengths):
            for kind, cache in caches.items():
                picture, seconds = preview(args, content, style, cache, strength, kind == "follow")
                row = {
                    "pair": pair,
                    "step": step,
                    "strength": strength,
                    "kind": kind,
                    "seconds": round(seconds, 2),
                    "style": round(judges.style_distance(picture, style), 3),
                    "content": round(judges.content_distance(picture, content), 3),
                }
                print(json.dumps(row), flush=True)
                pictures.append(picture)
                labels.append(f"{strength:g} {kind}")
                name = f"{content_name}-{style_name}-{step}-{strength:g}-{kind}.png"
                Image.fromarray((np.clip(picture, 0, 1) * 255).round().astype(np.uint8)).save(args.out / name)
        contact_sheet(pictures, labels, args.out / f"{content_name}-{style_name}-sheet.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
