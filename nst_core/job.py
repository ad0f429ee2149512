"""The engine side of the job protocol (docs/protocol.md): read a job, run it, write the result atomically.

`python -m nst_core stylize` runs through the same `execute` as `run-job`, so both validate
inputs in the same order, report the same events and leave no partial file behind.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import Cancelled, ImageError, OutputError, UsageError
from .events import PROTOCOL_VERSION, Sink, done_event, note, progress_event, start_event
from .files import atomic_path, remove_pending, same_file
from .options import Options, check_options

if TYPE_CHECKING:  # optimize and plan import torch, which this module leaves to the run
    from .optimize import CancelToken
    from .plan import Plan

RAW_FORMATS = {"u8": np.dtype(np.uint8), "float32": np.dtype("<f4")}
JOB_KEYS = ("version", "content", "styles", "options", "output")


@dataclass(frozen=True)
class RawImage:
    """A headerless interleaved buffer, as GIMP hands layer pixels over."""

    path: Path
    width: int
    height: int
    format: str
    channels: int


@dataclass(frozen=True)
class Output:
    path: Path
    raw_format: str | None = None  # None: an image file in the format its suffix names
    bits: int = 8  # per channel in an image file; 16 for a deep content in PNG or TIFF (`keep_depth`)


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

    def __post_init__(self) -> None:
        check_mask_count(self.masks, len(self.styles))


def check_mask_count(masks: Any, styles: int) -> None:
    """Masks, when given, are one per style: a miscount is a usage error before anything is read."""
    if masks is not None and len(masks) != styles:
        raise UsageError(
            f"{styles} style image(s) but {len(masks)} style mask(s): give one mask per style, in the "
            "styles' order (docs/regions.md)."
        )


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
    _require(
        all(m is None for m in masks) or None not in masks,
        "give every style a `mask` or none (a style without one would have no region)",
    )
    if options.style_blend is None:
        options = replace(options, style_blend=list(blend))
    else:
        _require(
            all(s.get("weight") is None for s in styles),
            "give blend weights per style or as options.style_blend, not both",
        )
    check_options(options, len(style_paths))
    content = _content(data.get("content"), base)
    output = _output(data.get("output"), base)
    return JobRequest(content, style_paths, options, output, masks=None if masks[0] is None else masks)


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
    weight = entry.get("weight", 1.0)
    is_number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
    _require(is_number, "a style `weight` must be a number")
    mask = entry.get("mask")
    if isinstance(mask, dict):  # raw pixels from an editor (a selection), like content's
        mask = _image(mask, base, "a style `mask`")
    elif mask is not None:
        mask = _file(mask, base, "a style `mask`")
    image = _image({k: v for k, v in entry.items() if k in ("path", *RAW_KEYS)}, base, "a style")
    return image, float(weight), mask


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
    _require(
        all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (width, height, channels)),
        f"raw {what} needs positive whole `width`, `height` and `channels`",
    )
    _require(1 <= channels <= 4, f"raw `channels` is {channels}; use 1 to 4")
    _require(_raw_format(fmt), f"raw `format` is {fmt!r}; use u8 or float32")
    return RawImage(_file(entry.get("raw"), base, f"{what}'s `raw`"), width, height, fmt, channels)


def _raw_format(value: Any) -> bool:
    return isinstance(value, str) and value in RAW_FORMATS  # a list is not hashable: no TypeError


def _output(entry: Any, base: Path) -> Output:
    _require(isinstance(entry, dict), "`output` must be an object with `path` or `raw`")
    if "path" in entry:
        return Output(_file(entry["path"], base, "`output.path`"))
    fmt = entry.get("format")
    _require(_raw_format(fmt), f"raw output `format` is {fmt!r}; use u8 or float32")
    return Output(_file(entry.get("raw"), base, "`output.raw`"), raw_format=fmt)


def _with_job_paths(options: Options, base: Path) -> Options:
    """`options` with the file names it holds relative to the job file's folder."""
    if options.weights:
        options = replace(options, weights=str(base / options.weights))
    if options.init and options.init not in ("content", "noise"):
        options = replace(options, init=str(base / options.init))
    return options


# -- raw buffers -------------------------------------------------------------------------------------


