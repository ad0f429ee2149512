"""Fixtures for the GIMP 2.10 plug-in: the stand-in gimpfu, an engine config, Python 2.7."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN = REPO / "plug-ins" / "neural_style_gimp2" / "neural_style_gimp2.py"
BRIDGE = REPO / "plug-ins" / "neural_style" / "nst_bridge.py"


def engine_config(weights: Path | None) -> dict:
    """What install.py writes: this venv's Python, the weights, the engine's self-description."""
    from nst_core.options import describe

    config = {"version": 1, "python": sys.executable, "engine": describe()}
    if weights is not None:
        config["weights"] = str(weights)
    return config


@pytest.fixture
def gimpfu(monkeypatch: pytest.MonkeyPatch):
    """The stand-in gimpfu, with the bridge importable as in a source checkout; records cleared."""
    monkeypatch.syspath_prepend(str(BRIDGE.parent))
    monkeypatch.syspath_prepend(str(HERE))
    import gimpfu as module

    module.reset()
    module.registered.clear()
    return module


@pytest.fixture
def config_file(tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """$NST_PLUGIN_CONFIG naming a config for the real engine with the random test weights."""
    path = tmp_path / "nst_config.json"
    path.write_text(json.dumps(engine_config(vgg19_weights)), encoding="utf-8")
    monkeypatch.setenv("NST_PLUGIN_CONFIG", str(path))
    monkeypatch.delenv("NST_ENGINE_PYTHON", raising=False)
    monkeypatch.delenv("NST_WEIGHTS", raising=False)
    return path


@pytest.fixture
def plugin(gimpfu, config_file: Path):
    """The plug-in module, freshly imported (so registered) against the test config."""
    import drive_plugin

    return drive_plugin.load_plugin(str(PLUGIN))


@pytest.fixture
def style_file(tmp_path: Path) -> str:
    from PIL import Image

    path = tmp_path / "Starry night.png"
    Image.effect_mandelbrot((48, 48), (-2.0, -1.5, 1.0, 1.5), 60).convert("RGB").save(path)
    return str(path)


@functools.cache
def python27() -> str:
    """GIMP 2.10's Python: $NST_PYTHON2, python2.7 on PATH, or a pyenv 2.7 build."""
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = [os.environ.get("NST_PYTHON2"), shutil.which("python2.7"), *pyenv.glob("2.7*/bin/python2.7")]
    for candidate in candidates:
        if candidate and subprocess.run([str(candidate), "-c", "pass"], capture_output=True).returncode == 0:
            return str(candidate)
    pytest.fail("No Python 2.7 found to check the GIMP 2.10 plug-in: set NST_PYTHON2=/path/to/python2.7")
