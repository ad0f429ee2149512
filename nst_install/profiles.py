"""GIMP's profile folders: where each GIMP generation loads our plug-in, and what goes there."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .checkout import PLUGINS
from .errors import EXIT_GIMP_NOT_WRITABLE, EXIT_INTERNAL, EXIT_USAGE, InstallError
from .gimp_apps import GIMP_FLATPAK_ID, STORE_PACKAGES, FlatpakGimp, InstalledGimp
from .system import home_dir

CONFIG_VERSION = 1
NATIVE, FLATPAK, STORE = "native", "flatpak", "store"  # whose profile folder it is
LABELS = {NATIVE: "", FLATPAK: " (Flatpak)", STORE: " (Microsoft Store)"}


@dataclass(frozen=True)
class PluginLayout:
    """<profile>/plug-ins/<folder>/<folder>.py (executable) plus the files matched by `sources`
    (globs relative to the checkout's plug-ins/ folder)."""

    folder: str
    sources: tuple[str, ...]


PLUGIN_LAYOUTS = {
    3: PluginLayout("neural_style", ("neural_style/*.py",)),
    2: PluginLayout(
        "neural_style_gimp2",
        (
            "neural_style_gimp2/*.py",
            "neural_style/nst_bridge.py",
            "neural_style/nst_service.py",
            "neural_style/nst_common.py",
            "neural_style/nst_tiff.py",
        ),
    ),
}


@dataclass(frozen=True)
class Profile:
    path: Path
    version: tuple[int, int]
    kind: str = NATIVE  # NATIVE, FLATPAK (the sandbox's own folder) or STORE
    shared_with_flatpak: bool = False  # the Flatpak GIMP reads it too (its xdg-config/GIMP permission)

    @property
    def flatpak(self) -> bool:
        """A Flatpak GIMP runs the plug-in from here: it must be let out of its sandbox."""
        return self.kind == FLATPAK or self.shared_with_flatpak

    @property
    def label(self) -> str:
        shared = " (also the Flatpak GIMP's)" if self.shared_with_flatpak else ""
        return f"GIMP {self.version[0]}.{self.version[1]}{LABELS[self.kind]}{shared}"

    @property
    def plugin_dir(self) -> Path:
        return self.path / "plug-ins" / PLUGIN_LAYOUTS[self.version[0]].folder


def config_roots(system: str, environ: Mapping[str, str]) -> list[tuple[Path, str]]:
    """[(folder holding X.Y profiles, whose)] for `system`."""
    home = home_dir(environ)
    if system == "windows":
        appdata, local = environ.get("APPDATA"), environ.get("LOCALAPPDATA")
        roaming = Path(appdata) if appdata else home / "AppData" / "Roaming"
        # The Store's GIMP is an MSIX package: Windows keeps its AppData in the package's LocalCache.
        packages = (Path(local) if local else home / "AppData" / "Local") / "Packages"
        store = [
            (package / "LocalCache" / "Roaming" / "GIMP", STORE)
            for package in sorted(packages.glob(STORE_PACKAGES))
        ]
        return [(roaming / "GIMP", NATIVE), *store]
    if system == "macos":
        return [(home / "Library" / "Application Support" / "GIMP", NATIVE)]
    xdg = environ.get("XDG_CONFIG_HOME")
    config = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    flatpak = home / ".var" / "app" / GIMP_FLATPAK_ID / "config" / "GIMP"
    return [(config / "GIMP", NATIVE), (flatpak, FLATPAK)]


def parse_version(name: str) -> tuple[int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)$", name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def supported(version: tuple[int, int]) -> bool:
    return version[0] == 3 or version == (2, 10)


def find_profiles(
    system: str, environ: Mapping[str, str], flatpak: FlatpakGimp | None = None
) -> tuple[list[Profile], list[Path]]:
    """(supported profiles, folders of GIMP versions we cannot serve). With Flathub's GIMP installed, the
    host's ~/.config/GIMP/X.Y of its version is its profile too (flathub/org.gimp.GIMP#72)."""
    found, unsupported = [], []
    for root, kind in config_roots(system, environ):
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            version = parse_version(child.name)
            if version is None or not child.is_dir():
                continue
            if supported(version):
                shared = kind == NATIVE and flatpak is not None and reads_host_profile(flatpak, version)
                found.append(Profile(child, version, kind, shared))
            else:
                unsupported.append(child)
    return found, unsupported


def reads_host_profile(flatpak: FlatpakGimp, version: tuple[int, int]) -> bool:
    """Whether the Flatpak GIMP loads plug-ins from the host's profile of `version`."""
    if flatpak.version is None:
        return version[0] == 3  # Flathub's GIMP 2.10 kept its profile inside the sandbox
    return version == flatpak.version


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
        where = path.as_posix() + "/"
        kind = (
            FLATPAK
            if f".var/app/{GIMP_FLATPAK_ID}/" in where
            else STORE
            if "/Packages/GIMP.GIMP_" in where
            else NATIVE
        )
        profiles.append(Profile(path, version, kind))
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


def default_profile(system: str, environ: Mapping[str, str], version: tuple[int, int]) -> Path:
    """Where GIMP `version` will make its profile: for the messages when it has none yet."""
    return config_roots(system, environ)[0][0] / f"{version[0]}.{version[1]}"


def not_started(installed: Iterable[InstalledGimp], profiles: Iterable[Profile]) -> list[InstalledGimp]:
    """The installed GIMPs of a supported version that have no profile yet: never started."""
    have = {profile.version for profile in profiles}
    return [
        gimp for gimp in installed if gimp.version and supported(gimp.version) and gimp.version not in have
    ]


def start_once(gimp: InstalledGimp, folder: Path) -> str:
    return (
        f"{gimp.label} ({gimp.where}) was never started, so it has no profile folder yet: start it once "
        f"(it makes {folder} and brings over an older GIMP's settings), quit it and run install.py again"
    )


def no_gimp_message(
    not_started: Sequence[tuple[InstalledGimp, Path]],
    installed: Sequence[InstalledGimp],
    example: Path,
    dry_run: bool,
) -> str:
    """The message when no profile was found: the newest GIMP never started and the folder it will make,
    or else any GIMP found, or else how to point at a profile (`example`)."""
    done = "no plug-in would be placed" if dry_run else "the engine is ready, but no plug-in was placed"
    if not_started:
        gimp, folder = max(not_started, key=lambda pair: pair[0].version or (0, 0))
        return f"No GIMP profile found ({done}): {start_once(gimp, folder)}."
    if installed:
        gimp = installed[0]
        return (
            f"No GIMP profile found ({done}): {gimp.label} ({gimp.where}) was never started: start it once, "
            "quit it and run install.py again."
        )
    return (
        f"No GIMP 3.x or 2.10 profile found: {done}. Start GIMP (3.2, 3.0 or 2.10) once so that it makes its "
        f"profile folder, quit it and run install.py again, or name the folder with --gimp-dir DIR (e.g. "
        f"--gimp-dir {example})."
    )
