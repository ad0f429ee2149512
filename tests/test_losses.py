"""Each loss against values worked out by hand on tiny tensors."""

from __future__ import annotations

import math

import pytest
import torch

from nst_core import losses


def _features(rows: list[list[float]]) -> torch.Tensor:
    """C x M values as a 1 x C x 1 x M feature map."""
    return torch.tensor(rows, dtype=torch.float32)[None, :, None, :]


def test_gram_divides_by_positions() -> None:
    f = _features([[1, 2], [3, 4]])
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 2
    torch.testing.assert_close(losses.gram(f), expected)


def test_content_loss_is_relative_squared_error() -> None:
    target = _features([[1, 2], [2, 0]])
    image = _features([[1, 0], [2, 1]])
    # |diff|^2 = 4 + 1 = 5; |target|^2 = 1 + 4 + 4 = 9
    assert losses.content_loss(image, target).item() == pytest.approx(5 / 9, rel=1e-6)
    assert losses.content_loss(target, target).item() == 0.0


def test_gram_style_loss() -> None:
    style = _features([[1, 1], [0, 2]])  # A = [[1, 1], [1, 2]]
    image = _features([[2, 0], [0, 0]])  # G = [[2, 0], [0, 0]]
    target = losses.style_target(losses.style_statistics(style, "gram"), "gram")
    # |G - A|^2 = 1 + 1 + 1 + 4 = 7; |A|^2 = 1 + 1 + 1 + 4 = 7
    assert target.loss(image).item() == pytest.approx(1.0, rel=1e-6)
    assert target.loss(style).item() == pytest.approx(0.0, abs=1e-9)


def test_w2_one_channel_is_the_gaussian_distance() -> None:
    style = _features([[1, 3, 1, 3]])  # mean 2, variance 1, second moment 5
    image = _features([[0, 1, 0, 1]])  # mean 0.5, variance 0.25
    target = losses.style_target(losses.style_statistics(style, "w2"), "w2")
    eps = losses.COVARIANCE_EPS  # Sigma_s + eps * mean(diag Sigma_s) * I
    distance = (2 - 0.5) ** 2 + (math.sqrt(1 + eps) - math.sqrt(0.25)) ** 2
    assert target.loss(image).item() == pytest.approx(distance / 5, rel=1e-4)


def test_w2_diagonal_two_channels_and_zero_at_the_target() -> None:
    style = _features([[1, -1, 1, -1], [2, 2, -2, -2]])  # means 0, variances 1 and 4, uncorrelated
    image = _features([[2, 0, 2, 0], [0, 0, 0, 0]])  # means (1, 0), variances (1, 0)
    target = losses.style_target(losses.style_statistics(style, "w2"), "w2")
    eps = 2.5 * losses.COVARIANCE_EPS  # relative to the style's mean variance (1 + 4) / 2
    distance = 1 + (1 - math.sqrt(1 + eps)) ** 2 + (0 - math.sqrt(4 + eps)) ** 2
    assert target.loss(image).item() == pytest.approx(distance / 5, rel=1e-3)
    assert target.loss(style).item() == pytest.approx(0.0, abs=1e-4)


def test_sqrtm_eigh_squares_back() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, generator=generator)
    spd = a @ a.T / 32 + 0.1 * torch.eye(32)
    root = losses.sqrtm_eigh(spd)
    torch.testing.assert_close(root @ root, spd, atol=1e-4, rtol=1e-4)


def _positions64(features: torch.Tensor) -> torch.Tensor:
    return features.movedim(1, -1).reshape(-1, features.shape[1]).double()


def _gram_by_autograd(features: torch.Tensor, target: losses.GramTarget) -> torch.Tensor:
    x = _positions64(features)
    return (x.T @ x / x.shape[0] - target.gram.double()).pow(2).sum() / target.norm.double()


