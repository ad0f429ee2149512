"""The bundled paintings: named on the command line, listed by `styles` and `describe`, small, and in
the package that pip (and so install.py) installs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import JobFiles

from nst_core import cli
from nst_core.paintings import PAINTINGS, style_path

REPO = Path(__file__).resolve().parents[1]
FAST = ["--iterations", "2", "--device", "cpu", "--preset", "fast", "--size", "32", "--progress", "none"]

pytestmark = pytest.mark.usefixtures("isolated_data")


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def test_a_paintings_name_is_its_file_in_stylize_and_batch(tmp_path: Path, job_files: JobFiles) -> None:
    by_name, by_file = tmp_path / "by_name.png", tmp_path / "by_file.png"
    named = job_files.stylize(by_name, *FAST)
    named[2] = "the-scream"  # stylize CONTENT STYLE -o ...
    assert cli.main(named) == 0
    assert cli.main(job_files.stylize(by_file, *FAST, styles=(PAINTINGS["the-scream"].path,))) == 0
    assert np.array_equal(pixels(by_name), pixels(by_file))
    folder = tmp_path / "batch"
    argv = ["batch", job_files.content, "--style", "the-scream", "-o", folder, "--weights", job_files.weights]
    assert cli.main([str(a) for a in (*argv, *FAST)]) == 0
    assert np.array_equal(pixels(folder / f"{job_files.content.stem}.png"), pixels(by_file))


def test_a_file_named_like_a_painting_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("shipwreck").write_bytes(b"mine")
    assert style_path("shipwreck") == Path("shipwreck")
    assert style_path("starry-night") == PAINTINGS["starry-night"].path


def test_an_unknown_name_that_is_no_file_is_one_line_naming_the_paintings(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = job_files.stylize(tmp_path / "out.png", *FAST)
    argv[2] = "starry-nite"
    assert cli.main(argv) == 3
    error = capsys.readouterr().err.strip()
    assert error == (
        "error: Style image starry-nite does not exist: check the file name, or name a bundled painting "
        "(starry-night, the-scream, shipwreck)."
    )
    assert not (tmp_path / "out.png").exists()


def test_styles_and_describe_list_the_paintings(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["styles"]) == 0
    table = capsys.readouterr().out
    assert all(f"{p.name}  " in table and p.title in table for p in PAINTINGS.values())
    assert cli.main(["describe"]) == 0
    described = json.loads(capsys.readouterr().out)
    listed = {p["name"]: p for p in described["paintings"]}
    assert list(listed) == ["starry-night", "the-scream", "shipwreck"]
    assert described["default_painting"] == "starry-night"
    for painting in listed.values():
        with Image.open(painting["path"]) as image:
            assert max(image.size) <= 512
        assert painting["title"] and painting["painter"] and painting["year"] < 1900


def test_the_paintings_are_small_and_described_in_their_readme() -> None:
    readme = (REPO / "nst_core/styles/README.md").read_text(encoding="utf-8")
    for painting in PAINTINGS.values():
        assert painting.path.stat().st_size <= 300 * 1024
        assert f"`{painting.name}` | `{painting.file}` | {painting.title}" in readme


def test_the_package_carries_the_paintings(tmp_path: Path) -> None:
    """pip installs the wheel setuptools builds from pyproject.toml: the paintings must be in it (and so
    go with the engine that install.py installs, and with its uninstall)."""
    source = tmp_path / "source"
    shutil.copytree(REPO / "nst_core", source / "nst_core", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    build = "from setuptools import build_meta; print(build_meta.build_wheel('wheel'))"
    made = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-2000:]
    names = zipfile.ZipFile(source / "wheel" / made.stdout.split()[-1]).namelist()
    assert {f"nst_core/styles/{p.file}" for p in PAINTINGS.values()} <= set(names)


def test_an_installed_engine_without_the_paintings_is_outdated(tmp_path: Path) -> None:
    """install.py reinstalls nst_core when the installed package differs from the checkout's: its
    paintings count, so an engine installed before them gets them."""
    from nst_install.engine import package_files

    installed = tmp_path / "nst_core"
    shutil.copytree(REPO / "nst_core", installed, ignore=shutil.ignore_patterns("__pycache__"))
    assert package_files(installed) == package_files(REPO / "nst_core")
    (installed / "styles" / "shipwreck.jpg").unlink()
    assert package_files(installed) != package_files(REPO / "nst_core")
