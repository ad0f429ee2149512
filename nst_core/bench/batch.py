"""`python -m nst_core.bench.batch`: a batch's throughput against separate `stylize` calls.

It makes `--pictures` generated photos, stylises them once with one `stylize` process each (the shell
loop users were told to write) and once with one `batch` process, checks that both wrote the same
bytes, and prints the seconds, the pictures per minute and the ratio. With `--ray-workers N` it also
starts a local Ray cluster of N one-CPU workers (the [cluster] extra) and runs the same `batch --ray`
on it. docs/batch.md has the figures.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def make_pictures(folder: Path, count: int, size: int) -> list[Path]:
    from PIL import Image

    paths = []
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    for index in range(count):
        phase = rng.random(3) * 6
        rgb = np.stack(
            [np.sin(x * 6 + phase[0]), np.cos(y * 5 + phase[1]), np.sin((x + y) * 4 + phase[2])], -1
        )
        path = folder / f"photo{index:03d}.png"
        Image.fromarray(((rgb * 0.5 + 0.5) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nst_core.bench.batch", description=__doc__)
    parser.add_argument("--pictures", type=int, default=6)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--weights", type=Path, help="VGG19 weights (default: the installed ones)")
    parser.add_argument("--ray-workers", type=int, default=0, help="also on a local Ray cluster of N workers")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ..weights import resolve_weights

    weights = resolve_weights(args.weights)
    flags = ["--size", str(args.size), "--iterations", str(args.iterations), "--weights", str(weights)]
    engine = [sys.executable, "-m", "nst_core"]
    with tempfile.TemporaryDirectory(prefix="nst-bench-batch-") as scratch:
        folder = Path(scratch)
        (folder / "in").mkdir()
        pictures = make_pictures(folder / "in", args.pictures, args.size)
        style = make_pictures(folder, 1, 64)[0]
        separate, together = folder / "separate", folder / "batch"
        separate.mkdir()
        together.mkdir()
        started = time.perf_counter()
        for picture in pictures:
            command = [
                *engine,
                "stylize",
                str(picture),
                str(style),
                "-o",
                str(separate / picture.name),
                *flags,
            ]
            subprocess.run(command, check=True, capture_output=True)
        separate_s = time.perf_counter() - started
        started = time.perf_counter()
        command = [*engine, "batch", str(folder / "in"), "--style", str(style), "-o", str(together), *flags]
        subprocess.run(command, check=True, capture_output=True)
        batch_s = time.perf_counter() - started
        same = all((separate / p.name).read_bytes() == (together / p.name).read_bytes() for p in pictures)
        ray_row = {}
        if args.ray_workers:
            command = [*engine, "batch", str(folder / "in"), "--style", str(style), *flags]
            ray_row = _on_ray(command, folder / "ray", together, pictures, args.ray_workers)
            ray_row["batch / ray"] = round(batch_s / ray_row[f"ray {args.ray_workers} workers s"], 2)
    row = {
        "pictures": args.pictures,
        "separate stylize s": round(separate_s, 2),
        "batch s": round(batch_s, 2),
        "separate per minute": round(60 * args.pictures / separate_s, 1),
        "batch per minute": round(60 * args.pictures / batch_s, 1),
        "separate / batch": round(separate_s / batch_s, 2),
        "same bytes": same,
        **ray_row,
    }
    print(json.dumps(row) if args.json else "\n".join(f"{k:22} {v}" for k, v in row.items()))
    return 0 if same else 1


def _on_ray(command: list[str], out: Path, local: Path, pictures: list[Path], workers: int) -> dict:
    """The batch on a fresh local cluster of one-CPU workers; the cluster's start is not counted (a
    cluster is there before a batch), the driver's joining it and the workers' engine loads are."""
    from ray.cluster_utils import Cluster

    store = 128 << 20
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": store})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1, object_store_memory=store)
        cluster.wait_for_nodes()
        out.mkdir()
        started = time.perf_counter()
        subprocess.run([*command, "-o", str(out), "--ray", cluster.address], check=True, capture_output=True)
        seconds = time.perf_counter() - started
    finally:
        cluster.shutdown()
    same = all((out / p.name).read_bytes() == (local / p.name).read_bytes() for p in pictures)
    return {
        f"ray {workers} workers s": round(seconds, 2),
        "ray per minute": round(60 * len(pictures) / seconds, 1),
        "ray same bytes as batch": same,
    }


if __name__ == "__main__":
    raise SystemExit(main())
