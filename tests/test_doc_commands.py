"""Every shell command in README.md and docs/*.md runs: a doc command that fails fails here.

Commands are the lines of the fenced code blocks without a language (or `sh`, `bash`, `shell`) and
the `$ ` lines of `console` blocks; other languages (json, python, text, nginx, ...) hold none. Each
command runs in a temporary folder and home of its own, with the files it names made there (tiny
pictures, masks, the job of docs/protocol.md), the random VGG19 weights in $NST_WEIGHTS and a tiny
`--size` and `--iterations` where it would compute. The installer's commands run with `--dry-run`,
`--server` goes to an engine service on loopback and `serve` must start listening. What cannot run
here is listed in NOT_RUNNABLE with its reason (its engine command lines still have to parse); a
doc command that is neither runnable nor listed fails, as does a listed one no doc has any more.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import make_content_image, make_style_image
from servers import Served, start_server, stop_server

from nst_core.cli import build_parser
from nst_core.errors import UsageError
from nst_core.paintings import PAINTINGS

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
SHELL_LANGUAGES = ("", "sh", "bash", "shell")
PYTHONS = ("python", "python3", "<engine python>", "~/.local/share/gimp-neural-style/venv/bin/python")
TINY = {"--size": "32", "--iterations": "2"}
CLEARED_ENV = (
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "NST_DATA_DIR",
    "NST_WEIGHTS",
    "NST_PLUGIN_CONFIG",
    "NST_ENGINE_PYTHON",
    "NST_DEBUG",
    "PYTHONPATH",
)

# Doc commands this test cannot run, and why. An engine command here must still parse.
NOT_RUNNABLE = {
    "bash tests/run": "the whole test suite, this test included",
    'pip install "gimp-neural-style[cluster]"': "a package index on the network",
    "ray start --head": "starts a Ray cluster that outlives the command",
    "python -m nst_core batch photos/ --style starry.jpg -o out/ --ray HEAD:6379": "a Ray cluster's head",
    "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP": "Flatpak and its GIMP",
    "sudo tests/gimp/make_screenshots.sh --python ~/.local/share/gimp-neural-style/venv/bin/python": (
        "root, and GIMP in the chroots the GIMP tests build"
    ),
    "python -m nst_core stylize photo.jpg s1.jpg s2.jpg --style-masks left.png right.png -o out.png "
    "--device cuda": "an NVIDIA GPU",
    "python tests/real_features.py vgg16-imagenet.pth": "the real-feature wheel, which tests/run installs",
    "python tests/quality_sweep.py --out sweep --weights vgg16-imagenet.pth --size 256 --pairs "
    'chelsea:starfield --sweep "fixed:preset=fast,content_target=0" "target:preset=fast"': (
        "minutes of painting on the real-feature weights (a benchmark)"
    ),
    "python tests/optimizer_race.py --weights vgg16-imagenet.pth --size 256 --evaluations 30 60 120": (
        "minutes of painting on the real-feature weights (a benchmark)"
    ),
    "python tests/preview_follow.py --weights vgg16-imagenet.pth --out previews": (
        "minutes of painting on the real-feature weights (a benchmark)"
    ),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race "
    "--pairs chelsea:starry_night": ("a checkout of neural-style-pt, and minutes of painting"),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race --weights vgg16-imagenet.pth "
    '--pairs chelsea:starfield chelsea:starry_night --ours "fast:preset=fast" "balanced:preset=balanced" '
    '"bal-s3:preset=balanced,strength=3" "bal-s4:preset=balanced,strength=4" '
    '"fast-s7:preset=fast,strength=7"': ("a checkout of neural-style-pt, and minutes of painting"),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race --weights vgg16-imagenet.pth "
    '--pairs chelsea:starfield --ours "fast:preset=fast" "balanced:preset=balanced" '
    '"bal-s3:preset=balanced,strength=3" "bal-s4:preset=balanced,strength=4" '
    '"fast-s7:preset=fast,strength=7"': ("a checkout of neural-style-pt, and minutes of painting"),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race --weights vgg16-imagenet.pth "
    '--pairs chelsea:starfield --ours "fast:preset=fast" "balanced:preset=balanced" '
    '"bal-s2.8:preset=balanced,strength=2.8" "bal-s3:preset=balanced,strength=3" '
    '"bal-s4:preset=balanced,strength=4" "fast-s7:preset=fast,strength=7"': (
        "a checkout of neural-style-pt, and minutes of painting"
    ),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race --weights vgg16-imagenet.pth "
    '--pairs chelsea:starfield chelsea:starry_night --ours "fast:preset=fast" "balanced:preset=balanced" '
    '"bal-s2.8:preset=balanced,strength=2.8" "bal-s3:preset=balanced,strength=3" '
    '"fast-s7:preset=fast,strength=7" "bal-s3-fp32:preset=balanced,strength=3,precision=fp32"': (
        "a checkout of neural-style-pt, and minutes of painting"
    ),
    "python tests/race_neural_style_pt.py --checkout NEURAL_STYLE_PT --out race --weights vgg16-imagenet.pth "
    '--pairs chelsea:starfield --ours "bal-s2.8:preset=balanced,strength=2.8" '
    '"bal-s3:preset=balanced,strength=3" "bal-s3.3:preset=balanced,strength=3.3"': (
        "a checkout of neural-style-pt, and minutes of painting"
    ),
}


# -- the commands in the docs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    language: str
    lines: tuple[tuple[int, str], ...]  # (line number, text)


@dataclass(frozen=True)
class DocCommand:
    text: str  # as the doc writes it, without its comment
    where: str  # every file:line that has it

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.text.replace("<engine python>", "python"))


def fenced_blocks(path: Path) -> list[Block]:
    blocks, opened, lines = [], None, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"\s*```(\S*)", line)
        if fence and opened is None:
            opened, lines = fence.group(1), []
        elif fence:
            blocks.append(Block(opened, tuple(lines)))
            opened = None
        elif opened is not None:
            lines.append((number, line))
    return blocks


def block_commands(block: Block) -> list[tuple[int, str]]:
    if block.language == "console":
        found = [(n, line.strip()[2:]) for n, line in block.lines if line.strip().startswith("$ ")]
    elif block.language in SHELL_LANGUAGES:
        found = [(n, line) for n, line in block.lines if line.strip()]
    else:
        return []
    return [(n, re.sub(r"\s+", " ", re.sub(r"\s+#\s.*$", "", text)).strip()) for n, text in found]


def doc_commands() -> list[DocCommand]:
    places: dict[str, list[str]] = {}
    for path in DOCS:
        for block in fenced_blocks(path):
            for number, text in block_commands(block):
                places.setdefault(text, []).append(f"{path.relative_to(REPO).as_posix()}:{number}")
    return [DocCommand(text, ", ".join(where)) for text, where in places.items()]


def benchmark(command: DocCommand) -> str | None:
    """The benchmark module a `python -m nst_core.bench[.NAME] ...` command runs; None for any other."""
    argv = command.argv
    if argv[0] in PYTHONS and argv[1:2] == ["-m"] and re.fullmatch(r"nst_core\.bench(\.\w+)?", argv[2]):
        return "nst_core.bench.iteration" if argv[2] == "nst_core.bench" else argv[2]
    return None


def engine_args(command: DocCommand) -> argparse.Namespace | None:
    """The parsed arguments of a `python -m nst_core ...` command; None for any other program."""
    argv = command.argv
    if argv[0] not in PYTHONS or argv[1:3] != ["-m", "nst_core"]:
        return None
    return build_parser().parse_args(argv[3:])


def parse_error(command: DocCommand) -> str | None:
    try:
        engine_args(command)
        if benchmark(command):
            importlib.import_module(benchmark(command)).parse_args(command.argv[3:])
    except UsageError as error:
        return f"{command.where}: `{command.text}` does not parse: {error.message}"
    except SystemExit:  # argparse's exit, its message already printed
        return f"{command.where}: `{command.text}` does not parse"
    return None


def is_installer(command: DocCommand) -> bool:
    return command.argv[0] in PYTHONS and command.argv[1:2] == ["install.py"]


def needs_elsewhere(command: DocCommand) -> str | None:
    """What a command needs that this test cannot give it; None when it runs here. An engine command
    that does not parse runs: that shows the error a user would see."""
    if is_installer(command) or parse_error(command):
        return None
    if benchmark(command):
        return "a benchmark's minutes of measuring"
    args = engine_args(command)
    if args is None:
        return "a program other than the engine or the installer"
    if getattr(args, "device", None) in ("cuda", "mps"):
        return f"--device {args.device}"
    if getattr(args, "ray", None) not in (None, "auto"):
        return "a Ray cluster at an address"
    if args.command == "weights" and args.action == "fetch":
        return "the network"
    return None


def listed(command: DocCommand) -> bool:
    # A benchmark measures for minutes: here it must parse; tests/test_bench.py runs each one small.
    return command.text in NOT_RUNNABLE or benchmark(command) is not None


COMMANDS = doc_commands()
RUNNABLE = [c for c in COMMANDS if not listed(c) and needs_elsewhere(c) is None]


def test_every_doc_command_is_run_or_listed_with_why_not() -> None:
    kinds = {engine_args(c).command for c in RUNNABLE if not parse_error(c) and engine_args(c)}
    assert {"stylize", "batch", "serve", "run-job", "calibrate", "info", "presets"} <= kinds, kinds
    assert any(is_installer(c) for c in RUNNABLE), "no installer command found in the docs"
    texts = {c.text for c in COMMANDS}
    unknown = [
        f"{c.where}: `{c.text}` needs {needs_elsewhere(c)}"
        for c in COMMANDS
        if not listed(c) and needs_elsewhere(c)
    ]
    assert not unknown, (
        "doc commands this test cannot run: make them runnable here, or add them to NOT_RUNNABLE with "
        "the reason (a block that holds no commands takes a language: ```text, ```json, ...):\n"
        + "\n".join(unknown)
    )
    stale = [t for t in NOT_RUNNABLE if t not in texts]
    assert not stale, f"listed here but in no doc any more: {stale}"
    unparsed = [error for error in map(parse_error, COMMANDS) if error]
    assert not unparsed, "\n".join(unparsed)


# -- the files a command names ---------------------------------------------------------------------


def picture(path: Path, index: int = 0, style: bool = False) -> None:
    """A tiny content picture (the index shifts it: frames that move), or a style picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = make_style_image(40, 40, seed=index + 1) if style else make_content_image(48, 32)
    if not style:
        image = Image.fromarray(np.roll(np.asarray(image), 3 * index, axis=1))
    image.save(path)


