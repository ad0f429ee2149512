"""The install plan: what goes where, which torch build, which weights, how much disk. Made before
anything is changed; --dry-run prints it and stops, a run prints it and `steps.carry_out` does it."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .checkout import nst_common, nst_service, paths, project, weights
from .engine import (
    base_python,
    check_existing_python,
    import_problems,
    nst_core_current,
    probe_python,
    store_python,
    torch_fits,
    venv_python,
)
from .errors import EXIT_OLD_PYTHON, EXIT_USAGE, EXIT_WEIGHTS, InstallError
from .gimp_apps import FlatpakGimp, InstalledGimp, flatpak_gimp, installed_gimps
from .profiles import (
    Profile,
    check_writable,
    default_profile,
    explicit_profiles,
    find_profiles,
    not_started,
    start_once,
)
from .system import MACHINE_ENV, PLATFORMS, WEIGHTS_URL_ENV, detect_platform, gigabytes
from .torch_build import TorchBuild, choose_torch

WEIGHTS_DISK = int(0.6 * 1000**3)


@dataclass(frozen=True)
class EnginePlan:
    python: Path  # the engine's Python, made or given
    existing: bool  # --engine-python: only nst_core may go into it
    venv: Path | None  # the virtual environment to make or repair
    make_venv_with: str | None  # the Python that makes the venv; None: it is there and works
    torch: TorchBuild | None  # the build for this machine; None with --engine-python
    install_torch: bool
    install_nst_core: bool

    @property
    def disk(self) -> int:
        return self.torch.disk if self.torch and self.install_torch else 0


@dataclass(frozen=True)
class WeightsPlan:
    action: str  # keep | copy | reference | download
    source: str  # a file, or the URL to download
    dest: Path  # the file the engine will use
    model: str = "vgg19"  # the network the weights are for, which the plug-ins then ask for

    @property
    def disk(self) -> int:
        return WEIGHTS_DISK if self.action in ("download", "copy") else 0


@dataclass(frozen=True)
class InstallPlan:
    system: str  # linux | windows | macos
    data_dir: Path
    engine: EnginePlan
    weights: WeightsPlan
    profiles: tuple[Profile, ...]
    unsupported: tuple[Path, ...]  # profiles of GIMP versions we cannot serve
    installed: tuple[InstalledGimp, ...]  # the GIMPs this machine has, profile or not
    not_started: tuple[tuple[InstalledGimp, Path], ...]  # of those, the ones without a profile yet, and
    # where they will make it
    no_profile_hint: Path  # where GIMP 3.2 would make its profile: for the message when none is known
    flatpak: FlatpakGimp | None  # Flathub's GIMP, when installed
    self_test: bool
    assume_yes: bool  # --yes: the Flatpak permission is applied without asking
    dev: bool
    prefix: bool  # --prefix: uninstalling needs it too
    servers: tuple[tuple[str, Path], ...] = ()  # --server URL with its --token-file

    @property
    def disk(self) -> int:
        return self.engine.disk + self.weights.disk

    @property
    def serves_flatpak(self) -> bool:
        """A Flatpak GIMP will run the plug-in from one of the profiles: it needs its permission."""
        return any(profile.flatpak for profile in self.profiles)


def make_plan(
    args: argparse.Namespace, environ: Mapping[str, str], executable: str = sys.executable
) -> InstallPlan:
    """Everything decided, every check that needs no change made (this Python usable, profiles
    writable, the weights file given, --engine-python usable, a Python for the venv)."""
    system = args.platform or detect_platform(environ)
    if system == "windows" and store_python(executable):
        raise InstallError(
            EXIT_OLD_PYTHON,
            f"This Python ({executable}) is the Microsoft Store's: Windows keeps what it writes below "
            "AppData in its own private folder, so GIMP would see neither the engine nor the plug-ins. "
            "Install Python from python.org (https://www.python.org/downloads/windows/) and run install.py "
            "with that one.",
        )
    data_dir = data_folder(args, environ)
    flatpak = flatpak_gimp(environ) if system == "linux" else None
    if args.gimp_dir:
        profiles, unsupported = explicit_profiles(args.gimp_dir, args.gimp_version), []
    else:
        profiles, unsupported = find_profiles(system, environ, flatpak)
    for profile in profiles:
        check_writable(profile)
    installed = installed_gimps(system, environ, flatpak)
    return InstallPlan(
        system=system,
        data_dir=data_dir,
        engine=plan_engine(args, environ, system, data_dir, executable),
        weights=plan_weights(args, environ, data_dir),
        profiles=tuple(profiles),
        unsupported=tuple(unsupported),
        installed=tuple(installed),
        not_started=tuple(
            (gimp, default_profile(system, environ, gimp.version))  # type: ignore[arg-type]
            for gimp in (not_started(installed, profiles) if not args.gimp_dir else [])
        ),
        no_profile_hint=default_profile(system, environ, (3, 2)),
        flatpak=flatpak,
        self_test=not args.skip_self_test,
        assume_yes=args.yes,
        dev=args.dev,
        prefix=bool(args.prefix),
        servers=plan_servers(args),
    )


def plan_servers(args: argparse.Namespace) -> tuple[tuple[str, Path], ...]:
    """--server URLs with the absolute path of their --token-file, each checked as the plug-ins will."""
    urls = getattr(args, "server", None) or []
    token_file = getattr(args, "token_file", None)
    if not urls:
        if token_file:
            raise InstallError(
                EXIT_USAGE, "--token-file goes with --server URL: give the server's address too."
            )
        return ()
    if not token_file:
        raise InstallError(EXIT_USAGE, "--server needs --token-file: the file holding the server's token.")
    path = Path(token_file).expanduser().absolute()
    try:
        for url in urls:
            nst_service.Server(url, nst_service.read_token(str(path)))
    except nst_common.EngineError as error:
        raise InstallError(EXIT_USAGE, error.message) from None
    return tuple((url, path) for url in urls)


def data_folder(args: argparse.Namespace, environ: Mapping[str, str]) -> Path:
    """--prefix, or the per-user data folder: the engine's environment, the weights, the install record."""
    if args.prefix:
        return Path(args.prefix).expanduser().resolve()
    return paths.data_dir(PLATFORMS[args.platform or detect_platform(environ)], environ)


