"""The plug-ins' client of the engine service (`python -m nst_core serve`, docs/protocol.md): Python 2.7
and 3, standard library only, shared by both plug-ins. nst_bridge.py sends its jobs here first; this
module imports nst_common.py alone.

A job goes, in this order of preference, to a remote server of the config's list (when the dialog's
Device is "Remote server": the first free one, else the least busy one that answers), to this
machine's warm engine service (started on first use, it lives on between runs and exits after
IDLE_SECONDS without a job), or, when neither can be had, nst_bridge runs today's child process.

Inside a Flatpak sandbox the local service runs on the host too: started through `flatpak-spawn --host`,
reached on loopback (Flathub's GIMP shares the host's network), its token and address in the sandbox's
cache folder, which the host sees at the same path.
"""

# ruff: noqa: UP004, UP008, UP010, UP020, UP024, UP025, UP031, UP032, B904
# (Python 2.7 needs the old spellings those rules would modernise, and has no `raise ... from`.)
from __future__ import absolute_import, division, print_function, unicode_literals

import io
import json
import os
import signal
import socket
import subprocess
import time

import nst_common

try:
    import http.client as httplib
    from urllib.parse import urlsplit
except ImportError:  # Python 2.7
    import httplib
    from urlparse import urlsplit

try:
    import fcntl
except ImportError:  # Windows: two plug-ins starting a service at once each start one; one idles out
    fcntl = None

PROTOCOL_VERSION = nst_common.PROTOCOL_VERSION
API = "/v1"
CONTENT_TYPE = "application/x-nst-job"
REMOTE = nst_common.REMOTE
SERVICE_FOLDER = "service"  # under the config's data_dir: token, state and log of the local service
STATE_NAME = "service.json"
TOKEN_NAME = "token"
LOG_NAME = "service.log"
START_LOCK = ".start.lock"
# Left in the service folder when a service started but could not be reached (a Flatpak sandbox without
# the network shared sees no loopback of the host's): runs go to the child process for a day.
UNREACHABLE_NAME = "unreachable"
UNREACHABLE_SECONDS = 5.0  # a service that wrote its address and does not answer this long is unreachable
UNREACHABLE_DAYS = 1.0
IDLE_SECONDS = 900  # the local service exits this long after its last job
START_SECONDS = 120.0  # a cold start imports torch and reads the weights: slow disks take a while
HEALTH_SECONDS = 3.0
STREAM_SECONDS = 120.0  # a live server writes at least once a second
POLL_SECONDS = 0.1
SNAPSHOT_EVERY = (
    2.0  # seconds of work between snapshots: nst_core.options.SNAPSHOT_EVERY (a test holds them equal)
)
NO_SERVER = "Neural style: no server answers, running on this machine"
STARTING = "Neural style: starting the engine\u2026"
WINDOWS_DETACHED = 0x00000008 | 0x00000200 | 0x08000000  # DETACHED_PROCESS, NEW_PROCESS_GROUP, NO_WINDOW
EngineError = nst_common.EngineError


class Unavailable(Exception):
    """This server cannot take the job now (not reachable, refused our device): try the next way."""


def _bytes(text):
    # type: (object) -> bytes
    return text if isinstance(text, bytes) else ("%s" % text).encode("utf-8")


def _native(text):
    # type: (str) -> str
    """Python 2's httplib joins its header lines with the body: they must be byte strings, as the body."""
    return nst_common.native(text) if not isinstance(text, bytes) else text


