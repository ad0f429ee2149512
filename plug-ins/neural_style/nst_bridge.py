"""The plug-in side of the engine's job protocol (docs/protocol.md), shared by the GIMP 3
and the GIMP 2.10 plug-in: it must run on Python 2.7 and 3 with the standard library only.

A run writes the layer's pixels and a job file into a private temporary folder, starts
`<engine python> -m nst_core run-job JOB.json` as a child process, turns its JSON event
lines into progress calls, and returns the result's pixels. The child cannot outlive the
plug-in: its stdin is a pipe we never write (the engine stops at end of file), on Linux it
gets a parent-death signal, and the plug-in kills it on SIGTERM, on cancel and at exit.

A Flatpak GIMP cannot run the engine's Python inside its sandbox: the engine is started on
the host through `flatpak-spawn --host`, and the run folder lies in the sandbox's cache folder,
which the host sees at the same path (the sandbox's /tmp is private). Whether the plug-in runs
in a sandbox is decided here, each run: Flathub's GIMP reads the host's ~/.config/GIMP/X.Y, so
one installed plug-in serves both GIMPs and its config cannot say which one runs it.
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
import subprocess
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
DEFAULT_PRESET = "balanced"

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
WINDOWS_CREATE_NO_WINDOW = 0x08000000
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


def _read_json(path):
    # type: (str) -> dict
    with io.open(path, "r", encoding="utf-8") as handle:
        return json.load(handle)


def load_config(plugin_dir):
    # type: (str) -> dict
    """The installed config beside the plug-in, or {} when there is none yet.

    $NST_PLUGIN_CONFIG names another file; $NST_ENGINE_PYTHON and $NST_WEIGHTS override
    single fields. A config that exists but cannot be read raises EngineNotInstalled,
    because reinstalling is the fix.
    """
    path = os.environ.get("NST_PLUGIN_CONFIG") or os.path.join(plugin_dir, CONFIG_NAME)
    config = {}  # type: dict
    if os.path.isfile(path):
        try:
            config = _read_json(path)
        except (IOError, OSError, ValueError) as exc:
            raise EngineNotInstalled(
                "Neural style config %s is unreadable (%s): run install.py again." % (path, exc)
            )
        if not isinstance(config, dict):
            raise EngineNotInstalled(
                "Neural style config %s is not a JSON object: run install.py again." % path
            )
    for field, variable in (("python", "NST_ENGINE_PYTHON"), ("weights", "NST_WEIGHTS")):
        if os.environ.get(variable):
            config[field] = os.environ[variable]
    return config


def engine_description(config):
    # type: (dict) -> dict
    """`python -m nst_core describe --json` as recorded at install time ({} if none)."""
    engine = config.get("engine")
    return engine if isinstance(engine, dict) else {}


def user_presets(config):
    # type: (dict) -> list
    """[(name, label)] of the presets meant for users; just the default one without a config."""
    engine = engine_description(config)
    wanted = engine.get("user_presets")
    presets = [p for p in engine.get("presets", []) if isinstance(p, dict) and "name" in p]
    if wanted:
        by_name = dict((p["name"], p) for p in presets)
        presets = [by_name.get(name, {"name": name}) for name in wanted]
    else:
        presets = [p for p in presets if p.get("user")]
    if not presets:
        name = engine.get("default_preset") or DEFAULT_PRESET
        return [(name, name.capitalize())]
    return [(p["name"], p.get("label") or p["name"].capitalize()) for p in presets]


def option_spec(config, name):
    # type: (dict, str) -> dict
    """The engine's default and limits ({"default", "min", "max"} or {"choices"}) for an option."""
    spec = engine_description(config).get("options", {}).get(name)
    return spec if isinstance(spec, dict) else {}


# -- what both plug-ins' dialogs say and mean ----------------------------------------------------------

CHOICE_LABELS = {
    "auto": "Automatic (GPU if there is one)",
    "cuda": "GPU (CUDA / ROCm)",
    "mps": "GPU (Apple)",
    "cpu": "CPU",
    "remote": "Remote server",
    "off": "Off",
    "luminance": "Keep luminance colours",
    "histogram": "Match colour histogram",
}
# Before install.py has described the engine the dialogs still open (and a run says "not installed").
FALLBACK_CHOICES = {"keep_colors": ["off"], "device": ["auto", "cuda", "mps", "cpu"]}
UNKNOWN_RANGE = (0, 2**31 - 1)
NOT_A_LAYER = "Neural Style works on layers: select one or more layers (not groups, masks or channels)."
NO_STYLE = "No style image chosen: pick a picture in 'Style image'."


