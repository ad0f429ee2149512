"""Where a result goes and how it is written: checked before the long run, written atomically (a
temporary file beside it, then one rename: never half a picture), as an image file or the protocol's
raw buffer (docs/protocol.md). Batches, the cluster's driver and the command line's `--server` write
through here too.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import OutputError
from .images import to_pil
from .paths import atomic_path
from .validate import RAW_FORMATS


@dataclass(frozen=True)
class Output:
    path: Path
    raw_format: str | None = None  # None: an image file in the format its suffix names


def image_format(path: Path) -> str:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise OutputError(
            f"Cannot write {path}: unknown image format '{path.suffix}'; use .png, .jpg, .tif or .webp."
        )
    return fmt


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
                _save_image(array, temporary, image_format(path))
            else:
                _save_raw(array, temporary, output.raw_format)
    except (OSError, ValueError) as exc:
        raise OutputError(f"Cannot write {path} ({exc}): choose another output path.") from None
    return path


def _save_image(array: np.ndarray, path: Path, fmt: str) -> None:
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
