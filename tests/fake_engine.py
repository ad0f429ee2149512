"""A scripted stand-in for the engine's Python, for the bridge's tests: the config names it as "python",
so the bridge starts it as it would start `<engine python> -m nst_core ...`. FAKE_ENGINE is the one
for single runs (tests/conftest.py's `fake_engine`), PIXELS the raw layer the tests send it."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

# A stand-in engine: `FAKE -m nst_core run-job JOB.json`, behaviour chosen by $FAKE_MODE.
FAKE_ENGINE = textwrap.dedent(
    """\
    import json, os, stat, sys, threading, time
    job_path = sys.argv[4]
    job = json.load(open(job_path))
    mode = os.environ.get("FAKE_MODE", "invert")
    def emit(**event):
        print(json.dumps(event), flush=True)
    with open(os.path.join(os.environ["FAKE_LOG"], "child.json"), "w") as fh:
        json.dump({"pid": os.getpid(), "argv": sys.argv[1:], "job": job, "cwd": os.getcwd(),
                   "pythonpath": os.environ.get("PYTHONPATH"),
                   "unbuffered": os.environ.get("PYTHONUNBUFFERED"),
                   "data_dir": os.environ.get("NST_DATA_DIR"),
                   "ld_library_path": os.environ.get("LD_LIBRARY_PATH"),
                   "styles_exist": [os.path.isfile(s["path"]) for s in job["styles"]],
                   "stdin_is_pipe": stat.S_ISFIFO(os.fstat(0).st_mode)}, fh)
    emit(event="start", version=1, device="cpu", scales=[32, 48], iterations=4, memory_estimate=1)
    print("a line that is not an event", flush=True)
    if mode == "error":
        emit(event="error", message="Weights file x.pth is truncated: download it again.", code=4)
        sys.exit(4)
    if mode == "crash":
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom\\n")
        sys.exit(1)
    content = job["content"]
    data = open(content["raw"], "rb").read()
    stop = threading.Event()
    def watch():  # the lifeline: `stop` keeps the picture so far, end of file cancels
        for line in sys.stdin:
            if line.strip() == "stop":
                stop.set()
        if not stop.is_set():
            os._exit(130)
    threading.Thread(target=watch, daemon=True).start()
    picture = data
    def snapshot(k, half):  # k: the picture after iteration k; half: at the working size (width / 2)
        global picture
        picture = bytes((255 - b + k) % 256 for b in data)
        snap, w, h, c = job["snapshot"], content["width"], content["height"], content["channels"]
        pixels = picture
        if half:
            row = w * c
            w, pixels = w // 2, b"".join(picture[i : i + w // 2 * c] for i in range(0, len(data), row))
        open(snap["raw"] + ".tmp", "wb").write(pixels)
        os.replace(snap["raw"] + ".tmp", snap["raw"])
        emit(event="snapshot", path=snap["raw"], width=w, height=h, channels=c, format=snap["format"],
             full_size=not half, iteration=k, fraction=k / 4)
        time.sleep(0.3)  # the file stays until the next snapshot: time for the bridge to read it
    for i in (1, 2):
        emit(event="progress", scale=i, scales=2, iteration=2, iterations=2, fraction=i / 2,
             elapsed=1.0, eta=62.0 * (2 - i), unknown_field=1,
             loss={"total": 1.0, "content": 0.5, "style": 0.5, "tv": 0.0})
        if "snapshot" in job:
            snapshot(i, half=i == 1)
        if mode == "hang":
            time.sleep(600)
        if mode == "paint":  # paints on, a snapshot every 0.3 s, until told to stop
            k = 2
            while not stop.wait(0):
                snapshot(k, half=False)
                k += 1
            open(job["output"]["raw"], "wb").write(picture)
            emit(event="done", output=job["output"]["raw"], seconds=0.1, stopped=True, iteration=k - 1)
            sys.exit(0)
    out = bytes(255 - b for b in data) if mode == "invert" else data[:-1]
    open(job["output"]["raw"], "wb").write(out)
    emit(event="done", output=job["output"]["raw"], seconds=0.1)
    """
)


PIXELS = bytes(range(48)) * 2  # 8 RGBA u8 pixels, 4x2


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> dict:
    """`script` as an executable in `tmp_path` that records what it was given in child.json there
    ($FAKE_LOG); GIMP's own PYTHONPATH set (it must not reach the engine); the bridge's run folders in
    `tmp_path`/tmp. The engine config that names it, with a weights file."""
    engine = tmp_path / "fake-engine"
    engine.write_text(f"#!{sys.executable}\n" + script)
    engine.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", "/gimp/own/modules")
    monkeypatch.setattr("nst_bridge.tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    return {"python": str(engine), "weights": str(tmp_path / "w.pth")}


def child_record(tmp_path: Path) -> dict:
    """What the stand-in wrote about itself (child.json): its pid, arguments, folder and environment."""
    return json.loads((tmp_path / "child.json").read_text())
