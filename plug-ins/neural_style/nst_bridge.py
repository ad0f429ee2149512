"""The plug-in side of the engine's job protocol (docs/protocol.md), shared by the GIMP 3
and the GIMP 2.10 plug-in: it must run on Python 2.7 and 3 with the standard library only.

A run writes the layer's pixels and a job file into a private temporary folder, starts
`<engine python> -m nst_core run-job JOB.json` as a child process, turns its JSON event
lines into progress calls, and returns the result's pixels. The child cannot outlive the
plug-in: its stdin is a pipe we never write (the engine stops at end of file), on Linux it
gets a parent-death signal, and the plug-in kills it on SIGTERM, on cancel and at exit.
A job goes to a server or the warm engine service first (nst_service.py) when there is one.

Here also: the config install.py writes and what the dialogs offer from it. What the service
client needs too lies below, in nst_common.py; animation frames' TIFF results are read by nst_tiff.py.
"""

# ruff: noqa: UP004, UP008, UP010, UP020, UP024, UP025, UP031, UP032, B904
# (Python 2.7 needs the old spellings those rules would modernise, and has no `raise ... from`.)
from __future__ import absolute_import, division, print_function, unicode_literals

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile

import nst_common
import nst_service
import nst_tiff
from nst_common import EngineError, EngineNotInstalled, StylePixels

DEFAULT_PRESET = "balanced"
DEFAULT_PAINTING = "starry-night"  # nst_core.paintings.DEFAULT_PAINTING (a test holds them equal)
WINDOWS_CREATE_NO_WINDOW = 0x08000000


def load_config(plugin_dir):
    # type: (str) -> dict
    """The installed config beside the plug-in, or {} when there is none yet.

    $NST_PLUGIN_CONFIG names another file; $NST_ENGINE_PYTHON and $NST_WEIGHTS override
    single fields. A config that exists but cannot be read raises EngineNotInstalled,
    because reinstalling is the fix.
    """
    path = os.environ.get("NST_PLUGIN_CONFIG") or os.path.join(plugin_dir, nst_common.CONFIG_NAME)
    config = {}  # type: dict
    if os.path.isfile(path):
        try:
            config = nst_common.read_json(path)
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


def paintings(config):
    # type: (dict) -> list
    """[(name, title, path)] of the paintings the installed engine bundles (none before it is described)."""
    return [(p["name"], p["title"], p["path"]) for p in engine_description(config).get("paintings") or []]


def painting_path(config, name):
    # type: (dict, str) -> str
    """The file of the bundled painting `name`, or the one-line error naming the fix."""
    path = dict((nick, path) for nick, _title, path in paintings(config)).get(name)
    if path is None:
        raise EngineError(UNKNOWN_PAINTING % name, nst_common.EXIT_USAGE)
    return path


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
UNKNOWN_PAINTING = "The installed engine has no painting '%s': run install.py again, or choose a file."
NOT_A_LAYER = "Neural Style works on layers: select one or more layers (not groups, masks or channels)."


def choices(config, name):
    # type: (dict, str) -> tuple
    """([(nick, label)], default nick) of a dialog choice: the quality preset, a bundled painting (a
    placeholder before the engine is described: a run then says to install), or an engine option with
    choices (keep_colors, device). Devices this platform cannot have are left out: Apple's GPU off
    macOS, CUDA on macOS."""
    if name == "preset":
        items = user_presets(config)
        default = engine_description(config).get("default_preset")
    elif name == "painting":
        items = [item[:2] for item in paintings(config)] or [(DEFAULT_PAINTING, "Painting")]
        default = engine_description(config).get("default_painting")
    else:
        spec = option_spec(config, name)
        nicks = spec.get("choices") or FALLBACK_CHOICES[name]
        if name == "device":
            absent = "cuda" if sys.platform == "darwin" else "mps"
            nicks = [nick for nick in nicks if nick != absent]
            if config.get("servers"):
                nicks = nicks + [nst_common.REMOTE]
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
    """The engine options that a dialog's values mean: a 0 for an option the preset decides is left out;
    the network the install chose, if not the engine's own default."""
    options = {}
    for name, value in values.items():
        if value == 0 and _preset_decides(config, name):
            continue
        options[name] = value
    if config.get("model"):  # installed for another network (install.py --model)
        options["model"] = config["model"]
    return options


