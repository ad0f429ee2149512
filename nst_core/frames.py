"""Animation frames without flicker (Ruder et al. 2016, "Artistic style transfer for videos").

Each frame after the first starts from the previous result warped onto it by the optical flow between
the two content frames, and a temporal term holds it near that warped result where the flow is
reliable. Reliable means: the backward and forward flows agree (no occlusion), no motion boundary,
and the pixel came from inside the previous frame. Where an object appears nothing is reliable: the
frame starts from its own content there and is painted anew, so no stroke of the previous frame
ghosts on. The flow is OpenCV's DIS (dense inverse search), which needs no trained weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .run import FrameStart

# Ruder et al.'s thresholds, in pixels of the working size.
CONSISTENCY = (0.01, 0.5)
MOTION_BOUNDARY = (0.01, 0.002)
PHOTOMETRIC = 0.08  # mean absolute RGB difference (0..1) above which a warped pixel is not the same one


def _cv2():  # noqa: ANN202 (cv2 has no type stubs)
    import cv2

    return cv2


def _gray8(rgb: np.ndarray) -> np.ndarray:
    from .colors import luma

    gray = luma(rgb[..., :3]) if rgb.shape[2] >= 3 else rgb[..., 0]
    return (np.clip(gray, 0, 1) * 255).round().astype(np.uint8)


def flow(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Dense flow (H x W x 2, in pixels) such that source(p) ~ target(p + flow(p)); H x W x C arrays."""
    cv2 = _cv2()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(_gray8(source), _gray8(target), None)


def warp(image: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """image(p + displacement(p)) for every pixel p, bilinear, the border repeated."""
    cv2 = _cv2()
    height, width = displacement.shape[:2]
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    map_x, map_y = x + displacement[..., 0], y + displacement[..., 1]
    warped = cv2.remap(
        image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return warped.reshape(image.shape)


def reliable(
    backward: np.ndarray,
    forward: np.ndarray,
    here: np.ndarray | None = None,
    before: np.ndarray | None = None,
) -> np.ndarray:
    """Where the warp by `backward` (this frame to the previous) can be trusted: 1, else 0 (H x W).

    `forward` is the previous frame's flow to this one. Given the two frames (`here`, `before`), also
    where the warped previous frame looks like this one: an object that appears on a plain ground
    gets a flow of zero that both flows agree on, and only its colour says it is new."""
    height, width = backward.shape[:2]
    forward_there = warp(forward, backward)
    mismatch = np.sum((backward + forward_there) ** 2, axis=2)
    size = np.sum(backward**2, axis=2) + np.sum(forward_there**2, axis=2)
    consistent = mismatch <= CONSISTENCY[0] * size + CONSISTENCY[1]
    gradients = sum(g**2 for c in range(2) for g in np.gradient(backward[..., c]))
    smooth = gradients <= MOTION_BOUNDARY[0] * np.sum(backward**2, axis=2) + MOTION_BOUNDARY[1]
    y, x = np.mgrid[0:height, 0:width]
    inside = (
        (x + backward[..., 0] >= 0)
        & (x + backward[..., 0] <= width - 1)
        & (y + backward[..., 1] >= 0)
        & (y + backward[..., 1] <= height - 1)
    )
    trusted = consistent & smooth & inside
    if here is not None and before is not None:
        residual = np.abs(_rgb(here) - _rgb(warp(before, backward))).mean(axis=2)
        trusted &= residual <= PHOTOMETRIC
    return trusted.astype(np.float32)


def motion(
    content: np.ndarray, previous_content: np.ndarray, width: int, height: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(this frame in RGB, the backward flow to the previous one, where it is reliable), all at
    width x height: the one measure of motion that a frame's start and the flicker share."""
    here = _rgb(_sized(content, width, height))
    before = _rgb(_sized(previous_content, width, height))
    backward, forward = flow(here, before), flow(before, here)
    return here, backward, reliable(backward, forward, here, before)


def frame_start(
    previous_result: np.ndarray, previous_content: np.ndarray, content: np.ndarray, weight: float
) -> FrameStart:
    """A frame's start (`run.stylize`'s `frame`): the previous result warped onto `content`, its
    reliability, the init (warped where reliable, the content where not). Contents at any size: the
    previous result's size is the working size."""
    height, width = previous_result.shape[:2]
    here, backward, mask = motion(content, previous_content, width, height)
    warped = np.clip(warp(_rgb(previous_result), backward), 0, 1)
    init = mask[..., None] * warped + (1 - mask[..., None]) * here
    return FrameStart(init.astype(np.float32), mask, weight)


def _rgb(array: np.ndarray) -> np.ndarray:
    if array.shape[2] in (3, 4):
        return array[..., :3]
    return np.repeat(array[..., :1], 3, axis=2)


def flicker(outputs: Sequence[np.ndarray], contents: Sequence[np.ndarray]) -> list[float]:
    """Per frame after the first: the mean absolute difference between an output and the previous
    output moved by the contents' motion, over the pixels whose motion is reliable. Steady strokes
    that follow the picture give 0; strokes painted anew give much more."""
    values = []
    for index in range(1, len(outputs)):
        out, previous = _rgb(outputs[index]), _rgb(outputs[index - 1])
        height, width = out.shape[:2]
        _, backward, mask = motion(contents[index], contents[index - 1], width, height)
        difference = np.abs(out - warp(previous, backward)).mean(axis=2)
        values.append(float((difference * mask).sum() / max(mask.sum(), 1.0)))
    return values


def _sized(array: np.ndarray, width: int, height: int) -> np.ndarray:
    from .images import resize

    return array if array.shape[:2] == (height, width) else resize(array, width, height)
