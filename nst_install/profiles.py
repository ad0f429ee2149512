"""GIMP's profile folders: where each GIMP generation loads our plug-in, and what goes there."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .checkout import PLUGINS
from .errors import EXIT_GIMP_NOT_WRITABLE, EXIT_INTERNAL, EXIT_USAGE, InstallError
from .system import home_dir

GIMP_FLATPAK_ID = "org.gimp.GIMP"
CONFIG_VERSION = 1


@dataclass(frozen=True)
class PluginLayout:
    """<profile>/plug-ins/<folder>/<folder>.py (executable) plus the files matched by `sources`
    (globs relative to the checkout's plug-ins/ folder)."""

    folder: str
    sources: tuple[str, ...]


PLUGIN_LAYOUTS = {
    3: PluginLayout("neural_style", ("neural_style/*.py",)),
    2: PluginLayout("neural_style_gimp2", ("neural_style_gimp2/*.py", "neural_style/nst_bridge.py")),
}


@dataclass(frozen=True)
class Profile:
    path: Path
    version: tuple[int, int]
    flatpak: bool

    @property
    def label(self) -> str:
        return f"GIMP {self.version[0]}.{self.version[1]}" + (" (Flatpak)" if self.flatpak else "")

    @property
    def plugin_dir(self) -> Path:
        return self.path / "plug-ins" / PLUGIN_LAYOUTS[self.version[0]].folder


def config_roots(system: str, environ: Mapping[str, str]) -> list[tuple[Path, bool]]:
    """[(folder holding X.Y profiles, is_flatpak)] for `system`."""
    home = home_dir(environ)
    if system == "windows":
        appdata = environ.get("APPDATA")
        return [((Path(appdata) if appdata else home / "AppData" / "Roaming") / "GIMP", False)]
    if system == "macos":
        return [(home / "Library" / "Application Support" / "GIMP", False)]
    xdg = environ.get("XDG_CONFIG_HOME")
    config = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    flatpak = home / ".var" / "app" / GIMP_FLATPAK_ID / "config" / "GIMP"
    return [(config / "GIMP", False), (flatpak, True)]


def parse_version(name: str) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)$", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def supported(version: tuple[int, int]) -> bool:
    return version[0] == 3 or version == (2, 10)


def find_profiles(system: str, environ: Mapping[str, str]) -> tuple[list[Profile], list[Path]]:
    """(supported profiles, folders of GIMP versions we cannot serve)."""
    found, unsupported = [], []
    for root, flatpak in config_roots(system, environ):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            version = parse_version(child.name)
            if version is None or not child.is_dir():
                continue
            if supported(version):
                found.append(Profile(child, version, flatpak))
            else:
                unsupported.append(child)
    return found, unsupported


def explicit_profiles(folders: Iterable[str], version_text: str | None) -> list[Profile]:
    """The profiles named with --gimp-dir (and --gimp-version)."""
    profiles = []
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        version = parse_version(version_text) if version_text else parse_version(path.name)
        if version is None:
            raise InstallError(
                EXIT_USAGE,
                f"Cannot tell the GIMP version of {path}: name the folder like 3.0 or pass "
                "--gimp-version 3.0 (or 2.10).",
            )
        if not supported(version):
            raise InstallError(
                EXIT_USAGE, f"GIMP {version[0]}.{version[1]} is not supported: use GIMP 3.x or 2.10."
            )
        if not path.is_dir():
            raise InstallError(
                EXIT_GIMP_NOT_WRITABLE,
                f"GIMP profile folder {path} does not exist or is not a folder: start that GIMP once, or fix "
                "--gimp-dir.",
            )
        flatpak = f".var/app/{GIMP_FLATPAK_ID}/" in path.as_posix() + "/"
        profiles.append(Profile(path, version, flatpak))
    return profiles


def check_writable(profile: Profile) -> None:
    """Refuse a profile we could not finish writing, before anything is placed in it."""
    for folder in (profile.path / "plug-ins", profile.plugin_dir):
        if folder.exists() and not folder.is_dir():
            raise InstallError(
                EXIT_GIMP_NOT_WRITABLE,
                f"Cannot install into {profile.path}: {folder} is a file where a folder should be: move it "
                "away and run install.py again.",
            )
    existing = next(f for f in (profile.plugin_dir, profile.path / "plug-ins", profile.path) if f.exists())
    if not os.access(str(existing), os.W_OK | os.X_OK):
        raise InstallError(
            EXIT_GIMP_NOT_WRITABLE,
            f"GIMP profile folder {existing} is not writable: fix its owner or permissions (GIMP once run "
            "with sudo?) or pick another with --gimp-dir.",
        )


def plugin_files(profile: Profile) -> dict[str, tuple[bytes, int]]:
    """{file name: (content, mode)} of the plug-in folder of `profile`; the entry point is executable."""
    layout = PLUGIN_LAYOUTS[profile.version[0]]
    files = {}
    for pattern in layout.sources:
        for source in sorted(PLUGINS.glob(pattern)):
            files[source.name] = source.read_bytes()
    main = layout.folder + ".py"
    if main not in files:
        raise InstallError(
            EXIT_INTERNAL,
            f"This checkout lacks plug-ins/{layout.folder}/{main}: update it (git pull) and run install.py "
            "again.",
        )
    return {name: (content, 0o755 if name == main else 0o644) for name, content in files.items()}


def default_plugin_dir(system: str, environ: Mapping[str, str]) -> Path:
    """Where the plug-in would go had GIMP 3.0 made its profile: for the message when none is found."""
    return config_roots(system, environ)[0][0] / "3.0" / "plug-ins" / PLUGIN_LAYOUTS[3].folder


def no_gimp_message(where: Path, dry_run: bool) -> str:
    done = "no plug-in would be placed" if dry_run else "the engine is ready, but no plug-in was placed"
    return (
        f"No GIMP 3.x or 2.10 profile found: {done}. Start GIMP once so that it makes its profile folder and "
        f"run install.py again, or name the folder with --gimp-dir DIR (e.g. --gimp-dir {where.parents[1]})."
    )
