"""Reads the uncompressed 8-bit TIFF files `batch --frames` writes for animation frames (the results the
bridge's FramesRun hands to the plug-ins), with the standard library only: shared by both plug-ins, so
Python 2.7 and 3.
"""

# ruff: noqa: UP004, UP008, UP010, UP020, UP024, UP025, UP031, UP032, B904
# (Python 2.7 needs the old spellings those rules would modernise, and has no `raise ... from`.)
from __future__ import absolute_import, division, print_function, unicode_literals

import struct

TIFF_BYTE_ORDERS = {b"II": "<", b"MM": ">"}
TIFF_TYPES = {1: "B", 3: "H", 4: "I"}  # BYTE, SHORT, LONG: all that an uncompressed 8-bit file needs
TIFF_WIDTH, TIFF_HEIGHT, TIFF_BITS, TIFF_COMPRESSION = 256, 257, 258, 259
TIFF_STRIP_OFFSETS, TIFF_SAMPLES, TIFF_STRIP_BYTES, TIFF_PLANAR = 273, 277, 279, 284


def read_tiff(blob):
    # type: (bytes) -> tuple
    """(pixels, width, height, channels) of an uncompressed 8-bit TIFF, as Pillow writes the engine's
    results: its strips are the rows, so reading them is a copy (a PNG would need unfiltering in Python,
    seconds a frame). ValueError for anything else."""
    order = TIFF_BYTE_ORDERS.get(bytes(blob[:2]))
    if order is None or len(blob) < 8 or struct.unpack(order + "H", blob[2:4])[0] != 42:
        raise ValueError("not a TIFF file")
    tags = _tiff_tags(blob, order, struct.unpack(order + "I", blob[4:8])[0])
    width, height = tags[TIFF_WIDTH][0], tags[TIFF_HEIGHT][0]
    channels = tags.get(TIFF_SAMPLES, (1,))[0]
    if (
        tags.get(TIFF_COMPRESSION, (1,))[0] != 1
        or tags.get(TIFF_PLANAR, (1,))[0] != 1
        or set(tags.get(TIFF_BITS, (1,))) != set([8])
    ):
        raise ValueError("not an uncompressed 8-bit TIFF")
    size = width * height * channels
    data = b"".join(
        bytes(blob[start : start + count])
        for start, count in zip(tags[TIFF_STRIP_OFFSETS], tags[TIFF_STRIP_BYTES])  # noqa: B905 (2.7: no strict)
    )
    if width < 1 or height < 1 or not 1 <= channels <= 4 or len(data) < size:
        raise ValueError("a TIFF of %dx%d x %d holds %d bytes" % (width, height, channels, len(data)))
    return data[:size], width, height, channels


def _tiff_tags(blob, order, offset):
    # type: (bytes, str, int) -> dict
    """{tag: values} of the first image's directory; tags of other types are left out."""
    try:
        count = struct.unpack(order + "H", blob[offset : offset + 2])[0]
        tags = {}
        for index in range(count):
            start = offset + 2 + 12 * index
            tag, kind, number, value = struct.unpack(order + "HHI4s", blob[start : start + 12])
            if kind not in TIFF_TYPES:
                continue
            length = struct.calcsize(order + TIFF_TYPES[kind] * number)
            if length > 4:
                where = struct.unpack(order + "I", value)[0]
                value = blob[where : where + length]
            tags[tag] = struct.unpack(order + TIFF_TYPES[kind] * number, value[:length])
    except struct.error as exc:
        raise ValueError("a cut TIFF directory (%s)" % exc)
    missing = [
        tag for tag in (TIFF_WIDTH, TIFF_HEIGHT, TIFF_STRIP_OFFSETS, TIFF_STRIP_BYTES) if tag not in tags
    ]
    if missing:
        raise ValueError("a TIFF directory without tag %s" % missing[0])
    return tags
