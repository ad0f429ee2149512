"""The engine side of the job protocol (docs/protocol.md): read and check a job, run it (`run.stylize`,
its progress and plan as the protocol's events), write the result (`output.write_output`).

`python -m nst_core stylize` runs through the same `execute` as `run-job`, so both validate
inputs in the same order, report the same events and leave no partial file behind.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from . import validate
from .devices import describe_device
from .errors import ImageError, OutputError, UsageError
from .events import PROTOCOL_VERSION, Sink, done_event, progress_event, snapshot_event, start_event
from .images import image_size, load_image, to_array
from .optimize import CancelToken, ProgressCallback
from .options import SNAPSHOT_EVERY, STARTS, Options, check_mask_count
from .output import Output, check_writable, deep_output, image_format, keep_depth, write_output
from .paths import same_file
from .plan import Plan, make_plan
from .run import Snapshot, SnapshotCallback, StartCallback, Watch, stylize

JOB_KEYS = ("version", "content", "styles", "options", "output", "snapshot")


@dataclass(frozen=True)
class RawImage:
    """A headerless interleaved buffer, as GIMP hands layer pixels over."""

    path: Path
    width: int
    height: int
    format: str
    channels: int


@dataclass(frozen=True)
class JobRequest:
    """What a job file or the command line asks for: inputs, options, where the result goes."""

    content: Path | RawImage
    styles: tuple[Path | RawImage, ...]
    options: Options
    output: Output
    # The result's size: the content's (run-job, so a layer gets back its own size), or the working
    # size (`stylize` on the command line: --size, else the preset's size capped at the content's).
    result_size: Literal["content", "working"] = "content"
    # One per style (white = that style, docs/regions.md), or None: the styles blended everywhere.
    masks: tuple[Path | RawImage, ...] | None = None
    # Where the current picture is kept while the run goes (docs/protocol.md, "Snapshots"), or None.
    snapshot: Output | None = None
    snapshot_every: float = SNAPSHOT_EVERY


# -- reading a job file ----------------------------------------------------------------------------


def read_job(path: Path | str) -> JobRequest:
    """Parse and check JOB.json; relative paths are relative to its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read job file {path} ({exc}): check the path.") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep for the parser
        raise UsageError(f"Job file {path} is not valid JSON ({exc}): fix the file.") from None
    return parse_job(data, path.resolve().parent)


def parse_job(data: Any, base: Path) -> JobRequest:
    _require(isinstance(data, dict), "the job must be a JSON object")
    version = data.get("version")
    if version != PROTOCOL_VERSION:
        raise UsageError(
            f"Job version {version!r} is not supported: this engine reads version {PROTOCOL_VERSION}; "
            "update the plug-in and the engine together (run install.py)."
        )
    unknown = sorted(set(data) - set(JOB_KEYS))
    _require(not unknown, f"unknown key(s) {', '.join(unknown)}; use {', '.join(JOB_KEYS)}")
    styles = data.get("styles")
    _require(isinstance(styles, list) and styles, "`styles` must be a non-empty list")
    options_data = data.get("options", {})
    _require(isinstance(options_data, dict), "`options` must be an object")
    options = _with_job_paths(Options.from_dict(options_data), base)
    style_paths, blend, masks = zip(*(_style(s, base) for s in styles), strict=True)
    masked = validate.check_masks(masks, _require)
    _require(
        options.style_blend is None or all(s.get("weight") is None for s in styles),
        "give blend weights per style or as options.style_blend, not both",
    )
    options = validate.with_style_weights(options, blend)
    content = _content(data.get("content"), base)
    output = _output(data.get("output"), base)
    snapshot, every = _snapshot(data.get("snapshot"), base)
    masks = masks if masked else None
    return JobRequest(
        content, style_paths, options, output, masks=masks, snapshot=snapshot, snapshot_every=every
    )


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise UsageError(f"Bad job file: {problem} (see docs/protocol.md).")


def _file(value: Any, base: Path, what: str) -> Path:
    _require(isinstance(value, str) and value != "", f"{what} must be a file name")
    return base / value  # an absolute `value` replaces `base`


STYLE_KEYS = ("path", "raw", "width", "height", "format", "channels", "weight", "mask")
RAW_KEYS = ("raw", "width", "height", "format", "channels")


