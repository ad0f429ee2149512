"""`batch --ray ADDRESS`: the same batch on a Ray cluster, one engine per worker.

The batch is cut into units: a picture alone, or, with frames, a run of consecutive frames. Each unit
is one Ray task; a worker process keeps its network between tasks (`network.load_features` caches
it), so every worker loads the engine once. A worker that dies takes its task with it and Ray runs
the task again elsewhere (`max_retries`). The driver, here, ships the inputs' bytes and writes every
output itself, atomically and once, so the workers need no shared folder and a rerun resumes exactly
as a local batch does.

Runs of frames overlap: a run starts `overlap` frames before its own first frame. A temporal chain
keeps its own strokes, so two runs computed apart paint the shared frames differently; those frames
are written as a cross-fade from the earlier run's result to the later one's, which turns the cut
between two runs into a short dissolve (docs/batch.md measures it).

`InlineExecutor` runs the same units here, one after the other: the assembly without a cluster.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .batch import (
    Frame,
    Item,
    Summary,
    end_event,
    item_outputs,
    load_styles,
    record,
    remove_leftovers,
    start_progress,
    stylize_run,
)
from .errors import Cancelled, ExitCode, NstError, UsageError, describe_error
from .events import Event, Sink
from .options import Options

DEFAULT_FRAMES_PER_TASK = 16
DEFAULT_OVERLAP = 2
MAX_RETRIES = 3  # a task whose worker dies is run again this many times
REPORT_EVERY = 0.25  # seconds between a worker's progress reports


@dataclass(frozen=True)
class Unit:
    """One task: places in the batch's items, in order. The first `lead` are the previous unit's last
    frames again, computed to fade from that run into this one."""

    places: tuple[int, ...]
    lead: int = 0


def plan_units(count: int, frames: bool, per_task: int, overlap: int) -> list[Unit]:
    if per_task < 1:
        raise UsageError(f"--frames-per-task must be at least 1, not {per_task}.")
    if not 0 <= overlap < per_task:
        raise UsageError(f"--overlap must be at least 0 and less than --frames-per-task ({per_task}).")
    if not frames:
        return [Unit((place,)) for place in range(count)]
    units = []
    for first in range(0, count, per_task):
        lead = min(overlap, first)
        units.append(Unit(tuple(range(first - lead, min(first + per_task, count))), lead))
    return units


def fade_weight(position: int, lead: int) -> float:
    """The later run's share in its `position`-th lead frame: rising evenly, never 0 or 1."""
    return (position + 1) / (lead + 1)


# -- what a worker runs ------------------------------------------------------------------------------


def run_unit(
    frames: Sequence[Frame],
    style_arrays: Sequence[Any],
    options: Options,
    temporal_weight: float | None,
    places: Sequence[int],
    report: Callable[[Event], None],
) -> dict[str, Any]:
    """A unit's frames stylised in order: results as arrays, (code, message) for a picture's own failure,
    None for a frame finished before. Progress goes to `report`, tagged with the frame's place."""
    import torch

    from . import network

    worker = f"{socket.gethostname()}:{os.getpid()}"
    results: list[Any] = []
    for _index, result in stylize_run(
        frames, style_arrays, options, lambda i: _Reporter(report, places[i], worker), None, temporal_weight
    ):
        results.append((int(result.code), result.message) if isinstance(result, NstError) else result)
    threads = torch.get_num_threads()  # what the runs used: the task's CPUs, not the machine's
    return {"worker": worker, "loads": network.engine_loads(), "threads": threads, "results": results}


class _Reporter(Sink):
    """A frame's start and progress, sent on at most every REPORT_EVERY seconds (the last always)."""

    def __init__(self, report: Callable[[Event], None], place: int, worker: str) -> None:
        super().__init__()
        self.report, self.place, self.worker, self.last = report, place, worker, 0.0

    def _show(self, event: Event) -> None:
        now = time.monotonic()
        final = event.get("fraction", 0) >= 1
        if event["event"] == "progress" and now - self.last < REPORT_EVERY and not final:
            return
        self.last = now
        if event["event"] in ("start", "progress"):
            self.report({**event, "place": self.place, "worker": self.worker})


# -- where units run ---------------------------------------------------------------------------------


