"""What the installer created, so that a rerun leaves what is right alone and --uninstall removes exactly
that: the install record (manifest), the folders it made, and files written whole or not at all."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .checkout import nst_service, project
from .errors import EXIT_INTERNAL, EXIT_OK, InstallError
from .system import run_quiet, say

MANIFEST_NAME = "install-manifest.json"
MANIFEST_VERSION = 1
KEPT_WHY = "it holds files install.py did not put there"


class Manifest:
    """The record in the data folder; every change is saved as it is made (a failed install can be undone)."""

    KINDS = ("files", "dirs", "trees", "pip", "checked")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict = {"version": MANIFEST_VERSION}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                raise InstallError(
                    EXIT_INTERNAL,
                    f"The install record {path} is damaged: delete it and run install.py again.",
                ) from None
        for kind in self.KINDS:
            self.data.setdefault(kind, [])

    def add(self, kind: str, value: object) -> None:
        value = value if isinstance(value, list) else str(value)
        if value not in self.data[kind]:
            self.data[kind].append(value)
            self.save()

    def discard(self, kind: str, value: object) -> None:
        if str(value) in self.data[kind]:
            self.data[kind].remove(str(value))
            self.save()

    def save(self) -> None:
        write_if_changed(self.path, (json.dumps(self.data, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def make_dirs(folder: Path, manifest: Manifest) -> None:
    """mkdir -p that records each level it creates."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for level in reversed(missing):
        level.mkdir()
    for level in reversed(missing):  # after the mkdirs: the manifest itself may live in the deepest one
        manifest.add("dirs", level)


def write_if_changed(path: Path, content: bytes, mode: int) -> bool:
    """Write atomically unless the file already holds `content`; fix a wrong mode in place."""
    if path.is_file() and path.read_bytes() == content:
        if (path.stat().st_mode & 0o777) != mode:
            path.chmod(mode)
            return True
        return False
    temporary = path.with_name(f".{path.name}.new-{os.getpid()}")
    temporary.write_bytes(content)
    temporary.chmod(mode)
    os.replace(temporary, path)
    return True


def place_files(target: Path, files: dict[str, tuple[bytes, int]], manifest: Manifest) -> list[str]:
    """Bring `target` to exactly `files`; a new folder appears whole (staged, then renamed)."""
    if not target.exists():
        stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=str(target.parent)))
        try:
            for name, (content, mode) in files.items():
                write_if_changed(stage / name, content, mode)
            stage.chmod(0o755)
            os.rename(stage, target)
        except OSError:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        manifest.add("dirs", target)
        for name in files:
            manifest.add("files", target / name)
        return sorted(files)
    written = [
        name
        for name, (content, mode) in sorted(files.items())
        if write_if_changed(target / name, content, mode)
    ]
    for name in written:
        manifest.add("files", target / name)
    for old in [Path(p) for p in manifest.data["files"] if Path(p).parent == target]:
        if old.name not in files and old.is_file():
            old.unlink()  # shipped by an earlier version, gone from this one
            manifest.discard("files", old)
            written.append(old.name + " (removed)")
    return written


def uninstall(manifest: Manifest, dry_run: bool = False) -> int:
    if not manifest.path.is_file():
        say(
            f"Nothing to uninstall: no install record at {manifest.path} (pass the --prefix used to install)."
        )
        return EXIT_OK
    if dry_run:
        for line in describe_uninstall(manifest):
            say(line)
        say("Dry run: nothing was changed.")
        return EXIT_OK
    data = manifest.data
    stopped = nst_service.stop_local_service(str(manifest.path.parent))
    if stopped is not None:
        say(f"stopped the running engine service (pid {stopped})")
    for python in data["pip"]:
        if Path(python).is_file():
            say(f"removing {project().name} from {python}")
            run_quiet([python, "-m", "pip", "uninstall", "-y", project().name])
    for tree in data["trees"]:
        if Path(tree).is_dir():
            say(f"removing {tree}")
            shutil.rmtree(tree)
    for name in data["files"]:
        if Path(name).is_file():
            say(f"removing {name}")
            Path(name).unlink()
    manifest.path.unlink()
    kept = []
    for folder in deepest_first(data["dirs"]):
        shutil.rmtree(folder / "__pycache__", ignore_errors=True)  # left by GIMP's Python
        try:
            folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            kept.append(folder)
    for folder in kept:
        say(f"kept {folder}: {KEPT_WHY}")
    say("Uninstalled.")
    return EXIT_OK


def deepest_first(folders: list[str]) -> list[Path]:
    return sorted((Path(d) for d in folders), key=lambda p: len(p.parts), reverse=True)


def describe_uninstall(manifest: Manifest) -> list[str]:
    """What `uninstall` would do, as --dry-run prints it. It only reads (the record, the folders, the
    engine service's state file): even asking a running service would be a change it need not make."""
    data, data_dir = manifest.data, manifest.path.parent
    lines = [f"Uninstall, from the install record {manifest.path}:"]
    if (data_dir / nst_service.SERVICE_FOLDER / nst_service.STATE_NAME).is_file():
        lines.append("  would stop the engine service of this data folder, if it runs")
    lines += [f"  would remove {project().name} from {p}" for p in data["pip"] if Path(p).is_file()]
    trees = [Path(t) for t in data["trees"] if Path(t).is_dir()]
    files = [Path(f) for f in data["files"] if Path(f).is_file()]
    # A file inside a tree goes with the tree: uninstall does not name it.
    removed = trees + [f for f in files if not any(tree in f.parents for tree in trees)] + [manifest.path]
    lines += [f"  would remove {path}" for path in removed]
    gone = set(removed)
    for folder in deepest_first(data["dirs"]):
        if not folder.is_dir():
            continue
        # GIMP's Python leaves __pycache__ in a plug-in folder; uninstall removes it with the folder.
        if all(child in gone or child.name == "__pycache__" for child in folder.iterdir()):
            lines.append(f"  would remove the folder {folder}")
            gone.add(folder)
        else:
            lines.append(f"  would keep {folder}: {KEPT_WHY}")
    return lines