def choices(config, name):
    # type: (dict, str) -> tuple
    """([(nick, label)], default nick) of a dialog choice: the quality preset, or an engine option with
    choices (keep_colors, device). Devices this platform cannot have are left out: Apple's GPU off
    macOS, CUDA on macOS."""
    if name == "preset":
        items = user_presets(config)
        default = engine_description(config).get("default_preset")
    else:
        spec = option_spec(config, name)
        nicks = spec.get("choices") or FALLBACK_CHOICES[name]
        if name == "device":
            absent = "cuda" if sys.platform == "darwin" else "mps"
            nicks = [nick for nick in nicks if nick != absent]
            if config.get("servers"):
                nicks = nicks + [REMOTE]
        items = [(nick, CHOICE_LABELS.get(nick, nick.capitalize())) for nick in nicks]
        default = spec.get("default")
    nicks = [nick for nick, _label in items]
    return items, default if default in nicks else nicks[0]


def number_range(config, name):
    # type: (dict, str) -> tuple
    """(low, high, default) of a number option. Where the engine's default is None (size, iterations:
    the preset decides), the range starts at 0 and 0 means "the preset's value"."""
    spec = option_spec(config, name)
    low, high = spec.get("min", UNKNOWN_RANGE[0]), spec.get("max", UNKNOWN_RANGE[1])
    if _preset_decides(config, name):
        return 0, high, 0
    return low, high, spec.get("default", low)


def _preset_decides(config, name):
    # type: (dict, str) -> bool
    """The engine's default for `name` is None: its preset's value, which a dialog's 0 stands for."""
    spec = option_spec(config, name)
    return "default" in spec and spec["default"] is None


def dialog_options(config, values):
    # type: (dict, dict) -> dict
    """The engine options that a dialog's values mean: a 0 for an option the preset decides is left out."""
    options = {}
    for name, value in values.items():
        if value == 0 and _preset_decides(config, name):
            continue
        options[name] = value
    return options


class RawPixels(object):
    """Pixels handed to the engine without a file: row-major, interleaved, "u8" (0..255) or "float32"
    (0..1), as a job's or a request's raw entry describes them (docs/protocol.md)."""

    def __init__(self, data, width, height, fmt, channels):
        # type: (bytes, int, int, str, int) -> None
        _check_layout(data, width, height, fmt, channels)
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
        self.name = _text(name)


def style_name(style):
    # type: (object) -> str
    """A style's short name: a layer's name, or a file's name without its extension."""
    if isinstance(style, StylePixels):
        return style.name
    return os.path.splitext(os.path.basename(_text(style)))[0]


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
    return native("%s (Neural Style: %s)" % (_text(layer_name), " + ".join(stems)))


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
    name = _text(layer_name)
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
        % _text(layer_name),
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


def _text(value):
    # type: (object) -> str
    """Text from GIMP 2.10's byte strings (UTF-8) as well as from Python 3's str."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else "%s" % value


def _error_text(exc):
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


def in_flatpak():
    # type: () -> bool
    """Whether this plug-in runs inside a Flatpak sandbox (then the engine runs on the host)."""
    return os.path.exists(FLATPAK_INFO)


def _lock_folder(folder):
    # type: (str) -> object
    """Mark `folder` as in use while this process lives: an open lock file, locked on POSIX. Windows
    refuses to delete a file that a live process holds open, which is the mark there."""
    handle = open(os.path.join(folder, LOCK_NAME), "wb")
    if fcntl is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def _os_text(value):
    # type: (object) -> str
    """Text of a path the OS gave (Python 2: bytes in the OS's encoding, not GIMP's UTF-8)."""
    return value.decode(OS_ENCODING, "replace") if isinstance(value, bytes) else value


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


def _die_with_parent():
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


def engine_command(config, python, job_path, folder):
    # type: (dict, str, str, str) -> list
    """The engine's command line for a job; for Flatpak, run on the host, dying with the plug-in."""
    return _engine_argv(config, [python, "-m", "nst_core", "run-job", job_path], folder)


