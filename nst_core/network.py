"""VGG16 / VGG19 feature extractors built from torchvision's layout and a local weights file.

Layer names follow the VGG paper (conv3_1, relu4_2, pool2); Keras-style names such as
block4_conv2 mean the ReLU after that convolution (Keras fuses them). The file is not hashed
here: `weights.py` verifies it; this module only refuses files it cannot use. An official file is
read from its features-only copy when `weights.py` vouches for one.

The copy is written here (which copy to trust is `weights.py`'s business, standard library only):
only from an official file that `weights.verify` has checked, read back and compared tensor by
tensor before it replaces anything, and recorded with its own SHA-256.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from . import weights
from .errors import UsageError, WeightsError
from .options import MODELS
from .paths import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_FIX_WEIGHTS = "re-run install.py or `python -m nst_core weights fetch`"


# torchvision's VGG configurations "D" (vgg16) and "E" (vgg19): the output channels of each 3x3
# convolution (each followed by a ReLU), "M" a 2x2 max pooling. Written here rather than read from
# torchvision: importing torchvision took 1.1 s of every engine start, and this layout is all the engine
# used of it (tests/test_network.py checks it against torchvision's own).
VGG_LAYOUTS: dict[str, tuple[int | str, ...]] = {
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "vgg19": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}


def blank_features(model: str) -> nn.Sequential:
    """torchvision's `features` stack (the same layers at the same indices) without allocating or
    initialising parameters."""
    if model not in MODELS:
        raise UsageError(f"Unknown model '{model}': use one of {', '.join(MODELS)}.")
    layers: list[nn.Module] = []
    channels = 3
    with torch.device("meta"):
        for width in VGG_LAYOUTS[model]:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(width, int)
                layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                channels = width
    return nn.Sequential(*layers)


@functools.cache
def layer_indices(model: str) -> dict[str, int]:
    """Every name a layer of `model` answers to, mapped to its index in `features`."""
    names: dict[str, int] = {}
    block, conv = 1, 0
    for index, layer in enumerate(blank_features(model)):
        if isinstance(layer, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = index
        elif isinstance(layer, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
            names[f"block{block}_conv{conv}"] = index
        elif isinstance(layer, nn.MaxPool2d):
            names[f"pool{block}"] = index
            names[f"block{block}_pool"] = index
            block, conv = block + 1, 0
    return names


def layer_index(model: str, name: str) -> int:
    indices = layer_indices(model)
    if name not in indices:
        valid = ", ".join(n for n in indices if not n.startswith("block"))
        raise UsageError(
            f"Unknown {model} layer '{name}': use one of {valid} (or Keras names like block4_conv2)."
        )
    return indices[name]


def pools_before(model: str, index: int) -> int:
    """How many 2x poolings an image passes before layer `index` (sets the smallest usable size)."""
    return _pools(list(blank_features(model))[:index])


def _pools(layers: Iterable[nn.Module]) -> int:
    return sum(isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)) for layer in layers)


def border_margin(layers: Iterable[nn.Module]) -> int:
    """How far, in input pixels, the zero padding at a crop's border reaches into the last layer's
    features: a crop that extends this far past a window computes that window's features exactly as
    the whole image does, when the crop starts on the deepest pooling's grid.

    Each 3x3 convolution spreads the padding's effect by one cell of its layer; a 2x pooling makes
    any touched cell wholly touched, so the reach rounds up to the new cell size.
    """
    reach, cell = 0, 1
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            reach += cell * (layer.kernel_size[0] // 2)
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            cell *= 2
            reach = -(-reach // cell) * cell
    return reach


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of `path`; for a verified official file, from its features-only copy when that is
    sound (the same bits, a sixth of the bytes), else from the file itself, remaking the copy."""
    copy = weights.verified_features(path)
    if copy is not None:
        try:
            return _read_state(copy, mapped=True)
        except WeightsError:
            pass  # verified bytes this torch cannot read (a newer one wrote them): remade below
    state = _read_state(path)
    if weights.verified_official(path) is not None:
        try:
            write_features_copy(state, path)
        except Exception:  # a full disk, a read-only folder, a race: the copy only speeds up the next start,
            pass  # and this run has its weights
    return state


def _read_state(path: Path, mapped: bool = False) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"Weights file {path} does not exist: {_FIX_WEIGHTS}.")
    try:
        with warnings.catch_warnings():
            # torch warns in two lines about a pickle it did not write, then loads or refuses it: a
            # refusal is the one line below, a load needs no word.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.")
            if mapped:
                state = load_features_copy(path)
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise WeightsError(
            f"Weights file {path} is truncated or not a PyTorch file ({type(exc).__name__}): {_FIX_WEIGHTS}."
        ) from None
    if not isinstance(state, dict):
        raise WeightsError(f"Weights file {path} does not hold a state dict: {_FIX_WEIGHTS}.")
    return state


