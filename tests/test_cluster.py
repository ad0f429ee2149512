"""`batch --ray`: units and their fades (no cluster), the same runs inline and on a real local Ray
cluster of two workers, and a worker killed during the batch: every output still made once, each
identical to the local batch's, and each worker's engine loaded once."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from samples import make_content_image
from test_batch import nst
from test_frames import pan, write_clip

from nst_core import cluster, frames, images
from nst_core.batch import plan_items
from nst_core.errors import ExitCode, NstError
from nst_core.events import Sink
from nst_core.options import Options

FLAGS = ["--size", "40", "--iterations", "6", "--seed", "1"]


def events_of(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


# -- units, without a cluster -------------------------------------------------------------------------


def test_frames_are_cut_into_runs_that_overlap_and_pictures_into_one_task_each() -> None:
    assert cluster.plan_units(3, False, 16, 2) == [cluster.Unit((0,)), cluster.Unit((1,)), cluster.Unit((2,))]
    units = cluster.plan_units(10, True, 4, 2)
    assert units == [
        cluster.Unit((0, 1, 2, 3)),
        cluster.Unit((2, 3, 4, 5, 6, 7), lead=2),
        cluster.Unit((6, 7, 8, 9), lead=2),
    ]
    assert [cluster.fade_weight(i, 2) for i in range(2)] == pytest.approx([1 / 3, 2 / 3])
    with pytest.raises(NstError, match="--overlap must be at least 0 and less than --frames-per-task"):
        cluster.plan_units(10, True, 4, 4)


def test_a_lead_frame_is_written_once_as_the_fade_of_both_runs_whichever_returns_first() -> None:
    early_run, late_run = cluster.Unit((0, 1, 2)), cluster.Unit((1, 2, 3), lead=2)
    fades = cluster._Fades(weights={1: 1 / 3, 2: 2 / 3})
    written: list[tuple[int, object]] = []

    def answer(values: list) -> dict:
        return {"worker": "w", "loads": 1, "results": values}

    ones, twos = np.ones((2, 2, 3), np.float32), np.full((2, 2, 3), 2.0, np.float32)
    failure = (int(ExitCode.BAD_IMAGE), "Image broken.png is not a picture.")
    cluster._assemble(late_run, answer([twos, failure, twos]), fades, lambda p, r, w: written.append((p, r)))
    assert [place for place, _ in written] == [3]  # the lead frames wait for the earlier run
    cluster._assemble(early_run, answer([ones, ones, ones]), fades, lambda p, r, w: written.append((p, r)))
    assert [place for place, _ in written] == [3, 0, 1, 2]
    result = dict(written)
    np.testing.assert_allclose(result[1], 1 + 1 / 3)  # a third of the later run's, two of the earlier's
    np.testing.assert_allclose(result[2], 1.0)  # the later run failed there: the earlier one's alone
    assert not fades.halves


def test_the_inline_executor_runs_every_unit_it_is_given_once(monkeypatch) -> None:
    monkeypatch.setattr(cluster, "run_unit", lambda *arguments: arguments[0])
    executor, ran = cluster.InlineExecutor(), []
    waiting = [executor.submit(("a",)), executor.submit(("b",))]
    while waiting:
        (handle,) = executor.wait(waiting, 0.2)
        waiting.remove(handle)
        ran.append(executor.get(handle))
        if len(ran) == 1:
            waiting.append(executor.submit(("c",)))  # submitted while another waits: a handle of its own
    assert ran == ["a", "b", "c"]


def inline_frames(clip: list[Path], out: Path, style: Path, weights: Path, overlap: int) -> list[np.ndarray]:
    """The frames through the cluster's units and fades, run here on one thread as a Ray task is."""
    from nst_core import devices

    devices.limit_threads(1)
    try:
        items = plan_items(clip, out, "png")
        options = Options(size=40, iterations=6, seed=1, weights=str(weights))
        summary = cluster.run_distributed(
            items, [style], options, Sink(), cluster.InlineExecutor(), None, (), 200.0, 4, overlap
        )
    finally:
        devices.limit_threads(None)
    assert len(summary.done) == len(clip) and not summary.failed
    return [images.load_image(item.output) for item in items]


