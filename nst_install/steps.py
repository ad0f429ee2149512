"""Carrying out an install plan, step by step; each step gets what it needs and returns what it made,
and every change goes into the install record as it is made."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .checkout import REPO, NstError, nst_common, nst_service, paths, project, weights
from .engine import (
    SELF_TEST_OPTIONS,
    SELF_TEST_SIZE,
    check_engine,
    describe_engine,
    engine_info,
    measure_speed,
    pip_install,
    run_engine,
    self_test,
)
from .errors import EXIT_ENGINE, EXIT_GIMP_NOT_WRITABLE, EXIT_WEIGHTS, InstallError
from .gimp_apps import allow_flatpak
from .plan import EnginePlan, InstallPlan, WeightsPlan
from .profiles import CONFIG_VERSION, Profile, plugin_files
from .records import Manifest, make_dirs, place_files
from .system import gigabytes, last_line, run_quiet, say


@dataclass
class Changes:
    """What this run changed, for the summary ("Nothing changed" when empty)."""

    done: list[str] = field(default_factory=list)

    def note(self, text: str, show: bool = True) -> None:
        self.done.append(text)
        if show:
            say("  " + text)


def carry_out(plan: InstallPlan, manifest: Manifest) -> Changes:
    """Engine, weights, one check that torch imports (and loads the user's own weights), nst_core,
    the official weights' features-only copy (the engine writes it), the self-test, then the plug-ins:
    the order in which each step can rely on the ones before."""
    changes = Changes()
    make_dirs(plan.data_dir, manifest)
    manifest.add("files", plan.data_dir / weights.STAMP_NAME)  # the engine's hash cache of the weights
    manifest.add("files", plan.data_dir / paths.SPEED_FILE)  # the self-test's measured speed
    say("Engine")
    make_environment(plan.engine, manifest, changes)
    say("Weights")
    to_load = set_up_weights(plan.weights, plan.data_dir, manifest, changes)
    check_engine(plan.engine.python, to_load, plan.weights.model)
    if to_load is not None:
        manifest.data["checked"] = [s for s in manifest.data["checked"] if s[0] != str(to_load)]
        manifest.add("checked", weights_stamp(to_load, plan.weights.model))
        say(f"  using {to_load} where it is (the engine loads it)")
    stop_engine_service(plan.data_dir, changes)
    manifest.add(
        "trees", plan.data_dir / nst_service.SERVICE_FOLDER
    )  # the plug-ins' warm engine's token, log
    install_nst_core(plan, manifest, changes)
    make_features_file(plan, manifest, changes)
    description = describe_engine(plan.engine.python, plan.data_dir)
    if plan.self_test:
        report_self_test(plan)
        for url, token_file in plan.servers:
            report_server_test(plan, url, token_file)
    for profile in plan.profiles:
        install_plugin(profile, plan, description, manifest, changes)
    if plan.serves_flatpak:
        let_flatpak_out(plan, changes)
    return changes


def make_environment(engine: EnginePlan, manifest: Manifest, changes: Changes) -> None:
    """The venv and the torch build the plan asks for (nothing with --engine-python)."""
    if engine.existing:
        say(f"  the existing Python {engine.python}")
        return
    assert engine.venv is not None and engine.torch is not None
    if engine.make_venv_with:
        created = not engine.venv.exists()
        changes.note(f"creating the virtual environment {engine.venv}")
        make_dirs(engine.venv.parent, manifest)
        result = run_quiet([engine.make_venv_with, "-m", "venv", "--clear", engine.venv], timeout=600)
        if created:
            manifest.add("trees", engine.venv)
        if result.returncode != 0 or not engine.python.is_file():
            raise InstallError(
                EXIT_ENGINE,
                f"Cannot create the virtual environment {engine.venv}: "
                f"{last_line(result.stderr + result.stdout)}: on Debian or Ubuntu install python3-venv, then "
                "run install.py again.",
            )
    if engine.install_torch:
        if not engine.make_venv_with:  # an existing venv: its torch may be the wrong build at a right version
            run_quiet([engine.python, "-m", "pip", "uninstall", "-y", "torch", "torchvision"])
        index = ["--index-url", engine.torch.index_url] if engine.torch.index_url else []
        torch = [engine.torch.requirement(name) for name in ("torch", "torchvision")]
        pip_install(engine.python, [*torch, *index], f"torch ({engine.torch.kind})")
        changes.note("torch installed", show=False)


def install_nst_core(plan: InstallPlan, manifest: Manifest, changes: Changes) -> None:
    engine = plan.engine
    if not engine.install_nst_core:
        say(f"  nst_core up to date in {engine.python}")
        return
    source = ["-e", str(REPO)] if plan.dev else [str(REPO)]
    if engine.existing:
        pip_install(engine.python, ["--no-deps", *source], "nst_core")
        manifest.add("pip", engine.python)
        changes.note(f"nst_core installed into {engine.python}", show=False)
    elif engine.torch is not None and engine.torch.pins:
        # pip would replace the pinned torch by the project's range: the rest first, then nst_core alone.
        others = [
            engine.torch.requirement(dist)
            for _module, dist in project().modules
            if dist not in ("torch", "torchvision")
        ]
        pip_install(engine.python, others, "what nst_core needs besides torch (this machine's pins)")
        pip_install(engine.python, ["--no-deps", *source], "nst_core")
        changes.note("nst_core installed", show=False)
    else:
        pip_install(engine.python, source, "nst_core and what it needs besides torch")
        changes.note("nst_core installed", show=False)


def set_up_weights(plan: WeightsPlan, data_dir: Path, manifest: Manifest, changes: Changes) -> Path | None:
    """The weights in place and, where there is a hash, verified; a file of the user's own that the
    engine has not loaded before (it has no hash to compare), or None."""
    stamps = data_dir / weights.STAMP_NAME
    try:
        if plan.action == "download":
            download_weights(plan.source, plan.dest, plan.model, manifest, changes)
        elif plan.action == "copy":
            weights.verify(plan.source, plan.model, stamps=stamps)
            copy_weights(Path(plan.source), plan.dest, plan.model, stamps, manifest, changes)
        elif weights.official_for_file(plan.dest):
            weights.verify(plan.dest, plan.model, stamps=stamps)
            say(f"  {plan.dest} present and verified")
        elif weights_stamp(plan.dest, plan.model) in manifest.data["checked"]:
            # Referenced in place, not copied: it is the user's file, and uninstall must not touch it.
            say(f"  using {plan.dest} where it is (the engine loaded it before; unchanged since)")
        else:
            return plan.dest
    except NstError as exc:
        raise InstallError(EXIT_WEIGHTS, exc.message) from None
    return None


def download_weights(url: str, dest: Path, model: str, manifest: Manifest, changes: Changes) -> None:
    make_dirs(dest.parent, manifest)
    manifest.add("files", dest.with_name(dest.name + ".part"))
    say(f"  downloading {url}")
    entry = weights.official(model)
    try:
        weights.download(url, dest, entry.sha256, DownloadProgress())
    except NstError as exc:
        raise InstallError(
            EXIT_WEIGHTS,
            f"{exc.message} Without network here: download {entry.url} elsewhere, copy it to this machine "
            "and run `python3 install.py --weights FILE`.",
        ) from None
    manifest.add("files", dest)
    changes.note(f"downloaded and verified {dest}")


def copy_weights(
    source: Path, dest: Path, model: str, stamps: Path, manifest: Manifest, changes: Changes
) -> None:
    if dest.is_file() and dest.stat().st_size == source.stat().st_size:
        try:
            weights.verify(dest, model, stamps=stamps)
            say(f"  {dest} present and verified")
            return
        except NstError:
            pass
    make_dirs(dest.parent, manifest)
    # Copied, not referenced: the official file belongs in the data folder, where the engine
    # looks by default, and the install keeps working if the download is moved or deleted.
    temporary = dest.with_name(dest.name + ".part")
    shutil.copyfile(source, temporary)
    os.replace(temporary, dest)
    manifest.add("files", dest)
    changes.note(f"copied the verified {source} to {dest}")


def make_features_file(plan: InstallPlan, manifest: Manifest, changes: Changes) -> None:
    """The features-only copy beside official weights, which the engine starts from instead of the whole
    file. The engine writes it (that takes torch); without it the engine still works, reading the whole
    file, so a failure is said, not raised."""
    official = plan.weights.dest
    copy = weights.features_path(official)
    if copy is None:
        return  # a file of the user's own is read as it is
    stamps = plan.data_dir / weights.STAMP_NAME
    manifest.add("files", copy)
    if weights.verified_features(official, stamps) is not None:
        say(f"  {copy} present and verified")
        return
    result = run_engine(
        plan.engine.python,
        plan.data_dir,
        "weights",
        "fetch",
        "--model",
        plan.weights.model,
        "--dir",
        str(official.parent),
    )
    if result.returncode == 0 and weights.verified_features(official, stamps) is not None:
        changes.note(f"wrote and verified {copy}, the engine's quicker start")
    else:
        # fetch's note on stderr, or its error; stdout holds only the weights' path
        problem = last_line(result.stderr if result.stderr.strip() else result.stdout)
        problem = problem.removeprefix("note: ").removeprefix("error: ")
        say(f"  no features-only copy made, the engine reads the whole weights file: {problem}")


def weights_stamp(path: Path, model: str) -> list:
    """How the record knows a file of the user's own again: its path, size and modification time, and the
    network it was loaded as (the same file asked for as another network is checked again)."""
    return [str(path), path.stat().st_size, path.stat().st_mtime_ns, model]


def report_self_test(plan: InstallPlan) -> None:
    say("Self-test")
    info = engine_info(plan.engine.python, plan.data_dir)
    started, seconds = self_test(
        plan.engine.python, plan.weights.dest, plan.data_dir, model=plan.weights.model
    )
    device = started.get("device") or info.get("device", "?")
    threads = f", {info['threads']} threads" if info.get("type") == "cpu" and "threads" in info else ""
    say(f"  device: {device}{threads}{memory_text(info)}")
    width, height = SELF_TEST_SIZE
    iterations = SELF_TEST_OPTIONS["iterations"]
    test = f"a {width}x{height} test picture, {iterations} iterations"
    say(f"  {test}: {seconds:.1f} s, starting the engine included")
    speed = measure_speed(plan.engine.python, plan.weights.dest, plan.data_dir, plan.weights.model)
    if speed is None:
        say("  speed: not measured (the time estimates use the defaults)")
    else:
        rate, device = speed["rate"] / 1e9, speed["device"]
        say(f"  speed: {rate:.0f} GFLOP/s on {device}, recorded for the time estimates")


def report_server_test(plan: InstallPlan, url: str, token_file: Path) -> None:
    """The self-test's picture on a --server, through the plug-ins' own client."""
    say(f"Server {url}")
    started, seconds = self_test(
        plan.engine.python, plan.weights.dest, plan.data_dir, (url, token_file), plan.weights.model
    )
    say(f"  device: {started.get('device', '?')}; the test picture took {seconds:.1f} s there")


def stop_engine_service(data_dir: Path, changes: Changes) -> None:
    """A running warm engine would go on serving the old engine after an upgrade: stop it; the plug-ins
    start the new one on their next run."""
    pid = nst_service.stop_local_service(str(data_dir))
    if pid is not None:
        changes.note(f"stopped the running engine service (pid {pid}); the next run starts the new one")


def memory_text(info: dict) -> str:
    """`info --json`'s memory fields (bytes; None where the device does not say)."""
    total, free = info.get("total_memory"), info.get("free_memory")
    if not total:
        return ""
    return f", {gigabytes(total)} memory ({gigabytes(free)} free)" if free else f", {gigabytes(total)} memory"


def install_plugin(
    profile: Profile, plan: InstallPlan, description: dict, manifest: Manifest, changes: Changes
) -> None:
    say(f"{profile.label} ({profile.path})")
    target = profile.plugin_dir
    files = plugin_files(profile)
    config = {
        "version": CONFIG_VERSION,
        "python": str(Path(os.path.abspath(plan.engine.python))),
        "weights": str(plan.weights.dest),
        "data_dir": str(plan.data_dir),
        "engine": description,
        "service": True,  # the plug-ins start a warm engine service on first use (nst_service.py)
    }
    if plan.weights.model != "vgg19":  # the engine's own default needs no word
        config["model"] = plan.weights.model
    if plan.servers:
        config["servers"] = [{"url": url, "token_file": str(token)} for url, token in plan.servers]
    files[nst_common.CONFIG_NAME] = ((json.dumps(config, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    make_dirs(target.parent, manifest)
    try:
        written = place_files(target, files, manifest)
    except OSError as exc:
        raise InstallError(
            EXIT_GIMP_NOT_WRITABLE,
            f"Cannot write the plug-in into {target} ({exc.strerror or exc}): fix the folder's permissions "
            "or pick another profile with --gimp-dir.",
        ) from None
    for name in written:
        changes.note(f"wrote {target / name}")
    if not written:
        say(f"  plug-in up to date in {target}")


def let_flatpak_out(plan: InstallPlan, changes: Changes) -> None:
    """The one override a Flatpak GIMP needs to start the engine on the host (flatpak-spawn --host):
    applied with --yes or when the user says so, printed otherwise."""
    command, gimp = nst_common.FLATPAK_PERMISSION, plan.flatpak
    say("Flatpak GIMP")
    if gimp is not None and gimp.allowed:
        say("  it may start the engine outside its sandbox already")
        return
    question = f"  Let it start the engine outside its sandbox ({command})? [y/N] "
    if gimp is not None and (plan.assume_yes or ask(question)):
        problem = allow_flatpak(gimp)
        if problem is None:
            changes.note(f"ran {command}")
            return
        say(f"  that failed ({problem}); run it yourself, once:")
    else:
        say("  allow it to start the engine outside its sandbox, once:")
    say("    " + command)


def ask(question: str) -> bool:
    """A yes/no question on a terminal; no without one (a script, a log)."""
    if not sys.stdin.isatty():
        return False
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


class DownloadProgress:
    """A progress bar on a terminal, a line per tenth otherwise (logs stay short)."""

    def __init__(self) -> None:
        self.shown = -1
        self.tty = sys.stdout.isatty()

    def __call__(self, done: int, total: int | None) -> None:
        if not total:
            return
        percent = done * 100 // total
        step = percent if self.tty else percent // 10 * 10
        if step == self.shown:
            return
        self.shown = step
        bar = "#" * (percent // 4) + "-" * (25 - percent // 4)
        text = f"  [{bar}] {percent:3d}% of {gigabytes(total)}"
        if self.tty:
            sys.stdout.write("\r" + text + ("\n" if done >= total else ""))
            sys.stdout.flush()
        else:
            say(text)
