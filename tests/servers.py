"""Real engine services for the tests: `python -m nst_core serve` on loopback, in its own process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nst_core import client


@dataclass
class Served:
    url: str
    token: str
    token_file: Path
    process: subprocess.Popen
    state_file: Path

    @property
    def server(self) -> client.Server:
        return client.Server(self.url, self.token)

    def rss(self) -> int:
        """The server's resident memory in bytes (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


def start_server(folder: Path, weights: Path, *extra: str, timeout: float = 90.0) -> Served:
    """Start a server on a free loopback port and wait for its `listening` line."""
    folder.mkdir(parents=True, exist_ok=True)
    token_file, state_file = folder / "token", folder / "service.json"
    command = [sys.executable, "-m", "nst_core", "serve", "--port", "0", "--token-file", str(token_file)]
    command += ["--weights", str(weights), "--device", "cpu", "--state-file", str(state_file), *extra]
    log = open(folder / "server.log", "ab")  # noqa: SIM115 (the server's process keeps it)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    end = time.monotonic() + timeout
    line = process.stdout.readline() if process.stdout else b""
    if not line or time.monotonic() > end:
        process.kill()
        raise AssertionError(f"the server did not start: {(folder / 'server.log').read_text()[-2000:]}")
    state = json.loads(line)
    return Served(state["url"], token_file.read_text().strip(), token_file, process, state_file)


def stop_server(served: Served) -> None:
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(20)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait()


@contextlib.contextmanager
def serving(folder: Path, weights: Path, *extra: str) -> Iterator[Served]:
    served = start_server(folder, weights, *extra)
    try:
        yield served
    finally:
        stop_server(served)


def wait_until(predicate, seconds: float = 20.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie (our own child, not yet reaped) is not alive
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    return True


def stop_local_service(data_dir: Path) -> None:
    """Stop the warm engine service a test's plug-in config (its `data_dir`) started, if it runs."""
    state = data_dir / "service" / "service.json"
    if state.exists():
        pid = json.loads(state.read_text())["pid"]
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            wait_until(lambda: not pid_alive(pid), 20)
