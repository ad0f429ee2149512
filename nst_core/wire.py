"""The engine service's wire format (docs/protocol.md, "The engine service"): a job travels as one
request body, a JSON header line followed by the images' bytes, and comes back as JSON event lines
followed by the result's bytes.

Nothing in a request names a file on the server, and every size is checked against the server's
limits from the header alone, before a byte of pixels is read or decoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from . import validate
from .errors import DeviceError, UsageError
from .events import PROTOCOL_VERSION
from .options import DEVICES, STARTS, Options
from .readable import mebibytes

API = "/v1"  # the path prefix: a later, incompatible protocol gets /v2 beside it
CONTENT_TYPE = "application/x-nst-job"
EVENTS_TYPE = "application/x-ndjson"
HEADER_LIMIT = 64 * 1024  # the JSON header line; options and sizes need a few hundred bytes
HEADER_KEYS = ("version", "content", "styles", "options", "result", "frames", "snapshot_every", "preview")
RESULT_SIZES = ("content", "working")
# Options that would name a file on the server, or a device it was not started for: the server decides.
SERVER_OPTIONS = ("weights",)


@dataclass(frozen=True)
class Limits:
    """What one request may carry; the defaults fit a 100-megapixel photo in float32 RGBA."""

    max_request_bytes: int = 2 * 1024**3
    max_pixels: int = 100_000_000
    max_styles: int = 8
    upload_timeout: float = 60.0  # seconds an upload may send nothing (a body shorter than it said)
    max_frames: int = 10_000  # an animation's frames in one request, the content the first of them


@dataclass(frozen=True)
class Part:
    """One image of a request: its byte count and, for raw pixels, their layout (else an image file)."""

    size: int
    width: int = 0
    height: int = 0
    format: str = ""
    channels: int = 0

    @property
    def raw(self) -> bool:
        return self.channels > 0


@dataclass(frozen=True)
class WireJob:
    content: Part
    styles: tuple[Part, ...]
    weights: tuple[float, ...]
    options: Options
    result_format: str
    result_size: Literal["content", "working"]
    masks: tuple[Part, ...] | None = None  # one per style, after the styles in the body
    # An animation (`frames`): the frames after the content, in order, after everything else in the body.
    frames: tuple[Part, ...] | None = None
    snapshot_every: float | None = None  # seconds of work between snapshots streamed back; None: none
    preview: bool = False  # a dialog's preview: may start from the last one of the picture (previews.py)

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.content, *self.styles, *(self.masks or ()), *(self.frames or ()))

    @property
    def body_bytes(self) -> int:
        return sum(part.size for part in self.parts)


def bad_request(problem: str) -> UsageError:
    return UsageError(f"Bad service request: {problem} (see docs/protocol.md).")


def _require(condition: bool, problem: str) -> None:
    if not condition:
        raise bad_request(problem)


def parse_header(line: bytes, limits: Limits, devices: tuple[str, ...]) -> WireJob:
    """Check a request's header line against the protocol and `limits`; `devices` are the device
    types the server runs (a job may ask for one of them, or `auto`)."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: nested too deep
        raise bad_request(f"the header line is not JSON ({exc})") from None
    _require(isinstance(data, dict), "the header must be a JSON object")
    if data.get("version") != PROTOCOL_VERSION:
        raise UsageError(
            f"Service protocol version {data.get('version')!r} is not supported: this server speaks "
            f"version {PROTOCOL_VERSION}; update the client and the server together (run install.py)."
        )
    unknown = sorted(set(data) - set(HEADER_KEYS))
    _require(not unknown, f"unknown key(s) {', '.join(unknown)}; use {', '.join(HEADER_KEYS)}")
    styles = data.get("styles")
    _require(isinstance(styles, list) and styles, "`styles` must be a non-empty list")
    _require(len(styles) <= limits.max_styles, f"{len(styles)} styles; this server takes {limits.max_styles}")
    content = _part(data.get("content"), "content", limits)
    style_parts = tuple(_part(style, f"style {i + 1}", limits) for i, style in enumerate(styles))
    weights = tuple(validate.style_weight(style, _require) for style in styles)
    masks = tuple(style.get("mask") for style in styles)
    mask_parts = None
    if validate.check_masks(masks, _require):
        mask_parts = tuple(_part(mask, f"style {i + 1}'s mask", limits, ()) for i, mask in enumerate(masks))
    options = validate.with_style_weights(_options(data.get("options", {}), devices), weights)
    result = data.get("result", {})
    _require(isinstance(result, dict), "`result` must be an object")
    fmt, size = result.get("format", "u8"), result.get("size", "content")
    _require(validate.is_raw_format(fmt), f"result `format` is {fmt!r}; use u8 or float32")
    _require(size in RESULT_SIZES, f"result `size` is {size!r}; use content or working")
    frames = _frames(data.get("frames"), mask_parts is not None, size, limits)
    every = data.get("snapshot_every")
    if every is not None:
        every = validate.snapshot_every(every, "`snapshot_every`", _require)
        # A snapshot is one picture so far; an animation's frames each come back whole in its result.
        _require(frames is None, "an animation's frames take no `snapshot_every`; leave it out with `frames`")
    preview = data.get("preview", False)
    _require(isinstance(preview, bool), f"`preview` is {preview!r}; use true or false")
    _require(not (preview and frames), "an animation's frames take no `preview`; leave it out with `frames`")
    job = WireJob(content, style_parts, weights, options, fmt, size, mask_parts, frames, every, preview)
    if job.body_bytes + len(line) + 1 > limits.max_request_bytes:
        raise too_large(job.body_bytes + len(line) + 1, limits)
    return job


