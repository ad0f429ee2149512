"""Regions: one mask per style, as guided statistics (nst_core/regions.py, docs/regions.md).

The formulas are checked against their definitions written out with autograd, the tiled path against
the whole one, and a two-style picture by a yardstick neither style loss optimises (the sliced
Wasserstein distance of random-weight VGG features) and by its gradient energy at the boundary.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from samples import make_content_image, make_style_image

import nst_core
from nst_core import losses, network, optimize, regions
from nst_core.errors import UsageError
from nst_core.objective import own_style_targets
from nst_core.options import Options, resolve

CPU = torch.device("cpu")
SMALL_LAYERS = {"content_layers": ["relu2_2"], "style_layers": ["relu1_1", "relu2_1", "relu3_1"]}


def _features(channels: int = 8, height: int = 6, width: int = 10, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, channels, height, width, generator=torch.Generator().manual_seed(seed))


def _sums(features: torch.Tensor, mask: torch.Tensor | None, shift: torch.Tensor | None = None):  # noqa: ANN202
    layer = losses.LayerSums(shift)
    layer.add(features, mask)
    return layer


# -- the guided statistics ---------------------------------------------------------------------------


def test_a_white_mask_gives_the_plain_statistics() -> None:
    features = _features()
    ones = torch.ones(1, 1, 6, 10)
    (guided,) = _sums(features, ones).statistics("gram")
    torch.testing.assert_close(guided, losses.gram(features))
    for a, b in zip(_sums(features, ones).statistics("w2"), losses.moments(features), strict=True):
        torch.testing.assert_close(a, b)


def test_a_mask_black_on_one_half_gives_the_other_halfs_statistics() -> None:
    features = _features()
    mask = torch.zeros(1, 1, 6, 10)
    mask[..., :4] = 1.0
    left = features[..., :4]
    torch.testing.assert_close(_sums(features, mask).statistics("gram")[0], losses.gram(left))
    for a, b in zip(_sums(features, mask).statistics("w2"), losses.moments(left), strict=True):
        torch.testing.assert_close(a, b)
    # Half weight everywhere is the same distribution: normalised by the mask's sum, not the count.
    torch.testing.assert_close(_sums(features, mask * 0.5).statistics("gram")[0], losses.gram(left))


def test_mask_resizing_keeps_soft_edges_soft_and_the_weight_where_it_was() -> None:
    x = torch.arange(64, dtype=torch.float32)
    feathered = ((40 - x) / 16).clamp(0, 1).expand(1, 1, 64, 64).contiguous()  # 1 up to 24, 0 from 40
    small = regions.resize_mask(feathered, (16, 16))[0, 0, 0]
    soft = small[(small > 0) & (small < 1)]
    assert len(soft) == 4 and bool((soft[1:] < soft[:-1]).all())  # the 16-px feather is 4 soft columns
    assert float(small.mean()) == pytest.approx(float(feathered.mean()), abs=1e-6)
    hard = (x < 30).float().expand(1, 1, 64, 64).contiguous()  # an edge inside a 4-px cell
    assert float(regions.resize_mask(hard, (16, 16))[0, 0, 0, 7]) == pytest.approx(0.5)
    grown = regions.resize_mask(feathered, (128, 128))
    assert float(grown.min()) >= 0 and float(grown.max()) <= 1
    at_layers = regions.layer_masks(feathered[..., :62, :62], {"a": 1, "b": 4}, ["a", "b"])
    assert at_layers["b"].shape[-2:] == (15, 15)  # the feature grid of a 62-px side after 2 poolings
    assert float(at_layers["b"].mean()) == pytest.approx(float(feathered[..., :60, :60].mean()), abs=1e-6)
    assert bool(((at_layers["b"] > 0) & (at_layers["b"] < 1)).any())


def test_masks_are_fitted_to_the_content_and_share_where_they_overlap() -> None:
    white = np.ones((10, 20, 1), np.float32)
    left = np.zeros((20, 40, 3), np.float32)
    left[:, :20] = 1.0  # colour: by its luma
    alpha = np.concatenate([np.ones((20, 40, 1), np.float32), np.zeros((20, 40, 1), np.float32)], axis=2)
    a, b, c = regions.content_masks([white, left, alpha], 40, 20)
    assert a.shape == (20, 40)
    np.testing.assert_allclose(a[:, :18] + b[:, :18], 1.0, atol=1e-6)  # overlap: divided by the sum
    np.testing.assert_allclose(a[:, 22:], 1.0, atol=1e-6)  # alone: as given
    assert float(c.max()) == 0.0  # transparent: no style
    (gap,) = regions.content_masks([np.full((20, 40, 1), 0.25, np.float32)], 40, 20)
    np.testing.assert_allclose(gap, 0.25)  # under 1 stays: the rest is content only


def _reference_loss(kind: str, x: torch.Tensor, w: torch.Tensor, target: losses.StyleTarget) -> torch.Tensor:
    """The region's loss from its definition, in float64 and with autograd."""
    x, w = x.double(), w.double()
    total = w.sum()
    if kind == "gram":
        assert isinstance(target, losses.GramTarget)
        guided = (x * w).T @ x / total
        return (guided - target.gram.double()).pow(2).sum() / target.norm.double()
    assert isinstance(target, losses.W2Target)
    mean = (x * w).sum(0) / total
    centred = x - mean
    cov = (centred * w).T @ centred / total
    root = target.cov_sqrt.double()
    cross = torch.linalg.eigvalsh(root @ cov @ root).clamp_min(0).sqrt().sum()
    distance = (mean - target.mean.double()).pow(2).sum() + cov.trace() + target.cov_trace - 2 * cross
    return distance / target.norm.double()