class Server(object):
    """One engine service: its address and token."""

    def __init__(self, url, token):
        # type: (str, str) -> None
        self.url = url
        self.token = token
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EngineError(
                "Server address %r is not a URL: write it as http://HOST:PORT (run install.py --server)."
                % url,
                nst_common.EXIT_USAGE,
            )
        self.parts = parts
        self.job = None  # type: str | None
        self.stopping = False

    def connect(self, timeout):
        # type: (float) -> object
        kind = httplib.HTTPSConnection if self.parts.scheme == "https" else httplib.HTTPConnection
        return kind(_native(self.parts.hostname), self.parts.port, timeout=timeout)

    def _path(self, tail):
        # type: (str) -> str
        return _native(self.parts.path.rstrip("/") + API + tail)

    def _headers(self, extra=None):
        # type: (dict | None) -> dict
        headers = {"Authorization": "Bearer %s" % self.token}
        headers.update(extra or {})
        return dict((_native(k), _native(v)) for k, v in headers.items())

    def health(self, timeout=HEALTH_SECONDS):
        # type: (float) -> dict
        """The server's state; Unavailable when it does not answer, EngineError when it refuses us."""
        try:
            connection = self.connect(timeout)
            connection.request(_native("GET"), self._path("/health"), headers=self._headers())
            response = connection.getresponse()
            body = response.read()
        except (socket.error, httplib.HTTPException, ValueError) as exc:
            raise Unavailable("%s does not answer (%s)" % (self.url, nst_common.error_text(exc)))
        if response.status != 200:
            raise self._refusal(response.status, body)
        try:
            return json.loads(body.decode("utf-8"))
        except ValueError:
            raise Unavailable("%s is not an engine service" % self.url)

    def _refusal(self, status, body):
        # type: (int, bytes) -> EngineError
        try:
            event = json.loads(body.decode("utf-8"))
            return EngineError("%s (server %s)" % (event["message"], self.url), int(event.get("code", 1)))
        except (ValueError, KeyError, TypeError, AttributeError):
            return EngineError(
                "The server %s refused the job (HTTP %s): check its address in install.py --server."
                % (self.url, status)
            )

    def run(self, content, layout, styles, options, on_progress, masks=None, on_snapshot=None, preview=False):
        # type: (bytes, dict, list, dict, object, list | None, object, bool) -> tuple
        """Stylise raw `content` (its `layout`: width, height, format, channels) in the style of `styles`
        [(path or StylePixels, weight)], each in its RegionMask of `masks` when given. Returns (result
        bytes in the content's layout, start event). `on_snapshot(pixels, width, height, channels,
        fraction)` gets the picture so far in the content's format now and then; `stop()` ends the job
        early, keeping that picture as the result. Unavailable when the server refuses our device
        before starting; EngineError otherwise. `preview`: a dialog's preview, which the service may
        start from its last preview of the same picture (docs/protocol.md)."""
        every = SNAPSHOT_EVERY if on_snapshot is not None else None
        body = _request_body(content, layout, styles, options, masks, every, preview=preview)
        data, started, _done = self._send(body, on_progress, on_snapshot)
        return data, started

    def run_frames(self, frames, styles, options, on_progress, on_frame=None):
        # type: (list, list, dict, object, object) -> tuple
        """An animation's frames (image files' bytes, in order) painted as `batch --frames` paints them,
        each from the one before. Returns ([(8-bit pixels, width, height, channels)] at the working size,
        start event); on_frame(index, pixels, width, height) gets each frame as soon as the server sends
        it. Unavailable and EngineError as `run`. It sends no snapshots and does not stop and keep (the
        server refuses both for an animation)."""
        body = _request_body(frames[0], None, styles, options, frames=frames[1:])
        results = []  # type: list

        def add_frame(data, width, height, channels):
            # type: (bytes, int, int, int) -> None
            results.append((data, width, height, channels))
            if on_frame is not None:
                on_frame(len(results) - 1, data, width, height)

        _data, started, done = self._send(body, on_progress, on_frame=add_frame)
        sizes = [(f["width"], f["height"], f["channels"]) for f in done.get("frames") or []]
        if len(results) != len(frames) or sizes != [r[1:] for r in results]:
            raise EngineError(
                "The engine service %s sent %d frames for %d: run it again."
                % (self.url, len(results), len(frames))
            )
        return results, started

    def _send(self, body, on_progress, on_snapshot=None, on_frame=None):
        # type: (bytes, object, object, object) -> tuple
        """POST one job and follow it: (result bytes, start event, done event)."""
        self.job, self.stopping = None, False
        started = {}  # type: dict
        done = {}  # type: dict
        connection = self.connect(STREAM_SECONDS)
        try:
            try:
                headers = self._headers({"Content-Type": CONTENT_TYPE})
                connection.request(_native("POST"), self._path("/jobs"), body, headers)
                response = connection.getresponse()
                if response.status != 200:
                    error = self._refusal(response.status, response.read())
                    if error.code == nst_common.EXIT_DEVICE:
                        raise Unavailable(error.message)
                    raise error
                following = self._follow(response, on_progress, started, done, on_snapshot, on_frame)
                return following, started, done
            except (socket.error, httplib.HTTPException, ValueError) as exc:
                raise EngineError(
                    "The engine service %s stopped during the job (%s): run the filter again; a stopped "
                    "local service is started anew." % (self.url, nst_common.error_text(exc))
                )
        finally:
            connection.close()

    def _follow(self, response, on_progress, started, done, on_snapshot=None, on_frame=None):
        # type: (object, object, dict, dict, object, object) -> bytes
        job = None
        while True:
            line = _read_line(response)
            if not line:
                raise socket.error("the connection closed without a result")
            try:
                event = json.loads(line.decode("utf-8", "replace"))
            except ValueError:
                continue
            kind = event.get("event") if isinstance(event, dict) else None
            keep_going = True
            if kind == "accepted":
                job = self.job = event.get("job")
                if self.stopping:  # asked before the server named the job
                    self.stop()
            elif kind == "snapshot":
                data = self._part(response, event)
                if on_snapshot is not None:
                    size = [int(event.get(k, 0)) for k in ("width", "height", "channels")]
                    on_snapshot(data, size[0], size[1], size[2], float(event.get("fraction", 0.0)))
            elif kind == "frame":
                data = self._part(response, event)
                if on_frame is not None:
                    size = [int(event.get(k, 0)) for k in ("width", "height", "channels")]
                    on_frame(data, size[0], size[1], size[2])
            elif kind == "start":
                started.update(event)
                keep_going = on_progress(nst_common.start_fraction(event), nst_common.start_text(event))
            elif kind == "progress":
                keep_going = on_progress(float(event.get("fraction", 0.0)), nst_common.progress_text(event))
            elif kind == "waiting" and not event.get("running"):
                keep_going = on_progress(0.0, "Neural style: waiting for the server %s" % self.url)
            elif kind == "error":
                raise EngineError(
                    event.get("message") or "The server's job failed.", int(event.get("code", 1))
                )
            elif kind == "done":
                done.update(event)
                return self._part(response, event)
            if keep_going is False:
                self.cancel(job)
                raise EngineError("Cancelled.", nst_common.EXIT_CANCELLED)

    def _part(self, response, event):
        # type: (object, dict) -> bytes
        """The bytes that follow `event`'s line: a snapshot's or the result's."""
        size = int(event.get("bytes", -1))
        data = response.read(size)
        if len(data) != size:
            raise EngineError("The engine service %s sent a short result: run it again." % self.url)
        return data

    def stop(self):
        # type: () -> None
        """Stop-and-keep the job `run` is following: it ends after its iteration under way and `run`
        returns the picture so far. Called from `run`'s callbacks or from another thread."""
        self.stopping = True
        if not self.job:
            return  # sent once the server names the job
        try:
            connection = self.connect(HEALTH_SECONDS)
            path = self._path("/jobs/%s/stop" % self.job)
            connection.request(_native("POST"), path, b"", self._headers())
            connection.getresponse().read()
            connection.close()
        except (socket.error, httplib.HTTPException):
            pass  # the job has ended, or the server with it: `run` says which

    def cancel(self, job):
        # type: (str | None) -> None
        """Ask the server to drop `job` (closing our connection, which follows, does it as well)."""
        if not job:
            return
        try:
            connection = self.connect(HEALTH_SECONDS)
            connection.request(_native("DELETE"), self._path("/jobs/%s" % job), headers=self._headers())
            connection.getresponse().read()
            connection.close()
        except (socket.error, httplib.HTTPException):
            pass


