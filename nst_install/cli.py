"""install.py's command line: the plan, printed; then, unless --dry-run, carried out and summed up."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence

from .checkout import weights
from .errors import EXIT_CANCELLED, EXIT_DISK_SPACE, EXIT_INTERNAL, EXIT_NO_GIMP, EXIT_OK, InstallError
from .plan import WEIGHTS_DISK, InstallPlan, data_folder, describe, make_plan
from .profiles import no_gimp_message
from .records import MANIFEST_NAME, Manifest, uninstall
from .steps import Changes, carry_out
from .system import PLATFORMS, free_bytes, gigabytes, say
from .torch_build import DISK


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="install.py",
        description="Install (or upgrade, or remove) GIMP Neural Style: the engine's Python environment, the "
        "VGG19 weights and the GIMP plug-ins. See docs/install.md.",
    )
    parser.add_argument(
        "--prefix",
        help="data folder for the engine's environment and weights (default: the per-user data folder)",
    )
    parser.add_argument(
        "--torch",
        choices=("auto", "cpu", "cuda", "rocm"),
        default="auto",
        help="torch build (default: auto-detect the GPU)",
    )
    parser.add_argument("--index-url", help="pip index for torch and torchvision (overrides --torch's)")
    parser.add_argument(
        "--engine-python",
        metavar="PATH",
        help="use this existing Python (with torch and torchvision) instead of a new venv",
    )
    parser.add_argument("--dev", action="store_true", help="install nst_core editable from this checkout")
    parser.add_argument("--weights", metavar="FILE", help="VGG19 weights file you already have")
    parser.add_argument(
        "--model",
        choices=sorted(weights.OFFICIAL),
        default="vgg19",
        help="the network the plug-ins run: vgg19 (default) or vgg16, whose official file (or --weights) "
        "is then used",
    )
    parser.add_argument(
        "--gimp-dir",
        metavar="DIR",
        action="append",
        help="GIMP profile folder to install into (e.g. ~/.config/GIMP/3.0); repeatable",
    )
    parser.add_argument(
        "--gimp-version", metavar="X.Y", help="GIMP version of --gimp-dir when its name does not say"
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        action="append",
        help="an engine service on another machine (python -m nst_core serve there) for the dialog's "
        "Device 'Remote server'; repeatable, the first free one takes a job",
    )
    parser.add_argument("--token-file", metavar="FILE", help="the file holding the servers' token")
    parser.add_argument("--skip-self-test", action="store_true", help="do not run the engine on a test image")
    parser.add_argument(
        "--yes",
        action="store_true",
        help="answer yes to the installer's question (let the Flatpak GIMP start the engine on the host)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    parser.add_argument("--uninstall", action="store_true", help="remove what earlier runs installed")
    parser.add_argument("--platform", choices=sorted(PLATFORMS), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def install(args: argparse.Namespace) -> int:
    plan = make_plan(args, os.environ)
    for line in describe(plan):
        say(line)
    check_disk(plan)
    if args.dry_run:
        if not plan.profiles:
            raise InstallError(EXIT_NO_GIMP, no_gimp_message_for(plan, dry_run=True))
        say("Dry run: nothing was changed.")
        return EXIT_OK
    say()
    manifest = Manifest(plan.data_dir / MANIFEST_NAME)
    changes = carry_out(plan, manifest)
    summary(plan, manifest, changes)
    if not plan.profiles:
        raise InstallError(EXIT_NO_GIMP, no_gimp_message_for(plan, dry_run=False))
    return EXIT_OK


def no_gimp_message_for(plan: InstallPlan, dry_run: bool) -> str:
    return no_gimp_message(plan.not_started, plan.installed, plan.no_profile_hint, dry_run)


def check_disk(plan: InstallPlan) -> None:
    if not plan.disk:
        return
    free = free_bytes(plan.data_dir, os.environ)
    if free < plan.disk:
        raise InstallError(
            EXIT_DISK_SPACE,
            f"Not enough disk space in {plan.data_dir}: the install needs about {gigabytes(plan.disk)} and "
            f"{gigabytes(free)} is free: free some space, or install elsewhere with --prefix DIR (a CPU-only "
            f"torch, --torch cpu, needs about {gigabytes(DISK['cpu'] + WEIGHTS_DISK)}).",
        )


def summary(plan: InstallPlan, manifest: Manifest, changes: Changes) -> None:
    say()
    say("Summary")
    say(f"  engine Python: {plan.engine.python}")
    say(f"  weights: {plan.weights.dest}")
    for profile in plan.profiles:
        say(f"  plug-in: {profile.plugin_dir}")
    say(f"  install record: {manifest.path}")
    if not changes.done:
        say("Nothing changed: everything was already installed and up to date.")
    if plan.profiles:
        say("Start GIMP (restart it if it is running) and open Filters > Neural Style...")
    uninstall_command = "python3 install.py --uninstall"
    if plan.prefix:
        uninstall_command += " --prefix " + shlex.quote(str(plan.data_dir))
    say("To uninstall: " + uninstall_command)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.uninstall:
            return uninstall(Manifest(data_folder(args, os.environ) / MANIFEST_NAME), args.dry_run)
        return install(args)
    except InstallError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; run install.py again to finish (it resumes).\n")
        return EXIT_CANCELLED
    except OSError as exc:  # a folder we may not write, a full disk: no traceback for those
        sys.stderr.write(
            f"error: {exc.strerror or exc} ({exc.filename or '?'}): check that folder's permissions and the "
            "free disk space, then run install.py again.\n"
        )
        return EXIT_INTERNAL