def frames_command(config, python, inputs, styles, options, output, folder):
    # type: (dict, str, list, list, dict, str, str) -> list
    """`batch --frames` for an animation's frame files, in order, into the folder `output` as TIFF (what
    read_tiff reads), with a job's options and its styles' weights as --style-blend; --watch-stdin: the
    engine stops when the pipe on its stdin closes, as run-job does."""
    command = [python, "-m", "nst_core", "batch"] + list(inputs)
    for path, _weight in styles:
        command += ["--style", path]
    command += ["-o", output, "--format", "tif", "--frames", "--progress", "json", "--watch-stdin"]
    options = dict(options, style_blend=[float(weight) for _path, weight in styles])
    return _engine_argv(config, command + option_flags(job_options(config, options)), folder)


def _engine_argv(config, command, folder=None):
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


# -- the time estimate that the GIMP 3 dialog shows before OK -----------------------------------------

ESTIMATING = "Estimating the time\u2026"
ESTIMATE_DELAY_MS = 400  # settings that change faster than this are estimated once, for the last of them
NO_ESTIMATE = "No time estimate: %s"
DEVICE_NAMES = {"cpu": "the CPU", "mps": "the Apple GPU"}


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
        flags.extend(repr(item) if isinstance(item, float) else _text(item) for item in values)
    return flags


def plan_command(config, width, height, style_count, options, masked=False):
    # type: (dict, int, int, int, dict, bool) -> list
    """`<engine python> -m nst_core plan ...` for a content of width x height, the options of a job
    (`masked`: its styles have regions, which need more memory)."""
    command = [engine_python(config), "-m", "nst_core", "plan"]
    command += ["--width", "%d" % width, "--height", "%d" % height, "--styles", "%d" % style_count]
    if masked:
        command.append("--masked")
    options = dict(options)
    if options.get("device") == REMOTE:
        del options["device"]  # the server's own speed is not known here: estimate this machine's
    command += option_flags(job_options(config, options)) + ["--json"]
    return [native(_text(arg)) for arg in _engine_argv(config, command)]


def _about(seconds):
    # type: (float) -> str
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return "About %d s" % max(seconds, 1)
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return "About %d min" % minutes
    return "About %d h %02d min" % divmod(minutes, 60)


def _device_name(device):
    # type: (str) -> str
    """The engine's device label for people: the CPU, the GPU's name from 'cuda:0 (NVIDIA H100)'."""
    if device in DEVICE_NAMES:
        return DEVICE_NAMES[device]
    if device.endswith(")") and " (" in device:
        return device[device.index(" (") + 2 : -1]
    return device


def plan_text(plan):
    # type: (dict) -> str
    """One line for the dialog from the engine's plan: 'About 30 s on the CPU at 432x324 px (the layer
    is 4000x3000 px; the result is scaled up to it)', with ', in 12 tiles' when the last scale is tiled."""
    last = plan["scales"][-1]
    width, height = last["width"], last["height"]
    text = "%s on %s at %d\u00d7%d px" % (
        _about(plan["estimated_seconds"]),
        _device_name(_text(plan.get("device", "?"))),
        width,
        height,
    )
    tiles = plan.get("tiles") or []
    if tiles and tiles[-1].get("count", 0) > 1:
        text += ", in %d tiles" % tiles[-1]["count"]
    output = plan.get("output_size") or [width, height]
    if list(output) != [width, height]:
        text += " (the layer is %d\u00d7%d px; the result is scaled up to it)" % tuple(output)
    return text


def estimate_text(code, stdout, stderr):
    # type: (int, str, str) -> str
    """The dialog's line from a finished plan command: its exit code, stdout and stderr as text."""
    if code == 0:
        try:
            return plan_text(json.loads(stdout))
        except (ValueError, KeyError, IndexError, TypeError):
            return NO_ESTIMATE % "the engine's plan was not understood: run install.py again."
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if lines:
        message = lines[-1][len("error:") :].strip() if lines[-1].startswith("error:") else lines[-1][:300]
    else:
        message = "the engine failed (exit code %s): run install.py again." % code
    return NO_ESTIMATE % message