def engine_command(config, python, job_path, folder):
    # type: (dict, str, str, str) -> list
    """The engine's command line for a job; for Flatpak, run on the host, dying with the plug-in."""
    return nst_common.engine_argv(config, [python, "-m", "nst_core", "run-job", job_path], folder)


def frames_command(config, python, inputs, styles, options, output, folder):
    # type: (dict, str, list, list, dict, str, str) -> list
    """`batch --frames` for an animation's frame files, in order, into the folder `output` as TIFF (what
    nst_tiff reads), with a job's options and its styles' weights as --style-blend; --watch-stdin: the
    engine stops when the pipe on its stdin closes, as run-job does."""
    command = [python, "-m", "nst_core", "batch"] + list(inputs)
    for path, _weight in styles:
        command += ["--style", path]
    command += ["-o", output, "--format", "tif", "--frames", "--progress", "json", "--watch-stdin"]
    options = dict(options, style_blend=[float(weight) for _path, weight in styles])
    return nst_common.engine_argv(
        config, command + nst_common.option_flags(nst_common.job_options(config, options)), folder
    )


FEATURE_NEEDED = "The installed engine cannot %s: run install.py again to update it."


def check_engine_features(config, styles, masks):
    # type: (dict, list, list | None) -> None
    """Refuse what the installed engine's `describe` does not list, before any job is sent."""
    if masks is not None and not engine_can(config, "style_masks"):
        raise EngineError(FEATURE_NEEDED % "paint regions", nst_common.EXIT_USAGE)
    if any(isinstance(s, StylePixels) for s, _w in styles) and not engine_can(config, "raw_styles"):
        raise EngineError(FEATURE_NEEDED % "take a layer as the style", nst_common.EXIT_USAGE)


def engine_can(config, feature):
    # type: (dict, str) -> bool
    """Whether the installed engine's `describe` lists `feature` ("snapshots", "stop")."""
    return feature in (engine_description(config).get("features") or [])


