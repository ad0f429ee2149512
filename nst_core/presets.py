"""Named recipes as data: the published seed recipes and the three tuned user tiers.

Every default of the method lives here once; `options.resolve` overlays what the user set.
Layer names are VGG names (relu4_2, conv1_1, pool3); Keras-style aliases such as
block4_conv2 (a convolution followed by its ReLU) are accepted by the network module.

Weights are for the engine's normalisation (losses.py): every content and style term is a
relative error (about 1 when unrelated, 0 when matched) and layer weights are normalised to
sum 1, so a style weight of 10 means "one unit of content error is worth a tenth of the
style error". The published recipes' numbers were set for other normalisations (Caffe VGG,
sums over pixels); their ratios are kept here relative to the balanced preset: a recipe that
used a style weight 10x lower than usual still does. TV is the mean squared difference of
neighbouring pixels in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_PRESET = "balanced"
USER_PRESETS = ("fast", "balanced", "best")
# An editor's preview: the dialog's settings on a small copy, these many steps. On a 2-core CPU a
# 256 x 192 picture takes 9 s from a cold start and about half that from the warm engine
# (docs/gimp.md), inside the 15 s a user waits for a first look.
PREVIEW_SIZE = 256
PREVIEW_ITERATIONS = 30

VGG19_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# The user presets' style layers: without relu5_1. On ImageNet VGG16 (`balanced`, 384 px, four pairs,
# docs/quality.md "Layer weights") its weight at 0 moved more style at the same structure on three
# pairs (style judge -0.03 to -0.07) and matched on the fourth; by eye it stopped pasting the style's
# large shapes over faces. And the network then ends at relu4_2 (the content layer): a cheaper iteration.
USER_STYLE_LAYERS = VGG19_STYLE_LAYERS[:4]


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    description: str
    model: str = "vgg19"  # vgg19 | vgg16
    pooling: str = "max"  # max | avg
    size: int = 512  # longest side of the output, pixels
    iterations: int = 300  # total over all scales
    content_layers: tuple[str, ...] = ("relu4_2",)
    content_layer_weights: tuple[float, ...] = (1.0,)
    style_layers: tuple[str, ...] = VGG19_STYLE_LAYERS
    style_layer_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 0.0
    style_loss: str = "gram"  # gram | w2
    optimizer: str = "lbfgs"  # lbfgs | adam | gd
    learning_rate: float = 0.02  # adam / gd step on [0, 1] pixels
    init: str = "content"  # content | style-colors | noise (options.STARTS)
    multiscale: bool = True  # coarse-to-fine from min_scale up to size
    min_scale: int = 128
    cost: str = ""  # measured cost, shown by `nst_core presets`
    # The time the tier is meant to take: an automatic working size is the largest whose estimate fits
    # it on this device (the full layer where the device is fast enough); None: the preset's size.
    seconds: float | None = None
    user: bool = False  # offered in the GIMP menus
    # The relative content error (relu4_2 for VGG) the first scale aims at by choosing the style weight
    # (balance.py); None: the weights as written.
    content_target: float | None = None


# What the three menu tiers share (they differ in size and iterations). W2 rather than Gram:
# measured on a random-weight VGG19 (64 px, 30 L-BFGS iterations, the test images), at equal
# content error W2 reached a lower sliced-Wasserstein distance to the style's features, a
# yardstick neither loss optimises: 0.049 vs 0.078 at content error 0.34 (W2 weight 10, Gram
# 5), 0.074 vs 0.093 at 0.19-0.23. Equal layer weights (on USER_STYLE_LAYERS); a light TV term against
# L-BFGS speckle; coarse-to-fine from 128 px (sqrt(2) apart, iterations falling by sqrt(2) per
# scale). Iterations were sized so a square image at the tier's size took about 45 s, 2 min and
# 5.5 min on 2 CPU cores (AVX-512); the faster iteration since (channels-last, written-out loss
# gradients) brought that to 30 s, 80 s and 3.6 min, measured end to end; with the balance's runs
# of the first scale and the start without torchvision, 18-25 s, 55-65 s and 2.0-2.6 min
# (docs/performance.md: "The presets end to end"). In
# `python -m nst_core.bench --time-to-quality` `balanced` reaches in 85 s a total loss that
# single-scale L-BFGS has not reached in 4x the time (docs/performance.md). A 4:3 image costs 3/4.
# The start is the photo in the style's colours: on ImageNet VGG16 (`balanced`, 384 px, four pairs,
# docs/quality.md) it lowered the style distance on every pair at the same or better structure, most
# under a dark star field (0.694 -> 0.503), whose colour the photo's start spent the iterations moving.
_USER_TIER: dict[str, Any] = dict(
    user=True,
    style_loss="w2",
    style_layers=USER_STYLE_LAYERS,
    style_layer_weights=(1.0,) * len(USER_STYLE_LAYERS),
    style_weight=10.0,
    tv_weight=1.0,
    optimizer="lbfgs",
    init="style-colors",
    multiscale=True,
    min_scale=128,
    content_target=0.5,
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="gatys-vgg16",
            label="Gatys (VGG16)",
            description="Gatys et al. on VGG16: content block4_conv2, style block1_conv1..block4_conv1 "
            "equal weights, content 1, style 1000 (0.5 in this engine's normalisation), noise start, "
            "L-BFGS, 500 iterations, 512x512.",
            model="vgg16",
            size=512,
            iterations=500,
            content_layers=("block4_conv2",),
            style_layers=("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1"),
            style_layer_weights=(1.0, 1.0, 1.0, 1.0),
            content_weight=1.0,
            style_weight=0.5,
            init="noise",
            optimizer="lbfgs",
            multiscale=False,
        ),
        Preset(
            name="vgg16-avg",
            label="VGG16, average pooling",
            description="VGG16 with average pooling, style block1_conv2..block5_conv2 weighted "
            "0.05, 0.2, 0.2, 0.25, 0.3, content block4_conv2 weighted 1/10, L-BFGS.",
            model="vgg16",
            pooling="avg",
            content_layers=("block4_conv2",),
            content_layer_weights=(0.1,),
            style_layers=("block1_conv2", "block2_conv2", "block3_conv2", "block4_conv2", "block5_conv2"),
            style_layer_weights=(0.05, 0.2, 0.2, 0.25, 0.3),
            optimizer="lbfgs",
            multiscale=False,
        ),
        Preset(
            name="vgg19-tv",
            label="VGG19 with total variation",
            description="VGG19, style relu1_1..relu5_1, content relu3_2 and relu4_2, Gram divided by C*H*W, "
            "total-variation term, L-BFGS from noise.",
            content_layers=("relu3_2", "relu4_2"),
            content_layer_weights=(1.0, 1.0),
            tv_weight=5.0,
            init="noise",
            optimizer="lbfgs",
            multiscale=False,
        ),
        Preset(
            name="vgg19-adam",
            label="VGG19 with Adam",
            description="VGG19, style block1_conv1..block5_conv1 weighted 1.0, 0.8, 0.7, 0.2, 0.1, "
            "content block5_conv4, Adam, 400 px.",
            size=400,
            content_layers=("block5_conv4",),
            style_layers=("block1_conv1", "block2_conv1", "block3_conv1", "block4_conv1", "block5_conv1"),
            style_layer_weights=(1.0, 0.8, 0.7, 0.2, 0.1),
            optimizer="adam",
            multiscale=False,
        ),
        Preset(
            name="vgg19-gd",
            label="VGG19, gradient descent",
            description="VGG19, start from the content, plain gradient steps, best image kept.",
            optimizer="gd",
            init="content",
            multiscale=False,
        ),
        Preset(
            name="fast",
            label="Fast",
            description="Quick look: coarse-to-fine up to 384 px, few iterations.",
            size=384,
            iterations=50,
            cost="about 25 s on a 2-core CPU (384 px square; measured 18-25 s)",
            seconds=30.0,
            **_USER_TIER,
        ),
        Preset(
            name="balanced",
            label="Balanced",
            description="The default: coarse-to-fine up to 512 px.",
            size=512,
            iterations=110,
            cost="about 65 s on a 2-core CPU (512 px square; measured 55-65 s)",
            seconds=80.0,
            **_USER_TIER,
        ),
        Preset(
            name="best",
            label="Best",
            description="Highest quality: coarse-to-fine up to 768 px, more iterations.",
            size=768,
            iterations=200,
            cost="about 2.5 min on a 2-core CPU (768 px square; measured 120-154 s)",
            seconds=210.0,
            **_USER_TIER,
        ),
    )
}


def presets_table() -> str:
    """`presets` in words: one row per preset, the default marked, and the ones GIMP's menus offer."""
    rows = [("name", "size", "iters", "cost", "description")]
    for p in PRESETS.values():
        name = p.name + (" *" if p.name == DEFAULT_PRESET else "")
        rows.append((name, str(p.size), str(p.iterations), p.cost or "-", p.description))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    lines.append(
        f"\n* the default. Menus in GIMP offer: {', '.join(p.name for p in PRESETS.values() if p.user)}."
    )
    return "\n".join(lines)
