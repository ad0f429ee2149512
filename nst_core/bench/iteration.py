"""`python -m nst_core.bench`: how fast one iteration runs, against what the machine allows.

For each size it prints the engine's seconds per iteration, a textbook implementation's
(the baseline), the floor (the iteration's FLOPs over the measured machine rates) and the
ratios between them, plus peak memory. Weights are random unless --weights is given: the
cost of a step does not depend on the weight values. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import devices, losses, memory, optimize, speed
from ..devices import describe_device, pick_device
from ..images import from_tensor
from ..network import autocast_dtype, build_network, layer_index, load_features
from ..options import Options, Settings, resolve
from ..speed import best_time, synchronize, synthetic_images
from .runner import print_row, random_weights

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


# ---- machine rates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Rates:
    conv: float  # FLOP/s of a 3x3 convolution of a VGG-like shape
    matmul: float  # FLOP/s of a Gram-shaped matrix product


@dataclass(frozen=True)
class Probe:
    """A call whose FLOPs are known, timed to measure one of the machine's rates."""

    call: Callable[[], object]
    flops: float
    rate: str  # the Rates field it measures


def rate_probes(device: torch.device, dtype: torch.dtype, side: int = 128) -> dict[str, Probe]:
    """3x3 convolution (256 -> 256 channels at side^2, VGG's third block at 512 px) in both memory
    layouts, and a Gram product. The faster layout counts: the floor is what the machine can do,
    not what one layout gets out of it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 256, side, side, generator=generator).to(device, dtype)
    w = torch.randn(256, 256, 3, 3, generator=generator).to(device, dtype)
    f = torch.randn(256, side * side, generator=generator).to(device, dtype)
    conv_flops = 2 * 256 * 256 * 9 * side * side
    probes = {
        f"rate: conv {name}": Probe(
            functools.partial(
                F.conv2d, x.contiguous(memory_format=fmt), w.contiguous(memory_format=fmt), padding=1
            ),
            conv_flops,
            "conv",
        )
        for name, fmt in (("default layout", torch.contiguous_format), ("channels last", torch.channels_last))
    }
    probes["rate: matmul"] = Probe(lambda: f @ f.T, 2 * 256 * 256 * side * side, "matmul")
    return probes


def rates_from(probes: dict[str, Probe], seconds: dict[str, float]) -> Rates:
    """The best rate each kind of probe showed: the machine's rates."""
    best = {"conv": 0.0, "matmul": 0.0}
    for name, probe in probes.items():
        best[probe.rate] = max(best[probe.rate], probe.flops / seconds[name])
    return Rates(**best)


def measure_rates(device: torch.device, dtype: torch.dtype, side: int = 128, repeats: int = 5) -> Rates:
    probes = rate_probes(device, dtype, side)
    return rates_from(probes, {name: best_time(p.call, device, repeats) for name, p in probes.items()})


# ---- FLOPs of one iteration ------------------------------------------------------------------


@dataclass(frozen=True)
class IterationFlops:
    conv: float  # forward and input-gradient convolutions
    style: float  # the style loss (Gram or W2 products) forward and backward

    @property
    def total(self) -> float:
        return self.conv + self.style

    def floor_seconds(self, rates: Rates) -> float:
        return self.conv / rates.conv + self.style / rates.matmul


def iteration_flops(settings: Settings, width: int, height: int) -> IterationFlops:
    """Convolutions as the plans count them (speed.conv_flops: forward and input gradient), plus the
    style loss as the engine computes it, counted by torch on shape-only tensors."""
    layers = settings.content_layers + settings.style_layers
    shapes = memory.layer_shapes(settings.model, layers, height, width)
    style = sum(
        style_loss_flops(settings.style_loss, shapes[layer_index(settings.model, name)])
        for name in settings.style_layers
    )
    return IterationFlops(conv=speed.conv_flops(settings, width, height), style=float(style))


def style_loss_flops(kind: str, shape: memory.LayerShape) -> float:
    """FLOPs of one layer's style loss and its gradient (matrix products; element-wise work is free)."""
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    features = torch.empty(1, shape.channels_out, shape.height, shape.width, device=meta)
    target = losses.style_target(losses.style_statistics(features, kind), kind)
    features.requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        target.loss(features).backward()
    return float(counter.get_total_flops())


# ---- peak memory -----------------------------------------------------------------------------


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 resets the peak resident set size (VmHWM) of this process
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# ---- the steps being timed -------------------------------------------------------------------


