"""A scripted stand-in for the engine's Python, for the bridge's tests: the config names it as "python",
so the bridge starts it as it would start `<engine python> -m nst_core ...`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest


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
