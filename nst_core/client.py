"""The command line as a client of engine services (`stylize ... --server URL --token-file F`).

Standard library only (http.client) up to the result, which numpy writes: a job goes to the first
listed server that is free; when every one is busy, to the reachable one with the shortest queue; when
none answers, the caller runs it here.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Cancelled, ExitCode, ImageError, NstError, UsageError, WeightsError
from .events import Event, Sink, done_event, note
from .options import resolve
from .weights import resolve_weights
from .wire import API, CONTENT_TYPE, SERVER_OPTIONS, request_body

if TYPE_CHECKING:  # job imports numpy, which only writing a result needs
    from .job import JobRequest

HEALTH_SECONDS = 3.0  # a server that does not answer its health check this fast is passed over
TOKEN_BYTES = 32
STREAM_SECONDS = 120.0  # a live server writes at least once a second, even while the job waits


class ServiceError(NstError):
    """The server cannot be reached, or stopped answering during a job."""

    code = ExitCode.DEVICE


@dataclass(frozen=True)
class Server:
    url: str
    token: str

    @property
    def parts(self) -> urllib.parse.SplitResult:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"Server address {self.url!r} is not a URL: write it as http://HOST:PORT.")
        return parts

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        parts = self.parts
        kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return kind(parts.hostname, parts.port, timeout=timeout)

    def path(self, tail: str) -> str:
        return self.parts.path.rstrip("/") + API + tail

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}


def _error(event: Event) -> NstError:
    """An `error` event as the NstError it reports, with its exit code."""
    error = NstError(str(event.get("message") or "the server's job failed"))
    code = event.get("code")
    error.code = ExitCode(code) if code in ExitCode._value2member_map_ else ExitCode.INTERNAL
    return error


def _refusal(server: Server, response: http.client.HTTPResponse) -> NstError:
    """The server's one-line message for a refused request."""
    try:
        return _error(json.loads(response.read(64 * 1024).decode("utf-8")))
    except (ValueError, AttributeError):
        return ServiceError(
            f"The server {server.url} refused the job (HTTP {response.status}): check its address."
        )


def health(server: Server, timeout: float = HEALTH_SECONDS) -> dict[str, Any]:
    """The server's health; ServiceError when it cannot be reached, NstError when it refuses us."""
    try:
        connection = server.connect(timeout)
        connection.request("GET", server.path("/health"), headers=server.headers())
        response = connection.getresponse()
        if response.status != 200:
            raise _refusal(server, response)
        return json.loads(response.read().decode("utf-8"))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ServiceError(f"The server {server.url} does not answer ({exc}): check that it runs.") from None


def pick_server(servers: list[Server]) -> tuple[Server | None, list[str]]:
    """The first free server, else the reachable one with the fewest jobs; and why others were passed over.

    A refusal of our token is an error, not a reason to pass over: the user must fix it.
    """
    busy: list[tuple[int, int, Server]] = []
    passed: list[str] = []
    for order, server in enumerate(servers):
        try:
            state = health(server)
        except ServiceError as error:
            passed.append(error.message)
            continue
        if state.get("free"):
            return server, passed
        busy.append((int(state.get("queued", 0)) + int(state.get("running", 0)), order, server))
    return (min(busy)[2] if busy else None), passed


