"""Loading, converting, resizing and alpha handling of images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nst_core import images
from nst_core.errors import ImageError


def test_missing_corrupt_and_truncated_files(tmp_path: Path, content_png: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.png does not exist"):
        images.load_image(tmp_path / "nope.png")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=r"garbage\.png cannot be read.*PNG or JPEG"):
        images.load_image(garbage)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(content_png.read_bytes()[:200])
    with pytest.raises(ImageError, match=r"truncated\.png"):
        images.load_image(truncated)


def test_empty_and_malformed_arrays() -> None:
    with pytest.raises(ImageError, match="empty"):
        images.to_array(np.zeros((0, 3, 3), np.float32))
    with pytest.raises(ImageError, match="1 to 4 channels"):
        images.to_array(np.zeros((2, 2, 5), np.float32))
    with pytest.raises(ImageError, match="NaN"):
        images.to_array(np.full((2, 2, 3), np.nan, np.float32))
    with pytest.raises(ImageError, match="int64"):
        images.to_array(np.zeros((2, 2, 3), np.int64))


@pytest.mark.parametrize(
    ("mode", "channels"), [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4), ("P", 3), ("CMYK", 3)]
)
def test_modes_keep_their_channels(tmp_path: Path, mode: str, channels: int) -> None:
    path = tmp_path / ("image.jpg" if mode == "CMYK" else "image.png")
    Image.new(mode, (5, 3)).save(path)
    array = images.load_image(path)
    assert array.shape == (3, 5, channels) and array.dtype == np.float32


def test_sixteen_bit_png_keeps_its_precision(tmp_path: Path) -> None:
    values = (np.arange(12, dtype=np.uint16) * 5001 + 7).reshape(3, 4)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    array = images.load_image(path)
    np.testing.assert_allclose(array[..., 0], values / 65535.0, atol=1e-7)


def test_numpy_types() -> None:
    u8 = np.full((2, 2, 3), 255, np.uint8)
    u16 = np.full((2, 2), 65535, np.uint16)
    assert images.to_array(u8).max() == 1.0
    assert images.to_array(u16).shape == (2, 2, 1)


def test_resize_and_fit_size() -> None:
    assert images.fit_size(400, 300, 128) == (128, 96)
    assert images.fit_size(1000, 10, 64, min_side=16) == (64, 16)
    stripes = np.zeros((64, 64, 3), np.float32)
    stripes[:, ::2] = 1.0
    small = images.resize(stripes, 16, 16)
    assert small.shape == (16, 16, 3)
    assert np.abs(small - 0.5).max() < 0.05  # antialiased: the stripes average out, no aliasing


def test_tensor_round_trip_and_resize_tensor() -> None:
    array = np.random.default_rng(0).random((6, 8, 3), dtype=np.float32)
    tensor = images.to_tensor(array)
    assert tensor.shape == (1, 3, 6, 8) and tensor.is_contiguous()
    np.testing.assert_array_equal(images.from_tensor(tensor), array)
    small = images.resize_tensor(tensor, (3, 4))
    assert small.shape == (1, 3, 3, 4) and 0 <= small.min() and small.max() <= 1
    assert torch.equal(images.resize_tensor(tensor, (6, 8)), tensor)


def test_split_and_merge_alpha() -> None:
    gray_alpha = np.random.default_rng(1).random((4, 5, 2), dtype=np.float32)
    rgb, alpha = images.split_alpha(gray_alpha)
    assert rgb.shape == (4, 5, 3) and np.array_equal(alpha, gray_alpha[..., 1])
    merged = images.merge_alpha(rgb, alpha, 2)
    np.testing.assert_allclose(merged, gray_alpha, atol=1e-6)
    rgb_only, none = images.split_alpha(rgb)
    assert none is None and images.merge_alpha(rgb_only, None, 3).shape == (4, 5, 3)


def test_fill_transparent_uses_visible_neighbours() -> None:
    rgb = np.zeros((8, 8, 3), np.float32)
    rgb[:, :4] = (0.2, 0.4, 0.6)
    rgb[:, 4:] = (1.0, 0.0, 1.0)  # garbage under the transparent half
    alpha = np.ones((8, 8), np.float32)
    alpha[:, 4:] = 0.0
    filled = images.fill_transparent(rgb, alpha)
    np.testing.assert_array_equal(filled[:, :4], rgb[:, :4])
    np.testing.assert_allclose(filled[:, 4:], np.broadcast_to((0.2, 0.4, 0.6), (8, 4, 3)), atol=1e-6)
    assert np.array_equal(images.fill_transparent(rgb, np.ones((8, 8), np.float32)), rgb)
