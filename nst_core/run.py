"""The engine's entry: user images in, a plan made and carried out, a stylised image out (`stylize`).

Every front end (a job, the service, batches, frames, the cluster's workers) and the library call
`stylize`, and hear of the run through its callbacks, not through events. Everything about user
images (channels, alpha, gray, colours, sizes) happens here; the optimisation of a scale lives in
`optimize.py` (whole) and `tiling.py` (in tiles). Running out of memory has one path: a scale falls
back to ever smaller tiles, and whatever still fails becomes the one message of
`memory.not_enough_memory`.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from . import balance, colors, devices, images, memory, network, optimize, previews, regions, stylecache
from .errors import Cancelled
from .optimize import RunContext
from .options import SNAPSHOT_EVERY, Options, check_mask_count
from .plan import Output, Plan, make_plan, next_tile, tile_bytes
from .tiling import ScalePlan

ImageLike = np.ndarray | Image.Image
StartCallback = Callable[[Plan], None]


@dataclass(frozen=True)
class Snapshot:
    """A running job's current picture, as the result would be written if the run ended now."""

    image: np.ndarray  # H x W x C float32 like the result: at the output's size when `full_size`
    iteration: int  # iterations done in the whole job
    fraction: float  # of the job's work
    full_size: bool  # False: at the working size, the output's upscale left out (it cost too much)


SnapshotCallback = Callable[[Snapshot], None]


class Watch:
    """A front end's hold on a run beyond progress and cancel: `on_snapshot` gets the current picture
    every `every` seconds of work at the least (never more often than a twentieth of the run's time
    allows), and once `stop` is set the run ends after the iteration under way and keeps its picture
    as the result. The run fills in `stopped`, `iteration` (done in the whole job), and the snapshots'
    count and cost in seconds (`taken`, `seconds`)."""

    def __init__(
        self,
        on_snapshot: SnapshotCallback | None = None,
        every: float = SNAPSHOT_EVERY,
        stop: optimize.CancelToken | None = None,
    ) -> None:
        self.on_snapshot = on_snapshot
        self.every = every
        self.stop = stop
        self.stopped = False
        self.iteration = 0
        self.taken = 0
        self.seconds = 0.0


def stylize(
    content: ImageLike,
    styles: Sequence[ImageLike],
    options: Options,
    *,
    output_size: Output | None = None,
    progress: optimize.ProgressCallback | None = None,
    on_start: StartCallback | None = None,
    cancel: optimize.CancelToken | None = None,
    device: torch.device | None = None,
    masks: Sequence[ImageLike] | None = None,
    frame: FrameStart | None = None,
    style_cache: stylecache.StyleCache | None = None,
    watch: Watch | None = None,
    preview: bool = False,
) -> np.ndarray:
    """Repaint `content` in the style of `styles`: the engine's one entry, for the library and every
    front end (a job, the service's workers, batches and frames).

    Numpy arrays or PIL images in; the plan made (`on_start` gets it before the first iteration),
    carried out, and the result out: float32 H x W x C like the content, at `output_size` ("content",
    the default; "working": the working size; or (width, height)). `masks`, one per style (white =
    that style), paint each style in its region (regions.py); `frame` starts an animation's frame from
    the previous one (frames.py); `device` overrides the options' (a service's worker); `style_cache`
    keeps the styles' targets for later runs (a warm engine's, stylecache.py); `watch` takes snapshots
    and stops the run early, keeping its picture (`Watch`); `preview` (with a `style_cache`) starts
    from the last preview of the same picture when only weights changed, and is kept for the next
    (previews.py)."""
    check_mask_count(None if masks is None else len(masks), len(styles))
    content_array = _checked(content, "content image")
    style_arrays = [_checked(s, f"style image {i + 1}") for i, s in enumerate(styles)]
    mask_arrays = None if masks is None else [_checked(m, f"style mask {i + 1}") for i, m in enumerate(masks)]
    height, width = content_array.shape[:2]
    plan = make_plan(
        options,
        (width, height),
        len(style_arrays),
        output=output_size or "content",
        device=device,
        masked=mask_arrays is not None,
        framed=frame is not None,
    )
    if on_start is not None:
        on_start(plan)
    result = run_plan(
        plan, content_array, style_arrays, progress, cancel, frame, mask_arrays, style_cache, watch, preview
    )
    if cancel is not None and cancel.is_set():
        raise Cancelled()  # set during the last iteration: the caller must not take it for a result
    return result


