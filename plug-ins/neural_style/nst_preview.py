"""The GIMP 3 dialog's preview, without GIMP: the dialog's settings on a small copy of the layer, run by
the bridge in a worker thread so that the dialog stays live.

One preview at a time: a new one, a changed setting or closing the dialog cancels the one in flight
(the bridge stops its engine child or its served job and removes its run folder). Results and errors
reach the dialog through `post` (GLib.idle_add in GIMP), on the dialog's thread, and only for the
newest request: a cancelled preview never shows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import nst_bridge
import nst_common
import nst_service

FALLBACK = {"size": 256, "iterations": 30}  # an engine whose description predates the preview's
MIN_SIZE = 32  # the engine's smallest working size


def preview_settings(config: dict) -> tuple[int, int]:
    """(longest side, iterations) of a preview, as the installed engine describes them."""
    described = nst_bridge.engine_description(config).get("preview") or {}
    return int(described.get("size", FALLBACK["size"])), int(
        described.get("iterations", FALLBACK["iterations"])
    )


def fit_scale(width: int, height: int, longest: int) -> float:
    """How much a width x height picture is shrunk so that its longest side is `longest` (at most 1.0)."""
    return min(1.0, longest / float(max(width, height)))


def preview_scale(config: dict, width: int, height: int) -> float:
    """How much a width x height part is shrunk for its preview (1.0: it is small enough already)."""
    return fit_scale(width, height, preview_settings(config)[0])


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def preview_options(config: dict, options: dict, width: int, height: int) -> dict:
    """The dialog's engine options for a width x height preview copy: its own size, the preview's steps."""
    _size, iterations = preview_settings(config)
    return dict(options, size=max(MIN_SIZE, width, height), iterations=iterations)


def warm_up(config: dict) -> threading.Thread:
    """Start this machine's engine service in the background when the config asks for one and none
    runs, so that the dialog's first preview, or its OK, finds the engine warm (starting it takes
    Python, torch and the network: seconds a user spends choosing the style anyway). A preview pressed
    meanwhile waits for the same start (nst_service's start lock). The thread is returned for tests."""
    thread = threading.Thread(target=nst_service.local_service, args=(config, lambda *_: True), daemon=True)
    thread.start()
    return thread


@dataclass
class PreviewJob:
    """What one preview computes: the small copy's pixels (u8, `channels`) and the run's inputs."""

    pixels: bytes
    width: int
    height: int
    channels: int
    styles: list
    options: dict
    masks: list | None = None


class PreviewWorker:
    """Runs previews in a thread, the newest request winning. `show(pixels, width, height, channels)`,
    `fail(message)` and `progress(fraction, text)` are called through `post` on the dialog's thread."""

    def __init__(
        self,
        config: dict,
        post: Callable[..., object],
        show: Callable[[bytes, int, int, int], None],
        fail: Callable[[str], None],
        progress: Callable[[float, str], None],
    ) -> None:
        self.config = config
        self.post, self.show, self.fail, self.progress = post, show, fail, progress
        self.generation = 0
        self.threads: list[threading.Thread] = []

    def start(self, job: PreviewJob) -> None:
        """Cancel the preview in flight and compute `job`."""
        self.generation += 1
        self.threads = [thread for thread in self.threads if thread.is_alive()]
        thread = threading.Thread(target=self._run, args=(self.generation, job), daemon=True)
        self.threads.append(thread)
        thread.start()

    def cancel(self, *_ignored: object) -> None:
        """Stop the preview in flight (a setting changed): its result will not show."""
        self.generation += 1

    def busy(self) -> bool:
        return any(thread.is_alive() for thread in self.threads)

    def close(self, timeout: float = 15.0) -> None:
        """Cancel, and wait until every preview has stopped its engine and removed its files."""
        self.cancel()
        for thread in self.threads:
            thread.join(timeout)

    def _current(self, generation: int) -> bool:
        return generation == self.generation

    def _run(self, generation: int, job: PreviewJob) -> None:
        def report(fraction: float, text: str) -> bool:
            if not self._current(generation):
                return False  # the bridge stops the engine and raises "Cancelled."
            self.post(self._deliver, generation, self.progress, fraction, text)
            return True

        try:
            with nst_bridge.EngineRun(self.config) as run:
                run.set_content_raw(job.pixels, job.width, job.height, "u8", job.channels)
                options = preview_options(self.config, job.options, job.width, job.height)
                result = run.run(job.styles, options, report, job.masks, preview=True)
        except nst_common.EngineError as error:
            if error.code != nst_common.EXIT_CANCELLED:
                self.post(self._deliver, generation, self.fail, error.message)
            return
        except Exception as error:  # a bug must not end the dialog: it shows as the preview's text
            self.post(
                self._deliver, generation, self.fail, f"Preview failed ({type(error).__name__}: {error})."
            )
            return
        self.post(self._deliver, generation, self.show, result, job.width, job.height, job.channels)

    def _deliver(self, generation: int, callback: Callable[..., None], *args: object) -> bool:
        if self._current(generation):
            callback(*args)
        return False  # GLib.idle_add: run once
