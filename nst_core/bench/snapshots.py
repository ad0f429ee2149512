"""`python -m nst_core.bench.snapshots`: what watching a run costs (docs/protocol.md, "Snapshots").

Two measurements. The snapshots' cost as a percent of the run's time: the same job (a generated photo,
the plug-ins' raw u8 snapshot file rewritten each time) at each `--cases` WORKING[:OUTPUT] size in
pixels, e.g. 512, 512:2048 (painted at 512, the layer 2048) and 2048, the snapshot every `--every`
seconds of work. And the time from a job's start to its first snapshot: cold (a new `run-job` process
per job, from its start to the first snapshot event) and warm (a job sent to a running engine
service, from the request to the first snapshot event in the stream). docs/performance.md has the
figures.
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..options import SNAPSHOT_EVERY


def photo(width: int, height: int) -> np.ndarray:
    """A smooth generated photo with edges, H x W x 3 float32."""
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    rgb = np.stack([np.sin(x * 9), np.cos(y * 7), np.sin((x + y) * 5) * (x > 0.4)], -1)
    return (rgb * 0.5 + 0.5).astype(np.float32)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nst_core.bench.snapshots", description=__doc__)
    parser.add_argument("--cases", nargs="+", default=["512", "512:2048", "2048"], metavar="W[:OUT]")
    parser.add_argument("--iterations", type=int, default=20, help="per case (default %(default)s)")
    parser.add_argument("--every", type=float, default=SNAPSHOT_EVERY, help="seconds (default %(default)s)")
    parser.add_argument(
        "--starts", type=int, default=2, help="jobs timed each way; 0: none (default %(default)s)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, help="VGG19 weights (default: the installed ones)")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args(argv)


def cost_row(case: str, args: argparse.Namespace, weights: Path, folder: Path) -> dict[str, Any]:
    """One run of `case` with snapshots: their count, their cost, and that cost against the run's time."""
    from ..events import Sink
    from ..job import snapshot_writer
    from ..options import Options
    from ..output import Output
    from ..run import Watch, stylize

    working, _, out = case.partition(":")
    side = int(out or working)
    content = photo(side, side * 2 // 3)
    style = photo(256, 256)[::-1].copy()
    options = Options(
        size=int(working),
        iterations=args.iterations,
        multiscale=False,
        device=args.device,
        weights=str(weights),
    )
    snapshot = Output(folder / f"snap-{case.replace(':', '-')}.raw", raw_format="u8")
    writer = snapshot_writer(snapshot, Sink())  # the events unshown: only the snapshots' cost is wanted
    watch = Watch(writer, args.every)
    started = time.perf_counter()
    stylize(content, [style], options, watch=watch)
    seconds = time.perf_counter() - started
    return {
        "case": f"{working} px" + (f" -> {out} px" if out else ""),
        "iterations": args.iterations,
        "run s": round(seconds, 2),
        "snapshots": watch.taken,
        "snapshot s": round(watch.seconds / max(watch.taken, 1), 4),
        "snapshots % of run": round(100 * watch.seconds / seconds, 2),
    }


def cold_starts(args: argparse.Namespace, weights: Path, folder: Path) -> list[float]:
    """Seconds from starting a `run-job` process to its first snapshot event, each in a new process."""
    content = folder / "content.png"
    style = folder / "style.png"
    _save(photo(512, 341), content)
    _save(photo(256, 256)[::-1].copy(), style)
    job = {
        "version": 1,
        "content": {"path": str(content)},
        "styles": [{"path": str(style)}],
        "options": {"size": 512, "iterations": 1000, "device": args.device, "weights": str(weights)},
        "output": {"raw": "out.raw", "format": "u8"},
        "snapshot": {"raw": "snap.raw", "format": "u8", "every": args.every},
    }
    path = folder / "job.json"
    path.write_text(json.dumps(job))
    times = []
    for _ in range(args.starts):
        started = time.perf_counter()
        command = [sys.executable, "-m", "nst_core", "run-job", str(path)]
        engine = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            while line := engine.stdout.readline():
                if json.loads(line)["event"] in ("snapshot", "error"):
                    break
            times.append(time.perf_counter() - started)
        finally:
            engine.stdin.close()  # cancels it
            engine.wait()
    return times


def warm_starts(args: argparse.Namespace, weights: Path, folder: Path) -> list[float]:
    """Seconds from sending a job to a running service to its first snapshot event."""
    from .. import wire
    from ..output import raw_bytes

    token = folder / "token"
    command = [sys.executable, "-m", "nst_core", "serve", "--port", "0", "--token-file", str(token)]
    command += ["--weights", str(weights), "--device", args.device]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        url = json.loads(server.stdout.readline())["url"]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        secret = token.read_text().strip()
        content = raw_bytes(photo(512, 341), "u8")
        style = (folder / "style.png").read_bytes()
        layout = {"width": 512, "height": 341, "format": "u8", "channels": 3}
        options = {"size": 512, "iterations": 1000, "device": args.device}
        body = wire.request_body((content, layout), [(style, 1.0)], options, result_format="u8")
        header, rest = body.split(b"\n", 1)
        body = json.dumps({**json.loads(header), "snapshot_every": args.every}).encode() + b"\n" + rest
        times = []
        for _ in range(args.starts):
            connection = http.client.HTTPConnection(host, int(port), timeout=600)
            started = time.perf_counter()
            headers = {"Authorization": f"Bearer {secret}", "Content-Type": wire.CONTENT_TYPE}
            connection.request("POST", "/v1/jobs", body=body, headers=headers)
            response = connection.getresponse()
            while line := response.readline():
                if json.loads(line)["event"] in ("snapshot", "error"):
                    break
            times.append(time.perf_counter() - started)
            connection.close()  # the client leaving cancels the job
            time.sleep(1.0)  # the worker lets go of the cancelled job before the next one is timed
        return times
    finally:
        server.terminate()
        server.wait()


def _save(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray((array * 255).round().astype(np.uint8)).save(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from ..weights import resolve_weights

    weights = resolve_weights(args.weights)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="nst-bench-snapshots-") as scratch:
        folder = Path(scratch)
        rows += [cost_row(case, args, weights, folder) for case in args.cases]
        starts: dict[str, Any] = {"every s": args.every}
        if args.starts:  # 0: the costs alone
            starts["first snapshot cold s"] = round(min(cold_starts(args, weights, folder)), 2)
            starts["first snapshot warm s"] = round(min(warm_starts(args, weights, folder)), 2)
    if args.json:
        print(json.dumps({"costs": rows, "starts": starts}))
    else:
        for row in rows:
            print("  ".join(f"{k} {v}" for k, v in row.items()))
        print("  ".join(f"{k} {v}" for k, v in starts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