def plan_engine(
    args: argparse.Namespace, environ: Mapping[str, str], system: str, data_dir: Path, executable: str
) -> EnginePlan:
    if args.engine_python:
        python = Path(os.path.abspath(Path(args.engine_python).expanduser()))
        probe = check_existing_python(python)
        fresh = not nst_core_current(probe, args.dev)
        return EnginePlan(python, True, None, None, None, install_torch=False, install_nst_core=fresh)
    venv = paths.venv_dir(PLATFORMS[system], {paths.DATA_DIR_ENV: str(data_dir)})
    python = venv_python(venv, system)
    build = choose_torch(system, environ.get(MACHINE_ENV) or platform.machine(), args.torch, environ)
    if args.index_url:
        build = replace(build, index_url=args.index_url, reason=build.reason + " (--index-url)")
    probe = probe_python(python) if python.is_file() else None
    running = tuple(sys.version_info[:2])
    maker = base_python(environ, running, executable, build.max_python) if probe is None else None
    others = [module for module in project().imports if module not in ("torch", "torchvision")]
    return EnginePlan(
        python,
        existing=False,
        venv=venv,
        make_venv_with=maker,
        torch=build,
        install_torch=probe is None or not torch_fits(probe, build),
        install_nst_core=probe is None
        or not nst_core_current(probe, args.dev)
        or bool(import_problems(probe, others)),
    )


def plan_weights(args: argparse.Namespace, environ: Mapping[str, str], data_dir: Path) -> WeightsPlan:
    model = args.model
    entry = weights.official(model)
    dest = paths.weights_dir(env={paths.DATA_DIR_ENV: str(data_dir)}) / entry.filename
    if args.weights:
        source = Path(args.weights).expanduser().resolve()
        if not source.is_file():
            raise InstallError(
                EXIT_WEIGHTS, f"Weights file {source} not found: check the path given with --weights."
            )
        if source == dest:
            return WeightsPlan("keep", str(source), dest, model)
        if weights.official_for_file(source) is not None:
            return WeightsPlan("copy", str(source), dest, model)
        return WeightsPlan("reference", str(source), source, model)
    if dest.is_file():
        return WeightsPlan("keep", str(dest), dest, model)
    cached = paths.torch_hub_checkpoints(environ) / entry.filename
    if cached.is_file():
        return WeightsPlan("reference", str(cached), cached, model)
    return WeightsPlan("download", environ.get(WEIGHTS_URL_ENV) or entry.url, dest, model)


def describe(plan: InstallPlan) -> list[str]:
    """The plan as the lines --dry-run (and every run, first) prints."""
    engine, lines = plan.engine, [f"GIMP Neural Style installer ({plan.system}, data folder {plan.data_dir})"]
    if engine.existing:
        lines.append(
            f"  engine: the existing Python {engine.python} (nst_core goes into it if missing or outdated)"
        )
    else:
        assert engine.torch is not None
        build = engine.torch
        lines.append(f"  engine: virtual environment {engine.venv}")
        lines.append(f"  torch: {build.kind} build from {build.index_url or 'PyPI'} ({build.reason})")
    lines.append(f"  weights: {describe_weights(plan.weights)}")
    for profile in plan.profiles:
        lines.append(f"  {profile.label}: plug-in into {profile.plugin_dir}")
    test = "; the self-test runs its picture there" if plan.self_test else ""
    for url, token_file in plan.servers:
        lines.append(f"  server: {url} for the dialog's Device 'Remote server' (token {token_file}{test})")
    for folder in plan.unsupported:
        lines.append(f"  skipped {folder}: only GIMP 3.x and 2.10 are supported")
    if plan.profiles:
        for gimp, folder in plan.not_started:
            lines.append(f"  note: {start_once(gimp, folder)}")
    else:
        lines.append("  GIMP: no profile found")
    if plan.flatpak is not None and plan.serves_flatpak:
        if plan.flatpak.allowed:
            lines.append("  Flatpak GIMP: may already start the engine outside its sandbox")
        else:
            lines.append(
                "  Flatpak GIMP: needs a permission to start the engine outside its sandbox (asked last)"
            )
    if plan.disk:
        lines.append(f"  disk: about {gigabytes(plan.disk)} needed")
    return lines


def describe_weights(plan: WeightsPlan) -> str:
    if plan.action == "download":
        return f"download {plan.source} to {plan.dest} (checked against its SHA-256)"
    if plan.action == "copy":
        return f"copy {plan.source} to {plan.dest} after checking its SHA-256"
    if plan.action == "reference":
        return f"use {plan.source} where it is (checked by the engine)"
    return f"{plan.dest} (already there)"