class TextbookVGG(nn.Module):
    """The plain implementation everyone starts from: features by index, Gram / (C H W), MSE."""

    def __init__(self, features: nn.Sequential, content: Sequence[int], style: Sequence[int]) -> None:
        super().__init__()
        self.body = features[: max([*content, *style]) + 1]
        self.content, self.style = list(content), list(style)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]
        ).view(1, 3, 1, 1)
        content, style = [], []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in self.content:
                content.append(x)
            if index in self.style:
                style.append(x)
        return content, style


def _gram(x: torch.Tensor) -> torch.Tensor:
    _, c, h, w = x.shape
    f = x.view(c, h * w)
    return f @ f.t() / (c * h * w)


def textbook_step(
    features: nn.Sequential, settings: Settings, content: torch.Tensor, style: torch.Tensor
) -> Callable[[], None]:
    """One L-BFGS iteration of the PyTorch-tutorial formulation, as the baseline."""
    net = TextbookVGG(
        _fresh_relus(features),
        [layer_index(settings.model, n) for n in settings.content_layers],
        [layer_index(settings.model, n) for n in settings.style_layers],
    ).to(content.device)
    with torch.no_grad():
        content_targets = [t.detach() for t in net(content)[0]]
        style_targets = [_gram(t) for t in net(style)[1]]
    image = content.clone().requires_grad_(True)
    lbfgs = torch.optim.LBFGS([image], max_iter=1)

    def closure() -> torch.Tensor:
        lbfgs.zero_grad()
        c, s = net(image)
        loss = sum(F.mse_loss(a, b) for a, b in zip(c, content_targets, strict=True))
        loss = loss + 1e6 * sum(F.mse_loss(_gram(a), b) for a, b in zip(s, style_targets, strict=True))
        loss.backward()
        return loss

    return lambda: lbfgs.step(closure)


def _fresh_relus(features: nn.Sequential) -> nn.Sequential:
    return nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in features])


def engine_step(
    settings: Settings, weights: Path, content: torch.Tensor, style: torch.Tensor, dtype: torch.dtype | None
) -> Callable[[], object]:
    """One iteration of the engine's own optimiser at one scale."""
    network = build_network(
        settings.model,
        weights,
        settings.content_layers + settings.style_layers,
        settings.pooling,
        content.device,
    )
    inputs = optimize.ScaleInputs(content, [style])
    objective = optimize.build_objective(network, inputs, settings, dtype)
    stepper = optimize.Stepper(content, objective, settings.optimizer, settings.learning_rate)
    return stepper.step


# ---- one row per size ------------------------------------------------------------------------


def time_steps(
    calls: dict[str, Callable[[], object]], counts: dict[str, int], device: torch.device, repeats: int
) -> dict[str, float]:
    """Seconds per call of each entry: the best of `repeats` blocks of `counts[name]` calls.

    The entries take turns, so a burst of load from other programs hits them alike.
    """
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(counts[name]):
                call()
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - start) / counts[name])
    return best


def matched_counts(
    steps: dict[str, Callable[[], object]], probes: dict[str, Probe], device: torch.device, iterations: int
) -> dict[str, int]:
    """`iterations` calls of each step, and of each probe as many as last as long as the first step's.

    A shared machine's speed swings within a second (this one's convolutions: 140 to 260 GFLOP/s
    from one 0.1 s probe to the next). The best of short windows catches bursts that no window as
    long as a step's ever sustains, so probes timed alone would set a floor no step can reach.
    """
    step_seconds = best_time(next(iter(steps.values())), device, repeats=1)  # also the warm-ups
    for step in list(steps.values())[1:]:
        step()
    counts = dict.fromkeys(steps, iterations)
    for name, probe in probes.items():
        counts[name] = max(1, round(iterations * step_seconds / best_time(probe.call, device, repeats=1)))
    return counts