def read_raw(raw: RawImage) -> np.ndarray:
    dtype = RAW_FORMATS[raw.format]
    expected = raw.width * raw.height * raw.channels * dtype.itemsize
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
    array = np.frombuffer(data, dtype=dtype).reshape(raw.height, raw.width, raw.channels)
    from .images import to_array

    return to_array(array, name=f"raw image {raw.path.name}")


def load_content(content: Path | RawImage) -> np.ndarray:
    if isinstance(content, RawImage):
        return read_raw(content)
    from .images import load_image

    return load_image(content)


# -- running -----------------------------------------------------------------------------------------


def execute(request: JobRequest, sink: Sink, cancel: CancelToken | None = None) -> Path:
    """Check the output first, load the inputs, plan (usage, device and weights errors), stylise, and
    write the result atomically."""
    started = time.perf_counter()
    check_writable(request.output)
    output = keep_depth(request.content, request.output)
    content = load_content(request.content)
    styles = [load_content(style) for style in request.styles]
    masks = None if request.masks is None else [load_content(mask) for mask in request.masks]
    result = stylize_arrays(content, styles, request.options, request.result_size, sink, cancel, masks=masks)
    written = write_output(result, output)
    sink.emit(done_event(str(written), time.perf_counter() - started))
    return written


def stylize_arrays(
    content: np.ndarray,
    styles: list[np.ndarray],
    options: Options,
    result_size: Literal["content", "working"],
    sink: Sink,
    cancel: CancelToken | None = None,
    device: Any = None,
    frame: Any = None,
    masks: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Plan, report the start, stylise; the one path of `run-job`, `stylize` and the service (which
    names its worker's `device`; a frame of an animation its `run.FrameStart`). Checked arrays in
    (`images.to_array`; `masks` one per style), the result array out."""
    from .devices import describe_device
    from .plan import make_plan
    from .run import run_plan

    check_mask_count(masks, len(styles))
    height, width = content.shape[:2]
    plan = make_plan(
        options, (width, height), len(styles), output=result_size, device=device, masked=masks is not None
    )
    sink.emit(start_event(describe_device(plan.device), plan.summary()))
    result = run_plan(plan, content, styles, lambda p: sink.emit(progress_event(p)), cancel, frame, masks)
    if cancel is not None and cancel.is_set():
        raise Cancelled()
    return result


def dry_run(request: JobRequest) -> Plan:
    """The plan `execute` would carry out, computing and writing nothing: the inputs are checked as far
    as their sizes, and the notes `execute` would print are printed."""
    from .plan import make_plan

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
    from .images import image_size

    return image_size(image)


# -- the output, written atomically ------------------------------------------------------------------


def image_format(path: Path) -> str:
    from PIL import Image

    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(
            f"Cannot write {path}: unknown image format '{path.suffix}'; use .png, .jpg, .tif or .webp."
        )
    return fmt


def keep_depth(content: Path | RawImage, output: Output) -> Output:
    """`output` with 16 bits per channel when the content file has them and the output's format holds
    them (PNG, TIFF); where it cannot, a note says so before the run."""
    output, lost = deep_output(content, output)
    if lost and isinstance(content, Path):
        note(
            f"{content.name} has 16 bits per channel but {output.path.suffix} holds 8: the result is saved "
            "with 8 bits; name a .png or .tif output to keep 16."
        )
    return output


def deep_output(content: Path | RawImage, output: Output) -> tuple[Output, bool]:
    """`output` with 16 bits where the content file has them and its format holds them, and whether
    16 bits of the content are lost to an 8-bit format."""
    from .deep import DEEP_FORMATS, high_bit_depth

    if not isinstance(content, Path) or output.raw_format is not None or not high_bit_depth(content):
        return output, False
    if image_format(output.path) in DEEP_FORMATS:
        return replace(output, bits=16), False
    return output, True


def check_writable(output: Output) -> None:
    """Fail before the long run when the result could not be written."""
    folder = output.path.parent
    if output.path.is_dir():
        example = output.path / "result.png"
        raise OutputError(f"Output {output.path} is a folder: give a file name such as {example}.")
    if not folder.is_dir():
        raise OutputError(f"Output folder {folder} does not exist: create it or choose another output path.")
    if output.raw_format is None:
        image_format(output.path)
    try:
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".nst-probe-")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"Cannot write to {folder} ({exc.strerror}): choose another output path.") from None


def check_not_an_input(request: JobRequest) -> None:
    """An output that is one of the run's own pictures would replace the original with the result: that
    takes --overwrite."""
    for role, path in _input_files(request):
        if same_file(request.output.path, path):
            raise OutputError(
                f"Output {request.output.path} is the {role} {path}: the result would replace it; "
                "choose another output file, or pass --overwrite to replace it."
            )


def _input_files(request: JobRequest) -> list[tuple[str, Path]]:
    images = [
        ("content image", request.content),
        *(("style image", style) for style in request.styles),
        *(("style mask", mask) for mask in request.masks or ()),
    ]
    named = [(role, image.path if isinstance(image, RawImage) else image) for role, image in images]
    if request.options.init not in (None, "content", "noise"):
        named.append(("--init image", Path(request.options.init)))
    return named


def write_output(array: np.ndarray, output: Output) -> Path:
    """Write through a temporary file beside the output, then rename: never a partial result."""
    path = output.path
    try:
        with atomic_path(path) as temporary:
            if output.raw_format is None:
                _save_image(array, temporary, image_format(path), output.bits)
            else:
                _save_raw(array, temporary, output.raw_format)
    except (OSError, ValueError) as exc:
        raise OutputError(f"Cannot write {path} ({exc}): choose another output path.") from None
    return path


def _save_image(array: np.ndarray, path: Path, fmt: str, bits: int = 8) -> None:
    from .images import to_pil

    if bits == 16:
        from .deep import encode

        path.write_bytes(encode(array, fmt))
        return
    image = to_pil(array)
    try:
        image.save(path, format=fmt)
    except (OSError, ValueError, KeyError):
        if image.mode not in ("LA", "RGBA"):
            raise
        image.convert(image.mode[:-1]).save(path, format=fmt)  # formats without alpha (JPEG)


def _save_raw(array: np.ndarray, path: Path, fmt: str) -> None:
    path.write_bytes(raw_bytes(array, fmt))


def raw_bytes(array: np.ndarray, fmt: str) -> bytes:
    """A result as a headerless buffer (the protocol's raw `u8` or `float32`)."""
    if fmt == "u8":
        data = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    else:
        data = array.astype(RAW_FORMATS[fmt])
    return np.ascontiguousarray(data).tobytes()


# -- cancellation: end of stdin, the parent's death, SIGTERM -------------------------------------------


class CancelWatcher:
    """A cancel token (`is_set()`) that watches the process's lifeline.

    The plug-in keeps a pipe on our stdin and never writes to it: end of file means it closed
    the run or died. A changed parent pid catches a parent that died while someone else holds
    the pipe. A run that does not stop within `grace` seconds is ended hard, so a cancelled
    job never keeps the GPU.
    """

    def __init__(
        self, on_abort: Callable[[], None] | None = None, grace: float = 3.0, poll: float = 0.25
    ) -> None:
        self._event = threading.Event()
        self._finished = threading.Event()
        self._on_abort = on_abort
        self._grace = grace
        self._poll = poll
        self._previous_sigterm: Any = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        if not self._event.is_set():
            self._event.set()
            threading.Thread(target=self._abort_later, name="nst-abort", daemon=True).start()

    def finish(self) -> None:
        """The run has ended (its last event is out): a late cancel must not kill the process."""
        self._finished.set()
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def start(self, watch_stdin: bool, watch_parent: bool = True) -> CancelWatcher:
        """Watch stdin's end and the parent's death where asked (a caller's lifeline), SIGTERM always."""
        if watch_stdin:
            threading.Thread(target=self._watch_stdin, name="nst-stdin", daemon=True).start()
        if watch_parent:
            threading.Thread(
                target=self._watch_parent, args=(os.getppid(),), name="nst-parent", daemon=True
            ).start()
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: self.set())
        return self

    def _watch_stdin(self) -> None:
        fd = sys.stdin.fileno()
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        self.set()

    def _watch_parent(self, parent: int) -> None:
        while not self._finished.wait(self._poll):
            if os.getppid() != parent:
                self.set()
                return

    def _abort_later(self) -> None:
        if self._finished.wait(self._grace):
            return
        if self._on_abort is not None:
            try:
                self._on_abort()
            except Exception:
                pass  # the reader may be gone: exit regardless
        remove_pending()
        os._exit(int(Cancelled.code))


def stdin_is_pipe() -> bool:
    """Watch stdin only where end of file means something: a pipe or socket, not a TTY or /dev/null."""
    import stat

    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