def test_runs_joined_by_a_fade_jump_less_than_runs_that_are_cut(tmp_path, style_png, vgg19_weights) -> None:
    clip = pan(8, step=6)
    paths = sorted(write_clip(tmp_path / "clip", clip).iterdir())
    jumps = {}
    for overlap in (0, 2):
        out = tmp_path / f"overlap{overlap}"
        out.mkdir()
        outputs = inline_frames(paths, out, style_png, vgg19_weights, overlap)
        contents = [images.resize(c, *outputs[0].shape[1::-1]) for c in clip]
        steps = frames.flicker(outputs, contents)
        jumps[overlap] = max(steps[1:4])  # the steps into, across and out of the join at frame 4
        inside = float(np.mean(steps[4:]))
    assert jumps[0] > 2 * inside  # a cut between two runs is a jump ...
    assert jumps[2] < 0.7 * jumps[0]  # ... which the fade spreads over the shared frames


def test_the_cluster_driver_sweeps_what_a_killed_run_left_as_the_local_batch_does(
    photos, style_png, vgg19_weights, tmp_path
) -> None:
    out = _fresh(tmp_path / "out")
    stale = out / ".photo0.png.k1ll3d.tmp"  # write_output's temporary name, from a killed run
    stale.write_bytes(b"half a picture")
    items = plan_items([photos / "photo0.png"], out, "png")
    options = Options(size=40, iterations=2, seed=1, weights=str(vgg19_weights))
    summary = cluster.run_distributed(items, [style_png], options, Sink(), cluster.InlineExecutor())
    assert len(summary.done) == 1
    assert sorted(p.name for p in out.iterdir()) == ["photo0.png"]


# -- a real local Ray cluster -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster():
    from ray.cluster_utils import Cluster

    store = 128 << 20
    head = {"num_cpus": 0, "include_dashboard": False, "object_store_memory": store}
    local = Cluster(initialize_head=True, head_node_args=head)
    workers = [local.add_node(num_cpus=1, object_store_memory=store) for _ in range(2)]
    local.wait_for_nodes()
    yield local, workers
    local.shutdown()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(4):
        make_content_image(48, 40).rotate(90 * index, expand=True).save(folder / f"photo{index}.png")
    return folder


def local_batch(photos: Path, style: Path, weights: Path, out: Path, *extra: str) -> None:
    out.mkdir()
    # One thread, as each task of a one-CPU worker: then the sums run in the same order.
    done = nst("batch", str(photos), "--style", str(style), "-o", str(out), *FLAGS, "--weights", str(weights),
               *extra, env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_frames_on_ray_are_the_inline_runs_and_a_rerun_redoes_nothing(
    ray_cluster, tmp_path, style_png, vgg19_weights
) -> None:
    local, _ = ray_cluster
    clip_dir = write_clip(tmp_path / "clip", pan(6, step=6))
    expected = inline_frames(
        sorted(clip_dir.iterdir()), _fresh(tmp_path / "inline"), style_png, vgg19_weights, 1
    )
    out = _fresh(tmp_path / "ray")
    runs = ["--frames", "--ray", local.address, "--frames-per-task", "4", "--overlap", "1"]
    args = ["batch", str(clip_dir), "--style", str(style_png), "-o", str(out), *FLAGS, "--weights",
            str(vgg19_weights), *runs, "--progress", "json"]  # fmt: skip
    done = nst(*args)
    assert done.returncode == 0, done.stderr
    end = events_of(done.stdout)[-1]
    assert end["event"] == "done" and end["done"] == 6
    got = [images.load_image(path) for path in sorted(out.iterdir())]
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine, theirs)
    stamps = {path: path.stat().st_mtime_ns for path in out.iterdir()}
    again = nst(*args)
    assert again.returncode == 0, again.stderr
    assert events_of(again.stdout)[-1]["skipped"] == 6
    assert {path: path.stat().st_mtime_ns for path in out.iterdir()} == stamps


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


def test_bad_ray_addresses_and_a_missing_ray_are_one_line_errors(photos, style_png, tmp_path) -> None:
    base = ["batch", str(photos), "--style", str(style_png), "-o", str(tmp_path)]
    nobody = nst(*base, "--ray", "127.0.0.1:9")
    assert nobody.returncode == int(ExitCode.USAGE)
    assert nobody.stderr.strip().splitlines() == [
        "error: No Ray cluster answers at 127.0.0.1:9 (Connection refused): start one with "
        "`ray start --head`, or check the address."
    ]
    nonsense = nst(*base, "--ray", "somewhere")
    assert "is not HOST:PORT or auto" in nonsense.stderr and len(nonsense.stderr.strip().splitlines()) == 1
    hidden = tmp_path / "no_ray"
    hidden.mkdir()
    (hidden / "ray.py").write_text("raise ImportError('No module named ray')\n")
    missing = nst(*base, "--ray", "auto", env={"PYTHONPATH": str(hidden)})
    assert missing.returncode == int(ExitCode.USAGE)
    assert missing.stderr.strip().splitlines() == [
        "error: --ray needs Ray, which is not installed: install it with: "
        'pip install "gimp-neural-style[cluster]".'
    ]
    assert not list(tmp_path.glob("photo*"))


