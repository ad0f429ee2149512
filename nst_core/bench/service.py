"""`python -m nst_core.bench.service`: a plug-in's run with a cold engine (a child process per run, as
before the service) against the warm engine service, through the plug-ins' own bridge.

For each way it runs the same small job `--runs` times, as GIMP does (raw pixels through
`nst_bridge.EngineRun`), and records the seconds from the call to the first iteration's progress
and to the result. The service's first run starts it (cold); the later ones find it warm. It prints
each way's times and the ratios (child / warm). The weights: `--weights FILE`, else the installed
ones; docs/performance.md has the figures. The bridge is the checkout's plug-in (`--plugin-dir`: a
plug-in folder elsewhere, for an engine installed without the checkout).

`--style-cache` times instead what a warm worker does for the dialog's preview (`run.stylize` at the
preview's size and steps, the network loaded), without and with the worker's cache of style targets
(stylecache.py), the cache filled by an earlier preview of the same style.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ExitCode
from ..presets import PREVIEW_ITERATIONS, PREVIEW_SIZE

CHECKOUT_PLUGIN_DIR = Path(__file__).resolve().parents[2] / "plug-ins" / "neural_style"
BRIDGE_FILE = "nst_bridge.py"
SIZE = (96, 64)


def missing_bridge(plugin_dir: Path) -> str | None:
    """Why the plug-in's bridge cannot be loaded from `plugin_dir`, in one line; None if it can."""
    if (plugin_dir / BRIDGE_FILE).is_file():
        return None
    return (
        f"error: the service benchmark runs jobs through the GIMP plug-in's bridge, and {plugin_dir} "
        f"has no {BRIDGE_FILE}: run it from a checkout, or give --plugin-dir the plug-in's folder "
        "(a checkout's plug-ins/neural_style, or neural_style in GIMP's plug-ins folder)"
    )


def load_plugin_modules(plugin_dir: Path) -> tuple[ModuleType, ModuleType]:
    """The plug-in's bridge and service modules, imported from `plugin_dir`."""
    if str(plugin_dir) not in sys.path:
        sys.path.insert(0, str(plugin_dir))
    import nst_bridge
    import nst_service

    return nst_bridge, nst_service


def content() -> bytes:
    width, height = SIZE
    return bytes(v for y in range(height) for x in range(width) for v in (x * 2, y * 3, 128, 255))


def one_run(
    bridge: ModuleType, config: dict[str, Any], style: Path, options: dict[str, Any]
) -> dict[str, Any]:
    """Seconds to the first iteration and to the result, and where it ran."""
    started, first = time.perf_counter(), []

    def progress(fraction: float, text: str) -> bool:
        if "iteration" in text and not first:
            first.append(time.perf_counter() - started)
        return True

    with bridge.EngineRun(config) as run:
        run.set_content_raw(content(), *SIZE, "u8", 4)
        run.run([(str(style), 1.0)], options, progress)
        return {"first": first[0], "total": time.perf_counter() - started, "server": run.server}


def preview_seconds(args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of a warm preview (a 384 x 288 layer, a 512 px style) without and with the cache,
    on the clock and in CPU time."""
    import numpy as np

    from ..options import Options
    from ..run import stylize
    from ..stylecache import StyleCache
    from ..weights import resolve_weights

    rng = np.random.default_rng(0)
    layer = rng.random((288, 384, 3), dtype=np.float32)
    style = rng.random((512, 512, 3), dtype=np.float32)
    options = Options(
        preset=args.preset,
        size=args.preview_size,
        iterations=args.preview_iterations,
        device=args.device,
        weights=str(resolve_weights(args.weights)),
    )

    def timed(cache: StyleCache | None) -> tuple[float, float]:
        """Wall and CPU seconds (all threads): on shared cores the CPU seconds vary far less."""
        wall, cpu = time.perf_counter(), time.process_time()
        stylize(layer, [style], options, style_cache=cache)
        return time.perf_counter() - wall, time.process_time() - cpu

    timed(None)  # the network loaded and the kernels warm, as in a service after its first job
    cache = StyleCache()
    timed(cache)  # fills it: the dialog's earlier preview of the same style
    plain, kept = [], []
    for _ in range(args.runs):  # side by side: a change in the machine's load touches both alike
        plain.append(timed(None))
        kept.append(timed(cache))
    row = {}
    for unit, part in (("s", 0), ("CPU s", 1)):
        without = statistics.median(run[part] for run in plain)
        with_cache = statistics.median(run[part] for run in kept)
        row[f"warm preview, no style cache {unit}"] = without
        row[f"warm preview, style cache {unit}"] = with_cache
        row[f"preview {unit}: no cache / cache"] = without / with_cache
    return row


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nst_core.bench.service", description=__doc__)
    parser.add_argument("--weights", type=Path, help="VGG19 weights (default: the installed ones)")
    parser.add_argument("--runs", type=int, default=4, help="runs each way (default 4)")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--plugin-dir",
        type=Path,
        default=CHECKOUT_PLUGIN_DIR,
        help=f"the GIMP 3 plug-in's folder, with {BRIDGE_FILE} (default: the checkout's)",
    )
    parser.add_argument(
        "--style-cache",
        action="store_true",
        help="time a warm preview without and with the service's cache of style targets instead",
    )
    parser.add_argument("--preset", default="balanced", help="the preview's preset (--style-cache)")
    parser.add_argument("--preview-size", type=int, default=PREVIEW_SIZE, help="with --style-cache")
    parser.add_argument(
        "--preview-iterations", type=int, default=PREVIEW_ITERATIONS, help="with --style-cache"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    return parser.parse_args(argv)


def print_row(row: dict[str, float], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row))
    else:
        for name, value in row.items():
            print(f"{name:34} {value:8.2f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.style_cache:
        print_row(preview_seconds(args), args.json)
        return 0
    problem = missing_bridge(args.plugin_dir)
    if problem:
        print(problem, file=sys.stderr)
        return ExitCode.USAGE
    bridge, service = load_plugin_modules(args.plugin_dir)
    from PIL import Image

    from ..weights import resolve_weights

    weights = resolve_weights(args.weights)
    options = {"size": max(SIZE), "iterations": args.iterations, "seed": 0, "device": args.device}
    with tempfile.TemporaryDirectory(prefix="nst-bench-service-") as folder:
        style = Path(folder) / "style.png"
        Image.effect_noise((64, 64), 60).convert("RGB").save(style)
        base = {"python": sys.executable, "weights": str(weights), "data_dir": folder}
        child = [one_run(bridge, {**base, "service": False}, style, options) for _ in range(args.runs)]
        served = [one_run(bridge, {**base, "service": True}, style, options) for _ in range(args.runs)]
        service.stop_local_service(folder)
    cold, warm = served[0], served[1:]
    if any(run["server"] is None for run in served) or not warm:
        print("error: the service did not take the jobs (see the data folder's service.log)", file=sys.stderr)
        return 1
    row = {
        "child first iteration s": statistics.median(r["first"] for r in child),
        "child total s": statistics.median(r["total"] for r in child),
        "service cold first iteration s": cold["first"],
        "service warm first iteration s": statistics.median(r["first"] for r in warm),
        "service warm total s": statistics.median(r["total"] for r in warm),
    }
    row["first iteration: child / warm"] = (
        row["child first iteration s"] / row["service warm first iteration s"]
    )
    row["total: child / warm"] = row["child total s"] / row["service warm total s"]
    print_row(row, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
