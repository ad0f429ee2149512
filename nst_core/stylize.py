"""The public entry point: user images and options in, a stylised image out.

Everything about user images (channels, alpha, gray, colours, sizes) happens here; the
optimisation itself lives in `optimize.py`.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import colors, host, images, memory, network, optimize, tiling
from .devices import pick_device
from .errors import OutOfMemoryError
from .options import Options, Settings, resolve
from .weights import find_weights

ImageLike = np.ndarray | Image.Image


@dataclass(frozen=True)
class Job:
    """A resolved job: what `start` events report before any pixel is processed."""

    settings: Settings
    working_size: int
    plans: list[optimize.ScalePlan]
    output_size: tuple[int, int]  # (width, height)

    @property
    def iterations(self) -> int:
        return sum(p.iterations for p in self.plans)

    def memory_estimate(self, device_type: str = "cpu") -> int:
        """Peak bytes of the largest scale run whole (tiles, when a budget forces them, need less)."""
        return max(
            memory.estimate_peak_bytes(self.settings, p.width, p.height, device_type, p.iterations)
            for p in self.plans
        )


# A GPU makes the preset's size cheap: "auto" (no size given) works at twice it there, still
# never above the content's own size, and the memory budget decides whole image or tiles.
GPU_AUTO_SIZE_FACTOR = 2


def working_size(
    settings: Settings,
    width: int,
    height: int,
    output_size: tuple[int, int] | None,
    auto: bool = False,
    device_type: str = "cpu",
) -> int:
    """The preset's size, capped at the content's longest side unless a larger output is asked for."""
    cap = max(width, height)
    if output_size is not None:
        cap = max(cap, *output_size)
    size = settings.size * (GPU_AUTO_SIZE_FACTOR if auto and device_type != "cpu" else 1)
    return max(1, min(size, cap))


def plan_job(
    width: int,
    height: int,
    options: Options,
    n_styles: int = 1,
    output_size: tuple[int, int] | None = None,
    device_type: str = "cpu",
) -> Job:
    """Resolve `options` for a content of `width` x `height` on a device of `device_type`:
    sizes and iterations per scale."""
    settings = resolve(options, n_styles=n_styles)
    layers = (*settings.content_layers, *settings.style_layers)
    min_side = network.smallest_side(settings.model, layers)
    size = working_size(settings, width, height, output_size, options.size is None, device_type)
    plans = optimize.plan(width, height, settings, size, min_side)
    return Job(settings, size, plans, output_size or (width, height))


def stylize(
    content: ImageLike,
    styles: Sequence[ImageLike],
    options: Options,
    *,
    output_size: tuple[int, int] | None = None,
    progress: optimize.ProgressCallback | None = None,
    cancel: optimize.CancelToken | None = None,
    device: torch.device | None = None,
) -> np.ndarray:
    """Repaint `content` in the style of `styles`; float32 H x W x C like the content (or `output_size`)."""
    content_array = images.to_array(content, name="content image")
    style_arrays = [images.to_array(s, name=f"style image {i + 1}") for i, s in enumerate(styles)]
    height, width, channels = content_array.shape
    device = device or pick_device(resolve(options, n_styles=len(style_arrays)).device)
    job = plan_job(width, height, options, len(style_arrays), output_size, device.type)
    settings = job.settings
    rgb, alpha = images.split_alpha(content_array)
    if alpha is not None:
        rgb = images.fill_transparent(rgb, alpha)
    content_in, styles_in = _network_inputs(rgb, style_arrays, settings.keep_colors)

    budget = memory.budget_bytes(settings, device)
    needed = max(memory.job_bytes(settings, p.width, p.height, device.type, p.iterations) for p in job.plans)
    host.prepare(device, needed, budget)
    net = network.build_network(
        settings.model,
        weights_path(settings),
        (*settings.content_layers, *settings.style_layers),
        settings.pooling,
        device,
    )
    result = _run_on_device(net, content_in, styles_in, job, device, budget, progress, cancel)
    return _finish(result, rgb, alpha, channels, settings.keep_colors, job.output_size)


def _network_inputs(
    rgb: np.ndarray, styles: Sequence[np.ndarray], keep_colors: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    style_rgbs = [
        images.fill_transparent(*images.split_alpha(s)) if s.shape[2] in (2, 4) else images.split_alpha(s)[0]
        for s in styles
    ]
    if keep_colors == "luminance":
        return colors.gray_rgb(rgb), [colors.match_luminance(s, rgb) for s in style_rgbs]
    if keep_colors == "histogram":
        return rgb, [colors.match_color_statistics(s, rgb) for s in style_rgbs]
    return rgb, style_rgbs


def _run_on_device(
    net: network.VGGFeatures,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    job: Job,
    device: torch.device,
    budget: int,
    progress: optimize.ProgressCallback | None,
    cancel: optimize.CancelToken | None,
) -> np.ndarray:
    settings = job.settings
    last = job.plans[-1]
    content_t = images.to_tensor(images.resize(content, last.width, last.height), device)
    styles_t = [images.to_tensor(s, device) for s in styles]
    init_t = None
    if settings.init == "image" and settings.init_path:
        init_rgb, _ = images.split_alpha(images.load_image(settings.init_path))
        init_t = images.to_tensor(init_rgb, device)
    try:
        out = tiling.BudgetedRun(
            net,
            content_t,
            styles_t,
            settings,
            device.type,
            budget,
            init_image=init_t,
            autocast_dtype=autocast_dtype(device, settings.precision),
            progress=progress,
            cancel=cancel,
        ).run(job.plans)
    except RuntimeError as exc:  # torch.OutOfMemoryError is a RuntimeError; MPS raises a plain one
        if "out of memory" not in str(exc).lower():
            raise
        raise _out_of_memory(job, device) from None
    return images.from_tensor(out)


def _out_of_memory(job: Job, device: torch.device) -> OutOfMemoryError:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    # Memory grows with the pixel count: about half the pixels, rounded down to 64 px.
    smaller = max(64, int(job.working_size * 0.7) // 64 * 64)
    return OutOfMemoryError(
        f"Not enough memory on {device.type} for {job.plans[-1].width}x{job.plans[-1].height} px "
        f"(about {job.memory_estimate(device.type) / 2**30:.1f} GiB needed): "
        f"use --size {smaller} or --device cpu."
    )


def _finish(
    result: np.ndarray,
    content_rgb: np.ndarray,
    alpha: np.ndarray | None,
    channels: int,
    keep_colors: str,
    output_size: tuple[int, int],
) -> np.ndarray:
    width, height = output_size
    result = images.resize(result, width, height)
    if keep_colors == "luminance":
        result = colors.with_content_chroma(result, images.resize(content_rgb, width, height))
    if alpha is not None and alpha.shape != (height, width):
        alpha = images.resize(alpha[..., None], width, height)[..., 0]
    return images.merge_alpha(result, alpha, channels)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision for the network on CUDA; statistics and losses stay float32 (losses.py).

    On CPU only when asked for (`bf16`) and the CPU has bf16 instructions; `auto` stays fp32
    there: bf16 moved the final loss of a Gram run by 17% (docs/performance.md).
    """
    if device.type == "cpu":
        return torch.bfloat16 if precision == "bf16" and _cpu_has_bf16() else None
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: oneDNN runs bf16 convolutions natively (elsewhere it emulates them, slower)."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def weights_path(settings: Settings) -> Path:
    return Path(settings.weights) if settings.weights else find_weights(settings.model)


class _CallableModule(types.ModuleType):
    """If this module was imported before `nst_core.stylize` was first read, the package attribute is
    the module; calling it then still runs `stylize()`."""

    def __call__(self, *args: object, **kwargs: object) -> np.ndarray:
        return stylize(*args, **kwargs)  # type: ignore[arg-type]


sys.modules[__name__].__class__ = _CallableModule
