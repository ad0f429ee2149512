"""Fixtures for the tests in a real GIMP 3: one chroot per GIMP version, and one GIMP run per version
that covers every case of test_gimp_*.py. Both are session-scoped so that the test files share them:
each GIMP still runs once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gimp_harness import (
    GIMPS,
    HERE,
    INSTALLED,
    REPO,
    Chroot,
    install_plugin,
    plan_cases,
    python_binds,
    write_inputs,
)


@pytest.fixture(scope="session", params=list(GIMPS), ids=lambda version: f"gimp{version}")
def chroot(request: pytest.FixtureRequest) -> Chroot:
    version = request.param
    if os.environ.get("NST_SKIP_GIMP") == "1":
        pytest.skip("GIMP 3 tests skipped on request (NST_SKIP_GIMP=1)")
    chosen = os.environ.get("NST_GIMP_VERSIONS", "").replace(",", " ").split()
    if chosen and version not in chosen:
        pytest.skip(f"GIMP {version} not chosen (NST_GIMP_VERSIONS={' '.join(chosen)})")
    if os.geteuid() != 0:
        pytest.fail(
            "The GIMP 3 tests need root (chroot and mount namespaces): run pytest as root, "
            "or set NST_SKIP_GIMP=1 to skip them.",
            pytrace=False,
        )
    chroot = Chroot(version, *GIMPS[version])
    if not (chroot.root / "usr/bin/gimp-console-3").exists():  # gimp-console-3.0 or -3.2; -3 in both
        built = chroot.build()
        if built.returncode != 0:
            pytest.fail(
                f"Could not build the GIMP {version} chroot ({chroot.suite}) at {chroot.root} (needs "
                f"network to a Debian mirror): {built.stderr.strip()[-800:]}",
                pytrace=False,
            )
    if Path(sys.base_prefix).resolve().parts[1:2] in (("usr",), ()):
        pytest.fail(
            f"This venv's base Python lives in {sys.base_prefix}, a system folder that cannot be "
            "mounted into the chroot: make the test venv from a self-contained Python (pyenv, "
            "python.org build) and run again.",
            pytrace=False,
        )
    return chroot


@pytest.fixture(scope="session")
def gimp(chroot: Chroot, vgg19_weights: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Install with install.py, run every case in one GIMP; the manifest and the paths the tests need."""
    work = tmp_path_factory.mktemp(f"gimp{chroot.version}-plugin")
    inputs = write_inputs(work)
    profile = install_plugin(work, vgg19_weights, chroot.version)
    config_path = profile / INSTALLED / "nst_config.json"
    installed_config = json.loads(config_path.read_text())
    plan = {
        "out": str(work / "out"),
        "config_path": str(config_path),
        "cases": plan_cases(inputs, work, config_path),
    }
    (work / "out").mkdir()
    (work / "plan.json").write_text(json.dumps(plan))
    binds = {*python_binds(), str(REPO), str(work), str(vgg19_weights.parent)}
    command = [
        str(HERE / "run_in_gimp.sh"),
        "--root",
        str(chroot.root),
        "--profile",
        str(profile),
        "--timeout",
        "300",
    ]
    for path in sorted(binds):
        command += ["--bind", path]
    # The plug-in marks its moments there (the first live layer, each frame shown): the timings read
    # them, and a case that cancels once a frame is shown waits for its mark.
    marks = os.environ.get("NST_TIMING_LOG") or str(work / "marks.log")
    command += ["--env", f"NST_TIMING_LOG={marks}"]
    done = subprocess.run(
        [*command, str(HERE / "batch_neural_style.py"), str(work / "plan.json")],
        capture_output=True,
        text=True,
    )
    manifest_path = work / "out" / "manifest.json"
    if done.returncode != 0 or not manifest_path.exists():
        output = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        pytest.fail(f"GIMP run failed (exit {done.returncode}):\n{output}", pytrace=False)
    return {
        "version": chroot.version,
        "package_version": chroot.package_version(),
        "manifest": json.loads(manifest_path.read_text()),
        "inputs": inputs,
        "work": work,
        "weights": str(vgg19_weights),
        "log": done.stderr,
        "profile": profile,
        "config": installed_config,
    }