def measure_size(
    args: argparse.Namespace, settings: Settings, weights: Path, size: int, device: torch.device
) -> dict[str, object]:
    width = height = size
    content, style = synthetic_images(width, height, device)
    dtype = DTYPES.get(args.precision)
    autocast = None if dtype == torch.float32 else dtype
    reset_peak(device)
    steps = {"engine": engine_step(settings, weights, content, style, autocast)}
    if args.baseline:
        features = load_features(settings.model, weights)
        steps["textbook"] = textbook_step(features, settings, content, style)
    # The rate probes take turns with the steps, each timed over as long as a step: the machine's
    # speed drifts (other programs, clock rates), and a floor measured at another time, or over
    # shorter windows, would credit or blame the steps for the drift.
    probes = rate_probes(device, DTYPES[args.precision], args.rate_side)
    timed = {**steps, **{name: probe.call for name, probe in probes.items()}}
    counts = matched_counts(steps, probes, device, args.iterations)
    seconds = time_steps(timed, counts, device, args.repeats)
    peak = peak_bytes(device)
    rates = rates_from(probes, seconds)
    flops = iteration_flops(settings, width, height)
    floor = flops.floor_seconds(rates)
    engine = seconds["engine"]
    row: dict[str, object] = {
        "size": size,
        "device": describe_device(device),
        "dtype": args.precision,
        "style_loss": settings.style_loss,
        "seconds_per_iteration": round(engine, 4),
        "floor_seconds": round(floor, 4),
        "ratio_to_floor": round(engine / floor, 2),
        "conv_gflops": round(rates.conv / 1e9, 1),
        "matmul_gflops": round(rates.matmul / 1e9, 1),
        "gflop_per_iteration": round(flops.total / 1e9, 1),
        "peak_bytes": peak,
        "estimate_bytes": memory.estimate_peak_bytes(settings, width, height, device.type),
    }
    if "textbook" in seconds:
        baseline = seconds["textbook"]
        row["baseline_seconds_per_iteration"] = round(baseline, 4)
        row["engine_vs_baseline"] = round(engine / baseline, 2)
        row["baseline_ratio_to_floor"] = round(baseline / floor, 2)
    return row


def _print_row(row: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(row), flush=True)
        return
    peak, estimate = int(row["peak_bytes"]) / memory.MIB, int(row["estimate_bytes"]) / memory.MIB
    text = (
        f"{row['size']:>5} px  {row['seconds_per_iteration']:.3f} s/it  floor {row['floor_seconds']:.3f} s "
        f"({row['gflop_per_iteration']} GFLOP)  x{row['ratio_to_floor']} of floor  "
        f"peak {peak:.0f} MiB (estimate {estimate:.0f})  "
        f"[rates during the steps: conv {row['conv_gflops']}, matmul {row['matmul_gflops']} GFLOP/s]"
    )
    if "baseline_seconds_per_iteration" in row:
        text += (
            f"  | textbook {row['baseline_seconds_per_iteration']:.3f} s/it "
            f"(x{row['baseline_ratio_to_floor']} of floor), engine/textbook {row['engine_vs_baseline']}"
        )
    print(text, flush=True)


# ---- time to quality ------------------------------------------------------------------------


def time_to_quality(
    preset: str, weights: Path, device: torch.device, size: int, match_limit: float = 4.0
) -> list[dict[str, object]]:
    """The preset against single-scale L-BFGS at full size, judged alike: content and style losses
    in fp32 at full size, the style by the preset's loss and by Gram.

    Single-scale L-BFGS runs first for the preset's wall time, then on until its total loss is no
    higher than the preset's (at most `match_limit` times as long): how much longer the plain
    method needs for the same quality.
    """
    from ..run import stylize

    content, style = synthetic_images(size, size, device)
    options = Options(preset=preset, size=size, weights=str(weights), device=device.type)
    start = time.perf_counter()
    preset_result = stylize(from_tensor(content), [from_tensor(style)], options, device=device)
    budget = time.perf_counter() - start
    preset_image = torch.from_numpy(preset_result).permute(2, 0, 1)[None].to(device).float()

    settings = resolve(Options(preset=preset, size=size, multiscale=False, weights=str(weights)))
    network = build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling, device
    )
    inputs = optimize.ScaleInputs(content, [style])
    objective = optimize.build_objective(network, inputs, settings, None)
    gram = optimize.build_objective(network, inputs, dataclasses.replace(settings, style_loss="gram"), None)

    def judge(name: str, image: torch.Tensor, seconds: float, detail: str) -> dict[str, object]:
        with torch.no_grad():
            total, parts = objective(image)
            _, gram_parts = gram(image)
        return {
            "race": name,
            "size": size,
            "seconds": round(seconds, 1),
            "detail": detail,
            "content_loss": round(float(parts["content"]), 4),
            f"style_loss_{settings.style_loss}": round(float(parts["style"]), 4),
            "style_loss_gram": round(float(gram_parts["style"]), 4),
            "total_loss": round(float(total), 4),
        }

    rows = [judge(f"{preset} (coarse to fine)", preset_image, budget, "all scales")]
    stepper = optimize.Stepper(content, objective, "lbfgs", settings.learning_rate)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < budget:
        stepper.step()
        steps += 1
    rows.append(judge("single-scale L-BFGS, same time", stepper.result(), budget, f"{steps} iterations"))
    goal = float(rows[0]["total_loss"])
    # The stepper's losses are the same objective on the same pixels: its best total is comparable.
    while stepper.best_loss > goal and time.perf_counter() - start < match_limit * budget:
        stepper.step()
        steps += 1
    elapsed = time.perf_counter() - start
    reached = stepper.best_loss <= goal
    detail = (
        f"{steps} iterations, x{elapsed / budget:.2f} the time"
        if reached
        else (f"not reached in {steps} iterations (x{match_limit:g} the time)")
    )
    rows.append(judge("single-scale L-BFGS, to the same total loss", stepper.result(), elapsed, detail))
    return rows