def _read_line(response):
    # type: (object) -> bytes
    """One event line of a streamed response; Python 2's httplib reads a chunked body only by size."""
    if hasattr(response, "readline"):
        return response.readline(1024 * 1024)
    line = []
    while True:
        byte = response.read(1)
        line.append(byte)
        if not byte or byte == b"\n" or len(line) > 1024 * 1024:
            return b"".join(line)


def _request_body(
    content, layout, styles, options, masks=None, snapshot_every=None, frames=None, preview=False
):
    # type: (bytes, dict | None, list, dict, list | None, float | None, list | None, bool) -> bytes
    """The request: `content` raw pixels in `layout`, or (layout None) an image file's bytes, as are an
    animation's later `frames`, which come back 8-bit at the working size."""
    images = []  # type: list
    entries = []  # type: list
    for path, weight in styles:
        entry = {"weight": float(weight)}
        entries.append(entry)
        if isinstance(path, nst_common.StylePixels):
            images.append(path.data)
            entry["raw"] = path.layout()
            continue
        try:
            with io.open(path, "rb") as handle:
                images.append(handle.read())
        except (IOError, OSError) as exc:
            raise EngineError(
                "Cannot read style image %s (%s): choose a readable image file."
                % (path, nst_common.error_text(exc)),
                nst_common.EXIT_BAD_IMAGE,
            )
    for entry, data in zip(entries, images):  # noqa: B905 (2.7: no strict)
        entry["bytes"] = len(data)
    for entry, mask in zip(entries, masks or []):  # noqa: B905
        entry["mask"] = {"bytes": len(mask.data), "raw": mask.layout()}
        images.append(mask.data)  # the masks' bytes follow all the styles', in their order
    header = {
        "version": PROTOCOL_VERSION,
        "content": {"bytes": len(content), "raw": layout} if layout else {"bytes": len(content)},
        "styles": entries,
        "options": options,
        "result": {"format": layout["format"], "size": "content"}
        if layout
        else {"format": "u8", "size": "working"},
    }
    if frames is not None:
        header["frames"] = [{"bytes": len(frame)} for frame in frames]
        images.extend(frames)
    if snapshot_every is not None:
        header["snapshot_every"] = snapshot_every
    if preview:
        header["preview"] = True
    return b"".join([_bytes(json.dumps(header)), b"\n", content] + images)


