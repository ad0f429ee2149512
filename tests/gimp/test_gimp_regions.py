"""The GIMP 3 plug-in in a real GIMP (both versions) with a layer of another image as the style, and with
regions: the selection or a saved channel as the region, two styles split by the selection. See
test_gimp_plugin.py for the set-up.
"""

from __future__ import annotations

import numpy as np
import pytest
from gimp_harness import ELLIPSE, case, pixels

pytestmark = pytest.mark.gimp


# -- a layer as the style, and regions -------------------------------------------------------------------


def new_layer(result: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """The one layer the call added (above Opaque): its description, its pixels and Opaque's."""
    assert result["status"] == "success", result["error"]
    names = [layer["name"] for layer in result["layers"]]
    assert len(names) == 2 and names[1] == "Opaque", names
    added = result["layers"][0]
    return added, pixels(added), pixels(result["layers"][1])


def test_a_layer_of_another_image_is_the_style_its_file_would_be(gimp: dict) -> None:
    """The same partly transparent pixels as a file and as a layer of another open image give the same
    result; a 16-bit copy of that image nearly the same (its pixels go over in float, converted by GIMP
    through premultiplied alpha, and a few steps of L-BFGS carry the last bits' difference on)."""
    by_file, file_pixels, _ = new_layer(case(gimp, "style_file_rgba"))
    by_layer, layer_pixels, _ = new_layer(case(gimp, "style_layer_rgba"))
    assert by_file["name"] == "Opaque (Neural Style: style-rgba)"
    assert by_layer["name"] == "Opaque (Neural Style: Brush strokes)"  # the style layer's name
    assert np.array_equal(layer_pixels, file_pixels)
    _, deep_pixels, _ = new_layer(case(gimp, "style_layer_deep"))
    deep_difference = np.abs(deep_pixels.astype(int) - file_pixels)
    print(
        f"16-bit style layer against its file: mean {deep_difference.mean():.3f}, max {deep_difference.max()}"
    )
    assert deep_difference.mean() < 0.5 and np.percentile(deep_difference, 99) <= 2
    _, other_style, _ = new_layer(case(gimp, "cold"))
    assert not np.array_equal(other_style, file_pixels)  # the style did make the difference
    assert case(gimp, "style_layer_rgba")["images"][0] == case(gimp, "style_layer_rgba")["images"][1]


def ellipse_weight(layer: dict) -> np.ndarray:
    """How far inside ELLIPSE each pixel of `layer` lies: 1 well inside, 0 well outside."""
    (x, y, w, h), _shape = ELLIPSE
    ox, oy = layer["offsets"]
    width, height = layer["size"]
    yy, xx = np.mgrid[0:height, 0:width]
    distance = ((xx + ox + 0.5 - (x + w / 2)) / (w / 2)) ** 2 + ((yy + oy + 0.5 - (y + h / 2)) / (h / 2)) ** 2
    return distance


def test_a_region_paints_inside_the_selection_and_keeps_the_picture_outside(gimp: dict) -> None:
    added, styled, source = new_layer(case(gimp, "region_inside"))
    source_layer = case(gimp, "region_inside")["layers"][1]
    # The whole layer, not the selection's box: the engine blended the edge, nothing was cut.
    assert added["size"] == source_layer["size"] and added["offsets"] == source_layer["offsets"]
    assert (styled[..., 3] == 255).all()
    change = np.abs(styled[..., :3].astype(int) - source[..., :3]).mean(axis=-1)
    distance = ellipse_weight(added)
    inside, outside = change[distance < 0.5].mean(), change[distance > 2.5].mean()
    print(f"region: mean change {inside:.1f} inside, {outside:.1f} far outside")
    assert inside > 3 and inside > 3 * outside


def test_a_channel_as_the_region_is_the_selection_it_was_saved_from(gimp: dict) -> None:
    _, from_selection, _ = new_layer(case(gimp, "region_inside"))
    _, from_channel, _ = new_layer(case(gimp, "region_channel"))
    # The same shares: the selection's linear coverage, the channel's grey as the Channels dialog shows it.
    assert np.array_equal(from_channel, from_selection)


def test_two_styles_split_by_the_selection(gimp: dict) -> None:
    added, styled, source = new_layer(case(gimp, "region_split"))
    assert added["name"] == "Opaque (Neural Style: style + style2)"
    assert added["size"] == [48, 32] and (styled[..., 3] == 255).all()
    change = np.abs(styled[..., :3].astype(int) - source[..., :3])
    assert change[:, :20].mean() > 2 and change[:, 28:].mean() > 2  # both halves styled
    _, inside_only, _ = new_layer(case(gimp, "region_inside"))
    assert not np.array_equal(styled, inside_only)
