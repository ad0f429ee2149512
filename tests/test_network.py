"""VGG feature extractors: layer names, loading and refusing weights files, the cut network."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from samples import make_content_image, make_official_like_weights, make_random_vgg_weights, make_style_image

import nst_core
from nst_core import cli, network, weights
from nst_core.errors import UsageError, WeightsError
from nst_core.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_network,
    layer_index,
    load_features,
    smallest_side,
)
from nst_core.options import Options


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


@pytest.mark.parametrize("model", ["vgg16", "vgg19"])
def test_the_layers_are_torchvisions(model: str) -> None:
    """The engine builds VGG's `features` itself, layer for layer as torchvision does."""
    import torchvision

    with torch.device("meta"):
        theirs = getattr(torchvision.models, model)(weights=None).features
    assert [repr(layer) for layer in network.blank_features(model)] == [repr(layer) for layer in theirs]


def test_a_run_never_imports_torchvision(vgg19_weights: Path, tmp_path: Path) -> None:
    """Importing it took 1.1 s of every engine start (the CLI's, a plug-in's child, the service's)."""
    content, out = tmp_path / "content.png", tmp_path / "out.png"
    make_content_image(48, 32).save(content)
    argv = ["stylize", str(content), "starry-night", "-o", str(out), "--size", "32", "--iterations", "1"]
    argv += ["--weights", str(vgg19_weights), "--device", "cpu", "--progress", "none"]
    code = f"import sys; from nst_core import cli; print(cli.main({argv!r}), 'torchvision' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["0", "False"] and out.is_file()


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


# -- official weights start from their features-only copy ----------------------------------------------