# -- which server: remote ones from the config, or this machine's ----------------------------------------


def read_token(path):
    # type: (str) -> str
    """The token in `path`, one line (the server writes it; a remote server's is copied here)."""
    try:
        with io.open(path, "r", encoding="utf-8") as handle:
            token = handle.read().strip()
    except (IOError, OSError, ValueError) as exc:
        raise EngineError(
            "Cannot read the server token file %s (%s): copy the server's token file there, or run "
            "install.py --server URL --token-file FILE again." % (path, nst_common.error_text(exc)),
            nst_common.EXIT_USAGE,
        )
    if len(token) < 16 or len(token.split()) != 1:
        raise EngineError(
            "The server token file %s does not hold a token: copy the server's token file there." % path,
            nst_common.EXIT_USAGE,
        )
    return token


def remote_servers(config):
    # type: (dict) -> list
    """The config's servers (install.py --server URL --token-file FILE), in their order."""
    entries = config.get("servers") or []
    return [Server(e["url"], read_token(e["token_file"])) for e in entries if isinstance(e, dict)]


def pick(servers):
    # type: (list) -> object
    """The first free server, else the reachable one with the fewest jobs; None when none answers."""
    busy = []
    for order, server in enumerate(servers):
        try:
            state = server.health()
        except Unavailable:
            continue
        if state.get("free"):
            return server
        busy.append((int(state.get("queued", 0)) + int(state.get("running", 0)), order, server))
    return min(busy)[2] if busy else None


