"""The GIMP 2.10 plug-in watching the engine paint (On Cancel: keep the picture so far), on the stand-in
gimpfu against the scripted stand-in engine (tests/fake_engine.py): a snapshot at the working size (half
the width), then one at the layer's size, then the result.

GIMP's Cancel ends the plug-in at once; here an exception the plug-in does not catch (SystemExit) stands
for it, raised from the progress bar while the engine works.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from drive_plugin import load_plugin, new_image, plugin_args
from fake_engine import FAKE_ENGINE, install
from gimp2_harness import PLUGIN, call_names

WIDTH, HEIGHT, BPP = 4, 6, 4  # what the stand-in engine paints


@pytest.fixture
def painting_plugin(gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The plug-in against the stand-in engine, whose description lists snapshots and stop."""
    config = install(tmp_path, monkeypatch, FAKE_ENGINE) | {"engine": {"features": ["snapshots", "stop"]}}
    path = tmp_path / "nst_config.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.setenv("NST_PLUGIN_CONFIG", str(path))
    return load_plugin(str(PLUGIN))


def picture(source: bytes, k: int) -> bytes:
    """The stand-in engine's picture after iteration k."""
    return bytes((255 - b + k) % 256 for b in source)


def doubled_left_half(data: bytes) -> bytes:
    """The left half of each row, each pixel twice: the working-size snapshot shown at the layer's size."""
    rows = [data[start : start + WIDTH * BPP] for start in range(0, len(data), WIDTH * BPP)]
    return b"".join(b"".join(row[p * BPP : (p + 1) * BPP] * 2 for p in range(WIDTH // 2)) for row in rows)


def test_the_layer_forms_at_each_snapshot_in_the_run_s_undo_group(
    painting_plugin, gimpfu, monkeypatch, style_file
) -> None:
    image, layer = new_image(gimpfu, WIDTH, HEIGHT, gimpfu.RGBA_IMAGE, name="Portrait")
    source = bytes(layer.pixels)
    shown: list[tuple] = []
    monkeypatch.setattr(
        gimpfu.Gimp, "displays_flush", lambda self: shown.append(tuple(bytes(i.pixels) for i in image.layers))
    )
    painting_plugin.neural_style(image, layer, *plugin_args(style_file, keep_on_cancel=True))

    assert gimpfu.messages == []
    assert [top for top, _source in shown] == [doubled_left_half(picture(source, 1)), picture(source, 2)]
    assert all(below == source for _top, below in shown)
    assert len(image.layers) == 2 and bytes(image.layers[0].pixels) == bytes(255 - b for b in source)
    names = call_names(gimpfu)
    assert names.count("gimp_image_insert_layer") == 1 and image.open_undo_groups == 0
    assert names.index("gimp_image_undo_group_start") < names.index("gimp_image_insert_layer")
    assert names.index("gimp_image_undo_group_end") == len(names) - 1  # one step: Undo removes it all


@pytest.mark.parametrize("keep", [True, False])
def test_cancel_keeps_the_picture_so_far_only_when_asked(
    painting_plugin, gimpfu, monkeypatch, style_file, keep
) -> None:
    image, layer = new_image(gimpfu, WIDTH, HEIGHT, gimpfu.RGBA_IMAGE, name="Portrait")
    source = bytes(layer.pixels)
    updates: list[float] = []

    def cancel_on_the_third_update(self, fraction: float) -> None:
        updates.append(fraction)
        if len(updates) == 3:  # the second progress event: the first snapshot is on the canvas
            raise SystemExit(0)

    monkeypatch.setattr(gimpfu.Gimp, "progress_update", cancel_on_the_third_update)
    with pytest.raises(SystemExit):
        painting_plugin.neural_style(image, layer, *plugin_args(style_file, keep_on_cancel=keep))
    kept = [bytes(item.pixels) for item in image.layers[:-1]]
    assert kept == ([doubled_left_half(picture(source, 1))] if keep else [])
    assert bytes(image.layers[-1].pixels) == source