@pytest.mark.parametrize("kind", ["gram", "w2"])
def test_the_masked_loss_and_its_gradient_are_the_guided_statistics(kind: str) -> None:
    features = _features(8, 12, 10, seed=1).requires_grad_(True)
    style = _features(8, 12, 10, seed=2) * 2
    target = losses.style_target(losses.style_statistics(style, kind), kind)
    mask = torch.rand(1, 1, 12, 10, generator=torch.Generator().manual_seed(3))
    region = regions.Region({"layer": target}, {"layer": mask}, weight=0.7)
    value = regions.style_loss([region], {"layer": features}, {"layer": 1.0})
    (grad,) = torch.autograd.grad(value, features)
    x = features.detach().double().movedim(1, -1).reshape(-1, 8).requires_grad_(True)
    reference = 0.7 * _reference_loss(kind, x, mask.reshape(-1, 1), target)
    (expected,) = torch.autograd.grad(reference, x)
    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-4)
    expected = expected.view(1, 12, 10, 8).movedim(-1, 1).float()
    assert float((grad - expected).abs().max() / expected.abs().max()) < 1e-4


def _network(weights: Path, settings) -> network.VGGFeatures:  # noqa: ANN001
    return network.build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling
    )


@pytest.mark.parametrize("kind", ["gram", "w2"])
def test_tiles_crop_the_masks_as_the_whole_image_has_them(kind: str, vgg19_weights: Path) -> None:
    settings = resolve(Options(style_loss=kind, multiscale=False, **SMALL_LAYERS), n_styles=2)
    net = _network(vgg19_weights, settings)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 96, 136, generator=generator)
    styles = [torch.rand(1, 3, 64, 64, generator=generator) for _ in range(2)]
    x = torch.arange(136, dtype=torch.float32)
    left = ((76 - x) / 16).clamp(0, 1).expand(1, 1, 96, 136).contiguous()
    inputs = optimize.ScaleInputs(content, styles, [left, 1 - left])
    image = (content + 0.1 * torch.rand(content.shape, generator=generator)).clamp(0, 1)
    total, parts, grad = optimize.build_objective(net, inputs, settings, None).value_and_grad(image)
    tiled = optimize.build_objective(net, inputs, settings, None, tile=48)
    assert len(tiled.blocks) > 2
    tiled_total, tiled_parts, tiled_grad = tiled.value_and_grad(image)
    assert float(tiled_parts["style"]) == pytest.approx(float(parts["style"]), rel=1e-5)
    assert float(tiled_total) == pytest.approx(float(total), rel=1e-5)
    # W2's gradient goes through inverse square roots of small eigenvalues (as in tests/test_tiling.py).
    assert float((tiled_grad - grad).abs().mean() / grad.abs().mean()) < (1e-5 if kind == "gram" else 1e-3)