class EstimateRefresh(object):
    """When the dialog's estimate is computed: debounced, the newest request superseding older ones.

    changed() shows ESTIMATING and (re)arms a timer; when it fires, the plan command starts and a
    running older one is cancelled; only the newest one's result is shown, and nothing after close().
    The toolkit comes in as callables (GLib's in the GIMP 3 plug-in, fakes in the tests):
      command() -> argv (may raise EngineError); start(argv, done) -> handle with cancel(), calls
      done(code, stdout, stderr) later (may raise EngineError); show(text); timer(ms, callback) -> id
      (a callback returning False runs once); cancel_timer(id).
    """

    def __init__(self, command, start, show, timer, cancel_timer, delay_ms=ESTIMATE_DELAY_MS):
        # type: (object, object, object, object, object, int) -> None
        self.command, self.start, self.show = command, start, show
        self.timer, self.cancel_timer, self.delay_ms = timer, cancel_timer, delay_ms
        self.timer_id = None  # type: object
        self.running = None  # type: object
        self.generation = 0
        self.closed = False

    def changed(self, *_ignored):
        # type: (object) -> None
        """A setting changed (a notify handler: its arguments are ignored)."""
        if self.closed:
            return
        if self.timer_id is not None:
            self.cancel_timer(self.timer_id)
        self.show(ESTIMATING)
        self.timer_id = self.timer(self.delay_ms, self._fire)

    def _fire(self):
        # type: () -> bool
        self.timer_id = None
        self._cancel_running()
        self.generation += 1
        generation = self.generation
        try:
            argv = self.command()
            self.running = self.start(argv, lambda *result: self._done(generation, *result))
        except EngineError as error:
            self.show(NO_ESTIMATE % error.message)
        return False

    def _done(self, generation, code, stdout, stderr):
        # type: (int, int, str, str) -> None
        if self.closed or generation != self.generation:
            return  # superseded, or the dialog is gone
        self.running = None
        self.show(estimate_text(code, stdout, stderr))

    def _cancel_running(self):
        # type: () -> None
        running, self.running = self.running, None
        if running is not None:
            running.cancel()

    def close(self):
        # type: () -> None
        """The dialog closed: no timer, no running command, no more show()."""
        self.closed = True
        if self.timer_id is not None:
            self.cancel_timer(self.timer_id)
            self.timer_id = None
        self._cancel_running()


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


def _close_live_runs():
    # type: () -> None
    for live in list(_LIVE_RUNS):
        live.close()


atexit.register(_close_live_runs)


class _TerminateGuard(object):
    """While a child runs in the main thread, SIGTERM closes it before the plug-in exits."""

    def __enter__(self):
        # type: () -> _TerminateGuard
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


FEATURE_NEEDED = "The installed engine cannot %s: run install.py again to update it."


def check_engine_features(config, styles, masks):
    # type: (dict, list, list | None) -> None
    """Refuse what the installed engine's `describe` does not list, before any job is sent."""
    features = engine_description(config).get("features") or []
    if masks is not None and "style_masks" not in features:
        raise EngineError(FEATURE_NEEDED % "paint regions", EXIT_USAGE)
    if any(isinstance(s, StylePixels) for s, _w in styles) and "raw_styles" not in features:
        raise EngineError(FEATURE_NEEDED % "take a layer as the style", EXIT_USAGE)


def _check_layout(data, width, height, fmt, channels):
    # type: (bytes, int, int, str, int) -> None
    if fmt not in BYTES_PER_SAMPLE or channels not in (1, 2, 3, 4):
        raise EngineError(
            "Unsupported pixel layout %s x %s channels: use u8 or float32 with 1 to 4 "
            "channels." % (fmt, channels),
            EXIT_USAGE,
        )
    expected = width * height * channels * BYTES_PER_SAMPLE[fmt]
    if width < 1 or height < 1 or len(data) != expected:
        raise EngineError(
            "Pixel buffer of %d bytes does not match %dx%d %s x %d: this is a plug-in bug."
            % (len(data), width, height, fmt, channels)
        )


def _checked_styles(styles):
    # type: (list) -> list
    """[(style, weight)] with paths as text, every file there; else the one-line error."""
    if not styles:
        raise EngineError(NO_STYLE, EXIT_USAGE)
    # GIMP 2.10 names files in UTF-8 bytes; Python 2 on Windows reads bytes as the ANSI code page.
    styles = [(_text(path) if path and not isinstance(path, StylePixels) else path, w) for path, w in styles]
    for path, _weight in styles:
        if isinstance(path, StylePixels):
            continue
        if not path or not os.path.isfile(path):
            raise EngineError(
                "Style image %s not found: choose an existing image file." % path, EXIT_BAD_IMAGE
            )
    return styles


# -- animation frames: image files in and out of `batch --frames`, with the standard library only ------

