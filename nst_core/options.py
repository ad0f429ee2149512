"""What a user may set, its limits, and how it overlays a preset into concrete settings.

`Options` is what the CLI, the job file and the plug-ins speak (None = the preset's value).
`Settings` is the fully resolved recipe the engine runs. `describe()` is what the plug-ins
read to build their menus, so ranges and defaults are written only here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import UsageError
from .paintings import DEFAULT_PAINTING, describe_paintings
from .presets import DEFAULT_PRESET, PRESETS, PREVIEW_ITERATIONS, PREVIEW_SIZE, USER_PRESETS, Preset
from .readable import number

KEEP_COLORS = ("off", "luminance", "histogram")
DEVICES = ("auto", "cuda", "mps", "cpu")
OPTIMIZERS = ("lbfgs", "adam", "gd")
STYLE_LOSSES = ("gram", "w2")
MODELS = ("vgg19", "vgg16")
POOLINGS = ("max", "avg")
# The starts named by a word (any other `init` names a picture): the photo, the photo in the style's
# colours (colors.in_style_colors), noise.
STARTS = ("content", "style-colors", "noise")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What this engine can do beyond protocol version 1 as first published, for front ends to check
# (`describe`) before they send it: an older engine ignores a job's style `mask` (docs/protocol.md), and
# refuses a `preview` it does not know.
FEATURES = ("style_masks", "raw_styles", "snapshots", "stop", "previews")
# Seconds of work between two snapshots of a running job (docs/protocol.md, "Snapshots"): the default,
# and the range a job, the command line and the service accept.
SNAPSHOT_EVERY = 2.0
SNAPSHOT_EVERY_LIMITS = (0.2, 3600.0)

# (min, max) for numbers; a value outside is a usage error naming the range.
LIMITS: dict[str, tuple[float, float]] = {
    "size": (32, 16384),
    "iterations": (1, 100000),
    "content_weight": (0.0, 1e12),
    "style_weight": (0.0, 1e12),
    "tv_weight": (0.0, 1e12),
    "strength": (0.0, 100.0),
    "style_scale": (0.05, 8.0),
    "learning_rate": (1e-6, 10.0),
    "seed": (0, 2**31 - 1),
    "max_memory": (64, 1 << 22),  # MiB
    "content_target": (0.0, 0.99),
}
# Each weight of a list, one per style (`style_blend`, a style's `weight`) or per style layer. Each
# list is divided by its sum, so its weights may not all be zero (all-zero layer weights would drop the
# style without a word: --style-weight 0 says that).
WEIGHT_LIMITS = (0.0, 1e12)
WEIGHT_LISTS = ("style_blend", "style_layer_weights")
UNITS = {"max_memory": " MiB"}  # what a limit's numbers count, where the flag's name does not say


@dataclass(frozen=True)
class Options:
    preset: str = DEFAULT_PRESET
    size: int | None = None
    iterations: int | None = None
    content_weight: float | None = None
    style_weight: float | None = None
    tv_weight: float | None = None
    strength: float = 1.0  # more or less style (presets.py, balance.py): the plug-ins' "style strength"
    content_layers: list[str] | None = None
    style_layers: list[str] | None = None
    style_layer_weights: list[float] | None = None
    style_loss: str | None = None
    style_blend: list[float] | None = None
    style_scale: float = 1.0
    keep_colors: str = "off"
    init: str | None = None  # content | style-colors | noise (STARTS) | path of an image
    optimizer: str | None = None
    learning_rate: float | None = None
    model: str | None = None
    pooling: str | None = None
    multiscale: bool | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    weights: str | None = None
    max_memory: float | None = None  # MiB; None = from the device's free memory
    content_target: float | None = None  # 0: fixed weights; else the content error aimed at

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Options:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"Unknown option {', '.join(unknown)}: use one of {', '.join(sorted(known))}.")
        types = {f.name: str(f.type) for f in fields(cls)}
        return cls(**{name: _typed(name, value, types[name]) for name, value in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _typed(name: str, value: Any, annotation: str) -> Any:
    """`value` checked against the field's annotation (job files are JSON: no argparse types there)."""
    if value is None and "None" in annotation:
        return None
    kind = annotation.split(" |")[0]
    if kind == "int" and _is_number(value) and float(value).is_integer():
        return int(value)
    if kind == "float" and _is_number(value):
        return float(value)
    if kind in ("str", "bool") and type(value).__name__ == kind:
        return value
    if kind.startswith("list[") and isinstance(value, list):
        item = kind[5:-1]
        if all(isinstance(v, str) if item == "str" else _is_number(v) for v in value):
            return [v if item == "str" else float(v) for v in value]
    wanted = {
        "int": "a whole number",
        "float": "a number",
        "str": "a string",
        "bool": "true or false",
        "list[str]": "a list of strings",
        "list[float]": "a list of numbers",
    }[kind]
    raise UsageError(f"Option {name} must be {wanted}, not {value!r}: fix the job file or command line.")