@pytest.mark.parametrize("kind", ["gram", "w2"])
def test_a_white_mask_is_the_style_unmasked(kind: str, vgg19_weights: Path) -> None:
    """One style under a white mask: the loss and gradient of that style without one (for w2 at a layer
    with fewer positions than channels, where the unmasked loss takes its other, equal form)."""
    settings = resolve(Options(style_loss=kind, multiscale=False, **SMALL_LAYERS))
    net = _network(vgg19_weights, settings)
    generator = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, 48, 64, generator=generator)
    style = torch.rand(1, 3, 40, 40, generator=generator)
    image = (content + 0.1 * torch.rand(content.shape, generator=generator)).clamp(0, 1)
    plain = optimize.build_objective(net, optimize.ScaleInputs(content, [style]), settings, None)
    white = optimize.ScaleInputs(content, [style], [torch.ones(1, 1, 48, 64)])
    masked = optimize.build_objective(net, white, settings, None)
    _, parts_a, grad_a = plain.value_and_grad(image)
    _, parts_b, grad_b = masked.value_and_grad(image)
    assert float(parts_b["style"]) == pytest.approx(float(parts_a["style"]), rel=1e-4)
    assert float((grad_b - grad_a).abs().mean() / grad_a.abs().mean()) < 1e-3


# -- whole runs ---------------------------------------------------------------------------------------


def _array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