def mask(path: Path, index: int, count: int) -> None:
    """The index-th of `count` horizontal bands white, the rest black."""
    rows = np.arange(32)[:, None] * count // 32 == index
    Image.fromarray(np.repeat(rows, 48, axis=1).astype(np.uint8) * 255, "L").save(path)


def pictures_in(folder: Path, count: int) -> None:
    for index in range(count):
        picture(folder / f"{index:03d}.png", index)


def protocol_job() -> dict:
    """The job that docs/protocol.md shows, with a tiny size."""
    for block in fenced_blocks(REPO / "docs/protocol.md"):
        text = "\n".join(line for _, line in block.lines)
        if block.language == "json" and '"output"' in text and '"content"' in text:
            job = json.loads(text)
            job["options"].update(size=int(TINY["--size"]), iterations=int(TINY["--iterations"]))
            return job
    raise AssertionError("docs/protocol.md shows no job")


def make_job(path: Path) -> Path:
    job = protocol_job()
    picture(path.parent / job["content"]["path"])
    for index, style in enumerate(job["styles"]):
        picture(path.parent / style["path"], index, style=True)
    path.write_text(json.dumps(job))
    return path.parent / job["output"]["path"]


# -- running a command -----------------------------------------------------------------------------


@dataclass
class Place:
    """Where a command runs: its folder, home and environment."""

    work: Path
    home: Path
    env: dict[str, str]

    def path(self, name: str) -> Path:
        return self.home / name[2:] if name.startswith("~/") else self.work / name


