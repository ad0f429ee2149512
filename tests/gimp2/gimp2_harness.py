"""Paths, the engine config and helpers for the GIMP 2.10 plug-in's tests (imported as a module): the
plug-in's parameter names, a spy on what it gives the bridge, runs of it on a real Python 2.7."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from interpreters import python27

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN = REPO / "plug-ins" / "neural_style_gimp2" / "neural_style_gimp2.py"
BRIDGE = REPO / "plug-ins" / "neural_style" / "nst_bridge.py"
SERVICE = REPO / "plug-ins" / "neural_style" / "nst_service.py"  # the bridge's client of the engine service
COMMON = REPO / "plug-ins" / "neural_style" / "nst_common.py"  # what the bridge and the service client share
TIFF = REPO / "plug-ins" / "neural_style" / "nst_tiff.py"  # reads the bridge's animation frame results
BRIDGE_MODULES = (BRIDGE, SERVICE, COMMON, TIFF)  # what install.py puts beside the plug-in


def engine_config(weights: Path | None) -> dict:
    """What install.py writes: this venv's Python, the weights, the engine's self-description."""
    from nst_core.options import describe

    config = {"version": 1, "python": sys.executable, "engine": describe()}
    if weights is not None:
        config["weights"] = str(weights)
    return config


PARAM_NAMES = [
    "style_from",
    "painting",
    "style",
    "style_layer",
    "style2_from",
    "style2_painting",
    "style2",
    "style2_layer",
    "blend",
    "region",
    "preset",
    "strength",
    "keep_colors",
    "style_scale",
    "size",
    "iterations",
    "seed",
    "device",
    "frames",
    "keep_on_cancel",
]


class EngineSpy:
    """Keeps what the plug-in gave the bridge and what the (real) engine returned."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, bridge) -> None:
        self.content: tuple | None = None
        self.styles: list | None = None
        self.options: dict | None = None
        self.result: bytes | None = None
        self.masks: list | None = None
        set_content, run = bridge.EngineRun.set_content_raw, bridge.EngineRun.run

        def spy_set_content(engine_run, data, width, height, fmt, channels):
            self.content = (data, width, height, fmt, channels)
            return set_content(engine_run, data, width, height, fmt, channels)

        def spy_run(engine_run, styles, options, on_progress, masks=None, on_snapshot=None):
            self.styles, self.options, self.masks = styles, options, masks
            self.result = run(engine_run, styles, options, on_progress, masks, on_snapshot)
            return self.result

        monkeypatch.setattr(bridge.EngineRun, "set_content_raw", spy_set_content)
        monkeypatch.setattr(bridge.EngineRun, "run", spy_run)


def channel(data: bytes, bpp: int, index: int) -> bytes:
    return data[index::bpp]


def call_names(gimpfu) -> list[str]:
    return [name for name, _args in gimpfu.calls]


def run_on_python27(tmp_path: Path, report: str = "report.json", **spec) -> dict:
    """Run the plug-in on a real Python 2.7 as GIMP 2.10 does, as `spec` says; the driver's report."""
    report_path = tmp_path / report
    path = write_spec(tmp_path, **spec, report=str(report_path))
    done = subprocess.run(
        [python27(), str(HERE / "drive_plugin.py"), str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(report_path.read_text(encoding="utf-8"))


def write_spec(tmp_path: Path, **spec) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path
