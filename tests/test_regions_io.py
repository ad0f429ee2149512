"""Style masks through the command line, job files and the service's wire format: the same masks by
every road, and bad ones as one line with no output left behind."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import JobFiles

from nst_core import cli, wire
from nst_core.errors import UsageError
from nst_core.job import parse_job
from nst_core.wire import Limits

FAST = ["--iterations", "2", "--size", "48", "--device", "cpu", "--no-multiscale"]

pytestmark = pytest.mark.usefixtures("isolated_data")


def _mask(path: Path, width: int, height: int, white_left: bool = True) -> Path:
    pixels = np.zeros((height, width), np.uint8)
    pixels[:, : width // 2] = 255
    Image.fromarray(pixels if white_left else 255 - pixels, "L").save(path)
    return path


@pytest.fixture
def masks(tmp_path: Path) -> tuple[Path, Path]:
    # Another size than the content's (96 x 64): masks are resized to it.
    return _mask(tmp_path / "left.png", 30, 20), _mask(tmp_path / "right.png", 30, 20, white_left=False)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, message: str, out: Path) -> None:
    result = cli.main(argv)
    err = capsys.readouterr().err
    assert result == code, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err
    assert list(out.parent.iterdir()) == []


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder / "out.png"


def test_stylize_with_a_mask_per_style(
    job_files: JobFiles, masks: tuple[Path, Path], out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    styles = (job_files.style, job_files.style)
    argv = job_files.stylize(out, *FAST, "--style-masks", *masks, styles=styles)
    assert cli.main(argv) == 0, capsys.readouterr().err
    assert Image.open(out).size == (48, 32)


def test_mask_count_must_match_the_styles(
    job_files: JobFiles, masks: tuple[Path, Path], out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = job_files.stylize(out, *FAST, "--style-masks", masks[0], styles=(job_files.style, job_files.style))
    _fails(capsys, argv, 2, r"2 style image\(s\) but 1 style mask\(s\): give one mask per style", out)


def test_a_mask_that_is_no_image_is_exit_3(
    tmp_path: Path, job_files: JobFiles, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "mask.png"
    text.write_text("not an image")
    for mask, message in (
        (text, r"mask\.png cannot be read"),
        (tmp_path / "nope.png", r"nope\.png does not exist"),
    ):
        _fails(capsys, job_files.stylize(out, *FAST, "--style-masks", mask), 3, message, out)


def test_dry_run_checks_the_masks(
    tmp_path: Path, job_files: JobFiles, out: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = job_files.stylize(out, *FAST, "--dry-run", "--style-masks", tmp_path / "nope.png")
    _fails(capsys, argv, 3, r"nope\.png does not exist", out)


# -- job files ----------------------------------------------------------------------------------------


def _job(**style: object) -> dict:
    return {
        "version": 1,
        "content": {"path": "c.png"},
        "styles": [{"path": "s1.png", **style}, {"path": "s2.png", "mask": "/abs/m2.png"}],
        "output": {"path": "r.png"},
    }


def test_job_masks_are_relative_to_the_job_file(tmp_path: Path) -> None:
    request = parse_job(_job(mask="m1.png"), tmp_path)
    assert request.masks == (tmp_path / "m1.png", Path("/abs/m2.png"))
    data = _job()
    for style in data["styles"]:
        style.pop("mask", None)
    assert parse_job(data, tmp_path).masks is None


@pytest.mark.parametrize(
    ("style", "message"),
    [
        ({}, "give every style a `mask` or none"),
        ({"mask": 3}, "a style `mask` must be a file name"),
        ({"mask": "m.png", "masks": "x"}, r"unknown key\(s\) masks"),
    ],
)
def test_bad_job_masks(tmp_path: Path, style: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_job(_job(**style), tmp_path)


def test_run_job_with_a_bad_mask_writes_nothing(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    job = {
        "version": 1,
        "content": {"path": str(job_files.content)},
        "styles": [{"path": str(job_files.style), "mask": "bad.png"}],
        "options": {"size": 48, "iterations": 2, "device": "cpu", "weights": str(job_files.weights)},
        "output": {"path": "result.png"},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    assert cli.main(["run-job", str(path)]) == 3
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "error" and "bad.png cannot be read" in events[-1]["message"]
    assert not (tmp_path / "result.png").exists()


# -- the service's wire format -------------------------------------------------------------------------


def _png(pixels: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_masks_travel_after_the_styles(style_png: Path) -> None:
    content = np.zeros((8, 12, 3), np.uint8)
    left, right = np.zeros((4, 6), np.uint8), np.full((4, 6), 255, np.uint8)
    body = wire.request_body(
        (content.tobytes(), {"width": 12, "height": 8, "format": "u8", "channels": 3}),
        [(style_png.read_bytes(), 1.0), (style_png.read_bytes(), 2.0)],
        {"size": 32},
        masks=[_png(left), _png(right)],
    )
    line, rest = body.split(b"\n", 1)
    job = wire.parse_header(line, Limits(), ("cpu",))
    assert job.masks is not None and len(job.parts) == 5 and job.body_bytes == len(rest)
    decoded_content, styles, masks = wire.decode_parts(job, rest, 10**6)
    assert decoded_content.shape == (8, 12, 3) and len(styles) == 2
    assert [float(m.mean()) for m in masks] == [0.0, 1.0]


@pytest.mark.parametrize(
    ("styles", "message"),
    [
        ([{"bytes": 5, "mask": {"bytes": 3}}, {"bytes": 5}], "give every style a `mask` or none"),
        ([{"bytes": 5, "mask": {"bytes": 3, "weight": 1}}], r"style 1's mask has unknown key\(s\) weight"),
        ([{"bytes": 5, "mask": {"path": "m.png"}}], "style 1's mask names a file"),
    ],
)
def test_bad_wire_masks(styles: list, message: str) -> None:
    header = {"version": 1, "content": {"bytes": 5}, "styles": styles, "options": {}}
    with pytest.raises(UsageError, match=message):
        wire.parse_header(json.dumps(header).encode(), Limits(), ("cpu",))
