"""Where a result goes and how it is written: checked before the long run, written atomically (a
temporary file beside it, then one rename: never half a picture), as an image file or the protocol's
raw buffer (docs/protocol.md). Batches, the cluster's driver and the command line's `--server` write
through here too.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import OutputError
from .events import note
from .images import to_pil
from .paths import atomic_path
from .validate import RAW_FORMATS


@dataclass(frozen=True)
class Output:
    path: Path
    raw_format: str | None = None  # None: an image file in the format its suffix names
    bits: int = 8  # per channel in an image file; 16 for a deep content in PNG or TIFF (`keep_depth`)


def image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(
            f"Cannot write {path}: unknown image format '{path.suffix}'; use .png, .jpg, .tif or .webp."
        )
    return fmt


def keep_depth(content: object, output: Output) -> Output:
    """`output` with 16 bits per channel when the content file has them and the output's format holds
    them (PNG, TIFF); where it cannot, a note says so before the run."""
    output, lost = deep_output(content, output)
    if lost and isinstance(content, Path):
        note(
            f"{content.name} has 16 bits per channel but {output.path.suffix} holds 8: the result is saved "
            "with 8 bits; name a .png or .tif output to keep 16."
        )
    return output


def deep_output(content: object, output: Output) -> tuple[Output, bool]:
    """`output` with 16 bits where the content file has them and its format holds them, and whether
    16 bits of the content are lost to an 8-bit format. A content that is no file (raw pixels) has 8."""
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
    if bits == 16:
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
        data = array.astype(RAW_FORMATS[fmt].dtype)
    return np.ascontiguousarray(data).tobytes()


# -- 16 bits per channel: told from a file's header, written as PNG or TIFF (Pillow writes 16 bits only
# in gray) --------------------------------------------------------------------------------------------

DEEP_FORMATS = ("PNG", "TIFF")  # Pillow's names of the formats written here with 16 bits
_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray + alpha, RGB, RGBA


def high_bit_depth(path: Path) -> bool:
    """Whether an image file holds more than 8 bits per channel, from its header (False when it cannot
    be read: reading it says why)."""
    try:
        with Image.open(path) as image:
            # Pillow opens a 16-bit RGB file as 8-bit RGB; its tile's raw mode ('RGB;16B') tells.
            args = image.tile[0][3] if image.tile else None
            mode = image.mode
    except Exception:  # any failure to read is reported by the load that follows
        return False
    raw = args[0] if isinstance(args, tuple) and args else args
    return mode in _DEEP_MODES or (isinstance(raw, str) and ";16" in raw)


def encode(array: np.ndarray, fmt: str) -> bytes:
    """An H x W x C array in [0, 1] as the bytes of a 16-bit `fmt` file (one of DEEP_FORMATS)."""
    values = (np.clip(array, 0.0, 1.0) * 65535.0).round().astype(np.uint16)
    return _png(values) if fmt == "PNG" else _tiff(values)


def _png(values: np.ndarray) -> bytes:
    height, width, channels = values.shape
    rows = values.astype(">u2").reshape(height, -1).view(np.uint8)
    filtered = rows.copy()
    filtered[1:] -= rows[:-1]  # PNG's Up filter (bytes wrap around): smooth pictures compress better
    lines = np.concatenate([np.full((height, 1), 2, np.uint8), filtered], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    chunks = [(b"IHDR", header), (b"IDAT", zlib.compress(lines.tobytes(), 6)), (b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(_png_chunk(kind, data) for kind, data in chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _tiff(values: np.ndarray) -> bytes:
    """Baseline TIFF, little-endian, one uncompressed strip; alpha marked as unassociated."""
    if values.shape[2] == 2:  # gray + alpha: a layout Pillow does not read back in TIFF, RGBA it does
        values = values[..., [0, 0, 0, 1]]
    height, width, channels = values.shape
    pixels = values.astype("<u2").tobytes()
    bits_at = 8 + len(pixels)  # BitsPerSample's values, when they do not fit in their entry
    bits = struct.pack(f"<{channels}H", *([16] * channels))
    ifd_at = bits_at + (len(bits) if channels > 2 else 0)
    short, long = 3, 4
    entries = [
        (256, long, 1, width),
        (257, long, 1, height),
        (258, short, channels, bits_at if channels > 2 else bits.ljust(4, b"\0")),
        (259, short, 1, 1),  # no compression
        (262, short, 1, 2 if channels > 1 else 1),  # RGB, or gray with black at 0
        (273, long, 1, 8),  # the strip starts after the header
        (277, short, 1, channels),
        (278, long, 1, height),
        (279, long, 1, len(pixels)),
        (284, short, 1, 1),  # channels interleaved
    ]
    if channels == 4:
        entries.append((338, short, 1, 2))  # the last channel is alpha, not premultiplied
    ifd = struct.pack("<H", len(entries)) + b"".join(_tiff_entry(*e) for e in entries) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + pixels + (bits if channels > 2 else b"") + ifd


def _tiff_entry(tag: int, kind: int, count: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        field = value
    elif kind == 3 and count == 1:
        field = struct.pack("<HH", value, 0)
    else:
        field = struct.pack("<I", value)
    return struct.pack("<HHI", tag, kind, count) + field
