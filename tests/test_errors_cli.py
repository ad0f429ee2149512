"""Bad inputs through the command line and run-job: one line naming problem and fix, the right exit
code, no traceback, and no output file (nor a temporary one) left behind."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from PIL import Image
from samples import JobFiles

from nst_core import cli, run, weights

FAST = ["--iterations", "2", "--size", "48", "--device", "cpu"]


pytestmark = pytest.mark.usefixtures("isolated_data")


@dataclass(frozen=True)
class Cli:
    """The command line on the test's files, writing into a folder that every failure must leave empty."""

    files: JobFiles
    out_dir: Path
    capsys: pytest.CaptureFixture[str]

    def stylize(self, *flags: str | Path, **inputs: Path | tuple[Path, ...]) -> list[str]:
        return self.files.stylize(self.out_dir / "out.png", *FAST, *flags, **inputs)  # type: ignore[arg-type]

    def fails(self, code: int, message: str, argv: list[str]) -> str:
        """Expect exit `code`, one `error:` line matching `message`, no traceback, and no file."""
        result = cli.main(argv)
        captured = self.capsys.readouterr()
        assert result == code, captured.err
        assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
        assert "Traceback" not in captured.err
        assert re.search(message, captured.err), captured.err
        assert list(self.out_dir.iterdir()) == []
        return captured.err


@pytest.fixture
def run_cli(tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]) -> Cli:
    folder = tmp_path / "out"
    folder.mkdir()
    return Cli(job_files, folder, capsys)


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
def test_bad_images_are_exit_3(run_cli: Cli, bad_images: dict[str, Path], kind: str, role: str) -> None:
    bad = bad_images[kind]
    argv = run_cli.stylize(content=bad) if role == "content" else run_cli.stylize(styles=(bad,))
    run_cli.fails(3, re.escape(bad.name), argv)


def test_a_folder_given_as_the_content_is_called_a_folder_and_batch_is_named(
    run_cli: Cli, bad_images: dict[str, Path]
) -> None:
    folder = bad_images["folder"]
    expected = (
        f"error: Image {folder} is a folder, not a picture: name an image file in it; to repaint every "
        "picture of a folder, use `python -m nst_core batch FOLDER --style STYLE -o OUT_FOLDER`.\n"
    )
    for argv in (run_cli.stylize(content=folder), run_cli.stylize("--dry-run", content=folder)):
        assert run_cli.fails(3, "is a folder", argv) == expected


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height and whose pixels are cut short: what the checks read."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(bytes(64)))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + idat + chunk(b"IEND", b""))
    return path


def test_a_picture_over_the_engines_pixel_limit_is_refused_in_its_words(run_cli: Cli, tmp_path: Path) -> None:
    huge = png_declaring(tmp_path / "huge.png", 20000, 15000)
    expected = (
        f"error: Image {huge} is 20000x15000 = 300 megapixels, more than the engine opens "
        "(268 megapixels): scale it down first.\n"
    )
    for argv in (run_cli.stylize(content=huge), run_cli.stylize("--dry-run", content=huge)):
        assert run_cli.fails(3, "300 megapixels", argv) == expected


def test_a_large_picture_under_the_limit_opens_without_pillows_warning(
    run_cli: Cli, tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    large = png_declaring(tmp_path / "large.png", 10000, 9000)  # over Pillow's 89.5 megapixels
    assert cli.main(run_cli.stylize("--dry-run", content=large)) == 0
    assert "Decompression" not in run_cli.capsys.readouterr().err
    assert [str(w.message) for w in recwarn] == []


def test_an_animation_says_that_only_its_first_frame_is_used(run_cli: Cli, tmp_path: Path) -> None:
    animation = tmp_path / "clip.gif"
    frames = [Image.new("RGB", (40, 30), (60 * i, 0, 0)) for i in range(3)]
    frames[0].save(animation, save_all=True, append_images=frames[1:])
    assert cli.main(run_cli.stylize("--dry-run", content=animation)) == 0
    assert run_cli.capsys.readouterr().err == (
        f"note: {animation} holds 3 frames (an animation or pages): only the first is used; to repaint "
        "every frame, save them as separate pictures and run `python -m nst_core batch --frames`.\n"
    )


def test_missing_init_image(run_cli: Cli) -> None:
    message = r"Init image .*nope.png does not exist: check --init"
    run_cli.fails(3, message, run_cli.stylize("--init", "nope.png"))


def test_json_mode_reports_the_error_as_an_event(run_cli: Cli) -> None:
    code = cli.main(run_cli.stylize("--progress", "json", content=run_cli.out_dir / "nope.png"))
    captured = run_cli.capsys.readouterr()
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
        (["--strength", "1000"], "--strength 1000 is out of range"),
        (["--tv-weight", "-1"], "--tv-weight -1 is out of range"),
        (["--keep-colors", "maybe"], "Unknown keep-colors mode 'maybe': use one of off, luminance"),
        (["--size", "big"], "argument --size: invalid int value: 'big'"),
        (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_usage_errors_are_exit_2(run_cli: Cli, flags: list[str], message: str) -> None:
    two = (run_cli.files.style, run_cli.files.style)
    run_cli.fails(2, message, run_cli.stylize(*flags, styles=two))


# -- weights -------------------------------------------------------------------------------------------


def without_weights(argv: list[str]) -> list[str]:
    at = argv.index("--weights")
    return argv[:at] + argv[at + 2 :]


def test_missing_weights(run_cli: Cli) -> None:
    message = r"VGG19 weights not found: run `python3 install.py` or .*--weights FILE"
    run_cli.fails(4, message, without_weights(run_cli.stylize()))
    none = run_cli.out_dir.parent / "none.pth"
    run_cli.fails(4, r"Weights file .*none.pth not found", run_cli.stylize("--weights", none))


def test_truncated_weights_file(tmp_path: Path, run_cli: Cli) -> None:
    cut, whole = tmp_path / "cut.pth", run_cli.files.weights
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    run_cli.fails(4, "cut.pth", run_cli.stylize("--weights", cut))


def test_truncated_official_file_is_caught_before_loading(tmp_path: Path, run_cli: Cli) -> None:
    official = tmp_path / "data" / "weights" / weights.OFFICIAL["vgg19"].filename
    official.parent.mkdir(parents=True)
    official.write_bytes(b"\0" * 1000)
    message = r"incomplete or damaged \(1000 of 574673361 bytes\): delete it and run"
    run_cli.fails(4, message, without_weights(run_cli.stylize()))


def test_wrong_hash_weights_file(tmp_path: Path, run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "vgg19-copy.pth"
    shutil.copy(run_cli.files.weights, copy)
    entry = replace(weights.OFFICIAL["vgg19"], filename=copy.name, size=copy.stat().st_size, sha256="ab" * 32)
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    run_cli.fails(4, "vgg19-copy.pth has the wrong SHA-256", run_cli.stylize("--weights", copy))


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
    run_cli: Cli, output: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run, "run_plan", lambda *a, **k: pytest.fail("ran before checking"))
    (run_cli.out_dir.parent / "file.txt").write_text("a file, not a folder")
    run_cli.fails(5, message, run_cli.files.stylize(run_cli.out_dir / output, *FAST))


def test_unavailable_device_is_exit_7(run_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    run_cli.fails(7, r"CUDA is not available .*: use --device cpu", run_cli.stylize("--device", "cuda"))


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