PNG_COLOR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> gray, gray + alpha, RGB, RGBA
TIFF_BYTE_ORDERS = {b"II": "<", b"MM": ">"}
TIFF_TYPES = {1: "B", 3: "H", 4: "I"}  # BYTE, SHORT, LONG: all that an uncompressed 8-bit file needs
TIFF_WIDTH, TIFF_HEIGHT, TIFF_BITS, TIFF_COMPRESSION = 256, 257, 258, 259
TIFF_STRIP_OFFSETS, TIFF_SAMPLES, TIFF_STRIP_BYTES, TIFF_PLANAR = 273, 277, 279, 284


def png_bytes(data, width, height, channels):
    # type: (bytes, int, int, int) -> bytes
    """An 8-bit PNG of interleaved pixels: rows unfiltered, zlib's fastest level (it is read once)."""
    _check_layout(data, width, height, "u8", channels)
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


def read_tiff(blob):
    # type: (bytes) -> tuple
    """(pixels, width, height, channels) of an uncompressed 8-bit TIFF, as Pillow writes the engine's
    results: its strips are the rows, so reading them is a copy (a PNG would need unfiltering in Python,
    seconds a frame). ValueError for anything else."""
    order = TIFF_BYTE_ORDERS.get(bytes(blob[:2]))
    if order is None or len(blob) < 8 or struct.unpack(order + "H", blob[2:4])[0] != 42:
        raise ValueError("not a TIFF file")
    tags = _tiff_tags(blob, order, struct.unpack(order + "I", blob[4:8])[0])
    width, height = tags[TIFF_WIDTH][0], tags[TIFF_HEIGHT][0]
    channels = tags.get(TIFF_SAMPLES, (1,))[0]
    if (
        tags.get(TIFF_COMPRESSION, (1,))[0] != 1
        or tags.get(TIFF_PLANAR, (1,))[0] != 1
        or set(tags.get(TIFF_BITS, (1,))) != set([8])
    ):
        raise ValueError("not an uncompressed 8-bit TIFF")
    size = width * height * channels
    data = b"".join(
        bytes(blob[start : start + count])
        for start, count in zip(tags[TIFF_STRIP_OFFSETS], tags[TIFF_STRIP_BYTES])  # noqa: B905 (2.7: no strict)
    )
    if width < 1 or height < 1 or not 1 <= channels <= 4 or len(data) < size:
        raise ValueError("a TIFF of %dx%d x %d holds %d bytes" % (width, height, channels, len(data)))
    return data[:size], width, height, channels


def _tiff_tags(blob, order, offset):
    # type: (bytes, str, int) -> dict
    """{tag: values} of the first image's directory; tags of other types are left out."""
    try:
        count = struct.unpack(order + "H", blob[offset : offset + 2])[0]
        tags = {}
        for index in range(count):
            start = offset + 2 + 12 * index
            tag, kind, number, value = struct.unpack(order + "HHI4s", blob[start : start + 12])
            if kind not in TIFF_TYPES:
                continue
            length = struct.calcsize(order + TIFF_TYPES[kind] * number)
            if length > 4:
                where = struct.unpack(order + "I", value)[0]
                value = blob[where : where + length]
            tags[tag] = struct.unpack(order + TIFF_TYPES[kind] * number, value[:length])
    except struct.error as exc:
        raise ValueError("a cut TIFF directory (%s)" % exc)
    missing = [
        tag for tag in (TIFF_WIDTH, TIFF_HEIGHT, TIFF_STRIP_OFFSETS, TIFF_STRIP_BYTES) if tag not in tags
    ]
    if missing:
        raise ValueError("a TIFF directory without tag %s" % missing[0])
    return tags


