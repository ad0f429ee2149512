"""The rules a job file (job.py) and a service request (wire.py) share, written once: raw pixel layouts
and their formats, a style's blend weight, masks for every style or none, and the options checked
against the styles (docs/protocol.md).

Torch-free and numpy-free: a request is refused from its JSON alone, before a byte of pixels is read.
Each check takes the caller's `require`, which words the refusal as its protocol does ("Bad job file:
...", "Bad service request: ...").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

from .options import SNAPSHOT_EVERY_LIMITS, Options, check_options

# require(condition, problem): raises the caller's one-line usage error naming `problem` unless `condition`.
Require = Callable[[bool, str], None]


class RawFormat(NamedTuple):
    dtype: str  # numpy's name for one value: unsigned bytes, little-endian float32
    itemsize: int  # bytes per value


# A raw buffer's values: 0..255, or 0..1 as GIMP's "R'G'B'A float" layers hold them.
RAW_FORMATS = {"u8": RawFormat("u1", 1), "float32": RawFormat("<f4", 4)}
MAX_CHANNELS = 4  # gray, gray + alpha, RGB, RGBA


def is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_raw_format(value: Any) -> bool:
    return isinstance(value, str) and value in RAW_FORMATS  # a list is not hashable: no TypeError


def check_raw_layout(width: Any, height: Any, channels: Any, fmt: Any, name: str, require: Require) -> None:
    """A raw buffer's layout: positive whole sizes, 1 to 4 channels, a known format. `name` is the
    subject of the messages ("raw `content`", "style 1's raw")."""
    require(
        all(is_whole(v) and v > 0 for v in (width, height, channels)),
        f"{name} needs positive whole `width`, `height` and `channels`",
    )
    require(channels <= MAX_CHANNELS, f"{name} `channels` is {channels}; use 1 to {MAX_CHANNELS}")
    require(is_raw_format(fmt), f"{name} `format` is {fmt!r}; use {' or '.join(RAW_FORMATS)}")


def raw_size(width: int, height: int, channels: int, fmt: str) -> int:
    """The bytes of a raw buffer of this layout (checked by `check_raw_layout`)."""
    return width * height * channels * RAW_FORMATS[fmt].itemsize


def style_weight(entry: dict[str, Any], require: Require) -> float:
    """A style entry's blend `weight` (1 when absent)."""
    weight = entry.get("weight", 1.0)
    require(
        isinstance(weight, (int, float)) and not isinstance(weight, bool), "a style `weight` must be a number"
    )
    return float(weight)


def snapshot_every(value: Any, name: str, require: Require) -> float:
    """Seconds of work between snapshots (`name`: where the request gives them), within their limits."""
    low, high = SNAPSHOT_EVERY_LIMITS
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    require(number and low <= value <= high, f"{name} is {value!r}; use seconds from {low:g} to {high:g}")
    return float(value)


def check_masks(masks: Sequence[object | None], require: Require) -> bool:
    """Every style has a mask or none has; whether they have them."""
    require(
        all(m is None for m in masks) or None not in masks,
        "give every style a `mask` or none (a style without one would have no region)",
    )
    return bool(masks) and masks[0] is not None


def with_style_weights(options: Options, weights: Sequence[float]) -> Options:
    """`options` with the styles' own weights as the blend when it names none, checked for that many
    styles (options.check_options: numbers, choices, one blend weight per style)."""
    if options.style_blend is None:
        options = replace(options, style_blend=list(weights))
    check_options(options, len(weights))
    return options
