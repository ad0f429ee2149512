"""Writing the features-only copy of an official VGG file, which the engine reads instead of it.

Which copy to trust is `weights.py`'s business (standard library only); this module needs torch.
A copy is written only from an official file that `weights.verify` has checked, read back and
compared tensor by tensor before it replaces anything, and recorded with its own SHA-256.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from . import weights
from .errors import WeightsError
from .paths import atomic_path

PREFIX = "features."


def ensure(official: Path | str, stamps: Path | None = None) -> Path | None:
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
    return write(state, official, stamps)


def write(state: Mapping[str, object], official: Path, stamps: Path | None = None) -> Path:
    """Write the `features.*` tensors of `state`, read from the verified `official`, beside it."""
    dest = weights.features_path(official)
    if dest is None or weights.verified_official(official, stamps) is None:
        raise ValueError(f"{official} is no verified official weights file")
    # Cloned: a tensor saved as it is brings its whole storage, which may be shared with others.
    wanted = {
        key: tensor.detach().clone()
        for key, tensor in state.items()
        if key.startswith(PREFIX) and isinstance(tensor, torch.Tensor)
    }
    if not wanted:
        raise WeightsError(f"{official} holds no features.* tensors: delete it and re-run install.py.")
    try:
        with atomic_path(dest) as temporary:
            try:
                torch.save(wanted, temporary)
            except RuntimeError:  # torch's zip writer on a full disk: "[enforce fail at ...] unexpected pos"
                raise _write_error(dest, official, "the write failed") from None
            digest = weights.sha256_of(temporary)
            if not _reads_back(temporary, wanted):
                raise WeightsError(
                    f"The features-only copy {dest} read back differently from {official.name}: "
                    "please report (the engine reads the whole file meanwhile)."
                )
    except OSError as exc:
        raise _write_error(dest, official, exc.strerror or str(exc)) from None
    if not weights.record_features(dest, digest, official, stamps):
        raise WeightsError(
            f"{official} changed while its features-only copy was written: "
            "run `python -m nst_core weights fetch` again."
        )
    return dest


def load(path: Path) -> object:
    """A copy as the engine reads it: mapped, so only the pages used are read and they stay shareable."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def _reads_back(path: Path, wanted: Mapping[str, torch.Tensor]) -> bool:
    # In a function of its own: the mapping ends with it, before the file is renamed (Windows
    # cannot rename a mapped file).
    try:
        loaded = load(path)
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


def _write_error(dest: Path, official: Path, reason: str) -> WeightsError:
    return WeightsError(
        f"Cannot write {dest} ({reason}): free some disk space or make {dest.parent} "
        f"writable (the engine reads the whole {official.name} meanwhile)."
    )