def _checked_styles(styles):
    # type: (list) -> list
    """[(style, weight)] with paths as text, every file there; else the one-line error."""
    if not styles:
        raise EngineError(nst_common.NO_STYLE, nst_common.EXIT_USAGE)
    # GIMP 2.10 names files in UTF-8 bytes; Python 2 on Windows reads bytes as the ANSI code page.
    styles = [
        (nst_common.as_text(path) if path and not isinstance(path, StylePixels) else path, w)
        for path, w in styles
    ]
    for path, _weight in styles:
        if isinstance(path, StylePixels):
            continue
        if not path or not os.path.isfile(path):
            raise EngineError(
                "Style image %s not found: choose an existing image file." % path, nst_common.EXIT_BAD_IMAGE
            )
    return styles


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
        self.on_snapshot = self.serving = None  # type: object
        self.flatpak = nst_common.in_flatpak()
        base = nst_common.runs_folder()
        nst_common.remove_stale_folders(base)
        self.folder = tempfile.mkdtemp(prefix="%s%d-" % (nst_common.TEMP_PREFIX, os.getpid()), dir=base)
        self.lock = nst_common.lock_folder(self.folder)
        nst_common.close_at_exit(self)

    def __enter__(self):
        # type: () -> EngineRun
        return self

    def __exit__(self, *exc_info):
        # type: (object) -> None
        self.close()

    def set_content_raw(self, data, width, height, fmt, channels):
        # type: (bytes, int, int, str, int) -> None
        """The layer's pixels: row-major, interleaved, "u8" (0..255) or "float32" (0..1)."""
        nst_common.check_layout(data, width, height, fmt, channels)
        path, self.content_data = self._write_raw("content.raw", data), data
        self.content = {"raw": path, "width": width, "height": height, "format": fmt, "channels": channels}

    def run(self, styles, options, on_progress, masks=None, on_snapshot=None, preview=False):
        # type: (list, dict, object, list | None, object, bool) -> bytes
        """Stylise the content; styles: [(path or StylePixels, weight)]; masks: a RegionMask per style
        (region_masks) or None; on_progress(fraction, text) -> False cancels; on_snapshot(pixels, width,
        height, channels, fraction): the picture so far in the content's format, maybe at the working size;
        preview: a dialog's preview, which a warm engine may start from its last one (docs/protocol.md)."""
        options = dict(options)
        remote = options.get("device") == nst_common.REMOTE
        if remote:
            del options["device"]  # a server runs on its own device
        python = nst_common.engine_python(self.config)
        if self.content is None:
            raise EngineError("No content set: call set_content_raw first (a plug-in bug).")
        styles = _checked_styles(styles)
        check_engine_features(self.config, styles, masks)
        if engine_can(self.config, "snapshots"):
            self.on_snapshot = on_snapshot
        preview = preview and engine_can(self.config, "previews")
        served = self._run_served(styles, options, remote, on_progress, masks, preview)
        if served is not None:
            return served
        job_path = self._write_job(styles, options, masks)
        self._run_child(python, engine_command(self.config, python, job_path, self.folder), on_progress)
        return self._read_output()

    def _run_child(self, python, command, on_progress):
        # type: (str, list, object) -> None
        """Run the engine's `command` to its end, its events forwarded; EngineError if it failed."""
        with nst_common.TerminateGuard():
            self._start(python, command)
            last = self._follow(on_progress)
            code = self.process.wait()
        self.process = None
        if last.get("event") == "error" or code != 0:
            raise self._failure(last, code)

    def _run_served(self, styles, options, remote, on_progress, masks=None, preview=False):
        # type: (list, dict, bool, object, list | None, bool) -> bytes | None
        """The job on a remote server (`remote`) or this machine's warm engine service; None when
        neither can take it, and the child process runs it."""
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
        self.serving = server
        try:
            data, self.started = server.run(
                self.content_data, layout, styles, sent, on_progress, masks, self.on_snapshot, preview
            )
        except nst_service.Unavailable:
            return None  # it cannot run this job's device: the child process can
        finally:
            self.serving = None
        self.server = server.url
        return self._checked_result(data)

    def close(self):
        # type: () -> None
        """Kill a live child and remove the temporary folder (safe to call twice)."""
        process, self.process = self.process, None
        if process is not None:
            try:
                nst_common.stop_process(process, self.flatpak)
            except OSError:
                pass
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
        nst_common.forget_at_exit(self)

    def _write_job(self, styles, options, masks=None):
        # type: (list, dict, list | None) -> str
        options = nst_common.job_options(self.config, options)
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
            "version": nst_common.PROTOCOL_VERSION,
            "content": self.content,
            "styles": entries,
            "options": options,
            "output": output,
        }
        if self.on_snapshot is not None:  # how often: the engine's default
            job["snapshot"] = {"raw": os.path.join(self.folder, "snapshot.raw"), "format": output["format"]}
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
                    nst_common.EXIT_BAD_IMAGE,
                )
            copies.append((copy, weight))
        return copies

    def _start(self, python, command):
        # type: (str, list) -> None
        self.stderr_path = os.path.join(self.folder, "engine-stderr.txt")
        kwargs = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "cwd": self.folder}  # type: dict
        kwargs["env"] = nst_common.child_environment(nst_common.engine_environment(self.config))
        if sys.platform.startswith("linux"):
            kwargs["preexec_fn"] = nst_common.die_with_parent
        if os.name == "nt":
            kwargs["creationflags"] = WINDOWS_CREATE_NO_WINDOW
        else:
            kwargs["close_fds"] = True
        command = [nst_common.native_argument(arg) for arg in command]
        kwargs["cwd"] = nst_common.native_argument(self.folder)
        with open(self.stderr_path, "wb") as stderr:
            try:
                # One line: Python 2.7 refuses the trailing comma after **kwargs that a split call gets.
                self.process = subprocess.Popen(command, stderr=stderr, **kwargs)
            except Exception as exc:  # OSError, and on Python 2 TypeError or UnicodeError: never a traceback
                raise self._start_failure(python, exc)

    def _start_failure(self, python, exc):
        # type: (str, Exception) -> EngineError
        detail = "%s: %s" % (type(exc).__name__, nst_common.error_text(exc))
        if self.flatpak:
            return EngineNotInstalled(
                "Neural style cannot run %s inside the Flatpak sandbox (%s): update the Flatpak GIMP, or "
                "install a GIMP from your distribution and run install.py again."
                % (nst_common.FLATPAK_SPAWN, detail)
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
                keep_going = on_progress(nst_common.start_fraction(event), nst_common.start_text(event))
            elif kind == "progress":
                keep_going = on_progress(float(event.get("fraction", 0.0)), nst_common.progress_text(event))
            else:
                keep_going = True
                if kind in ("done", "error"):
                    last = event
                elif kind == "item":
                    self._item(event)
                elif kind == "snapshot" and self.on_snapshot is not None:
                    keep_going = self._snapshot(event)
            if keep_going is False:
                self.close_child()
                raise EngineError("Cancelled.", nst_common.EXIT_CANCELLED)
        return last

    def _item(self, event):
        # type: (dict) -> None
        """A picture of a batch is finished (a job has none)."""

    def _snapshot(self, event):
        # type: (dict) -> object
        """The picture so far to on_snapshot; one that is not whole is passed over: the next replaces it."""
        width, height, channels = (event.get(key) for key in ("width", "height", "channels"))
        try:
            with open(os.path.join(self.folder, "snapshot.raw"), "rb") as handle:
                data = handle.read()
            if len(data) == nst_common.layout_bytes(width, height, self.content["format"], channels):
                return self.on_snapshot(data, width, height, channels, float(event.get("fraction", 0.0)))
        except (IOError, OSError, TypeError, KeyError):
            pass
        return True

    def stop(self):
        # type: () -> bool
        """Stop and keep: the engine ends its iteration and writes the picture so far as the result, which
        run() returns. False when the engine cannot (not listed in its features) or nothing runs."""
        if self.serving is not None and engine_can(self.config, "stop"):
            self.serving.stop()
            return True
        if self.process is None or not engine_can(self.config, "stop"):
            return False
        try:
            self.process.stdin.write(b"stop\n")
            self.process.stdin.flush()
        except (IOError, OSError, ValueError):
            return False  # the child has just ended: its result comes as usual
        return True

    def close_child(self):
        # type: () -> None
        if self.process is not None:
            nst_common.stop_process(self.process, self.flatpak)

    def _failure(self, last, code):
        # type: (dict, int) -> EngineError
        if last.get("event") == "error" and last.get("message"):
            return EngineError(last["message"], int(last.get("code", code) or 1))
        detail = self._stderr_tail()
        if self.flatpak and nst_common.FLATPAK_NO_COMMAND in detail:
            return EngineNotInstalled(
                "Neural style engine %s cannot start on the host (%s): run "
                "install.py again." % (self.config.get("python"), detail)
            )
        if self.flatpak and detail.startswith(nst_common.FLATPAK_SPAWN_FAILURES):
            return EngineError(
                "Neural style cannot start its engine outside the Flatpak sandbox (%s): "
                "allow it once with `%s`, then restart GIMP." % (detail, nst_common.FLATPAK_PERMISSION)
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

    def _read_output(self):
        # type: () -> bytes
        path = os.path.join(self.folder, "result.raw")
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except (IOError, OSError):
            raise EngineError("The engine reported success but wrote no result: please report this bug.")
        return self._checked_result(data)

    def _checked_result(self, data):
        # type: (bytes) -> bytes
        """The result, served or read from the child's file, when it has the content's layout."""
        layout = [self.content[key] for key in ("width", "height", "format", "channels")]
        expected = nst_common.layout_bytes(*layout)
        if len(data) != expected:
            raise EngineError(
                "The engine's result has %d bytes, not %d: please report this bug." % (len(data), expected)
            )
        return data


class FramesRun(EngineRun):
    """An animation's frames through the warm engine service when there is one, else through the engine's
    `batch --frames` in one child process: either way each frame starts from the one before, warped by the
    optical flow (docs/batch.md). A context manager like EngineRun: the frame files, the results and the
    child go with close()."""

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
            handle.write(nst_common.png_bytes(data, width, height, channels))
        self.frames.append((path, channels))
        self.names[path] = nst_common.as_text(name)

    def run(self, styles, options, on_progress, on_frame=None):
        # type: (list, dict, object, object) -> list
        """Stylise the frames in order; [(pixels, width, height)] of each, at the working size (the
        caller scales them to their layers). on_progress(fraction of the animation, text) -> False cancels;
        on_frame(index, pixels, width, height) gets each frame as soon as it is finished."""
        if options.get("device") == nst_common.REMOTE:
            raise EngineError(nst_common.FRAMES_NOT_REMOTE, nst_common.EXIT_USAGE)
        python = nst_common.engine_python(self.config)
        nst_common.check_frames(len(self.frames))
        styles = [(self._style_file(index, style), weight) for index, (style, weight) in enumerate(styles)]
        styles = _checked_styles(styles)
        served = self._frames_served(styles, options, on_progress, on_frame)
        if served is not None:
            return served
        if self.flatpak:
            styles = self._copy_styles(styles)
        output = os.path.join(self.folder, "styled")
        os.mkdir(output)
        self.on_frame, self.output = on_frame, output
        inputs = [path for path, _channels in self.frames]
        command = frames_command(self.config, python, inputs, styles, options, output, self.folder)
        self._run_child(python, command, on_progress)
        return [self._read_frame(output, path, channels) for path, channels in self.frames]

    def _frames_served(self, styles, options, on_progress, on_frame):
        # type: (list, dict, object, object) -> list | None
        """The frames on this machine's warm engine service; None when there is none: the child runs them."""
        server = nst_service.local_service(self.config, on_progress)
        if server is None:
            return None
        frames = [open(path, "rb").read() for path, _channels in self.frames]  # noqa: SIM115
        sent = dict((k, v) for k, v in options.items() if v is not None)
        try:
            results, self.started = server.run_frames(frames, styles, sent, on_progress, on_frame)
        except nst_service.Unavailable:
            return None  # it cannot run this job's device: the child process can
        self.server = server.url
        if [r[3] for r in results] != [channels for _path, channels in self.frames]:
            raise EngineError(
                "The engine's results have other channels than the frames: please report this bug."
            )
        return [r[:3] for r in results]

    def _style_file(self, index, style):
        # type: (int, object) -> object
        """`batch` takes style files: a layer's 8-bit pixels go in a PNG in the run folder."""
        if not isinstance(style, StylePixels):
            return style
        if style.format != "u8":
            raise EngineError("Animation frames take an 8-bit style layer (a plug-in bug: read it as u8).")
        path = os.path.join(self.folder, "style-%d.png" % index)
        with open(path, "wb") as handle:
            handle.write(nst_common.png_bytes(style.data, style.width, style.height, style.channels))
        return path

    def _item(self, event):
        # type: (dict) -> None
        """A failed frame fails the animation: the frames after it would start from nothing."""
        if event.get("status") == "done" and self.on_frame is not None:
            index = int(event["item"]) - 1
            self.on_frame(index, *self._read_frame(self.output, *self.frames[index]))
        if event.get("status") != "failed":
            return
        self.close_child()
        source = nst_common.as_text(event.get("input", ""))
        raise EngineError(
            "Frame '%s' failed: %s"
            % (self.names.get(source, os.path.basename(source)), event.get("message", ""))
        )

    def _read_frame(self, output, source, channels):
        # type: (str, str, int) -> tuple
        path = os.path.join(output, os.path.splitext(os.path.basename(source))[0] + ".tif")
        try:
            with open(path, "rb") as handle:
                data, width, height, found = nst_tiff.read_tiff(handle.read())
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