def make_place(tmp_path: Path, weights: Path) -> Place:
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    (home / ".config/GIMP/3.0").mkdir(parents=True)  # a GIMP profile for the installer to find
    env = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV}
    env.update(HOME=str(home), NST_WEIGHTS=str(weights), TORCH_HOME=str(tmp_path / "torch"))
    return Place(work, home, env)


def set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    if flag in argv:
        return [*argv[: argv.index(flag) + 1], value, *argv[argv.index(flag) + 2 :]]
    return [*argv, flag, value]


def tiny(argv: list[str]) -> list[str]:
    for flag, value in TINY.items():
        argv = set_flag(argv, flag, value)
    return argv


def with_server(argv: list[str], place: Place, served: Served) -> list[str]:
    """Every --server the loopback service, its token in the --token-file the command names."""
    argv = [served.url if i and argv[i - 1] == "--server" else a for i, a in enumerate(argv)]
    token = place.path(argv[argv.index("--token-file") + 1])
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(served.token)
    return argv


def prepare_engine(argv: list[str], args: argparse.Namespace, place: Place) -> tuple[list[str], list[Path]]:
    """The files `args` reads, made; the command's argv; the outputs it must write."""
    expected = []
    if args.command == "stylize":
        picture(place.path(args.content))
        for index, style in enumerate(args.styles):
            if style not in PAINTINGS:  # a bundled painting's name: the engine has the file
                picture(place.path(style), index, style=True)
        for index, name in enumerate(args.style_masks or ()):
            mask(place.path(name), index, len(args.style_masks))
        if not args.dry_run:
            argv, expected = tiny(argv), [place.path(args.output)]
    elif args.command == "batch":
        for name in args.inputs:
            if name.endswith("/"):
                pictures_in(place.path(name), 3)
            else:
                picture(place.path(name))
        for index, style in enumerate(args.style):
            if style not in PAINTINGS:
                picture(place.path(style), index, style=True)
        argv, expected = tiny(argv), [place.path(args.output)]
    elif args.command == "run-job":
        expected = [make_job(place.path(args.job))]
    return argv, expected


