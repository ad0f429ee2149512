"""What the benchmarks share: a run in a fresh process (`--one`), their rows, random weights.

A benchmark whose runs must each have a process of their own (its peak memory, its cold start) adds
`add_one_option` to its parser, answers `--one SPEC` with `answer_one` and starts each run with
`run_fresh`: the child runs the spec and prints its result as the last line of its output.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ONE = "--one"


class FreshProcessFailed(Exception):
    """A `--one` child exited with an error; `stderr` is what it said."""

    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def add_one_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(ONE, default=None, help=argparse.SUPPRESS)  # a spec, run in this process


def answer_one(spec: str, run_one: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """In the child: run `spec` (JSON) and print its result as one JSON line."""
    print(json.dumps(run_one(json.loads(spec))))
    return 0


def run_fresh(module: str, spec: Mapping[str, Any], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`spec` run by `python -m module --one SPEC` in a fresh process: the result it printed."""
    done = subprocess.run(
        [sys.executable, "-m", module, ONE, json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
    )
    if done.returncode != 0:
        raise FreshProcessFailed(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_row(row: Mapping[str, object], as_json: bool) -> None:
    """One row: a JSON object, or `key=value` pairs."""
    print(json.dumps(row) if as_json else "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


def random_weights(model: str, directory: Path) -> Path:
    """Reproducible random weights in torchvision's layout, so a benchmark needs no download: the cost
    of a step does not depend on the weight values. Initialised as torchvision initialises VGG (He
    normal over the outputs, zero biases), whose activations keep their scale through the layers (no
    denormal floats to slow a step); made without importing torchvision, which would add its 160 MiB to
    a benchmark's peak in this process."""
    import torch

    from ..network import blank_features

    torch.manual_seed(0)
    features = blank_features(model).to_empty(device="cpu")
    state = {}
    for key, tensor in features.state_dict().items():
        if key.endswith("weight"):
            torch.nn.init.kaiming_normal_(tensor, mode="fan_out", nonlinearity="relu")
        else:
            torch.nn.init.zeros_(tensor)
        state[f"features.{key}"] = tensor
    path = directory / f"{model}-random.pth"
    torch.save(state, path)
    return path