def _make_official(path: Path, features: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`features` written as torchvision ships its files, under a name the official table knows."""
    make_official_like_weights(path, features)
    digest, size = weights.sha256_of(path), path.stat().st_size
    entry = replace(weights.OFFICIAL["vgg19"], filename=path.name, sha256=digest, size=size)
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    weights.verify(path, "vgg19")  # as the engine's `resolve_weights` does before loading
    return path


@pytest.fixture
def official(
    tmp_path: Path, vgg19_weights: Path, isolated_data: None, monkeypatch: pytest.MonkeyPatch
) -> Path:
    network._load_checked_features.cache_clear()
    return _make_official(tmp_path / "vgg19-test.pth", vgg19_weights, monkeypatch)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(file name, memory-mapped) of every torch.load."""
    seen: list[tuple[str, bool]] = []
    load = torch.load

    def spy(f: object, *args: object, **kwargs: object) -> object:
        seen.append((Path(str(f)).name, bool(kwargs.get("mmap"))))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    return seen


def _fresh_start(reads: list[tuple[str, bool]]) -> None:
    """As a new engine process: nothing loaded yet, nothing read yet."""
    network._load_checked_features.cache_clear()
    reads.clear()


def _assert_same_bits(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    assert all(network.same_bits(first[key], second[key]) for key in first)


def _features_of(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)
    return {key.removeprefix("features."): t for key, t in state.items() if key.startswith("features.")}


def test_official_weights_start_from_their_features_copy_bit_for_bit(
    official: Path, reads: list[tuple[str, bool]]
) -> None:
    whole = load_features("vgg19", official).state_dict()
    copy = official.with_name("vgg19-test.features.pt")
    assert reads[0] == (official.name, False)  # the first start reads it all, and writes the copy
    assert weights.verified_features(official) == copy
    assert all(key.startswith("features.") for key in torch.load(copy, weights_only=True))
    _fresh_start(reads)
    mapped = load_features("vgg19", official).state_dict()
    assert reads == [(copy.name, True)]  # the official file is not read at all
    _assert_same_bits(mapped, whole)
    _assert_same_bits(mapped, _features_of(official))


def test_a_stylize_gives_the_same_bytes_from_the_copy_as_from_the_whole_file(
    official: Path, reads: list[tuple[str, bool]]
) -> None:
    content = np.asarray(make_content_image(48, 32), dtype=np.float32) / 255
    style = np.asarray(make_style_image(32, 32), dtype=np.float32) / 255
    options = Options(size=48, iterations=3, weights=str(official), init="noise", seed=5)
    from_whole = nst_core.stylize(content, [style], options)
    assert (official.name, False) in reads
    _fresh_start(reads)
    from_copy = nst_core.stylize(content, [style], options)
    assert reads == [("vgg19-test.features.pt", True)]
    assert from_copy.tobytes() == from_whole.tobytes()


def _altered(copy: Path) -> None:
    """A sound torch file with one weight changed: only its hash tells it from the real copy."""
    state = torch.load(copy, weights_only=True)
    state["features.0.weight"][0, 0, 0, 0] += 1
    torch.save(state, copy)


@pytest.mark.parametrize("damage", ["altered", "truncated", "unrecorded", "unreadable"])
def test_a_bad_copy_is_never_trusted_and_is_remade(
    official: Path, reads: list[tuple[str, bool]], damage: str
) -> None:
    reference = load_features("vgg19", official).state_dict()
    copy = weights.verified_features(official)
    assert copy is not None
    if damage == "altered":
        _altered(copy)
    elif damage == "truncated":
        copy.write_bytes(copy.read_bytes()[: copy.stat().st_size // 2])
    elif damage == "unrecorded":  # the record of verified files lost: the copy is unknown
        (Path(os.environ["NST_DATA_DIR"]) / weights.STAMP_NAME).unlink()
        weights.verify(official, "vgg19")
    else:  # recorded as it is, but not a file torch can read: the official file still works
        copy.write_bytes(b"not a torch file")
        assert weights.record_features(copy, weights.sha256_of(copy), official)
    os.utime(copy, ns=(1, 1))
    _fresh_start(reads)
    loaded = load_features("vgg19", official).state_dict()
    assert (official.name, False) in reads
    _assert_same_bits(loaded, reference)
    assert weights.verified_features(official) == copy  # remade, and sound again
    _fresh_start(reads)
    _assert_same_bits(load_features("vgg19", official).state_dict(), reference)
    assert reads == [(copy.name, True)]


def test_a_copy_of_another_official_file_is_not_used(
    official: Path, tmp_path: Path, reads: list[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    load_features("vgg19", official)
    copy = weights.verified_features(official)
    assert copy is not None
    other = make_random_vgg_weights(tmp_path / "other.pth", "vgg19", seed=3)
    _make_official(official, other, monkeypatch)  # the same name, other tensors, verified anew
    _fresh_start(reads)
    loaded = load_features("vgg19", official).state_dict()
    assert reads[0] == (official.name, False)
    _assert_same_bits(loaded, _features_of(other))
    assert weights.verified_features(official) == copy


@pytest.mark.parametrize("failure", ["folder not writable", "disk full"])
def test_a_copy_that_cannot_be_written_does_not_stop_a_run(
    official: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:  # the temporary file cannot be made
        raise PermissionError(errno.EACCES, "Permission denied")

    def fill(*args: object, **kwargs: object) -> None:  # what torch's zip writer raises then
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    if failure == "disk full":
        monkeypatch.setattr(network.torch, "save", fill)
    else:
        monkeypatch.setattr(network, "atomic_path", refuse)
    loaded = load_features("vgg19", official).state_dict()
    _assert_same_bits(loaded, _features_of(official))
    assert weights.verified_features(official) is None
    assert [path.name for path in official.parent.iterdir() if "features" in path.name] == []
    with pytest.raises(WeightsError) as caught:
        network.ensure_features_copy(official)
    reason = "Permission denied" if failure == "folder not writable" else "the write failed"
    assert caught.value.message == (
        f"Cannot write {official.with_name('vgg19-test.features.pt')} ({reason}): free some disk space or "
        f"make {official.parent} writable (the engine reads the whole {official.name} meanwhile)."
    )


def test_no_copy_of_unverified_or_own_files(
    official: Path, vgg19_weights: Path, reads: list[tuple[str, bool]]
) -> None:
    (Path(os.environ["NST_DATA_DIR"]) / weights.STAMP_NAME).unlink()  # the official file unverified
    load_features("vgg19", official)
    assert not official.with_name("vgg19-test.features.pt").exists()
    assert network.ensure_features_copy(official) is None
    before = sorted(vgg19_weights.parent.iterdir())
    load_features("vgg19", vgg19_weights)
    assert (vgg19_weights.name, False) in reads  # a file of one's own is read whole, as it is
    assert sorted(vgg19_weights.parent.iterdir()) == before


def test_weights_fetch_writes_the_copy(
    official: Path, reads: list[tuple[str, bool]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["weights", "fetch", "--dir", str(official.parent)]) == 0
    assert capsys.readouterr().out == f"{official}\n"
    copy = weights.verified_features(official)
    assert copy is not None and reads[0] == (official.name, False)
    _assert_same_bits(_features_of(copy), _features_of(official))
    reads.clear()
    assert cli.main(["weights", "fetch", "--dir", str(official.parent)]) == 0
    assert reads == []  # a sound copy is left as it is


@pytest.mark.parametrize("amx", [True, False])
def test_a_cpu_with_amx_runs_the_user_presets_in_bf16_unless_told_otherwise(
    amx: bool, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`auto` on a CPU: bf16 where it has AMX and the style loss is W2 (the user presets': level judges
    in about half the time), fp32 elsewhere and for Gram; `fp32` and `bf16` as asked."""
    monkeypatch.setattr(network, "_cpu_has_amx", lambda: amx)
    monkeypatch.setattr(network, "_cpu_has_bf16", lambda: True)

    def autocast(**options: object) -> torch.dtype | None:
        chosen = Options(weights=str(vgg19_weights), device="cpu", **options)  # type: ignore[arg-type]
        return nst_core.make_plan(chosen, (64, 48)).autocast

    assert autocast() == (torch.bfloat16 if amx else None)
    assert autocast(preset="fast") == autocast(preset="best") == autocast()
    assert autocast(style_loss="gram") is None and autocast(preset="gatys-vgg16") is None
    assert autocast(precision="fp32") is None and autocast(precision="bf16") == torch.bfloat16
    monkeypatch.setattr(network, "_cpu_has_bf16", lambda: False)  # no bf16 convolutions at all
    assert autocast() is None and autocast(precision="bf16") is None