def _style(entry: Any, base: Path) -> tuple[Path | RawImage, float, Path | RawImage | None]:
    _require(isinstance(entry, dict), "each style must be an object with a `path` or `raw`")
    unknown = sorted(set(entry) - set(STYLE_KEYS))
    _require(not unknown, f"a style has unknown key(s) {', '.join(unknown)}; use {', '.join(STYLE_KEYS)}")
    weight = validate.style_weight(entry, _require)
    mask = entry.get("mask")
    if isinstance(mask, dict):  # raw pixels from an editor (a selection), like content's
        mask = _image(mask, base, "a style `mask`")
    elif mask is not None:
        mask = _file(mask, base, "a style `mask`")
    image = _image({k: v for k, v in entry.items() if k in ("path", *RAW_KEYS)}, base, "a style")
    return image, weight, mask


def _content(entry: Any, base: Path) -> Path | RawImage:
    return _image(entry, base, "`content`")


def _image(entry: Any, base: Path, what: str) -> Path | RawImage:
    """An image entry: `path` (an image file) or `raw` with its layout (docs/protocol.md)."""
    _require(isinstance(entry, dict), f"{what} must be an object with `path` or `raw`")
    if "path" in entry:
        return _file(entry["path"], base, f"{what}'s `path`")
    width, height, channels = entry.get("width"), entry.get("height"), entry.get("channels")
    fmt = entry.get("format")
    _require("raw" in entry, f"{what} needs a `path` or `raw`")
    validate.check_raw_layout(width, height, channels, fmt, f"raw {what}", _require)
    return RawImage(_file(entry.get("raw"), base, f"{what}'s `raw`"), width, height, fmt, channels)


def _output(entry: Any, base: Path) -> Output:
    _require(isinstance(entry, dict), "`output` must be an object with `path` or `raw`")
    if "path" in entry:
        return Output(_file(entry["path"], base, "`output.path`"))
    fmt = entry.get("format")
    _require(validate.is_raw_format(fmt), f"raw output `format` is {fmt!r}; use u8 or float32")
    return Output(_file(entry.get("raw"), base, "`output.raw`"), raw_format=fmt)


def _snapshot(entry: Any, base: Path) -> tuple[Output | None, float]:
    """The job's `snapshot`: where (as `output`) and how often, in seconds of work."""
    if entry is None:
        return None, SNAPSHOT_EVERY
    _require(isinstance(entry, dict), "`snapshot` must be an object with `path` or `raw`, and `every`")
    every = validate.snapshot_every(entry.get("every", SNAPSHOT_EVERY), "`snapshot.every`", _require)
    where = {k: v for k, v in entry.items() if k != "every"}
    return _output(where, base), every


def _with_job_paths(options: Options, base: Path) -> Options:
    """`options` with the file names it holds relative to the job file's folder."""
    if options.weights:
        options = replace(options, weights=str(base / options.weights))
    if options.init and options.init not in STARTS:
        options = replace(options, init=str(base / options.init))
    return options


# -- raw buffers -------------------------------------------------------------------------------------


def read_raw(raw: RawImage) -> np.ndarray:
    expected = validate.raw_size(raw.width, raw.height, raw.channels, raw.format)
    try:
        data = raw.path.read_bytes()
    except OSError as exc:
        raise ImageError(
            f"Raw image {raw.path} cannot be read ({exc.strerror}): check the job file."
        ) from None
    if len(data) != expected:
        raise UsageError(
            f"Raw image {raw.path} has {len(data)} bytes but {raw.width}x{raw.height}x{raw.channels} "
            f"{raw.format} needs {expected}: fix `width`, `height`, `channels` or `format` in the job."
        )
    values = np.frombuffer(data, dtype=validate.RAW_FORMATS[raw.format].dtype)
    array = values.reshape(raw.height, raw.width, raw.channels)
    return to_array(array, name=f"raw image {raw.path.name}")


def load_content(content: Path | RawImage) -> np.ndarray:
    if isinstance(content, RawImage):
        return read_raw(content)
    return load_image(content)


# -- running -----------------------------------------------------------------------------------------