class EngineRun(object):
    """One engine job in a private temporary folder (a context manager: `with EngineRun(c) as r`)."""

    def __init__(self, config):
        # type: (dict) -> None
        self.config = config
        self.process = None  # type: subprocess.Popen | None
        self.content = None  # type: dict | None
        self.started = {}  # type: dict
        self.stderr_path = None  # type: str | None
        self.content_data = b""
        self.server = None  # type: str | None
        self.flatpak = in_flatpak()
        base = runs_folder()
        remove_stale_folders(base)
        self.folder = tempfile.mkdtemp(prefix="%s%d-" % (TEMP_PREFIX, os.getpid()), dir=base)
        self.lock = _lock_folder(self.folder)
        _LIVE_RUNS.append(self)

    def __enter__(self):
        # type: () -> EngineRun
        return self

    def __exit__(self, *exc_info):
        # type: (object) -> None
        self.close()

    def set_content_raw(self, data, width, height, fmt, channels):
        # type: (bytes, int, int, str, int) -> None
        """The layer's pixels: row-major, interleaved, "u8" (0..255) or "float32" (0..1)."""
        _check_layout(data, width, height, fmt, channels)
        path = os.path.join(self.folder, "content.raw")
        with open(path, "wb") as handle:
            handle.write(data)
        self.content_data = data
        self.content = {"raw": path, "width": width, "height": height, "format": fmt, "channels": channels}

    def run(self, styles, options, on_progress, masks=None):
        # type: (list, dict, object, list | None) -> bytes
        """Stylise the content; styles: [(path or StylePixels, weight)]; masks: a RegionMask per style
        (region_masks) or None; on_progress(fraction, text) -> False cancels."""
        options = dict(options)
        remote = options.get("device") == REMOTE
        if remote:
            del options["device"]  # a server runs on its own device
        python = engine_python(self.config)
        if self.content is None:
            raise EngineError("No content set: call set_content_raw first (a plug-in bug).")
        styles = _checked_styles(styles)
        check_engine_features(self.config, styles, masks)
        served = self._run_served(styles, options, remote, on_progress, masks)
        if served is not None:
            return served
        job_path = self._write_job(styles, options, masks)
        self._run_child(python, engine_command(self.config, python, job_path, self.folder), on_progress)
        return self._read_output()

    def _run_child(self, python, command, on_progress):
        # type: (str, list, object) -> None
        """Run the engine's `command` to its end, its events forwarded; EngineError if it failed."""
        with _TerminateGuard():
            self._start(python, command)
            last = self._follow(on_progress)
            code = self.process.wait()
        self.process = None
        if last.get("event") == "error" or code != 0:
            raise self._failure(last, code)

    def _run_served(self, styles, options, remote, on_progress, masks=None):
        # type: (list, dict, bool, object, list | None) -> bytes | None
        """The job on a remote server (`remote`) or this machine's warm engine service; None when
        neither can take it, and the child process runs it."""
        import nst_service  # beside this module; it imports this one

        server = None
        if remote:
            server = nst_service.pick(nst_service.remote_servers(self.config))
            if server is None:
                on_progress(0.0, nst_service.NO_SERVER)
        if server is None:
            server = nst_service.local_service(self.config, on_progress)
        if server is None:
            return None
        layout = dict((k, self.content[k]) for k in ("width", "height", "format", "channels"))
        sent = dict((k, v) for k, v in options.items() if v is not None)
        try:
            data, self.started = server.run(self.content_data, layout, styles, sent, on_progress, masks)
        except nst_service.Unavailable:
            return None  # it cannot run this job's device: the child process can
        self.server = server.url
        expected = self._expected_bytes()
        if len(data) != expected:
            raise EngineError(
                "The engine's result has %d bytes, not %d: please report this bug." % (len(data), expected)
            )
        return data

    def close(self):
        # type: () -> None
        """Kill a live child and remove the temporary folder (safe to call twice)."""
        process, self.process = self.process, None
        if process is not None:
            try:
                stop_process(process, self.flatpak)
            except OSError:
                pass
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except (IOError, OSError, RuntimeError, ValueError):
                        pass  # SIGTERM came during a read of this stream: it goes with the process
        if self.lock is not None:  # first: Windows cannot delete the lock file while it is open
            self.lock.close()
            self.lock = None
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        if self in _LIVE_RUNS:
            _LIVE_RUNS.remove(self)

    def _write_job(self, styles, options, masks=None):
        # type: (list, dict, list | None) -> str
        options = job_options(self.config, options)
        output = {"raw": os.path.join(self.folder, "result.raw"), "format": self.content["format"]}
        if self.flatpak:
            styles = self._copy_styles(styles)
        entries = []
        for index, (style, weight) in enumerate(styles):
            if isinstance(style, StylePixels):
                entry = dict(style.layout(), raw=self._write_raw("style-%d.raw" % index, style.data))
            else:
                entry = {"path": style}
            entry["weight"] = float(weight)
            if masks is not None:
                mask = masks[index]
                entry["mask"] = dict(mask.layout(), raw=self._write_raw("mask-%d.raw" % index, mask.data))
            entries.append(entry)
        job = {
            "version": PROTOCOL_VERSION,
            "content": self.content,
            "styles": entries,
            "options": options,
            "output": output,
        }
        path = os.path.join(self.folder, "job.json")
        with io.open(path, "w", encoding="utf-8") as handle:
            handle.write("%s" % json.dumps(job, indent=2))
        return path

    def _write_raw(self, name, data):
        # type: (str, bytes) -> str
        path = os.path.join(self.folder, name)
        with open(path, "wb") as handle:
            handle.write(data)
        return path

    def _copy_styles(self, styles):
        # type: (list) -> list
        """Copies in the run folder: a path in the sandbox (a portal's, /tmp) may not exist on the host."""
        copies = []
        for index, (path, weight) in enumerate(styles):
            if isinstance(path, StylePixels):  # written into the run folder anyway
                copies.append((path, weight))
                continue
            copy = os.path.join(self.folder, "style-%d%s" % (index, os.path.splitext(path)[1]))
            try:
                shutil.copyfile(path, copy)
            except (IOError, OSError) as exc:
                raise EngineError(
                    "Cannot read style image %s (%s): choose a readable image file." % (path, exc),
                    EXIT_BAD_IMAGE,
                )
            copies.append((copy, weight))
        return copies

    def _start(self, python, command):
        # type: (str, list) -> None
        self.stderr_path = os.path.join(self.folder, "engine-stderr.txt")
        kwargs = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "cwd": self.folder}  # type: dict
        kwargs["env"] = child_environment(engine_environment(self.config))
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = _die_with_parent
        if os.name == "nt":
            kwargs["creationflags"] = WINDOWS_CREATE_NO_WINDOW
        else:
            kwargs["close_fds"] = True
        command = [native_argument(arg) for arg in command]
        kwargs["cwd"] = native_argument(self.folder)
        with open(self.stderr_path, "wb") as stderr:
            try:
                # One line: Python 2.7 refuses the trailing comma after **kwargs that a split call gets.
                self.process = subprocess.Popen(command, stderr=stderr, **kwargs)
            except Exception as exc:  # OSError, and on Python 2 TypeError or UnicodeError: never a traceback
                raise self._start_failure(python, exc)

    def _start_failure(self, python, exc):
        # type: (str, Exception) -> EngineError
        detail = "%s: %s" % (type(exc).__name__, _error_text(exc))
        if self.flatpak:
            return EngineNotInstalled(
                "Neural style cannot run %s inside the Flatpak sandbox (%s): update the Flatpak GIMP, or "
                "install a GIMP from your distribution and run install.py again." % (FLATPAK_SPAWN, detail)
            )
        return EngineNotInstalled(
            "Neural style engine %s cannot start (%s): run install.py again." % (python, detail)
        )

    def _follow(self, on_progress):
        # type: (object) -> dict
        """Forward events until the child closes its stdout; the last done/error event."""
        last = {}  # type: dict
        for raw in iter(self.process.stdout.readline, b""):
            try:
                event = json.loads(raw.decode("utf-8", "replace"))
            except ValueError:
                continue  # not an event: ignore, as the protocol asks
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "start":
                self.started = event
                keep_going = on_progress(start_fraction(event), start_text(event))
            elif kind == "progress":
                keep_going = on_progress(float(event.get("fraction", 0.0)), progress_text(event))
            else:
                keep_going = True
                if kind in ("done", "error"):
                    last = event
                elif kind == "item":
                    self._item(event)
            if keep_going is False:
                self.close_child()
                raise EngineError("Cancelled.", EXIT_CANCELLED)
        return last

    def _item(self, event):
        # type: (dict) -> None
        """A picture of a batch is finished (a job has none)."""

    def close_child(self):
        # type: () -> None
        if self.process is not None:
            stop_process(self.process, self.flatpak)

    def _failure(self, last, code):
        # type: (dict, int) -> EngineError
        if last.get("event") == "error" and last.get("message"):
            return EngineError(last["message"], int(last.get("code", code) or 1))
        detail = self._stderr_tail()
        if self.flatpak and FLATPAK_NO_COMMAND in detail:
            return EngineNotInstalled(
                "Neural style engine %s cannot start on the host (%s): run "
                "install.py again." % (self.config.get("python"), detail)
            )
        if self.flatpak and detail.startswith(FLATPAK_SPAWN_FAILURES):
            return EngineError(
                "Neural style cannot start its engine outside the Flatpak sandbox (%s): "
                "allow it once with `%s`, then restart GIMP." % (detail, FLATPAK_PERMISSION)
            )
        return EngineError(
            "Neural style engine failed (exit code %s)%s: see the message above or run "
            "install.py again." % (code, ": " + detail if detail else ""),
            code or 1,
        )

    def _stderr_tail(self):
        # type: () -> str
        try:
            with io.open(self.stderr_path, "r", encoding="utf-8", errors="replace") as handle:
                lines = [line.strip() for line in handle if line.strip()]
        except (IOError, OSError, TypeError):
            return ""
        return lines[-1][:300] if lines else ""

    def _expected_bytes(self):
        # type: () -> int
        content = self.content
        samples = content["width"] * content["height"] * content["channels"]
        return samples * BYTES_PER_SAMPLE[content["format"]]

    def _read_output(self):
        # type: () -> bytes
        path = os.path.join(self.folder, "result.raw")
        expected = self._expected_bytes()
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except (IOError, OSError):
            raise EngineError("The engine reported success but wrote no result: please report this bug.")
        if len(data) != expected:
            raise EngineError(
                "The engine's result has %d bytes, not %d: please report this bug." % (len(data), expected)
            )
        return data


