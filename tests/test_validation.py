"""Bad numbers and malformed requests. Every number a user gives is checked once (options.check_options,
cli.check_flags) and refused alike by the command line (exit 2, one line), a job file (an `error`
event, code 2) and the engine service (400, one `error` object); the service's request parser, fuzzed
on loopback, answers every malformed body with a 4xx, logs no traceback and keeps no job."""

from __future__ import annotations

import http.client
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from servers import Served, serving, wait_until

from nst_core import cli, client, wire
from nst_core.presets import DEFAULT_PRESET, PRESETS

pytestmark = pytest.mark.usefixtures("isolated_data")

NAN, INF = math.nan, math.inf
LAYERS = len(PRESETS[DEFAULT_PRESET].style_layers)
ZERO = None  # the row's weights are all zero: a message of its own
LARGE = "1e13"  # as the user would type it

# (option, bad value, how the message shows it). A list's first weight is the bad one.
BAD_NUMBERS = [
    ("style_blend", [NAN], "nan"),
    ("style_blend", [INF], "inf"),
    ("style_blend", [-INF], "-inf"),
    ("style_blend", [-1.0], r"-1(\.0)?"),
    ("style_blend", [0.0], ZERO),
    ("style_blend", [1e13], LARGE),
    ("style_layer_weights", [NAN] + [1.0] * (LAYERS - 1), "nan"),
    ("style_layer_weights", [INF] + [1.0] * (LAYERS - 1), "inf"),
    ("style_layer_weights", [-INF] + [1.0] * (LAYERS - 1), "-inf"),
    ("style_layer_weights", [-1.0] + [1.0] * (LAYERS - 1), r"-1(\.0)?"),
    ("style_layer_weights", [0.0] * LAYERS, ZERO),
    ("style_layer_weights", [1e13] + [1.0] * (LAYERS - 1), LARGE),
    ("content_weight", NAN, "nan"),
    ("style_weight", INF, "inf"),
    ("tv_weight", -INF, "-inf"),
    ("strength", -1.0, r"-1(\.0)?"),
    ("learning_rate", 0.0, r"0(\.0)?"),
    ("style_scale", NAN, "nan"),
    ("max_memory", INF, "inf"),
    ("iterations", 0, "0"),
    ("seed", -1, "-1"),
    ("size", 10**6, "1000000"),
]
IDS = [f"{name}={value}" for name, value, _ in BAD_NUMBERS]


def expected(name: str, shown: str | None) -> str:
    """The one line's pattern: the flag, the value as given and the fix."""
    option = "--" + name.replace("_", "-")
    if shown is ZERO:
        return f"^{option} must not be all zero: make at least one weight positive"
    return f"^{option} {shown} is out of range: use a value from "


def flag(name: str, value: object) -> str:
    """`--name=value` (a list comma-separated): the `=` keeps a value such as -inf from reading as a flag."""
    text = ",".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return f"--{name.replace('_', '-')}={text}"


@pytest.mark.parametrize(("name", "value", "shown"), BAD_NUMBERS, ids=IDS)
def test_the_command_line_refuses_a_bad_number_in_one_line(
    name, value, shown, job_files, tmp_path, capsys
) -> None:
    output = tmp_path / "out.png"
    argv = job_files.stylize(output, "--dry-run", "--device", "cpu", flag(name, value))
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "", captured
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured.err
    assert re.search(expected(name, shown), captured.err[len("error: ") :]), captured.err


@pytest.mark.parametrize(("name", "value", "shown"), BAD_NUMBERS, ids=IDS)
def test_a_job_file_with_a_bad_number_is_one_error_event(
    name, value, shown, job_files, tmp_path, capsys
) -> None:
    style: dict = {"path": str(job_files.style)}
    options = {"size": 32, "iterations": 2, "device": "cpu", "weights": str(job_files.weights)}
    if name == "style_blend":
        style["weight"] = value[0]  # a style's own weight: the same check as options.style_blend
    else:
        options[name] = value
    job = {
        "version": 1,
        "content": {"path": str(job_files.content)},
        "styles": [style],
        "options": options,
        "output": {"path": "result.png"},
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(job))  # NaN and Infinity as Python's json writes them
    code = cli.main(["run-job", str(path)])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 2 and [e["event"] for e in events] == ["error"], events
    assert events[0]["code"] == 2 and re.search(expected(name, shown), events[0]["message"]), events
    assert not (tmp_path / "result.png").exists()


