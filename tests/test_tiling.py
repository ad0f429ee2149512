"""Tiles split the computation, not the optimisation: exact block features, whole-image statistics
and gradients, the same picture tiled as whole, and a print-size job under a budget (the
out-of-memory fallback to tiles: tests/test_out_of_memory.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_content_image

from nst_core import network, optimize, speed, tiling
from nst_core.options import Options, resolve
from nst_core.plan import build_plan, margin_for

CPU = torch.device("cpu")


@pytest.mark.parametrize("size", [(2048, 1536), (1000, 333), (300, 900), (129, 130), (100, 60)])
def test_blocks_cover_the_image_once_on_the_pooling_grid(size: tuple[int, int]) -> None:
    width, height = size
    tile, margin, grid = 256, 80, 16
    count = np.zeros((height, width), int)
    for block in tiling.plan_blocks(width, height, tile, margin, grid):
        core, padded = block.core, block.padded
        count[core.y0 : core.y1, core.x0 : core.x1] += 1
        assert core.width <= tile and core.height <= tile
        assert padded.x0 % grid == 0 and padded.y0 % grid == 0
        assert padded.x0 == max(0, core.x0 - margin) and padded.x1 == min(width, core.x1 + margin)
        assert padded.y0 == max(0, core.y0 - margin) and padded.y1 == min(height, core.y1 + margin)
    assert (count == 1).all()


def test_the_margin_is_how_far_the_padding_reaches() -> None:
    assert margin_for(resolve(Options(preset="balanced"))) == (40, 8)  # VGG19 up to relu4_2
    assert margin_for(resolve(Options(preset="balanced", style_layers=["relu1_1", "relu5_1"]))) == (80, 16)
    assert margin_for(
        resolve(Options(preset="balanced", style_layers=["relu1_1"], content_layers=["relu1_1"]))
    ) == (
        1,
        1,
    )


def _network(weights: Path, settings) -> network.VGGFeatures:  # noqa: ANN001
    return network.build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling
    )


def test_block_features_are_the_whole_images_and_need_the_whole_margin(vgg19_weights: Path) -> None:
    settings = resolve(Options(preset="balanced"))
    net = _network(vgg19_weights, settings)
    image, _ = speed.synthetic_images(352, 288, CPU)
    with torch.no_grad():
        whole = net(image)
        for margin, exact in ((net.margin, True), (net.margin - 16, False)):
            worst = 0.0
            for block in tiling.plan_blocks(352, 288, 128, margin, net.min_side):
                features = net(block.padded.crop(image))
                for name, factor in net.factors.items():
                    part = block.core_features(features[name], factor)
                    expected = tiling.Window(
                        block.core.x0 // factor,
                        block.core.y0 // factor,
                        block.core.x1 // factor,
                        block.core.y1 // factor,
                    ).crop(whole[name])
                    assert part.shape == expected.shape
                    worst = max(worst, float((part - expected).abs().max() / whole[name].abs().max()))
            assert (worst < 1e-5) is exact, (margin, worst)


def test_style_statistics_in_blocks_are_the_whole_images(vgg19_weights: Path) -> None:
    for kind in ("gram", "w2"):
        settings = resolve(Options(preset="balanced", style_loss=kind))
        net = _network(vgg19_weights, settings)
        _, style = speed.synthetic_images(400, 300, CPU)
        whole = optimize.style_statistics(net, style, settings, None)
        blocks = tiling.style_statistics(net, style, settings.style_layers, kind, 128, None)
        for name in settings.style_layers:
            for a, b in zip(whole[name], blocks[name], strict=True):
                assert float((a - b).abs().max() / a.abs().max()) < 1e-5


# Tolerances of a tiled evaluation against the whole one, relative (gradients: the mean absolute
# difference over the mean magnitude). Gram's is rounding; W2's gradient goes through the inverse
# square roots of small eigenvalues, which magnify the rounding of sums taken in another order.
TOLERANCES = {"gram": (1e-5, 1e-5), "w2": (1e-5, 1e-3)}


@pytest.mark.parametrize("kind", ["gram", "w2"])
def test_tiled_loss_and_gradient_are_the_whole_images(kind: str, vgg19_weights: Path) -> None:
    settings = resolve(Options(preset="balanced", style_loss=kind, multiscale=False))
    net = _network(vgg19_weights, settings)
    content, style = speed.synthetic_images(400, 368, CPU)
    image = (content + 0.1 * torch.rand(content.shape, generator=torch.Generator().manual_seed(0))).clamp(
        0, 1
    )
    inputs = optimize.ScaleInputs(content, [style])
    total, parts, grad = optimize.build_objective(net, inputs, settings, None).value_and_grad(image)
    tiled = optimize.build_objective(net, inputs, settings, None, tile=160)
    assert len(tiled.blocks) == 9
    passes: list[int] = []
    hook = net.register_forward_hook(lambda *_: passes.append(1))
    tiled_total, tiled_parts, tiled_grad = tiled.value_and_grad(image)
    hook.remove()
    # Two passes a block (the statistics, then one kept for autograd), but the last block's first is kept.
    assert len(passes) == 2 * len(tiled.blocks) - 1
    loss_tolerance, grad_tolerance = TOLERANCES[kind]
    for name in ("content", "style", "tv"):
        assert float(tiled_parts[name]) == pytest.approx(float(parts[name]), rel=loss_tolerance)
    assert float(tiled_total) == pytest.approx(float(total), rel=loss_tolerance)
    assert float((tiled_grad - grad).abs().mean() / grad.abs().mean()) < grad_tolerance


def test_a_job_forced_into_tiles_paints_the_whole_jobs_picture(vgg19_weights: Path) -> None:
    """The same single-scale job whole and in 2 x 2 blocks. For a few iterations the pictures agree to
    rounding (Gram). Over 20 the optimisation magnifies any rounding: the network's gradient is only
    piecewise smooth (ReLU, max pooling), so the whole job itself, its content moved by 1e-6, ends
    several /255 away from its unmoved self. So the tiled job may drift as far as that, and no
    further. The loss of the whole job never rises on the way. (That `--max-memory` forces the tiles:
    tests/test_plan.py.)"""
    import dataclasses

    from nst_core.run import run_plan

    content = np.asarray(make_content_image(256, 192), np.float32) / 255
    _, style_tensor = speed.synthetic_images(192, 192, CPU)
    style = style_tensor[0].permute(1, 2, 0).numpy()
    nudged = np.clip(content + np.random.default_rng(0).uniform(-1e-6, 1e-6, content.shape), 0, 1)

    def paint(
        iterations: int, tile: int | None, picture: np.ndarray = content, style_loss: str = "w2"
    ) -> tuple[np.ndarray, set[int], list[float]]:
        chosen = {"size": 256, "iterations": iterations, "multiscale": False, "style_loss": style_loss}
        options = Options(**chosen, weights=str(vgg19_weights))  # type: ignore[arg-type]
        plan = build_plan(resolve(options), (256, 192), CPU, vgg19_weights, 1 << 40)
        scale = dataclasses.replace(plan.scales[0], tile=tile)
        seen: set[int] = set()
        losses: list[float] = []

        def heard(report: optimize.Progress) -> None:
            seen.add(report.tiles)
            losses.append(report.loss["total"])

        result = run_plan(dataclasses.replace(plan, scales=(scale,)), picture, [style], heard)
        return result, seen, losses

    # Gram: at this size W2's deepest layer has fewer positions than channels, where the whole image
    # takes another (cheaper, equal) form of the loss than blocks can.
    whole, tiled = paint(3, None, style_loss="gram")[0], paint(3, 128, style_loss="gram")
    assert tiled[1] == {4}  # 2 x 2 blocks
    assert np.abs(whole - content).mean() > 0.01  # the job changed the picture
    assert np.abs(tiled[0] - whole).max() < 1e-3 / 255
    whole, _, losses = paint(20, None)
    assert len(losses) == 20 and all(b <= a for a, b in zip(losses, losses[1:], strict=False)), losses
    drift = np.abs(paint(20, None, nudged.astype(np.float32))[0] - whole).mean()
    assert np.abs(paint(20, 128)[0] - whole).mean() <= drift


BIG_JOB = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[3])
    import numpy as np
    from samples import make_content_image, make_style_image
    from nst_core import network
    from nst_core.options import Options
    from nst_core.run import stylize

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    options = Options(**json.loads(sys.argv[2]))
    network.load_features("vgg19", options.weights)  # the fixed cost: torch and the weights
    fixed = rss("VmRSS:")
    content = np.asarray(make_content_image(2048, 1536), np.float32) / 255
    style = np.asarray(make_style_image(256, 256), np.float32) / 255
    out = stylize(content, [style], options)
    np.save(sys.argv[1], out)
    print(json.dumps({"fixed": fixed, "peak": rss("VmHWM:")}))
    """
)

