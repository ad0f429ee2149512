"""Options: types from job files, validation, the CLI flags that set them, describe() for front ends."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from nst_core import cli, option_flags
from nst_core.errors import UsageError
from nst_core.options import LIMITS, Options, describe, resolve
from nst_core.presets import PRESETS


def parse(*flags: str) -> Options:
    args = cli.build_parser().parse_args(["stylize", "c.png", "s.png", "-o", "o.png", *flags])
    return option_flags.options_from_args(args)


def test_every_option_has_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert set(option_flags.OPTION_FLAGS) == {f.name for f in fields(Options)}
    with pytest.raises(SystemExit):
        cli.main(["stylize", "--help"])
    help_text = capsys.readouterr().out
    for name in option_flags.OPTION_FLAGS:
        assert "--" + name.replace("_", "-") in help_text


def test_flags_fill_options() -> None:
    options = parse(
        "--preset",
        "fast",
        "--size",
        "256",
        "--iterations",
        "7",
        "--content-weight",
        "2",
        "--style-weight",
        "3e4",
        "--tv-weight",
        "0.1",
        "--strength",
        "1.5",
        "--content-layers",
        "relu4_2,relu3_2",
        "--style-layers",
        "relu1_1",
        "relu2_1",
        "--style-layer-weights",
        "1,0.5",
        "--style-loss",
        "w2",
        "--style-scale",
        "0.5",
        "--keep-colors",
        "luminance",
        "--init",
        "noise",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.01",
        "--model",
        "vgg16",
        "--pooling",
        "avg",
        "--no-multiscale",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--weights",
        "w.pth",
        "--max-memory",
        "2048",
    )
    expected = Options(
        preset="fast", size=256, iterations=7, content_weight=2.0, style_weight=3e4, tv_weight=0.1,
        strength=1.5, content_layers=["relu4_2", "relu3_2"], style_layers=["relu1_1", "relu2_1"],
        style_layer_weights=[1.0, 0.5], style_loss="w2", style_scale=0.5, keep_colors="luminance",
        init="noise", optimizer="adam", learning_rate=0.01, model="vgg16", pooling="avg", multiscale=False,
        seed=3, device="cpu", precision="fp32", weights="w.pth", max_memory=2048.0,
    )  # fmt: skip
    assert options == expected


def test_no_flags_means_the_preset() -> None:
    assert parse() == Options()
    settings = resolve(parse("--preset", "best"))
    assert (settings.size, settings.iterations) == (PRESETS["best"].size, PRESETS["best"].iterations)


def test_user_values_override_the_preset() -> None:
    settings = resolve(parse("--style-weight", "5", "--strength", "2", "--init", "start.png"))
    assert settings.effective_style_weight == 10.0
    assert (settings.init, settings.init_path) == ("image", "start.png")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--size", "5"], r"--size 5 is out of range: use a value from 32 to 16384"),
        (["--iterations", "0"], "--iterations 0 is out of range"),
        (["--strength", "-1"], "--strength -1 is out of range"),
        (["--style-scale", "100"], "--style-scale 100 is out of range"),
        (["--preset", "nope"], "Unknown preset 'nope': use one of"),
        (["--keep-colors", "some"], "Unknown keep-colors mode 'some'"),
        (["--optimizer", "sgd"], "Unknown optimizer 'sgd'"),
        (["--style-blend", "1", "2"], r"1 style image\(s\) but 2 blend weight\(s\)"),
        (["--style-blend", "0"], "--style-blend must not be all zero"),
        (["--style-layers", "relu1_1", "relu2_1", "--style-layer-weights", "1"], "one weight per layer"),
    ],
)
def test_bad_values_are_usage_errors(flags: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        resolve(parse(*flags))
    assert caught.value.code == 2 and "\n" not in caught.value.message


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--seed", "-1"], "--seed -1 is out of range: use a value from 0 to 2147483647."),
        (["--max-memory", "1"], "--max-memory 1 is out of range: use a value from 64 to 4194304 MiB."),
        (["--learning-rate", "0"], "--learning-rate 0 is out of range: use a value from 1e-6 to 10."),
        (["--tv-weight", "1e13"], "--tv-weight 1e13 is out of range: use a value from 0 to 1e12."),
    ],
)
def test_limits_read_as_they_are_typed(flags: list[str], message: str) -> None:
    """No `2.14748e+09` or `4.1943e+06`: whole limits in full, with their unit where the flag has none."""
    with pytest.raises(UsageError) as caught:
        resolve(parse(*flags))
    assert caught.value.message == message


def test_non_numbers_in_lists_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="--style-blend takes numbers, not 'x'"):
        parse("--style-blend", "1,x")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"size": 512.0}, {"size": 512}),
        ({"strength": 2}, {"strength": 2.0}),
        ({"style_blend": [1, 2]}, {"style_blend": [1.0, 2.0]}),
        ({"multiscale": False, "size": None}, {"multiscale": False, "size": None}),
    ],
)
def test_job_values_are_typed(data: dict, expected: dict) -> None:
    options = Options.from_dict(data)
    for name, value in expected.items():
        assert getattr(options, name) == value and type(getattr(options, name)) is type(value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"size": "big"}, "Option size must be a whole number, not 'big'"),
        ({"size": 1.5}, "Option size must be a whole number"),
        ({"size": True}, "Option size must be a whole number"),
        ({"multiscale": 1}, "Option multiscale must be true or false"),
        ({"content_layers": "relu4_2"}, "Option content_layers must be a list of strings"),
        ({"style_blend": [1, "a"]}, "Option style_blend must be a list of numbers"),
        ({"preset": None}, "Option preset must be a string"),
        ({"colour": 1}, "Unknown option colour"),
    ],
)
def test_bad_job_values(data: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        Options.from_dict(data)


def test_describe_is_json_with_every_range() -> None:
    described = json.loads(json.dumps(describe()))
    assert described["version"] == 1 and described["default_preset"] in described["user_presets"]
    assert {p["name"] for p in described["presets"]} == set(PRESETS)
    for name, (low, high) in LIMITS.items():
        assert described["options"][name]["min"] == low and described["options"][name]["max"] == high


def test_a_style_weight_asked_for_is_kept_and_strength_moves_the_target() -> None:
    """The user presets aim at a content error (balance.py); an explicit style weight turns that off
    unless a target is asked for too, and strength moves the target, 0 meaning none."""
    assert resolve(Options(preset="balanced")).effective_content_target == pytest.approx(0.5)
    assert resolve(Options(preset="balanced", strength=2)).effective_content_target == pytest.approx(0.75)
    assert resolve(Options(preset="balanced", strength=0)).effective_content_target is None
    assert resolve(Options(preset="balanced", style_weight=3)).effective_content_target is None
    both = Options(preset="balanced", style_weight=3, content_target=0.4)
    assert resolve(both).effective_content_target == pytest.approx(0.4)
    assert resolve(Options(preset="balanced", content_target=0)).effective_content_target is None
    assert resolve(Options(preset="gatys-vgg16")).effective_content_target is None
