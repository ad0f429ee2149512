"""The engine service's snapshots and stop-and-keep (docs/protocol.md, "The engine service"): snapshot
events with their pixels in the stream, POST .../stop, and the plug-ins' client of both."""

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
from nst_core.options import SNAPSHOT_EVERY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plug-ins" / "neural_style"))
import nst_service  # noqa: E402 (the plug-ins' folder is on the path only from here)

LONG = {"size": 48, "iterations": 100000, "device": "cpu", "seed": 3, "multiscale": False}
PIXELS = LAYOUT["width"] * LAYOUT["height"] * LAYOUT["channels"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, vgg19_weights: Path):
    with serving(tmp_path_factory.mktemp("server"), vgg19_weights) as served:
        yield served


def with_snapshots(body: bytes, every: object) -> bytes:
    header, rest = body.split(b"\n", 1)
    return json.dumps({**json.loads(header), "snapshot_every": every}).encode() + b"\n" + rest


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
    response = request(served, "POST", "/v1/jobs", with_snapshots(body_for(style_png, LONG), 0.2))
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
    response = request(served, "POST", "/v1/jobs", with_snapshots(body_for(style_png, LONG), every))
    assert response.status == 400
    message = json.loads(response.read())["message"]
    assert message == (
        f"Bad service request: `snapshot_every` is {every!r}; use seconds from 0.2 to 3600 "
        "(see docs/protocol.md)."
    )
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
