"""What every plug-in side needs, below the bridge (nst_bridge.py) and the service client
(nst_service.py): the protocol's constants and errors, pixels handed over without a file, the names
and regions both plug-ins use, progress text, and starting, placing and stopping the engine's
processes (their environment, their run folders, the Flatpak sandbox). Shared by the GIMP 3 and the
GIMP 2.10 plug-in: it must run on Python 2.7 and 3 with the standard library only, and imports no
other module of the plug-ins.

A Flatpak GIMP cannot run the engine's Python inside its sandbox: the engine is started on the host
through `flatpak-spawn --host`, and the run folder lies in the sandbox's cache folder, which the host
sees at the same path (the sandbox's /tmp is private). Whether the plug-in runs in a sandbox is
decided here, each run: Flathub's GIMP reads the host's ~/.config/GIMP/X.Y, so one installed plug-in
serves both GIMPs and its config cannot say which one runs it.
"""

# ruff: noqa: UP004, UP008, UP010, UP020, UP024, UP025, UP031, UP032, B904
# (Python 2.7 needs the old spellings those rules would modernise, and has no `raise ... from`.)
from __future__ import absolute_import, division, print_function, unicode_literals

import atexit
import io
import json
import os
import re
import shutil
import signal
import struct
import sys
import tempfile
import time
import zlib

try:
    import fcntl
except ImportError:  # Windows: nothing is left behind there, the child dies through close()
    fcntl = None

PROTOCOL_VERSION = 1
CONFIG_NAME = "nst_config.json"

# The engine's exit codes that the plug-ins give themselves (all of them: docs/protocol.md).
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_IMAGE = 3
EXIT_DEVICE = 7
EXIT_CANCELLED = 130
NOT_INSTALLED = "Neural style engine not installed: run install.py (it sets up the engine and writes %s)."
TEMP_PREFIX = "nst-plugin-"
LOCK_NAME = ".lock"
STALE_UNLOCKED_SECONDS = 60  # a run folder still without its lock after this long was abandoned
BYTES_PER_SAMPLE = {"u8": 1, "float32": 4}
PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray + alpha, RGB, RGBA
LINUX_PR_SET_PDEATHSIG = 1

