"""The engine service (`serve`) on loopback: jobs, the token, the limits, cancelling, the idle timeout,
a server that dies, several servers, and the command line as its client."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import Served, serving, start_server, stop_server, wait_until

from nst_core import client, wire
from nst_core.events import Sink
from nst_core.images import load_image, to_array
from nst_core.options import STARTS, Options
from nst_core.output import raw_bytes
from nst_core.run import stylize

LIMITS = ("--max-request-mb", "4", "--max-pixels", "250000")
SMALL = {"size": 32, "iterations": 3, "device": "cpu"}


def content_pixels(width: int = 48, height: int = 32) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgba = np.stack([x * 5, y * 7, 128 + 0 * x, np.where(x < 40, 255, 100)], axis=-1)
    return rgba.astype(np.uint8).tobytes()


LAYOUT = {"width": 48, "height": 32, "format": "u8", "channels": 4}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vgg19_weights: Path):
    with serving(tmp_path_factory.mktemp("server"), vgg19_weights, *LIMITS) as served:
        yield served


def body_for(style_png: Path, options: dict, content: bytes | None = None) -> bytes:
    content = content_pixels() if content is None else content
    return wire.request_body((content, LAYOUT), [(style_png.read_bytes(), 1.0)], options, result_format="u8")


def local_result(weights: Path, style_png: Path, options: dict) -> bytes:
    """The same job run here, as `run-job` would: the reference a server's bytes must equal."""
    content = to_array(np.frombuffer(content_pixels(), np.uint8).reshape(32, 48, 4))
    settings = Options.from_dict({**options, "weights": str(weights), "style_blend": [1.0]})
    return raw_bytes(stylize(content, [load_image(style_png)], settings), "u8")


def post(served: Served, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection(
        served.server.parts.hostname, served.server.parts.port, timeout=60
    )
    given = {"Authorization": f"Bearer {served.token}", "Content-Type": wire.CONTENT_TYPE}
    connection.request("POST", "/v1/jobs", body=body, headers={**given, **(headers or {})})
    response = connection.getresponse()
    first = response.readline()
    connection.close()
    return response.status, json.loads(first)


def quiet(served: Served) -> dict:
    """The server's health once every job is gone: nothing queued, running or remembered."""
    assert wait_until(lambda: client.health(served.server)["jobs"] == 0, 30)
    state = client.health(served.server)
    assert (state["running"], state["queued"], state["jobs"]) == (0, 0, 0)
    return state


def test_a_job_on_the_server_equals_the_same_job_run_here(served, vgg19_weights, style_png) -> None:
    options = {**SMALL, "seed": 4}
    events: list[dict] = []

    class Recorder(Sink):
        def _show(self, event: dict) -> None:
            events.append(event)

    done, data = client.run_on_server(served.server, body_for(style_png, options), Recorder())
    assert data == local_result(vgg19_weights, style_png, options)
    assert (done["width"], done["height"], done["channels"], done["format"]) == (48, 32, 4, "u8")
    assert [e["event"] for e in events][0] == "start" and events[-1]["fraction"] == pytest.approx(1.0)
    again = client.run_on_server(served.server, body_for(style_png, options), Sink())[1]
    assert again == data  # a warm engine changes nothing in the result
    quiet(served)


def test_a_job_with_style_masks_on_the_server_equals_the_same_job_run_here(
    served, vgg19_weights, style_png
) -> None:
    left = np.zeros((16, 24), np.uint8)  # half the content's size: resized to it on both sides
    left[:, :12] = 255
    buffer = io.BytesIO()
    Image.fromarray(left, "L").save(buffer, format="PNG")
    options = {**SMALL, "seed": 3}
    body = wire.request_body(
        (content_pixels(), LAYOUT), [(style_png.read_bytes(), 1.0)], options, "u8", masks=[buffer.getvalue()]
    )
    data = client.run_on_server(served.server, body, Sink())[1]
    content = to_array(np.frombuffer(content_pixels(), np.uint8).reshape(32, 48, 4))
    settings = Options.from_dict({**options, "weights": str(vgg19_weights), "style_blend": [1.0]})
    mask = [to_array(left)]
    here = stylize(content, [load_image(style_png)], settings, masks=mask)
    assert data == raw_bytes(here, "u8")
    assert data != local_result(vgg19_weights, style_png, options)  # the mask changed the picture
    quiet(served)


def test_the_command_line_runs_on_a_server_and_writes_what_a_local_run_writes(
    served, content_png, style_png, vgg19_weights, tmp_path
) -> None:
    flags = ["--size", "32", "--iterations", "2", "--seed", "2"]
    remote, here = tmp_path / "remote.png", tmp_path / "here.png"
    base = [sys.executable, "-m", "nst_core", "stylize", str(content_png), str(style_png)]
    served_run = subprocess.run(
        # --weights is for running here when no server answers: the server uses its own.
        [*base, "-o", str(remote), *flags, "--server", served.url, "--token-file", str(served.token_file)]
        + ["--weights", str(vgg19_weights)],
        capture_output=True,
        text=True,
    )
    assert served_run.returncode == 0, served_run.stderr
    local = subprocess.run(
        [*base, "-o", str(here), *flags, "--weights", str(vgg19_weights)], capture_output=True, text=True
    )
    assert local.returncode == 0, local.stderr
    assert remote.read_bytes() == here.read_bytes()
    assert "running here" not in served_run.stderr


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": ""}, "This server needs its token"),
        ({"Authorization": "Bearer wrong-token-of-some-length"}, "Wrong token for this server"),
        ({"Authorization": "Basic abc"}, "This server needs its token"),
    ],
    ids=["none", "wrong", "other-scheme"],
)
def test_every_request_needs_the_token(served, style_png, headers, message) -> None:
    status, event = post(served, body_for(style_png, {**SMALL, "seed": 1}), headers)
    assert status == 401 and event["message"].startswith(message) and event["code"] == 2
    for method, path in (("GET", "/v1/health"), ("DELETE", "/v1/jobs/x")):
        connection = http.client.HTTPConnection(served.server.parts.hostname, served.server.parts.port)
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        assert response.status == 401 and json.loads(response.read())["message"].startswith(message)
    quiet(served)


