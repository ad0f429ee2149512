"""The plan: the ladder up to the layer's size, the time estimate, the size chosen by time, the
dry run, the tiles in the start event, and the speed that `calibrate` records."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from nst_core import cli, network, speed
from nst_core.options import Options, preset_by_name, resolve
from nst_core.plan import Plan, build_plan, ladder, make_plan
from nst_core.speed import Speed

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # planned, never run: no GPU needed
SLOW = Speed(rate=100e9, overhead=0.01, startup=3.0)
FAST = Speed(rate=400e12, overhead=0.002, startup=5.0)


def _plan(
    content: tuple[int, int],
    *,
    speed: Speed = SLOW,
    device: torch.device = CPU,
    framed: bool = False,
    **options: object,
) -> Plan:
    chosen = Options(**options)  # type: ignore[arg-type]
    budget = int(chosen.max_memory) << 20 if chosen.max_memory else 1 << 40
    auto_size = chosen.size is None
    return build_plan(
        resolve(chosen),
        content,
        device,
        Path("w.pth"),
        budget,
        auto_size=auto_size,
        speed=speed,
        framed=framed,
    )


def test_the_ladder_continues_above_the_preset_with_few_iterations() -> None:
    settings = resolve(Options(preset="fast", size=4000))
    steps = ladder(settings, 4000)
    sides = [side for side, _ in steps]
    base = [s for s in sides if s <= preset_by_name("fast").size]
    assert base[-1] == 384 and sides[-1] == 4000
    assert all(b > a for a, b in zip(sides, sides[1:], strict=False))
    above = steps[len(base) :]
    # Evenly spaced, not doubling to 3072 and then a last 1.3x step: that scale ran in tiles.
    assert [s for s, _ in above] == [690, 1239, 2227, 4000]
    assert all(n <= steps[len(base) - 1][1] for _, n in above)  # fewer than the preset's top scale
    assert sum(n for _, n in steps[: len(base)]) == settings.iterations  # the preset's own, below


def test_a_12_megapixel_fast_job_tiles_only_its_top_scale() -> None:
    """Under a 24 GB machine's default budget (19.3 GiB) the scale below the top of a 4000 x 3000 `fast`
    job runs whole: doubling had made it 3072 px, in 2 tiles, a third of the job's time."""
    plan = _plan((4000, 3000), preset="fast", size=4000, max_memory=19.3 * 1024)
    assert [s.longest for s in plan.scales if s.tile is not None] == [4000]


@pytest.mark.parametrize("size", [400, 500, 1000, 1536, 3000, 8000])
def test_the_steps_above_the_preset_are_even_and_at_most_about_double(size: int) -> None:
    sides = [384] + [s for s, _ in ladder(resolve(Options(preset="fast", size=size)), size) if s > 384]
    ratios = [b / a for a, b in zip(sides, sides[1:], strict=False)]
    side, doublings = 384, 0
    while side < size:  # the doubling ladder's scales, its last step stretched to the size
        side, doublings = size if side * 2 >= size * 0.9 else side * 2, doublings + 1
    assert sides[-1] == size and len(ratios) == doublings  # as many scales as doubling would take
    assert max(ratios) <= 2 / 0.9 and max(ratios) - min(ratios) < 0.01


