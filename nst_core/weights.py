"""The official VGG weight files, a resumable verified downloader, and where the engine finds weights.

Standard library only and Python 3.9 compatible: `install.py` imports this module from the
checkout. Stylising never downloads: `find_weights` only looks, `fetch` is run by the installer
or `python -m nst_core weights fetch`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .errors import NstError, UsageError, WeightsError
from .paths import atomic_path

WEIGHTS_ENV = "NST_WEIGHTS"
STAMP_NAME = "verified-weights.json"
FEATURES_SUFFIX = ".features.pt"
CHUNK = 1 << 20
ByteProgress = Callable[[int, "int | None"], None]  # (done_bytes, total_bytes or None when unknown)


@dataclass(frozen=True)
class OfficialWeights:
    model: str
    filename: str
    url: str
    sha256: str  # full digest; torchvision's file name carries only its first 8 hex digits
    size: int  # bytes

    @property
    def label(self) -> str:
        return self.model.upper()


# torchvision's IMAGENET1K_V1 files (the classifier is included; the engine uses `features` only).
OFFICIAL: dict[str, OfficialWeights] = {
    "vgg19": OfficialWeights(
        model="vgg19",
        filename="vgg19-dcbb9e9d.pth",
        url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
        sha256="dcbb9e9dad569fff7a846263a77324fc34978fea2bfb039c012d710e1776ae44",
        size=574673361,
    ),
    "vgg16": OfficialWeights(
        model="vgg16",
        filename="vgg16-397923af.pth",
        url="https://download.pytorch.org/models/vgg16-397923af.pth",
        sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
        size=553433881,
    ),
}


def official(model: str) -> OfficialWeights:
    try:
        return OFFICIAL[model]
    except KeyError:
        raise UsageError(f"Unknown model '{model}': use one of {', '.join(OFFICIAL)}.") from None


def official_for_file(path: Path) -> OfficialWeights | None:
    """The official entry whose file name `path` carries, if any."""
    for entry in OFFICIAL.values():
        if Path(path).name == entry.filename:
            return entry
    return None


def fetch_hint(model: str) -> str:
    flag = "" if model == "vgg19" else f" --model {model}"
    return f"run `python3 install.py` or `python -m nst_core weights fetch{flag}`, or pass --weights FILE"


# -- hashing -------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_matches(actual: str, expected: str) -> bool:
    """Full digests compare equal; a short one (at least 8 hex digits, as torchvision's) is a prefix."""
    expected = expected.strip().lower()
    if len(expected) < 8:
        raise ValueError(f"SHA-256 '{expected}' is too short: give at least 8 hex digits")
    return actual.lower().startswith(expected)


# -- download --------------------------------------------------------------------------------------


def download(
    url: str, dest: Path | str, sha256: str, progress: ByteProgress | None = None, timeout: float = 60.0
) -> Path:
    """Download `url` to `dest` through `dest.part`, resuming a partial file; verify, then rename."""
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(
            f"Cannot create folder {dest.parent} ({exc.strerror}): choose another with --dir."
        ) from None
    resumed = part.exists() and part.stat().st_size > 0
    _transfer(url, part, progress, timeout)
    if not hash_matches(sha256_of(part), sha256) and resumed:
        # A stale partial file from another download can poison a resume: start once from scratch.
        part.unlink()
        _transfer(url, part, progress, timeout)
    if not hash_matches(sha256_of(part), sha256):
        part.unlink()
        raise WeightsError(f"Download of {url} has the wrong SHA-256: retry later, or pass --weights FILE.")
    os.replace(part, dest)
    return dest


def _transfer(url: str, part: Path, progress: ByteProgress | None, timeout: float) -> None:
    """Bring `part` up to the whole file, with a Range request when part of it is there already."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "gimp-neural-style"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:
                return  # nothing left to send: the part is complete (its hash decides)
            raise
        with response:
            start = _resume_offset(response, offset)
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            _copy(response, part, start, total, progress)
    except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, TLS errors
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"Download of {url} failed ({reason}): check the connection and retry "
            "(the partial file is resumed), or download it yourself and pass --weights FILE."
        ) from None


def _resume_offset(response: http.client.HTTPResponse, offset: int) -> int:
    """Where the body starts in the file: `offset` for a matching 206, 0 when the server ignored Range."""
    if not offset or response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    first = content_range.replace("bytes", "").strip().split("-", 1)[0]
    if first != str(offset):
        raise http.client.HTTPException(f"unexpected Content-Range '{content_range}'")
    return offset


def _copy(
    response: http.client.HTTPResponse,
    part: Path,
    start: int,
    total: int | None,
    progress: ByteProgress | None,
) -> None:
    """Append the body to `part` from `start`; disk errors become WeightsError, network ones propagate."""
    done = start
    try:
        out = open(part, "r+b" if start else "wb")
        out.seek(start)
        out.truncate()
    except OSError as exc:
        raise _write_error(part, exc) from None
    with out:
        if progress:
            progress(done, total)
        for block in iter(lambda: response.read(CHUNK), b""):
            try:
                out.write(block)
            except OSError as exc:
                raise _write_error(part, exc) from None
            done += len(block)
            if progress:
                progress(done, total)
    if total is not None and done < total:
        raise http.client.IncompleteRead(b"", total - done)


def _write_error(part: Path, exc: OSError) -> WeightsError:
    return WeightsError(f"Cannot write {part} ({exc.strerror or exc}): free some disk space or use --dir.")


def fetch(
    model: str = "vgg19", directory: Path | str | None = None, progress: ByteProgress | None = None
) -> Path:
    """Make sure the official weights of `model` are in `directory` (the data folder by default)."""
    entry = official(model)
    dest = Path(directory) if directory is not None else paths.weights_dir()
    dest = dest / entry.filename
    if dest.is_file():
        try:
            return verify(dest, model)
        except WeightsError:
            dest.unlink()  # a bad copy is replaced, not kept beside the good one
    return download(entry.url, dest, entry.sha256, progress)


# -- verification ----------------------------------------------------------------------------------


def verify(path: Path | str, model: str | None = None, stamps: Path | None = None) -> Path:
    """Check an official file's size and hash (remembered by size and mtime in `stamps`, by default the
    data folder's record); accept others as they are."""
    path, stamps = Path(path), stamps or paths.data_dir() / STAMP_NAME
    if not path.is_file():
        raise WeightsError(f"Weights file {path} not found: {fetch_hint(model or 'vgg19')}.")
    entry = official_for_file(path)
    if entry is None:
        return path  # the network module loads it with weights_only=True and rejects a bad file
    if model is not None and entry.model != model:
        raise WeightsError(
            f"{path.name} holds {entry.label} weights but the model is {model}: "
            f"pass {model.upper()} weights or use --model {entry.model}."
        )
    stat = path.stat()
    if _stamped(stamps, path, stat) == entry.sha256:
        return path
    _stamp(stamps, path, stat, _check_against(path, entry))
    return path


def check(path: Path | str, model: str | None = None) -> str:
    """Hash `path` against the official file of `model` (default: the one its name says, else VGG19)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"Weights file {path} not found: check the path.")
    named = official_for_file(path)
    entry = official(model) if model else (named or official("vgg19"))
    return _check_against(path, entry)


def _check_against(path: Path, entry: OfficialWeights) -> str:
    size = path.stat().st_size
    if size != entry.size:
        raise WeightsError(
            f"Weights file {path} is incomplete or damaged ({size} of {entry.size} bytes): "
            f"delete it and {fetch_hint(entry.model)}."
        )
    digest = sha256_of(path)
    if not hash_matches(digest, entry.sha256):
        raise WeightsError(
            f"Weights file {path} has the wrong SHA-256 (corrupt download): "
            f"delete it and {fetch_hint(entry.model)}."
        )
    return digest


def _stamp_key(path: Path) -> str:
    return str(path.resolve())


def _read_stamps(stamps: Path) -> dict:
    try:
        with open(stamps, encoding="utf-8") as stream:
            data = json.load(stream)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _stamped(stamps: Path, path: Path, stat: os.stat_result) -> str | None:
    record = _read_stamps(stamps).get(_stamp_key(path))
    if not isinstance(record, dict):
        return None
    same = record.get("size") == stat.st_size and record.get("mtime_ns") == stat.st_mtime_ns
    return record.get("sha256") if same else None


def _stamp(stamps: Path, path: Path, stat: os.stat_result, digest: str, **extra: str) -> None:
    records = _read_stamps(stamps)
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    records[_stamp_key(path)] = {**record, **extra}
    try:
        stamps.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(stamps) as temporary:
            temporary.write_text(json.dumps(records, indent=1), encoding="utf-8")
    except OSError:
        pass  # only a cache: the next run hashes again


# -- the features-only copy --------------------------------------------------------------------------
# The official files hold the classifier too (470 of VGG19's 548 MB) in torch's legacy format, which
# must be read whole. The engine reads a copy of the `features` tensors instead, written beside the
# official file in torch's zip format (memory-mapped: about 80 MB read). Making it needs torch
# (`network.py`); knowing whether to trust it does not, so it is here.


def features_path(path: Path | str) -> Path | None:
    """Where the features-only copy of the official file `path` lies (None for other files)."""
    entry = official_for_file(Path(path))
    if entry is None:
        return None
    return Path(path).with_name(Path(entry.filename).stem + FEATURES_SUFFIX)


def verified_official(path: Path | str, stamps: Path | None = None) -> OfficialWeights | None:
    """The official entry of `path` if `verify` has seen it as it is now (size and mtime); no hashing."""
    path, stamps = Path(path), stamps or paths.data_dir() / STAMP_NAME
    entry = official_for_file(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return entry if entry is not None and _stamped(stamps, path, stat) == entry.sha256 else None


def verified_features(path: Path | str, stamps: Path | None = None) -> Path | None:
    """The features-only copy beside the official file `path`, if it can stand in for it: `path` is
    verified as it is now, the copy was made from that official file and still has the SHA-256 it was
    written with (rehashed when its size or mtime changed). None otherwise: remake it, never trust it."""
    path, stamps = Path(path), stamps or paths.data_dir() / STAMP_NAME
    entry = verified_official(path, stamps)
    copy = features_path(path)
    if entry is None or copy is None:
        return None
    try:
        stat = copy.stat()
    except OSError:
        return None
    record = _read_stamps(stamps).get(_stamp_key(copy))
    if not isinstance(record, dict) or record.get("source_sha256") != entry.sha256:
        return None
    digest = record.get("sha256")
    if not isinstance(digest, str) or not digest:
        return None
    if _stamped(stamps, copy, stat) == digest:
        return copy
    if sha256_of(copy) != digest:
        return None
    _stamp(stamps, copy, stat, digest, source_sha256=entry.sha256)
    return copy


def record_features(copy: Path, digest: str, source: Path, stamps: Path | None = None) -> bool:
    """Remember the features-only `copy` of `source`, written with `digest`; False (nothing recorded)
    when `source` is no longer the verified official file it was when the copy was made of it."""
    entry = verified_official(source, stamps)
    if entry is None or features_path(source) != copy:
        return False
    _stamp(stamps or paths.data_dir() / STAMP_NAME, copy, copy.stat(), digest, source_sha256=entry.sha256)
    return True


# -- lookup ------------------------------------------------------------------------------------------


def candidates(model: str) -> list[Path]:
    """Where the engine looks for `model`'s weights, in order (`$NST_WEIGHTS` first when set)."""
    entry = official(model)
    found = [Path(os.environ[WEIGHTS_ENV]).expanduser()] if os.environ.get(WEIGHTS_ENV) else []
    # An official file of another model (VGG19 in $NST_WEIGHTS while asking for VGG16) is no candidate.
    found = [path for path in found if official_for_file(path) in (None, entry)]
    return found + [paths.weights_dir() / entry.filename, paths.torch_hub_checkpoints() / entry.filename]


def find_weights(model: str = "vgg19") -> Path:
    """The first weights file present for `model` (not yet verified: see `resolve_weights`)."""
    env_value = os.environ.get(WEIGHTS_ENV)
    if env_value and not Path(env_value).expanduser().is_file():
        raise WeightsError(f"{WEIGHTS_ENV} names {env_value}, which does not exist: fix or unset it.")
    for candidate in candidates(model):
        if candidate.is_file():
            return candidate
    raise WeightsError(f"{official(model).label} weights not found: {fetch_hint(model)}.")


def resolve_weights(explicit: Path | str | None, model: str = "vgg19") -> Path:
    """The weights to use: `explicit` (--weights, the job's `weights`) or the first found; verified."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"Weights file {path} not found: check the path given with --weights.")
        return verify(path, model)
    return verify(find_weights(model), model)


def status(model: str, load: Callable[[str, Path], object]) -> dict[str, object]:
    """What is known of the weights the engine would use for `model` (`info` reports it): `path` (None
    when none is found), `found`, `verified` (an official file whose SHA-256 matches), `loads` (a file of
    the user's own, which has no hash to compare, read with `load`: whether it loads as `model`'s weights;
    None when not read), `ok` only when one of those checks passed, and else the `problem`."""
    report: dict[str, object] = {"path": None, "found": False, "verified": False, "loads": None, "ok": False}
    try:
        path = find_weights(model)
        report.update(path=str(path), found=True)
        if official_for_file(path) is None:
            report["loads"] = False
            load(model, path)
            report["loads"] = True
        else:
            verify(path, model)
            report["verified"] = True
    except NstError as error:
        report["problem"] = error.message
        return report
    report["ok"] = True
    return report
