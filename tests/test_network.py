"""VGG feature extractors: layer names, loading and refusing weights files, the cut network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nst_core.errors import UsageError, WeightsError
from nst_core.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_network,
    layer_index,
    load_features,
    smallest_side,
)


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("relu1_1", 1),
        ("relu2_1", 6),
        ("relu3_1", 11),
        ("relu4_1", 20),
        ("relu4_2", 22),
        ("relu5_1", 29),
        ("conv4_2", 21),
        ("pool1", 4),
        ("block4_conv2", 22),
        ("block5_conv4", 35),
    ],
)
def test_vgg19_layer_indices(name: str, index: int) -> None:
    assert layer_index("vgg19", name) == index


def test_vgg16_has_three_convolutions_in_deep_blocks() -> None:
    assert layer_index("vgg16", "relu3_3") == 15
    assert layer_index("vgg16", "block5_conv2") == 27
    with pytest.raises(UsageError, match="relu5_3"):
        layer_index("vgg16", "relu5_4")


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(UsageError, match=r"Unknown vgg19 layer 'relu9_9'.*relu1_1.*pool5"):
        layer_index("vgg19", "relu9_9")


def test_network_is_cut_frozen_and_normalises(vgg19_weights: Path) -> None:
    net = build_network("vgg19", vgg19_weights, ["relu1_1", "conv2_1", "relu2_1"])
    assert len(net.body) == 7
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    image = torch.rand(1, 3, 20, 24)
    out = net(image)
    assert set(out) == {"relu1_1", "conv2_1", "relu2_1"}
    full = load_features("vgg19", vgg19_weights)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = full[:6]((image - mean) / std)
    # The captured convolution output is not overwritten by the following ReLU.
    torch.testing.assert_close(out["conv2_1"], expected)
    torch.testing.assert_close(out["relu2_1"], expected.relu())


def test_network_runs_channels_last_with_in_place_relus_where_safe(vgg19_weights: Path) -> None:
    net = build_network("vgg19", vgg19_weights, ["relu1_1", "conv2_1", "relu2_1"])
    out = net(torch.rand(1, 3, 20, 24))
    assert all(o.is_contiguous(memory_format=torch.channels_last) for o in out.values())
    assert net.body[0].weight.is_contiguous(memory_format=torch.channels_last)
    relus = {index: layer.inplace for index, layer in enumerate(net.body) if isinstance(layer, torch.nn.ReLU)}
    assert relus == {1: True, 3: True, 6: False}  # conv2_1 (index 5) is captured: its ReLU copies


def test_average_pooling(vgg16_weights: Path) -> None:
    net = build_network("vgg16", vgg16_weights, ["relu3_1"], pooling="avg")
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in net.body) == 2
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.body)
    assert net.min_side == 4
    assert smallest_side("vgg19", ["relu5_1"]) == 16


def test_full_torchvision_file_and_bare_keys_are_accepted(vgg19_weights: Path, tmp_path: Path) -> None:
    state = torch.load(vgg19_weights, weights_only=True)
    full = {**state, "classifier.0.weight": torch.zeros(4, 3), "classifier.0.bias": torch.zeros(4)}
    bare = {key.removeprefix("features."): value for key, value in state.items()}
    image = torch.rand(1, 3, 16, 16)
    reference = build_network("vgg19", vgg19_weights, ["relu2_1"])(image)["relu2_1"]
    for name, data in (("full.pth", full), ("bare.pth", bare)):
        torch.save(data, tmp_path / name)
        out = build_network("vgg19", tmp_path / name, ["relu2_1"])(image)["relu2_1"]
        torch.testing.assert_close(out, reference)


def test_truncated_file_is_a_weights_error(vgg19_weights: Path, tmp_path: Path) -> None:
    data = vgg19_weights.read_bytes()
    broken = tmp_path / "truncated.pth"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(WeightsError, match=r"truncated.*install\.py"):
        build_network("vgg19", broken, ["relu1_1"])


def test_missing_keys_and_wrong_shapes_are_weights_errors(vgg19_weights: Path, tmp_path: Path) -> None:
    state = torch.load(vgg19_weights, weights_only=True)
    missing = {k: v for k, v in state.items() if k != "features.28.weight"}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"no features\.28\.weight.*weights fetch"):
        build_network("vgg19", tmp_path / "missing.pth", ["relu1_1"])


def test_wrong_shapes_are_weights_errors(vgg19_weights: Path, tmp_path: Path) -> None:
    state = torch.load(vgg19_weights, weights_only=True)
    state["features.2.weight"] = torch.zeros(64, 64, 5, 5)
    torch.save(state, tmp_path / "wrong-shape.pth")
    with pytest.raises(WeightsError, match=r"shape \(64, 64, 5, 5\), expected \(64, 64, 3, 3\)"):
        build_network("vgg19", tmp_path / "wrong-shape.pth", ["relu1_1"])


def test_vgg16_file_is_not_a_vgg19_file(vgg16_weights: Path) -> None:
    with pytest.raises(WeightsError, match="vgg19"):
        build_network("vgg19", vgg16_weights, ["relu1_1"])


def test_missing_file_and_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        build_network("vgg19", tmp_path / "nope.pth", ["relu1_1"])
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="state dict"):
        build_network("vgg19", tmp_path / "list.pth", ["relu1_1"])