def test_cost_grows_about_linearly_with_the_pixels() -> None:
    per_megapixel = [
        _plan((w, w * 3 // 4), preset="fast", size=w).estimated_seconds / (w * w * 3 / 4 / 1e6)
        for w in (2000, 4000, 8000)
    ]
    assert per_megapixel[2] == pytest.approx(per_megapixel[1], rel=0.25)
    assert per_megapixel[1] == pytest.approx(per_megapixel[0], rel=0.35)


def test_auto_size_is_the_largest_that_fits_the_presets_time() -> None:
    for preset in ("fast", "balanced", "best"):
        seconds = preset_by_name(preset).seconds
        assert seconds is not None
        slow = _plan((4000, 3000), preset=preset)
        assert (
            slow.estimated_seconds
            <= seconds
            < _plan((4000, 3000), preset=preset, size=slow.working_size + 32).estimated_seconds
        )
        # A fast device paints the whole layer, within the time.
        quick = _plan((4000, 3000), preset=preset, speed=FAST, device=CUDA)
        assert quick.working_size == 4000 and quick.estimated_seconds <= seconds
        assert quick.scales[-1].width == 4000 and quick.output_size == (4000, 3000)
    assert _plan((300, 200), preset="best").working_size == 300  # never above the layer
    assert _plan((4000, 3000), preset="fast", size=2000).working_size == 2000  # an explicit size wins
    assert _plan((4000, 3000), preset="gatys-vgg16").working_size == 512  # no time: the preset's size


def test_a_frame_plans_no_balance_trials_at_the_first_frames_size() -> None:
    """A frame that starts from the previous one keeps the weights: its plan counts one run of the first
    scale, and a size chosen by time is still the first frame's (which has the trials), so that every
    frame of an animation is painted at one size."""
    first = _plan((4000, 3000), preset="balanced")
    later = _plan((4000, 3000), preset="balanced", framed=True)
    assert first.scales[0].trials > 1 and [s.trials for s in later.scales] == [1] * len(later.scales)
    assert later.working_size == first.working_size < 4000
    assert later.estimated_seconds < first.estimated_seconds
    assert later.iterations == first.iterations - first.scales[0].steps + first.scales[0].iterations


def test_the_estimate_follows_the_speed() -> None:
    slow, twice = _plan((1024, 768), size=1024), _plan((1024, 768), size=1024, speed=Speed(200e9, 0.005, 3.0))
    # SLOW has no per-scale part: twice the rate and half the overhead halve everything but the start.
    assert (twice.estimated_seconds - 3.0) == pytest.approx((slow.estimated_seconds - 3.0) / 2, rel=1e-6)
    assert slow.seconds and len(slow.seconds) == len(slow.scales)


def test_a_tiled_scale_costs_its_margins_and_a_second_forward_pass() -> None:
    whole = _plan((2048, 1536), size=2048, multiscale=False, iterations=10)
    tiled = _plan((2048, 1536), size=2048, multiscale=False, iterations=10, max_memory=2500)
    assert whole.scales[0].tile is None and tiled.scales[0].tile is not None
    assert 1.5 < tiled.seconds[0] / whole.seconds[0] < 3.5
    (entry,) = tiled.tiles()
    assert (
        entry["scale"] == 1
        and entry["size"] == 2048
        and entry["count"] > 1
        and entry["tile"] == tiled.scales[0].tile
    )


def test_summary_is_json_with_the_estimate(vgg19_weights: Path) -> None:
    summary = _plan((4000, 3000), preset="fast", size=4000, max_memory=4000).summary()
    data = json.loads(json.dumps(summary))
    assert data["output_size"] == [4000, 3000] and data["working_size"] == 4000
    assert data["estimated_seconds"] == pytest.approx(
        sum(s["seconds"] for s in data["scales"]) + 3.0, abs=0.5
    )
    assert data["tiles"] and data["memory"]["budget"] == 4000 << 20
    assert data["iterations"] == sum(s["iterations"] * s["trials"] for s in data["scales"])


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path,
    content_png: Path,
    style_png: Path,
    vgg19_weights: Path,
    capsys: pytest.CaptureFixture[str],
    cpu_without_amx: None,
) -> None:
    out, before = tmp_path / "out.png", sorted(tmp_path.iterdir())
    argv = ["stylize", str(content_png), str(style_png), "-o", str(out), "--dry-run", "--preset", "fast"]
    assert cli.main([*argv, "--weights", str(vgg19_weights), "--device", "cpu", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["device"] == "cpu" and data["estimated_seconds"] > 0 and data["scales"]
    assert cli.main([*argv, "--weights", str(vgg19_weights), "--device", "cpu", "--max-memory", "4000"]) == 0
    words = capsys.readouterr().out.splitlines()
    assert words[:2] == ["Plan on cpu: working size 96 px, result 96x64 px, 1 scale:", words[1]]
    assert re.fullmatch(r"  1\. 96x64 px, 50 iterations, [\d.]+ s", words[1])
    assert words[2] == "Iterations: 50, the preset's (fast)."
    within = r"within the budget of 3\.9 GiB \(--max-memory\)"
    assert re.fullmatch(rf"Memory: about \d+ MiB at the largest scale, {within}\.", words[3])
    typical = r"a typical speed \(`calibrate` measures this one\)"
    assert re.fullmatch(rf"Time: about [\d.]+ s, [\d.]+ s of it to start, at {typical}\.", words[4])
    assert len(words) == 5 and sorted(tmp_path.iterdir()) == before
    assert cli.main([*argv, "--weights", str(tmp_path / "none.pth")]) == 4  # the plan's checks still run
    assert cli.main(["stylize", str(tmp_path / "none.png"), str(style_png), "-o", str(out), "--dry-run"]) == 3


def test_plan_command_for_a_layer_size(vgg19_weights: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["plan", "--width", "4000", "--height", "3000", "--preset", "fast", "--device", "cpu", "--json"]
    assert cli.main([*argv, "--weights", str(vgg19_weights)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["output_size"] == [4000, 3000] and math.isfinite(data["estimated_seconds"])
    assert cli.main(["plan", "--width", "0", "--height", "3000"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_a_plan_says_why_its_iterations_and_memory_differ_from_the_presets_and_budget(
    vgg19_weights: Path, capsys: pytest.CaptureFixture[str], cpu_without_amx: None
) -> None:
    """Above the preset's size the scales add iterations; the engine's own memory is outside the budget."""
    argv = ["plan", "--width", "4000", "--height", "3000", "--preset", "fast", "--device", "cpu"]
    argv += ["--weights", str(vgg19_weights), "--size", "3000", "--max-memory", "3000"]
    assert cli.main(argv) == 0
    words = capsys.readouterr().out.splitlines()
    assert words[0] == "Plan on cpu: working size 3000 px, result 4000x3000 px, 7 scales:"
    assert re.fullmatch(r"  7\. 3000x2250 px, 3 iterations, in \d+ tiles of \d+ px \(whole, it is over the "
                        r"memory budget\), .+", words[7])  # fmt: skip
    assert words[8] == (
        "Iterations: 103, not the preset's 50: the 3 scales above fast's 384 px add 9 for the detail of the "
        "larger sizes; up to 44 more while the first scale finds the balance of content and style."
    )
    assert "(run up to 3 times to find the balance of content and style)" in words[1]
    assert re.fullmatch(
        r"Memory: about [\d.]+ GiB at the largest scale, more than the budget of 2\.9 GiB \(--max-memory\): "
        r"560 MiB of it is the engine's own \(torch and its libraries\), which the budget leaves out; the "
        r"job's [\d.]+ GiB is within it\.",
        words[9],
    )
    small = ["plan", "--width", "400", "--height", "300", "--iterations", "3", "--content-target", "0"]
    small.append("--weights")
    assert cli.main([*small, str(vgg19_weights)]) == 0
    assert capsys.readouterr().out.splitlines()[5] == (
        "Iterations: 4, not the preset's 110: 3 asked for (--iterations); each of the 4 scales takes at "
        "least 1."
    )


def test_calibrate_records_the_speed_the_plans_then_use(
    isolated_data: None, vgg19_weights: Path, capsys: pytest.CaptureFixture[str], cpu_without_amx: None
) -> None:
    """A line on stderr while it measures, one on stdout when done (the installer asks for --json)."""
    assert speed.device_speed("cpu", "cpu").measured is False
    assert cli.main(["calibrate", "--device", "cpu", "--weights", str(vgg19_weights)]) == 0
    captured = capsys.readouterr()
    assert captured.err == "Measuring the speed of cpu (up to a minute or two) ...\n"
    recorded = speed.device_speed("cpu", "cpu")
    assert recorded.measured and 1e9 < recorded.rate < 1e12 and recorded.overhead >= 0
    file = speed.speed_file()
    fixed = f"{recorded.overhead * 1000:.0f} ms" if recorded.overhead < 1 else f"{recorded.overhead:.2f} s"
    assert re.fullmatch(
        rf"cpu: {recorded.rate / 1e9:.0f} GFLOP/s, {fixed} more per iteration; recorded in "
        rf"{re.escape(str(file))} for the time estimates and automatic sizes \(measured in \d+ s\)\.\n",
        captured.out,
    )
    assert json.loads(file.read_text())["cpu"]["rate"] == pytest.approx(recorded.rate)


def test_fit_speed_recovers_a_line() -> None:
    fitted = speed.fit_speed([(1e9, 0.02 + 1e9 / 5e10), (4e9, 0.02 + 4e9 / 5e10)], startup=1.0)
    assert fitted.rate == pytest.approx(5e10) and fitted.overhead == pytest.approx(0.02)


def test_fit_speed_through_timings_that_fall_takes_the_largest_as_all_work() -> None:
    """A loaded machine can time the small size slower than the large one: no absurd rate from that."""
    fitted = speed.fit_speed([(1e9, 0.5), (4e9, 0.2)], startup=1.0)
    assert fitted.rate == pytest.approx(2e10) and fitted.overhead == 0.0


def test_a_cpu_with_amx_plans_at_its_bf16_speed_and_says_so(
    isolated_data: None,
    vgg19_weights: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where the user presets run in bf16 (a CPU with AMX), a speed is recorded apart from fp32's: an fp32
    calibration does not time a bf16 job, which then plans at the default CPU rate times its speed-up."""
    monkeypatch.setattr(network, "_cpu_has_amx", lambda: True)
    monkeypatch.setattr(network, "_cpu_has_bf16", lambda: True)
    speed.record_speed("cpu", Speed(rate=1e9, overhead=0.01, startup=1.0))  # measured in fp32
    options = {"weights": str(vgg19_weights), "device": "cpu", "size": 96}
    bf16 = make_plan(Options(**options), (96, 64))
    fp32 = make_plan(Options(**options, precision="fp32"), (96, 64))
    assert (bf16.autocast, fp32.autocast) == (torch.bfloat16, None)
    assert speed.speed_key(CPU, bf16.autocast) == "cpu bf16" and speed.speed_key(CPU, None) == "cpu"
    recorded, default = speed.device_speed("cpu", "cpu"), speed.default_speed("cpu")
    assert recorded.measured and fp32.estimated_seconds > 10 * bf16.estimated_seconds
    assert speed.device_speed("cpu bf16", "cpu", autocast=torch.bfloat16) == replace(
        default, rate=default.rate * speed.CPU_BF16_SPEEDUP
    )
    argv = ["plan", "--width", "96", "--height", "64", "--device", "cpu", "--weights", str(vgg19_weights)]
    assert cli.main(argv) == 0
    words = capsys.readouterr().out.splitlines()
    assert words[0].startswith("Plan on cpu (the network in bf16): working size 96 px")
    assert words[-1].endswith("at a typical speed (`calibrate` measures this one).")