# ---- command line ----------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nst_core.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(v) for v in s.split(",")],
        default=None,
        help="comma-separated square sizes (default 256,512 on CPU, 512,1024,2048 on GPU)",
    )
    parser.add_argument(
        "--precision",
        choices=["auto", *DTYPES],
        default="auto",
        help="network precision (auto: what a job of the preset runs in on this device)",
    )
    parser.add_argument("--preset", default="balanced")
    parser.add_argument(
        "--style-loss",
        choices=["gram", "w2"],
        default=None,
        help="override the preset's (the textbook baseline always uses Gram)",
    )
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="the best repeat is reported")
    parser.add_argument("--weights", default=None, help="a VGG weights file (default: random weights)")
    parser.add_argument(
        "--no-baseline", dest="baseline", action="store_false", help="skip the textbook implementation"
    )
    parser.add_argument(
        "--time-to-quality",
        action="store_true",
        help="also compare the preset against single-scale L-BFGS given the same time",
    )
    parser.add_argument(
        "--rate-side",
        type=int,
        default=128,
        help="side of the 256-channel convolution that measures the machine's rate",
    )
    parser.add_argument("--quality-size", type=int, default=512, help="size of the time-to-quality race")
    parser.add_argument(
        "--match-limit",
        type=float,
        default=4.0,
        help="how many times the preset's time single-scale L-BFGS may take to match it",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    return parser.parse_args(argv)


def _auto_precision(name: str, device: torch.device, style_loss: str) -> str:
    """`name`, or for "auto" the precision a job's network runs in on `device` (`autocast_dtype`)."""
    if name != "auto":
        return name
    dtype = autocast_dtype(device, name, style_loss)
    return next((key for key, value in DTYPES.items() if value == dtype), "fp32")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = pick_device(args.device)
    sizes = args.sizes or ([512, 1024, 2048] if device.type == "cuda" else [256, 512])
    settings = resolve(Options(preset=args.preset, multiscale=False, style_loss=args.style_loss))
    args.precision = _auto_precision(args.precision, device, settings.style_loss)
    # The host as a job prepares it, for a job of the largest size (for both steps alike).
    needed = max(memory.job_bytes(settings, size, size, device.type) for size in sizes)
    devices.prepare(device, needed, memory.budget_bytes(settings, device))
    rates = measure_rates(device, DTYPES[args.precision], args.rate_side, repeats=10)
    _print_rates(rates, device, args)
    with tempfile.TemporaryDirectory() as scratch:
        weights = Path(args.weights) if args.weights else random_weights(settings.model, Path(scratch))
        for size in sizes:
            _print_row(measure_size(args, settings, weights, size, device), args.json)
        if args.time_to_quality:
            rows = time_to_quality(args.preset, weights, device, args.quality_size, args.match_limit)
            for row in rows:
                print_row(row, args.json)
    return 0


def _print_rates(rates: Rates, device: torch.device, args: argparse.Namespace) -> None:
    row = {
        "rates": True,
        "device": describe_device(device),
        "dtype": args.precision,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "conv_gflops": round(rates.conv / 1e9, 1),
        "matmul_gflops": round(rates.matmul / 1e9, 1),
    }
    print_row(row, args.json)


if __name__ == "__main__":
    sys.exit(main())
