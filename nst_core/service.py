"""`python -m nst_core serve`: a long-lived engine behind HTTP (docs/protocol.md, "The engine service").

The network stays loaded; each device has one worker thread that runs jobs one at a time from its
queue, so a second job pays none of the start-up (importing torch, reading the weights, the device's
set-up). aiohttp serves the requests on one asyncio loop: it streams a job's events as they come,
which a stream of JSON lines needs, and keeps the server to one well-kept dependency.

A request is refused before anything is done when its token is missing or wrong (compared in constant
time), when it names a file, or when its sizes exceed the limits (checked from its header, before any
pixel is read). Every accepted job ends with exactly one `done` or `error` event; a job whose client
goes away is cancelled and freed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import ipaddress
import json
import os
import queue
import secrets
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from . import wire
from .errors import Cancelled, DeviceError, ExitCode, NstError, UsageError, describe_error
from .events import PROTOCOL_VERSION, Event, Sink, error_event, note, snapshot_event
from .options import SNAPSHOT_EVERY
from .paths import atomic_path
from .wire import API, EVENTS_TYPE, Limits, WireJob

PAYLOAD = "_bytes"  # an event's key, never sent, for the bytes that follow its line in the stream
HEARTBEAT_SECONDS = 1.0  # a waiting stream writes this often: how a client that went away is noticed
BODY_SECONDS = 600.0  # an upload that takes longer is refused: no request holds a connection forever
STATUS = {
    ExitCode.USAGE: 400,
    ExitCode.BAD_IMAGE: 400,
    ExitCode.WEIGHTS: 500,
    ExitCode.DEVICE: 409,
    ExitCode.OUT_OF_MEMORY: 507,
}


# -- jobs and workers ------------------------------------------------------------------------------------


class _Stream(Sink):
    """The engine's events for one job, handed from its worker thread to the job's request handler."""

    def __init__(self, job: ServiceJob) -> None:
        super().__init__()
        self.job = job

    def _show(self, event: Event) -> None:
        self.job.post(event)


@dataclass(eq=False)
class ServiceJob:
    request: WireJob
    content: Any  # the checked arrays (`images.to_array`)
    styles: list
    loop: asyncio.AbstractEventLoop
    masks: list | None = None  # one per style, or None
    frames: list | None = None  # an animation's frames after the content (docs/protocol.md), or None
    id: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)  # stop-and-keep
    result: bytes = b""
    running: bool = False
    sink: Sink = field(init=False)

    def __post_init__(self) -> None:
        self.sink = _Stream(self)

    def post(self, event: Event) -> None:
        """From any thread: queue an event for the handler that streams this job."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is going down
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Worker:
    """One device's thread: runs its queue's jobs one at a time, the network kept warm between them."""

    def __init__(self, device: Any, weights: Path, on_finished: Callable[[ServiceJob], None]) -> None:
        self.device = device
        self.weights = weights
        self.queue: queue.Queue[ServiceJob | None] = queue.Queue()
        self.waiting = 0  # jobs queued and not yet started
        self.busy = False
        self.style_cache = _style_cache()  # the styles' targets, kept between this device's jobs
        self._count = threading.Lock()  # `waiting` changes in the loop's thread and in this worker's
        self._on_finished = on_finished
        self._thread = threading.Thread(target=self._loop, name=f"nst-worker-{device}", daemon=True)
        self._thread.start()

    @property
    def load(self) -> int:
        return self.waiting + int(self.busy)

    def submit(self, job: ServiceJob) -> int:
        """Queue `job`; returns how many jobs are ahead of it."""
        with self._count:
            ahead = self.load
            self.waiting += 1
        self.queue.put(job)
        return ahead

    def stop(self) -> None:
        self.queue.put(None)

    def _loop(self) -> None:
        while (job := self.queue.get()) is not None:
            with self._count:
                self.waiting -= 1
                self.busy = True
            try:
                self._run(job)
            finally:
                self.busy = False
                self._on_finished(job)

    def _run(self, job: ServiceJob) -> None:
        from . import memory
        from .job import progress_events, start_events
        from .output import raw_bytes
        from .run import Watch, stylize

        started = time.perf_counter()
        request = job.request
        try:
            if job.cancel.is_set():
                raise Cancelled()
            job.running = True
            options = replace(request.options, weights=str(self.weights))
            if job.frames is not None:  # no snapshots nor stop: wire.py and `stop` refuse them for these
                self._run_frames(job, options, started)
                return
            every = request.snapshot_every
            watch = Watch(None if every is None else snapshot_parts(job), every or SNAPSHOT_EVERY, job.stop)
            result = stylize(
                job.content,
                job.styles,
                options,
                output_size=request.result_size,
                progress=progress_events(job.sink),
                on_start=start_events(job.sink),
                cancel=job.cancel,
                device=self.device,
                masks=job.masks,
                style_cache=self.style_cache,
                watch=watch,
                preview=request.preview,
            )
            job.result = raw_bytes(result, request.result_format)
            height, width, channels = result.shape
            job.sink.emit(
                {
                    "event": "done",
                    "seconds": round(time.perf_counter() - started, 3),
                    "width": width,
                    "height": height,
                    "channels": channels,
                    "format": request.result_format,
                    "bytes": len(job.result),
                    **({"stopped": True, "iteration": watch.iteration} if watch.stopped else {}),
                }
            )
        except (Exception, KeyboardInterrupt) as exc:  # every failure ends the job with one error event
            job.sink.emit(error_event(describe_error(exc)))
        finally:
            # The worker outlives its jobs: what a job held must not stay (the server's memory returns to
            # where it was between jobs), and on a CPU glibc would otherwise keep the job's peak.
            job.content = job.styles = job.masks = job.frames = None
            gc.collect()
            memory.release_cached(self.device)

    def _run_frames(self, job: ServiceJob, options: Any, started: float) -> None:
        """An animation as `batch --frames` paints it (batch.stylize_run: each frame from the one before),
        each frame streamed as it is finished (a `frame` event, then its pixels), their sizes again in
        the `done` event."""
        from .batch import DEFAULT_TEMPORAL_WEIGHT, BatchProgress, Frame, stylize_run
        from .errors import NstError
        from .output import raw_bytes

        contents = [job.content, *job.frames]
        frames = [Frame(f"frame {i + 1}", content) for i, content in enumerate(contents)]
        progress = BatchProgress(job.sink, len(frames))
        fmt = job.request.result_format
        sizes = []
        run = stylize_run(
            frames,
            job.styles,
            options,
            progress.sink_for,
            job.cancel,
            DEFAULT_TEMPORAL_WEIGHT,
            self.style_cache,
        )
        for index, result in run:
            if isinstance(result, NstError):  # the frames after it would start from nothing
                raise type(result)(f"Frame {index + 1} failed: {result.message}")
            data = raw_bytes(result, fmt)
            height, width, channels = result.shape
            sizes.append({"width": width, "height": height, "channels": channels, "bytes": len(data)})
            # Now, not with `done`: a client shows each frame as it comes, and a cancel keeps those.
            frame = {"event": "frame", "frame": index + 1, "frames": len(frames), "format": fmt}
            job.post({**frame, **sizes[-1], PAYLOAD: data})
        job.result = b""
        seconds = round(time.perf_counter() - started, 3)
        done = {"event": "done", "seconds": seconds, "format": fmt, "bytes": 0, "frames": sizes}
        job.sink.emit(done)


