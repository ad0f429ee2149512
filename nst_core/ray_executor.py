"""The Ray side of `batch --ray`: connect, size the tasks to the cluster, run units, relay progress.

Ray is an optional extra (`pip install "gimp-neural-style[cluster]"`); nothing else imports this
module. Every machine of the cluster needs the package (and its weights) installed as here.
"""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .batch import Item, Summary
from .cluster import MAX_RETRIES, run_distributed, run_unit
from .errors import NstError, UsageError
from .events import Event, JsonLines, Sink
from .options import Options

INSTALL_HINT = 'install it with: pip install "gimp-neural-style[cluster]"'


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}.") from None
    return ray


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT that nothing answers at fails here in seconds (Ray itself would retry for a minute)."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--ray {address} is not HOST:PORT or auto: give the head node's address.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}): start one with "
            "`ray start --head`, or check the address."
        ) from None


def join_error(address: str, exc: BaseException) -> UsageError:
    """Ray's failure to join or start a cluster, with what to do in this command's words."""
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if address == "auto":
        return UsageError(
            f"Cannot start Ray on this machine ({reason}): start a cluster with `ray start --head` and "
            "give the address it prints, --ray HOST:PORT."
        )
    return UsageError(
        f"Cannot join the Ray cluster at {address} ({reason}): "
        "check the address and that the cluster runs the same Ray and Python."
    )


def run_on_ray(
    items: Sequence[Item],
    styles: Sequence[Path],
    options: Options,
    sink: Sink,
    cancel: Any,
    failed: Sequence[tuple[Path, NstError]],
    temporal_weight: float | None,
    *,
    address: str,
    cpus: int | None,
    per_task: int,
    overlap: int,
) -> Summary:
    """`batch.run_batch`, each unit a Ray task on the cluster at `address` (or auto)."""
    if isinstance(sink, JsonLines) and sink.stream is None:
        sink.stream = sys.stdout
    # Ray prints what the cluster says (a worker lost) on stdout, where --progress json has only events.
    with contextlib.redirect_stdout(sys.stderr):
        executor = RayExecutor(address, options.device, cpus)
        try:
            return run_distributed(
                items, styles, options, sink, executor, cancel, failed, temporal_weight, per_task, overlap
            )
        finally:
            executor.close()


class _Board:
    """A small actor beside the driver that workers drop their progress events on."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def add(self, event: Event) -> None:
        self.events.append(event)

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


def _report_to(board: Any) -> Any:
    def report(event: Event) -> None:
        board.add.remote(event)  # no reply awaited: progress must not slow the work

    return report


class RayExecutor:
    """Units as Ray tasks: one engine per GPU (or per machine's CPUs, or `cpus` of them)."""

    def __init__(self, address: str, device: str, cpus: int | None = None) -> None:
        ray = self.ray = import_ray()
        check_reachable(address)
        try:
            if address == "auto":
                # No address: Ray joins the cluster running on this machine (RAY_ADDRESS, or the one
                # `ray start` started last), else starts one in this process, which close() stops.
                ray.init(logging_level="WARNING", log_to_driver=False, include_dashboard=False)
            else:
                ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError ...
            raise join_error(address, exc) from None
        task, self.slots = _task_shape(ray, device, cpus)
        self.remote = ray.remote(max_calls=0, max_retries=MAX_RETRIES, **task)(_run_with_threads)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        # On the driver's own machine (hard: a soft wish lands it anywhere), so that losing a worker's
        # machine cannot take the progress with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.board = ray.remote(num_cpus=0)(_Board).options(scheduling_strategy=here).remote()
        self.report = _report_to(self.board)
        self.threads = int(task["num_cpus"])

    def submit(self, arguments: tuple[Any, ...]) -> Any:
        return self.remote.remote(self.threads, *arguments, self.report)

    def wait(self, handles: Sequence[Any], timeout: float) -> list[Any]:
        ready, _ = self.ray.wait(list(handles), num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(list(handles), num_returns=len(handles), timeout=0)
        return ready

    def get(self, handle: Any) -> Any:
        return self.ray.get(handle)

    def take_events(self) -> list[Event]:
        return self.ray.get(self.board.take.remote())

    def cancel(self, handles: Sequence[Any]) -> None:
        for handle in handles:
            self.ray.cancel(handle, force=True)

    def close(self) -> None:
        self.ray.shutdown()


def _task_shape(ray: Any, device: str, cpus: int | None) -> tuple[dict[str, Any], int]:
    """What one task asks for, and how many run at once: a GPU each where the cluster has GPUs (and the
    device allows), else `cpus` or the smallest machine's CPUs, so one engine fills a machine."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if device == "cuda" and not gpus:
        raise UsageError("--device cuda, but the Ray cluster has no GPU: use --device auto or cpu.")
    if gpus and device in ("auto", "cuda"):
        return {"num_cpus": cpus or 1, "num_gpus": 1}, gpus
    machines = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    machines = [count for count in machines if count > 0]
    if not machines:
        raise UsageError("The Ray cluster has no CPU to run a task on: add a worker with CPUs.")
    each = cpus or min(machines)
    slots = sum(count // each for count in machines)
    if not slots:
        raise UsageError(f"No machine of the Ray cluster has {each} CPUs: give a smaller --ray-cpus.")
    return {"num_cpus": each, "num_gpus": 0}, slots


def _run_with_threads(threads: int, *arguments: Any) -> Any:
    """`cluster.run_unit` with torch using the task's CPUs, no more (Ray runs several on a machine)."""
    from . import devices

    devices.limit_threads(max(1, threads))
    return run_unit(*arguments)
