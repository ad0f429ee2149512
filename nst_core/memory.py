"""How much memory a job will need, before it starts, and how much the device can give.

The model is per pixel: the activations the network keeps for the backward pass and the
gradients alive while it runs, layer by layer from the VGG layout, times the bytes per
element of the chosen precision; plus fixed costs (the torch runtime, the weights, the
images). Its constants were fitted to peak RSS measured on CPU (docs/performance.md) and
are checked by tests/test_memory.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import devices
from .network import _blank_features, layer_index
from .optimize import LBFGS_HISTORY
from .options import Settings

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
    channels = 3
    for layer in list(_blank_features(model))[: deepest + 1]:
        if isinstance(layer, nn.Conv2d):
            shapes.append(LayerShape("conv", channels, layer.out_channels, height, width))
            channels = layer.out_channels
        elif isinstance(layer, nn.ReLU):
            shapes.append(LayerShape("relu", channels, channels, height, width))
        else:
            shapes.append(LayerShape("pool", channels, channels, height, width))
            height, width = height // 2, width // 2
    return shapes


# Fixed costs, measured: the RSS of a process that has imported torch (CPU), and what the
# allocator and the convolution library keep besides the tensors themselves.
RUNTIME_BYTES = {"cpu": 720 * MIB, "cuda": 0, "mps": 0}
SAFETY = 1.1  # measured peaks were 0.95 to 1.11 times the model: err on the side of tiling
FREE_SHARE = 0.85  # of the free memory: room for the images, the preview and other programs
LBFGS_VECTORS = 8  # image, gradient, direction, previous gradient, best iterate, start, content, spare


def element_bytes(precision: str, device_type: str) -> int:
    """Bytes per activation: 2 under autocast on a GPU, else 4.

    On CPU a bf16 run peaked as high as fp32 (the losses take float32 copies of the features
    and the weights are kept in both types), so it is counted as fp32 there.
    """
    if device_type == "cpu" or precision == "fp32":
        return 4
    return 2


def activation_bytes(settings: Settings, width: int, height: int, device_type: str) -> int:
    """Peak bytes of the network's tensors during one forward and backward pass at width x height."""
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
    return int(per_pixel * SAFETY) + fixed_bytes(settings, device_type)


def job_bytes(
    settings: Settings, width: int, height: int, device_type: str, iterations: int | None = None
) -> int:
    """What a scale needs beyond the engine's own runtime: the part a memory budget limits."""
    runtime = RUNTIME_BYTES.get(device_type, 0)
    return estimate_peak_bytes(settings, width, height, device_type, iterations) - runtime


def budget_bytes(settings: Settings, device: torch.device) -> int:
    """--max-memory, or most of what the device has free now (available RAM, free GPU memory)."""
    if settings.max_memory is not None:
        return int(settings.max_memory * MIB)
    _, free = devices.memory(device)
    if free is None:
        return 1 << 62  # the platform does not tell: never tile on its account
    return int(free * FREE_SHARE)
