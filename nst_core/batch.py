"""`python -m nst_core batch`: many pictures, one engine, one progress bar, and a rerun that resumes.

Every output lies in the output folder under its input's name, written atomically (`job.write_output`),
so an output that exists is complete: a rerun skips it and redoes none. A bad input is reported as
its own `item` event and skipped; the batch goes on and ends with one `done` event, or, when any input
failed, one `error` event that names them (and a non-zero exit code).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ExitCode, ImageError, NstError, OutputError, UsageError, describe_error
from .events import Event, Sink, error_event
from .options import Options

FORMATS = ("png", "jpg", "tif", "webp", "same")  # "same": the input's own, when it can be written
DEFAULT_TEMPORAL_WEIGHT = 200.0  # --frames: against the other terms' relative errors (docs/batch.md)
READABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm", ".pgm", ".tga")


@dataclass(frozen=True)
class Item:
    source: Path
    output: Path


@dataclass
class Summary:
    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # complete from an earlier run
    failed: list[tuple[Path, NstError]] = field(default_factory=list)


def collect(inputs: Sequence[Path]) -> tuple[list[Path], list[tuple[Path, NstError]]]:
    """The pictures named: files as given, folders' image files by name; and the inputs that are neither."""
    found: list[Path] = []
    missing: list[tuple[Path, NstError]] = []
    for path in inputs:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in READABLE)
        elif path.is_file():
            found.append(path)
        else:
            missing.append((path, ImageError(f"Input {path} does not exist: check the name.")))
    return found, missing


def plan_items(sources: Sequence[Path], out_dir: Path, fmt: str) -> list[Item]:
    """Where each output goes; two inputs that would write one output are a usage error, before any run."""
    from .job import image_format

    if fmt not in FORMATS:
        raise UsageError(f"Unknown output format '{fmt}': use one of {', '.join(FORMATS)}.")
    if not out_dir.is_dir():
        raise OutputError(f"Output folder {out_dir} does not exist: create it first.")
    items, owners = [], {}
    for source in sources:
        suffix = source.suffix.lower() if fmt == "same" else "." + fmt
        if fmt == "same":
            try:
                image_format(Path("x" + suffix))
            except OutputError:
                suffix = ".png"  # an input format Pillow reads but cannot write (GIF frames, PPM ...)
        output = out_dir / (source.stem + suffix)
        if output in owners:
            raise UsageError(
                f"{owners[output]} and {source} would both write {output}: rename one, or batch them apart."
            )
        owners[output] = source
        items.append(Item(source, output))
    return items


class _ItemSink(Sink):
    """One item's events, forwarded to the batch's sink with the item's place and a batch-wide fraction."""

    def __init__(self, outer: Sink, index: int, count: int) -> None:
        super().__init__()
        self.outer, self.index, self.count = outer, index, count

    def _show(self, event: Event) -> None:
        if event["event"] in ("done", "error"):
            return  # the batch reports an item's end itself
        event = {**event, "item": self.index + 1, "items": self.count}
        if event["event"] == "progress":
            event["fraction"] = (self.index + event["fraction"]) / self.count
        self.outer.emit(event)


def run_batch(
    items: Sequence[Item],
    styles: Sequence[Path],
    options: Options,
    sink: Sink,
    cancel: Any = None,
    failed: Sequence[tuple[Path, NstError]] = (),
    temporal_weight: float | None = None,
) -> Summary:
    """Stylise every item whose output is not there yet; the styles are read once, the network loaded once.

    With a `temporal_weight` the items are consecutive frames (nst_core/frames.py): each starts from the
    previous result warped onto it (an output already there is read back for that)."""
    from . import frames
    from .images import load_image
    from .job import Output, load_content, stylize_arrays, write_output

    started = time.perf_counter()
    summary = Summary(failed=list(failed))
    count = len(items) + len(failed)  # inputs that are no pictures come first, so the places add up
    for index, (path, error) in enumerate(summary.failed):
        sink.emit(_item_event(index, count, path, None, "failed", error.message))
    style_arrays = [load_image(path) for path in styles]  # a bad style stops the batch: every item needs it
    if options.style_blend is None:
        options = replace(options, style_blend=[1.0] * len(style_arrays))
    previous: tuple[Any, Any] | None = None  # (content, result) of the frame before, with frames
    for index, item in enumerate(items, start=len(failed)):
        if item.output.is_file():
            summary.skipped.append(item.source)
            sink.emit(_item_event(index, count, item.source, item.output, "skipped", "already there"))
            if temporal_weight is not None:
                previous = _read_back(item, load_content, load_image)
            continue
        _remove_leftovers(item.output)
        try:
            content = load_content(item.source)
            start = None
            if temporal_weight is not None and previous is not None:
                start = frames.frame_start(previous[1], previous[0], content, temporal_weight)
            item_sink = _ItemSink(sink, index, count)
            result = stylize_arrays(content, style_arrays, options, "working", item_sink, cancel, frame=start)
            write_output(result, Output(item.output))
            previous = (content, result)
        except Exception as exc:  # one picture's failure is reported, and the batch goes on
            error = describe_error(exc)
            if error.code in (ExitCode.CANCELLED, ExitCode.WEIGHTS, ExitCode.DEVICE, ExitCode.USAGE):
                raise  # not this picture's fault: the rest would fail alike
            previous = None  # the next frame starts afresh
            summary.failed.append((item.source, error))
            sink.emit(_item_event(index, count, item.source, item.output, "failed", error.message))
            continue
        summary.done.append(item.source)
        sink.emit(_item_event(index, count, item.source, item.output, "done", None))
    sink.emit(_end_event(summary, items, time.perf_counter() - started))
    return summary


def _read_back(item: Item, load_content: Any, load_image: Any) -> tuple[Any, Any] | None:
    """A frame done by an earlier run, as the start of the next one (None when it cannot be read)."""
    try:
        return load_content(item.source), load_image(item.output)
    except NstError:
        return None


def _remove_leftovers(output: Path) -> None:
    """Temporary files of an earlier, killed run of this output (`job.write_output`'s names)."""
    for stale in output.parent.glob(f".{output.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _item_event(
    index: int, count: int, source: Path, output: Path | None, status: str, message: str | None
) -> Event:
    event: Event = {
        "event": "item",
        "item": index + 1,
        "items": count,
        "input": str(source),
        "status": status,
    }
    if output is not None:
        event["output"] = str(output)
    if message:
        event["message"] = message
    return event


def _end_event(summary: Summary, items: Sequence[Item], seconds: float) -> Event:
    counts = {"done": len(summary.done), "skipped": len(summary.skipped), "failed": len(summary.failed)}
    if not summary.failed:
        folder = str(items[0].output.parent) if items else ""
        return {"event": "done", "output": folder, "seconds": round(seconds, 3), **counts}
    names = "; ".join(f"{path.name} ({error.message})" for path, error in summary.failed[:3])
    more = f" and {len(summary.failed) - 3} more" if len(summary.failed) > 3 else ""
    error = NstError(
        f"{len(summary.failed)} of {len(summary.failed) + len(summary.done) + len(summary.skipped)} inputs "
        f"failed: {names}{more}; fix them and run the batch again (finished outputs are kept)."
    )
    error.code = summary.failed[0][1].code
    return {**error_event(error), **counts}
