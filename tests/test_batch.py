"""`python -m nst_core batch`: one engine for many pictures, outputs under their inputs' names, a bad
input reported and skipped, a rerun that resumes and redoes nothing, and a killed batch resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from samples import make_content_image

from nst_core.batch import BatchProgress, item_event
from nst_core.events import Sink

FLAGS = ["--size", "32", "--iterations", "2", "--seed", "1"]


def nst(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nst_core", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index, (width, height) in enumerate(((48, 32), (40, 40), (32, 48))):
        make_content_image(width, height).rotate(90 * index).save(folder / f"photo{index}.png")
    return folder


def events(result: subprocess.CompletedProcess) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def test_a_batch_writes_what_separate_stylize_calls_write_and_skips_a_bad_input(
    pictures, style_png, vgg19_weights, tmp_path
) -> None:
    (pictures / "broken.png").write_bytes(b"not a picture")
    out = tmp_path / "out"
    out.mkdir()
    weights = ["--weights", str(vgg19_weights)]
    done = nst(
        "batch",
        str(pictures),
        "--style",
        str(style_png),
        "-o",
        str(out),
        *FLAGS,
        *weights,
        "--progress",
        "json",
    )
    assert done.returncode == 3, done.stderr  # the bad input's exit code, after the others
    seen = events(done)
    items = [e for e in seen if e["event"] == "item"]
    assert [(Path(e["input"]).name, e["status"]) for e in items] == [
        ("broken.png", "failed"),
        ("photo0.png", "done"),
        ("photo1.png", "done"),
        ("photo2.png", "done"),
    ]
    assert seen[-1]["event"] == "error" and "1 of 4 inputs failed: broken.png" in seen[-1]["message"]
    assert seen[-1]["done"] == 3 and "\n" not in seen[-1]["message"]
    fractions = [e["fraction"] for e in seen if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)  # one bar over the batch
    assert sorted(p.name for p in out.iterdir()) == ["photo0.png", "photo1.png", "photo2.png"]
    for index in range(3):
        single = tmp_path / f"single{index}.png"
        alone = nst(
            "stylize",
            str(pictures / f"photo{index}.png"),
            str(style_png),
            "-o",
            str(single),
            *FLAGS,
            *weights,
        )
        assert alone.returncode == 0, alone.stderr
        assert (out / f"photo{index}.png").read_bytes() == single.read_bytes()


def test_a_rerun_skips_complete_outputs_and_redoes_none(pictures, style_png, vgg19_weights, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["batch", str(pictures), "--style", str(style_png), "-o", str(out), *FLAGS, "--progress", "json"]
    env = {"NST_WEIGHTS": str(vgg19_weights)}
    first = nst(*args, env=env)
    assert first.returncode == 0, first.stderr
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    (out / "photo1.png").unlink()
    second = nst(*args, env=env)
    assert second.returncode == 0, second.stderr
    statuses = {Path(e["input"]).name: e["status"] for e in events(second) if e["event"] == "item"}
    assert statuses == {"photo0.png": "skipped", "photo1.png": "done", "photo2.png": "skipped"}
    assert events(second)[-1] == {**events(second)[-1], "event": "done", "done": 1, "skipped": 2, "failed": 0}
    for name in ("photo0.png", "photo2.png"):
        assert (out / name).stat().st_mtime_ns == stamps[name]


def test_a_killed_batch_resumes_where_it_stopped(pictures, style_png, vgg19_weights, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    args = ["batch", str(pictures), "--style", str(style_png), "-o", str(out), "--size", "32", "--seed", "1"]
    command = [sys.executable, "-m", "nst_core", *args, "--iterations", "60", "--progress", "json"]
    env = {**os.environ, "NST_WEIGHTS": str(vgg19_weights)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event["event"] == "progress" and event["item"] == 2:
            break  # the first output is written, the second is on its way
    process.kill()
    process.wait()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["photo0.png"]
    stamp = (out / "photo0.png").stat().st_mtime_ns
    again = nst(*args, "--iterations", "60", "--progress", "json", env={"NST_WEIGHTS": str(vgg19_weights)})
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in out.iterdir()) == ["photo0.png", "photo1.png", "photo2.png"]  # no leftovers
    assert (out / "photo0.png").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(
    ("setup", "arguments", "message"),
    [
        ("clash", ["--format", "png"], "would both write"),
        ("file", [], "is a file, not a folder: give a folder for -o"),
        ("empty", [], "No pictures in the inputs given"),
    ],
)
def test_batch_problems_are_one_line_before_anything_is_written(
    pictures, style_png, vgg19_weights, tmp_path, setup, arguments, message
) -> None:
    out = tmp_path / "out"
    inputs = [str(pictures)]
    if setup == "file":
        out.write_text("a file, not a folder")
    else:
        out.mkdir()
    if setup == "clash":
        make_content_image().save(pictures / "photo0.jpg")
    if setup == "empty":
        inputs = [str(tmp_path / "empty")]
        (tmp_path / "empty").mkdir()
    done = nst(
        "batch",
        *inputs,
        "--style",
        str(style_png),
        "-o",
        str(out),
        *FLAGS,
        *arguments,
        env={"NST_WEIGHTS": str(vgg19_weights)},
    )
    assert done.returncode == (5 if setup == "file" else 2), done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1
    assert out.is_file() if setup == "file" else not any(out.iterdir())


def test_a_missing_output_folder_is_made(pictures, style_png, vgg19_weights, tmp_path) -> None:
    """`batch photos/ --style s.jpg -o out/` as the README shows it, `out/` (and its parent) not there yet."""
    out = tmp_path / "new" / "out"
    args = [str(pictures / "photo0.png"), "--style", str(style_png), "-o", f"{out}/", *FLAGS]
    done = nst("batch", *args, env={"NST_WEIGHTS": str(vgg19_weights)})
    assert done.returncode == 0, done.stderr
    assert [path.name for path in out.iterdir()] == ["photo0.png"]


def test_an_output_that_would_replace_an_input_takes_overwrite(pictures, style_png, vgg19_weights) -> None:
    before = {path.name: path.read_bytes() for path in pictures.iterdir()}
    same_folder = str(pictures / ".." / pictures.name)  # another spelling of the inputs' folder
    args = ["--style", str(style_png), "-o", same_folder, *FLAGS]
    env = {"NST_WEIGHTS": str(vgg19_weights)}
    refused = nst("batch", str(pictures), *args, env=env)
    assert (refused.returncode, refused.stdout) == (5, "")
    assert refused.stderr == (
        f"error: Output {Path(same_folder) / 'photo0.png'} is the input {pictures / 'photo0.png'}: the "
        "result would replace it; choose another output folder (-o) or --format, or pass --overwrite to "
        "replace the inputs.\n"
    )
    assert {path.name: path.read_bytes() for path in pictures.iterdir()} == before
    replaced = nst("batch", str(pictures / "photo1.png"), *args, "--overwrite", "--progress", "json", env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert [e["status"] for e in events(replaced) if e["event"] == "item"] == ["done"]  # not "skipped"
    after = {path.name: path.read_bytes() for path in pictures.iterdir()}
    assert after.keys() == before.keys() and after["photo1.png"] != before["photo1.png"]
    assert after["photo0.png"] == before["photo0.png"]


def test_outputs_take_the_format_asked_for(pictures, style_png, vgg19_weights, tmp_path) -> None:
    from PIL import Image

    out = tmp_path / "out"
    out.mkdir()
    done = nst(
        "batch",
        str(pictures / "photo0.png"),
        "--style",
        str(style_png),
        "-o",
        str(out),
        "--format",
        "jpg",
        *FLAGS,
        env={"NST_WEIGHTS": str(vgg19_weights)},
    )
    assert done.returncode == 0, done.stderr
    with Image.open(out / "photo0.jpg") as image:
        assert image.format == "JPEG"


def test_one_progress_serves_the_batch_and_the_cluster_pictures_ended_count_whole() -> None:
    seen: list[dict] = []

    class Shown(Sink):
        def _show(self, event: dict) -> None:
            seen.append(event)

    progress = BatchProgress(Shown(), 4)
    progress.ended(0, item_event(0, 4, Path("gone.png"), None, "failed", "Input gone.png does not exist"))
    picture = progress.sink_for(1)  # a local batch's picture, through the engine's sink
    picture.emit({"event": "start", "device": "cpu"})
    picture.emit({"event": "progress", "fraction": 0.5})
    picture.emit({"event": "done", "output": "photo.png", "seconds": 1.0})  # the batch's item event says it
    progress.forward(3, {"event": "progress", "fraction": 0.25, "worker": "w:1"})  # a cluster's, meanwhile
    assert [(e["event"], e["item"], e["items"], e.get("fraction")) for e in seen] == [
        ("item", 1, 4, None),
        ("start", 2, 4, None),
        ("progress", 2, 4, (1 + 0.5) / 4),
        ("progress", 4, 4, (1 + 0.5 + 0.25) / 4),
    ]
    assert seen[-1]["worker"] == "w:1"
