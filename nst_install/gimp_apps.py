"""The GIMPs installed on this machine, apart from their profiles: their versions (to name one that was
never started, so it has no profile yet), and Flathub's GIMP with its permission to start the engine
outside its sandbox."""

from __future__ import annotations

import plistlib
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .checkout import nst_common
from .system import home_dir, run_quiet

GIMP_FLATPAK_ID = "org.gimp.GIMP"
FLATPAK_BUS = "org.freedesktop.Flatpak"  # flatpak-spawn --host talks to it
FLATPAK_PERMISSION = nst_common.FLATPAK_PERMISSION.split()  # the plug-in names the same fix
LINUX_COMMANDS = ("gimp-3.2", "gimp-3.0", "gimp-3", "gimp-2.10", "gimp")
MAC_APPLICATIONS = Path("/Applications")
STORE_PACKAGES = "GIMP.GIMP_*"  # %LOCALAPPDATA%\Packages\<this>: the Microsoft Store's GIMP


@dataclass(frozen=True)
class InstalledGimp:
    version: tuple[int, int] | None  # None: this GIMP does not say
    where: str  # its program, app bundle or package folder

    @property
    def label(self) -> str:
        return f"GIMP {self.version[0]}.{self.version[1]}" if self.version else "GIMP"


@dataclass(frozen=True)
class FlatpakGimp:
    version: tuple[int, int] | None
    allowed: bool  # may start the engine on the host (talk to org.freedesktop.Flatpak)
    flatpak: str  # the flatpak program


def version_of(text: str) -> tuple[int, int] | None:
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def quiet_output(command: Sequence[object]) -> str | None:
    """A program's standard output; None when it fails or cannot start."""
    try:
        done = run_quiet(command, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def flatpak_gimp(environ: Mapping[str, str]) -> FlatpakGimp | None:
    """Flathub's GIMP, if `flatpak info` knows it: its version, and whether an override (the user's or
    the system's) already lets it start programs on the host."""
    flatpak = shutil.which("flatpak", path=environ.get("PATH"))
    if not flatpak:
        return None
    info = quiet_output([flatpak, "info", GIMP_FLATPAK_ID])
    if info is None:
        return None
    version = re.search(r"^\s*Version:\s*(\S+)", info, re.M)
    permissions = "\n".join(
        quiet_output(command) or ""
        for command in (
            [flatpak, "info", "--show-permissions", GIMP_FLATPAK_ID],
            [flatpak, "override", "--user", "--show", GIMP_FLATPAK_ID],
        )
    )
    allowed = re.search(rf"^{re.escape(FLATPAK_BUS)}=(talk|own)\s*$", permissions, re.M) is not None
    return FlatpakGimp(version_of(version.group(1)) if version else None, allowed, flatpak)


def allow_flatpak(gimp: FlatpakGimp) -> str | None:
    """Apply the override; None when done, else why not (one line)."""
    try:
        done = run_quiet([gimp.flatpak, *FLATPAK_PERMISSION[1:]], timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    lines = (done.stderr + done.stdout).strip().splitlines()
    return None if done.returncode == 0 else (lines[-1] if lines else f"exit code {done.returncode}")


def installed_gimps(
    system: str,
    environ: Mapping[str, str],
    flatpak: FlatpakGimp | None = None,
    applications: Path = MAC_APPLICATIONS,
) -> list[InstalledGimp]:
    """The GIMPs this machine has, as far as their programs and packages tell; `flatpak`: what
    flatpak_gimp() found (asked once by the caller, who needs it anyway)."""
    if system == "windows":
        return windows_gimps(environ)
    if system == "macos":
        return mac_gimps([applications, home_dir(environ) / "Applications"])
    found, seen = [], set()
    for command in LINUX_COMMANDS:
        program = shutil.which(command, path=environ.get("PATH"))
        if not program or Path(program).resolve() in seen:
            continue
        seen.add(Path(program).resolve())
        said = quiet_output([program, "--version"])
        if said is not None:
            found.append(InstalledGimp(version_of(said), program))
    if flatpak is not None:
        found.append(InstalledGimp(flatpak.version, f"Flatpak {GIMP_FLATPAK_ID}"))
    return found


def windows_gimps(environ: Mapping[str, str]) -> list[InstalledGimp]:
    """GIMP's installers put bin\\gimp-X.Y.exe under Program Files (all users) or Programs (one user)."""
    roots = [environ.get(name) for name in ("ProgramFiles", "ProgramW6432", "ProgramFiles(x86)")]
    local = environ.get("LOCALAPPDATA")
    roots.append(str(Path(local) / "Programs") if local else None)
    found = []
    for root in dict.fromkeys(root for root in roots if root):
        for program in sorted(Path(root).glob("GIMP*/bin/gimp-*.exe")):
            match = re.fullmatch(r"gimp-(\d+)\.(\d+)\.exe", program.name, re.I)
            if match:
                found.append(InstalledGimp((int(match.group(1)), int(match.group(2))), str(program)))
    if local:
        packages = sorted((Path(local) / "Packages").glob(STORE_PACKAGES))
        found += [InstalledGimp(None, str(package)) for package in packages]
    return found


def mac_gimps(folders: Sequence[Path]) -> list[InstalledGimp]:
    found = []
    for folder in folders:
        for plist in sorted(folder.glob("GIMP*.app/Contents/Info.plist")):
            try:
                version = str(plistlib.loads(plist.read_bytes()).get("CFBundleShortVersionString", ""))
            except (OSError, ValueError, plistlib.InvalidFileException):
                version = ""
            found.append(InstalledGimp(version_of(version), str(plist.parents[1])))
    return found
