"""The engine's events (docs/protocol.md) as dicts, and the sinks that show them.

Everything the CLI and `run-job` report goes through one of these dicts, so JSON lines for the
plug-ins and the terminal bar for humans always say the same thing.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .errors import NstError

PROTOCOL_VERSION = 1
Event = dict[str, Any]


def _number(value: Any) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is sent as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def start_event(device: str, plan: Mapping[str, Any]) -> Event:
    """From a plan's summary (`nst_core.plan.Plan.summary`): sizes, tiles, memory and time."""
    return {
        "event": "start",
        "version": PROTOCOL_VERSION,
        "device": device,
        "scales": [max(int(s["width"]), int(s["height"])) for s in plan["scales"]],
        "iterations": int(plan["iterations"]),
        "memory_estimate": int(plan["memory"]["estimate"]),
        "tiles": list(plan["tiles"]),
        "estimated_seconds": float(plan["estimated_seconds"]),
    }


def progress_event(progress: Any) -> Event:
    """From an `nst_core.optimize.Progress` (read by attribute: this module imports no torch)."""
    return {
        "event": "progress",
        "scale": int(progress.scale),
        "scales": int(progress.scales),
        "iteration": int(progress.iteration),
        "iterations": int(progress.iterations),
        "fraction": min(1.0, max(0.0, float(progress.fraction))),
        "elapsed": _number(progress.elapsed),
        "eta": _number(progress.eta),
        "loss": {name: _number(value) for name, value in dict(progress.loss).items()},
        "tiles": int(progress.tiles),
    }


def done_event(output: str, seconds: float, stopped_at: int | None = None) -> Event:
    """The run's end; `stopped_at`: the iteration (of the whole job) a stop-and-keep ended it after."""
    event: Event = {"event": "done", "output": str(output), "seconds": round(float(seconds), 3)}
    if stopped_at is not None:
        event.update(stopped=True, iteration=int(stopped_at))
    return event


def snapshot_event(
    path: str, shape: tuple[int, ...], fmt: str, iteration: int, fraction: float, full_size: bool
) -> Event:
    """A running job's current picture, complete in `path` until the next snapshot replaces it."""
    height, width, channels = shape
    return {
        "event": "snapshot",
        "path": str(path),
        "width": int(width),
        "height": int(height),
        "channels": int(channels),
        "format": fmt,
        "full_size": bool(full_size),
        "iteration": int(iteration),
        "fraction": min(1.0, max(0.0, float(fraction))),
    }


def stopped_line(event: Event) -> str:
    """What a person reads when a stop-and-keep ended the run."""
    return (
        f"Stopped after iteration {event['iteration']}: wrote {event['output']} in {event['seconds']:.1f} s"
    )


def error_event(error: NstError) -> Event:
    return {"event": "error", "message": error.message, "code": int(error.code)}


def note(message: str) -> None:
    """A remark for the person running the engine, as one line on stderr: stdout carries only events,
    and the plug-ins show stderr's last line only when a run fails."""
    print(f"note: {message}", file=sys.stderr, flush=True)


class Sink:
    """Receives events; the base class shows only errors, as one line on stderr.

    A run ends with exactly one `done` or `error`: later events are dropped.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self.finished = False
        self._lock = threading.Lock()  # the stdin watcher may report from another thread

    def emit(self, event: Event, timeout: float = -1) -> None:
        """Show `event`; a `timeout` in seconds gives up rather than wait on a blocked writer."""
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            if not self.finished:
                self.finished = event["event"] in ("done", "error")
                self._show(event)
        finally:
            self._lock.release()

    def _show(self, event: Event) -> None:
        if event["event"] == "error":
            print(f"error: {event['message']}", file=sys.stderr, flush=True)
        elif event["event"] == "done" and event.get("stopped"):
            print(stopped_line(event), file=sys.stderr, flush=True)


class JsonLines(Sink):
    """One JSON object per line on stdout: the machine-readable protocol."""

    def _show(self, event: Event) -> None:
        stream = self.stream or sys.stdout
        try:
            stream.write(json.dumps(event, allow_nan=False) + "\n")
            stream.flush()
        except BrokenPipeError:
            # The reader is gone (the plug-in closed): keep running to the cancel, quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class ProgressBar(Sink):
    """A terminal progress bar on stderr (tqdm), between a line for the start and one for the end."""

    STEPS = 1000  # the bar's resolution: progress events carry a fraction of the job
    FORMAT = "[{bar:30}] {percentage:3.0f}%  {desc}"

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._bar: Any = None

    def _show(self, event: Event) -> None:
        stream = self.stream or sys.stderr
        if event["event"] == "snapshot":
            return  # the picture is in its file: a person watches that, not the bar
        if event["event"] == "progress":
            done, status = round(event["fraction"] * self.STEPS), status_text(event)
            if self._bar is None:
                from tqdm import tqdm

                # Every event is one iteration, seconds apart: draw each one (mininterval 0).
                self._bar = tqdm(
                    total=self.STEPS,
                    initial=done,
                    desc=status,
                    file=stream,
                    ascii="-#",
                    bar_format=self.FORMAT,
                    mininterval=0,
                )
            else:
                self._bar.n = done
                self._bar.set_description_str(status)
            return
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        stream.write(_summary(event) + "\n")
        stream.flush()


def status_text(event: Event) -> str:
    """What the bar shows beside itself: 'scale 2/3  step 5/10  loss 12.5  eta 1:02:05'."""
    loss = event["loss"].get("total")
    loss_text = f"loss {loss:.3g}" if loss is not None else "loss -"
    return (
        f"scale {event['scale']}/{event['scales']}  step {event['iteration']}/{event['iterations']}  "
        f"{loss_text}  eta {_clock(event['eta'])}"
    )


def _summary(event: Event) -> str:
    kind = event["event"]
    if kind == "start":
        sizes = ", ".join(str(s) for s in event["scales"])
        tiles = sum(t["count"] for t in event.get("tiles", ()))
        tiled = f" ({tiles} tiles at the top scales)" if tiles else ""
        estimate = event.get("estimated_seconds")
        about = f", about {_clock(estimate)}" if estimate is not None else ""
        return f"Stylising on {event['device']}: {sizes} px{tiled}, {event['iterations']} iterations{about}"
    if kind == "done":
        return (
            stopped_line(event)
            if event.get("stopped")
            else f"Wrote {event['output']} in {event['seconds']:.1f} s"
        )
    if kind == "item":  # a batch's picture (nst_core/batch.py)
        place = f"[{event['item']}/{event['items']}] {os.path.basename(event['input'])}"
        if event["status"] == "done":
            return f"{place} -> {event['output']}"
        return f"{place}: {event['status']}" + (f" ({event['message']})" if event.get("message") else "")
    return f"error: {event['message']}"


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def download_bar(stream: TextIO | None = None) -> Callable[[int, int | None], None]:
    """A tqdm bar for weights.fetch's (done, total) byte counts, on stderr unless `stream`."""
    from tqdm import tqdm

    bar = tqdm(desc="Downloading", unit="B", unit_scale=True, unit_divisor=1024, file=stream or sys.stderr)

    def show(done: int, total: int | None) -> None:
        bar.total = total
        bar.update(done - bar.n)
        if total and done >= total:
            bar.close()

    return show


def make_sink(mode: str) -> Sink:
    """`bar`, `json` or `none` (errors only)."""
    if mode == "json":
        return JsonLines()
    if mode == "bar":
        return ProgressBar()
    return Sink()
