"""Watching a run paint through the bridge (plug-ins/neural_style/nst_bridge.py): the engine's snapshots
reach on_snapshot as whole pictures, stop() keeps the picture so far as the result, cancel keeps nothing,
and an engine whose `describe` does not list "snapshots" and "stop" is sent neither.

The tests drive the scripted stand-in engine (tests/fake_engine.py, $FAKE_MODE "paint": a snapshot every
0.3 s until a `stop` line comes on its stdin).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "plug-ins" / "neural_style"))

import nst_bridge  # noqa: E402
from fake_engine import PIXELS, child_record  # noqa: E402
from servers import pid_alive, serving  # noqa: E402

from nst_core.options import describe  # noqa: E402

WIDTH, HEIGHT, CHANNELS = 4, 6, 4


def painting(config: dict, features: list[str]) -> dict:
    return dict(config, engine={"features": features})


def picture(k: int) -> bytes:
    """The stand-in's picture after iteration k."""
    return bytes((255 - b + k) % 256 for b in PIXELS)


def left_half(data: bytes) -> bytes:
    row = WIDTH * CHANNELS
    return b"".join(data[start : start + row // 2] for start in range(0, len(data), row))


def test_snapshots_reach_on_snapshot_whole_and_at_their_size(fake_engine, style_file, tmp_path) -> None:
    seen: list[tuple] = []
    with nst_bridge.EngineRun(painting(fake_engine, ["snapshots", "stop"])) as run:
        run.set_content_raw(PIXELS, WIDTH, HEIGHT, "u8", CHANNELS)
        result = run.run([(style_file, 1.0)], {}, lambda f, t: True, on_snapshot=lambda *s: seen.append(s))
    assert result == bytes(255 - b for b in PIXELS)
    assert seen == [
        (left_half(picture(1)), WIDTH // 2, HEIGHT, CHANNELS, 0.25),  # at the working size
        (picture(2), WIDTH, HEIGHT, CHANNELS, 0.5),
    ]
    job = child_record(tmp_path)["job"]
    assert job["snapshot"] == {
        "raw": os.path.join(child_record(tmp_path)["cwd"], "snapshot.raw"),
        "format": "u8",
    }


@pytest.mark.parametrize("features", [[], ["stop"]])
def test_an_engine_without_snapshots_is_not_asked_for_them(
    fake_engine, style_file, tmp_path, features
) -> None:
    seen: list[tuple] = []
    with nst_bridge.EngineRun(painting(fake_engine, features)) as run:
        run.set_content_raw(PIXELS, WIDTH, HEIGHT, "u8", CHANNELS)
        run.run([(style_file, 1.0)], {}, lambda f, t: True, on_snapshot=lambda *s: seen.append(s))
    assert "snapshot" not in child_record(tmp_path)["job"] and seen == []


def test_stop_keeps_the_last_snapshot_as_the_result(fake_engine, style_file, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "paint")
    seen: list[bytes] = []
    stops: list[bool] = []
    with nst_bridge.EngineRun(painting(fake_engine, ["snapshots", "stop"])) as run:

        def on_snapshot(pixels: bytes, width: int, height: int, channels: int, fraction: float) -> None:
            seen.append(pixels)
            if len(seen) == 4:
                stops.append(run.stop())

        run.set_content_raw(PIXELS, WIDTH, HEIGHT, "u8", CHANNELS)
        result = run.run([(style_file, 1.0)], {}, lambda f, t: True, on_snapshot=on_snapshot)
    assert stops == [True] and len(seen) >= 4
    assert result == seen[-1] and result == picture(len(seen))


def test_stop_is_refused_where_it_cannot_keep(fake_engine, style_file, tmp_path, monkeypatch) -> None:
    """No child yet, or an engine without "stop": False, and the caller cancels instead."""
    monkeypatch.setenv("FAKE_MODE", "paint")
    stops: list[bool] = []
    with nst_bridge.EngineRun(painting(fake_engine, ["snapshots"])) as run:
        assert run.stop() is False
        run.set_content_raw(PIXELS, WIDTH, HEIGHT, "u8", CHANNELS)
        with pytest.raises(nst_bridge.EngineError, match="^Cancelled.$"):
            run.run(
                [(style_file, 1.0)],
                {},
                lambda f, t: True,
                on_snapshot=lambda *s: stops.append(run.stop()) or False,
            )
    assert stops == [False]


def test_cancel_while_painting_keeps_nothing(fake_engine, style_file, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_MODE", "paint")
    seen: list[bytes] = []
    run = nst_bridge.EngineRun(painting(fake_engine, ["snapshots", "stop"]))
    folder = run.folder
    run.set_content_raw(PIXELS, WIDTH, HEIGHT, "u8", CHANNELS)
    with pytest.raises(nst_bridge.EngineError) as info:
        run.run(
            [(style_file, 1.0)], {}, lambda f, t: True, on_snapshot=lambda *s: seen.append(s) or len(seen) < 3
        )
    assert info.value.code == 130 and len(seen) == 3
    assert not pid_alive(child_record(tmp_path)["pid"])
    run.close()
    assert not os.path.exists(folder) and os.listdir(tmp_path / "tmp") == []


# The real engine (random weights): a long run, stopped at its second snapshot.
# In fp32 on every CPU: this tiny random-weight picture settles after about 200 iterations, and in bf16
# (the default on a CPU with AMX) its faster iterations reach that before the second snapshot.
LONG = {
    "size": 48,
    "iterations": 100000,
    "device": "cpu",
    "seed": 3,
    "multiscale": False,
    "precision": "fp32",
}


def content_48x32() -> bytes:
    return b"".join(bytes((x * 5, y * 7, 128, 255 if x < 40 else 100)) for y in range(32) for x in range(48))


def stopped_at_second_snapshot(config: dict, style_png: Path, options: dict) -> tuple[bytes, list, list]:
    content = content_48x32()
    seen: list[tuple] = []
    fractions: list[float] = []
    with nst_bridge.EngineRun(config) as run:

        def on_snapshot(pixels: bytes, width: int, height: int, channels: int, fraction: float) -> None:
            seen.append((pixels, width, height, channels))
            if len(seen) == 2:
                assert run.stop() is True

        def on_progress(fraction: float, text: str) -> bool:
            fractions.append(fraction)
            return len(fractions) < 5000  # no snapshots: give up (Cancelled) long before 100000 iterations

        run.set_content_raw(content, 48, 32, "u8", 4)
        result = run.run([(str(style_png), 1.0)], options, on_progress, None, on_snapshot)
    for pixels, width, height, channels in seen:  # whole pictures, alpha copied back
        assert channels == 4 and len(pixels) == width * height * 4
        if (width, height) == (48, 32):
            assert pixels[3::4] == content[3::4]
    assert len(result) == len(content) and result != content and result[3::4] == content[3::4]
    return result, seen, fractions


@pytest.mark.parametrize("served", [False, True], ids=["child", "service"])
def test_the_real_engine_paints_and_stops_where_asked(
    vgg19_weights: Path, style_png: Path, tmp_path: Path, served: bool
) -> None:
    config = {"python": sys.executable, "weights": str(vgg19_weights), "engine": describe(), "service": False}
    if not served:
        _result, seen, fractions = stopped_at_second_snapshot(config, style_png, LONG)
    else:
        with serving(tmp_path / "server", vgg19_weights) as server:
            remote = {**config, "servers": [{"url": server.url, "token_file": str(server.token_file)}]}
            _result, seen, fractions = stopped_at_second_snapshot(
                remote, style_png, {**LONG, "device": "remote"}
            )
    assert len(seen) == 2 and seen[0][0] != seen[1][0]  # the picture moved between them
    assert max(fractions) < 0.5  # stopped, 100000 iterations from the end
