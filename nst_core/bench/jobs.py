"""`python -m nst_core.bench.jobs`: whole jobs against their plans, and tiled against whole.

Per job (a preset at a size, each in a fresh process so that its peak memory is its own) it prints
the plan's estimated seconds, the measured ones and their ratio, the cost per megapixel, the peak
resident memory against the budget, how it tiled, and how far the progress bar's time left was off
at a quarter and at half of the job. `--tiled-vs-whole` paints one picture whole and forced into
tiles and prints their difference. Weights are random unless --weights is given: the cost of a job
does not depend on the weight values. The pictures are scikit-image's samples: it needs the test
extra. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ExitCode
from .runner import FreshProcessFailed, add_one_option, answer_one, random_weights, run_fresh

DEFAULT_JOBS = ("fast:1024x768", "balanced:1024x768", "best:1536x1152")
CHECKPOINTS = (0.25, 0.5)


def missing_test_extra() -> str | None:
    """Why the sample pictures cannot be painted, in one line; None if they can."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        return (
            "error: the jobs benchmark paints scikit-image's sample pictures, and scikit-image is not "
            "installed: install the test extra (pip install -e '.[test]' in a checkout) or pip install "
            "scikit-image"
        )
    return None


def _images(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    from skimage import data, transform

    content = transform.resize(data.astronaut(), (height, width), anti_aliasing=True).astype(np.float32)
    style = transform.resize(data.coffee(), (512, 768), anti_aliasing=True).astype(np.float32)
    return content, style


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One job in this process: the plan's figures and the measured ones."""
    from ..options import Options
    from ..plan import make_plan
    from ..run import run_plan

    width, height = spec["width"], spec["height"]
    content, style = _images(width, height)
    options = Options(**spec["options"])
    started = time.perf_counter()
    plan = make_plan(options, (width, height), 1)
    seen: list[tuple[float, float, float]] = []  # (fraction, eta, elapsed since start)

    def progress(report: Any) -> None:
        seen.append((report.fraction, report.eta, time.perf_counter() - started))

    run_plan(plan, content, [style], progress)
    seconds = time.perf_counter() - started
    errors = {}
    for mark in CHECKPOINTS:
        fraction, eta, at = next(s for s in seen if s[0] >= mark)
        errors[f"eta_error_at_{round(mark * 100)}%"] = (
            round(eta / (seconds - at) - 1, 3) if seconds > at else None
        )
    megapixels = width * height / 1e6
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    summary = plan.summary()
    budget = summary["memory"]["budget"]
    return {
        "job": f"{options.preset} {width}x{height}",
        "working_size": plan.working_size,
        "estimated_s": round(plan.estimated_seconds, 1),
        "measured_s": round(seconds, 1),
        "measured_over_estimate": round(seconds / plan.estimated_seconds, 2),
        "s_per_megapixel": round(seconds / megapixels, 1),
        "peak_mib": round(peak / 2**20),
        "budget_mib": None if budget is None else round((budget + plan.estimate - plan.job_bytes) / 2**20),
        "tiles": summary["tiles"],
        **errors,
    }


def tiled_vs_whole(weights: str, size: int, iterations: int, budget_mib: float) -> dict[str, Any]:
    """The same single-scale job whole and forced into tiles by a small budget."""
    from .. import losses, network, objective
    from ..images import fit_size, resize, to_tensor
    from ..options import Options, resolve
    from ..run import stylize

    content, style = _images(size, size * 3 // 4)
    base = dict(
        preset="balanced", size=size, iterations=iterations, multiscale=False, device="cpu", weights=weights
    )
    timings, results = {}, {}
    for name, extra in (("whole", {}), ("tiled", {"max_memory": budget_mib})):
        start = time.perf_counter()
        results[name] = stylize(content, [style], Options(**base, **extra))  # type: ignore[arg-type]
        timings[name] = round(time.perf_counter() - start, 1)
    settings = resolve(Options(**base))  # type: ignore[arg-type]
    net = network.build_network(settings.model, weights, settings.style_layers)
    style_small = resize(style, *fit_size(style.shape[1], style.shape[0], size))
    targets = objective.blended_style_targets(
        [objective.style_statistics(net, to_tensor(style_small), settings, None)], settings
    )
    weights_by_layer = dict(zip(settings.style_layers, settings.style_layer_weights, strict=True))

    def style_distance(image: np.ndarray) -> float:
        features = net(to_tensor(image))
        return float(losses.style_loss(targets, features, weights_by_layer))

    whole, tiled = results["whole"], results["tiled"]
    return {
        "job": f"balanced {size}x{size * 3 // 4}, one scale, {iterations} iterations",
        "mean_difference_255": round(float(np.abs(whole - tiled).mean() * 255), 3),
        "max_difference_255": round(float(np.abs(whole - tiled).max() * 255), 1),
        "style_distance_whole": round(style_distance(whole), 5),
        "style_distance_tiled": round(style_distance(tiled), 5),
        "seconds_whole": timings["whole"],
        "seconds_tiled": timings["tiled"],
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nst_core.bench.jobs", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--jobs",
        nargs="+",
        default=list(DEFAULT_JOBS),
        metavar="PRESET:WxH",
        help="jobs to run (default: %(default)s)",
    )
    parser.add_argument("--size", type=int, default=None, help="working size (default: the layer's, WxH)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default=None, help="a VGG19 weights file (default: random weights)")
    parser.add_argument(
        "--tiled-vs-whole", action="store_true", help="also paint one picture whole and tiled"
    )
    add_one_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    problem = missing_test_extra()
    if problem:
        print(problem, file=sys.stderr)
        return ExitCode.USAGE
    if args.one:
        return answer_one(args.one, run_one)
    with tempfile.TemporaryDirectory() as folder:
        weights = args.weights or str(random_weights("vgg19", Path(folder)))
        for job in args.jobs:
            preset, _, dimensions = job.partition(":")
            width, height = (int(v) for v in dimensions.split("x"))
            options = {
                "preset": preset,
                "weights": weights,
                "device": args.device,
                "size": args.size or max(width, height),
            }
            spec = {"width": width, "height": height, "options": options}
            try:
                row = run_fresh("nst_core.bench.jobs", spec)
            except FreshProcessFailed as failed:
                row = {"job": job, "error": failed.stderr[-500:]}
            print(json.dumps(row), flush=True)
        if args.tiled_vs_whole:
            print(json.dumps(tiled_vs_whole(weights, 768, 20, 900)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