def _checked(image: ImageLike, name: str) -> np.ndarray:
    """`image` as the engine's checked array (`images.to_array`). One that already is such an array (what
    the protocol's readers give) passes as it is: a large picture is not held twice."""
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.float32
        and image.ndim == 3
        and 1 <= image.shape[2] <= 4
        and image.size > 0
        and image.flags.c_contiguous
        and image.min() >= 0.0  # NaN compares false: it goes on to to_array, which names it
        and image.max() <= 1.0
    ):
        return image
    return images.to_array(image, name=name)


@dataclass(frozen=True)
class FrameStart:
    """How a frame of an animation starts (nst_core/frames.py): from `init`, the previous result warped
    onto it, and held near it by the temporal term where `mask` (H x W, 0..1) trusts the flow. Both
    are at the output's size."""

    init: np.ndarray  # H x W x 3
    mask: np.ndarray  # H x W
    weight: float


def run_plan(
    plan: Plan,
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    progress: optimize.ProgressCallback | None = None,
    cancel: optimize.CancelToken | None = None,
    frame: FrameStart | None = None,
    masks: Sequence[np.ndarray] | None = None,
    style_cache: stylecache.StyleCache | None = None,
    watch: Watch | None = None,
    preview: bool = False,
) -> np.ndarray:
    """Stylise checked H x W x C arrays (`images.to_array`) as `plan` says; `masks` (checked arrays of any
    size, one per style, as `stylize` checks them) give each style its region; `watch` and `preview` as
    `stylize`'s."""
    settings, device = plan.settings, plan.device
    if frame is not None:
        settings = replace(settings, init="image")
    devices.prepare(device, plan.job_bytes, plan.budget)
    last = plan.scales[-1]
    try:  # from the first copy of the pixels to the last: any allocation can be the one that fails
        rgb, alpha = images.split_alpha(content)
        if alpha is not None:
            rgb = images.fill_transparent(rgb, alpha)
        content_in, styles_in = _network_inputs(rgb, styles, settings.keep_colors)
        if frame is not None:
            init = frame.init
        elif settings.init_path:
            init = images.split_alpha(images.load_image(settings.init_path))[0]
        elif settings.init == "style-colors":
            init = _in_style_colors(content_in, styles_in, settings.style_blend, masks, plan.scales[0])
        else:
            init = None
        layers = (*settings.content_layers, *settings.style_layers)
        balanced = _balanced(plan.scales[0], framed=frame is not None)
        net = network.build_network(settings.model, plan.weights, layers, settings.pooling, device)
        ctx = RunContext(
            network=net,
            settings=settings,
            content=images.to_tensor(images.resize(content_in, last.width, last.height), device),
            styles=[images.to_tensor(s, device) for s in styles_in],
            init_image=None if init is None else images.to_tensor(init, device),
            autocast=plan.autocast,
            clock=optimize.Clock(plan.seconds),
            progress=progress,
            cancel=cancel,
            temporal=None if frame is None else _temporal(frame, device),
            masks=None if masks is None else _masks(masks, content.shape[:2], last, device),
            style_cache=None
            if style_cache is None
            else _cached_styles(
                style_cache, plan, styles_in, content_in if preview or balanced else None, preview
            ),
            steering=None if watch is None else _steering(watch, plan, rgb, alpha, content.shape[2]),
            pace=devices.IdleCoresPace() if device.type == "cpu" else None,
        )
        if ctx.steering is not None:
            ctx.steering.begin()
        remembered = None
        if ctx.style_cache is not None and balanced:
            remembered = _remembered_balance(ctx.style_cache, plan, masks)
        if preview and ctx.style_cache is not None and frame is None:
            key = previews.picture_key(ctx.style_cache, plan, masks)
            image = _run_preview(ctx, plan, remembered, key)
        else:
            image = _run_scales(ctx, plan, remembered)
        result = images.from_tensor(image)
        if watch is not None and ctx.steering is not None:
            steering = ctx.steering
            watch.stopped, watch.iteration = steering.stopped, steering.iterations
            watch.taken, watch.seconds = steering.taken, steering.seconds
        return _finish(result, rgb, alpha, content.shape[2], settings.keep_colors, plan.output_size)
    except Exception as exc:  # a scale's own failures are already NstErrors; this is the rest
        if not memory.is_out_of_memory(exc):
            raise
    raise memory.not_enough_memory(settings, device, last.width, last.height, last.iterations, plan.job_bytes)


