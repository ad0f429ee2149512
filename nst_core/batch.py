"""`python -m nst_core batch`: many pictures, one engine, one progress bar, and a rerun that resumes.

Every output lies in the output folder under its input's name, written atomically (`output.write_output`),
so an output that exists is complete: a rerun skips it and redoes none. A bad input is reported as
its own `item` event and skipped; the batch goes on and ends with one `done` event, or, when any input
failed, one `error` event that names them (and a non-zero exit code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ExitCode, ImageError, NstError, OutputError, UsageError, describe_error
from .events import Event, Sink, done_event, error_event, note
from .options import Options
from .paths import file_id

if TYPE_CHECKING:  # job imports numpy, which a batch leaves to its first picture
    from .output import Output

FORMATS = ("png", "jpg", "tif", "webp", "same")  # "same": the input's own, when it can be written
DEFAULT_TEMPORAL_WEIGHT = 200.0  # --frames: against the other terms' relative errors (docs/batch.md)
READABLE = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".ppm", ".pgm", ".tga")


@dataclass(frozen=True)
class Item:
    source: Path
    output: Path
    replaces_input: bool = False  # the output is an input, to be replaced (--overwrite)

    @property
    def finished(self) -> bool:
        """Its output is there from an earlier run (the input it replaces is not one)."""
        return self.output.is_file() and not self.replaces_input


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


def plan_items(sources: Sequence[Path], out_dir: Path, fmt: str, overwrite: bool = False) -> list[Item]:
    """Where each output goes; two inputs that would write one output are a usage error, and an output
    that would replace an input an output error unless `overwrite`, before any run."""
    from .output import image_format

    if fmt not in FORMATS:
        raise UsageError(f"Unknown output format '{fmt}': use one of {', '.join(FORMATS)}.")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"Output {out_dir} is a file, not a folder: give a folder for -o.")
    items, owners = [], {}
    inputs = {key: source for source in sources if (key := file_id(source)) is not None}
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
        replaced = inputs.get(file_id(output)) if output.exists() else None
        if replaced is not None and not overwrite:
            raise OutputError(
                f"Output {output} is the input {replaced}: the result would replace it; choose another "
                "output folder (-o) or --format, or pass --overwrite to replace the inputs."
            )
        items.append(Item(source, output, replaces_input=replaced is not None))
    return items


def make_folder(folder: Path) -> None:
    """The output folder, with its parents, once the batch is known to run: `-o out/` need not exist."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot make the output folder {folder} ({exc.strerror}): choose another -o."
        ) from None


class BatchProgress:
    """The pictures' start and progress events as the batch's: each tagged with its place, and one
    fraction for the whole batch, finished pictures counting whole (the local batch and the cluster's
    driver report through one of these)."""

    def __init__(self, sink: Sink, count: int) -> None:
        self.sink, self.count = sink, count
        self.shares: dict[int, float] = {}  # by place: how much of each picture is done

    def forward(self, index: int, event: Event) -> None:
        if event["event"] in ("done", "error"):
            return  # a picture's end is the batch's `item` event (`ended`)
        event = {**event, "item": index + 1, "items": self.count}
        if event["event"] == "progress":
            self.shares[index] = float(event["fraction"])
            event["fraction"] = sum(self.shares.values()) / self.count
        self.sink.emit(event)

    def ended(self, index: int, event: Event) -> None:
        """Picture `index` is finished, failed or skipped: `event` (an `item_event`) says which."""
        self.shares[index] = 1.0
        self.sink.emit(event)

    def sink_for(self, index: int) -> Sink:
        """A sink for one picture's run, forwarding to this batch."""
        return _PictureSink(self, index)


class _PictureSink(Sink):
    def __init__(self, progress: BatchProgress, index: int) -> None:
        super().__init__()
        self.progress, self.index = progress, index

    def _show(self, event: Event) -> None:
        self.progress.forward(self.index, event)


@dataclass(frozen=True)
class Frame:
    """One picture of a run, as `stylize_run` takes it: here a file, on a cluster worker its bytes, in a
    service's animation job its decoded array."""

    name: str  # for messages: the input's path
    content: Path | bytes | Any
    # The output, when an earlier run made it: nothing to do, and with frames it is read back as the next
    # frame's start (b"": there, but no frame of this run starts from it).
    finished: Path | bytes | None = None


FATAL = (ExitCode.CANCELLED, ExitCode.WEIGHTS, ExitCode.DEVICE, ExitCode.USAGE)  # every picture would fail


