"""The public API end to end on tiny images with random-weight networks (CPU).

Random weights only say that the machinery works (losses fall, bytes repeat, alpha and
colours are handled); they say nothing about how good a picture looks.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_content_image, make_style_image

import nst_core
from nst_core import balance, colors, devices, optimize
from nst_core.errors import Cancelled, ImageError, UsageError, WeightsError
from nst_core.options import Options, resolve
from nst_core.plan import scale_sizes, split_iterations
from nst_core.presets import PRESETS
from nst_core.run import FrameStart


def _array(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32) / 255


@pytest.fixture(scope="module")
def content() -> np.ndarray:
    return _array(make_content_image(64, 48))


@pytest.fixture(scope="module")
def style() -> np.ndarray:
    return _array(make_style_image(48, 48))


def _options(weights: Path, **fields) -> Options:
    return Options(**{"size": 64, "iterations": 2, "weights": str(weights), **fields})


class Recorder:
    def __init__(self) -> None:
        self.reports: list[optimize.Progress] = []

    def __call__(self, report: optimize.Progress) -> None:
        self.reports.append(report)


def test_style_loss_falls_and_content_stays(vgg19_weights: Path) -> None:
    content = _array(make_content_image(96, 72))
    style = _array(make_style_image(64, 64))
    recorder = Recorder()
    out = nst_core.stylize(
        content,
        [style],
        _options(vgg19_weights, size=96, iterations=20, multiscale=False),
        progress=recorder,
    )
    first, last = recorder.reports[0].loss, recorder.reports[-1].loss
    assert last["style"] <= 0.5 * first["style"]
    settings_content_weight = PRESETS["balanced"].content_weight
    assert last["content"] / settings_content_weight < 0.6  # relative error of the content features
    assert out.shape == content.shape
    assert np.abs(colors.luma(out) - colors.luma(content)).mean() < 0.15


@pytest.mark.parametrize("init", ["style-colors", "content"])
def test_the_presets_start_from_the_photo_in_the_styles_colours(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray, init: str
) -> None:
    """Two iterations barely move a picture: what it starts from shows in the result's colours."""
    night = style * np.array([0.1, 0.15, 0.4], np.float32)  # dark blue
    options = _options(vgg19_weights, init=None if init == "style-colors" else init)
    out = nst_core.stylize(content, [night], options)
    mean = out.reshape(-1, 3).mean(0)
    nearer_style = (
        np.abs(mean - night.reshape(-1, 3).mean(0)).sum()
        < np.abs(mean - content.reshape(-1, 3).mean(0)).sum()
    )
    assert nearer_style == (init == "style-colors")


def test_same_seed_same_bytes(vgg19_weights: Path, content: np.ndarray, style: np.ndarray) -> None:
    options = _options(vgg19_weights, init="noise", seed=7, iterations=3)
    first = nst_core.stylize(content, [style], options)
    second = nst_core.stylize(content, [style], options)
    assert first.tobytes() == second.tobytes()
    other = nst_core.stylize(content, [style], _options(vgg19_weights, init="noise", seed=8, iterations=3))
    assert other.tobytes() != first.tobytes()


