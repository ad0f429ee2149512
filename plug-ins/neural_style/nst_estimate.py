"""The time estimate that the GIMP 3 dialog shows before OK, without GIMP: the engine's `plan` command
for the dialog's settings, its JSON turned into one line, and when to ask for it again as settings
change (EstimateRefresh, which the dialog drives with GLib's timers and processes).
"""

from __future__ import annotations

import json
from collections.abc import Callable

import nst_common

ESTIMATING = "Estimating the time\u2026"
ESTIMATE_DELAY_MS = 400  # settings that change faster than this are estimated once, for the last of them
DEVICE_NAMES = {"cpu": "the CPU", "mps": "the Apple GPU"}


def no_estimate(reason: str) -> str:
    return f"No time estimate: {reason}"


def plan_command(
    config: dict, width: int, height: int, style_count: int, options: dict, masked: bool = False
) -> list[str]:
    """`<engine python> -m nst_core plan ...` for a content of width x height, the options of a job
    (`masked`: its styles have regions, which need more memory)."""
    command = [nst_common.engine_python(config), "-m", "nst_core", "plan"]
    command += ["--width", f"{width:d}", "--height", f"{height:d}", "--styles", f"{style_count:d}"]
    if masked:
        command.append("--masked")
    options = dict(options)
    if options.get("device") == nst_common.REMOTE:
        del options["device"]  # the server's own speed is not known here: estimate this machine's
    command += nst_common.option_flags(nst_common.job_options(config, options)) + ["--json"]
    return [nst_common.as_text(arg) for arg in nst_common.engine_argv(config, command)]


def about(seconds: float) -> str:
    """'About 30 s', 'About 4 min', 'About 1 h 05 min'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 90:
        return f"About {max(seconds, 1)} s"
    minutes = int(round(seconds / 60.0))
    if minutes < 60:
        return f"About {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"About {hours} h {minutes:02d} min"


def device_name(device: str) -> str:
    """The engine's device label for people: the CPU, the GPU's name from 'cuda:0 (NVIDIA H100)'."""
    if device in DEVICE_NAMES:
        return DEVICE_NAMES[device]
    if device.endswith(")") and " (" in device:
        return device[device.index(" (") + 2 : -1]
    return device


def plan_text(plan: dict) -> str:
    """One line for the dialog from the engine's plan: 'About 30 s on the CPU at 432x324 px (the layer
    is 4000x3000 px; the result is scaled up to it)', with ', in 12 tiles' when the last scale is tiled."""
    last = plan["scales"][-1]
    width, height = last["width"], last["height"]
    device = device_name(nst_common.as_text(plan.get("device", "?")))
    text = f"{about(plan['estimated_seconds'])} on {device} at {width:d}\u00d7{height:d} px"
    tiles = plan.get("tiles") or []
    if tiles and tiles[-1].get("count", 0) > 1:
        text += f", in {tiles[-1]['count']:d} tiles"
    output = plan.get("output_size") or [width, height]
    if list(output) != [width, height]:
        text += f" (the layer is {output[0]:d}\u00d7{output[1]:d} px; the result is scaled up to it)"
    return text


def estimate_text(code: int, stdout: str, stderr: str) -> str:
    """The dialog's line from a finished plan command: its exit code, stdout and stderr as text."""
    if code == 0:
        try:
            return plan_text(json.loads(stdout))
        except (ValueError, KeyError, IndexError, TypeError):
            return no_estimate("the engine's plan was not understood: run install.py again.")
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    if lines:
        message = lines[-1][len("error:") :].strip() if lines[-1].startswith("error:") else lines[-1][:300]
    else:
        message = f"the engine failed (exit code {code}): run install.py again."
    return no_estimate(message)


class EstimateRefresh:
    """When the dialog's estimate is computed: debounced, the newest request superseding older ones.

    changed() shows ESTIMATING and (re)arms a timer; when it fires, the plan command starts and a
    running older one is cancelled; only the newest one's result is shown, and nothing after close().
    The toolkit comes in as callables (GLib's in the GIMP 3 plug-in, fakes in the tests):
      command() -> argv (may raise EngineError); start(argv, done) -> handle with cancel(), calls
      done(code, stdout, stderr) later (may raise EngineError); show(text); timer(ms, callback) -> id
      (a callback returning False runs once); cancel_timer(id).
    """

    def __init__(
        self,
        command: Callable[[], list[str]],
        start: Callable[[list[str], Callable[[int, str, str], None]], object],
        show: Callable[[str], None],
        timer: Callable[[int, Callable[[], bool]], object],
        cancel_timer: Callable[[object], object],
        delay_ms: int = ESTIMATE_DELAY_MS,
    ) -> None:
        self.command, self.start, self.show = command, start, show
        self.timer, self.cancel_timer, self.delay_ms = timer, cancel_timer, delay_ms
        self.timer_id: object = None
        self.running: object = None
        self.generation = 0
        self.closed = False

    def changed(self, *_ignored: object) -> None:
        """A setting changed (a notify handler: its arguments are ignored)."""
        if self.closed:
            return
        if self.timer_id is not None:
            self.cancel_timer(self.timer_id)
        self.show(ESTIMATING)
        self.timer_id = self.timer(self.delay_ms, self._fire)

    def _fire(self) -> bool:
        self.timer_id = None
        self._cancel_running()
        self.generation += 1
        generation = self.generation
        try:
            argv = self.command()
            self.running = self.start(argv, lambda *result: self._done(generation, *result))
        except nst_common.EngineError as error:
            self.show(no_estimate(error.message))
        return False

    def _done(self, generation: int, code: int, stdout: str, stderr: str) -> None:
        if self.closed or generation != self.generation:
            return  # superseded, or the dialog is gone
        self.running = None
        self.show(estimate_text(code, stdout, stderr))

    def _cancel_running(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            running.cancel()

    def close(self) -> None:
        """The dialog closed: no timer, no running command, no more show()."""
        self.closed = True
        if self.timer_id is not None:
            self.cancel_timer(self.timer_id)
            self.timer_id = None
        self._cancel_running()
