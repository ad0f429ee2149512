"""Shared fixtures: deterministic random-weight VGG files in torchvision's format, real VGG16 weights
converted from a package, sample images, the bridge's stand-in engine, the installer tests' check of
the engine Python."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import fake_engine as fake_engines
import pytest
from real_features import make_real_vgg16_weights
from samples import JobFiles, make_content_image, make_random_vgg_weights, make_style_image

from nst_install import engine

# A CPU job takes fewer threads while other programs keep cores busy (devices.use_idle_cores), and the
# thread count can move a result's last bits: the suite names the count, so a job repeated in a test (or
# in the engine the tests start) gives the same result whatever else the machine runs.
os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def vgg19_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_vgg_weights(tmp_path_factory.mktemp("weights") / "vgg19-random.pth", "vgg19")


@pytest.fixture(scope="session")
def vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_vgg_weights(tmp_path_factory.mktemp("weights") / "vgg16-random.pth", "vgg16")


@pytest.fixture(scope="session")
def real_vgg16_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ImageNet's VGG16 convolutions in torchvision's layout (tests/real_features.py; under a second)."""
    return make_real_vgg16_weights(tmp_path_factory.mktemp("weights") / "vgg16-imagenet.pth")


@pytest.fixture(scope="session")
def engine_python_has_this_checkout() -> None:
    """The installs in tests/test_install*.py use this very Python as the engine: they must find nothing
    to pip-install. One check for all of them (it starts a Python that imports torch)."""
    probe = engine.probe_python(Path(sys.executable))
    assert probe and engine.nst_core_current(probe), "first run: pip install -e . (from this checkout)"


@pytest.fixture
def content_png(tmp_path: Path) -> Path:
    path = tmp_path / "content.png"
    make_content_image().save(path)
    return path


@pytest.fixture
def style_png(tmp_path: Path) -> Path:
    path = tmp_path / "style.png"
    make_style_image().save(path)
    return path


@pytest.fixture
def cpu_without_amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without AMX, where the user presets run in fp32 by default (most machines): for tests whose
    words or speed records name the precision, so that they read the same on every CPU."""
    from nst_core import network  # here, not above: collecting the tests needs no torch

    monkeypatch.setattr(network, "_cpu_has_amx", lambda: False)


@pytest.fixture
def isolated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's data folder and torch's cache in `tmp_path`: no test sees the user's weights."""
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("NST_WEIGHTS", raising=False)
    monkeypatch.delenv("NST_DEBUG", raising=False)


@pytest.fixture
def job_files(content_png: Path, style_png: Path, vgg19_weights: Path) -> JobFiles:
    return JobFiles(content_png, style_png, vgg19_weights)


@pytest.fixture
def fake_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The bridge's config, naming the scripted stand-in engine (fake_engine.FAKE_ENGINE) as its Python."""
    return fake_engines.install(tmp_path, monkeypatch, fake_engines.FAKE_ENGINE)


@pytest.fixture
def style_file(tmp_path: Path) -> str:
    path = tmp_path / "style.png"
    path.write_bytes(b"not read by the stand-in engine")
    return str(path)