BUDGET_MIB = 2048


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc")
def test_print_size_job_stays_under_the_budget_without_seams(vgg19_weights: Path, tmp_path: Path) -> None:
    options = {
        "size": 2048,
        "iterations": 2,
        "multiscale": False,
        "max_memory": BUDGET_MIB,
        "device": "cpu",
        "style_layers": ["relu1_1"],
        "content_layers": ["relu1_1"],
        "weights": str(vgg19_weights),
        # Plain gradient steps of fixed length: every block really moves, so a seam would show.
        "optimizer": "gd",
        "learning_rate": 0.05,
    }
    out_path = tmp_path / "out.npy"
    tests_dir = str(Path(__file__).parent)
    done = subprocess.run(
        [sys.executable, "-c", BIG_JOB, str(out_path), json.dumps(options), tests_dir],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    usage = json.loads(done.stdout.splitlines()[-1])
    assert usage["peak"] <= usage["fixed"] + BUDGET_MIB * 2**20, usage

    out = np.load(out_path)
    assert out.shape == (1536, 2048, 3) and np.isfinite(out).all()
    content = np.asarray(make_content_image(2048, 1536), np.float32) / 255
    assert np.abs(out - content).mean() > 0.005  # the tiles changed the picture
    plan = build_plan(
        resolve(Options(**options)), (2048, 1536), torch.device("cpu"), vgg19_weights, BUDGET_MIB << 20
    )
    (scale,) = plan.scales
    assert scale.tile is not None  # the job really was tiled
    margin, grid = margin_for(resolve(Options(**options)))
    _assert_no_seams(out, content, [b.core for b in tiling.plan_blocks(2048, 1536, scale.tile, margin, grid)])


def _edges_and_inside(image: np.ndarray, tiles: list[tiling.Window]) -> tuple[float, float]:
    """Mean gradient magnitude on the tiles' inner edges, and over the whole image."""
    gray = image.mean(axis=2)
    gx = np.abs(np.diff(gray, axis=1))
    gy = np.abs(np.diff(gray, axis=0))
    cols = sorted({t.x0 for t in tiles if t.x0 > 0} | {t.x1 for t in tiles if t.x1 < gray.shape[1]})
    rows = sorted({t.y0 for t in tiles if t.y0 > 0} | {t.y1 for t in tiles if t.y1 < gray.shape[0]})
    assert cols and rows
    edge = np.mean([gx[:, c - 2 : c + 1].mean() for c in cols] + [gy[r - 2 : r + 1].mean() for r in rows])
    return float(edge), float((gx.mean() + gy.mean()) / 2)


def _assert_no_seams(image: np.ndarray, content: np.ndarray, tiles: list[tiling.Window]) -> None:
    """The tiles' inner edges are no sharper in the picture than the whole picture, beyond what the
    content itself has on those lines: the sample photo has shapes on its quarter lines, where a
    layout of 20 tiles cuts (edges 1.43 times its mean), and its picture measured 1.58 without a seam;
    blocks without their margin made seams of 41 to 46 times the mean."""
    edge, inside = _edges_and_inside(image, tiles)
    content_edge, content_inside = _edges_and_inside(content, tiles)
    allowed = inside * max(1.0, content_edge / content_inside) * 1.15 + 1e-4
    assert edge <= allowed, (edge, inside, content_edge, content_inside)