REMOTE = "remote"  # the Device choice that sends jobs to the config's servers (nst_service.py)
FLATPAK_INFO = "/.flatpak-info"  # every Flatpak sandbox has it, nothing outside one does
FLATPAK_SPAWN = "flatpak-spawn"
FLATPAK_PERMISSION = "flatpak override --user --talk-name=org.freedesktop.Flatpak org.gimp.GIMP"
FLATPAK_RUNS = "gimp-neural-style"  # under the sandbox's $XDG_CACHE_HOME
# What flatpak-spawn prints when it cannot reach Flatpak's host service (no permission, no bus).
FLATPAK_SPAWN_FAILURES = ("Portal call failed", "Can't find bus")
FLATPAK_NO_COMMAND = "Failed to start command"  # the host has no such engine Python
FLATPAK_STOP_SECONDS = 5.0
# flatpak-spawn does not pass our environment on; the engine's event stream needs these.
ENGINE_ENV = {"PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}
DATA_DIR_ENV = "NST_DATA_DIR"  # the engine's data folder (nst_core/paths.py), from the config's data_dir
# Left out of the engine's environment: they would make its Python load GIMP's modules.
PYTHON_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONEXECUTABLE")
# A GIMP AppImage points these into its own mounted folder ($APPDIR); torch must not load those libraries.
APPIMAGE_PATH_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD")
PY2 = sys.version_info[0] == 2
# Python 2 passes arguments and the environment to the OS as bytes: in this encoding (Windows: "mbcs",
# the ANSI code page that CreateProcessA reads).
OS_ENCODING = sys.getfilesystemencoding() or "utf-8"


class EngineError(Exception):
    """A one-line message for the user and the engine's exit code (docs/protocol.md)."""

    def __init__(self, message, code=EXIT_INTERNAL):
        # type: (str, int) -> None
        message = " ".join(("%s" % message).split())
        Exception.__init__(self, message)
        self.message = message
        self.code = code

    def __str__(self):
        # type: () -> str
        return self.message


class EngineNotInstalled(EngineError):
    def __init__(self, message=None):
        # type: (str | None) -> None
        EngineError.__init__(self, message or NOT_INSTALLED % CONFIG_NAME, EXIT_INTERNAL)


def read_json(path):
    # type: (str) -> dict
    with io.open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


# -- pixels handed over without a file, and what both plug-ins name and refuse ---------------------------


class RawPixels(object):
    """Pixels handed to the engine without a file: row-major, interleaved, "u8" (0..255) or "float32"
    (0..1), as a job's or a request's raw entry describes them (docs/protocol.md)."""

    def __init__(self, data, width, height, fmt, channels):
        # type: (bytes, int, int, str, int) -> None
        check_layout(data, width, height, fmt, channels)
        self.data, self.width, self.height, self.format, self.channels = data, width, height, fmt, channels

    def layout(self):
        # type: () -> dict
        return {"width": self.width, "height": self.height, "format": self.format, "channels": self.channels}


class StylePixels(RawPixels):
    """A style given as pixels (a layer of an open image) rather than a file, at its image's precision,
    alpha included; `name` for the result's name."""

    def __init__(self, data, width, height, fmt, channels, name):
        # type: (bytes, int, int, str, int, str) -> None
        RawPixels.__init__(self, data, width, height, fmt, channels)
        self.name = as_text(name)


def layout_bytes(width, height, fmt, channels):
    # type: (int, int, str, int) -> int
    """How many bytes pixels of this layout take."""
    return width * height * channels * BYTES_PER_SAMPLE[fmt]


def check_layout(data, width, height, fmt, channels):
    # type: (bytes, int, int, str, int) -> None
    if fmt not in BYTES_PER_SAMPLE or channels not in (1, 2, 3, 4):
        raise EngineError(
            "Unsupported pixel layout %s x %s channels: use u8 or float32 with 1 to 4 "
            "channels." % (fmt, channels),
            EXIT_USAGE,
        )
    if width < 1 or height < 1 or len(data) != layout_bytes(width, height, fmt, channels):
        raise EngineError(
            "Pixel buffer of %d bytes does not match %dx%d %s x %d: this is a plug-in bug."
            % (len(data), width, height, fmt, channels)
        )


def png_bytes(data, width, height, channels):
    # type: (bytes, int, int, int) -> bytes
    """An 8-bit PNG of interleaved pixels: rows unfiltered, zlib's fastest level (it is read once)."""
    check_layout(data, width, height, "u8", channels)
    data = bytes(data)
    stride = width * channels
    rows = b"".join(b"\x00" + data[row * stride : (row + 1) * stride] for row in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOR_TYPES[channels], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + b"".join(
        _png_chunk(kind, body)
        for kind, body in ((b"IHDR", header), (b"IDAT", zlib.compress(rows, 1)), (b"IEND", b""))
    )


def _png_chunk(kind, body):
    # type: (bytes, bytes) -> bytes
    checksum = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)


NO_STYLE = "No style image chosen: pick a picture in 'Style image'."


def style_name(style):
    # type: (object) -> str
    """A style's short name: a layer's name, or a file's name without its extension."""
    if isinstance(style, StylePixels):
        return style.name
    return os.path.splitext(os.path.basename(as_text(style)))[0]


def style_mix(first, second, share):
    # type: (object, object, float) -> list
    """[(style, weight)] for the engine, a style being a file's path or StylePixels: the second style,
    when there is one, takes `share` of the mix."""
    if not first:
        raise EngineError(NO_STYLE, EXIT_USAGE)
    if not second:
        return [(first, 1.0)]
    share = min(max(float(share), 0.0), 1.0)
    return [(first, 1.0 - share), (second, share)]


def result_name(layer_name, styles):
    # type: (str, list) -> str
    """'<layer> (Neural Style: <style> + <second style>)', from the style files' names."""
    stems = [style_name(style) for style, _weight in styles]
    return native("%s (Neural Style: %s)" % (as_text(layer_name), " + ".join(stems)))


# A layer name's timing and disposal tags, as Filters > Animation > Playback and the GIF exporter read them:
# the first "(NNms)" anywhere (spaces allowed inside), and "(combine)" or "(replace)" at the very end.
FRAME_TAG = re.compile(r"\( *[0-9]+ *[mM][sS] *\)|\((?:combine|replace)\)\Z")
FRAME_STYLED = "styled"
FRAMES_NEED_TWO = (
    "Layers are animation frames needs two or more layers: select the frames in the Layers dialog, "
    "or turn the option off."
)
FRAMES_NOT_REMOTE = (
    "Animation frames are computed on this computer: choose a Device other than Remote server, "
    "or turn Layers are animation frames off."
)


def frame_name(layer_name):
    # type: (str) -> str
    """A stylised frame's name: 'Frame 3 (100ms) (combine)' gives 'Frame 3 styled (100ms) (combine)'.
    The word goes in before the first tag and everything from there on is kept as it was, so the new
    frame plays for as long, and is drawn over the one before in the same way, as its source."""
    name = as_text(layer_name)
    match = FRAME_TAG.search(name)
    base, tags = (name, "") if match is None else (name[: match.start()].rstrip(), name[match.start() :])
    return native(" ".join(part for part in (base, FRAME_STYLED, tags) if part))


def check_frames(count):
    # type: (int) -> None
    if count < 2:
        raise EngineError(FRAMES_NEED_TWO, EXIT_USAGE)


def selection_misses(layer_name):
    # type: (str) -> EngineError
    return EngineError(
        "The selection does not touch layer '%s': select part of it, or use Select > None."
        % as_text(layer_name),
        EXIT_USAGE,
    )


# -- regions: the selection (or a channel) as the styles' masks (docs/regions.md) ------------------------

REGION_WHOLE, REGION_INSIDE, REGION_SPLIT = "whole", "inside", "split"
REGIONS = (
    (REGION_WHOLE, "Everywhere (within the selection)"),
    (REGION_INSIDE, "Style inside the region, picture kept outside"),
    (REGION_SPLIT, "First style inside the region, second outside"),
)
REGION_NEEDS_TWO = (
    "Region 'First style inside the region, second outside' needs a second style: choose one, or "
    "choose 'Style inside the region'."
)
REGION_EMPTY = (
    "The region is empty: select the part to paint (a feathered selection gives a soft edge), or "
    "choose Region 'Everywhere'."
)
REGION_NOT_FRAMES = (
    "Regions are not available for animation frames: choose Region 'Everywhere', or turn Layers are "
    "animation frames off."
)
INVERT = bytearray(range(255, -1, -1))


class RegionMask(RawPixels):
    """A region as 8-bit gray pixels over the layer (255 = inside)."""

    def __init__(self, data, width, height):
        # type: (bytes, int, int) -> None
        RawPixels.__init__(self, bytes(data), width, height, "u8", 1)

    def inverted(self):
        # type: () -> RegionMask
        return RegionMask(self.data.translate(bytes(INVERT)), self.width, self.height)


def region_masks(region, mask, style_count):
    # type: (str, RegionMask | None, int) -> list | None
    """One mask per style for `region` (a REGIONS name), or None for the styles everywhere; `mask` is
    the region (the selection or a channel) over the layer. The one-line error for what cannot be."""
    if region == REGION_WHOLE:
        return None
    if region not in (REGION_INSIDE, REGION_SPLIT):
        raise EngineError(
            "Unknown region %r: use %s." % (region, ", ".join(n for n, _ in REGIONS)), EXIT_USAGE
        )
    if region == REGION_SPLIT and style_count != 2:
        raise EngineError(REGION_NEEDS_TWO, EXIT_USAGE)
    if mask is None or not mask.data.strip(b"\x00"):
        raise EngineError(REGION_EMPTY, EXIT_USAGE)
    if region == REGION_SPLIT:
        return [mask, mask.inverted()]
    return [mask] * style_count  # two styles inside share it: blended there, as without a region


def check_frames_region(region):
    # type: (str) -> None
    """Animation frames run as a batch, which takes no masks: a region other than whole is refused."""
    if region != REGION_WHOLE:
        raise EngineError(REGION_NOT_FRAMES, EXIT_USAGE)


# -- text across Python 2 and 3 ----------------------------------------------------------------------------


def as_text(value):
    # type: (object) -> str
    """Text from GIMP 2.10's byte strings (UTF-8) as well as from Python 3's str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else "%s" % value


def error_text(exc):
    # type: (Exception) -> str
    """An exception's message as text; Python 2's may hold bytes in the OS's encoding."""
    try:
        return "%s" % (exc,)
    except UnicodeError:
        try:
            return str(exc).decode(OS_ENCODING, "replace")
        except UnicodeError:
            return repr(exc)


def native(text):
    # type: (str) -> str
    """Python 2's byte str (UTF-8), which gimpfu and the OS calls take; Python 3's str as it is."""
    return text.encode("utf-8") if sys.version_info[0] == 2 else text


def _os_text(value):
    # type: (object) -> str
    """Text of a path the OS gave (Python 2: bytes in the OS's encoding, not GIMP's UTF-8)."""
    return value.decode(OS_ENCODING, "replace") if isinstance(value, bytes) else value


# -- progress text from the engine's events ------------------------------------------------------------


def format_seconds(seconds):
    # type: (float) -> str
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    if hours:
        return "%d:%02d:%02d" % (hours, rest // 60, rest % 60)
    return "%d:%02d" % (rest // 60, rest % 60)


def progress_text(event):
    # type: (dict) -> str
    """'Neural style: scale 2/4, iteration 30/80, 0:42 left' from a progress event. An animation's events
    (`batch --frames`: they carry `item` and `items`) start with 'frame 2/5', and the time left is the
    animation's."""
    parts = _frame_parts(event)
    if event.get("scales", 1) > 1:
        parts.append("scale %s/%s" % (event.get("scale"), event.get("scales")))
    if "iteration" in event:
        parts.append("iteration %s/%s" % (event.get("iteration"), event.get("iterations")))
    left = _time_left(event)
    if left is not None:
        parts.append("%s left" % format_seconds(left))
    return "Neural style: " + ", ".join(parts)


def start_text(event):
    # type: (dict) -> str
    """'Neural style: starting on cpu' from a start event ('frame 2/5, starting on cpu' in an animation)."""
    return "Neural style: " + ", ".join(_frame_parts(event) + ["starting on %s" % event.get("device", "?")])


def start_fraction(event):
    # type: (dict) -> float
    """Where a start event puts the progress bar: 0, or in an animation the frames done so far."""
    items = event.get("items", 1) or 1
    return (event.get("item", 1) - 1) / float(items)


def _frame_parts(event):
    # type: (dict) -> list
    if event.get("items", 1) > 1:
        return ["frame %s/%s" % (event.get("item"), event.get("items"))]
    return []


def _time_left(event):
    # type: (dict) -> float | None
    """The engine's estimate for this picture; in an animation the frames after it are assumed to take as
    long as this one (its time so far plus its estimate), since the engine estimates one frame at a time."""
    left = event.get("eta")
    if left is None:
        return None
    later = event.get("items", 1) - event.get("item", 1)
    if later > 0 and event.get("elapsed") is not None:
        left += later * (event["elapsed"] + left)
    return left


# -- the engine's processes: where they run, their folders, how they stop ---------------------------------


def in_flatpak():
    # type: () -> bool
    """Whether this plug-in runs inside a Flatpak sandbox (then the engine runs on the host)."""
    return os.path.exists(FLATPAK_INFO)


def runs_folder():
    # type: () -> str
    """Where run folders go: the temporary folder, or in a Flatpak one the host sees at the same path."""
    if not in_flatpak():
        return _os_text(tempfile.gettempdir())
    cache = _os_text(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))
    base = os.path.join(cache, FLATPAK_RUNS)
    if not os.path.isdir(base):
        try:
            os.makedirs(base)
        except OSError as exc:
            raise EngineError(
                "Cannot make the folder %s (%s): free some disk space or fix its permissions." % (base, exc)
            )
    return base


def remove_stale_folders(base=None):
    # type: (str | None) -> None
    """Remove folders of plug-ins that were killed (GIMP's Cancel sends SIGKILL, and on Windows
    TerminateProcess, so no cleanup ran).

    A folder is stale when nobody holds its lock file: the kernel drops a dead process's locks
    and closes its files. This holds across PID namespaces (Flatpak, containers), unlike process ids.
    """
    base = base or _os_text(tempfile.gettempdir())
    try:
        names = [name for name in os.listdir(base) if name.startswith(TEMP_PREFIX)]
    except OSError:
        return
    for name in names:
        folder = os.path.join(base, name)
        if _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)


def _abandoned(folder):
    # type: (str) -> bool
    lock = os.path.join(folder, LOCK_NAME)
    try:
        if not os.path.exists(lock):  # still being made, or its maker died before it locked it
            return time.time() - os.path.getmtime(folder) > STALE_UNLOCKED_SECONDS
        if fcntl is None:
            os.remove(lock)  # Windows: fails while the plug-in that opened it lives
            return True
        with open(lock, "rb") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
    except (IOError, OSError):
        return False  # alive (locked or open), or not ours


def lock_folder(folder):
    # type: (str) -> object
    """Mark `folder` as in use while this process lives: an open lock file, locked on POSIX. Windows
    refuses to delete a file that a live process holds open, which is the mark there."""
    handle = open(os.path.join(folder, LOCK_NAME), "wb")
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def die_with_parent():
    # type: () -> None
    """preexec_fn (Linux): the kernel sends SIGKILL to the engine when the plug-in dies."""
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(LINUX_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return  # the engine still stops when its stdin pipe closes
    if os.getppid() != parent:  # the plug-in died before prctl took effect
        os._exit(EXIT_CANCELLED)


def stop_process(process, gently):
    # type: (subprocess.Popen, bool) -> None
    """Kill a live child; `gently` first asks with SIGTERM (flatpak-spawn passes it to the host engine)."""
    if process.poll() is not None:
        return
    if gently:
        process.terminate()
        end = time.time() + FLATPAK_STOP_SECONDS
        while process.poll() is None and time.time() < end:
            time.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait()


_LIVE_RUNS = []  # type: list


def close_at_exit(run):
    # type: (object) -> None
    """`run.close()` at exit and on SIGTERM (TerminateGuard), until forget_at_exit(run)."""
    _LIVE_RUNS.append(run)


def forget_at_exit(run):
    # type: (object) -> None
    if run in _LIVE_RUNS:
        _LIVE_RUNS.remove(run)


def _close_live_runs():
    # type: () -> None
    for live in list(_LIVE_RUNS):
        live.close()


atexit.register(_close_live_runs)


class TerminateGuard(object):
    """While a child runs in the main thread, SIGTERM closes it before the plug-in exits."""

    def __enter__(self):
        # type: () -> TerminateGuard
        self.previous = None
        if os.name == "posix":
            try:
                self.previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            except ValueError:  # not the main thread: rely on the parent-death signal
                pass
        return self

    def __exit__(self, *exc_info):
        # type: (object) -> None
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)

    @staticmethod
    def _on_sigterm(signum, frame):
        # type: (int, object) -> None
        try:
            _close_live_runs()
        finally:
            os._exit(128 + signum)


# -- the engine's environment and command line ----------------------------------------------------------


def engine_environment(config):
    # type: (dict) -> dict
    """What the engine's environment must hold beside ours: an unbuffered UTF-8 event stream, and the
    data folder the installer made (its hash cache of the weights lives there)."""
    env = dict(ENGINE_ENV)
    if config.get("data_dir"):
        env[DATA_DIR_ENV] = config["data_dir"]
    return env


def child_environment(extra=None, environ=None):
    # type: (dict | None, dict | None) -> dict
    """This process's environment (GIMP's, or the installer's) for another Python: minus what would make
    it load this one's modules or a GIMP AppImage's libraries, plus `extra`. The one recipe for every
    Python the plug-ins and the installer start; under Python 2 in the OS's byte strings."""
    env = dict(os.environ if environ is None else environ)
    for name in PYTHON_VARIABLES:
        env.pop(name, None)
    appdir = env.get("APPDIR")
    if appdir and env.get("APPIMAGE"):
        for name in APPIMAGE_PATH_VARIABLES:
            _drop_entries_under(env, name, appdir)
    env.update(extra or {})
    return native_environment(env)


def _drop_entries_under(env, name, folder):
    # type: (dict, str, str) -> None
    """Remove the entries of a path list variable that lie in `folder`; the variable too if none is left."""
    separator = ":" if name == "LD_LIBRARY_PATH" else None  # LD_PRELOAD: spaces or colons
    value = _os_text(env.get(name))
    folder = _os_text(folder)
    if not value:
        return
    entries = value.split(separator) if separator else value.replace(":", " ").split()
    root = folder.rstrip("/") + "/"
    kept = [entry for entry in entries if entry and not (entry + "/").startswith(root)]
    if kept:
        env[name] = (separator or " ").join(kept)
    else:
        del env[name]


def native_environment(env, encoding=None, short_path=None):
    # type: (dict, str | None, object) -> dict
    """`env` as Popen takes it: Python 3's str as it is; Python 2's bytes (Windows' Python 2.7 refuses
    unicode there: "environment can only contain strings")."""
    return dict(
        (native_argument(key, encoding), native_argument(value, encoding, short_path))
        for key, value in env.items()
    )


def native_argument(value, encoding=None, short_path=None):
    # type: (object, str | None, object) -> object
    """An argument or environment value as Popen takes it. Python 2: bytes in the OS's encoding; a path
    that the Windows code page cannot spell goes as its short (8.3) name; else one clear error."""
    if not PY2 or isinstance(value, bytes):
        return value
    encoding = encoding or OS_ENCODING
    try:
        return value.encode(encoding)
    except UnicodeError:
        pass
    if os.name != "nt" and short_path is None:
        return value.encode("utf-8")  # POSIX takes any bytes; UTF-8 is what the installer wrote
    short = (short_path or windows_short_path)(value)
    try:
        if short:
            return short.encode(encoding)
    except UnicodeError:
        pass
    raise EngineError(
        "GIMP 2.10's Python 2 cannot pass %s to the engine: its name has characters that the Windows code "
        "page (%s) cannot spell and it has no short name. Move it to a folder with a plain name (for the "
        "engine: run install.py again with --prefix C:\\gimp-neural-style)." % (value, encoding),
        EXIT_USAGE,
    )


def windows_short_path(path):
    # type: (str) -> str | None
    """The 8.3 short name of an existing path (Windows; None elsewhere or when the volume has none)."""
    try:
        import ctypes

        get_short = ctypes.windll.kernel32.GetShortPathNameW
    except (ImportError, AttributeError, OSError):
        return None
    size = get_short(path, None, 0)
    if not size:
        return None
    buffer = ctypes.create_unicode_buffer(size)
    return buffer.value if get_short(path, buffer, size) else None


def engine_argv(config, command, folder=None):
    # type: (dict, list, str | None) -> list
    """`command` as it is started: as it is, or for Flatpak on the host through flatpak-spawn
    (--watch-bus: it dies with the plug-in), with the engine's environment and in `folder`."""
    if not in_flatpak():
        return command
    spawn = [FLATPAK_SPAWN, "--host", "--watch-bus"] + (["--directory=" + folder] if folder else [])
    env = ["--env=%s=%s" % item for item in sorted(engine_environment(config).items())]
    return spawn + env + command


def engine_python(config):
    # type: (dict) -> str
    """The config's engine Python, or EngineNotInstalled saying what to do."""
    python = config.get("python")
    if not python:
        raise EngineNotInstalled()
    # A host path may not exist inside the Flatpak sandbox: there, starting it is the check.
    if not in_flatpak() and not os.path.isfile(python):
        raise EngineNotInstalled("Neural style engine Python %s is missing: run install.py again." % python)
    return python


def job_options(config, options):
    # type: (dict, dict) -> dict
    """The engine options of a job (and of a plan): unset ones (None) left out, the config's weights
    added unless the options name others."""
    options = dict((k, v) for k, v in options.items() if v is not None)
    if config.get("weights") and "weights" not in options:
        options["weights"] = config["weights"]
    return options


def option_flags(options):
    # type: (dict) -> list
    """Engine options as `stylize`'s flags (`--style-scale 1.5`, `--no-multiscale`, lists spread out)."""
    flags = []  # type: list
    for name in sorted(options):
        value, flag = options[name], "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        flags.append(flag)
        flags.extend(repr(item) if isinstance(item, float) else as_text(item) for item in values)
    return flags