def _stripes(size: int = 64) -> np.ndarray:
    """Thin diagonal red and yellow stripes: fine, high-contrast, warm."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    wave = 0.5 + 0.5 * np.sin((x + y) * np.pi / 3)
    return np.stack([0.6 + 0.4 * wave, wave, 0.1 * wave], axis=-1).astype(np.float32)


def _blotches(size: int = 64, seed: int = 0) -> np.ndarray:
    """Large soft blue and green blotches: coarse, smooth, cool."""
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.random((6, 6)).astype(np.float32)).resize((size, size), Image.BICUBIC)
    blob = np.clip(np.asarray(field, np.float32), 0, 1)
    return np.stack([0.1 * blob, 0.3 + 0.5 * blob, 0.9 - 0.5 * blob], axis=-1).astype(np.float32)


def _sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int = 64) -> float:
    """Between the feature distributions of two 1 x C x H x W maps: random unit directions, the sorted
    projections compared at common quantiles."""
    x, y = (f[0].flatten(1).T for f in (a, b))
    directions = torch.randn(x.shape[1], projections, generator=torch.Generator().manual_seed(0))
    directions /= directions.norm(dim=0)
    quantiles = torch.linspace(0, 1, 256)
    px, py = (torch.quantile(v @ directions, quantiles, dim=0) for v in (x, y))
    return float((px - py).pow(2).mean().sqrt())


def _distance(net: network.VGGFeatures, a: np.ndarray, b: np.ndarray) -> float:
    from nst_core.images import to_tensor

    fa, fb = net(to_tensor(a)), net(to_tensor(b))
    return sum(_sliced_wasserstein(fa[n], fb[n]) for n in fa)


def _column_energy(image: np.ndarray) -> np.ndarray:
    """Per column boundary x | x + 1: the mean squared difference across it, over rows and channels."""
    return np.square(np.diff(image, axis=1)).mean(axis=(0, 2))


WIDTH, HEIGHT, FEATHER = 128, 64, 16


def _seam_ratio(image: np.ndarray) -> float:
    """The largest column energy in the feather's band over the larger of the halves' mean levels."""
    energy = _column_energy(image)
    middle = WIDTH // 2
    band = energy[middle - FEATHER // 2 : middle + FEATHER // 2]
    left, right = energy[8 : middle - FEATHER], energy[middle + FEATHER : WIDTH - 8]
    return float(band.max() / max(left.mean(), right.mean()))


def test_two_styles_on_two_halves_each_half_is_its_own_and_no_seam(vgg19_weights: Path) -> None:
    content = np.full((HEIGHT, WIDTH, 3), 0.5, np.float32) + 0.1 * _array(make_content_image(WIDTH, HEIGHT))
    x = np.arange(WIDTH, dtype=np.float32)
    left = np.clip((WIDTH / 2 + FEATHER / 2 - x) / FEATHER, 0, 1)[None, :].repeat(HEIGHT, 0)[..., None]
    stripes, blotches = _stripes(WIDTH), _blotches(WIDTH)  # at the output's size: matched unscaled
    # Strength 10: within 40 steps the styles, not the flat photo, must set each half's texture.
    chosen = {"size": WIDTH, "iterations": 40, "multiscale": False, "style_loss": "gram", "strength": 10.0}
    options = Options(**chosen, weights=str(vgg19_weights), seed=0)  # type: ignore[arg-type]
    out = nst_core.stylize(content, [stripes, blotches], options, masks=[left, 1 - left])
    judge = network.build_network("vgg19", vgg19_weights, ("relu1_1", "relu2_1"), "max")
    margin = WIDTH // 2 - FEATHER
    left_half, right_half = out[:, :margin], out[:, WIDTH - margin :]
    with torch.no_grad():
        distances = {
            "left-stripes": _distance(judge, left_half, stripes),
            "left-blotches": _distance(judge, left_half, blotches),
            "right-blotches": _distance(judge, right_half, blotches),
            "right-stripes": _distance(judge, right_half, stripes),
        }
    print("sliced Wasserstein", {k: round(v, 4) for k, v in distances.items()})
    # Measured: 0.21 against 0.56 on the left, 0.10 against 0.56 on the right (the styles are 0.58 apart).
    assert distances["left-stripes"] < 0.6 * distances["left-blotches"]
    assert distances["right-blotches"] < 0.6 * distances["right-stripes"]
    ratio = _seam_ratio(out)
    print("seam ratio", round(ratio, 3))
    assert ratio < 1.5  # measured 0.72: the band is calmer than the striped half
    # The measure sees a seam: the same picture with a dark line where the halves meet.
    lined = out.copy()
    lined[:, WIDTH // 2] = 0.0
    assert _seam_ratio(lined) > 1.5


def test_one_style_with_a_mask_keeps_the_photo_outside(vgg19_weights: Path) -> None:
    content = _array(make_content_image(96, 48))
    inside = np.zeros((24, 48, 1), np.float32)  # another size than the content's: resized to it
    inside[:, :16] = 1.0
    options = Options(size=96, iterations=10, multiscale=False, weights=str(vgg19_weights))
    out = nst_core.stylize(content, [_array(make_style_image(48, 48))], options, masks=[inside])
    change = np.abs(out - content).mean(axis=(0, 2))
    assert change[:24].mean() > 5 * change[-24:].mean()


def test_black_masks_leave_only_the_content_loss(vgg19_weights: Path) -> None:
    reports: list[optimize.Progress] = []
    options = Options(size=48, iterations=2, multiscale=False, weights=str(vgg19_weights))
    black = np.zeros((8, 8, 1), np.float32)
    content = _array(make_content_image(48, 32))
    nst_core.stylize(content, [_stripes(32)], options, masks=[black], progress=reports.append)
    assert all(r.loss["style"] == 0 for r in reports)


def test_mask_and_style_counts_must_agree(vgg19_weights: Path) -> None:
    options = Options(size=48, iterations=1, weights=str(vgg19_weights))
    content = _array(make_content_image(48, 32))
    with pytest.raises(UsageError, match="2 style image.* but 1 style mask"):
        nst_core.stylize(content, [_stripes(32), _blotches(32)], options, masks=[np.ones((8, 8, 1))])


def test_masked_targets_are_each_styles_own(vgg19_weights: Path) -> None:
    settings = resolve(Options(style_loss="gram", **SMALL_LAYERS), n_styles=2)
    net = _network(vgg19_weights, settings)
    style = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    statistics = optimize.style_statistics(net, style, settings, None)
    own = own_style_targets(statistics, settings)
    for name in settings.style_layers:
        torch.testing.assert_close(own[name].gram, statistics[name][0])  # type: ignore[union-attr]


def test_the_plan_counts_the_regions_memory() -> None:
    from dataclasses import replace

    from nst_core import memory

    settings = resolve(Options(), n_styles=2)
    plain = memory.job_bytes(settings, 512, 512, "cpu")
    masked = memory.job_bytes(replace(settings, masked=True), 512, 512, "cpu")
    assert plain < masked < 1.3 * plain