def _cached_styles(
    cache: stylecache.StyleCache,
    plan: Plan,
    styles_in: Sequence[np.ndarray],
    content_in: np.ndarray | None,
    preview: bool,
) -> optimize.CachedStyles:
    """The run's view of a warm engine's cache: the network (model, weights file, pooling), the device
    and the precision shape every target; each style's pixels (after keep_colors) name its own, and
    the content's (`content_in`, where a key is about this picture: a preview's, the balance's trials)
    name the picture, and for a preview, with the size it is read at, its features."""
    settings = plan.settings
    scoped = cache.scoped(
        settings.model,
        stylecache.file_stamp(plan.weights),
        settings.pooling,
        str(plan.device),
        str(plan.autocast),
    )
    picture = "" if content_in is None else stylecache.pixels_digest(content_in)
    last = plan.scales[-1]
    content = f"{picture} at {last.width}x{last.height}" if preview else None
    digests = tuple(stylecache.pixels_digest(s) for s in styles_in)
    return optimize.CachedStyles(scoped, digests, picture, content)


def _steering(
    watch: Watch, plan: Plan, rgb: np.ndarray, alpha: np.ndarray | None, channels: int
) -> optimize.Steering:
    """The run's side of `watch`: each snapshot finished as the result would be (colours, alpha, size)."""
    on_snapshot = watch.on_snapshot
    last = plan.scales[-1]
    keep_colors = plan.settings.keep_colors

    def take(image: torch.Tensor, iteration: int, fraction: float, full_size: bool) -> None:
        assert on_snapshot is not None
        size = plan.output_size if full_size else (last.width, last.height)
        picture = _finish(images.from_tensor(image), rgb, alpha, channels, keep_colors, size)
        # Nothing is upscaled when the output is the working size: that snapshot is the full one.
        on_snapshot(Snapshot(picture, iteration, fraction, full_size or size == plan.output_size))

    return optimize.Steering(None if on_snapshot is None else take, watch.every, watch.stop)


def _temporal(frame: FrameStart, device: torch.device) -> optimize.Temporal:
    mask = torch.from_numpy(np.ascontiguousarray(frame.mask, dtype=np.float32))[None, None].to(device)
    return optimize.Temporal(images.to_tensor(frame.init, device), mask, frame.weight)


def _in_style_colors(
    content: np.ndarray,
    styles: Sequence[np.ndarray],
    blend: Sequence[float],
    masks: Sequence[np.ndarray] | None,
    first: ScalePlan,
) -> np.ndarray:
    """The photo in the styles' colours (each region in its own style's) at the first scale's size:
    the only scale that starts from it."""
    small = images.resize(content, first.width, first.height)
    planes = None if masks is None else regions.content_masks(masks, first.width, first.height)
    return colors.in_style_colors(small, styles, blend, planes)


def _masks(
    masks: Sequence[np.ndarray], content_size: tuple[int, int], last: ScalePlan, device: torch.device
) -> list[torch.Tensor]:
    """The masks made to fit the content (`regions.content_masks`), at the last scale's size."""
    height, width = content_size
    planes = regions.content_masks(masks, width, height)
    size = (last.height, last.width)
    return [regions.resize_mask(torch.from_numpy(p)[None, None].to(device), size) for p in planes]


def _balanced(scale: ScalePlan, framed: bool) -> bool:
    """Whether the balance runs `scale`: the plan gave it trials, and it is no frame (a frame keeps to
    the weights: no flicker)."""
    return scale.trials > 1 and not framed


def _remembered_balance(
    cached: optimize.CachedStyles, plan: Plan, masks: Sequence[np.ndarray] | None
) -> balance.Remembered:
    """A warm engine's list of the balance's trials for this picture: its key is everything the first
    scale's content error depends on (the pixels, the styles, the masks, the first scale, the settings)
    except the style weight and the target, which the trials are about."""
    settings = replace(plan.settings, style_weight=0.0, strength=1.0, content_target=None)
    key = (
        "balance",
        cached.picture,
        cached.digests,
        tuple(stylecache.pixels_digest(m) for m in masks or ()),
        plan.scales[0],
        settings,
    )
    return cached.cache.get(key, list)