class FramesRun(EngineRun):
    """An animation's frames through the engine's `batch --frames` in one child process: each frame
    starts from the one before, warped by the optical flow (docs/batch.md). The warm engine service runs
    single pictures only, so this never uses it. A context manager like EngineRun: the frame files, the
    results and the child go with close()."""

    def __init__(self, config):
        # type: (dict) -> None
        EngineRun.__init__(self, config)
        self.frames = []  # type: list
        self.names = {}  # type: dict

    def add_frame(self, data, width, height, channels, name):
        # type: (bytes, int, int, int, str) -> None
        """The next frame's 8-bit pixels (row-major, interleaved) and its layer's name, for messages."""
        path = os.path.join(self.folder, "frame-%04d.png" % len(self.frames))
        with open(path, "wb") as handle:
            handle.write(png_bytes(data, width, height, channels))
        self.frames.append((path, channels))
        self.names[path] = _text(name)

    def run(self, styles, options, on_progress):
        # type: (list, dict, object) -> list
        """Stylise the frames in order; [(pixels, width, height)] of each, at the working size (the
        caller scales them to their layers). on_progress(fraction of the animation, text) -> False cancels."""
        if options.get("device") == REMOTE:
            raise EngineError(FRAMES_NOT_REMOTE, EXIT_USAGE)
        python = engine_python(self.config)
        check_frames(len(self.frames))
        styles = [(self._style_file(index, style), weight) for index, (style, weight) in enumerate(styles)]
        styles = _checked_styles(styles)
        if self.flatpak:
            styles = self._copy_styles(styles)
        output = os.path.join(self.folder, "styled")
        os.mkdir(output)
        inputs = [path for path, _channels in self.frames]
        command = frames_command(self.config, python, inputs, styles, options, output, self.folder)
        self._run_child(python, command, on_progress)
        return [self._read_frame(output, path, channels) for path, channels in self.frames]

    def _style_file(self, index, style):
        # type: (int, object) -> object
        """`batch` takes style files: a layer's 8-bit pixels go in a PNG in the run folder."""
        if not isinstance(style, StylePixels):
            return style
        if style.format != "u8":
            raise EngineError("Animation frames take an 8-bit style layer (a plug-in bug: read it as u8).")
        path = os.path.join(self.folder, "style-%d.png" % index)
        with open(path, "wb") as handle:
            handle.write(png_bytes(style.data, style.width, style.height, style.channels))
        return path

    def _item(self, event):
        # type: (dict) -> None
        """A failed frame fails the animation: the frames after it would start from nothing."""
        if event.get("status") != "failed":
            return
        self.close_child()
        source = _text(event.get("input", ""))
        raise EngineError(
            "Frame '%s' failed: %s"
            % (self.names.get(source, os.path.basename(source)), event.get("message", ""))
        )

    def _read_frame(self, output, source, channels):
        # type: (str, str, int) -> tuple
        path = os.path.join(output, os.path.splitext(os.path.basename(source))[0] + ".tif")
        try:
            with open(path, "rb") as handle:
                data, width, height, found = read_tiff(handle.read())
        except (IOError, OSError):
            raise EngineError("The engine reported success but wrote no result: please report this bug.")
        except ValueError as exc:
            raise EngineError(
                "The engine's result %s is unreadable (%s): please report this bug." % (path, exc)
            )
        if found != channels:
            raise EngineError(
                "The engine's result has %d channels, not %d: please report this bug." % (found, channels)
            )
        return data, width, height