class InlineExecutor:
    """Runs each unit here when it is waited for: one engine, the cluster's assembly."""

    slots = 1

    def __init__(self) -> None:
        self.queued: dict[int, tuple[Any, ...]] = {}
        self.done: dict[int, Any] = {}
        self.events: list[Event] = []
        self.handles = itertools.count()

    def submit(self, arguments: tuple[Any, ...]) -> int:
        handle = next(self.handles)
        self.queued[handle] = arguments
        return handle

    def wait(self, handles: Sequence[int], timeout: float) -> list[int]:
        handle = handles[0]
        self.done[handle] = run_unit(*self.queued.pop(handle), self.events.append)
        return [handle]

    def get(self, handle: int) -> Any:
        return self.done.pop(handle)

    def take_events(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def cancel(self, handles: Sequence[int]) -> None:
        for handle in handles:
            self.queued.pop(handle, None)

    def close(self) -> None:
        pass


# -- the driver --------------------------------------------------------------------------------------


@dataclass
class _Fades:
    """Halves of the lead frames: place -> {"early" | "late": result}, and the later run's share."""

    halves: dict[int, dict[str, Any]] = field(default_factory=dict)
    weights: dict[int, float] = field(default_factory=dict)


def run_distributed(
    items: Sequence[Item],
    styles: Sequence[Path],
    options: Options,
    sink: Sink,
    executor: Any,
    cancel: Any = None,
    failed: Sequence[tuple[Path, NstError]] = (),
    temporal_weight: float | None = None,
    per_task: int = DEFAULT_FRAMES_PER_TASK,
    overlap: int = DEFAULT_OVERLAP,
) -> Summary:
    """`batch.run_batch`'s result and events, each unit run by `executor` (Ray's or inline)."""
    started = time.perf_counter()
    units = plan_units(len(items), temporal_weight is not None, per_task, overlap)
    summary = Summary(failed=list(failed))
    progress, offset = start_progress(sink, failed, len(items)), len(failed)
    style_arrays, options = load_styles(styles, options)
    outputs = item_outputs(items)
    finished = [item.finished for item in items]
    for place, item in enumerate(items):
        if finished[place]:
            record(summary, progress, offset + place, item, None)
    todo = [unit for unit in units if not all(finished[place] for place in unit.places)]
    fades = _Fades()
    for unit in todo:
        for position in range(unit.lead):
            fades.weights[unit.places[position]] = fade_weight(position, unit.lead)
    in_flight: dict[Any, Unit] = {}
    workers: dict[str, dict[str, int]] = {}  # what each worker process did, and its engine loads

    def outcome(place: int, result: Any, worker: str) -> None:
        item = items[place]
        if result is not None and not isinstance(result, NstError):
            from .output import write_output

            remove_leftovers(item.output)
            try:
                write_output(result, outputs[place])
            except NstError as exc:
                result = exc
        record(summary, progress, offset + place, item, result, worker=worker)

    try:
        while todo or in_flight:
            while todo and len(in_flight) < 2 * executor.slots:  # one waiting behind each engine
                unit = todo.pop(0)
                frames = _frames(items, unit, finished, temporal_weight is not None)
                arguments = (frames, style_arrays, options, temporal_weight, unit.places)
                in_flight[executor.submit(arguments)] = unit
            ready = executor.wait(list(in_flight), 0.2)
            for event in executor.take_events():
                shown = {key: value for key, value in event.items() if key != "place"}
                progress.forward(offset + event["place"], shown)
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            for handle in ready:
                unit = in_flight.pop(handle)
                try:
                    answer = executor.get(handle)
                except Exception as exc:  # Ray wraps the task's error, or says the worker was lost
                    raise describe_cluster_error(exc, unit, items) from None
                _assemble(unit, answer, fades, outcome)
                stats = workers.setdefault(answer["worker"], {"units": 0})
                stats.update(
                    units=stats["units"] + 1, engine_loads=answer["loads"], threads=answer["threads"]
                )
    finally:
        executor.cancel(list(in_flight))
    accounted = len(summary.done) + len(summary.skipped) + len(summary.failed) - len(failed)
    if accounted != len(items):  # a unit the executor never gave back: say so rather than end "done"
        raise NstError(
            f"{len(items) - accounted} of {len(items)} pictures came back from no task: run the batch "
            "again (finished outputs are kept)."
        )
    sink.emit({**end_event(summary, items, time.perf_counter() - started), "workers": workers})
    return summary


def _frames(items: Sequence[Item], unit: Unit, finished: Sequence[bool], chained: bool) -> list[Frame]:
    """A unit's frames as bytes; a finished output is sent only when the next frame starts from it."""
    frames = []
    for position, place in enumerate(unit.places):
        item = items[place]
        done: bytes | None = None
        if finished[place]:
            follows = position + 1 < len(unit.places) and not finished[unit.places[position + 1]]
            done = _read(item.output) if chained and follows else b""
        frames.append(Frame(str(item.source), b"" if done is not None else _read(item.source), done))
    return frames


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""  # the worker reports it as this picture's failure, in the usual words


def _assemble(unit: Unit, answer: dict[str, Any], fades: _Fades, outcome: Callable[..., None]) -> None:
    """A unit's results to their outputs; a lead frame once both runs' results are in, faded."""
    for position, (place, result) in enumerate(zip(unit.places, answer["results"], strict=True)):
        if result is None:
            continue  # finished before, reported at the start
        if isinstance(result, tuple):
            result = _failure(*result)
        if place not in fades.weights:
            outcome(place, result, answer["worker"])
            continue
        halves = fades.halves.setdefault(place, {})
        halves["late" if position < unit.lead else "early"] = result
        if len(halves) == 2:
            del fades.halves[place]
            outcome(place, _fade(halves["early"], halves["late"], fades.weights[place]), answer["worker"])


def _fade(early: Any, late: Any, weight: float) -> Any:
    if isinstance(early, NstError):
        return late
    if isinstance(late, NstError):
        return early
    return (early * (1.0 - weight) + late * weight).astype(early.dtype)


def _failure(code: int, message: str) -> NstError:
    error = NstError(message)
    error.code = ExitCode(code)
    return error


def describe_cluster_error(exc: BaseException, unit: Unit, items: Sequence[Item]) -> NstError:
    """A task's failure in the batch's words: its own NstError, or what Ray says about a lost worker."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return describe_error(cause)
    if isinstance(exc, NstError):
        return exc
    names = ", ".join(items[place].source.name for place in unit.places[:3])
    return NstError(
        f"Ray could not run the task for {names} ({type(exc).__name__}; tried {MAX_RETRIES + 1} times): "
        "check the cluster's workers (ray status) and run the batch again; finished outputs are kept."
    )
