"""`python -m nst_core.bench.load`: the engine's cold start, reading the whole official VGG19 file against
reading its features-only copy.

It writes a VGG19 file as torchvision ships it (torch's legacy format, the classifier included,
548 MB: random values of the real shapes) and the copy the engine makes of it, then times, each in a
fresh process, `network.load_features` both ways: the seconds, the whole process's seconds (the
torch import included), the peak resident memory, and the ratios. Both ways must give the same bits
(a digest of the loaded tensors is compared). `--from-disk` (Linux) drops the two files from the page
cache before each process, as after a reboot; without it they are read from memory. See
docs/performance.md.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .runner import FreshProcessFailed, add_one_option, answer_one, print_row, run_fresh

MODEL = "vgg19"
FULL_NAME = "vgg19-random.pth"


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: load the features as the engine does, and what it cost."""
    started = time.perf_counter()
    import torch

    from .. import network, weights

    imported = time.perf_counter()
    if spec["official"]:
        # The random file stands in for the official one: same format and shapes, its own hash.
        weights.OFFICIAL[MODEL] = replace(weights.OFFICIAL[MODEL], **spec["official"])
    path = Path(spec["path"])
    copy = weights.verified_features(path)
    resident, _ = _memory()
    before = time.perf_counter()
    features = network.load_features(MODEL, path)
    for tensor in features.state_dict().values():
        # One value per 4 KiB page: a mapped file is read only where it is touched, so the first
        # forward pass would pay for what this leaves unread.
        tensor.reshape(-1)[::1024].sum()
    loaded = time.perf_counter()
    _, peak = _memory()
    digest = hashlib.sha256()
    for key, tensor in sorted(features.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return {
        "read": str(copy or path),
        "import_s": round(imported - started, 3),
        "load_s": round(loaded - before, 3),
        "peak_mib": round(peak / 2**20),
        "load_peak_mib": round((peak - resident) / 2**20),  # what the load added at its peak
        "digest": digest.hexdigest(),
    }


def _memory() -> tuple[int, int]:
    """(resident now, peak resident) in bytes. From /proc where there is one: `ru_maxrss` keeps the
    peak of the process that started this one (Linux carries it across exec)."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource  # not on Windows

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, else KiB
        return peak, peak


def make_files(folder: Path) -> tuple[Path, dict[str, Any]]:
    """The full-size file (kept if `folder` has it already), verified as official, and its copy; the
    official table's entry for it."""
    import torch
    import torchvision

    from .. import network, weights

    full = folder / "weights" / FULL_NAME
    if not full.is_file():
        full.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        state = getattr(torchvision.models, MODEL)(weights=None).state_dict()
        torch.save(state, full, _use_new_zipfile_serialization=False)  # as torchvision's files are
        del state
    entry = {"filename": FULL_NAME, "sha256": weights.sha256_of(full), "size": full.stat().st_size}
    weights.OFFICIAL[MODEL] = replace(weights.OFFICIAL[MODEL], **entry)
    weights.verify(full, MODEL)
    copy = network.ensure_features_copy(full)
    assert copy is not None
    for path in (full, copy):
        with open(path, "rb+") as stream:
            os.fsync(stream.fileno())  # written pages must reach the disk before they can be dropped
    return full, entry


def drop_from_cache(*files: Path) -> None:
    for path in files:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


def measure(path: Path, official: dict[str, Any] | None, data_dir: Path, evict: Sequence[Path]) -> dict:
    """One fresh engine process loading `path`'s features (`official`: the table entry that makes it
    official, so that its copy is read; None: read whole, as before there was a copy)."""
    if evict:
        drop_from_cache(*evict)
    spec = {"path": str(path), "official": official}
    env = {**os.environ, "NST_DATA_DIR": str(data_dir)}
    started = time.perf_counter()
    try:
        row = run_fresh("nst_core.bench.load", spec, env)
    except FreshProcessFailed as failed:
        raise RuntimeError(f"the engine process failed: {failed.stderr.strip()[-500:]}") from None
    seconds = time.perf_counter() - started
    return {**row, "process_s": round(seconds, 3)}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The best seconds of `runs` (the least disturbed by other load) and the median peak memory."""
    return {
        "read": runs[0]["read"],
        "load_s": min(r["load_s"] for r in runs),
        "process_s": min(r["process_s"] for r in runs),
        "import_s": min(r["import_s"] for r in runs),
        "peak_mib": round(statistics.median(r["peak_mib"] for r in runs)),
        "load_peak_mib": round(statistics.median(r["load_peak_mib"] for r in runs)),
        "runs": len(runs),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nst_core.bench.load", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=5, help="fresh processes each way (the best counts)")
    parser.add_argument(
        "--from-disk", action="store_true", help="drop the files from the page cache before each run (Linux)"
    )
    parser.add_argument("--dir", type=Path, default=None, help="work (and keep the 548 MB file) here")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    add_one_option(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return answer_one(args.one, run_one)
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.dir or Path(scratch)
        data_dir = folder / "data"
        os.environ["NST_DATA_DIR"] = str(data_dir)
        full, entry = make_files(folder)
        from .. import weights

        copy = weights.features_path(full)
        assert copy is not None
        evict = [full, copy] if args.from_disk else []
        runs: dict[str, list[dict[str, Any]]] = {"whole": [], "copy": []}
        for _ in range(args.runs):  # in turns: a burst of other load hits both alike
            runs["whole"].append(measure(full, None, data_dir, evict))
            runs["copy"].append(measure(full, entry, data_dir, evict))
        digests = {r["digest"] for rs in runs.values() for r in rs}
        if len(digests) != 1:
            raise SystemExit("the copy gave other tensors than the whole file: please report")
        rows = {name: summarise(found) for name, found in runs.items()}
        rows["whole"]["file_mib"] = round(full.stat().st_size / 2**20)
        rows["copy"]["file_mib"] = round(copy.stat().st_size / 2**20)
        whole, mapped = rows["whole"], rows["copy"]
        ratios = {
            name: round(whole[name] / mapped[name], 2) if mapped[name] else None
            for name in ("load_s", "process_s", "peak_mib", "load_peak_mib")
        }
        source = "disk" if args.from_disk else "page cache"
        for name, row in rows.items():
            print_row({"way": name, "from": source, **row}, args.json)
        print_row({"ratio_whole_over_copy": True, **ratios, "same_tensors": True}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