@functools.lru_cache(maxsize=2)
def _load_checked_features(model: str, path: str, _stamp: tuple[int, int]) -> nn.Sequential:
    state = _read_weights(Path(path))
    features = blank_features(model)
    wanted = features.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, blank in wanted.items():
        tensor = state.get(f"features.{key}", state.get(key))
        if not isinstance(tensor, torch.Tensor):
            raise WeightsError(
                f"Weights file {path} has no features.{key}: it is not a torchvision {model} file; "
                f"{_FIX_WEIGHTS}."
            )
        if tensor.shape != blank.shape:
            raise WeightsError(
                f"Weights file {path} has features.{key} of shape {tuple(tensor.shape)}, "
                f"expected {tuple(blank.shape)} for {model}: {_FIX_WEIGHTS}."
            )
        loaded[key] = tensor.float()
    features.load_state_dict(loaded, strict=True, assign=True)
    return features


def engine_loads() -> int:
    """How many times this process has read a network from disk (a cluster worker reports it)."""
    return _load_checked_features.cache_info().misses


def load_features(model: str, path: str | Path) -> nn.Sequential:
    """The full `features` stack of `model` with the weights in `path` (cached per file version)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise WeightsError(f"Weights file {path} does not exist: {_FIX_WEIGHTS}.") from None
    return _load_checked_features(model, str(path.resolve()), (stat.st_mtime_ns, stat.st_size))


class VGGFeatures(nn.Module):
    """RGB in [0, 1] -> the named layers' activations. Frozen, eval mode, cut after the deepest layer."""

    def __init__(self, features: nn.Sequential, layers: dict[str, int], pooling: str = "max") -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise UsageError(f"Unknown pooling '{pooling}': use max or avg.")
        self.layers = dict(layers)
        deepest = max(self.layers.values())
        captured = set(self.layers.values())
        self.body = nn.Sequential(
            *[
                _fresh(layer, pooling, in_place=index - 1 not in captured)
                for index, layer in enumerate(list(features)[: deepest + 1])
            ]
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()
        self._wanted: dict[int, list[str]] = {}
        for name, index in self.layers.items():
            self._wanted.setdefault(index, []).append(name)
        # Each 2x pooling halves the image; the deepest layer must keep at least one pixel.
        self.min_side = 2 ** sum(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in self.body)
        self.factors = {name: 2 ** _pools(list(self.body)[:index]) for name, index in self.layers.items()}
        self.margin = border_margin(self.body)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        if channels_last(x.device):
            x = x.contiguous(memory_format=torch.channels_last)
        out: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.body):
            x = layer(x)
            for name in self._wanted.get(index, ()):
                out[name] = x
        return out


def _fresh(layer: nn.Module, pooling: str, in_place: bool) -> nn.Module:
    # A ReLU works in place (one full-size map less to allocate and fault in per layer) unless the
    # convolution output it would overwrite is itself a requested layer.
    if isinstance(layer, nn.ReLU):
        return nn.ReLU(inplace=in_place)
    if isinstance(layer, nn.MaxPool2d) and pooling == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if isinstance(layer, nn.Conv2d):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, 3, padding=1, device="meta")
        conv.load_state_dict(layer.state_dict(), assign=True)
        return conv
    return layer


def build_network(
    model: str,
    weights: str | Path,
    layer_names: Iterable[str],
    pooling: str = "max",
    device: torch.device | str = "cpu",
) -> VGGFeatures:
    """A feature extractor for `layer_names` of `model` on `device` (names checked before reading)."""
    layers = {name: layer_index(model, name) for name in layer_names}
    if not layers:
        raise UsageError("No content or style layers given: name at least one layer.")
    net = VGGFeatures(load_features(model, weights), layers, pooling).to(device)
    if channels_last(net.mean.device):
        # Weights in the activations' layout, or every convolution call copies them (8 copies of
        # up to 9 MiB per iteration on a CPU).
        net = net.to(memory_format=torch.channels_last)
    return net


def channels_last(device: torch.device) -> bool:
    """Whether the network runs channels-last on `device`: oneDNN's and cuDNN's fastest convolutions
    read and write that layout (on a CPU the default layout costs about a third more per iteration,
    docs/performance.md); MPS keeps the default."""
    return device.type != "mps"


def smallest_side(model: str, layer_names: Iterable[str]) -> int:
    """The smallest image side that still leaves the deepest layer at least 1 pixel wide."""
    deepest = max(layer_index(model, name) for name in layer_names)
    return 2 ** pools_before(model, deepest)


def autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    """The network's mixed precision on `device` (`dtype` None: float32 throughout)."""
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def autocast_dtype(device: torch.device, precision: str, style_loss: str) -> torch.dtype | None:
    """Mixed precision for the network; statistics and losses stay float32 (losses.py).

    On CUDA by default. On a CPU when asked for (`bf16`) and the CPU has bf16 instructions, and by
    default (`auto`) where it has AMX and the style loss is W2 (the user presets'): there the user
    presets' jobs took 0.52-0.62x the fp32 time with the judges level on four pairs, while on random
    weights bf16 moved a Gram run's final loss by 17% (docs/performance.md, "bf16 on CPUs with AMX").
    """
    if device.type == "cpu":
        wanted = precision == "bf16" or (precision == "auto" and style_loss == "w2" and _cpu_has_amx())
        return torch.bfloat16 if wanted and _cpu_has_bf16() else None
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _cpu_has_bf16() -> bool:
    """oneDNN runs bf16 convolutions on this CPU: natively with AVX512-BF16 or AMX, else (AVX-512 alone)
    emulated, slower."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def _cpu_has_amx() -> bool:
    """AMX tiles for bf16 (Intel Xeon since Sapphire Rapids), where oneDNN's bf16 convolutions run at about
    twice the fp32 rate; not measured on CPUs with AVX512-BF16 alone (AMD Zen 4), which stay fp32."""
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(capabilities.get("amx_bf16") and capabilities.get("amx_tile"))


# -- the features-only copy of an official file --------------------------------------------------

FEATURES_PREFIX = "features."  # the keys of torchvision's `features` stack in a whole VGG file


def ensure_features_copy(official: Path | str, stamps: Path | None = None) -> Path | None:
    """The verified features-only copy beside `official`, written when it is missing or bad; None when
    `official` is no official file that `weights.verify` has checked."""
    official = Path(official)
    found = weights.verified_features(official, stamps)
    if found is not None or weights.verified_official(official, stamps) is None:
        return found
    try:
        state = torch.load(official, map_location="cpu", weights_only=True)
    except Exception as exc:  # verified bytes that torch cannot read: a torch older than the file
        raise WeightsError(
            f"Cannot read {official} ({type(exc).__name__}): upgrade torch, or re-run install.py."
        ) from None
    return write_features_copy(state, official, stamps)


def write_features_copy(state: Mapping[str, object], official: Path, stamps: Path | None = None) -> Path:
    """Write the `features.*` tensors of `state`, read from the verified `official`, beside it."""
    dest = weights.features_path(official)
    if dest is None or weights.verified_official(official, stamps) is None:
        raise ValueError(f"{official} is no verified official weights file")
    # Cloned: a tensor saved as it is brings its whole storage, which may be shared with others.
    wanted = {
        key: tensor.detach().clone()
        for key, tensor in state.items()
        if key.startswith(FEATURES_PREFIX) and isinstance(tensor, torch.Tensor)
    }
    if not wanted:
        raise WeightsError(f"{official} holds no features.* tensors: delete it and re-run install.py.")
    try:
        with atomic_path(dest) as temporary:
            try:
                torch.save(wanted, temporary)
            except RuntimeError:  # torch's zip writer on a full disk: "[enforce fail at ...] unexpected pos"
                raise _copy_write_error(dest, official, "the write failed") from None
            digest = weights.sha256_of(temporary)
            if not _reads_back(temporary, wanted):
                raise WeightsError(
                    f"The features-only copy {dest} read back differently from {official.name}: "
                    "please report (the engine reads the whole file meanwhile)."
                )
    except OSError as exc:
        raise _copy_write_error(dest, official, exc.strerror or str(exc)) from None
    if not weights.record_features(dest, digest, official, stamps):
        raise WeightsError(
            f"{official} changed while its features-only copy was written: "
            "run `python -m nst_core weights fetch` again."
        )
    return dest


def load_features_copy(path: Path) -> object:
    """A copy as the engine reads it: mapped, so only the pages used are read and they stay shareable."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _reads_back(path: Path, wanted: Mapping[str, torch.Tensor]) -> bool:
    # In a function of its own: the mapping ends with it, before the file is renamed (Windows
    # cannot rename a mapped file).
    try:
        loaded = load_features_copy(path)
    except Exception:  # a copy that does not load is as wrong as one that differs
        return False
    return (
        isinstance(loaded, dict)
        and loaded.keys() == wanted.keys()
        and all(same_bits(loaded[key], tensor) for key, tensor in wanted.items())
    )


def same_bits(a: object, b: torch.Tensor) -> bool:
    """Bit for bit the same tensor (`torch.equal` takes -0.0 for 0.0 and no NaN for itself)."""
    if not isinstance(a, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _copy_write_error(dest: Path, official: Path, reason: str) -> WeightsError:
    return WeightsError(
        f"Cannot write {dest} ({reason}): free some disk space or make {dest.parent} "
        f"writable (the engine reads the whole {official.name} meanwhile)."
    )