def prepare(
    command: DocCommand, place: Place, request: pytest.FixtureRequest
) -> tuple[list[str], list[Path]]:
    # No shell runs the command: `~/` is expanded here, as a shell would.
    argv = [sys.executable, *(str(place.path(a)) if a.startswith("~/") else a for a in command.argv[1:])]
    if "--server" in argv:
        argv = with_server(argv, place, request.getfixturevalue("loopback_service"))
    if is_installer(command):
        return [sys.executable, str(REPO / "install.py"), *argv[2:], "--dry-run"], []
    place.env["PYTHONPATH"] = str(REPO)  # the engine of this checkout
    if parse_error(command):
        return argv, []
    return prepare_engine(argv, engine_args(command), place)


def failure(command: DocCommand, argv: list[str], code: int | None, stderr: str) -> str:
    return (
        f"{command.where}: `{command.text}` failed (exit {code})\n"
        f"  ran: {shlex.join(argv)}\n  stderr: {stderr[-3000:].strip()}"
    )


def serve_until_listening(command: DocCommand, argv: list[str], place: Place) -> None:
    """`serve` must print its `listening` line (on a free port), then stop cleanly on SIGTERM."""
    argv = set_flag(argv, "--port", "0")
    log = place.work / "serve.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            argv,
            cwd=place.work,
            env=place.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            ready = select.select([process.stdout], [], [], 120)[0]
            line = process.stdout.readline().decode() if ready else ""
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(60)
    assert line.startswith('{"event": "listening"'), failure(command, argv, process.poll(), log.read_text())
    assert code == 0, failure(command, argv, code, log.read_text())


@pytest.fixture(scope="module")
def loopback_service(tmp_path_factory: pytest.TempPathFactory, vgg19_weights: Path):
    served = start_server(tmp_path_factory.mktemp("service"), vgg19_weights)
    yield served
    stop_server(served)


@pytest.mark.parametrize("command", RUNNABLE, ids=[c.where.split(",")[0] for c in RUNNABLE])
def test_doc_command_runs(
    command: DocCommand, tmp_path: Path, vgg19_weights: Path, request: pytest.FixtureRequest
) -> None:
    place = make_place(tmp_path, vgg19_weights)
    argv, outputs = prepare(command, place, request)
    if argv[3:4] == ["serve"]:
        return serve_until_listening(command, argv, place)
    done = subprocess.run(
        argv,
        cwd=place.work,
        env=place.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, failure(command, argv, done.returncode, done.stderr)
    for output in outputs:
        assert output.exists() and (output.is_file() or any(output.iterdir())), failure(
            command, argv, done.returncode, f"{done.stderr}\n(no output at {output})"
        )