def execute(
    request: JobRequest, sink: Sink, cancel: CancelToken | None = None, stop: CancelToken | None = None
) -> Path:
    """Check the output first, load the inputs, stylise (`run.stylize`: the plan's usage, device and
    weights errors first), and write the result atomically. Once `stop` is set the run ends after the
    iteration under way and its picture is the result (`done` says `stopped`)."""
    started = time.perf_counter()
    check_writable(request.output)
    output = keep_depth(request.content, request.output)
    snapshot = None
    if request.snapshot is not None:
        check_snapshot(request)
        snapshot = snapshot_writer(deep_output(request.content, request.snapshot)[0], sink)
    content = load_content(request.content)
    styles = [load_content(style) for style in request.styles]
    masks = None if request.masks is None else [load_content(mask) for mask in request.masks]
    watch = Watch(snapshot, request.snapshot_every, stop)
    result = stylize(
        content,
        styles,
        request.options,
        output_size=request.result_size,
        progress=progress_events(sink),
        on_start=start_events(sink),
        cancel=cancel,
        masks=masks,
        watch=watch,
    )
    written = write_output(result, output)
    stopped_at = watch.iteration if watch.stopped else None
    sink.emit(done_event(str(written), time.perf_counter() - started, stopped_at))
    return written


def snapshot_writer(output: Output, sink: Sink) -> SnapshotCallback:
    """Each snapshot written to `output` atomically, then announced by its event: the file is whole
    when a reader hears of it."""
    fmt = output.raw_format or image_format(output.path).lower()

    def write(snapshot: Snapshot) -> None:
        written = write_output(snapshot.image, output)
        shape = snapshot.image.shape
        sink.emit(
            snapshot_event(
                str(written), shape, fmt, snapshot.iteration, snapshot.fraction, snapshot.full_size
            )
        )

    return write


def progress_events(sink: Sink) -> ProgressCallback:
    """A run's progress as the protocol's `progress` events on `sink`."""
    return lambda progress: sink.emit(progress_event(progress))


def start_events(sink: Sink) -> StartCallback:
    """A run's plan as the protocol's `start` event on `sink`, before its first iteration."""
    return lambda plan: sink.emit(start_event(describe_device(plan.device), plan.summary()))


def dry_run(request: JobRequest) -> Plan:
    """The plan `execute` would carry out, computing and writing nothing: the inputs are checked as far
    as their sizes, and the notes `execute` would print are printed."""
    check_mask_count(None if request.masks is None else len(request.masks), len(request.styles))
    check_writable(request.output)
    keep_depth(request.content, request.output)
    width, height = _image_size(request.content)
    for image in (*request.styles, *(request.masks or ())):
        _image_size(image)
    masked = request.masks is not None
    return make_plan(
        request.options, (width, height), len(request.styles), output=request.result_size, masked=masked
    )


def _image_size(image: Path | RawImage) -> tuple[int, int]:
    if isinstance(image, RawImage):
        return image.width, image.height
    return image_size(image)


def check_not_an_input(request: JobRequest) -> None:
    """An output that is one of the run's own pictures would replace the original with the result: that
    takes --overwrite."""
    for role, path in _input_files(request):
        if same_file(request.output.path, path):
            raise OutputError(
                f"Output {request.output.path} is the {role} {path}: the result would replace it; "
                "choose another output file, or pass --overwrite to replace it."
            )


def check_snapshot(request: JobRequest) -> None:
    """A snapshot file that is the output or one of the run's pictures would be written over it."""
    assert request.snapshot is not None
    check_writable(request.snapshot)
    for role, path in [("output", request.output.path), *_input_files(request)]:
        if same_file(request.snapshot.path, path) or request.snapshot.path.resolve() == path.resolve():
            raise OutputError(
                f"Snapshot file {request.snapshot.path} is the {role} {path}: snapshots would replace it; "
                "choose another snapshot file."
            )


def _input_files(request: JobRequest) -> list[tuple[str, Path]]:
    images = [
        ("content image", request.content),
        *(("style image", style) for style in request.styles),
        *(("style mask", mask) for mask in request.masks or ()),
    ]
    named = [(role, image.path if isinstance(image, RawImage) else image) for role, image in images]
    if request.options.init not in (None, *STARTS):
        named.append(("--init image", Path(request.options.init)))
    return named