# -- the protocol's rules, shared by job files and service requests --------------------------------------

GOOD_LAYOUT = {"width": 4, "height": 4, "channels": 4, "format": "u8"}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"width": 0}, "needs positive whole `width`, `height` and `channels`"),
        ({"height": True}, "needs positive whole `width`, `height` and `channels`"),
        ({"channels": 5}, "`channels` is 5; use 1 to 4"),
        ({"format": "u16"}, "`format` is 'u16'; use u8 or float32"),
    ],
)
def test_a_job_file_and_a_service_request_refuse_a_raw_layout_alike(
    tmp_path: Path, change: dict, problem: str
) -> None:
    """One rule, one wording: only the subject and the protocol's own frame differ."""
    from nst_core.errors import UsageError
    from nst_core.job import parse_job

    layout = {**GOOD_LAYOUT, **change}
    job = {"version": 1, "content": {"raw": "c.raw", **layout}, "styles": [{"path": "s.png"}], "output": {}}
    header = {"version": 1, "content": {"bytes": 64, "raw": layout}, "styles": [{"bytes": 5}]}
    with pytest.raises(UsageError) as from_job:
        parse_job(job, tmp_path)
    with pytest.raises(UsageError) as from_wire:
        wire.parse_header(json.dumps(header).encode(), wire.Limits(), ("cpu",))
    assert from_job.value.message == f"Bad job file: raw `content` {problem} (see docs/protocol.md)."
    assert from_wire.value.message == f"Bad service request: content's raw {problem} (see docs/protocol.md)."


# -- the commands' own numbers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "value", "shown"),
    [
        (["serve", "--idle-timeout=nan"], "--idle-timeout", "nan"),
        (["serve", "--max-request-mb=inf"], "--max-request-mb", "inf"),
        (["serve", "--max-pixels=0"], "--max-pixels", "0"),
        (["serve", "--port=70000"], "--port", "70000"),
        (["serve", "--upload-timeout=-inf"], "--upload-timeout", "-inf"),
        (["batch", "--temporal-weight=nan"], "--temporal-weight", "nan"),
        (["batch", "--frames-per-task=0"], "--frames-per-task", "0"),
        (["batch", "--overlap=-1"], "--overlap", "-1"),
        (["batch", "--ray-cpus=-2"], "--ray-cpus", "-2"),
        (["plan", "--styles=1001"], "--styles", "1001"),
    ],
)
def test_a_commands_own_bad_number_is_one_line_before_it_starts(
    command, value, shown, tmp_path, capsys
) -> None:
    missing = str(tmp_path / "missing.pth")  # a command that went on would stop here, with exit 4
    given = {
        "serve": ["--port=0", "--token-file", str(tmp_path / "token"), "--weights", missing],
        "batch": [str(tmp_path), "--style", "s.png", "-o", str(tmp_path / "out"), "--weights", missing],
        "plan": ["--width=64", "--height=64", "--weights", missing],
    }[command[0]]
    code = cli.main([command[0], *given, *command[1:]])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {value} {shown} is out of range: use a value from "), err
    assert not (tmp_path / "token").exists() and not (tmp_path / "out").exists()


# -- the service ------------------------------------------------------------------------------------------

STALL = 2  # the server's --upload-timeout: how long the fuzz's short bodies wait for their 400


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vgg19_weights: Path):
    with serving(tmp_path_factory.mktemp("server"), vgg19_weights, "--upload-timeout", str(STALL)) as served:
        yield served