def _run_scales(ctx: RunContext, plan: Plan, remembered: balance.Remembered | None = None) -> torch.Tensor:
    """Coarse to fine; returns the best iterate of the last scale (1 x 3 x H x W). `remembered`: a warm
    engine's earlier balance trials for this picture (balance.py)."""
    image = None
    for index, scale in enumerate(plan.scales):
        if _balanced(scale, framed=ctx.temporal is not None):
            image, ctx = balance.balanced_first_scale(
                ctx,
                scale.trials,
                lambda c, start, iterations, first=scale: _run_scale(c, plan, 0, first, start, iterations),
                remembered,
            )
        else:
            image = _run_scale(ctx, plan, index, scale, image)
        if ctx.steering is not None and ctx.steering.stopped:
            break  # a coarse scale's picture: `_finish` upscales it to the output like any other
    assert image is not None
    return image


def _run_preview(
    ctx: RunContext, plan: Plan, remembered: balance.Remembered | None, key: Hashable
) -> torch.Tensor:
    """A preview (previews.py): from this picture's last one when only weights changed, else from
    scratch; kept for the next unless stopped early."""
    assert ctx.style_cache is not None
    way = previews.follow(ctx.style_cache, key, ctx.settings, remembered)
    carry = optimize.Carry(balance.CARRIED_PAIRS)
    if way is None:
        image = _run_scales(replace(ctx, carry=carry), plan, remembered)
    elif way.same:
        return way.kept.image
    else:
        top = len(plan.scales) - 1
        for index in range(top):
            ctx.clock.settle(index, 0.0)  # the scales below are the last preview's: none of their work
        carry.given = way.kept.curvature
        chosen = replace(ctx, settings=way.settings, carry=carry)
        start = previews.start(way, ctx.content, ctx.init_image)
        scale = plan.scales[top]
        if carry.given is not None:  # fewer iterations only where they start from the curvature
            scale = replace(scale, iterations=min(scale.iterations, previews.FOLLOW_ITERATIONS))
        image = _run_scale(chosen, plan, top, scale, start)
    if ctx.steering is None or not ctx.steering.stopped:
        previews.keep(ctx.style_cache, key, image, ctx.settings, carry.left)
    return image


def _run_scale(
    ctx: RunContext,
    plan: Plan,
    index: int | None,
    scale: ScalePlan,
    previous: torch.Tensor | None,
    iterations: int | None = None,
) -> torch.Tensor:
    """A scale whole or in the plan's tiles, for its own or `iterations` iterations; on running out of
    memory, again in ever smaller tiles."""
    tile = scale.tile
    while True:
        try:
            return optimize.optimize_scale(ctx, index, scale, previous, tile, iterations)
        except Exception as exc:  # only running out of memory is handled here
            if not memory.is_out_of_memory(exc):
                raise
        memory.release_cached(plan.device)
        smaller = next_tile(tile, scale)
        if smaller is None:
            needed = tile_bytes(plan.settings, scale, tile, plan.device.type)
            width, height, iterations = scale.width, scale.height, scale.iterations
            raise memory.not_enough_memory(plan.settings, plan.device, width, height, iterations, needed)
        tile = smaller


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


def _finish(
    result: np.ndarray,
    content_rgb: np.ndarray,
    alpha: np.ndarray | None,
    channels: int,
    keep_colors: str,
    output_size: tuple[int, int],
) -> np.ndarray:
    width, height = output_size
    guide = (
        images.resize(content_rgb, width, height) if content_rgb.shape[:2] != (height, width) else content_rgb
    )
    if guide.shape[2] == 1:
        guide = np.repeat(guide, 3, axis=2)
    # Painted below the layer's size: the result's edges follow the photo's at the layer's size.
    result = images.guided_upscale(result, guide, width, height)
    if keep_colors == "luminance":
        result = colors.with_content_chroma(result, images.resize(content_rgb, width, height))
    if alpha is not None and alpha.shape != (height, width):
        alpha = images.resize(alpha[..., None], width, height)[..., 0]
    return images.merge_alpha(result, alpha, channels)
