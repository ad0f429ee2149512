"""The plug-ins' warm engine and remote servers (plug-ins/neural_style/nst_service.py) with the real engine
service: started on first use and reused, its death mid-job, cancel, the fallbacks to the child process,
a list of servers, and the same under Python 2.7 as GIMP 2.10 runs it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from servers import pid_alive, serving, stop_local_service, wait_until

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = REPO / "plug-ins" / "neural_style"
sys.path.insert(0, str(PLUGIN_DIR))

import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_service  # noqa: E402
from interpreters import python27  # noqa: E402

from nst_core import client  # noqa: E402

WIDTH, HEIGHT = 48, 32
OPTIONS = {"size": 32, "iterations": 3, "seed": 6}


def pixels() -> bytes:
    data = bytearray()
    for y in range(HEIGHT):
        for x in range(WIDTH):
            data += bytes((x * 5, y * 7, 128, 255 if x < 40 else 100))
    return bytes(data)


@pytest.fixture
def config(tmp_path: Path, vgg19_weights: Path):
    """An installed config that asks for the warm engine; its service is stopped after the test."""
    config = {
        "python": sys.executable,
        "weights": str(vgg19_weights),
        "data_dir": str(tmp_path / "data"),
        "service": True,
    }
    yield config
    stop_local_service(tmp_path / "data")


def service_pid(config: dict) -> int:
    return json.loads((Path(config["data_dir"]) / "service" / "service.json").read_text())["pid"]


def run(config: dict, style: Path, options: dict | None = None, on_progress=None) -> tuple[bytes, object]:
    with nst_bridge.EngineRun(config) as engine:
        engine.set_content_raw(pixels(), WIDTH, HEIGHT, "u8", 4)
        result = engine.run([(str(style), 1.0)], dict(options or OPTIONS), on_progress or (lambda f, t: True))
        return result, engine


def test_the_first_run_starts_a_service_and_the_next_one_reuses_it(config, style_png) -> None:
    child, engine = run({**config, "service": False}, style_png)
    assert engine.server is None
    timings = []
    for _ in range(2):
        started, first = time.monotonic(), []

        def progress(fraction: float, text: str, started: float = started, first: list = first) -> bool:
            if "iteration" in text and not first:
                first.append(time.monotonic() - started)
            return True

        served, engine = run(config, style_png, on_progress=progress)
        timings.append(first[0])
        assert served == child  # the warm engine's bytes are the child process's
        assert engine.server is not None and engine.started.get("device") == "cpu"
    pid = service_pid(config)
    assert pid_alive(pid)
    again = run(config, style_png)[1]
    assert service_pid(config) == pid and again.server == engine.server  # the same service, reused
    print(f"OK to first iteration: cold {timings[0]:.2f} s, warm {timings[1]:.2f} s")
    token = Path(config["data_dir"]) / "service" / "token"
    assert token.stat().st_mode & 0o777 == 0o600


def test_a_service_killed_mid_job_is_a_clear_error_and_the_next_run_starts_a_new_one(
    config, style_png
) -> None:
    run(config, style_png)
    pid = service_pid(config)
    killed = []

    def progress(fraction: float, text: str) -> bool:
        if "iteration" in text and not killed:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        return True

    with pytest.raises(nst_bridge.EngineError) as caught:
        run(config, style_png, {**OPTIONS, "iterations": 500}, progress)
    message = caught.value.message
    assert "stopped during the job" in message and "run the filter again" in message and "\n" not in message
    result, engine = run(config, style_png)
    assert engine.server is not None and service_pid(config) != pid and len(result) == WIDTH * HEIGHT * 4


def test_cancel_stops_the_served_job_and_frees_it(config, style_png) -> None:
    run(config, style_png)
    seen = []

    def progress(fraction: float, text: str) -> bool:
        seen.append(text)
        return "iteration 2/" not in text

    with pytest.raises(nst_bridge.EngineError) as caught:
        run(config, style_png, {**OPTIONS, "iterations": 500}, progress)
    assert caught.value.code == nst_common.EXIT_CANCELLED
    state = json.loads((Path(config["data_dir"]) / "service" / "service.json").read_text())
    token = (Path(config["data_dir"]) / "service" / "token").read_text().strip()
    server = client.Server(state["url"], token)
    assert wait_until(lambda: client.health(server)["jobs"] == 0, 20)


def test_a_service_that_cannot_start_leaves_the_job_to_the_child(config, style_png, tmp_path) -> None:
    python = tmp_path / "python-without-serve"
    python.write_text(f'#!/bin/sh\n[ "$3" = serve ] && exit 3\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    result, engine = run({**config, "python": str(python)}, style_png)
    assert engine.server is None and len(result) == WIDTH * HEIGHT * 4
    assert not (Path(config["data_dir"]) / "service" / "service.json").exists()


def test_a_device_the_service_lacks_goes_to_the_child(config, style_png) -> None:
    run(config, style_png)  # the service runs on this machine's CPU
    with pytest.raises(nst_bridge.EngineError) as caught:
        run(config, style_png, {**OPTIONS, "device": "cuda"})
    assert caught.value.code == 7 and "server" not in caught.value.message  # the child's own answer


def test_remote_servers_first_free_then_the_local_engine(config, style_png, tmp_path, vgg19_weights) -> None:
    with serving(tmp_path / "remote", vgg19_weights) as remote:
        dead = {"url": "http://127.0.0.1:9", "token_file": str(remote.token_file)}
        live = {"url": remote.url, "token_file": str(remote.token_file)}
        remote_config = {**config, "service": False, "servers": [dead, live]}
        assert ("remote", "Remote server") in nst_bridge.choices(remote_config, "device")[0]
        assert "remote" not in dict(nst_bridge.choices(config, "device")[0])
        result, engine = run(remote_config, style_png, {**OPTIONS, "device": "remote"})
        assert engine.server == remote.url
        assert result == run({**config, "service": False}, style_png)[0]
        # Without "remote" the servers are not used.
        assert run(remote_config, style_png)[1].server is None
    texts: list[str] = []
    result, engine = run(
        {**config, "service": False, "servers": [dead]},
        style_png,
        {**OPTIONS, "device": "remote"},
        lambda f, t: texts.append(t) or True,
    )
    assert engine.server is None and nst_service.NO_SERVER in texts


def test_a_wrong_remote_token_is_a_clear_error(config, style_png, tmp_path, vgg19_weights) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token-of-that-server\n")
    with serving(tmp_path / "remote", vgg19_weights) as remote:
        servers = [{"url": remote.url, "token_file": str(wrong)}]
        with pytest.raises(nst_bridge.EngineError) as caught:
            run({**config, "servers": servers}, style_png, {**OPTIONS, "device": "remote"})
    assert (
        caught.value.message.startswith("Wrong token for this server") and remote.url in caught.value.message
    )


PY27_DRIVER = textwrap.dedent(
    """\
    import json, sys
    WIDTH, HEIGHT = int(sys.argv[7]), int(sys.argv[8])
    sys.path.insert(0, sys.argv[1])
    import nst_bridge
    config = json.loads(sys.argv[2])
    pixels = open(sys.argv[4], "rb").read()
    servers = []
    for _ in range(2):
        run = nst_bridge.EngineRun(config)
        run.set_content_raw(pixels, WIDTH, HEIGHT, "u8", 4)
        result = run.run([(sys.argv[3], 1.0)], json.loads(sys.argv[5]), lambda f, t: True)
        servers.append(run.server)
        run.close()
        open(sys.argv[6], "wb").write(result)
    print(json.dumps(servers))
    """
)


def test_the_bridge_uses_the_warm_engine_on_python27(config, style_png, tmp_path) -> None:
    content = tmp_path / "content.raw"
    content.write_bytes(pixels())
    out = tmp_path / "result.raw"
    argv = [python27(), "-c", PY27_DRIVER, str(PLUGIN_DIR), json.dumps(config), str(style_png), str(content)]
    done = subprocess.run(
        [*argv, json.dumps(OPTIONS), str(out), str(WIDTH), str(HEIGHT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    first, second = json.loads(done.stdout)
    assert first and first == second
    assert out.read_bytes() == run({**config, "service": False}, style_png)[0]


def test_two_plugins_starting_at_once_share_one_service(config, style_png) -> None:
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(run(config, style_png)[1].server)) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert len(results) == 2 and results[0] == results[1] is not None


def test_a_service_of_other_weights_or_another_engine_is_replaced(config, style_png, tmp_path) -> None:
    run(config, style_png)
    first = service_pid(config)
    other = tmp_path / "other-weights.pth"
    shutil.copyfile(config["weights"], other)
    changed = {**config, "weights": str(other)}
    assert run(changed, style_png)[1].server is not None
    state = json.loads((Path(config["data_dir"]) / "service" / "service.json").read_text())
    assert state["weights"] == str(other) and state["python"] == sys.executable
    assert state["pid"] != first and wait_until(lambda: not pid_alive(first), 20)


def test_an_install_for_vgg16_runs_on_the_warm_engine_and_a_vgg19_one_replaces_it(
    config, style_png, vgg16_weights
) -> None:
    """install.py --model vgg16: the service is started for that network (it loaded VGG19 from the
    VGG16 file, failed to start, and every preview fell back to a cold child process)."""
    vgg16 = {**config, "weights": str(vgg16_weights), "model": "vgg16"}
    options = nst_bridge.dialog_options(vgg16, OPTIONS)  # as the dialog asks: the installed network
    child = run({**vgg16, "service": False}, style_png, options)[0]
    served, engine = run(vgg16, style_png, options)
    assert engine.server is not None and served == child
    state = json.loads((Path(config["data_dir"]) / "service" / "service.json").read_text())
    assert state["model"] == "vgg16" and state["weights"] == str(vgg16_weights)
    first = state["pid"]
    assert run(config, style_png)[1].server is not None  # the VGG19 install's: another service
    assert service_pid(config) != first and wait_until(lambda: not pid_alive(first), 20)


def frames_on(
    config: dict, style: Path, shown: list | None = None
) -> tuple[list, nst_bridge.FramesRun, list]:
    """A square moving across 3 frames, through the bridge's FramesRun; `shown` gets each frame handed to
    on_frame (index, pixels, width, height, the animation's fraction then)."""
    fractions: list[float] = []
    with nst_bridge.FramesRun(config) as run:
        for step in range(3):
            data = bytearray()
            for y in range(24):
                for x in range(32):
                    inside = 6 <= y < 16 and 4 + 4 * step <= x < 14 + 4 * step
                    data += bytes((230, 200, 30, 255) if inside else (40, 90, 160, 255 if x < 28 else 90))
            run.add_frame(bytes(data), 32, 24, 4, f"Frame {step + 1} (100ms)")
        options = {"iterations": 2, "size": 32, "device": "cpu", "seed": 0}
        progress = lambda f, t: fractions.append(f) or True  # noqa: E731
        show = None if shown is None else lambda *frame: shown.append((*frame, fractions[-1]))
        results = run.run([(str(style), 1.0)], options, progress, show)
    return results, run, fractions


def test_animation_frames_run_on_the_warm_engine_as_in_the_child(config, style_png, tmp_path) -> None:
    child, engine, _ = frames_on({**config, "service": False}, style_png)
    assert engine.server is None and len(child) == 3
    shown: list = []
    served, engine, fractions = frames_on(config, style_png, shown)
    assert engine.server is not None  # the warm service painted them
    assert served == child  # frame for frame, the bytes of `batch --frames`
    # Each frame handed over as the service finished it, not all at the end.
    assert [(index, *frame) for index, *frame, _fraction in shown] == [(i, *f) for i, f in enumerate(served)]
    assert [round(fraction, 2) for *_, fraction in shown[:2]] == [0.33, 0.67]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    python = tmp_path / "python-without-serve"
    python.write_text(f'#!/bin/sh\n[ "$3" = serve ] && exit 3\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    stop_local_service(Path(config["data_dir"]))
    fallback, engine, _ = frames_on({**config, "python": str(python)}, style_png)
    assert engine.server is None and fallback == child  # no service: the child process, as before
