"""How much memory a job will need, before it starts, how much the device can give, and the one
out-of-memory path: the detector every handler uses and the message every one of them gives.

The model is per pixel: the activations the network keeps for the backward pass and the
gradients alive while it runs, layer by layer from the VGG layout, times the bytes per
element of the chosen precision; plus fixed costs (the torch runtime, the weights, the
images). Its constants were fitted to peak RSS measured on CPU (docs/performance.md) and
are checked by tests/test_memory.py.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from . import devices
from .errors import OutOfMemoryError
from .images import fit_size
from .network import blank_features, layer_index
from .optimize import LBFGS_HISTORY
from .options import LIMITS, Settings
from .readable import data_size

MIB = 1 << 20


@dataclass(frozen=True)
class LayerShape:
    """One layer of the stack at a given image size: kind is conv, relu or pool."""

    kind: str
    channels_in: int
    channels_out: int
    height: int  # of the layer's input
    width: int

    @property
    def input_elements(self) -> int:
        return self.channels_in * self.height * self.width

    @property
    def output_elements(self) -> int:
        if self.kind == "pool":
            return self.channels_out * (self.height // 2) * (self.width // 2)
        return self.channels_out * self.height * self.width


def layer_shapes(model: str, layer_names: tuple[str, ...], height: int, width: int) -> list[LayerShape]:
    """The layers an image of height x width passes through, up to the deepest named one."""
    deepest = max(layer_index(model, name) for name in layer_names)
    shapes: list[LayerShape] = []
    for kind, channels_in, channels_out in _layout(model)[: deepest + 1]:
        shapes.append(LayerShape(kind, channels_in, channels_out, height, width))
        if kind == "pool":
            height, width = height // 2, width // 2
    return shapes


@functools.cache
def _layout(model: str) -> tuple[tuple[str, int, int], ...]:
    """(kind, channels in, channels out) of every layer of `model`: planning asks for it often."""
    layout = []
    channels = 3
    for layer in blank_features(model):
        if isinstance(layer, nn.Conv2d):
            layout.append(("conv", channels, layer.out_channels))
            channels = layer.out_channels
        elif isinstance(layer, nn.ReLU):
            layout.append(("relu", channels, channels))
        else:
            layout.append(("pool", channels, channels))
    return tuple(layout)


# Fixed costs, measured: the RSS of a process that has imported torch (CPU), and what the
# allocator and the convolution library keep besides the tensors themselves. 720 MiB while the engine
# imported torchvision, which was 160 MiB of it (after the imports 673 -> 511 MiB, after a 32 px job
# 834 -> 674 MiB, 2 cores, AMD EPYC).
RUNTIME_BYTES = {"cpu": 560 * MIB, "cuda": 0, "mps": 0}
# A whole scale's tensors are counted with a margin, and beside them both a whole and a tiled scale count
# what the allocator and the convolution library keep. Whole jobs then peaked 2-21% under the estimate
# (VGG19, 256 to 1024 px); a tiled scale (blocks of 0.2 to 3.7 MP) peaked at 0.955 times its tensors plus
# about 80 MiB, so its blocks take no margin, and the tiles grow until the peak is within 10% under the
# budget (docs/performance.md).
SAFETY = 1.1
PASS_OVERHEAD = 128 * MIB
FREE_SHARE = 0.85  # of the free memory: room for the images, the preview and other programs
UNKNOWN_BUDGET = 1 << 62
LBFGS_VECTORS = 8  # image, gradient, direction, previous gradient, best iterate, start, content, spare


def element_bytes(precision: str, device_type: str) -> int:
    """Bytes per activation: 2 under autocast on a GPU, else 4.

    On CPU a bf16 run is counted as fp32: the losses take float32 copies of the features and the
    weights are kept in both types. There it reads high, on the safe side: the memory test's two-tile
    job (tests/test_memory.py) peaked at 0.72 of its budget in bf16 (AMX) where fp32 reaches 0.85-1.0.
    """
    if device_type == "cpu" or precision == "fp32":
        return 4
    return 2


def activation_bytes(settings: Settings, width: int, height: int, device_type: str) -> int:
    """Peak bytes of the network's tensors during one forward and backward pass at width x height (a
    whole scale, or one block of a tiled scale)."""
    layers = settings.content_layers + settings.style_layers
    shapes = layer_shapes(settings.model, layers, height, width)
    size = element_bytes(settings.precision, device_type)
    named = {layer_index(settings.model, n) for n in layers}
    kept = 0  # what autograd keeps from the forward pass for the backward pass
    for index, shape in enumerate(shapes):
        if shape.kind == "relu" or index in named:
            kept += shape.output_elements * size
        if shape.kind == "pool":
            kept += shape.output_elements * (8 + size)  # int64 argmax indices and the output
        if shape.kind == "conv" and size != 4 and index == 0:
            kept += shape.input_elements * size  # the autocast copy of the image
    for name in settings.content_layers:
        # Kept: the content target and the difference to it (float32); while the loss and its
        # gradient are computed, two more of that size exist for a moment.
        kept += 4 * shapes[layer_index(settings.model, name)].output_elements * 4
    style = [shapes[layer_index(settings.model, n)].output_elements for n in settings.style_layers]
    # The style term's gradient at every style layer exists at once, from the start of the backward pass:
    # the loss nodes come last in the graph, so autograd runs them all first (and the W2 loss is one node
    # for all its layers; regions and the blocks of a tiled scale hand the gradients over themselves).
    # Left out, whole jobs peaked up to 17% over the estimate (docs/performance.md).
    kept += sum(style) * size
    if settings.masked:
        # Regions gather each layer's masked sums through a float32 copy of its features and a weighted one.
        kept += 2 * max(style) * 4
    largest = max(s.output_elements for s in shapes)
    # Backward at the first block holds, at once, the gradient arriving from deeper layers,
    # the Gram term's gradient, their sum and the ReLU's: the largest tensors of the run.
    return kept + 4 * largest * size


def optimizer_bytes(settings: Settings, width: int, height: int, iterations: int | None = None) -> int:
    history = LBFGS_HISTORY if settings.optimizer == "lbfgs" else 1
    pairs = min(history, max(1, iterations or settings.iterations))
    return (2 * pairs + LBFGS_VECTORS) * 3 * width * height * 4


def fixed_bytes(settings: Settings, device_type: str) -> int:
    layers = settings.content_layers + settings.style_layers
    shapes = layer_shapes(settings.model, layers, 1, 1)
    parameters = sum(s.channels_in * s.channels_out * 9 + s.channels_out for s in shapes if s.kind == "conv")
    return RUNTIME_BYTES.get(device_type, 0) + 2 * parameters * 4


def estimate_peak_bytes(
    settings: Settings, width: int, height: int, device_type: str, iterations: int | None = None
) -> int:
    """Peak memory of a job whose largest scale is width x height on `device_type` (cpu, cuda, mps).

    On CPU this is the process's peak resident size; on a GPU the peak of allocated tensors.
    `iterations` at that scale (default: the whole job's) bounds the optimiser's history.
    """
    per_pixel = activation_bytes(settings, width, height, device_type) + optimizer_bytes(
        settings, width, height, iterations
    )
    return int(per_pixel * SAFETY) + PASS_OVERHEAD + fixed_bytes(settings, device_type)


def job_bytes(
    settings: Settings, width: int, height: int, device_type: str, iterations: int | None = None
) -> int:
    """What a scale needs beyond the engine's own runtime: the part a memory budget limits."""
    runtime = RUNTIME_BYTES.get(device_type, 0)
    return estimate_peak_bytes(settings, width, height, device_type, iterations) - runtime


def tiled_job_bytes(
    settings: Settings,
    width: int,
    height: int,
    blocks: Iterable[tuple[int, int]],
    device_type: str,
    iterations: int,
) -> int:
    """`job_bytes` of a width x height scale run in `blocks` (each block's width and height, its margins
    included): the largest block's network pass, and beside it the whole image's optimiser vectors,
    content features at the content layers, and canvases."""
    block = max(activation_bytes(settings, w, h, device_type) for w, h in set(blocks))
    whole = optimizer_bytes(settings, width, height, iterations) + canvas_bytes(width, height)
    shapes = layer_shapes(settings.model, settings.content_layers, height, width)
    content = sum(shapes[layer_index(settings.model, n)].output_elements * 4 for n in settings.content_layers)
    runtime = RUNTIME_BYTES.get(device_type, 0)
    return block + whole + content + PASS_OVERHEAD + fixed_bytes(settings, device_type) - runtime


def budget_bytes(settings: Settings, device: torch.device) -> int:
    """--max-memory, or most of what the device has free now (available RAM, free GPU memory)."""
    if settings.max_memory is not None:
        return int(settings.max_memory * MIB)
    _, free = devices.memory(device)
    if free is None:
        return UNKNOWN_BUDGET  # the platform does not tell: never tile on its account
    return int(free * FREE_SHARE)


def canvas_bytes(width: int, height: int) -> int:
    """The full-size images of a tiled scale beside the optimiser's vectors: the gradient the blocks
    add up, the total variation's differences and their gradient, and the upsampling's scratch."""
    return 4 * 3 * width * height * 4


def largest_side(fits: Callable[[int], bool], low: int, high: int) -> int | None:
    """The largest side from `low` to `high` (a multiple of 16 above `low`) that `fits`, or None."""
    high = max(low, high)
    if not fits(low):
        return None
    while high - low > 16:
        middle = (low + high) // 2 // 16 * 16
        if middle <= low:
            break
        if fits(middle):
            low = middle
        else:
            high = middle
    return low


# ---- running out of memory -------------------------------------------------------------------


# What the allocators say in a plain RuntimeError: MPS and CUDA ("out of memory"), the CPU's
# ("can't allocate memory"), and oneDNN, whose convolutions cannot create their primitive when its
# scratch memory cannot be had (seen under an address-space limit, tests/test_out_of_memory.py).
OUT_OF_MEMORY_TEXTS = ("out of memory", "can't allocate memory", "could not create a primitive")
# torch.OutOfMemoryError is newer torch's device-neutral name; torch 2.2.2, the last for Intel Macs,
# has only CUDA's.
TORCH_OUT_OF_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says that an allocation failed: torch.OutOfMemoryError, MemoryError, or one of
    the allocators' RuntimeErrors."""
    if isinstance(exc, (TORCH_OUT_OF_MEMORY, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(words in text for words in OUT_OF_MEMORY_TEXTS)


def release_cached(device: torch.device) -> None:
    """Hand the allocators' cached blocks back, so that the next try (and the free memory read) has them.

    On the CPU that is glibc's kept heap (devices.keep_freed_memory): a job that ran out of memory is at
    its limit, where keeping freed memory only fragments it, so the rest of the job goes without.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    else:
        devices.keep_freed_memory(False)


def not_enough_memory(
    settings: Settings,
    device: torch.device,
    width: int,
    height: int,
    iterations: int,
    needed: int,
    available: int | None = None,
) -> OutOfMemoryError:
    """The one out-of-memory error: what `width` x `height` px needed, what this device has (the
    budget --max-memory sets, or `available`, or what is free now), and the largest working size
    whose whole-image job needs less than both."""
    if available is None:
        release_cached(device)
        available = budget_bytes(settings, device)
    room = min(available, needed - 1)

    def size_fits(side: int) -> bool:
        w, h = fit_size(width, height, side)
        return job_bytes(settings, w, h, device.type, iterations) <= room

    size = largest_side(size_fits, int(LIMITS["size"][0]), max(width, height) - 1)
    explicit = settings.max_memory is not None
    has = f"a budget of {_amount(available)}" if explicit else f"{_amount(available)} free"
    budget_too_small = explicit and available < needed
    fixes = [f"allow at least {math.ceil(needed / MIB)} MiB (--max-memory)"] if budget_too_small else []
    if size is not None:
        fixes.append(f"use a working size of {size} px or less (--size {size})")
    if not budget_too_small:
        fixes.append("close other programs")
    if device.type != "cpu":
        fixes.append("use the CPU (--device cpu)")
    advice = fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + " or " + fixes[-1]
    return OutOfMemoryError(
        f"Not enough {device.type} memory for {width}x{height} px (about {_amount(needed)} needed, {has}): "
        f"{advice}."
    )


def _amount(count: int) -> str:
    if count >= UNKNOWN_BUDGET:
        return "an unknown amount"
    return data_size(count)