def stylize_run(
    frames: Sequence[Frame],
    style_arrays: Sequence[Any],
    options: Options,
    sink_for: Callable[[int], Sink],
    cancel: Any = None,
    temporal_weight: float | None = None,
    style_cache: Any = None,
) -> Iterator[tuple[int, Any]]:
    """Stylise the unfinished frames in order, yielding (place, result array | NstError | None when it
    was finished). A failure that is one picture's own is yielded and the run goes on (the next frame
    starts afresh); one every picture would share is raised.

    With a `temporal_weight` the frames are consecutive (nst_core/frames.py): each starts from the
    previous result warped onto it. A warm engine's `style_cache` (stylecache.py) keeps the styles'
    targets from frame to frame."""
    from . import frames as motion
    from .job import progress_events, start_events
    from .run import stylize

    previous: tuple[Any, Any] | None = None  # (content, result) of the frame before, with frames
    for index, frame in enumerate(frames):
        if frame.finished is not None:
            if temporal_weight is not None:
                previous = _read_back(frame)
            yield index, None
            continue
        try:
            content = _decode(frame.content, frame.name)
            start = None
            if temporal_weight is not None and previous is not None:
                start = motion.frame_start(previous[1], previous[0], content, temporal_weight)
            sink = sink_for(index)
            result = stylize(
                content,
                style_arrays,
                options,
                output_size="working",
                progress=progress_events(sink),
                on_start=start_events(sink),
                cancel=cancel,
                frame=start,
                style_cache=style_cache,
            )
        except Exception as exc:  # one picture's failure is reported, and the run goes on
            error = describe_error(exc)
            if error.code in FATAL:
                raise
            previous = None
            yield index, error
            continue
        previous = (content, result)
        yield index, result


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

    With a `temporal_weight` the items are consecutive frames: an output already there is read back as
    the next frame's start."""
    from .output import write_output

    started = time.perf_counter()
    summary = Summary(failed=list(failed))
    progress = start_progress(sink, failed, len(items))
    style_arrays, options = load_styles(styles, options)
    outputs = item_outputs(items)
    frames = [Frame(str(i.source), i.source, i.output if i.finished else None) for i in items]
    offset = len(failed)
    run = stylize_run(
        frames, style_arrays, options, lambda i: progress.sink_for(offset + i), cancel, temporal_weight
    )
    for index, result in run:
        item = items[index]
        if result is not None and not isinstance(result, NstError):
            remove_leftovers(item.output)
            try:
                write_output(result, outputs[index])
            except NstError as exc:
                result = exc
        record(summary, progress, offset + index, item, result)
    sink.emit(end_event(summary, items, time.perf_counter() - started))
    return summary


def start_progress(sink: Sink, failed: Sequence[tuple[Path, NstError]], pictures: int) -> BatchProgress:
    """The batch's progress over its inputs; those that are no pictures come first, reported failed, so
    the places add up."""
    progress = BatchProgress(sink, len(failed) + pictures)
    for index, (path, error) in enumerate(failed):
        progress.ended(index, item_event(index, progress.count, path, None, "failed", error.message))
    return progress


def item_outputs(items: Sequence[Item]) -> list[Output]:
    """Each item's `output.Output`: 16 bits per channel where its picture has them and the format holds
    them; one note for the pictures whose format cannot."""
    from .output import Output, deep_output

    outputs, lost = [], []
    for item in items:
        output, reduced = deep_output(item.source, Output(item.output))
        outputs.append(output)
        if reduced:
            lost.append(item)
    if lost:
        names = lost[0].source.name + (", ..." if len(lost) > 1 else "")
        note(
            f"{len(lost)} of the pictures ({names}) {'has' if len(lost) == 1 else 'have'} 16 bits per "
            f"channel but {lost[0].output.suffix} holds 8: their results are saved with 8 bits; use "
            "--format png or tif to keep 16."
        )
    return outputs


def load_styles(styles: Sequence[Path], options: Options) -> tuple[list[Any], Options]:
    """The style pictures, read once (a bad one stops the batch: every item needs it), and the options
    with an equal blend when none was given."""
    from .images import load_image

    style_arrays = [load_image(path) for path in styles]
    if options.style_blend is None:
        options = replace(options, style_blend=[1.0] * len(style_arrays))
    return style_arrays, options


def record(
    summary: Summary, progress: BatchProgress, index: int, item: Item, result: Any, **extra: Any
) -> None:
    """An item's end: finished before (None), written, or failed with its one-line reason."""
    if result is None:
        summary.skipped.append(item.source)
        status, message = "skipped", "already there"
    elif isinstance(result, NstError):
        summary.failed.append((item.source, result))
        status, message = "failed", result.message
    else:
        summary.done.append(item.source)
        status, message = "done", None
    event = item_event(index, progress.count, item.source, item.output, status, message)
    progress.ended(index, {**event, **extra})


def _decode(source: Path | bytes | Any, name: str) -> Any:
    """A frame's content: a file, an image file's bytes, or (a service's job) the array already decoded."""
    from .images import decode_image
    from .job import load_content

    if not isinstance(source, (bytes, Path)):
        return source
    if isinstance(source, bytes):
        return decode_image(source, name)
    return load_content(source)


def _read_back(frame: Frame) -> tuple[Any, Any] | None:
    """A frame done by an earlier run, as the start of the next one (None when it cannot be read)."""
    if not frame.finished:
        return None
    try:
        return _decode(frame.content, frame.name), _decode(frame.finished, frame.name)
    except NstError:
        return None


def remove_leftovers(output: Path) -> None:
    """Temporary files of an earlier, killed run of this output (`output.write_output`'s names): swept
    before the output is written, by the local batch and the cluster's driver alike."""
    for stale in output.parent.glob(f".{output.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def item_event(
    index: int, count: int, source: Path, output: Path | None, status: str, message: str | None
) -> Event:
    """A picture's end: `done`, `skipped` or `failed` (docs/protocol.md)."""
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


def end_event(summary: Summary, items: Sequence[Item], seconds: float) -> Event:
    """The batch's end: `done` with the counts, or `error` naming the inputs that failed."""
    counts = {"done": len(summary.done), "skipped": len(summary.skipped), "failed": len(summary.failed)}
    if not summary.failed:
        folder = str(items[0].output.parent) if items else ""
        return {**done_event(folder, seconds), **counts}
    names = "; ".join(f"{path.name} ({error.message})" for path, error in summary.failed[:3])
    more = f" and {len(summary.failed) - 3} more" if len(summary.failed) > 3 else ""
    error = NstError(
        f"{len(summary.failed)} of {len(summary.failed) + len(summary.done) + len(summary.skipped)} inputs "
        f"failed: {names}{more}; fix them and run the batch again (finished outputs are kept)."
    )
    error.code = summary.failed[0][1].code
    return {**error_event(error), **counts}