@dataclass(frozen=True)
class Settings(Preset):
    """A preset with the user's options applied: everything the engine needs, no None."""

    strength: float = 1.0
    style_blend: tuple[float, ...] = ()
    style_scale: float = 1.0
    keep_colors: str = "off"
    init_path: str | None = None
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    weights: str | None = None
    max_memory: float | None = None
    masked: bool = False  # style masks given (regions.py): set by the plan, which sizes their memory

    @property
    def effective_style_weight(self) -> float:
        return self.style_weight * self.strength

    @property
    def effective_content_target(self) -> float | None:
        """The content error aimed at: strength 1 the preset's, 0 none (the photo), more towards 1."""
        if not self.content_target or not self.strength or not self.style_weight:
            return None
        return 1.0 - (1.0 - self.content_target) ** self.strength


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"Unknown {name} '{value}': use one of {', '.join(choices)}.")


def check_range(name: str, value: float | None, limits: tuple[float, float] | None = None) -> None:
    """`value` of the option or flag `name` within its LIMITS (or `limits`). NaN and the infinities are
    outside every range (a comparison with NaN is false), so this is the check that a number is finite."""
    if value is None:
        return
    low, high = limits or LIMITS[name]
    if not low <= value <= high:
        flag = "--" + name.replace("_", "-")
        span = f"{number(low)} to {number(high)}{UNITS.get(name, '')}"
        raise UsageError(f"{flag} {number(value)} is out of range: use a value from {span}.")


def preset_by_name(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"Unknown preset '{name}': use one of {', '.join(PRESETS)} (see `python -m nst_core presets`)."
        ) from None


# Options that replace their preset's value when given (the layer lists have their own rules).
PRESET_OVERRIDES = (
    "size", "iterations", "content_weight", "style_weight", "tv_weight", "style_loss", "optimizer",
    "learning_rate", "model", "pooling", "multiscale", "content_target",
)  # fmt: skip


def resolve(options: Options, n_styles: int = 1) -> Settings:
    """Validate `options` and overlay them on their preset."""
    preset = preset_by_name(options.preset)
    check_options(options, n_styles)
    recipe = {f.name: getattr(preset, f.name) for f in fields(Preset)}
    recipe.update(
        {name: getattr(options, name) for name in PRESET_OVERRIDES if getattr(options, name) is not None}
    )
    recipe.update(_layers(options, preset))
    if options.style_weight is not None and options.content_target is None:
        recipe["content_target"] = None  # a style weight asked for is kept, not searched for
    init = options.init or preset.init
    recipe["init"] = init if init in STARTS else "image"
    return Settings(
        **recipe,
        strength=options.strength,
        style_blend=_style_blend(options, n_styles),
        style_scale=options.style_scale,
        keep_colors=options.keep_colors,
        init_path=None if recipe["init"] != "image" else init,
        seed=options.seed,
        device=options.device,
        precision=options.precision,
        weights=options.weights,
        max_memory=options.max_memory,
    )


