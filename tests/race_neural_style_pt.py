"""neural-style-pt (plain Gatys from noise, L-BFGS) on the same real VGG16 features, judged like ours.

A benchmark, not a test: it needs a checkout of github.com/ProGamerGov/neural-style-pt (its
neural_style.py and CaffeLoader.py) and runs it in a child process on the CPU with the converted
ImageNet VGG16 in caffe layout (`python tests/real_features.py --caffe`), saving its picture every
`--every` iterations; each saved picture is judged (tests/judges.py) against the same pair as
tests/quality_sweep.py judges ours, and printed with the seconds since the start.

`--ours NAME:OPTIONS ...` (as quality_sweep.py's `--sweep`: `b9:preset=balanced,content_target=0.9`) runs
our engine in the same run on the same two input files, each setting as a whole process too
(`python -m nst_core stylize`, its start-up counted as theirs is), judged the same way. For each of
neural-style-pt's saved pictures it then prints the quickest of ours that reaches it on both judges
(as much style or more, as much of the photo's structure or more) and how many times sooner.

    python tests/race_neural_style_pt.py --checkout NSPT --out DIR --pairs chelsea:starry_night
        [--size 384] [--iterations 400] [--every 100] [--style-weight 100] [--ours NAME:OPTIONS ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from quality_sweep import Sweep, load_picture, parse_options
from real_features import make_real_vgg16_weights

from nst_core.images import fit_size, resize


def save_input(picture: np.ndarray, path: Path, size: int) -> Path:
    height, width = picture.shape[:2]
    small = resize(picture, *fit_size(width, height, size))
    Image.fromarray((np.clip(small, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


@dataclass(frozen=True)
class Result:
    name: str
    seconds: float
    style: float
    content: float

    def reaches(self, other: Result) -> bool:
        return self.style <= other.style and self.content <= other.content


def cli_flags(options: dict[str, object]) -> list[str]:
    """Our CLI's flags for a job file's options (`content_target` -> `--content-target`)."""
    flags: list[str] = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{key.replace('_', '-')}")
        elif isinstance(value, list):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return flags


def run_ours(
    args: argparse.Namespace, name: str, options: dict[str, object], inputs: tuple[Path, Path], folder: Path
) -> tuple[Path, float]:
    """Our engine on the same files as neural-style-pt, in a process of its own: (picture, seconds)."""
    output = folder / f"ours-{name}.png"
    command = [
        sys.executable, "-m", "nst_core", "stylize", str(inputs[0]), str(inputs[1]), "-o", str(output),
        "--overwrite", "--progress", "none", "--device", "cpu", "--model", "vgg16",
        "--weights", str(args.weights), "--size", str(args.size), "--seed", "0", *cli_flags(options),
    ]  # fmt: skip
    start = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return output, time.time() - start


def judged(sweep: Sweep, path: Path, photo: np.ndarray, painting: np.ndarray) -> tuple[float, float, float]:
    picture = np.asarray(Image.open(path).convert("RGB"), np.float32) / 255
    return sweep.judge(picture, photo, painting)


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
    theirs: list[Result] = []
    for step in range(args.every, args.iterations + 1, args.every):
        path = folder / (f"nspt_{step}.png" if step < args.iterations else "nspt.png")
        seconds = path.stat().st_mtime - start
        style, content, edges = judged(sweep, path, photo, painting)
        theirs.append(Result(f"nspt {step} it", seconds, style, content))
        print(f"{pair:28s} nspt {step:4d} it  {seconds:7.1f} s  style {style:.3f} content {content:.3f} "
              f"edges {edges:.3f}", flush=True)  # fmt: skip
    ours: list[Result] = []
    for name, options in args.ours:
        path, seconds = run_ours(args, name, options, (content_file, style_file), folder)
        style, content, edges = judged(sweep, path, photo, painting)
        ours.append(Result(name, seconds, style, content))
        print(f"{pair:28s} ours {name:12s} {seconds:7.1f} s  style {style:.3f} content {content:.3f} "
              f"edges {edges:.3f}", flush=True)  # fmt: skip
    for their in theirs if ours else []:
        reached = [our for our in ours if our.reaches(their)]
        if not reached:
            print(f"{pair:28s} {their.name}: none of ours reaches it on both judges", flush=True)
            continue
        best = min(reached, key=lambda r: r.seconds)
        print(f"{pair:28s} {their.name} ({their.seconds:.1f} s): ours {best.name} in {best.seconds:.1f} s, "
              f"x{their.seconds / best.seconds:.1f} sooner", flush=True)  # fmt: skip


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
    parser.add_argument("--ours", nargs="*", default=[], help="NAME:OPTIONS: our settings to race")
    args = parser.parse_args(argv)
    args.ours = [(text.split(":", 1)[0], parse_options(text.split(":", 1)[1])) for text in args.ours]
    args.out.mkdir(parents=True, exist_ok=True)
    # The file name must say VGG16 to neural-style-pt, which picks the architecture by name.
    caffe_weights = make_real_vgg16_weights(args.out / "vgg16-caffe.pth", caffe_input=True)
    args.weights = args.weights or make_real_vgg16_weights(args.out / "vgg16-imagenet.pth")
    sweep = Sweep(args.weights, args.size)
    for pair in args.pairs:
        race(args, pair, caffe_weights, sweep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
