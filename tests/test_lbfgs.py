"""The pixels' L-BFGS: the same recursion as torch's, a first step of a set size, no host reads, and
a loss that never rises: a step that raised it is taken back and tried shorter."""

from __future__ import annotations

import pytest
import torch

from nst_core.objective import Evaluation
from nst_core.optimize import LBFGS, LBFGS_FIRST_STEP, LBFGS_RETRY_SHRINK, Stepper


def _quadratic(n: int, condition: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A symmetric positive definite A with eigenvalues 1..condition, and b."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, torch.log10(torch.tensor(condition)).item(), n, dtype=torch.float64)
    a = q @ torch.diag(eigenvalues) @ q.T
    return a, torch.randn(n, generator=generator, dtype=torch.float64)


def _run_ours(a: torch.Tensor, b: torch.Tensor, steps: int, history: int, first_step: float) -> torch.Tensor:
    x = torch.zeros_like(b)
    optimizer = LBFGS(history, first_step)
    for _ in range(steps):
        x = x + optimizer.step(a @ x - b)
    return x


def test_same_iterates_as_torch_given_torchs_first_step() -> None:
    a, b = _quadratic(30, 50.0, seed=0)
    x = torch.zeros_like(b, requires_grad=True)
    reference = torch.optim.LBFGS(
        [x], lr=1.0, max_iter=1, history_size=5, tolerance_grad=0.0, tolerance_change=0.0
    )

    def closure() -> torch.Tensor:
        reference.zero_grad()
        loss = 0.5 * x @ a @ x - b @ x
        loss.backward()
        return loss

    gradient = -b  # at x = 0
    torch_first = min(1.0, 1.0 / gradient.abs().sum().item()) * gradient.abs().mean().item()
    for _ in range(12):
        reference.step(closure)
    ours = _run_ours(a, b, 12, history=5, first_step=torch_first)
    torch.testing.assert_close(ours, x.detach(), atol=1e-8, rtol=1e-6)


def test_converges_where_gradient_descent_does_not() -> None:
    a, b = _quadratic(40, 1000.0, seed=1)
    exact = torch.linalg.solve(a, b)
    ours = _run_ours(a, b, 80, history=20, first_step=LBFGS_FIRST_STEP)
    assert (ours - exact).norm() < 0.01 * exact.norm()  # unit steps, no line search: close, not exact
    x = torch.zeros_like(b)
    for _ in range(80):  # the best fixed step, 1 / largest eigenvalue
        x = x - (a @ x - b) / 1000.0
    assert (x - exact).norm() > 0.1 * exact.norm()


def test_first_step_moves_the_mean_pixel_by_first_step() -> None:
    gradient = torch.tensor([1e-6, -3e-6, 2e-6, 0.0])  # a gradient scale torch's first step ignores
    step = LBFGS(10).step(gradient)
    assert step.abs().mean().item() == pytest.approx(LBFGS_FIRST_STEP)
    assert torch.all(step * gradient <= 0)  # downhill


def test_history_is_bounded_and_flat_pairs_take_no_part() -> None:
    optimizer = LBFGS(3)
    gradient = torch.tensor([1.0, -2.0, 0.5])
    optimizer.step(gradient)
    step = optimizer.step(gradient.clone())  # no change in gradient: s.y = 0, no curvature to learn
    assert torch.isfinite(step).all()
    torch.testing.assert_close(step, -gradient)  # gamma stays 1, the pair has weight 0
    for _ in range(5):
        optimizer.step(torch.randn(3))
    assert len(optimizer._pairs) == 3


def test_a_warm_start_steps_from_the_curvature_it_is_given() -> None:
    """Another minimum of the same curvature (other weights of the same terms, as a followed preview
    has): from the last run's newest pairs, 4 steps land nearer than 4 from a cold start."""
    a, b = _quadratic(40, 100.0, seed=2)
    learnt = LBFGS(20)
    x = torch.zeros_like(b)
    for _ in range(8):  # as few as a preview's top scale takes
        x = x + learnt.step(a @ x - b)
    curvature = learnt.curvature(5)
    assert curvature is not None and learnt.curvature(50).pairs[-5:] == curvature.pairs  # the newest 5
    moved = 2 * b
    exact = torch.linalg.solve(a, moved)

    def error_after_4(optimizer: LBFGS) -> float:
        y = x
        for _ in range(4):
            y = y + optimizer.step(a @ y - moved)
        return ((y - exact).norm() / exact.norm()).item()

    assert error_after_4(LBFGS(20, warm=curvature)) < 0.7 * error_after_4(LBFGS(20))
    assert LBFGS(20).curvature(5) is None  # nothing learnt yet


class _Bowl:
    """sum((x - centre)^2): its minimum inside the pixels' [0, 1]."""

    def __init__(self, centre: float) -> None:
        self.centre = centre

    def value_and_grad(self, image: torch.Tensor, loss_scale: float = 1.0) -> Evaluation:
        offset = image - self.centre
        total = (offset**2).sum()
        return total, {"bowl": total}, 2 * offset


def test_a_step_that_raises_the_loss_is_taken_back_and_tried_shorter() -> None:
    """From 0.01 below the bowl's bottom the first step (0.03 per pixel) lands 0.02 above it, higher
    up the bowl: that picture is not kept, the step is tried again at a quarter of its length, and the
    curvature measured along it takes the next step to the bottom."""
    stepper = Stepper(torch.full((1, 3, 4, 4), 0.49), _Bowl(0.5), "lbfgs", 0.02)
    reported = [stepper.step()["total"] for _ in range(4)]
    assert stepper.rejected == 1
    assert all(later <= earlier for earlier, later in zip(reported, reported[1:], strict=False)), reported
    assert reported[1] == reported[0]  # the taken-back iteration reports the picture held
    shorter = 0.49 + LBFGS_FIRST_STEP * LBFGS_RETRY_SHRINK
    assert reported[2] == pytest.approx(48 * (shorter - 0.5) ** 2, rel=1e-4)
    assert stepper.best_loss < 1e-10
    torch.testing.assert_close(stepper.result(), torch.full((1, 3, 4, 4), 0.5))
