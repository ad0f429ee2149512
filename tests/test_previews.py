"""A warm engine's previews (nst_core/previews.py): one after a change of weights runs only its top scale,
from the last preview of the same picture; the same settings again are the last preview; anything else,
and every job that is no preview, paints from scratch."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_content_image, make_style_image
from test_style_cache import pixels

from nst_core import balance, objective, optimize, previews, stylecache
from nst_core.options import Options, resolve
from nst_core.run import Watch, stylize
from nst_core.stylecache import StyleCache

CONTENT = pixels(make_content_image(182, 120))
STYLE = pixels(make_style_image(64, 64))
# Two scales (129 and 182 px), fixed weights: the mechanics, not the balance.
BASE = {"size": 182, "iterations": 6, "device": "cpu", "seed": 3, "content_target": 0.0}


def preview(weights: Path, cache: StyleCache, is_preview: bool = True, style=STYLE, watch=None, **fields):
    """The result and the (scale, iteration) of each progress report."""
    steps: list[tuple[int, int]] = []
    options = Options(**{**BASE, "weights": str(weights), **fields})
    result = stylize(
        CONTENT,
        [style],
        options,
        style_cache=cache,
        preview=is_preview,
        progress=lambda p: steps.append((p.scale, p.iteration)),
        watch=watch,
    )
    return result, steps


def test_a_preview_after_a_change_of_strength_runs_its_top_scale_only(vgg19_weights) -> None:
    cache = StyleCache()
    first, steps = preview(vgg19_weights, cache, content_target=None)  # the preset's balance
    assert {scale for scale, _ in steps} == {1, 2}
    top = max(iteration for scale, iteration in steps if scale == 2)
    second, steps = preview(vgg19_weights, cache, content_target=None, strength=0.5)
    assert [scale for scale, _ in steps] == [2] * top and steps[-1] == (2, top)
    assert np.abs(second - first).mean() > 1e-3  # moved to the new weights
    third, steps = preview(vgg19_weights, cache, content_target=None, strength=2.0, tv_weight=0.0)
    assert [scale for scale, _ in steps] == [2] * top and np.abs(third - second).mean() > 1e-3


def test_a_followed_preview_starts_from_the_curvature_the_last_one_left(vgg19_weights, monkeypatch) -> None:
    """Its L-BFGS takes the last preview's newest pairs (a first step that knows the loss), and it runs
    fewer iterations than its scale's own."""
    kept: list[optimize.Curvature | None] = []
    keep = previews.keep
    monkeypatch.setattr(previews, "keep", lambda *args: (kept.append(args[-1]), keep(*args)))
    fields = {"iterations": 30, "content_target": None}  # the top scale's own iterations: more than 4
    cache = StyleCache()
    preview(vgg19_weights, cache, **fields)
    followed, steps = preview(vgg19_weights, cache, strength=2.0, **fields)
    assert [scale for scale, _ in steps] == [2] * previews.FOLLOW_ITERATIONS
    assert all(c is not None and 0 < len(c.pairs) <= balance.CARRIED_PAIRS for c in kept)
    # The same two previews when no curvature is left to carry (Adam leaves none): another picture,
    # from the top scale's own iterations.
    monkeypatch.setattr(optimize.Stepper, "curvature", lambda self, newest: None)
    cache = StyleCache()
    preview(vgg19_weights, cache, **fields)
    unaware, steps = preview(vgg19_weights, cache, strength=2.0, **fields)
    assert np.abs(followed - unaware).mean() > 1e-3 and len(steps) > previews.FOLLOW_ITERATIONS


def test_a_followed_preview_reads_the_content_features_kept_from_the_last(vgg19_weights, monkeypatch) -> None:
    """Its top scale's content targets are the last preview's; a job that is no preview keeps none."""
    computed: list[tuple[int, ...]] = []
    features = objective.content_features

    def counted(terms, content, layers):
        computed.append(tuple(content.shape[-2:]))
        return features(terms, content, layers)

    monkeypatch.setattr(objective, "content_features", counted)
    monkeypatch.setattr(optimize, "content_features", counted)
    cache = StyleCache()
    preview(vgg19_weights, cache)
    assert len(computed) == 2  # one per scale
    preview(vgg19_weights, cache, strength=0.5)
    assert len(computed) == 2
    preview(vgg19_weights, cache, is_preview=False, strength=0.5)
    preview(vgg19_weights, cache, is_preview=False, strength=0.25)
    assert len(computed) == 6  # each scale of each, every time


