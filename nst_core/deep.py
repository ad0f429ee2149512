"""Pictures with 16 bits per channel: telling them from their header, and writing results as 16-bit
PNG or TIFF files, which Pillow can write only in gray.

The engine works in float32 throughout, so a result written with 8 bits would throw away what a
16-bit content brought; PNG and TIFF keep it, other formats get a note (`job.keep_depth`).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

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