def _frames(entries: Any, masked: bool, size: str, limits: Limits) -> tuple[Part, ...] | None:
    """An animation's later frames (None: a single picture), each an image like the content."""
    if entries is None:
        return None
    _require(isinstance(entries, list) and entries, "`frames` must be a non-empty list of the later frames")
    _require(
        len(entries) < limits.max_frames, f"{len(entries) + 1} frames; this server takes {limits.max_frames}"
    )
    _require(not masked, "an animation's frames take no style masks; send the styles without them")
    _require(
        size == "working",
        "an animation's frames come back at the working size: ask for result `size` working",
    )
    return tuple(_part(entry, f"frame {i + 2}", limits, ()) for i, entry in enumerate(entries))


def too_large(size: int, limits: Limits) -> UsageError:
    return UsageError(
        f"The request has {mebibytes(size)}, more than this server's limit of "
        f"{mebibytes(limits.max_request_bytes)}: "
        "send a smaller image, or start the server with a larger --max-request-mb."
    )


def _part(entry: Any, name: str, limits: Limits, extra: tuple[str, ...] = ("weight", "mask")) -> Part:
    """An image's entry: `bytes`, `raw` for raw pixels, and the `extra` keys its place allows."""
    _require(isinstance(entry, dict), f"{name} must be an object with `bytes`")
    _require("path" not in entry, f"{name} names a file; send its bytes instead")
    unknown = sorted(set(entry) - {"bytes", "raw", *extra})
    _require(not unknown, f"{name} has unknown key(s) {', '.join(unknown)}")
    size = entry.get("bytes")
    _require(validate.is_whole(size) and size > 0, f"{name} needs a positive whole `bytes`")
    raw = entry.get("raw")
    if raw is None:
        return Part(size)
    _require(isinstance(raw, dict), f"{name}'s `raw` must be an object")
    width, height, channels, fmt = raw.get("width"), raw.get("height"), raw.get("channels"), raw.get("format")
    validate.check_raw_layout(width, height, channels, fmt, f"{name}'s raw", _require)
    if width * height > limits.max_pixels:
        from .images import too_many_pixels

        raise UsageError(too_many_pixels(name, width, height, limits.max_pixels))
    expected = validate.raw_size(width, height, channels, fmt)
    _require(size == expected, f"{name} has {size} bytes but {width}x{height}x{channels} {fmt} is {expected}")
    return Part(size, width, height, fmt, channels)