def check_options(options: Options, n_styles: int | None = None) -> None:
    """Numbers finite and within their limits, names among their choices, and (given the number of
    styles) one blend weight per style: the one check of the command line, job files and service
    requests, which each call it before anything is read or queued."""
    preset_by_name(options.preset)
    for name in LIMITS:
        check_range(name, getattr(options, name))
    for name in WEIGHT_LISTS:
        weights = getattr(options, name) or ()
        for weight in weights:
            check_range(name, weight, WEIGHT_LIMITS)
        if weights and not any(weights):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} must not be all zero: make at least one weight positive.")
    if n_styles is not None:
        _style_blend(options, n_styles)
    _check_choice("keep-colors mode", options.keep_colors, KEEP_COLORS)
    _check_choice("device", options.device, DEVICES)
    _check_choice("precision", options.precision, PRECISIONS)
    for name, choices in (("optimizer", OPTIMIZERS), ("style_loss", STYLE_LOSSES), ("model", MODELS)):
        if getattr(options, name) is not None:
            _check_choice(name.replace("_", " "), getattr(options, name), choices)
    if options.pooling is not None:
        _check_choice("pooling", options.pooling, POOLINGS)


def check_mask_count(masks: int | None, n_styles: int) -> None:
    """Style masks, when given (`masks` of them), are one per style: a miscount is a usage error before
    any picture is converted or any plan made."""
    if masks is not None and masks != n_styles:
        raise UsageError(
            f"{n_styles} style image(s) but {masks} style mask(s): give one mask per style, in the "
            "styles' order (docs/regions.md)."
        )


def _style_blend(options: Options, n_styles: int) -> tuple[float, ...]:
    blend = tuple(options.style_blend) if options.style_blend else (1.0,) * n_styles
    if len(blend) != n_styles:
        raise UsageError(
            f"{n_styles} style image(s) but {len(blend)} blend weight(s): give one --style-blend weight "
            "per style."
        )
    return blend


def _layers(options: Options, preset: Preset) -> dict[str, tuple]:
    """The layer lists the user gave (equal weights unless given), checked against their weights."""
    given: dict[str, tuple] = {}
    if options.content_layers is not None:
        given["content_layers"] = tuple(options.content_layers)
        given["content_layer_weights"] = (1.0,) * len(options.content_layers)
    if options.style_layers is not None:
        given["style_layers"] = tuple(options.style_layers)
        given["style_layer_weights"] = (1.0,) * len(options.style_layers)
    if options.style_layer_weights is not None:
        given["style_layer_weights"] = tuple(options.style_layer_weights)
    layers = given.get("style_layers", preset.style_layers)
    layer_weights = given.get("style_layer_weights", preset.style_layer_weights)
    if len(layers) != len(layer_weights):
        raise UsageError(
            f"{len(layers)} style layer(s) but {len(layer_weights)} style layer weight(s): "
            "give one weight per layer."
        )
    return given


def describe() -> dict[str, Any]:
    """Presets, defaults and ranges for front ends (`python -m nst_core describe --json`)."""
    defaults = Options()
    return {
        "version": 1,
        "features": list(FEATURES),
        "default_preset": DEFAULT_PRESET,
        "presets": [
            {
                "name": p.name,
                "label": p.label,
                "description": p.description,
                "user": p.user,
                "size": p.size,
                "iterations": p.iterations,
                "cost": p.cost,
            }
            for p in PRESETS.values()
        ],
        "user_presets": list(USER_PRESETS),
        "preview": {"size": PREVIEW_SIZE, "iterations": PREVIEW_ITERATIONS},
        "paintings": describe_paintings(),
        "default_painting": DEFAULT_PAINTING,
        "snapshot_every": {
            "default": SNAPSHOT_EVERY,
            "min": SNAPSHOT_EVERY_LIMITS[0],
            "max": SNAPSHOT_EVERY_LIMITS[1],
        },
        "options": {
            **{
                name: {"default": getattr(defaults, name), "min": low, "max": high}
                for name, (low, high) in LIMITS.items()
            },
            "keep_colors": {"default": defaults.keep_colors, "choices": list(KEEP_COLORS)},
            "device": {"default": defaults.device, "choices": list(DEVICES)},
            "optimizer": {"default": None, "choices": list(OPTIMIZERS)},
        },
    }
