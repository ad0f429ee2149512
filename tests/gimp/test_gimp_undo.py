"""A user's undo in GUI GIMP on a virtual display (both GIMP versions): after OK, and after Cancel with
"On Cancel: keep the picture so far", one Ctrl+Z on the image's window gives back the image as it was
before the call: every result layer of the run is one undo step. See test_gimp_plugin.py for the set-up."""

from __future__ import annotations

import json

import pytest
from gimp_harness import (
    CANVAS,
    ENGINE_ARGS,
    HERE,
    INSTALLED,
    STYLED,
    Chroot,
    painter_config,
    run_gui,
)

pytestmark = pytest.mark.gimp


@pytest.fixture(scope="module")
def undone(gimp: dict, chroot: Chroot) -> dict:
    """gui_undo.py's result: two layers styled by OK, then one layer kept by Cancel, each undone."""
    work = gimp["work"] / "undo"
    work.mkdir()
    inputs = gimp["inputs"]
    config_path = gimp["profile"] / INSTALLED / "nst_config.json"
    plan = {
        "harness": str(HERE),
        "config_path": str(config_path),
        "canvas": CANVAS,
        "layers": [
            {"png": inputs["opaque"], "name": "Opaque", "offsets": [0, 0]},
            {"png": inputs["transparent"], "name": "Partly transparent", "offsets": [20, 18]},
        ],
        "args": ENGINE_ARGS | {"style-file": inputs["style"]},
        "painter_config": painter_config(json.loads(config_path.read_text()), work),
    }
    (work / "plan.json").write_text(json.dumps(plan))
    ran = run_gui(gimp, chroot, work, "gui_inside.sh", str(HERE / "gui_undo.py"))
    if not (work / "result.json").exists():
        pytest.fail(f"The GUI run wrote no result:\n{ran['log'][-3000:]}")
    return json.loads((work / "result.json").read_text())


def names(layers: list) -> list[str]:
    return [name for name, _ in layers]


def test_one_undo_takes_back_both_layers_of_an_ok(undone: dict) -> None:
    ok = undone["ok"]
    assert ok["status"] == "success", ok["error"]
    assert names(ok["after"]) == [
        "Partly transparent" + STYLED,
        "Partly transparent",
        "Opaque" + STYLED,
        "Opaque",
    ]
    assert ok["undone"] == ok["before"]  # names and pixels


def test_one_undo_takes_back_the_layer_kept_on_cancel(undone: dict) -> None:
    kept = undone["kept"]
    assert kept["killed"].get("engine_pid") and kept["status"] != "success"
    # The painter paints one layer after the other: the first one's result stays, formed so far.
    assert STYLED in " ".join(names(kept["after"])) and len(kept["after"]) > len(kept["before"])
    assert kept["undone"] == kept["before"]