def _lines(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while line := response.readline(1024 * 1024):
        yield line


def run_on_server(server: Server, body: bytes, sink: Sink, cancel: Any = None) -> tuple[Event, bytes]:
    """Send one job (`wire.request_body`), forward its events to `sink`; its `done` event and the result's
    bytes. A cancel (checked at least once a second, when the server's heartbeat arrives) stops it there."""
    job_id = None
    try:
        connection = server.connect(STREAM_SECONDS)
        headers = server.headers({"Content-Type": CONTENT_TYPE})
        connection.request("POST", server.path("/jobs"), body=body, headers=headers)
        response = connection.getresponse()
        if response.status != 200:
            raise _refusal(server, response)
        for line in _lines(response):
            event = json.loads(line.decode("utf-8"))
            kind = event.get("event")
            if kind == "accepted":
                job_id = event.get("job")
            if cancel is not None and cancel.is_set() and kind not in ("done", "error"):
                _cancel(server, job_id)
                raise Cancelled()
            if kind in ("start", "progress"):
                sink.emit(event)
            elif kind == "error":
                raise _error(event)
            elif kind == "done":
                data = response.read(int(event["bytes"]))
                if len(data) != int(event["bytes"]):
                    break
                return event, data
    except (OSError, http.client.HTTPException, ValueError) as exc:
        raise ServiceError(
            f"The server {server.url} stopped answering during the job ({type(exc).__name__}: {exc}): "
            "run it again, or check the server."
        ) from None
    raise ServiceError(
        f"The server {server.url} stopped answering during the job (the connection closed without a "
        "result): run it again, or check the server."
    )


def _cancel(server: Server, job_id: str | None) -> None:
    if job_id is None:
        return
    try:
        connection = server.connect(HEALTH_SECONDS)
        connection.request("DELETE", server.path(f"/jobs/{job_id}"), headers=server.headers())
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        pass  # closing our connection cancels it as well


# -- `stylize --server`: one job on the first free server, or here ----------------------------------


def stylize_on_server(
    urls: Sequence[str],
    token_file: str | None,
    request: JobRequest,
    values: Mapping[str, Any],
    sink: Sink,
    cancel: Any = None,
) -> bool:
    """Run `request` on the first free of `urls` with the option `values` given; False when none answers
    (the caller runs it here)."""
    from .output import check_writable, write_output

    if token_file is None:
        raise UsageError("--server needs --token-file: the file holding the server's token.")
    token = read_token(Path(token_file))
    server, passed = pick_server([Server(url, token) for url in urls])
    if server is None:
        _check_weights_here(request, passed)
        note(f"no server answers ({'; '.join(passed)}); running here.")
        return False
    check_writable(request.output)
    started = time.perf_counter()
    body = request_body(
        (_read_input(request.content), None),
        [(_read_input(path), 1.0) for path in request.styles],
        {name: value for name, value in values.items() if name not in SERVER_OPTIONS},
        result_format="float32",
        result_size="working",
        masks=None if request.masks is None else [_read_input(path) for path in request.masks],
    )
    done, data = run_on_server(server, body, sink, cancel)
    import numpy as np

    shape = (int(done["height"]), int(done["width"]), int(done["channels"]))
    written = write_output(np.frombuffer(data, dtype="<f4").reshape(shape), request.output)
    sink.emit(done_event(str(written), time.perf_counter() - started))
    return True


def _check_weights_here(request: JobRequest, passed: list[str]) -> None:
    """No server answers, so the job runs here (--weights names the file for that): when it cannot for
    want of weights, one line says both."""
    settings = resolve(request.options, len(request.styles))
    try:
        resolve_weights(settings.weights, settings.model)
    except WeightsError as error:
        raise ServiceError(
            f"No server answers ({'; '.join(passed)}) and this machine cannot run the job instead: "
            f"{error.message}"
        ) from None


def _read_input(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"Image {path} cannot be read ({exc.strerror}): check the file name.") from None


# -- the token (the server's and its clients') ------------------------------------------------------


def read_token(path: Path, create: bool = False) -> str:
    """The shared secret in `path` (one line); with `create`, a new random one is written there first
    (readable by its owner only) when the file does not exist."""
    if create and not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.write(secrets.token_urlsafe(TOKEN_BYTES) + "\n")
        except FileExistsError:
            pass  # another server made it first: use theirs
        except OSError as exc:
            raise UsageError(
                f"Cannot write the token file {path} ({exc.strerror}): choose another one."
            ) from None
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"Cannot read the token file {path} ({exc}): check --token-file.") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise UsageError(
            f"The token file {path} must hold one token of 16 or more characters without spaces: "
            "delete it and let the server write a new one."
        )
    return token