def _w2_by_autograd(features: torch.Tensor, target: losses.W2Target) -> torch.Tensor:
    """The module docstring's formula, with the cross term as the nuclear norm (SVD, differentiable)."""
    x = _positions64(features)
    mean = x.mean(0)
    b = (x - mean) @ target.cov_sqrt.double() / x.shape[0] ** 0.5
    cross = torch.linalg.matrix_norm(b, "nuc")
    spread = (x - mean).pow(2).sum() / x.shape[0]
    distance = (mean - target.mean.double()).pow(2).sum() + spread + target.cov_trace.double() - 2 * cross
    return distance / target.norm.double()


@pytest.mark.parametrize("kind", ["gram", "w2"])
@pytest.mark.parametrize("shape", [(1, 6, 5, 7), (1, 12, 2, 3)])  # more positions than channels, and fewer
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_written_out_gradients_match_autograd(
    kind: str, shape: tuple[int, int, int, int], layout: torch.memory_format
) -> None:
    """The hand-written backward passes against autograd through the plain formulas in float64."""
    generator = torch.Generator().manual_seed(4)
    style = torch.rand(1, shape[1], 6, 5, generator=generator)
    target = losses.style_target(losses.style_statistics(style, kind), kind)
    reference = _gram_by_autograd if kind == "gram" else _w2_by_autograd
    features = torch.rand(shape, generator=generator).contiguous(memory_format=layout).requires_grad_(True)
    value = target.loss(features)
    value.backward()
    exact = features.detach().double().requires_grad_(True)
    expected = reference(exact, target)  # type: ignore[arg-type]
    expected.backward()
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    assert features.grad is not None and exact.grad is not None
    tolerance = 1e-4 * exact.grad.abs().max().item()
    torch.testing.assert_close(features.grad.double(), exact.grad, atol=tolerance, rtol=0)
    # The gradient comes back in the layout the network produced (no copy into another layout).
    if layout == torch.channels_last:
        assert features.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("threads", [1, 2])
def test_style_loss_takes_all_layers_at_once_as_each_alone(threads: int) -> None:
    """W2 layers share one call (their eigendecompositions side by side): the same value and, per
    layer, the same gradient as each layer's own formula; a layer that wants no gradient gets none."""
    generator = torch.Generator().manual_seed(6)
    shapes = {"a": (1, 4, 9, 8), "b": (1, 12, 2, 3), "c": (1, 7, 5, 5), "d": (1, 5, 6, 6)}
    kinds = {"a": "w2", "b": "w2", "c": "gram", "d": "w2"}
    weights = {"a": 1.0, "b": 2.0, "c": 0.5, "d": 1.5}
    styles = {n: torch.rand(1, s[1], 6, 5, generator=generator) for n, s in shapes.items()}
    targets = {n: losses.style_target(losses.style_statistics(styles[n], kinds[n]), kinds[n]) for n in shapes}
    features = {
        n: torch.rand(s, generator=generator).contiguous(memory_format=torch.channels_last)
        for n, s in shapes.items()
    }
    for name in ("a", "b", "c"):
        features[name].requires_grad_(True)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        value = losses.style_loss(targets, features, weights)
    finally:
        torch.set_num_threads(previous)
    value.backward()
    expected = torch.zeros((), dtype=torch.float64)
    for name, target in targets.items():
        exact = features[name].detach().double().requires_grad_(True)
        reference = _gram_by_autograd if kinds[name] == "gram" else _w2_by_autograd
        term = reference(exact, target) * (weights[name] / sum(weights.values()))  # type: ignore[arg-type]
        term.backward()
        expected = expected + term.detach()
        if name == "d":
            assert features[name].grad is None
            continue
        assert exact.grad is not None and features[name].grad is not None
        tolerance = 1e-4 * exact.grad.abs().max().item()
        torch.testing.assert_close(features[name].grad.double(), exact.grad, atol=tolerance, rtol=0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)