def _style_cache() -> Any:
    from .stylecache import StyleCache

    return StyleCache()


def snapshot_parts(job: ServiceJob) -> Callable[[Any], None]:
    """A job's snapshots as events, each followed in the stream by its pixels in the result's format."""
    from .output import raw_bytes

    def post(snapshot: Any) -> None:
        data = raw_bytes(snapshot.image, job.request.result_format)
        event = snapshot_event(
            "",
            snapshot.image.shape,
            job.request.result_format,
            snapshot.iteration,
            snapshot.fraction,
            snapshot.full_size,
        )
        del event["path"]  # the pixels come in the stream, not in a file
        job.post({**event, "bytes": len(data), PAYLOAD: data})

    return post


def worker_devices(name: str) -> list[Any]:
    """One device per worker: every CUDA GPU for `auto` or `cuda`, otherwise the one device."""
    import torch

    from .devices import pick_device

    device = pick_device(name)
    if device.type == "cuda":
        return [torch.device("cuda", index) for index in range(torch.cuda.device_count())]
    return [device]


# -- the service ------------------------------------------------------------------------------------------


@dataclass
class Service:
    token: str
    workers: list[Worker]
    limits: Limits = field(default_factory=Limits)
    idle_timeout: float = 0.0  # seconds without a job before the server exits; 0: never
    jobs: dict[str, ServiceJob] = field(default_factory=dict)
    last_active: float = field(default_factory=time.monotonic)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def device_names(self) -> list[str]:
        return [str(worker.device) for worker in self.workers]

    def health(self) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "devices": self.device_names,
            "workers": len(self.workers),
            "running": sum(worker.busy for worker in self.workers),
            "queued": sum(worker.waiting for worker in self.workers),
            "jobs": len(self.jobs),
            "free": any(worker.load == 0 for worker in self.workers),
            "limits": {
                "max_request_bytes": self.limits.max_request_bytes,
                "max_pixels": self.limits.max_pixels,
            },
        }

    def submit(self, job: ServiceJob) -> int:
        wanted = job.request.options.device
        able = [w for w in self.workers if wanted == "auto" or w.device.type == wanted]
        if not able:
            raise DeviceError(
                f"This server has no {wanted} device: choose auto or one of {self.device_names}."
            )
        self.jobs[job.id] = job
        self.last_active = time.monotonic()
        return min(able, key=lambda worker: worker.load).submit(job)

    def finished(self, job: ServiceJob) -> None:
        """From a worker thread, after the job's last event."""
        job.post({"event": "_freed"})

    def forget(self, job: ServiceJob) -> None:
        self.jobs.pop(job.id, None)
        job.result = b""
        self.last_active = time.monotonic()

    async def watch_idle(self) -> None:
        if self.idle_timeout <= 0:
            return
        while not self.stopping.is_set():
            await asyncio.sleep(min(5.0, self.idle_timeout / 4))
            if not self.jobs and time.monotonic() - self.last_active > self.idle_timeout:
                self.stopping.set()


