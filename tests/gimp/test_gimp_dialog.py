"""The GIMP 3 plug-in's dialog in GUI GIMP on a virtual display (both GIMP versions): its time estimate
and preview follow the settings, and closing it stops the preview. See test_gimp_plugin.py for the set-up.
"""

from __future__ import annotations

import json
import re

import pytest
from gimp_harness import Chroot, run_gui
from samples import make_content_image, make_style_image

pytestmark = pytest.mark.gimp


# -- the dialog, in GUI GIMP on a virtual display ----------------------------------------------------------

ESTIMATE = re.compile(r"^neural-style estimate: (About \d+ (?:s|min) on the CPU at (\d+)×(\d+) px.*)$", re.M)


@pytest.fixture(scope="module")
def dialog(gimp: dict, chroot: Chroot) -> dict:
    """The plug-in's dialog opened INTERACTIVE (screenshot_dialog_inside.sh), the working size typed into
    it: GIMP's log, with the estimate lines the plug-in prints under NST_DEBUG=1."""
    work = gimp["work"] / "dialog"
    work.mkdir()
    make_content_image(300, 200).save(work / "before.png")
    make_style_image().save(work / "style.png")
    # No style file: as on first use, the dialog shows the default painting, and OK would run with it.
    (work / "dialog_args.json").write_text(
        json.dumps({"preset": "fast", "device": "cpu", "style-file": None})
    )
    ran = run_gui(gimp, chroot, work, "screenshot_dialog_inside.sh", "96", env=("PREVIEW=1",))
    return {
        **ran,
        "work": work,
        "version": gimp["version"],
    }


def test_dialog_shows_the_time_estimate_and_refreshes_it(dialog: dict) -> None:
    log = dialog["log"]
    estimates = ESTIMATE.findall(log)
    assert len(estimates) == 2, log[-3000:]
    (first, *_), (second, width, height) = estimates
    assert "no time estimate appeared" not in dialog["stderr"]
    assert log.index("neural-style estimate: Estimating the time") < log.index(first)
    # Typed into the dialog: working size 96 for the 300 x 200 layer.
    assert (width, height) == ("96", "64")
    assert second.endswith("(the layer is 300×200 px; the result is scaled up to it)")
    assert "dialog closed: cancel" in dialog["stdout"]
    assert (dialog["work"] / "dialog.png").stat().st_size > 0
    assert (dialog["work"] / "dialog-size.png").stat().st_size > 0


PREVIEW_SHOWN = re.compile(r"^neural-style preview: Preview at (\d+)×(\d+) px", re.M)


def test_the_dialog_previews_the_settings_and_stops_the_preview_when_closed(dialog: dict) -> None:
    """Preview pressed twice (the first starts the engine service, the second uses it), again after the
    strength changed (it follows the last preview), and once more just before Cancel: the dialog closes
    at once, the preview's engine job and folder go with it."""
    assert "no preview appeared" not in dialog["stderr"], dialog["log"][-3000:]
    times = dict(line.split() for line in (dialog["work"] / "preview-times.txt").read_text().splitlines())
    shown = PREVIEW_SHOWN.findall(dialog["log"])
    assert shown[:3] == [("256", "171")] * 3  # the 300 x 200 layer, shrunk to 256 px
    assert set(times) >= {"cold", "warm", "stronger"}
    assert "neural-style preview: Preview: settings changed" in dialog["log"]  # the typed strength
    assert "neural-style preview: Preview: starting the engine" in dialog["log"]
    assert re.search(r"^neural-style preview: Preview: scale \d/\d, iteration \d+/\d+, ", dialog["log"], re.M)
    assert float(times["close"]) < 15 and times["left"] == "0"
    assert "dialog closed: cancel" in dialog["stdout"]
    assert (dialog["work"] / "dialog-preview.png").stat().st_size > 0
    print(
        f"GIMP {dialog['version']} preview: first {times['cold']} s, again {times['warm']} s, "
        f"stronger {times['stronger']} s, closed in flight in {times['close']} s"
    )


LAYOUT = re.compile(r"^neural-style dialog: (\{.*\})$", re.M)


def test_the_dialog_groups_its_rows_and_keeps_advanced_closed(dialog: dict) -> None:
    """Opened with no style given, as on first use: the Style group shows the default painting's row, not
    the file's or the layer's, nor the second style's rows while it has none."""
    layout = json.loads(LAYOUT.findall(dialog["log"])[0])
    assert layout == {
        "style": ["style-source", "style-painting", "style2-source"],
        "where": ["region"],
        "look": ["preset", "strength", "keep-colors", "style-scale"],
        "advanced": ["size", "iterations", "seed", "device", "frames", "keep-on-cancel"],
        "advanced-open": False,
    }


def test_the_dialog_fits_a_laptop_screen_with_advanced_open(dialog: dict) -> None:
    """1366 x 768, less a panel's 40 pixels, with Advanced closed and open (the working size typed in)."""
    sizes = {
        state: (int(width), int(height))
        for state, width, height in (line.split() for line in (dialog["work"] / "dialog-geometry.txt").open())
    }
    assert set(sizes) == {"closed", "open"}
    assert sizes["open"][1] > sizes["closed"][1]
    for width, height in sizes.values():
        assert width <= 1366 and height <= 768 - 40, sizes
    print(f"GIMP {dialog['version']} dialog: {sizes}")


def test_a_bundled_painting_is_the_style_of_the_preview_and_of_a_run(dialog: dict, gimp: dict) -> None:
    """The dialog's preview ran on the painting it showed (no file or layer was given: without the
    painting the preview would have said "No style image chosen"); a run with a painting names its layer
    after it, first or second style."""
    assert PREVIEW_SHOWN.search(dialog["log"]), dialog["log"][-3000:]
    manifest = gimp["manifest"]["cases"]
    for name, expected in (("painting", "the_scream"), ("second_painting", "style + shipwreck")):
        result = manifest[name]
        assert result["status"] == "success", result["error"]
        assert result["layers"][0]["name"] == f"Opaque (Neural Style: {expected})"
