"""neural-style-pt (plain Gatys from noise, L-BFGS) on the same real VGG16 features, judged like ours.

A benchmark, not a test: it needs a checkout of github.com/ProGamerGov/neural-style-pt (its
neural_style.py and CaffeLoader.py) and runs it in a child process on the CPU with the converted
ImageNet VGG16 in caffe layout (`python tests/real_features.py --caffe`), saving its picture every
`--every` iterations; each saved picture is judged (tests/judges.py) against the same pair as
tests/quality_sweep.py judges ours, and printed with the seconds since the start.

    python tests/race_neural_style_pt.py --checkout NSPT --out DIR --pairs chelsea:starry_night
        [--size 384] [--iterations 400] [--every 100] [--style-weight 100]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from quality_sweep import Sweep, load_picture
from real_features import make_real_vgg16_weights

from nst_core.images import fit_size, resize


def save_input(picture: np.ndarray, path: Path, size: int) -> Path:
    height, width = picture.shape[:2]
    small = resize(picture, *fit_size(width, height, size))
    Image.fromarray((np.clip(small, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def race(args: argparse.Namespace, pair: str, caffe_weights: Path, sweep: Sweep) -> None:
    photo_name, style_name = pair.split(":")
    photo, painting = load_picture(photo_name), load_picture(style_name)
    folder = args.out / f"{photo_name}-{style_name}"
    folder.mkdir(parents=True, exist_ok=True)
    content_file = save_input(photo, folder / "content.png", args.size)
    style_file = save_input(painting, folder / "style.png", args.size)
    command = [
        sys.executable, str(args.checkout / "neural_style.py"),
        "-content_image", str(content_file), "-style_image", str(style_file),
        "-model_file", str(caffe_weights), "-disable_check", "-gpu", "c", "-backend", "nn",
        "-image_size", str(args.size), "-num_iterations", str(args.iterations),
        "-save_iter", str(args.every), "-print_iter", "0", "-seed", "0",
        "-style_weight", str(args.style_weight), "-content_weight", str(args.content_weight),
        "-output_image", str(folder / "nspt.png"),
    ]  # fmt: skip
    start = time.time()
    subprocess.run(command, cwd=args.checkout, check=True, stdout=subprocess.DEVNULL)
    for step in range(args.every, args.iterations + 1, args.every):
        path = folder / (f"nspt_{step}.png" if step < args.iterations else "nspt.png")
        seconds = path.stat().st_mtime - start
        picture = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
        style, content, edges = sweep.judge(picture, photo, painting)
        print(f"{pair:28s} nspt {step:4d} it  {seconds:7.1f} s  style {style:.3f} content {content:.3f} "
              f"edges {edges:.3f}", flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, required=True, help="a neural-style-pt checkout")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pairs", nargs="+", default=["chelsea:starry_night"])
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--style-weight", type=float, default=100.0)  # neural-style-pt's defaults
    parser.add_argument("--content-weight", type=float, default=5.0)
    parser.add_argument("--weights", type=Path, help="our VGG16 features file (made if absent)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # The file name must say VGG16 to neural-style-pt, which picks the architecture by name.
    caffe_weights = make_real_vgg16_weights(args.out / "vgg16-caffe.pth", caffe_input=True)
    ours = args.weights or make_real_vgg16_weights(args.out / "vgg16-imagenet.pth")
    sweep = Sweep(ours, args.size)
    for pair in args.pairs:
        race(args, pair, caffe_weights, sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
