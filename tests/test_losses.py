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


def test_trace_sqrtm_matches_eigendecomposition() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(32, 32, generator=generator)
    spd = a @ a.T / 32 + 0.1 * torch.eye(32)
    exact = torch.linalg.eigvalsh(spd.double()).sqrt().sum()
    assert losses.trace_sqrtm(spd).item() == pytest.approx(exact.item(), rel=1e-5)
    root = losses.sqrtm_eigh(spd)
    torch.testing.assert_close(root @ root, spd, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shape", [(12, 5), (5, 12)])
def test_trace_sqrtm_gradient_is_the_nuclear_norms(shape: tuple[int, int]) -> None:
    """tr((B^T B)^1/2) = |B|_* has gradient U V^T, also when centring leaves B a null direction."""
    generator = torch.Generator().manual_seed(1)
    b = torch.randn(*shape, generator=generator)
    b = (b - b.mean(dim=1, keepdim=True)).requires_grad_(True)
    gram_side = b @ b.T if shape[0] <= shape[1] else b.T @ b
    losses.trace_sqrtm(gram_side).backward()
    u, s, vh = torch.linalg.svd(b.detach().double(), full_matrices=False)
    rank = int((s > 1e-6 * s.max()).sum())
    torch.testing.assert_close(b.grad, (u[:, :rank] @ vh[:rank]).float(), atol=1e-5, rtol=1e-4)
    assert torch.isfinite(b.grad).all()


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