def test_ray_auto_starts_a_cluster_here_when_none_runs(photos, style_png, vgg19_weights, tmp_path) -> None:
    """`--ray auto` with no cluster on this machine: Ray started for the batch, and stopped after it."""
    one = _fresh(tmp_path / "one")
    shutil.copy(photos / "photo0.png", one)
    out = _fresh(tmp_path / "out")
    # A Ray folder of its own (short: Ray's sockets live in it): no cluster of another run is found there.
    ray_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        done = nst("batch", str(one), "--style", str(style_png), "-o", str(out), *FLAGS, "--weights",
                   str(vgg19_weights), "--ray", "auto", "--progress", "json",
                   env={"RAY_ADDRESS": "", "RAY_TMPDIR": str(ray_dir)})  # fmt: skip
    finally:
        shutil.rmtree(ray_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr
    end = events_of(done.stdout)[-1]
    assert end["event"] == "done" and end["done"] == 1 and len(end["workers"]) == 1
    assert sorted(p.name for p in out.iterdir()) == ["photo0.png"]


KILL_ITERATIONS = 100


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_worker_killed_during_the_batch_loses_nothing(
    ray_cluster, photos, style_png, vgg19_weights, tmp_path
):
    local, workers = ray_cluster
    # Long enough pictures that a worker seen early in one cannot finish it before the kill lands: the
    # driver relays progress every 0.2 s, and 6 iterations of a 40-pixel picture take less than that.
    slow = ["--iterations", str(KILL_ITERATIONS)]
    expected = tmp_path / "local"
    local_batch(photos, style_png, vgg19_weights, expected, *slow)
    out = _fresh(tmp_path / "ray")
    raylets = {worker.all_processes["raylet"][0].process.pid: worker for worker in workers}
    command = [sys.executable, "-m", "nst_core", "batch", str(photos), "--style", str(style_png), "-o",
               str(out), *FLAGS, *slow, "--weights", str(vgg19_weights), "--ray", local.address,
               "--progress", "json"]  # fmt: skip
    batch = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, killed = [], None
    try:
        for line in batch.stdout:
            assert line.startswith("{"), line
            event = json.loads(line)
            seen.append(event)
            early = event["event"] == "progress" and event["iteration"] <= KILL_ITERATIONS // 5
            if killed is None and early and event.get("worker"):
                pid = int(event["worker"].rsplit(":", 1)[1])
                node = raylets.get(_parent(pid))
                if node is not None:  # the machine running this picture goes away, mid-picture
                    os.kill(pid, signal.SIGKILL)
                    local.remove_node(node, allow_graceful=False)
                    killed = (event["item"], event["worker"])
        assert batch.wait(timeout=600) == 0, seen[-3:]
    finally:
        batch.kill()
        if killed is not None:
            local.add_node(num_cpus=1, object_store_memory=128 << 20)  # for the tests after this one
    assert killed is not None
    done = [event for event in seen if event["event"] == "item" and event["status"] == "done"]
    assert sorted(event["item"] for event in done) == [1, 2, 3, 4]  # each once
    lost_item, lost_worker = killed
    assert next(e for e in done if e["item"] == lost_item)["worker"] != lost_worker  # run again elsewhere
    for name in sorted(p.name for p in expected.iterdir()):
        assert (out / name).read_bytes() == (expected / name).read_bytes(), name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in expected.iterdir())  # no leftovers
    end = seen[-1]
    assert end["event"] == "done" and end["done"] == 4
    assert {stats["engine_loads"] for stats in end["workers"].values()} == {1}  # loaded once per worker
    assert {stats["threads"] for stats in end["workers"].values()} == {1}  # its one CPU, not the machine's
    assert sum(stats["units"] for stats in end["workers"].values()) == 4
    assert len(end["workers"]) <= 2  # a worker process did all its pictures with that one engine