def test_alpha_is_exact_and_transparent_colour_does_not_bleed(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    height, width = content.shape[:2]
    alpha = np.ones((height, width), np.float32)
    alpha[:, width // 2 :] = 0.0
    alpha[: height // 4, : width // 2] = 0.5
    rgba = np.concatenate([content, alpha[..., None]], axis=2)
    red, green = rgba.copy(), rgba.copy()
    red[alpha == 0, :3] = (1.0, 0.0, 0.0)
    green[alpha == 0, :3] = (0.0, 1.0, 0.0)
    options = _options(vgg19_weights)
    out_red = nst_core.stylize(red, [style], options)
    out_green = nst_core.stylize(green, [style], options)
    assert out_red.shape == rgba.shape
    assert np.array_equal(out_red[..., 3], alpha)
    visible = alpha > 0
    np.testing.assert_array_equal(out_red[visible], out_green[visible])


def test_keep_luminance_colours_holds_content_chroma(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    out = nst_core.stylize(content, [style], _options(vgg19_weights, keep_colors="luminance", iterations=4))
    chroma_out = colors.rgb_to_ycbcr(out)[..., 1:]
    chroma_in = colors.rgb_to_ycbcr(content)[..., 1:]
    # Only clipping to [0, 1] may move the chroma.
    assert np.abs(chroma_out - chroma_in).mean() < 0.02
    plain = nst_core.stylize(content, [style], _options(vgg19_weights, iterations=4))
    plain_shift = np.abs(colors.rgb_to_ycbcr(plain)[..., 1:] - chroma_in).mean()
    assert plain_shift > np.abs(chroma_out - chroma_in).mean()


def test_histogram_colours_run(vgg19_weights: Path, content: np.ndarray, style: np.ndarray) -> None:
    out = nst_core.stylize(content, [style], _options(vgg19_weights, keep_colors="histogram"))
    assert out.shape == content.shape and out.dtype == np.float32


def test_blend_with_zero_weight_equals_the_single_style(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    other = _array(make_style_image(40, 56, seed=5))
    single = nst_core.stylize(content, [style], _options(vgg19_weights, iterations=4))
    only_first = _options(vgg19_weights, iterations=4, style_blend=[1.0, 0.0])
    np.testing.assert_allclose(nst_core.stylize(content, [style, other], only_first), single, atol=1e-5)
    both = _options(vgg19_weights, iterations=4, style_blend=[1.0, 1.0])
    mixed = nst_core.stylize(content, [style, other], both)
    assert np.abs(mixed - single).max() > 1e-3


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs(
    preset: str, vgg19_weights: Path, vgg16_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    weights = vgg16_weights if PRESETS[preset].model == "vgg16" else vgg19_weights
    recorder = Recorder()
    options = Options(preset=preset, size=48, iterations=2, weights=str(weights))
    out = nst_core.stylize(content, [style], options, progress=recorder)
    assert out.shape == content.shape
    assert np.isfinite(out).all() and 0.0 <= out.min() and out.max() <= 1.0
    assert len(recorder.reports) >= 2
    assert all(np.isfinite(r.loss["total"]) for r in recorder.reports)


def test_cancel_from_another_thread_stops_within_one_iteration(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def progress(report: optimize.Progress) -> None:
        seen.append(report.iteration)
        if len(seen) == 1:
            canceller = threading.Thread(target=cancel.set)
            canceller.start()
            canceller.join()

    with pytest.raises(Cancelled):
        nst_core.stylize(
            content, [style], _options(vgg19_weights, iterations=50), progress=progress, cancel=cancel
        )
    assert seen == [1]


def test_progress_reports(vgg19_weights: Path, style: np.ndarray) -> None:
    content = _array(make_content_image(182, 136))
    options = _options(vgg19_weights, size=182, iterations=3, multiscale=True, content_target=0.0)
    plan = nst_core.make_plan(options, (182, 136))
    assert [(s.width, s.height, s.iterations) for s in plan.scales] == [(129, 96, 2), (182, 136, 1)]
    recorder = Recorder()
    nst_core.stylize(content, [style], options, progress=recorder)
    reports = recorder.reports
    assert [(r.scale, r.scales, r.iteration, r.iterations) for r in reports] == [
        (1, 2, 1, 2),
        (1, 2, 2, 2),
        (2, 2, 1, 1),
    ]
    fractions = [r.fraction for r in reports]
    assert 0 < fractions[0] < fractions[1] < fractions[2] == pytest.approx(1.0)
    assert all(r.elapsed >= 0 and r.eta >= 0 for r in reports)
    assert reports[-1].eta == pytest.approx(0.0, abs=1e-6)
    assert all(set(r.loss) == {"total", "content", "style", "tv"} for r in reports)
    assert all(isinstance(v, float) for r in reports for v in r.loss.values())
    assert [r.preview is not None for r in reports] == [False, True, True]
    assert reports[1].preview.shape == (96, 129, 3) and reports[2].preview.shape == (136, 182, 3)


def test_a_cpu_job_looks_at_other_programs_load_as_it_starts_and_again_between_its_steps(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    looks: list[int] = []
    monkeypatch.setattr(devices, "LOOK_AGAIN_SECONDS", 0.0)  # every step is due a look
    monkeypatch.setattr(devices, "use_idle_cores", lambda: looks.append(torch.get_num_threads()))
    options = _options(vgg19_weights, iterations=3, multiscale=False, content_target=0.0, device="cpu")
    nst_core.stylize(content, [style], options)
    assert len(looks) == 1 + 3


def test_scale_schedule() -> None:
    assert scale_sizes(512, 128, True) == [128, 181, 256, 362, 512]
    assert scale_sizes(512, 128, False) == [512]
    assert scale_sizes(100, 128, True) == [100]
    counts = split_iterations(300, 5)
    assert sum(counts) == 300 and counts == sorted(counts, reverse=True)
    assert split_iterations(3, 5) == [1, 1, 1, 1, 1]


def test_output_size_gray_and_gray_alpha(vgg19_weights: Path, content: np.ndarray, style: np.ndarray) -> None:
    gray = colors.luma(content)[..., None]
    out = nst_core.stylize(gray, [style], _options(vgg19_weights), output_size=(80, 60))
    assert out.shape == (60, 80, 1)
    gray_alpha = np.concatenate([gray, np.full_like(gray, 0.25)], axis=2)
    out = nst_core.stylize(gray_alpha, [style], _options(vgg19_weights))
    assert out.shape == gray_alpha.shape and np.array_equal(out[..., 1], gray_alpha[..., 1])


def test_pil_and_uint8_inputs(vgg19_weights: Path) -> None:
    content = make_content_image(40, 30)
    out = nst_core.stylize(content, [np.asarray(make_style_image(32, 32))], _options(vgg19_weights))
    assert out.shape == (30, 40, 3)


def test_bad_inputs_are_clear_errors(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(ImageError, match="empty"):
        nst_core.stylize(np.zeros((0, 4, 3), np.float32), [style], _options(vgg19_weights))
    with pytest.raises(ImageError, match="style image 1"):
        nst_core.stylize(content, [np.zeros((4, 4, 7), np.float32)], _options(vgg19_weights))
    with pytest.raises(UsageError, match="relu9_1"):
        nst_core.stylize(content, [style], _options(vgg19_weights, style_layers=["relu9_1"]))
    with pytest.raises(WeightsError, match="missing.pth not found"):
        nst_core.stylize(content, [style], _options(tmp_path / "missing.pth"))
    with pytest.raises(ImageError, match="does not exist"):
        nst_core.stylize(content, [style], _options(vgg19_weights, init=str(tmp_path / "none.png")))


def test_the_library_checks_official_weights_as_a_job_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: np.ndarray, style: np.ndarray
) -> None:
    """An official file name with the wrong content is refused before loading, on every entry point."""
    fake = tmp_path / "vgg19-dcbb9e9d.pth"
    fake.write_bytes(b"not the weights")
    monkeypatch.setenv("NST_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(WeightsError, match="incomplete or damaged"):
        nst_core.stylize(content, [style], _options(fake))


def test_the_plan_is_heard_before_the_first_iteration(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    """`on_start` gets the plan the run carries out (a job's `start` event), before any progress."""
    heard: list[object] = []
    out = nst_core.stylize(
        content,
        [style],
        _options(vgg19_weights, size=40),
        output_size="working",
        on_start=heard.append,
        progress=lambda report: heard.append(report.iteration),
    )
    plan = heard[0]
    assert isinstance(plan, nst_core.Plan) and heard[1:] == [1, 2]
    assert plan.output_size == (40, 30) and out.shape == (30, 40, 3)


def test_a_cancel_during_the_last_iteration_gives_no_result(
    vgg19_weights: Path, content: np.ndarray, style: np.ndarray
) -> None:
    cancel = threading.Event()

    def progress(report: optimize.Progress) -> None:
        if report.fraction >= 1:
            cancel.set()

    with pytest.raises(Cancelled):
        nst_core.stylize(content, [style], _options(vgg19_weights), progress=progress, cancel=cancel)


def test_the_mask_count_is_refused_before_any_picture_is_looked_at(
    vgg19_weights: Path, style: np.ndarray
) -> None:
    with pytest.raises(UsageError, match=r"2 style image\(s\) but 1 style mask\(s\)"):
        nst_core.stylize("no picture", [style, style], _options(vgg19_weights), masks=[style])


def test_the_balance_reruns_the_first_scale_within_the_plan_and_its_progress(
    vgg19_weights: Path, style: np.ndarray
) -> None:
    """A user preset aims the first scale at its content error (balance.py): the plan allows TRIALS runs
    of it, the progress counts them without going back, and the later scales keep the chosen weight."""
    content = _array(make_content_image(182, 136))
    options = _options(vgg19_weights, size=182, iterations=3, multiscale=True, content_target=0.05)
    plan = nst_core.make_plan(options, (182, 136))
    assert [(s.iterations, s.trials) for s in plan.scales] == [(2, balance.TRIALS), (1, 1)]
    assert plan.iterations == 2 * balance.TRIALS + 1
    recorder = Recorder()
    nst_core.stylize(content, [style], options, progress=recorder)
    reports = recorder.reports
    first = [(r.iteration, r.iterations) for r in reports if r.scale == 1]
    assert len(first) in (2, 4, 6) and first == [(i, 2 * balance.TRIALS) for i in range(1, len(first) + 1)]
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


def test_a_frame_keeps_the_weights_and_its_plan_and_progress_count_one_run_of_the_first_scale(
    vgg19_weights: Path, style: np.ndarray
) -> None:
    """An animation's frame after the first keeps the preset's weights (no flicker), so its plan gives
    the first scale no balance trials: the progress counts the iterations that run, and the bar reaches
    the second scale without leaping over runs that never come. Its working size is the first frame's."""
    content = _array(make_content_image(182, 136))
    options = _options(vgg19_weights, size=182, iterations=3, multiscale=True, content_target=0.05)
    frame = FrameStart(content[..., :3].copy(), np.ones(content.shape[:2], np.float32), 200.0)
    heard: list[nst_core.Plan] = []
    recorder = Recorder()
    nst_core.stylize(content, [style], options, progress=recorder, frame=frame, on_start=heard.append)
    (plan,) = heard
    assert [(s.iterations, s.trials) for s in plan.scales] == [(2, 1), (1, 1)]
    assert plan.working_size == nst_core.make_plan(options, (182, 136)).working_size
    reports = recorder.reports
    assert [(r.scale, r.iteration, r.iterations) for r in reports] == [(1, 1, 2), (1, 2, 2), (2, 1, 1)]
    fractions = [r.fraction for r in reports]
    assert fractions[0] < fractions[1] < fractions[2] == pytest.approx(1.0)
    assert fractions[2] - fractions[1] < 0.6  # the last scale's share of the work, not the two runs skipped


def test_when_the_first_trial_lands_the_progress_runs_on_without_a_jump(
    vgg19_weights: Path, style: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan allows TRIALS runs of the first scale; when the first lands on the target (a warm
    engine's repeat mostly does), the bar must not leap over the runs that never came: the step into the
    second scale is no larger than the steps around it."""
    content = _array(make_content_image(182, 136))
    options = _options(vgg19_weights, size=182, iterations=12, multiscale=True, content_target=0.05)
    monkeypatch.setattr(balance, "content_error", lambda *a: 0.05)  # every trial lands
    recorder = Recorder()
    nst_core.stylize(content, [style], options, progress=recorder)
    reports = recorder.reports
    assert {r.scale for r in reports} == {1, 2} and max(r.iteration for r in reports if r.scale == 1) < 12
    fractions = [r.fraction for r in reports]
    steps = [b - a for a, b in zip(fractions, fractions[1:], strict=False)]
    boundary = next(i for i, r in enumerate(reports) if r.scale == 2) - 1
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    assert steps[boundary] <= 1.5 * max(steps[:boundary] + steps[boundary + 1 :])


def test_a_trial_settled_off_its_target_ends_early_and_the_bar_runs_on(
    vgg19_weights: Path, style: np.ndarray
) -> None:
    """A target far under any error the first scale reaches: each trial but the last ends at the first
    step the rule allows (balance.Settling), each after the first carries the last one's picture on for
    the iterations it left (balance.carried_start), the last runs all of those, and the progress counts
    the steps that ran, without a gap."""
    content = _array(make_content_image(182, 136))
    options = _options(vgg19_weights, size=182, iterations=40, multiscale=True, content_target=0.001)
    iterations = nst_core.make_plan(options, (182, 136)).scales[0].iterations

    def earliest(run: int) -> int:
        return math.floor(max(balance.SETTLE_WINDOW, balance.SETTLE_START * run)) + 1

    def left(ended: int) -> int:
        return max(iterations - ended, math.ceil(balance.SETTLE_START * iterations))

    runs = [earliest(iterations)]
    runs.append(earliest(left(runs[0])))
    runs.append(left(runs[1]))
    assert balance.TRIALS == 3 and runs[0] < iterations and runs[1] < left(runs[0])
    recorder = Recorder()
    nst_core.stylize(content, [style], options, progress=recorder)
    reports = recorder.reports
    first = [r.iteration for r in reports if r.scale == 1]
    assert first == list(range(1, sum(runs) + 1)) and sum(runs) < balance.TRIALS * iterations
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("errors", "ends"),
    [
        ([0.3] * 40, 11),  # settled 1.5x over the target: ends as soon as the rule may look (> 40 / 4)
        ([0.14] * 40, 11),  # 0.7x: under it, the same
        ([0.2 + 0.005 * (i % 2) for i in range(40)], None),  # within TOLERANCE
        ([0.3 - 0.0025 * i for i in range(40)], None),  # drifting back into it by the last iteration
        ([0.3, 0.22] * 20, None),  # every other error within TOLERANCE: not settled off the target
    ],
)
def test_a_trial_ends_when_its_error_has_settled_off_the_target(
    errors: list[float], ends: int | None
) -> None:
    watch = balance.Settling(target=0.2, content_weight=5.0, may_end=True)
    ended = next((i for i, e in enumerate(errors, 1) if watch(i, len(errors), {"content": 5.0 * e})), None)
    assert ended == ends
    assert len(watch.errors) == (ends or len(errors)) and watch.ended == (ends is not None)
    quiet = balance.Settling(target=0.2, content_weight=5.0, may_end=False)  # a last trial: only counts
    assert not any(quiet(i, len(errors), {"content": 5.0 * e}) for i, e in enumerate(errors, 1))
    assert len(quiet.errors) == len(errors)


@pytest.mark.parametrize(("settled", "share"), [(0.3, (0.2 / 0.3) ** 0.5), (0.14, 1.0)])
def test_a_trial_after_one_that_ended_early_carries_its_picture_on(
    settled: float, share: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first trial settles at `settled` (over the target 0.2: eased back towards the start by
    (0.2 / 0.3) ** EASE_BACK; under it: as it is) and ends early; the second starts from its picture and
    its curvature for the iterations it left and lands; the third never runs."""
    assert balance.EASE_BACK == 0.5
    settings = resolve(Options(size=64, content_target=0.2, init="content"))
    photo = torch.full((1, 3, 8, 8), 0.25)
    runs: list[tuple[torch.Tensor | None, int | None, object]] = []
    curvature = optimize.Curvature((), torch.ones(()))

    def run_scale(
        ctx: optimize.RunContext, start: torch.Tensor | None, iterations: int | None
    ) -> torch.Tensor:
        assert ctx.carry is not None and ctx.watch is not None
        runs.append((start, iterations, ctx.carry.given))
        count = iterations or 40
        error = settled if len(runs) == 1 else 0.2
        weight = ctx.settings.content_weight
        next(i for i in range(1, count + 1) if ctx.watch(i, count, {"content": weight * error}) or i == count)
        ctx.carry.left = curvature
        return torch.full((1, 3, 8, 8), 0.75 if len(runs) == 1 else 0.5)

    errors = iter([settled, 0.2])
    monkeypatch.setattr(balance, "content_features", lambda *a: {})
    monkeypatch.setattr(balance, "content_error", lambda *a: next(errors))
    clock = optimize.Clock([1.0, 1.0])
    ctx = optimize.RunContext(None, settings, photo, [], None, None, clock)  # type: ignore[arg-type]
    image, _ = balance.balanced_first_scale(ctx, balance.TRIALS, run_scale)
    assert len(runs) == 2 and runs[0] == (None, None, None) and image.mean().item() == 0.5
    start, iterations, given = runs[1]
    assert iterations == 40 - 11 and given is curvature  # ended at 11 of 40 (`Settling`)
    assert start is not None and torch.allclose(start, photo + share * (0.75 - photo))


def test_a_secant_step_moves_the_weight_towards_the_target() -> None:
    one = balance.Trial(10.0, 0.9, torch.zeros(1))
    assert balance.next_weight([one], 0.45) == pytest.approx(10.0 * 0.5 ** (1 / balance.FIRST_SLOPE))
    two = balance.Trial(2.5, 0.6, torch.zeros(1))  # slope log(1.5) / log(4) = 0.29
    weight = balance.next_weight([one, two], 0.45)
    assert 0.5 < weight < 2.5 and balance.next_weight([one, two], 0.6) == pytest.approx(2.5)


def test_the_first_weight_follows_the_remembered_trials() -> None:
    assert balance.first_weight([], 0.5, 10.0) == 10.0  # nothing remembered: the preset's weight
    points = [(10.0, 0.8), (4.0, 0.64), (1.0, 0.36)]  # the target 0.5 lies between the weights 4 and 1
    assert 1.0 < balance.first_weight(points, 0.5, 10.0) < 4.0
    assert balance.first_weight(points, 0.9, 10.0) > 10.0  # beyond them: on from the nearest two
    assert balance.first_weight(points, 0.36, 10.0) == pytest.approx(1.0)