def png_declaring(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG that declare a big picture (a decompression bomb's header)."""
    stream = io.BytesIO()
    Image.new("L", (width, height)).save(stream, format="PNG", optimize=True)
    return stream.getvalue()


def test_oversized_requests_are_refused_from_their_header(served, style_png) -> None:
    big_raw = {
        "bytes": 1000 * 1000 * 4,
        "raw": {"width": 1000, "height": 1000, "format": "u8", "channels": 4},
    }
    header = {"version": 1, "content": big_raw, "styles": [{"bytes": 10}], "options": {}}
    status, event = post(served, json.dumps(header).encode() + b"\n")
    limit = "is 1000x1000 = 1 megapixel, more than this server's limit of 0.25 megapixels: scale it down"
    assert status == 400 and limit in event["message"]

    bomb = png_declaring(1000, 1000)
    assert len(bomb) < 10_000
    body = wire.request_body((bomb, None), [(style_png.read_bytes(), 1.0)], SMALL)
    status, event = post(served, body)
    assert status == 400 and limit in event["message"]

    huge = b"\0" * (5 * 1024 * 1024)
    status, event = post(served, wire.request_body((huge, None), [(b"x", 1.0)], SMALL))
    assert status == 400 and "more than this server's limit of 4 MiB" in event["message"]
    assert "--max-request-mb" in event["message"]

    status, event = post(served, b"{" + b" " * (128 * 1024))
    assert status == 400 and "header line is too long" in event["message"]
    quiet(served)
    # ... and a job after them runs as ever
    assert client.run_on_server(served.server, body_for(style_png, {**SMALL, "seed": 9}), Sink())[1]


def test_an_upload_without_a_length_is_refused(served, style_png) -> None:
    connection = http.client.HTTPConnection(served.server.parts.hostname, served.server.parts.port)
    body = iter([body_for(style_png, SMALL)])  # an iterable body goes chunked, with no Content-Length
    headers = {"Authorization": f"Bearer {served.token}", "Transfer-Encoding": "chunked"}
    connection.request("POST", "/v1/jobs", body=body, headers=headers, encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 400 and "no Content-Length" in json.loads(response.read())["message"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"content": {"path": "/etc/passwd", "bytes": 1}}, "content names a file"),
        ({"options": {"weights": "/etc/passwd"}}, "name files on the server"),
        ({"options": {"init": "/etc/passwd"}}, "`init` names a file"),
        ({"options": {"device": "cuda"}}, "This server runs on cpu, not cuda"),
        ({"version": 2}, "Service protocol version 2 is not supported"),
        ({"extra": 1}, "unknown key(s) extra"),
        ({"frames": []}, "`frames` must be a non-empty list"),
        ({"frames": [{"bytes": 10}]}, "ask for result `size` working"),
        ({"frames": [{"bytes": 10}], "result": {"size": "working"}}, "Content-Length is"),
    ],
)
def test_a_request_cannot_name_files_or_things_the_server_does_not_have(served, style_png, change, message):
    body = body_for(style_png, SMALL)
    line, rest = body.split(b"\n", 1)
    header = {**json.loads(line), **change}
    if "options" in change:
        header["options"] = {**SMALL, **change["options"]}
    status, event = post(served, json.dumps(header).encode() + b"\n" + rest)
    assert status in (400, 409) and message in event["message"], event
    quiet(served)