def service_folder(config):
    # type: (dict) -> str | None
    """Where the local service's token, address and log go: the config's data folder, or inside a
    Flatpak sandbox its cache folder (the sandbox may not see the host's data folder)."""
    data_dir = config.get("data_dir")
    if not data_dir:
        return None
    if nst_common.in_flatpak():
        return os.path.join(nst_common.runs_folder(), SERVICE_FOLDER)
    return os.path.join(data_dir, SERVICE_FOLDER)


def local_service(config, on_progress):
    # type: (dict, object) -> object
    """This machine's engine service: the live one, or one started now (and waited for, reporting
    STARTING). None when the config does not ask for one, when it cannot start, or when one started
    lately could not be reached: the caller runs the child process."""
    if not config.get("service"):
        return None
    try:
        folder = service_folder(config)
    except EngineError:
        return None  # no folder for its token: the child process needs none
    if folder is None or _unreachable_lately(folder):
        return None
    server = _live(folder, config)
    if server is not None:
        return server
    try:
        _make_folder(folder)
        lock = _start_lock(folder, on_progress)
    except (IOError, OSError):
        return None
    try:
        return _live(folder, config) or _start(config, folder, on_progress)
    finally:
        lock.close()


def _make_folder(folder):
    # type: (str) -> None
    """`folder`, private to this user (it holds the token); another plug-in may make it at the same time."""
    try:
        os.makedirs(folder, 0o700)
    except OSError:
        if not os.path.isdir(folder):
            raise


def _live(folder, config=None):
    # type: (str, dict | None) -> object
    """The service of `folder` when it answers (with our token); given a `config`, only one that runs
    the config's engine Python, weights and network: one that runs others is stopped (a reinstall, or a
    config a user changed), so that the caller starts the right one."""
    try:
        state = nst_common.read_json(os.path.join(folder, STATE_NAME))
        server = Server(state["url"], read_token(os.path.join(folder, TOKEN_NAME)))
        if server.health(timeout=1.0).get("version") != PROTOCOL_VERSION:
            return None
    except (IOError, OSError, ValueError, KeyError, TypeError, Unavailable, EngineError):
        return None
    if config is None or _serves(state, config):
        return server
    _stop(int(state["pid"]), folder)
    return None


def _serves(state, config):
    # type: (dict, dict) -> bool
    if state.get("python") != config.get("python"):
        return False
    if state.get("model", "vgg19") != (config.get("model") or "vgg19"):
        return False
    return not config.get("weights") or state.get("weights") == config["weights"]


def _unreachable_lately(folder):
    # type: (str) -> bool
    try:
        return (
            time.time() - os.path.getmtime(os.path.join(folder, UNREACHABLE_NAME)) < UNREACHABLE_DAYS * 86400
        )
    except OSError:
        return False


def _stop(pid, folder, seconds=15.0):
    # type: (int, str, float) -> bool
    try:
        _terminate(pid)
    except OSError:
        return False
    end = time.time() + seconds
    while time.time() < end and _live(folder) is not None:
        time.sleep(POLL_SECONDS)
    return True


def _terminate(pid):
    # type: (int) -> None
    """SIGTERM to the service `pid`; in a Flatpak sandbox through the host, whose process it is (the
    same number in the sandbox names another process, or none)."""
    if not nst_common.in_flatpak():
        os.kill(pid, signal.SIGTERM)
        return
    command = [nst_common.FLATPAK_SPAWN, "--host", "kill", "-TERM", "%d" % pid]
    with open(os.devnull, "wb") as devnull:
        if subprocess.call(command, stdout=devnull, stderr=devnull) != 0:
            raise OSError("flatpak-spawn could not stop process %d" % pid)


