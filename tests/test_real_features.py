"""The real VGG16 the quality tests use: the wheel's Keras VGG16, converted by tests/real_features.py,
computes through the engine's own network what the ONNX graph computes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from PIL import Image
from real_features import CAFFE_MEAN_BGR, conv_name, onnx_path
from skimage import data

from nst_core import network

LAYERS = {"relu3_3": conv_name(3, 3) + "/Relu:0", "relu5_3": conv_name(5, 3) + "/Relu:0"}
TOLERANCE = 1e-4  # relative to the layer's largest activation


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """The astronaut, 96 x 64 (not square: a width and height swapped on the way would show)."""
    image = Image.fromarray(data.astronaut()).resize((96, 64), Image.Resampling.LANCZOS)
    return np.asarray(image, np.float32) / 255


def caffe_input(rgb: np.ndarray) -> np.ndarray:
    """What the Keras VGG16 reads: NHWC, BGR, 0-255, caffe's channel means subtracted."""
    return (rgb[None, :, :, ::-1] * 255 - np.asarray(CAFFE_MEAN_BGR, np.float32)).astype(np.float32)


def onnx_features(rgb: np.ndarray, torchvision_padding: bool) -> dict[str, np.ndarray]:
    """The ONNX graph's own activations at LAYERS (its classifier cut off, so any size runs). With
    `torchvision_padding`, block1_conv1 pads with torchvision's zero instead of caffe's."""
    model = onnx.load(str(onnx_path()))
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        if LAYERS["relu5_3"] in node.output:
            break
    if torchvision_padding:
        nodes = pad_like_torchvision(nodes)
    used = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes,
        "vgg16-features",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", "h", "w", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in LAYERS.values()],
        [tensor for tensor in model.graph.initializer if tensor.name in used] + offset_tensors(),
    )
    evaluator = ReferenceEvaluator(helper.make_model(graph, opset_imports=model.opset_import))
    outputs = evaluator.run(None, {"input": caffe_input(rgb)})
    return dict(zip(LAYERS, outputs, strict=True))


def offset_tensors() -> list[onnx.TensorProto]:
    """Caffe's value of torchvision's zero input (255 mean - caffe mean, BGR) and the padding's widths."""
    offset = 255 * np.asarray(network.IMAGENET_MEAN[::-1]) - np.asarray(CAFFE_MEAN_BGR)
    return [
        numpy_helper.from_array(offset.reshape(1, 3, 1, 1).astype(np.float32), "torchvision_zero"),
        numpy_helper.from_array(np.asarray([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "one_pixel"),
    ]


def pad_like_torchvision(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """block1_conv1 with its one-pixel padding done before it, in torchvision's zero."""
    first = next(index for index, node in enumerate(nodes) if node.op_type == "Conv")
    conv = nodes[first]
    source = conv.input[0]
    padding = [
        helper.make_node("Sub", [source, "torchvision_zero"], ["shifted"]),
        helper.make_node("Pad", ["shifted", "one_pixel"], ["shifted_padded"]),
        helper.make_node("Add", ["shifted_padded", "torchvision_zero"], ["padded"]),
    ]
    unpadded = helper.make_node(
        "Conv",
        ["padded", *conv.input[1:]],
        list(conv.output),
        kernel_shape=[3, 3],
        strides=[1, 1],
        dilations=[1, 1],
        pads=[0, 0, 0, 0],
        group=1,
    )
    return [*nodes[:first], *padding, unpadded, *nodes[first + 1 :]]


def engine_features(rgb: np.ndarray, weights: Path) -> dict[str, np.ndarray]:
    net = network.build_network("vgg16", weights, LAYERS)
    with torch.no_grad():
        found = net(torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous())
    return {name: found[name].contiguous().numpy() for name in LAYERS}


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


def untouched_by_padding(layer: str, features: np.ndarray) -> np.ndarray:
    """The cells of `layer` that the zero padding at the image's border cannot reach."""
    index = network.layer_index("vgg16", layer)
    layers = list(network.blank_features("vgg16"))[: index + 1]
    cells = -(-network.border_margin(layers) // 2 ** network.pools_before("vgg16", index))
    return features[..., cells:-cells, cells:-cells]


def test_the_converted_file_computes_the_onnx_graphs_features(
    picture: np.ndarray, real_vgg16_weights: Path
) -> None:
    """Everywhere, once the ONNX graph pads its input as torchvision does; and with the graph as
    shipped, wherever the padding at the border cannot reach (the one thing conv1_1 cannot absorb)."""
    ours = engine_features(picture, real_vgg16_weights)
    theirs = onnx_features(picture, torchvision_padding=True)
    for layer in LAYERS:
        assert ours[layer].shape == theirs[layer].shape
        assert relative_error(ours[layer], theirs[layer]) < TOLERANCE, layer
    shipped = onnx_features(picture, torchvision_padding=False)["relu3_3"]
    inner = untouched_by_padding("relu3_3", shipped)
    assert inner.size > 0
    assert relative_error(untouched_by_padding("relu3_3", ours["relu3_3"]), inner) < TOLERANCE
