"""No lost job: many small jobs from several clients at once, some cancelled, some clients killed
mid-stream. Every job finishes with a local run's bytes or is cancelled and freed; the server keeps
answering and its memory returns to where it was."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from servers import serving
from test_service import SMALL, body_for, local_result, quiet

from nst_core import client
from nst_core.errors import NstError
from nst_core.events import Sink

CLIENTS, JOBS_PER_CLIENT, KILLED_CLIENTS = 4, 6, 2
CANCELLED = {3, 9, 14, 22}  # job numbers cancelled by their id as soon as they are accepted
MEMORY_SLACK = 48 * 1024 * 1024  # allocator noise; a kept job (images, tensors, results) would exceed it

KILLED_CLIENT = textwrap.dedent(
    """\
    import sys
    from nst_core import client
    from nst_core.events import Sink
    class Exit(Sink):
        def _show(self, event):
            if event["event"] == "progress":
                print("progress", flush=True)
                sys.stdin.read()  # until the test kills this process
    body = open(sys.argv[3], "rb").read()
    client.run_on_server(client.Server(sys.argv[1], sys.argv[2]), body, Exit())
    """
)


def run_job(server: client.Server, body: bytes, cancel_it: bool) -> tuple[str, bytes]:
    """('done', bytes) or ('cancelled', b'') for one job; anything else fails the test."""
    cancel = threading.Event()
    if cancel_it:
        cancel.set()  # run_on_server checks it at the first line after `accepted` and sends the DELETE
    try:
        return "done", client.run_on_server(server, body, Sink(), cancel)[1]
    except NstError as error:
        if error.code == 130:
            return "cancelled", b""
        return f"error {error.code}: {error.message}", b""


def test_many_clients_many_jobs_no_job_lost(tmp_path: Path, vgg19_weights: Path, style_png: Path) -> None:
    jobs = range(CLIENTS * JOBS_PER_CLIENT)
    options = {n: {**SMALL, "seed": n} for n in jobs}
    expected = {n: local_result(vgg19_weights, style_png, options[n]) for n in jobs if n not in CANCELLED}
    long_body = tmp_path / "long.body"
    long_body.write_bytes(body_for(style_png, {**SMALL, "iterations": 2000, "size": 64}))

    with serving(tmp_path / "server", vgg19_weights) as served:
        server = served.server
        run_job(server, body_for(style_png, options[0]), False)  # warm: the baseline is a served engine
        before = served.rss()

        killed = []
        for _ in range(KILLED_CLIENTS):
            process = subprocess.Popen(
                [sys.executable, "-c", KILLED_CLIENT, served.url, served.token, str(long_body)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            killed.append(process)

        def one_client(index: int) -> dict[int, tuple[str, bytes]]:
            mine = [n for n in jobs if n % CLIENTS == index]
            with ThreadPoolExecutor(2) as pool:  # two jobs in flight per client
                results = pool.map(
                    lambda n: run_job(server, body_for(style_png, options[n]), n in CANCELLED), mine
                )
                return dict(zip(mine, results, strict=True))

        with ThreadPoolExecutor(CLIENTS) as clients:
            futures = [clients.submit(one_client, index) for index in range(CLIENTS)]
            for process in killed:  # kill each waiting client once its job streams progress
                assert process.stdout is not None and process.stdout.readline() == b"progress\n"
                process.kill()
                process.wait()
            outcomes: dict[int, tuple[str, bytes]] = {}
            for future in futures:
                outcomes.update(future.result(timeout=600))

        assert client.health(server)["version"] == 1  # still answering
        state = quiet(served)
        after = served.rss()

    done = [n for n, (kind, _) in outcomes.items() if kind == "done"]
    cancelled = [n for n, (kind, _) in outcomes.items() if kind == "cancelled"]
    lost = sorted(set(jobs) - set(done) - set(cancelled))
    figures = {
        "jobs": len(outcomes) + KILLED_CLIENTS,
        "clients": CLIENTS + KILLED_CLIENTS,
        "cancelled": len(cancelled),
        "killed clients": KILLED_CLIENTS,
        "lost": len(lost),
        "rss MB before/after": (round(before / 2**20), round(after / 2**20)),
    }
    print(json.dumps(figures))
    assert not lost, {n: outcomes[n][0] for n in lost}
    assert sorted(cancelled) == sorted(CANCELLED)
    for n in done:
        assert outcomes[n][1] == expected[n], f"job {n} differs from a local run with the same seed"
    assert state["jobs"] == 0
    assert after - before < MEMORY_SLACK, figures