def _start_lock(folder, on_progress):
    # type: (str, object) -> object
    """One plug-in starts the service at a time; the others wait for it, then use it."""
    handle = open(os.path.join(folder, START_LOCK), "wb")
    while fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except (IOError, OSError):
            if on_progress(0.0, STARTING) is False:
                handle.close()
                raise EngineError("Cancelled.", nst_common.EXIT_CANCELLED)
            time.sleep(POLL_SECONDS)
    return handle


def _start(config, folder, on_progress):
    # type: (dict, str, object) -> object
    """Start `serve` detached (it outlives this plug-in run) and wait until it answers."""
    state_path = os.path.join(folder, STATE_NAME)
    token_path = os.path.join(folder, TOKEN_NAME)
    if os.path.exists(state_path):
        os.remove(state_path)  # a dead service's: its address is no longer ours
    command = [config["python"], "-m", "nst_core", "serve", "--port", "0", "--token-file", token_path]
    command += ["--state-file", state_path, "--idle-timeout", "%d" % IDLE_SECONDS]
    if config.get("weights"):
        command += ["--weights", config["weights"]]
    if config.get("model"):  # installed for another network (install.py --model)
        command += ["--model", config["model"]]
    command = nst_common.engine_argv(config, command, outlive=True)  # Flatpak: on the host
    kwargs = {"env": nst_common.child_environment(nst_common.engine_environment(config))}  # type: dict
    if os.name == "nt":
        kwargs["creationflags"] = WINDOWS_DETACHED
    else:
        kwargs["close_fds"] = True
        kwargs["preexec_fn"] = os.setsid  # its own session: GIMP's closing the plug-in does not end it
    devnull = open(os.devnull, "rb")
    kwargs["stdin"] = devnull
    try:
        with open(os.path.join(folder, LOG_NAME), "ab") as log:
            kwargs["stdout"] = log
            command = [nst_common.native_argument(arg) for arg in command]
            process = subprocess.Popen(command, stderr=log, **kwargs)
    except Exception:  # any failure to start means: run the child process instead
        return None
    finally:
        devnull.close()
    end = time.time() + START_SECONDS
    listening = None  # when its address appeared
    while time.time() < end and process.poll() is None:
        if on_progress(0.0, STARTING) is False:
            raise EngineError("Cancelled.", nst_common.EXIT_CANCELLED)  # it starts on: the next run uses it
        server = _live(folder)
        if server is not None:
            return server
        if listening is None and os.path.exists(state_path):
            listening = time.time()
        if listening is not None and time.time() - listening > UNREACHABLE_SECONDS:
            _mark_unreachable(folder)
            break
        time.sleep(POLL_SECONDS)
    if process.poll() is None:
        nst_common.stop_process(process, nst_common.in_flatpak())  # flatpak-spawn passes SIGTERM on
    return None


def _mark_unreachable(folder):
    # type: (str) -> None
    try:
        with open(os.path.join(folder, UNREACHABLE_NAME), "wb"):
            pass
    except (IOError, OSError):
        pass  # then the next run tries again


def stop_local_service(data_dir, seconds=15.0):
    # type: (str, float) -> int | None
    """Stop this machine's engine service of `data_dir` (an upgrade must not leave the old engine
    serving); its pid, or None when none answered. Only a service that answers with its token is
    stopped: a pid alone may have been reused by another program."""
    folder = os.path.join(data_dir, SERVICE_FOLDER)
    if _live(folder) is None:
        return None
    pid = int(nst_common.read_json(os.path.join(folder, STATE_NAME))["pid"])
    return pid if _stop(pid, folder, seconds) else None
