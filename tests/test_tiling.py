"""Tiles: geometry, feathered pasting, and a print-size job under a budget (the out-of-memory fallback
to tiles: tests/test_out_of_memory.py)."""

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

from nst_core import tiling
from nst_core.options import Options, resolve
from nst_core.plan import build_plan


def _coverage(width: int, height: int, tiles: list[tiling.Tile]) -> np.ndarray:
    count = np.zeros((height, width), int)
    for t in tiles:
        count[t.y0 : t.y1, t.x0 : t.x1] += 1
    return count


@pytest.mark.parametrize("size", [(2048, 1536), (1000, 333), (300, 900), (129, 130)])
def test_tiles_cover_the_image_and_overlap(size: tuple[int, int]) -> None:
    width, height = size
    tile, overlap = 256, tiling.overlap_for(256)
    for pass_index in (0, 1):
        tiles = tiling.plan_tiles(width, height, tile, overlap, pass_index)
        assert _coverage(width, height, tiles).min() >= 1
        assert all(t.width <= tile and t.height <= tile for t in tiles)
        row = sorted({(t.x0, t.x1) for t in tiles})
        for left, right in zip(row, row[1:], strict=False):
            assert left[1] - right[0] >= overlap  # neighbours share at least the overlap
            assert right[1] - right[0] > overlap


def test_second_pass_moves_the_borders() -> None:
    first = {t.x0 for t in tiling.plan_tiles(2048, 1536, 512, 128, 0)} - {0}
    second = {t.x0 for t in tiling.plan_tiles(2048, 1536, 512, 128, 1)} - {0}
    assert first and second and not first & second


def test_feather_mask_is_one_at_image_edges_and_fades_inside() -> None:
    width, height, overlap = 600, 400, 64
    tiles = tiling.plan_tiles(width, height, 256, overlap)
    corner = next(t for t in tiles if t.x0 == 0 and t.y0 == 0)
    mask = tiling.feather_mask(corner, width, height, overlap)
    assert mask[0, 0] == 1 and mask[0, :-overlap].min() == 1  # image border side: no fade
    assert mask[0, -1] < 0.01 and mask[-1, 0] < 0.01  # inner sides fade to nearly zero
    assert np.all(np.diff(mask[0, -overlap:]) < 0)  # and monotonically


def test_paste_is_continuous_at_inner_edges() -> None:
    width, height, overlap = 300, 200, 40
    canvas = torch.zeros(1, 3, height, width)
    tile = tiling.plan_tiles(width, height, 128, overlap)[0]
    mask = torch.from_numpy(tiling.feather_mask(tile, width, height, overlap))
    tiling.paste(canvas, torch.ones(1, 3, tile.height, tile.width), tile, mask)
    step = (canvas[..., :, 1:] - canvas[..., :, :-1]).abs().max()
    assert canvas[0, 0, 0, 0] == 1
    assert step < 2.5 / overlap  # a ramp, never a jump


def test_partition_covers_once() -> None:
    for length, tile in ((1000, 256), (256, 256), (5, 256), (1025, 512)):
        pieces = tiling.partition(length, tile)
        assert pieces[0][0] == 0 and pieces[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:], strict=False))
        assert all(0 < end - start <= tile for start, end in pieces)


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
        # Plain gradient steps of fixed length: every tile really moves, so a seam would show.
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
    _assert_no_seams(out, tiling.plan_tiles(2048, 1536, scale.tile, tiling.overlap_for(scale.tile)))


def _assert_no_seams(image: np.ndarray, tiles: list[tiling.Tile]) -> None:
    """Mean gradient magnitude on the tiles' inner edges is not above the image's overall."""
    gray = image.mean(axis=2)
    gx = np.abs(np.diff(gray, axis=1))
    gy = np.abs(np.diff(gray, axis=0))
    cols = sorted({t.x0 for t in tiles if t.x0 > 0} | {t.x1 for t in tiles if t.x1 < gray.shape[1]})
    rows = sorted({t.y0 for t in tiles if t.y0 > 0} | {t.y1 for t in tiles if t.y1 < gray.shape[0]})
    assert cols and rows
    edge = np.mean([gx[:, c - 2 : c + 1].mean() for c in cols] + [gy[r - 2 : r + 1].mean() for r in rows])
    inside = (gx.mean() + gy.mean()) / 2
    assert edge <= inside * 1.15 + 1e-4, (edge, inside)