def test_a_preview_hashes_its_content_once(vgg19_weights, monkeypatch) -> None:
    """The picture's name serves the kept features, the balance's trials and the preview's key alike;
    a job with none of them (no preview, fixed weights: a 12 MP layer took 0.15 s) hashes nothing."""
    hashed: list[tuple[int, ...]] = []
    digest = stylecache.pixels_digest
    monkeypatch.setattr(stylecache, "pixels_digest", lambda a: (hashed.append(a.shape), digest(a))[1])
    preview(vgg19_weights, StyleCache(), content_target=None)  # the balance's trials are looked up
    assert hashed.count(CONTENT.shape[:2] + (3,)) == 1
    preview(vgg19_weights, StyleCache(), is_preview=False)  # BASE: fixed weights
    assert hashed.count(CONTENT.shape[:2] + (3,)) == 1


def test_the_same_preview_again_is_the_last_one_without_an_iteration(vgg19_weights) -> None:
    cache = StyleCache()
    first, _ = preview(vgg19_weights, cache)
    again, steps = preview(vgg19_weights, cache)
    assert steps == [] and np.array_equal(first, again)


@pytest.mark.parametrize(
    "change",
    [{"style": pixels(make_style_image(64, 64, seed=2))}, {"seed": 4}, {"keep_colors": "luminance"}],
    ids=["style", "seed", "keep_colors"],
)
def test_a_preview_of_another_style_or_setting_paints_from_scratch(vgg19_weights, change) -> None:
    cache = StyleCache()
    preview(vgg19_weights, cache)
    _, steps = preview(vgg19_weights, cache, strength=0.5, **change)
    assert steps[0] == (1, 1)


def test_a_job_that_is_no_preview_neither_follows_nor_is_kept(vgg19_weights) -> None:
    cache = StyleCache()
    plain, _ = preview(vgg19_weights, StyleCache(), is_preview=False, strength=0.5)
    preview(vgg19_weights, cache, is_preview=False)
    second, steps = preview(vgg19_weights, cache, is_preview=False, strength=0.5)
    assert steps[0] == (1, 1) and np.array_equal(plain, second)  # as if nothing had run before
    _, steps = preview(vgg19_weights, cache, strength=2.0)  # the first preview: nothing to follow
    assert steps[0] == (1, 1)


def test_a_preview_stopped_early_is_not_followed(vgg19_weights) -> None:
    cache = StyleCache()
    stop = threading.Event()
    stop.set()  # the run ends after its first iteration and keeps that picture
    watch = Watch(stop=stop)
    preview(vgg19_weights, cache, watch=watch)
    assert watch.stopped
    _, steps = preview(vgg19_weights, cache, strength=0.5)
    assert steps[0] == (1, 1)


def kept_way(strength: float, then: float, **fields) -> previews.Follow | None:
    """The way from a kept preview at strength `then` to one at `strength` (the preset's balance)."""
    cached = optimize.CachedStyles(StyleCache().scoped("net"), ("style",))
    image = torch.full((1, 3, 4, 4), 0.8)
    previews.keep(cached, "picture", image, resolve(Options(strength=then)), None)
    settings = resolve(Options(strength=strength, **fields))
    return previews.follow(cached, "picture", settings, [(1.0, 0.5), (10.0, 0.9)])


def test_less_style_than_the_last_preview_starts_part_of_the_way_back() -> None:
    less = kept_way(0.5, 1.0)
    assert less is not None and not less.same
    before, after = (resolve(Options(strength=s)).effective_content_target for s in (1.0, 0.5))
    assert less.share == pytest.approx((after / before) ** balance.EASE_BACK) and 0 < less.share < 1
    photo = torch.zeros(1, 3, 4, 4)  # the start is the photo (`init` content), here black
    start = previews.start(replace(less, settings=replace(less.settings, init="content")), photo, None)
    assert torch.allclose(start, torch.full_like(photo, 0.8 * less.share))
    more = kept_way(2.0, 1.0)
    assert more is not None and more.share == 1.0 and previews.start(more, photo, None) is more.kept.image
    assert more.settings.strength == 1.0 and more.settings.style_weight != less.settings.style_weight
    none = kept_way(0.0, 1.0)
    assert none is not None and none.share == 0.0  # no style: the photo's start
    same = kept_way(1.0, 1.0)
    assert same is not None and same.same
