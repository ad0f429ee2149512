"""The command line: stylize with JSON or bar progress, sizes, info, weights, presets, one-line failures."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from samples import JobFiles

from nst_core import cli, events, weights
from nst_core import run as run_module
from nst_core.errors import NstError, WeightsError

FAST = ["--iterations", "2", "--device", "cpu", "--preset", "fast"]


pytestmark = pytest.mark.usefixtures("isolated_data")


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def size_of(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


# -- commands that must not load torch -------------------------------------------------------------

NO_TORCH = """
import json, sys
from nst_core.cli import main
for argv in (["--help"], ["stylize", "--help"], ["presets"], ["presets", "--json"], ["describe", "--json"],
             ["weights", "path"], ["weights", "check", "missing.pth"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy"))))
"""


def test_light_commands_do_not_import_torch(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_presets_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "presets")
    assert code == 0 and "balanced *" in out and "gatys-vgg16" in out
    code, out, _ = run(capsys, "presets", "--json")
    assert code == 0 and {p["name"] for p in json.loads(out)} >= {"fast", "balanced", "best"}
    code, out, _ = run(capsys, "describe", "--json")
    assert code == 0 and json.loads(out)["version"] == 1


# -- stylize ---------------------------------------------------------------------------------------


def test_stylize_json_progress_in_a_real_process(tmp_path: Path, job_files: JobFiles) -> None:
    out = tmp_path / "out.png"
    # stdin is /dev/null, not a pipe: it is not watched, so its end of file does not cancel.
    argv = [
        sys.executable,
        "-m",
        "nst_core",
        *job_files.stylize(out, "--size", "48", "--progress", "json", *FAST),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [e["event"] for e in lines] == ["start", "progress", "progress", "done"]
    assert lines[-1]["output"] == str(out) and size_of(out) == (48, 32)
    assert result.stderr == ""


def test_stylize_default_size_is_capped_at_the_content(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.jpg"  # no alpha in JPEG: the writer copes
    two = (job_files.style, job_files.style)
    argv = job_files.stylize(out, "--style-blend", "1", "3", "--progress", "bar", *FAST, styles=two)
    code, stdout, stderr = run(capsys, *argv)
    assert code == 0, stderr
    assert size_of(out) == (96, 64)  # fast is 384 px; the content is 96 x 64
    assert stdout == "" and "[#####" in stderr and f"Wrote {out}" in stderr


def test_stylize_size_sets_the_output_size(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    code, stdout, stderr = run(capsys, *job_files.stylize(out, "--size", "32", "--progress", "none", *FAST))
    assert (code, stdout, stderr) == (0, "", "")
    assert size_of(out) == (32, 21)


def test_an_output_that_is_an_input_takes_overwrite(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same file through another spelling or a link: refused, the original untouched, unless asked."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    link = Path("link.png")
    link.symlink_to(job_files.content)
    original = job_files.content.read_bytes()
    content, style = job_files.content, job_files.style
    for given, output, flags, named in [
        (content, Path("sub/../content.png"), (), f"content image {content}"),
        (link, content, (), f"content image {link}"),
        (content, style, (), f"style image {style}"),
        (content, Path("content.png"), ("--dry-run",), f"content image {content}"),
    ]:
        code, stdout, stderr = run(capsys, *job_files.stylize(output, *flags, *FAST, content=given))
        assert (code, stdout) == (5, "")
        assert stderr == (
            f"error: Output {output} is the {named}: the result would replace it; choose another output "
            "file, or pass --overwrite to replace it.\n"
        )
    assert content.read_bytes() == original
    argv = job_files.stylize(content, "--overwrite", "--size", "32", *FAST, content=link)
    code, _, stderr = run(capsys, *argv)
    assert code == 0, stderr
    assert content.read_bytes() != original and size_of(content) == (32, 21)


@pytest.fixture
def no_server(tmp_path: Path) -> list[str]:
    """`--server` flags for a loopback port that nothing listens on, with a token file."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("a-token-of-some-length\n")
    return ["--server", f"http://127.0.0.1:{port}", "--token-file", str(token)]


def test_no_server_runs_here_with_the_weights_given(
    tmp_path: Path, job_files: JobFiles, no_server: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.png"
    code, stdout, stderr = run(capsys, *job_files.stylize(out, "--size", "32", *FAST, *no_server))
    assert (code, stdout) == (0, ""), stderr
    assert stderr.startswith("note: no server answers (") and stderr.endswith("; running here.\n")
    assert size_of(out) == (32, 21)


def test_no_server_and_no_weights_here_is_one_line(
    tmp_path: Path, job_files: JobFiles, no_server: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["stylize", job_files.content, job_files.style, "-o", tmp_path / "out.png", *FAST, *no_server]
    code, stdout, stderr = run(capsys, *argv)  # no --weights, and none in the (isolated) data folder
    assert (code, stdout, stderr.count("\n")) == (7, "", 1)
    assert stderr.startswith(f"error: No server answers (The server {no_server[1]} does not answer (")
    assert stderr.endswith(
        "and this machine cannot run the job instead: VGG19 weights not found: run `python3 install.py` "
        "or `python -m nst_core weights fetch`, or pass --weights FILE.\n"
    )
    assert not (tmp_path / "out.png").exists()


def test_a_sixteen_bit_content_keeps_its_bits_in_png_and_tiff_and_other_formats_say_so(
    tmp_path: Path, job_files: JobFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    import cv2
    import numpy as np

    deep = tmp_path / "deep.png"
    rgb = np.asarray(Image.open(job_files.content).convert("RGB"), dtype=np.uint16) * 257
    assert cv2.imwrite(str(deep), rgb[..., ::-1])  # OpenCV writes 16 bits, as BGR
    flags = ("--size", "32", "--progress", "none", *FAST)
    for name in ("out.png", "out.tif"):
        code, stdout, stderr = run(capsys, *job_files.stylize(tmp_path / name, *flags, content=deep))
        assert (code, stdout, stderr) == (0, "", "")
        written = cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED)
        assert written.dtype == np.uint16 and written.shape == (21, 32, 3)
        assert (written % 257).any()  # the result's own 16 bits, not 8 bits scaled up
    code, stdout, stderr = run(capsys, *job_files.stylize(tmp_path / "out.jpg", *flags, content=deep))
    assert (code, stdout) == (0, "")
    assert stderr == (
        "note: deep.png has 16 bits per channel but .jpg holds 8: the result is saved with 8 bits; "
        "name a .png or .tif output to keep 16.\n"
    )
    batch = ["batch", deep, job_files.content, "--style", job_files.style, "--weights", job_files.weights]
    code, _, stderr = run(capsys, *batch, "-o", tmp_path, "--format", "webp", *flags)
    assert code == 0 and stderr == (
        "note: 1 of the pictures (deep.png) has 16 bits per channel but .webp holds 8: their results "
        "are saved with 8 bits; use --format png or tif to keep 16.\n"
    )


# -- failures during the run: one line, the right code, nothing written ---------------------------------


@pytest.fixture
def failing_run(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 (returns a setter)
    def set_failure(exc: BaseException) -> None:
        def fake(*args: object, **kwargs: object) -> None:
            raise exc

        monkeypatch.setattr(run_module, "run_plan", fake)

    return set_failure


def stylize_args(tmp_path: Path, files: JobFiles) -> list[str]:
    return files.stylize(tmp_path / "out.png", "--size", "48", *FAST)


def test_gpu_out_of_memory_is_exit_6(
    tmp_path: Path, job_files: JobFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every try runs out of memory, whole and in tiles: the one message, with a size that would fit."""
    import torch

    def out_of_memory(*args: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(run_module.optimize, "optimize_scale", out_of_memory)
    code, out, err = run(capsys, *stylize_args(tmp_path, job_files))
    assert code == 6
    expected = (
        r"error: Not enough cpu memory for 48x32 px \(about \d+ MiB needed, [\d.]+ GiB free\): "
        r"use a working size of 32 px or less \(--size 32\) or close other programs\.\n"
    )
    assert re.fullmatch(expected, err), err
    assert not (tmp_path / "out.png").exists()


def test_unexpected_errors_are_one_line_unless_debugging(
    tmp_path: Path, job_files: JobFiles, failing_run, capsys: pytest.CaptureFixture[str],  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    failing_run(ValueError("boom"))
    argv = stylize_args(tmp_path, job_files)
    code, _, err = run(capsys, *argv)
    assert (code, err) == (1, "error: internal error: ValueError: boom (please report)\n")
    monkeypatch.setenv("NST_DEBUG", "1")
    code, _, err = run(capsys, *argv)
    assert code == 1 and "Traceback" in err and err.endswith("(please report)\n")


def test_interrupt_is_cancelled_in_json(
    tmp_path: Path,
    job_files: JobFiles,
    failing_run,
    capsys: pytest.CaptureFixture[str],  # noqa: ANN001
) -> None:
    failing_run(KeyboardInterrupt())
    code, out, err = run(capsys, *stylize_args(tmp_path, job_files), "--progress", "json")
    assert code == 130 and err == ""
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["start", "error"]
    assert json.loads(out.splitlines()[-1]) == {"event": "error", "message": "Cancelled.", "code": 130}


# -- info and weights ----------------------------------------------------------------------------------


def test_info_json(
    vgg19_weights: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NST_WEIGHTS", str(vgg19_weights))
    code, out, _ = run(capsys, "info", "--json", "--device", "cpu")
    info = json.loads(out)
    assert code == 0 and info["device"] == "cpu" and info["threads"] >= 1 and info["torch"]
    assert info["total_memory"] > 0
    loaded = {"path": str(vgg19_weights), "found": True, "verified": False, "loads": True, "ok": True}
    assert info["weights"]["vgg19"] == loaded
    assert (
        info["weights"]["vgg16"]["loads"] is False
        and "not a torchvision vgg16 file" in (info["weights"]["vgg16"]["problem"])
    )
    code, out, _ = run(capsys, "info")
    assert code == 0 and f"vgg19    {vgg19_weights} (loads as vgg19)" in out


def test_info_says_a_file_that_does_not_load_is_not_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not weights\n")
    monkeypatch.setenv("NST_WEIGHTS", str(text))
    code, out, _ = run(capsys, "info", "--json", "--device", "cpu")
    assert code == 0
    for model in ("vgg19", "vgg16"):
        state = json.loads(out)["weights"][model]
        assert state["ok"] is False and "not a PyTorch file" in state["problem"]
        known = (state["path"], state["found"], state["verified"], state["loads"])
        assert known == (str(text), True, False, False)


def test_info_verifies_an_official_file_by_its_hash(
    tmp_path: Path, small_official: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    official = tmp_path / "data" / "weights" / "vgg19-small.pth"
    official.parent.mkdir(parents=True)
    official.write_bytes(small_official.read_bytes())
    code, out, _ = run(capsys, "info", "--json", "--device", "cpu")
    state = json.loads(out)["weights"]["vgg19"]
    assert code == 0 and (state["verified"], state["loads"], state["ok"]) == (True, None, True)
    official.write_bytes(b"damaged")
    code, out, _ = run(capsys, "info", "--json", "--device", "cpu")
    state = json.loads(out)["weights"]["vgg19"]
    assert (state["path"], state["verified"], state["ok"]) == (str(official), False, False)
    assert "incomplete or damaged" in state["problem"]
    missing = {"path": None, "found": False, "verified": False, "loads": None, "ok": False}
    assert json.loads(out)["weights"]["vgg16"] == {
        **missing,
        "problem": "VGG16 weights not found: " + weights.fetch_hint("vgg16") + ".",
    }


@pytest.fixture
def small_official(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A few bytes made 'official' for vgg19, served from a file:// URL."""
    path = tmp_path / "source.bin"
    path.write_bytes(b"weights" * 1000)
    entry = replace(
        weights.OFFICIAL["vgg19"],
        filename="vgg19-small.pth",
        url=path.as_uri(),
        sha256=weights.sha256_of(path),
        size=path.stat().st_size,
    )
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    return path


def test_weights_fetch_check_and_path(
    tmp_path: Path, small_official: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "weights", "path")
    assert code == 4 and "VGG19 weights not found" in err
    code, out, _ = run(capsys, "weights", "fetch")
    fetched = tmp_path / "data" / "weights" / "vgg19-small.pth"
    assert (code, out) == (0, f"{fetched}\n") and fetched.read_bytes() == small_official.read_bytes()
    code, out, _ = run(capsys, "weights", "path")
    assert (code, out) == (0, f"{fetched}\n")
    code, out, _ = run(capsys, "weights", "check", fetched)
    assert code == 0 and out.startswith(f"ok: {fetched} sha256 ")
    fetched.write_bytes(b"x" * small_official.stat().st_size)
    code, _, err = run(capsys, "weights", "check", fetched)
    assert code == 4 and "wrong SHA-256" in err and err.count("\n") == 1
    code, out, _ = run(capsys, "weights", "fetch", "--dir", tmp_path / "elsewhere")
    assert (code, out) == (0, f"{tmp_path / 'elsewhere' / 'vgg19-small.pth'}\n")


def test_the_download_bar_counts_bytes() -> None:
    stream = io.StringIO()
    show = events.download_bar(stream)
    for done in (0, 3 << 20, 10 << 20):
        show(done, 10 << 20)
    drawn = stream.getvalue()
    assert drawn.startswith("\rDownloading") and drawn.endswith("\n")
    assert "100%|##########| 10.0M/10.0M" in drawn  # tqdm draws at most every 0.1 s: the end for sure


def test_weights_check_loads_a_file_of_ones_own(
    tmp_path: Path, vgg19_weights: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "weights", "check", vgg19_weights)
    assert code == 0 and "loads as vgg19 weights" in out
    broken = tmp_path / "mine.pth"
    broken.write_bytes(vgg19_weights.read_bytes()[:100_000])
    code, out, err = run(capsys, "weights", "check", broken)
    assert code == 4 and out == "" and "truncated" in err and err.count("\n") == 1


# -- a reader that stops reading (`| head -1`) -------------------------------------------------------------


def test_a_closed_stdout_ends_commands_quietly(tmp_path: Path, job_files: JobFiles) -> None:
    """Every command's output to a pipe no one reads: no traceback, no "internal error", the shell's code
    for a tool that its reader left (141)."""
    commands = [
        ["presets"],
        ["describe"],
        ["plan", "--width", "64", "--height", "48", "--device", "cpu", "--weights", str(job_files.weights)],
        [*job_files.stylize(tmp_path / "out.png", "--device", "cpu"), "--dry-run"],
    ]
    for argv in commands:
        reader, writer = os.pipe()
        os.close(reader)  # before the command writes: its first write finds the pipe broken
        try:
            done = subprocess.run(
                [sys.executable, "-m", "nst_core", *argv],
                stdout=writer,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                text=True,
                timeout=300,
            )
        finally:
            os.close(writer)
        assert (argv[0], done.returncode, done.stderr) == (argv[0], 141, "")
    assert not (tmp_path / "out.png").exists()


class Runs:
    """Pickled into a weights file: loading it the unsafe way would run `print`."""

    def __reduce__(self) -> tuple:
        return (print, ("ran",))


def test_a_weights_file_with_code_in_it_is_refused_in_one_line(tmp_path: Path) -> None:
    """torch's own warning about the pickle (two lines) stays out: our one line says it all."""
    import pickle

    rigged = tmp_path / "rigged.pth"
    rigged.write_bytes(pickle.dumps({"features.0.weight": Runs()}, protocol=4))
    done = subprocess.run(
        [sys.executable, "-m", "nst_core", "weights", "check", str(rigged)], capture_output=True, text=True
    )
    assert done.returncode == 4 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: Weights file {rigged} is truncated or not a PyTorch file (UnpicklingError): re-run "
        "install.py or `python -m nst_core weights fetch`."
    ]


# -- events ----------------------------------------------------------------------------------------------


def test_progress_events_and_bar() -> None:
    from nst_core.optimize import Progress

    loss = {"total": 12.5, "content": 2.5, "style": float("nan"), "tv": 0.0}
    progress = Progress(scale=2, scales=3, iteration=5, iterations=10, fraction=0.5, elapsed=12.0, eta=3725.0,
                        loss=loss)  # fmt: skip
    event = events.progress_event(progress)
    assert json.loads(json.dumps(event, allow_nan=False)) == {
        "event": "progress",
        "scale": 2,
        "scales": 3,
        "iteration": 5,
        "iterations": 10,
        "fraction": 0.5,
        "elapsed": 12.0,
        "eta": 3725.0,
        "loss": {"total": 12.5, "content": 2.5, "style": None, "tv": 0.0},
        "tiles": 1,
    }
    stream = io.StringIO()
    bar = events.ProgressBar(stream)
    bar.emit(events.start_event("cpu", _summary([128, 181, 256], 30, 1 << 20, tiles=[{"count": 4}])))
    bar.emit(event)
    bar.emit(events.done_event("out.png", 12.34))
    start, drawn, done = stream.getvalue().split("\n", 2)
    assert (
        start == "Stylising on cpu: 128, 181, 256 px (4 tiles at the top scales), 30 iterations, about 0:42"
    )
    assert drawn.startswith("\r[" + "#" * 15 + "-" * 15 + "]  50%")
    assert "scale 2/3" in drawn and "step 5/10" in drawn and "loss 12.5" in drawn and "eta 1:02:05" in drawn
    assert done == "Wrote out.png in 12.3 s\n"


def _summary(sides: list[int], iterations: int, memory: int, tiles: list | None = None) -> dict:
    """A plan summary (`Plan.summary`) with square scales of these sides."""
    scales = [{"width": s, "height": s, "iterations": 1, "tile": None, "seconds": 1.0} for s in sides]
    memory_part = {"estimate": memory, "budget": None}
    return {
        "scales": scales,
        "iterations": iterations,
        "memory": memory_part,
        "tiles": tiles or [],
        "estimated_seconds": 42.0,
    }


def test_a_run_ends_with_exactly_one_final_event() -> None:
    stream = io.StringIO()
    sink = events.JsonLines(stream)
    sink.emit(events.start_event("cpu", _summary([128, 181], 10, 1 << 20)))
    sink.emit(events.done_event("out.png", 1.23456))
    sink.emit(events.error_event(NstError("late")))
    sink.emit(events.error_event(WeightsError("later")))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines == [
        {
            "event": "start",
            "version": 1,
            "device": "cpu",
            "scales": [128, 181],
            "iterations": 10,
            "memory_estimate": 1 << 20,
            "tiles": [],
            "estimated_seconds": 42.0,
        },
        {"event": "done", "output": "out.png", "seconds": 1.235},
    ]


def test_device_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from nst_core import devices
    from nst_core.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert devices.pick_device("auto") == torch.device("cpu")
        # The threads `info` reports are those a job gets: every core it may run on.
        assert devices.device_info("cpu")["threads"] == torch.get_num_threads() == devices.available_cores()
    finally:
        torch.set_num_threads(threads)
    for name, message in (("cuda", "CUDA is not available"), ("mps", "MPS .* is not available")):
        with pytest.raises(DeviceError, match=message + r".*use --device cpu") as caught:
            devices.pick_device(name)
        assert caught.value.code == 7