def _error_response(error: NstError, status: int | None = None) -> web.Response:
    status = status or STATUS.get(error.code, 500)
    return web.json_response(error_event(error), status=status)


def make_app(service: Service) -> web.Application:
    @web.middleware
    async def authorised(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        given = request.headers.get("Authorization", "")
        if not given.startswith("Bearer "):
            return _error_response(
                UsageError(
                    "This server needs its token: give the client the server's token file (--token-file)."
                ),
                401,
            )
        if not hmac.compare_digest(given[len("Bearer ") :].encode(), service.token.encode()):
            return _error_response(
                UsageError("Wrong token for this server: copy the server's token file to the client."), 401
            )
        return await handler(request)

    app = web.Application(middlewares=[authorised], client_max_size=1024)
    app["service"] = service

    async def health(request: web.Request) -> web.Response:
        return web.json_response(service.health())

    async def cancel(request: web.Request) -> web.Response:
        job = service.jobs.get(request.match_info["job"])
        if job is None:  # unknown, finished, or another client's guess: the same answer, nothing changes
            return _error_response(UsageError("No such job: it has finished or never existed."), 404)
        job.cancel.set()
        return web.json_response({"job": job.id, "cancelled": True})

    async def stop(request: web.Request) -> web.Response:
        job = service.jobs.get(request.match_info["job"])
        if job is None:
            return _error_response(UsageError("No such job: it has finished or never existed."), 404)
        if job.frames is not None:  # a stop keeps one picture so far; an animation's result is every frame
            message = "An animation's job does not stop and keep: cancel it (DELETE) or let it finish."
            return _error_response(UsageError(message), 409)
        job.stop.set()  # it ends after its iteration under way, and its picture is the result
        return web.json_response({"job": job.id, "stopping": True})

    async def submit(request: web.Request) -> web.StreamResponse:
        try:
            job = await _receive(request, service)
            ahead = service.submit(job)
        except NstError as error:
            return _error_response(error)
        return await _stream(request, service, job, ahead)

    app.router.add_get(f"{API}/health", health)
    app.router.add_post(f"{API}/jobs", submit)
    app.router.add_delete(f"{API}/jobs/{{job}}", cancel)
    app.router.add_post(f"{API}/jobs/{{job}}/stop", stop)
    return app


async def _receive(request: web.Request, service: Service) -> ServiceJob:
    """Read and check one job's request: the header first, then exactly the bytes it announces."""
    limits = service.limits
    length = request.content_length
    if length is None:
        raise UsageError("The request has no Content-Length: send the whole body with its length.")
    if length > limits.max_request_bytes:
        raise wire.too_large(length, limits)
    if length == 0:  # aiohttp hands an empty body a reader that cannot read a line
        raise wire.bad_request("the body is empty; send the header line, then the images")
    upload = _Upload(request.content, limits.upload_timeout)
    line = await upload.line(wire.HEADER_LIMIT)
    types = wire.device_types(service.device_names)
    header = wire.parse_header(line, limits, types)
    if length != len(line) + header.body_bytes:
        raise wire.bad_request(
            f"Content-Length is {length} but the header announces {len(line) + header.body_bytes}"
        )
    body = await upload.exactly(header.body_bytes, "the images it announces")
    loop = asyncio.get_running_loop()
    # Decoding a large PNG takes a while: off the loop, so that other requests are answered meanwhile.
    content, styles, masks = await loop.run_in_executor(
        None, wire.decode_parts, header, body, limits.max_pixels
    )
    frames = await loop.run_in_executor(None, wire.decode_frames, header, body, limits.max_pixels)
    return ServiceJob(header, content, styles, loop, masks=masks, frames=frames)


class _Upload:
    """A request's body, read so that no client holds a connection for long: each wait for more bytes
    lasts at most `stall` seconds, the whole upload at most BODY_SECONDS. A body that ends early, stops
    or breaks off is a bad request (whoever is still there reads why), never an unhandled error."""

    def __init__(self, stream: StreamReader, stall: float) -> None:
        self.stream = stream
        self.stall = stall
        self.deadline = time.monotonic() + BODY_SECONDS

    async def line(self, limit: int) -> bytes:
        line = await self._wait(self.stream.readuntil(b"\n", max_size=limit), "the header line")
        if not line.endswith(b"\n"):
            raise wire.bad_request("the header line has no newline; end it with one, then the images")
        return line

    async def exactly(self, size: int, what: str) -> bytes:
        chunks, missing = [], size
        while missing > 0:  # each turn takes at least one byte, or ends the request
            chunk = await self._wait(self.stream.read(missing), what)
            if not chunk:
                raise wire.bad_request(f"the body ended before {what}")
            chunks.append(chunk)
            missing -= len(chunk)
        return b"".join(chunks)

    async def _wait(self, read: Awaitable[bytes], what: str) -> bytes:
        timeout = max(0.0, min(self.stall, self.deadline - time.monotonic()))
        try:
            return await asyncio.wait_for(read, timeout)
        except asyncio.TimeoutError:
            raise wire.bad_request(
                f"the body stopped before {what}: send as many bytes as its Content-Length says, within "
                f"{self.stall:g} s of each other and {BODY_SECONDS:g} s in all"
            ) from None
        except LineTooLong:
            raise wire.bad_request(f"{what} is too long") from None
        except (asyncio.IncompleteReadError, ConnectionError, HttpProcessingError):
            raise wire.bad_request(f"the body ended before {what}") from None


def _line(event: Event) -> bytes:
    return (json.dumps(event, allow_nan=False) + "\n").encode("utf-8")


async def _stream(request: web.Request, service: Service, job: ServiceJob, ahead: int) -> web.StreamResponse:
    """The job's events as JSON lines, each snapshot's and then the result's bytes after their event's line;
    the client's leaving cancels the job."""
    response = web.StreamResponse(headers={"Content-Type": EVENTS_TYPE, "Cache-Control": "no-store"})
    freed = False
    try:
        await response.prepare(request)
        await response.write(_line({"event": "accepted", "job": job.id, "ahead": ahead}))
        finished = False
        while not freed:
            try:
                event = await asyncio.wait_for(job.events.get(), HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                if not finished:
                    await response.write(_line({"event": "waiting", "running": job.running}))
                continue
            if event["event"] == "_freed":
                freed = True
                continue
            payload = event.pop(PAYLOAD, None)
            await response.write(_line(event))
            if payload is not None:
                await response.write(payload)
            if event["event"] == "done":
                await response.write(job.result)
            finished = finished or event["event"] in ("done", "error")
        await response.write_eof()
    except (ConnectionError, asyncio.CancelledError) as exc:
        job.cancel.set()  # the client went away: stop its job, which ends with its worker's cleanup
        if not freed:
            await _drain(job)
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        service.forget(job)
    return response


async def _drain(job: ServiceJob) -> None:
    """Wait (shielded) until the worker has let go of a cancelled job, so that it is not forgotten early."""
    while True:
        event = await asyncio.shield(job.events.get())
        if event["event"] == "_freed":
            return


# -- serve: the command -----------------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, reuse_port=False)
    except OSError as exc:
        raise UsageError(f"Cannot listen on {host}:{port} ({exc.strerror}): choose another --port.") from None


def note_if_exposed(host: str) -> None:
    """Tokens and pictures cross the network in the clear: say so when the server is reachable from
    other machines."""
    if host == "localhost":
        return
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    note(f"listening on {host}, beyond this machine: put it behind TLS (docs/install.md).")


def _write_state(path: Path, state: dict[str, Any]) -> None:
    """Atomically, so that a plug-in never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(state), encoding="utf-8")


def _remove_state(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


async def serve(
    token: str,
    weights: Path,
    devices: list[Any],
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    idle_timeout: float = 0.0,
    state_file: Path | None = None,
    ready: Callable[[dict[str, Any]], None] | None = None,
    model: str = "vgg19",
) -> None:
    """Serve until SIGTERM/SIGINT or the idle timeout; `ready` gets the address once it listens. `model`:
    the network `weights` hold (jobs name theirs; this one is loaded, and checked, at the start)."""
    warm_start(model, weights)
    sock = _listen(host, port)
    service = Service(token, [], limits or Limits(), idle_timeout)
    service.workers = [Worker(device, weights, service.finished) for device in devices]
    runner = web.AppRunner(make_app(service), access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    state = {"version": PROTOCOL_VERSION, "url": f"http://{shown}:{bound_port}", "pid": os.getpid()}
    # What it runs, so that a plug-in whose config names another engine or weights starts its own.
    state |= {
        "devices": service.device_names,
        "python": sys.executable,
        "weights": str(weights),
        "model": model,
    }
    loop = asyncio.get_running_loop()
    for signum in _stop_signals():
        loop.add_signal_handler(signum, service.stopping.set)
    idle = asyncio.ensure_future(service.watch_idle())
    try:
        if state_file is not None:
            _write_state(state_file, state)
        if ready is not None:
            ready(state)
        await service.stopping.wait()
    finally:
        if state_file is not None:
            _remove_state(state_file)
        idle.cancel()
        for job in list(service.jobs.values()):
            job.cancel.set()
        await runner.cleanup()
        for worker in service.workers:
            worker.stop()


def warm_start(model: str, weights: Path) -> None:
    """Read (and check) the weights now, so that the first job finds them loaded. Then freeze what is
    loaded (torch's modules, the network), which lives as long as the service: the collection after
    each job leaves it out, where it would scan it all (0.2 s on 2 cores) holding the GIL while the
    finished job's result waits to be sent."""
    from .network import load_features

    load_features(model, weights)
    gc.freeze()


def _stop_signals() -> list[int]:
    import signal

    if sys.platform == "win32":
        return []
    return [signal.SIGTERM, signal.SIGINT]
