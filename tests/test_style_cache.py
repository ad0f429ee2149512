"""The warm engine's cache of style targets (nst_core/stylecache.py): kept on a repeat, computed anew
when the style's pixels or a setting that shapes its targets changes, kept when only the content or
the loss weights change, bounded in bytes, and the same pictures with it as without."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from samples import make_content_image, make_random_vgg_weights, make_style_image
from skimage import data

from nst_core import balance, network
from nst_core.options import Options
from nst_core.paintings import FOLDER as PAINTINGS_FOLDER
from nst_core.run import stylize
from nst_core.stylecache import StyleCache


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


CONTENT = pixels(make_content_image(48, 40))
STYLE = pixels(make_style_image(40, 40))
BASE = {"size": 48, "iterations": 2, "device": "cpu", "seed": 3}


@pytest.fixture(scope="module")
def other_vgg19(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_vgg_weights(tmp_path_factory.mktemp("weights") / "vgg19-other.pth", "vgg19", seed=7)


def run(weights: Path, cache: StyleCache | None, content=CONTENT, style=STYLE, masks=None, **fields):
    options = Options(**{**BASE, "weights": str(weights), **fields})
    return stylize(content, [style], options, style_cache=cache, masks=masks)


def test_a_repeat_computes_no_target_and_paints_the_same_picture(vgg19_weights) -> None:
    cache = StyleCache()
    plain = run(vgg19_weights, None)
    first = run(vgg19_weights, cache)
    computed = cache.computed
    assert computed >= 1 and cache.hits == 0
    again = run(vgg19_weights, cache)
    assert cache.computed == computed and cache.hits == computed  # one target set per scale, all kept
    assert np.array_equal(plain, first) and np.array_equal(plain, again)


def test_masked_styles_are_kept_and_paint_the_same_picture(vgg19_weights) -> None:
    cache = StyleCache()
    mask = np.zeros((40, 48, 1), np.float32)
    mask[:, :24] = 1
    plain = run(vgg19_weights, None, masks=[mask])
    run(vgg19_weights, cache, masks=[mask])
    computed = cache.computed
    again = run(vgg19_weights, cache, masks=[mask])
    assert cache.computed == computed and np.array_equal(plain, again)


def other_style() -> np.ndarray:
    return pixels(make_style_image(40, 40, seed=2))


def half_mask() -> list[np.ndarray]:
    mask = np.ones((40, 48, 1), np.float32)
    mask[:20] = 0.5
    return [mask]


# Each kind of change that shapes the style's targets, as the run's keyword arguments.
SHAPING = {
    "style pixels": lambda w: {"style": other_style()},
    "style scale": lambda w: {"style_scale": 0.5},
    "style layers": lambda w: {"style_layers": ["relu1_1", "relu3_1"]},
    "pooling": lambda w: {"pooling": "avg"},
    "style loss": lambda w: {"style_loss": "gram"},
    "weights file": lambda w: {"weights": w["other"]},
    "model": lambda w: {"model": "vgg16", "weights": w["vgg16"], "style_layers": ["relu1_1", "relu3_1"]},
    "keep colors": lambda w: {"keep_colors": "histogram"},
    "style masks": lambda w: {"masks": half_mask()},
    "precision": lambda w: {"precision": "bf16"},
}


@pytest.mark.parametrize("change", sorted(SHAPING))
def test_a_change_that_shapes_the_targets_computes_them_anew(
    change, vgg19_weights, vgg16_weights, other_vgg19, monkeypatch
) -> None:
    # bf16 on any CPU when asked for, and fp32 by default (as on a CPU without AMX): the targets' dtype
    # is what counts here, not the speed of the instructions.
    monkeypatch.setattr(network, "_cpu_has_bf16", lambda: True)
    monkeypatch.setattr(network, "_cpu_has_amx", lambda: False)
    changed = SHAPING[change]({"other": str(other_vgg19), "vgg16": str(vgg16_weights)})
    weights = changed.pop("weights", vgg19_weights)
    cache = StyleCache()
    run(vgg19_weights, cache, style_loss="w2")
    computed = cache.computed
    run(Path(weights), cache, **{"style_loss": "w2", **changed})
    assert cache.computed > computed and cache.hits == 0


# Changes that leave the style's targets as they were: the next run computes none.
KEEPING = {
    "content pixels": {"content": pixels(make_content_image(48, 40).rotate(180))},
    "strength": {"strength": 3.0},
    "content weight": {"content_weight": 5.0},
    "tv weight": {"tv_weight": 0.5},
    "seed": {"seed": 9},
}


@pytest.mark.parametrize("change", sorted(KEEPING))
def test_a_change_of_content_or_loss_weights_keeps_the_targets(change, vgg19_weights) -> None:
    cache = StyleCache()
    run(vgg19_weights, cache)
    computed = cache.computed
    run(vgg19_weights, cache, **KEEPING[change])
    assert cache.computed == computed and cache.hits == computed


def test_the_cache_keeps_to_its_byte_budget_dropping_the_least_recently_used() -> None:
    cache = StyleCache(budget=3 * 400)
    block = lambda: torch.zeros(100)  # noqa: E731 (400 bytes)
    for key in "abc":
        cache.get(key, block)
    cache.get("a", block)  # used again: "b" is now the oldest
    cache.get("d", block)
    assert cache.held <= cache.budget and len(cache) == 3
    computed = cache.computed
    cache.get("a", block)
    cache.get("b", block)
    assert cache.computed == computed + 1  # "a" was kept, "b" had to go
    cache.get("huge", lambda: torch.zeros(1000))
    assert cache.held <= cache.budget  # a value larger than the budget is computed but never kept


def test_the_cache_keeps_to_its_count_of_entries_too() -> None:
    cache = StyleCache(max_entries=2)  # values without tensors (the balance's trials) weigh no bytes
    for key in "abc":
        cache.get(key, list)
    assert len(cache) == 2 and cache.computed == 3
    cache.get("a", list)
    assert cache.computed == 4  # "a" was the oldest and had to go


def balance_trials(
    weights: Path, cache: StyleCache | None, monkeypatch, content, strength=1.0
) -> list[float]:
    """The content errors of the balance's runs of the first scale in one preview-sized job on real
    features (random ones give no smooth curve of error against weight to remember)."""
    measured: list[float] = []
    real = balance.content_error
    # A first weight far from the balance's: the cold job must step (the preset's may hit at once).
    options = Options(size=182, iterations=12, device="cpu", seed=3, model="vgg16", weights=str(weights))
    options = replace(options, style_weight=40.0, content_target=0.5)
    with monkeypatch.context() as patch:
        patch.setattr(balance, "content_error", lambda *a: measured.append(real(*a)) or measured[-1])
        stylize(content, [PAINTING], replace(options, strength=strength), style_cache=cache)
    return measured


PHOTO = data.astronaut().astype(np.float32) / 255
PAINTING = (
    np.asarray(Image.open(PAINTINGS_FOLDER / "starry_night.jpg").convert("RGB"), np.float32)[:256, :256] / 255
)


def test_a_warm_engine_remembers_the_balance_for_the_next_preview(real_vgg16_weights, monkeypatch) -> None:
    """The balance's trials depend on the picture, the style and the settings, not on the target: a
    warm engine keeps them, so the next job of the same picture (the dialog's next preview), at the same
    or another strength, starts where they point; another picture starts afresh."""
    target = 0.5  # the preset's, at strength 1
    cold = balance_trials(real_vgg16_weights, None, monkeypatch, PHOTO)
    assert len(cold) > 1  # the first weight missed the target, a secant step followed
    cache = StyleCache()
    assert balance_trials(real_vgg16_weights, cache, monkeypatch, PHOTO) == cold
    again = balance_trials(real_vgg16_weights, cache, monkeypatch, PHOTO)
    assert len(again) == 1 and abs(math.log(again[0] / target)) < abs(math.log(cold[-1] / target))
    assert len(balance_trials(real_vgg16_weights, cache, monkeypatch, PHOTO, strength=0.7)) == 1
    other = PHOTO[::-1].copy()
    cold_other = balance_trials(real_vgg16_weights, None, monkeypatch, other)
    assert balance_trials(real_vgg16_weights, cache, monkeypatch, other) == cold_other
