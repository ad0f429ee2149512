"""The command line's style option flags: one per Options field, and the Options they give. Values are
checked by options.resolve, in one place, so the command line and job files give the same messages."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .errors import UsageError
from .options import (
    DEVICES,
    KEEP_COLORS,
    MODELS,
    OPTIMIZERS,
    POOLINGS,
    PRECISIONS,
    STARTS,
    STYLE_LOSSES,
    Options,
    check_options,
)
from .presets import DEFAULT_PRESET


def _choices(values: Sequence[str]) -> str:
    return "{" + ",".join(values) + "}"


# Every Options field, its flag and help.
OPTION_FLAGS: dict[str, dict[str, Any]] = {
    "preset": {"metavar": "NAME", "help": f"recipe to start from (default {DEFAULT_PRESET}; see `presets`)"},
    "size": {
        "type": int,
        "metavar": "N",
        "help": "longest side of the output in pixels (default: the largest, up to the content's, "
        "that the preset's time allows on this device; see `calibrate`)",
    },
    "iterations": {"type": int, "metavar": "N", "help": "optimisation steps over all scales"},
    "content_weight": {"type": float, "metavar": "W"},
    "style_weight": {"type": float, "metavar": "W"},
    "tv_weight": {"type": float, "metavar": "W", "help": "total-variation (smoothness) weight"},
    "strength": {"type": float, "metavar": "F", "help": "more or less style (default 1)"},
    "content_target": {
        "type": float,
        "metavar": "E",
        "help": "the content error the first scale aims at by choosing the style weight (the user presets: "
        "0.5; 0: the weights as given)",
    },
    "content_layers": {"nargs": "+", "metavar": "LAYER", "help": "e.g. relu4_2 (spaces or commas)"},
    "style_layers": {"nargs": "+", "metavar": "LAYER", "help": "e.g. relu1_1 relu2_1 relu3_1"},
    "style_layer_weights": {"nargs": "+", "metavar": "W", "help": "one weight per style layer"},
    "style_loss": {"metavar": _choices(STYLE_LOSSES)},
    "style_blend": {"nargs": "+", "metavar": "W", "help": "one blend weight per style image"},
    "style_scale": {"type": float, "metavar": "F", "help": "style size relative to the output (brush size)"},
    "keep_colors": {"metavar": _choices(KEEP_COLORS), "help": "keep the content's colours"},
    "init": {
        "metavar": "{" + ",".join((*STARTS, "PATH")) + "}",
        "help": "starting image: the photo, the photo in the style's colours, noise, or a picture",
    },
    "optimizer": {"metavar": _choices(OPTIMIZERS)},
    "learning_rate": {"type": float, "metavar": "F", "help": "step size for adam and gd"},
    "model": {"metavar": _choices(MODELS)},
    "pooling": {"metavar": _choices(POOLINGS)},
    "multiscale": {"action": argparse.BooleanOptionalAction, "help": "coarse-to-fine scales"},
    "seed": {"type": int, "metavar": "N"},
    "device": {"metavar": _choices(DEVICES), "help": "default auto: CUDA, then MPS, then CPU"},
    "precision": {"metavar": _choices(PRECISIONS)},
    "weights": {"metavar": "FILE", "help": "VGG weights file (default: the installed one)"},
    "max_memory": {"type": float, "metavar": "MIB", "help": "memory budget in MiB (default: what is free)"},
}
LIST_OF_FLOATS = ("style_layer_weights", "style_blend")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("style options (default: the preset's)")
    for name, spec in OPTION_FLAGS.items():
        group.add_argument("--" + name.replace("_", "-"), dest=name, default=None, **spec)


def options_from_args(args: argparse.Namespace) -> Options:
    options = Options.from_dict(option_values(args))
    check_options(options)
    return options


def option_values(args: argparse.Namespace) -> dict[str, Any]:
    """The option flags given, by Options field name (what a job file or a service request carries)."""
    values: dict[str, Any] = {}
    for name in OPTION_FLAGS:
        value = getattr(args, name)
        if value is None:
            continue
        if OPTION_FLAGS[name].get("nargs"):
            value = [item for token in value for item in token.split(",") if item]
        if name in LIST_OF_FLOATS:
            value = [_float(name, item) for item in value]
        values[name] = value
    return values


def _float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"--{name.replace('_', '-')} takes numbers, not '{text}'.") from None