def test_a_request_may_start_from_any_start_named_by_a_word(style_png: Path) -> None:
    body = body_for(style_png, SMALL)
    header = json.loads(body.split(b"\n", 1)[0])
    for start in STARTS:
        header["options"] = {**SMALL, "init": start}
        assert wire.parse_header(json.dumps(header).encode(), wire.Limits(), ("cpu",)).options.init == start


def stream_events(served: Served, body: bytes):
    connection = http.client.HTTPConnection(
        served.server.parts.hostname, served.server.parts.port, timeout=60
    )
    headers = {"Authorization": f"Bearer {served.token}", "Content-Type": wire.CONTENT_TYPE}
    connection.request("POST", "/v1/jobs", body=body, headers=headers)
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


LONG = {"size": 64, "iterations": 400, "device": "cpu", "seed": 3}


def test_a_job_is_cancelled_by_its_id_and_by_its_client_leaving(served, style_png) -> None:
    connection, response = stream_events(served, body_for(style_png, LONG))
    accepted = json.loads(response.readline())
    assert accepted["event"] == "accepted"
    while json.loads(response.readline())["event"] != "progress":
        pass
    # Another id changes nothing; its own id cancels it.
    other = http.client.HTTPConnection(served.server.parts.hostname, served.server.parts.port)
    other.request("DELETE", "/v1/jobs/not-a-job", headers={"Authorization": f"Bearer {served.token}"})
    assert other.getresponse().status == 404
    client._cancel(served.server, accepted["job"])
    events = [json.loads(line) for line in iter(response.readline, b"")]
    assert events[-1]["event"] == "error" and events[-1]["code"] == 130
    connection.close()
    quiet(served)

    connection, response = stream_events(served, body_for(style_png, LONG))
    while json.loads(response.readline())["event"] != "progress":
        pass
    connection.close()  # the client goes away mid-stream
    quiet(served)


def test_the_idle_timeout_ends_a_server_and_removes_its_state(tmp_path, vgg19_weights, style_png) -> None:
    served = start_server(tmp_path, vgg19_weights, "--idle-timeout", "2")
    try:
        assert json.loads(served.state_file.read_text())["pid"] == served.process.pid
        client.run_on_server(served.server, body_for(style_png, SMALL), Sink())  # a job resets the clock
        assert served.process.wait(30) == 0
        assert not served.state_file.exists()
    finally:
        stop_server(served)


def test_a_server_killed_during_a_job_is_one_clear_line(tmp_path, vgg19_weights, style_png) -> None:
    served = start_server(tmp_path, vgg19_weights)
    killer = threading.Timer(3.0, lambda: served.process.send_signal(signal.SIGKILL))
    killer.start()
    with pytest.raises(client.ServiceError, match="stopped answering during the job") as caught:
        client.run_on_server(served.server, body_for(style_png, LONG), Sink())
    assert "\n" not in caught.value.message and caught.value.code == 7
    killer.join()
    stop_server(served)


def test_the_first_free_server_takes_the_job_and_a_busy_one_beats_none(
    served, tmp_path, vgg19_weights, style_png
) -> None:
    dead = client.Server("http://127.0.0.1:9", served.token)
    second = start_server(tmp_path, vgg19_weights)
    try:
        token = second.token
        busy = client.Server(served.url, served.token)
        connection, response = stream_events(served, body_for(style_png, LONG))  # makes `served` busy
        while json.loads(response.readline())["event"] != "progress":
            pass
        free = client.Server(second.url, token)
        assert client.pick_server([dead, busy, free])[0] == free
        chosen, passed = client.pick_server([dead, busy])
        assert chosen == busy and "does not answer" in passed[0]
        assert client.pick_server([dead]) == (None, passed)
        connection.close()
    finally:
        stop_server(second)
    quiet(served)