def _options(data: Any, devices: tuple[str, ...]) -> Options:
    _require(isinstance(data, dict), "`options` must be an object")
    named = sorted(set(data) & set(SERVER_OPTIONS))
    _require(not named, f"option(s) {', '.join(named)} name files on the server, which uses its own")
    options = Options.from_dict(data)
    if options.init not in (None, *STARTS):
        raise bad_request(f"`init` names a file; a service job starts from {', '.join(STARTS)}")
    if options.device != "auto" and options.device not in devices:
        raise DeviceError(
            f"This server runs on {', '.join(devices)}, not {options.device}: choose its device or auto."
        )
    return options


def decode_parts(job: WireJob, body: bytes, max_pixels: int) -> tuple[Any, list[Any], list[Any] | None]:
    """The content, style and mask arrays (None: no masks) from the bytes after the header (their sizes
    already checked)."""
    arrays, offset = [], 0
    styles = len(job.styles)
    for index, part in enumerate((job.content, *job.styles, *(job.masks or ()))):
        name = "content" if index == 0 else f"style {index}" if index <= styles else f"mask {index - styles}"
        arrays.append(_decoded(part, body[offset : offset + part.size], name, max_pixels))
        offset += part.size
    styles_end = 1 + styles
    return arrays[0], arrays[1:styles_end], None if job.masks is None else arrays[styles_end:]


def decode_frames(job: WireJob, body: bytes, max_pixels: int) -> list[Any] | None:
    """An animation's later frames as arrays (None: a single picture); they end the body."""
    if job.frames is None:
        return None
    offset = job.body_bytes - sum(part.size for part in job.frames)
    arrays = []
    for index, part in enumerate(job.frames):
        arrays.append(_decoded(part, body[offset : offset + part.size], f"frame {index + 2}", max_pixels))
        offset += part.size
    return arrays


def _decoded(part: Part, data: bytes, name: str, max_pixels: int) -> Any:
    import numpy as np

    from .images import decode_image, to_array

    if part.raw:
        array = np.frombuffer(data, dtype=validate.RAW_FORMATS[part.format].dtype)
        return to_array(array.reshape(part.height, part.width, part.channels), name=name)
    return decode_image(data, name, max_pixels)


# -- the client's side: the command line's `--server` ------------------------------------------------


def request_body(
    content: tuple[bytes, dict | None],
    styles: list[tuple[bytes, float]],
    options: dict[str, Any],
    result_format: str = "float32",
    result_size: str = "content",
    masks: list[bytes] | None = None,
) -> bytes:
    """A request body: `content` is (bytes, raw layout or None for an image file), `styles` are image
    files' bytes with their blend weights, `masks` image files' bytes, one per style."""
    data, layout = content
    entries: list[dict[str, Any]] = [{"bytes": len(style), "weight": weight} for style, weight in styles]
    for entry, mask in zip(entries, masks or (), strict=masks is not None):
        entry["mask"] = {"bytes": len(mask)}
    header = {
        "version": PROTOCOL_VERSION,
        "content": {"bytes": len(data), **({"raw": layout} if layout else {})},
        "styles": entries,
        "options": options,
        "result": {"format": result_format, "size": result_size},
    }
    images = [data, *(style for style, _ in styles), *(masks or ())]
    return b"".join([json.dumps(header).encode("utf-8"), b"\n", *images])


def device_types(devices: list[str]) -> tuple[str, ...]:
    """`cuda:1` -> `cuda`: what a job's `device` option may name."""
    return tuple(sorted({name.split(":")[0] for name in devices} & set(DEVICES)))