def post(served: Served, body: bytes, length: int | None = None) -> tuple[int, dict]:
    """POST `body` to 127.0.0.1 with `length` as its Content-Length (default its own): the status and
    the answer's first JSON line."""
    connection = http.client.HTTPConnection("127.0.0.1", served.server.parts.port, timeout=STALL + 30)
    headers = {
        "Authorization": f"Bearer {served.token}",
        "Content-Type": wire.CONTENT_TYPE,
        "Content-Length": str(len(body) if length is None else length),
    }
    try:
        connection.request("POST", "/v1/jobs", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.readline())
    finally:
        connection.close()


def log_size(served: Served) -> int:
    return (served.token_file.parent / "server.log").stat().st_size


def assert_unharmed(served: Served, since: int) -> None:
    """The server answers, keeps no job, and has logged no traceback since the log was `since` long."""
    assert wait_until(lambda: client.health(served.server)["jobs"] == 0, 10)
    with open(served.token_file.parent / "server.log", "rb") as log:
        log.seek(since)
        written = log.read().decode(errors="replace")
    assert "Traceback" not in written and "Error handling request" not in written, written[-3000:]


CONTENT = np.arange(4 * 4 * 4, dtype=np.uint8).tobytes()
LAYOUT = {"width": 4, "height": 4, "format": "u8", "channels": 4}


def request(options: dict, weight: float = 1.0) -> bytes:
    return wire.request_body((CONTENT, LAYOUT), [(b"style bytes", weight)], options, result_format="u8")


@pytest.mark.parametrize(("name", "value", "shown"), BAD_NUMBERS, ids=IDS)
def test_the_service_refuses_a_bad_number_with_400(served, name, value, shown) -> None:
    options = {"size": 32, "iterations": 2}
    if name == "style_blend":
        body = request(options, weight=value[0])  # a style's own weight: the same check
    else:
        body = request({**options, name: value})
    since = log_size(served)
    status, event = post(served, body)
    assert status == 400 and event["event"] == "error" and event["code"] == 2, (status, event)
    assert re.search(expected(name, shown), event["message"]), event
    assert_unharmed(served, since)


HEADER, _, IMAGES = request({"size": 32}).partition(b"\n")


def header_with(**change: object) -> bytes:
    return json.dumps({**json.loads(HEADER), **change}).encode() + b"\n" + IMAGES


FULL = HEADER + b"\n" + IMAGES
NESTED = b"[" * 60000 + b"\n"


@pytest.mark.parametrize(
    ("body", "length", "message"),
    [
        (b"", None, "the body is empty"),
        (HEADER[:30] + b"\n" + IMAGES, None, "the header line is not JSON"),
        (HEADER[:30], len(FULL), "the body stopped before the header line"),
        (HEADER, None, "the header line has no newline"),
        (FULL[:-5], len(FULL), "the body stopped before the images it announces"),
        (FULL[:-5], None, f"Content-Length is {len(FULL) - 5} but the header announces {len(FULL)}"),
        (bytes(range(256)) * 3, None, "the header line is not JSON"),
        (b"\xff\xfe" * 300, None, "the header line has no newline"),
        (NESTED, None, "the header line is not JSON"),
        (header_with(result={"format": ["u8"]}), None, "result `format` is \\['u8'\\]"),
        (header_with(content={"bytes": 64, "raw": {**LAYOUT, "format": {}}}), None, "raw `format` is {}"),
        (header_with(content={"bytes": 60, "raw": LAYOUT}), None, "content has 60 bytes but 4x4x4 u8 is 64"),
    ],
    ids=[
        "empty",
        "truncated-header",
        "header-stops",
        "header-without-newline",
        "body-shorter-than-content-length",
        "part-shorter-than-declared",
        "garbage",
        "garbage-without-newline",
        "nested-too-deep",
        "list-for-a-format",
        "object-for-a-format",
        "raw-part-shorter-than-its-layout",
    ],
)
def test_a_malformed_request_is_a_4xx_and_leaves_the_server_unharmed(served, body, length, message) -> None:
    since = log_size(served)
    status, event = post(served, body, length)
    assert 400 <= status < 500 and event["event"] == "error", (status, event)
    assert re.search(message, event["message"]) and "\n" not in event["message"], event
    assert_unharmed(served, since)