def test_the_command_line_runs_here_when_no_server_answers(content_png, style_png, vgg19_weights, tmp_path):
    token = tmp_path / "token"
    token.write_text("a-token-that-is-long-enough\n")
    out = tmp_path / "out.png"
    done = subprocess.run(
        [sys.executable, "-m", "nst_core", "stylize", str(content_png), str(style_png), "-o", str(out)]
        + ["--size", "32", "--iterations", "1", "--server", "http://127.0.0.1:9", "--token-file", str(token)],
        capture_output=True,
        text=True,
        env={**os.environ, "NST_WEIGHTS": str(vgg19_weights)},
    )
    assert done.returncode == 0, done.stderr
    assert "no server answers" in done.stderr and "running here" in done.stderr and out.is_file()


def test_serve_writes_a_private_token_when_there_is_none(tmp_path, vgg19_weights) -> None:
    served = start_server(tmp_path, vgg19_weights)
    try:
        assert len(served.token) >= 32 and (served.token_file.stat().st_mode & 0o777) == 0o600
        assert client.health(served.server)["devices"] == ["cpu"]
    finally:
        stop_server(served)
    bad = tmp_path / "short"
    bad.write_text("abc")
    done = subprocess.run(
        [sys.executable, "-m", "nst_core", "serve", "--port", "0", "--token-file", str(bad)]
        + ["--weights", str(vgg19_weights)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "16 or more characters" in done.stderr


def read_bytes(pid: int) -> int:
    """Bytes the process has read through system calls (files and sockets alike)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar")


def test_a_warm_job_reads_no_weights(served, style_png, vgg19_weights) -> None:
    client.run_on_server(served.server, body_for(style_png, {**SMALL, "iterations": 1}), Sink())
    before = read_bytes(served.process.pid)
    client.run_on_server(served.server, body_for(style_png, {**SMALL, "iterations": 1, "seed": 5}), Sink())
    assert read_bytes(served.process.pid) - before < vgg19_weights.stat().st_size / 10


def test_the_service_freezes_what_it_loads_at_the_start_out_of_each_jobs_collection(vgg19_weights) -> None:
    import gc

    from nst_core import service

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        service.warm_start("vgg19", vgg19_weights)
        assert gc.get_freeze_count() > 10_000  # torch's modules, the network
    finally:
        gc.unfreeze()


def test_the_raw_formats_sizes_are_their_numpy_types() -> None:
    """The wire counts a raw part's bytes with `itemsize`; the job and the decoding read it as `dtype`."""
    from nst_core.validate import RAW_FORMATS

    assert {name: np.dtype(f.dtype).itemsize for name, f in RAW_FORMATS.items()} == {"u8": 1, "float32": 4}
    assert {name: f.itemsize for name, f in RAW_FORMATS.items()} == {"u8": 1, "float32": 4}
    assert np.dtype(RAW_FORMATS["float32"].dtype) == np.dtype("<f4")


def test_every_gpu_gets_a_worker_and_a_job_goes_to_the_least_busy_able_one(monkeypatch) -> None:
    import asyncio
    from types import SimpleNamespace

    import torch

    from nst_core import service
    from nst_core.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert service.worker_devices("auto") == [torch.device("cuda", i) for i in range(3)]
    assert service.worker_devices("cuda") == service.worker_devices("auto")
    assert service.worker_devices("cpu") == [torch.device("cpu")]

    class FakeWorker:
        def __init__(self, device: str, load: int) -> None:
            self.device, self.load, self.jobs = torch.device(device), load, []

        def submit(self, job) -> int:
            self.jobs.append(job)
            self.load += 1
            return self.load - 1

    async def scenario() -> None:
        workers = [FakeWorker("cuda:0", 2), FakeWorker("cuda:1", 1), FakeWorker("cpu", 0)]
        hub = service.Service("t" * 20, workers)  # type: ignore[arg-type]

        def job(device: str) -> SimpleNamespace:
            return SimpleNamespace(
                id=device + str(len(hub.jobs)), request=SimpleNamespace(options=Options(device=device))
            )

        assert hub.submit(job("cuda")) == 1 and len(workers[1].jobs) == 1  # the least busy GPU
        assert hub.submit(job("auto")) == 0 and len(workers[2].jobs) == 1  # any device: the idle one
        with pytest.raises(DeviceError, match="no mps device"):
            hub.submit(job("mps"))
        assert len(hub.jobs) == 2

    asyncio.run(scenario())
