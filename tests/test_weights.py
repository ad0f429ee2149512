"""Data folders, weight lookup and verification, and the resumable downloader against a local server."""

from __future__ import annotations

import ast
import hashlib
import http.server
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from nst_core import paths, weights
from nst_core.errors import ExitCode, UsageError, WeightsError

PAYLOAD = bytes(range(256)) * 40 + b"tail"  # 10244 bytes, several small chunks
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def isolated(isolated_data: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "CHUNK", 1024)


# -- a tiny HTTP server on 127.0.0.1 ----------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    honour_range = True
    ranges: list[str | None] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if self.path not in ("/file", "/broken"):
            self.send_error(404)
            return
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header and self.honour_range else 0
        if start >= len(PAYLOAD):
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
            self.end_headers()
            return
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # /broken drops the connection half way, as a flaky network does.
        self.wfile.write(body[: len(body) // 2] if self.path == "/broken" else body)


@pytest.fixture
def server() -> Iterator[str]:
    Handler.honour_range = True
    Handler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# -- downloader ------------------------------------------------------------------------------------


def test_full_download_reports_progress_and_leaves_no_part(server: str, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    dest = tmp_path / "w" / "x.pth"
    weights.download(f"{server}/file", dest, PAYLOAD_SHA, lambda done, total: seen.append((done, total)))
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "w" / "x.pth.part").exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3


def test_resume_sends_range_and_appends(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.pth"
    (tmp_path / "x.pth.part").write_bytes(PAYLOAD[:3000])
    seen: list[int] = []
    weights.download(f"{server}/file", dest, PAYLOAD_SHA, lambda d, t: seen.append(d))
    assert Handler.ranges == ["bytes=3000-"]
    assert seen[0] == 3000
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_starts_over(server: str, tmp_path: Path) -> None:
    Handler.honour_range = False
    dest = tmp_path / "x.pth"
    (tmp_path / "x.pth.part").write_bytes(PAYLOAD[:3000])
    weights.download(f"{server}/file", dest, PAYLOAD_SHA)
    assert Handler.ranges == ["bytes=3000-"]
    assert dest.read_bytes() == PAYLOAD


def test_complete_part_is_answered_416_and_kept(server: str, tmp_path: Path) -> None:
    (tmp_path / "x.pth.part").write_bytes(PAYLOAD)
    assert weights.download(f"{server}/file", tmp_path / "x.pth", PAYLOAD_SHA).read_bytes() == PAYLOAD


def test_stale_part_is_discarded_once(server: str, tmp_path: Path) -> None:
    (tmp_path / "x.pth.part").write_bytes(b"\xff" * 3000)
    weights.download(f"{server}/file", tmp_path / "x.pth", PAYLOAD_SHA)
    assert Handler.ranges == ["bytes=3000-", None]
    assert (tmp_path / "x.pth").read_bytes() == PAYLOAD


def test_wrong_hash_removes_part_and_writes_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="wrong SHA-256") as caught:
        weights.download(f"{server}/file", tmp_path / "x.pth", "0" * 64)
    assert caught.value.code == ExitCode.WEIGHTS
    assert list(tmp_path.iterdir()) == []


def test_short_hash_prefix_is_accepted(server: str, tmp_path: Path) -> None:
    assert weights.download(f"{server}/file", tmp_path / "x.pth", PAYLOAD_SHA[:8]).is_file()


def test_broken_transfer_keeps_part_for_resume(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "x.pth"
    with pytest.raises(WeightsError, match="retry.*--weights FILE"):
        weights.download(f"{server}/broken", dest, PAYLOAD_SHA)
    assert not dest.exists()
    part = tmp_path / "x.pth.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    weights.download(f"{server}/file", dest, PAYLOAD_SHA)
    assert Handler.ranges[-1] == f"bytes={len(PAYLOAD) // 2}-"
    assert dest.read_bytes() == PAYLOAD and not part.exists()


@pytest.mark.parametrize("where", ["/missing", "closed-port"])
def test_network_errors_are_one_line(server: str, tmp_path: Path, where: str) -> None:
    url = "http://127.0.0.1:9/x" if where == "closed-port" else server + where
    with pytest.raises(WeightsError) as caught:
        weights.download(url, tmp_path / "x.pth", PAYLOAD_SHA, timeout=5)
    assert "\n" not in caught.value.message and "--weights FILE" in caught.value.message
    assert not (tmp_path / "x.pth").exists()


def test_fetch_downloads_official_entry_into_dir(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = replace(
        weights.OFFICIAL["vgg16"],
        filename="fake16.pth",
        url=f"{server}/file",
        sha256=PAYLOAD_SHA,
        size=len(PAYLOAD),
    )
    monkeypatch.setitem(weights.OFFICIAL, "vgg16", fake)
    path = weights.fetch("vgg16", tmp_path / "dir")
    assert path == tmp_path / "dir" / "fake16.pth" and path.read_bytes() == PAYLOAD
    assert weights.fetch("vgg16", tmp_path / "dir") == path
    assert len(Handler.ranges) == 1  # the second fetch found a verified file


# -- verification ------------------------------------------------------------------------------------


@pytest.fixture
def fake_official(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make a small file 'official' for vgg19, so hash checks run on a few bytes."""
    entry = replace(
        weights.OFFICIAL["vgg19"], filename="vgg19-fake.pth", sha256=PAYLOAD_SHA, size=len(PAYLOAD)
    )
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    path = tmp_path / "vgg19-fake.pth"
    path.write_bytes(PAYLOAD)
    return path


def test_official_file_is_hashed_once(fake_official: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights.verify(fake_official, "vgg19") == fake_official
    monkeypatch.setattr(weights, "sha256_of", lambda path: pytest.fail("hashed again"))
    weights.verify(fake_official, "vgg19")
    os.utime(fake_official, ns=(1, 1))
    with pytest.raises(pytest.fail.Exception):
        weights.verify(fake_official)


def test_truncated_official_file(fake_official: Path) -> None:
    fake_official.write_bytes(PAYLOAD[:100])
    with pytest.raises(WeightsError, match=r"incomplete or damaged \(100 of 10244 bytes\).*weights fetch"):
        weights.verify(fake_official)


def test_corrupt_official_file(fake_official: Path) -> None:
    fake_official.write_bytes(b"x" + PAYLOAD[1:])
    with pytest.raises(WeightsError, match="wrong SHA-256.*delete it"):
        weights.verify(fake_official)


def test_official_file_of_other_model(fake_official: Path) -> None:
    with pytest.raises(WeightsError, match="holds VGG19 weights but the model is vgg16"):
        weights.verify(fake_official, "vgg16")


def test_other_files_are_accepted_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "mine.pth"
    path.write_bytes(b"anything")
    assert weights.verify(path, "vgg19") == path
    with pytest.raises(WeightsError, match="not found"):
        weights.verify(tmp_path / "absent.pth")


# -- the features-only copy ---------------------------------------------------------------------------


def test_the_features_copy_lies_beside_the_official_file(tmp_path: Path) -> None:
    official = tmp_path / weights.OFFICIAL["vgg19"].filename
    assert weights.features_path(official) == tmp_path / "vgg19-dcbb9e9d.features.pt"
    assert weights.features_path(tmp_path / "vgg16-397923af.pth") == tmp_path / "vgg16-397923af.features.pt"
    assert weights.features_path(tmp_path / "mine.pth") is None  # a file of one's own is read as it is


def test_the_features_copy_is_trusted_as_recorded_only(
    fake_official: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = fake_official.with_name("vgg19-fake.features.pt")
    copy.write_bytes(b"the features")
    digest = hashlib.sha256(b"the features").hexdigest()
    assert not weights.record_features(copy, digest, fake_official)  # the official file is not verified
    assert weights.verified_features(fake_official) is None
    weights.verify(fake_official, "vgg19")
    assert weights.verified_features(fake_official) is None  # verified, but the copy is unknown
    assert weights.record_features(copy, digest, fake_official)
    assert weights.verified_features(fake_official) == copy
    hash_of = weights.sha256_of
    monkeypatch.setattr(weights, "sha256_of", lambda path: pytest.fail("hashed again"))
    assert weights.verified_features(fake_official) == copy
    os.utime(copy, ns=(1, 1))  # touched, not changed: hashed once more, then trusted again
    monkeypatch.setattr(weights, "sha256_of", hash_of)
    assert weights.verified_features(fake_official) == copy
    monkeypatch.setattr(weights, "sha256_of", lambda path: pytest.fail("hashed again"))
    assert weights.verified_features(fake_official) == copy
    monkeypatch.setattr(weights, "sha256_of", hash_of)
    copy.write_bytes(b"The features")  # the same size, other bytes
    assert weights.verified_features(fake_official) is None
    copy.write_bytes(b"the features")
    assert weights.verified_features(fake_official) == copy
    os.utime(fake_official, ns=(1, 1))  # the official file not verified as it is now
    assert weights.verified_features(fake_official) is None


def test_a_features_copy_of_other_official_bytes_is_not_trusted(
    fake_official: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = fake_official.with_name("vgg19-fake.features.pt")
    copy.write_bytes(b"the features")
    weights.verify(fake_official, "vgg19")
    assert weights.record_features(copy, weights.sha256_of(copy), fake_official)
    other = PAYLOAD[::-1]
    fake_official.write_bytes(other)
    entry = replace(weights.OFFICIAL["vgg19"], sha256=hashlib.sha256(other).hexdigest())
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", entry)
    weights.verify(fake_official, "vgg19")
    assert weights.verified_official(fake_official) == entry
    assert weights.verified_features(fake_official) is None


# -- lookup ----------------------------------------------------------------------------------------------


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = weights.OFFICIAL["vgg19"].filename
    hub = tmp_path / "torch" / "hub" / "checkpoints" / name
    data = tmp_path / "data" / "weights" / name
    env = tmp_path / "env.pth"
    with pytest.raises(WeightsError, match=r"VGG19 weights not found: run `python3 install\.py`"):
        weights.find_weights("vgg19")
    for path in (hub, data, env):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"w")
    assert weights.find_weights("vgg19") == data
    monkeypatch.setenv("NST_WEIGHTS", str(env))
    assert weights.find_weights("vgg19") == env
    data.unlink()
    monkeypatch.delenv("NST_WEIGHTS")
    assert weights.find_weights("vgg19") == hub
    official16 = tmp_path / weights.OFFICIAL["vgg16"].filename
    official16.write_bytes(b"w")
    monkeypatch.setenv("NST_WEIGHTS", str(official16))
    assert weights.find_weights("vgg19") == hub  # VGG16 weights are no answer for VGG19
    assert weights.find_weights("vgg16") == official16
    monkeypatch.setenv("NST_WEIGHTS", str(tmp_path / "gone.pth"))
    with pytest.raises(WeightsError, match="NST_WEIGHTS names .* does not exist"):
        weights.find_weights("vgg19")


def test_resolve_weights_prefers_explicit(tmp_path: Path) -> None:
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"w")
    assert weights.resolve_weights(mine, "vgg19") == mine
    with pytest.raises(WeightsError, match="--weights"):
        weights.resolve_weights(tmp_path / "nope.pth", "vgg19")
    with pytest.raises(UsageError, match="Unknown model"):
        weights.find_weights("alexnet")


def test_official_entries_are_torchvision_files() -> None:
    for model, entry in weights.OFFICIAL.items():
        prefix = entry.filename.rsplit("-", 1)[1].split(".")[0]
        assert entry.filename.startswith(model + "-") and entry.url.endswith("/" + entry.filename)
        assert len(entry.sha256) == 64 and entry.sha256.startswith(prefix)


# -- data folders ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("system", "env", "expected"),
    [
        ("linux", {"HOME": "/h"}, "/h/.local/share/gimp-neural-style"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "/xdg"}, "/xdg/gimp-neural-style"),
        ("linux", {"HOME": "/h", "XDG_DATA_HOME": "relative"}, "/h/.local/share/gimp-neural-style"),
        ("darwin", {"HOME": "/h"}, "/h/Library/Application Support/gimp-neural-style"),
        ("win32", {"LOCALAPPDATA": "/L"}, "/L/gimp-neural-style"),
        ("win32", {"LOCALAPPDATA": "/L", "NST_DATA_DIR": "/over"}, "/over"),
    ],
)
def test_data_dir_per_platform(system: str, env: dict[str, str], expected: str) -> None:
    assert paths.data_dir(system, env) == Path(expected)
    assert paths.weights_dir(system, env) == Path(expected) / "weights"


def test_torch_hub_respects_torch_home() -> None:
    assert paths.torch_hub_checkpoints({"TORCH_HOME": "/t"}) == Path("/t/hub/checkpoints")
    assert paths.torch_hub_checkpoints({"HOME": "/h"}) == Path("/h/.cache/torch/hub/checkpoints")


@pytest.mark.parametrize("module", [paths, weights])
def test_installer_modules_are_stdlib_and_python39(module: object) -> None:
    """install.py imports these before any venv exists, possibly on Python 3.9."""
    source = Path(module.__file__).read_text()  # type: ignore[attr-defined]
    tree = ast.parse(source, feature_version=(3, 9))
    assert "from __future__ import annotations" in source  # annotations may use X | Y
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name.split(".")[0] in sys.stdlib_module_names for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module.split(".")[0] in sys.stdlib_module_names
        elif isinstance(node, ast.ImportFrom):
            assert node.module in ("errors", "paths", None)
