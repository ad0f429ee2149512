"""`python -m nst_core.bench.frames`: flicker of animation frames stylised independently against
`--frames` (each from the previous one, warped by the optical flow), on a generated pan and zoom.

The clips are cut from one generated picture (smooth shapes and fine texture, so that the flow has
something to follow). Both ways run in this process with the same options; the flicker of a frame is
`frames.flicker`: the mean absolute difference to the previous output moved by the contents'
motion, over the pixels whose motion is reliable. It prints the per-frame values and the ratio
(frames / independent, goal at most 0.6) and, with `--plot FILE`, draws them as a PNG.

With `--joins N` it also paints the pan as `batch --ray` does, in runs of N frames (here, one run
after the other), once cut (no overlap) and once faded over `--overlap` shared frames, and prints
the largest flicker step around the joins against the mean step inside the runs.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

COLOURS = {"independent": (200, 60, 40), "frames": (40, 110, 200)}


def picture(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """Smooth colour fields, discs and fine noise: a texture the flow can follow."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width]
    y, x = rows / max(width, height), columns / max(width, height)
    rgb = np.stack([np.sin(x * 9 + 1), np.cos(y * 7 + x * 3), np.sin((x - y) * 11)], -1) * 0.3 + 0.5
    for _ in range(40):
        cx, cy, r = rng.random() * width, rng.random() * height, 8 + rng.random() * 40
        rgb[(columns - cx) ** 2 + (rows - cy) ** 2 < r * r] = rng.random(3)
    noise = Image.fromarray((rng.random((height, width, 3)) * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(1)
    )
    rgb = 0.8 * rgb + 0.2 * np.asarray(noise, dtype=np.float32) / 255
    return np.clip(rgb, 0, 1).astype(np.float32)


def clip(kind: str, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    from ..images import resize

    base = picture()
    height, width = base.shape[:2]
    frames = []
    for i in range(count):
        if kind == "pan":
            window = base[80:400, 40 + 12 * i : 40 + 12 * i + 480]
        else:
            m = 12 * i
            window = base[m : height - m, int(m * 4 / 3) : width - int(m * 4 / 3)]
        frames.append(resize(window, *size))
    return frames


def stylise(
    frames_in: list[np.ndarray], style: np.ndarray, options, weight: float | None
) -> list[np.ndarray]:  # noqa: ANN001
    from .. import frames
    from ..run import stylize

    outputs: list[np.ndarray] = []
    for index, frame in enumerate(frames_in):
        start = None
        if weight is not None and index:
            start = frames.frame_start(outputs[-1], frames_in[index - 1], frame, weight)
        outputs.append(stylize(frame, [style], options, output_size="working", frame=start))
    return outputs


def plot(rows: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Per-frame flicker, one panel per clip: independent (red) against frames (blue)."""
    from PIL import Image, ImageDraw

    panel_w, panel_h, margin = 360, 220, 40
    image = Image.new("RGB", (panel_w * len(rows) + margin, panel_h + 2 * margin), "white")
    draw = ImageDraw.Draw(image)
    top = max(max(v) for r in rows.values() for v in r.values()) * 1.1
    for p, (name, series) in enumerate(rows.items()):
        left = margin + p * panel_w
        draw.rectangle([left, margin, left + panel_w - margin, margin + panel_h], outline="black")
        draw.text((left + 4, margin - 16), f"{name}: flicker per frame", fill="black")
        for label, values in series.items():
            points = [
                (left + (i + 0.5) * (panel_w - margin) / len(values), margin + panel_h * (1 - v / top))
                for i, v in enumerate(values)
            ]
            draw.line(points, fill=COLOURS[label], width=2)
            for x, y in points:
                draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=COLOURS[label])
        draw.text((left + 4, margin + panel_h + 6), "independent (red), --frames (blue)", fill="black")
    image.save(path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nst_core.bench.frames", description=__doc__)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=128, help="working size, longest side")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--temporal-weight", type=float, default=None)
    parser.add_argument("--weights", type=Path, help="VGG19 weights (default: the installed ones)")
    parser.add_argument("--plot", type=Path, help="write the per-frame flicker as a PNG here")
    parser.add_argument("--joins", type=int, metavar="N", help="also in runs of N frames, cut and faded")
    parser.add_argument("--overlap", type=int, default=None, help="with --joins: shared frames")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from .. import frames
    from ..batch import DEFAULT_TEMPORAL_WEIGHT
    from ..options import Options
    from ..weights import resolve_weights

    weight = DEFAULT_TEMPORAL_WEIGHT if args.temporal_weight is None else args.temporal_weight
    options = Options.from_dict(
        {"size": args.size, "iterations": args.iterations, "seed": 0, "style_blend": [1.0]}
        | {"weights": str(resolve_weights(args.weights))}
    )
    style = picture(256, 256, seed=7)[::-1]
    size = (args.size, args.size * 3 // 4)
    rows: dict[str, dict[str, list[float]]] = {}
    summary: dict[str, float] = {}
    for kind in ("pan", "zoom"):
        contents = clip(kind, args.frames, size)
        started = time.perf_counter()
        alone = stylise(contents, style, options, None)
        alone_s = time.perf_counter() - started
        started = time.perf_counter()
        linked = stylise(contents, style, options, weight)
        linked_s = time.perf_counter() - started
        rows[kind] = {
            "independent": frames.flicker(alone, contents),
            "frames": frames.flicker(linked, contents),
        }
        summary[f"{kind} ratio"] = float(np.mean(rows[kind]["frames"]) / np.mean(rows[kind]["independent"]))
        summary[f"{kind} seconds independent / frames"] = round(alone_s, 1), round(linked_s, 1)  # type: ignore[assignment]
    if args.joins:
        from ..cluster import DEFAULT_OVERLAP

        overlap = DEFAULT_OVERLAP if args.overlap is None else args.overlap
        summary |= joins(clip("pan", args.frames, size), style, options, weight, args.joins, overlap)
    if args.plot:
        plot(rows, args.plot)
    if args.json:
        print(json.dumps({"flicker": rows, **summary}))
    else:
        for kind, series in rows.items():
            for label, values in series.items():
                print(f"{kind:5} {label:12} " + " ".join(f"{v:.4f}" for v in values))
        for name, value in summary.items():
            print(f"{name}: {value}")
    return 0


def joins(
    contents: list[np.ndarray], style: np.ndarray, options, weight: float, run: int, overlap: int
) -> dict[str, float | None]:  # noqa: ANN001
    """The flicker steps where runs of `run` frames meet, cut and faded, and inside the runs."""
    import tempfile

    from .. import frames
    from ..batch import plan_items
    from ..cluster import InlineExecutor, run_distributed
    from ..events import Sink
    from ..images import load_image, to_pil

    result: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="nst-bench-joins-") as scratch:
        folder = Path(scratch)
        to_pil(style).save(folder / "style.png")
        sources = []
        for index, content in enumerate(contents):
            sources.append(folder / f"frame{index:03d}.png")
            to_pil(content).save(sources[-1])
        near = {
            step for first in range(run, len(contents), run) for step in range(first - overlap - 1, first)
        }
        for label, shared in (("cut", 0), ("faded", overlap)):
            out = folder / label
            out.mkdir()
            items = plan_items(sources, out, "png")
            executor = InlineExecutor()
            run_distributed(
                items, [folder / "style.png"], options, Sink(), executor, None, (), weight, run, shared
            )
            outputs = [load_image(item.output) for item in items]
            steps = frames.flicker(outputs, [load_image(path) for path in sources])
            result[f"joins {label}: largest step"] = round(max(steps[i] for i in near), 4)
            inside = [value for i, value in enumerate(steps) if i not in near]
            result[f"joins {label}: mean step inside runs"] = (
                round(float(np.mean(inside)), 4) if inside else None
            )
    return result


if __name__ == "__main__":
    raise SystemExit(main())