def test_w2_gradient_is_zero_at_the_target_and_finite_with_a_null_direction() -> None:
    style = _features([[1, -1, 1, -1], [2, 2, -2, -2]])
    target = losses.style_target(losses.style_statistics(style, "w2"), "w2")
    constant = _features([[0.5, 0.5, 0.5, 0.5], [1, 1, 1, 1]]).requires_grad_(True)  # covariance 0
    target.loss(constant).backward()
    assert constant.grad is not None and torch.isfinite(constant.grad).all()
    at_target = style.clone().requires_grad_(True)
    target.loss(at_target).backward()
    assert at_target.grad is not None and at_target.grad.abs().max().item() < 1e-3


def test_losses_without_gradients_keep_nothing() -> None:
    style = torch.rand(1, 4, 5, 5, generator=torch.Generator().manual_seed(5))
    for kind in ("gram", "w2"):
        target = losses.style_target(losses.style_statistics(style, kind), kind)
        with torch.no_grad():
            value = target.loss(style * 0.5)
        assert value.item() > 0 and value.grad_fn is None


def test_tv_loss() -> None:
    image = torch.tensor([[0.0, 1.0], [0.0, 0.0]])[None, None]
    # horizontal diffs: 1, 0 -> mean 0.5; vertical: 0, -1 -> mean 0.5
    assert losses.tv_loss(image).item() == pytest.approx(1.0)
    assert losses.tv_loss(torch.full((1, 3, 4, 4), 0.3)).item() == 0.0


def test_blend_is_the_weighted_average_of_statistics() -> None:
    a = (torch.tensor([1.0, 2.0]), torch.eye(2))
    b = (torch.tensor([3.0, 6.0]), 3 * torch.eye(2))
    mean, second = losses.blend_statistics([a, b], [1.0, 3.0])
    torch.testing.assert_close(mean, torch.tensor([2.5, 5.0]))
    torch.testing.assert_close(second, 2.5 * torch.eye(2))
    only_a = losses.blend_statistics([a, b], [1.0, 0.0])
    assert torch.equal(only_a[0], a[0]) and torch.equal(only_a[1], a[1])


def test_layer_weights_are_normalised() -> None:
    terms = {"a": torch.tensor(1.0), "b": torch.tensor(3.0)}
    assert losses.weighted_sum(terms, {"a": 1.0, "b": 1.0}).item() == pytest.approx(2.0)
    assert losses.weighted_sum(terms, {"a": 3.0, "b": 1.0}).item() == pytest.approx(1.5)


def test_losses_do_not_depend_on_image_size() -> None:
    """The same texture at twice the size gives the same style statistics and loss."""
    tile = torch.rand(1, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    big = tile.repeat(1, 1, 2, 2)
    style = torch.rand(1, 4, 7, 7, generator=torch.Generator().manual_seed(2))
    for kind in ("gram", "w2"):
        target = losses.style_target(losses.style_statistics(style, kind), kind)
        assert target.loss(big).item() == pytest.approx(target.loss(tile).item(), rel=1e-4)


def _w2_by_eigendecomposition(features: torch.Tensor, target: losses.W2Target) -> float:
    f = features.double().flatten(2)[0]
    mean = f.mean(1)
    cov = (f - mean[:, None]) @ (f - mean[:, None]).T / f.shape[1]
    root = target.cov_sqrt.double()
    cross = losses.sqrtm_eigh(root @ cov @ root).trace()
    distance = (mean - target.mean.double()).pow(2).sum() + cov.trace() + target.cov_trace - 2 * cross
    return float(distance / target.norm)


def test_w2_with_fewer_positions_than_channels() -> None:
    """Deep layers at coarse scales: the small (positions x positions) matrix gives the same distance."""
    generator = torch.Generator().manual_seed(3)
    style = torch.rand(1, 12, 4, 5, generator=generator)
    target = losses.style_target(losses.style_statistics(style, "w2"), "w2")
    for shape in ((1, 12, 2, 3), (1, 12, 4, 4)):
        image = torch.rand(shape, generator=generator)
        assert target.loss(image).item() == pytest.approx(_w2_by_eigendecomposition(image, target), rel=2e-3)
