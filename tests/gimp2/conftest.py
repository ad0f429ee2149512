"""Fixtures for the GIMP 2.10 plug-in: the stand-in gimpfu, an engine config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gimp2_harness import BRIDGE, HERE, PLUGIN, engine_config


@pytest.fixture
def gimpfu(monkeypatch: pytest.MonkeyPatch):
    """The stand-in gimpfu, with the bridge importable as in a source checkout; records cleared."""
    monkeypatch.syspath_prepend(str(BRIDGE.parent))
    monkeypatch.syspath_prepend(str(HERE))
    import gimpfu as module

    module.reset()
    module.registered.clear()
    del module.images[:]
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
