"""The engine service's snapshots, stop-and-keep and previews (docs/protocol.md, "The engine service"):
snapshot events with their pixels in the stream, POST .../stop, a `preview` that follows the last one,
and the plug-ins' client of them."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from servers import Served, serving, wait_until
from test_service import LAYOUT, body_for, content_pixels, local_result

from nst_core import client
from nst_core.events import PROTOCOL_VERSION
from nst_core.options import SNAPSHOT_EVERY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plug-ins" / "neural_style"))
import nst_service  # noqa: E402 (the plug-ins' folder is on the path only from here)

LONG = {"size": 48, "iterations": 100000, "device": "cpu", "seed": 3, "multiscale": False}
PIXELS = LAYOUT["width"] * LAYOUT["height"] * LAYOUT["channels"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vgg19_weights: Path):
    with serving(tmp_path_factory.mktemp("server"), vgg19_weights) as served:
        yield served


def with_header(body: bytes, **keys: object) -> bytes:
    header, rest = body.split(b"\n", 1)
    return json.dumps({**json.loads(header), **keys}).encode() + b"\n" + rest


def request(served: Served, method: str, path: str, body: bytes = b"") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection(
        served.server.parts.hostname, served.server.parts.port, timeout=60
    )
    connection.request(method, path, body=body, headers={"Authorization": f"Bearer {served.token}"})
    return connection.getresponse()


def quiet(served: Served) -> None:
    assert wait_until(lambda: client.health(served.server)["jobs"] == 0, 30)


def test_snapshots_stream_with_their_pixels_and_stop_keeps_that_many_iterations(
    served, vgg19_weights, style_png
) -> None:
    response = request(served, "POST", "/v1/jobs", with_header(body_for(style_png, LONG), snapshot_every=0.2))
    assert response.status == 200
    job = json.loads(response.readline())["job"]
    snapshots = []
    while True:
        event = json.loads(response.readline())
        if event["event"] == "snapshot":
            snapshots.append((event, response.read(event["bytes"])))
            if len(snapshots) == 2:
                stopping = request(served, "POST", f"/v1/jobs/{job}/stop")
                assert (stopping.status, json.loads(stopping.read())) == (200, {"job": job, "stopping": True})
        if event["event"] in ("done", "error"):
            break
    result = response.read(event["bytes"])
    assert event["event"] == "done" and event["stopped"] is True, event
    for shot, data in snapshots:
        assert "path" not in shot and shot["format"] == "u8" and shot["full_size"] is True
        assert (shot["width"], shot["height"], shot["channels"]) == (48, 32, 4) and len(data) == PIXELS
        alpha = np.frombuffer(data, np.uint8).reshape(32, 48, 4)[..., 3]
        assert np.array_equal(alpha, np.frombuffer(content_pixels(), np.uint8).reshape(32, 48, 4)[..., 3])
    assert snapshots[0][0]["iteration"] < snapshots[1][0]["iteration"] <= event["iteration"]
    assert result == local_result(vgg19_weights, style_png, {**LONG, "iterations": event["iteration"]})
    assert request(served, "POST", f"/v1/jobs/{job}/stop").status == 404  # finished: nothing to stop
    quiet(served)


@pytest.mark.parametrize("every", [0.1, "2", True, 4000])
def test_a_bad_snapshot_every_is_refused_from_the_header(served, style_png, every) -> None:
    body = with_header(body_for(style_png, LONG), snapshot_every=every)
    response = request(served, "POST", "/v1/jobs", body)
    assert response.status == 400
    message = json.loads(response.read())["message"]
    assert message == (
        f"Bad service request: `snapshot_every` is {every!r}; use seconds from 0.2 to 3600 "
        "(see docs/protocol.md)."
    )
    quiet(served)


def test_an_animation_takes_no_snapshots_and_refuses_a_stop_clearly(served, style_png) -> None:
    png = style_png.read_bytes()  # three frames of one picture, and the style
    header = {
        "version": PROTOCOL_VERSION,
        "content": {"bytes": len(png)},
        "styles": [{"bytes": len(png), "weight": 1.0}],
        "options": LONG,
        "result": {"format": "u8", "size": "working"},
        "frames": [{"bytes": len(png)}, {"bytes": len(png)}],
    }
    body = json.dumps(header).encode() + b"\n" + png * 4
    refused = request(served, "POST", "/v1/jobs", with_header(body, snapshot_every=1))
    assert refused.status == 400
    assert "frames take no `snapshot_every`" in json.loads(refused.read())["message"]
    response = request(served, "POST", "/v1/jobs", body)
    job = json.loads(response.readline())["job"]
    stopping = request(served, "POST", f"/v1/jobs/{job}/stop")
    assert stopping.status == 409
    assert "cancel it (DELETE) or let it finish" in json.loads(stopping.read())["message"]
    assert request(served, "DELETE", f"/v1/jobs/{job}").status == 200
    events = [json.loads(line) for line in response]
    assert events[-1]["event"] == "error" and not any(e["event"] == "snapshot" for e in events)
    quiet(served)


def test_the_plugins_client_passes_snapshots_on_and_stops_and_keeps(served, style_png) -> None:
    server = nst_service.Server(served.url, served.token)
    shots: list[tuple] = []

    def on_snapshot(pixels: bytes, width: int, height: int, channels: int, fraction: float) -> None:
        shots.append((len(pixels), width, height, channels, fraction))
        server.stop()

    styles = [(str(style_png), 1.0)]
    result, started = server.run(
        content_pixels(), LAYOUT, styles, LONG, lambda *_: True, on_snapshot=on_snapshot
    )
    assert started["event"] == "start" and len(result) == PIXELS
    assert shots and all(shot[:4] == (PIXELS, 48, 32, 4) and 0 < shot[4] < 1 for shot in shots)
    quiet(served)


def test_the_plugins_client_asks_for_the_engine_s_default_spacing() -> None:
    assert nst_service.SNAPSHOT_EVERY == SNAPSHOT_EVERY


def streamed(response: http.client.HTTPResponse) -> tuple[list[dict], bytes]:
    """A job's events to its end, and its result's bytes."""
    assert response.status == 200
    events = []
    while events[-1:] == [] or events[-1]["event"] not in ("done", "error"):
        events.append(json.loads(response.readline()))
    return events, response.read(events[-1].get("bytes", 0))


def test_a_served_preview_again_is_the_last_one_and_a_job_never_is(served, vgg19_weights, style_png) -> None:
    options = {**LONG, "iterations": 4}
    body = with_header(body_for(style_png, options), preview=True)
    events, first = streamed(request(served, "POST", "/v1/jobs", body))
    assert any(e["event"] == "progress" for e in events) and events[-1]["event"] == "done"
    events, again = streamed(request(served, "POST", "/v1/jobs", body))
    assert [e["event"] for e in events] == ["accepted", "start", "done"] and again == first
    events, job = streamed(request(served, "POST", "/v1/jobs", body_for(style_png, options)))
    assert sum(e["event"] == "progress" for e in events) == 4
    assert job == first == local_result(vgg19_weights, style_png, options)
    quiet(served)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"preview": "yes"}, "`preview` is 'yes'; use true or false"),
        ({"preview": True, "frames": [{"bytes": 1}], "result": {"size": "working"}}, "take no `preview`"),
    ],
)
def test_a_bad_preview_is_refused_from_the_header(served, style_png, keys, message) -> None:
    response = request(served, "POST", "/v1/jobs", with_header(body_for(style_png, LONG), **keys))
    assert response.status == 400 and message in json.loads(response.read())["message"]
    quiet(served)
