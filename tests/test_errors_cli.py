"""Bad inputs through the command line and run-job: one line naming problem and fix, the right exit
code, no traceback, and no output file (nor a temporary one) left behind."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from nst_core import cli, run, weights

FAST = ["--iterations", "2", "--size", "48", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("isolated_data")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def fails(
    capsys: pytest.CaptureFixture[str], out_dir: Path, code: int, message: str, *argv: str | Path
) -> str:
    """Run the CLI, expect `code` and one `error:` line matching `message`, and an untouched out_dir."""
    result = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert result == code, captured.err
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    assert re.search(message, captured.err), captured.err
    assert list(out_dir.iterdir()) == []
    return captured.err


def stylize(out_dir: Path, content: Path, *rest: str | Path) -> list[str | Path]:
    return ["stylize", content, *rest, "-o", out_dir / "out.png", *FAST]


# -- images ------------------------------------------------------------------------------------------


@pytest.fixture
def bad_images(tmp_path: Path, content_png: Path) -> dict[str, Path]:
    folder = tmp_path / "bad"
    folder.mkdir()
    data = content_png.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("not an image at all")
    (folder / "empty.png").write_bytes(b"")
    (folder / "folder.png").mkdir()
    return {p.stem: p for p in folder.iterdir()} | {"missing": folder / "missing.png"}


@pytest.mark.parametrize("kind", ["missing", "truncated", "text", "empty", "folder"])
@pytest.mark.parametrize("role", ["content", "style"])
def test_bad_images_are_exit_3(
    tmp_path: Path,
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    bad_images: dict[str, Path],
    kind: str,
    role: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = bad_images[kind]
    content, style = (bad, style_png) if role == "content" else (content_png, bad)
    argv = stylize(out_dir, content, style, "--weights", vgg19_weights)
    fails(capsys, out_dir, 3, re.escape(bad.name), *argv)


def test_missing_init_image(
    out_dir: Path, content_png: Path, style_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(
        capsys,
        out_dir,
        3,
        r"Init image .*nope.png does not exist: check --init",
        *stylize(out_dir, content_png, style_png, "--weights", vgg19_weights, "--init", "nope.png"),
    )


def test_json_mode_reports_the_error_as_an_event(
    out_dir: Path, style_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            str(a)
            for a in stylize(
                out_dir, out_dir / "nope.png", style_png, "--weights", vgg19_weights, "--progress", "json"
            )
        ]
    )
    captured = capsys.readouterr()
    assert code == 3 and captured.err == ""
    [event] = [json.loads(line) for line in captured.out.splitlines()]
    assert event["event"] == "error" and event["code"] == 3 and "nope.png does not exist" in event["message"]


# -- usage ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--style-blend", "1"], r"2 style image\(s\) but 1 blend weight\(s\): give one --style-blend"),
        (["--preset", "nope"], r"Unknown preset 'nope': use one of .*balanced"),
        (["--style-layers", "relu9_9"], "relu9_9"),
        (["--content-layers", "conv_zero"], "conv_zero"),
        (["--size", "8"], r"--size 8 is out of range: use a value from 32 to 16384"),
        (["--iterations", "0"], "--iterations 0 is out of range"),
        (["--strength", "1000"], "--strength 1000.0 is out of range"),
        (["--tv-weight", "-1"], "--tv-weight -1.0 is out of range"),
        (["--keep-colors", "maybe"], "Unknown keep-colors mode 'maybe': use one of off, luminance"),
        (["--size", "big"], "argument --size: invalid int value: 'big'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_are_exit_2(
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    flags: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = stylize(out_dir, content_png, style_png, style_png, "--weights", vgg19_weights)
    fails(capsys, out_dir, 2, message, *argv, *flags)


# -- weights -------------------------------------------------------------------------------------------


def test_missing_weights(
    out_dir: Path, content_png: Path, style_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fails(
        capsys,
        out_dir,
        4,
        r"VGG19 weights not found: run `python3 install.py` or .*--weights FILE",
        *stylize(out_dir, content_png, style_png),
    )
    fails(
        capsys,
        out_dir,
        4,
        r"Weights file .*none.pth not found",
        *stylize(out_dir, content_png, style_png, "--weights", out_dir.parent / "none.pth"),
    )


def test_truncated_weights_file(
    tmp_path: Path,
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cut = tmp_path / "cut.pth"
    cut.write_bytes(vgg19_weights.read_bytes()[: vgg19_weights.stat().st_size // 2])
    fails(capsys, out_dir, 4, "cut.pth", *stylize(out_dir, content_png, style_png, "--weights", cut))


def test_truncated_official_file_is_caught_before_loading(
    tmp_path: Path, out_dir: Path, content_png: Path, style_png: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    official = tmp_path / "data" / "weights" / weights.OFFICIAL["vgg19"].filename
    official.parent.mkdir(parents=True)
    official.write_bytes(b"\0" * 1000)
    fails(
        capsys,
        out_dir,
        4,
        r"incomplete or damaged \(1000 of 574673361 bytes\): delete it and run",
        *stylize(out_dir, content_png, style_png),
    )


def test_wrong_hash_weights_file(
    tmp_path: Path,
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    copy = tmp_path / "vgg19-copy.pth"
    shutil.copy(vgg19_weights, copy)
    entry = replace(weights.OFFICIAL["vgg19"], filename=copy.name, size=copy.stat().st_size, sha256="ab" * 32)
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    fails(
        capsys,
        out_dir,
        4,
        "vgg19-copy.pth has the wrong SHA-256",
        *stylize(out_dir, content_png, style_png, "--weights", copy),
    )


# -- output and device ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("missing/out.png", r"Output folder .*missing does not exist"),
        ("file.txt/out.png", r"Output folder .*file.txt does not exist"),
        ("out.xyz", r"unknown image format '.xyz'; use .png"),
        (".", "is a folder: give a file name"),
    ],
)
def test_unwritable_output_is_exit_5_before_running(
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    output: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(run, "run_plan", lambda *a, **k: pytest.fail("ran before checking"))
    (out_dir.parent / "file.txt").write_text("a file, not a folder")
    argv = ["stylize", content_png, style_png, "-o", out_dir / output, "--weights", vgg19_weights, *FAST]
    fails(capsys, out_dir, 5, message, *argv)


def test_unavailable_device_is_exit_7(
    out_dir: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = stylize(out_dir, content_png, style_png, "--weights", vgg19_weights)
    fails(capsys, out_dir, 7, r"CUDA is not available .*: use --device cpu", *argv[:-1], "cuda")


# -- job files -------------------------------------------------------------------------------------------


def run_job_fails(capsys: pytest.CaptureFixture[str], job: Path, code: int, message: str) -> None:
    result = cli.main(["run-job", str(job)])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert result == code and events[-1]["event"] == "error" and events[-1]["code"] == code
    assert re.search(message, events[-1]["message"]), events[-1]
    assert not (job.parent / "result.png").exists() and not (job.parent / "result.raw").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "is not valid JSON"),
        ('{"version": 7}', "Job version 7 is not supported: this engine reads version 1"),
        ("[1, 2]", "the job must be a JSON object"),
    ],
)
def test_unreadable_job_files(
    tmp_path: Path, text: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.json"
    job.write_text(text)
    run_job_fails(capsys, job, 2, message)
    run_job_fails(capsys, tmp_path / "absent.json", 2, "Cannot read job file")


def test_job_option_and_raw_size_errors(
    tmp_path: Path, style_png: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "c.raw").write_bytes(bytes(10 * 10 * 4 - 3))
    raw = {"raw": "c.raw", "width": 10, "height": 10, "format": "u8", "channels": 4}
    job = {
        "version": 1,
        "content": raw,
        "styles": [{"path": str(style_png)}],
        "options": {"weights": str(vgg19_weights), "zoom": 2},
        "output": {"raw": "result.raw", "format": "u8"},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))
    run_job_fails(capsys, path, 2, "Unknown option zoom: use one of")
    del job["options"]["zoom"]
    path.write_text(json.dumps(job))
    run_job_fails(capsys, path, 2, r"has 397 bytes but 10x10x4 u8 needs 400")
