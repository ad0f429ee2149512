"""The installer's plan and its carrying out, in this process: the typed plan made before any change,
the engine check and self-test, pip's steps for an Intel Mac, the official weights' features copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from installs import CLEARED_ENV, MANIFEST, REPO, install_namespace, listing, make_profiles

from nst_install import plan, steps, torch_build
from nst_install.checkout import nst_bridge

pytestmark = pytest.mark.usefixtures("engine_python_has_this_checkout")


# -- the plan and its carrying out, in this process -----------------------------------------------------


def test_the_plan_is_one_typed_object_made_before_any_change(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    gimp3, flatpak = make_profiles(home, ".config/GIMP/3.2", ".var/app/org.gimp.GIMP/config/GIMP/3.0")
    before = listing(home)
    args = install_namespace(engine_python=sys.executable, weights=str(vgg19_weights))
    made = plan.make_plan(args, {"HOME": str(home), "PATH": os.environ["PATH"]})
    assert listing(home) == before
    assert made.engine.existing and not made.engine.install_torch and not made.engine.install_nst_core
    assert (made.weights.action, made.weights.dest) == ("reference", vgg19_weights)
    assert [(p.path, p.version, p.flatpak) for p in made.profiles] == [
        (gimp3, (3, 2), False),
        (flatpak, (3, 0), True),
    ]
    assert made.disk == 0 and made.data_dir == home / ".local/share/gimp-neural-style"
    lines = plan.describe(made)
    assert lines[0].startswith("GIMP Neural Style installer (linux, data folder ")
    assert f"  GIMP 3.0 (Flatpak): plug-in into {flatpak / 'plug-ins/neural_style'}" in lines
    with pytest.raises(AttributeError):
        made.disk = 1  # type: ignore[misc]


def test_the_engine_is_checked_once_and_the_self_test_runs_as_gimp_does(
    tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One import check (with the user's weights) for --engine-python; the self-test sends raw pixels
    through the plug-ins' bridge and gets raw pixels back."""
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    monkeypatch.setenv("HOME", str(home))
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    checks, jobs = [], []
    check_engine = steps.check_engine
    monkeypatch.setattr(steps, "check_engine", lambda *a: checks.append(a) or check_engine(*a))
    write_job = nst_bridge.EngineRun._write_job

    def spy(run: nst_bridge.EngineRun, styles: list, options: dict, masks: list | None = None) -> str:
        path = write_job(run, styles, options, masks)
        jobs.append(json.loads(Path(path).read_text()))
        return path

    monkeypatch.setattr(nst_bridge.EngineRun, "_write_job", spy)
    args = install_namespace(engine_python=sys.executable, weights=str(vgg19_weights))
    made = plan.make_plan(args, dict(os.environ))
    changes = steps.carry_out(made, steps.Manifest(made.data_dir / "install-manifest.json"))
    assert checks == [(Path(sys.executable), vgg19_weights, "vgg19")]
    [job] = jobs
    assert job["content"] | {"raw": "-"} == {
        "raw": "-",
        "width": 48,
        "height": 32,
        "format": "u8",
        "channels": 4,
    }
    assert job["output"]["format"] == "u8" and job["options"]["weights"] == str(vgg19_weights)
    assert job["options"]["model"] == "vgg19"  # the network install.py --model chose
    assert [text for text in changes.done if "nst_config.json" in text]


def test_an_intel_mac_gets_its_pinned_torch_and_numpy_and_nst_core_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip would replace torch 2.2.2 by pyproject.toml's range: nst_core goes in without its dependencies,
    after them with the Mac's pins."""
    calls: list[list[str]] = []
    monkeypatch.setattr(steps, "pip_install", lambda python, arguments, what: calls.append(list(arguments)))
    monkeypatch.setattr(steps, "run_quiet", lambda *a, **k: subprocess.CompletedProcess(a, 0, "", ""))
    sysctl = tmp_path / "sysctl"
    sysctl.write_text("#!/bin/sh\necho 0\n")
    sysctl.chmod(0o755)
    build = torch_build.choose_torch("macos", "x86_64", "auto", {"PATH": str(tmp_path)})
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/python").write_text("")
    made = plan.EnginePlan(venv / "bin/python", False, venv, None, build, True, True)
    install = plan.InstallPlan(
        system="macos",
        data_dir=tmp_path,
        engine=made,
        weights=plan.WeightsPlan("keep", "w", tmp_path / "w"),
        profiles=(),
        unsupported=(),
        installed=(),
        not_started=(),
        no_profile_hint=tmp_path / "GIMP/3.2",
        flatpak=None,
        self_test=False,
        assume_yes=False,
        dev=False,
        prefix=False,
    )
    manifest = steps.Manifest(tmp_path / "manifest.json")
    steps.make_environment(made, manifest, steps.Changes())
    steps.install_nst_core(install, manifest, steps.Changes())
    assert calls == [
        ["torch==2.2.2", "torchvision==0.17.2"],  # PyPI: no --index-url on a Mac
        ["pillow>=9", "numpy>=1.23,<2", "tqdm>=4.60", "aiohttp>=3.9", "opencv-python-headless>=4.8"],
        ["--no-deps", str(REPO)],
    ]


def test_official_weights_get_a_features_copy_that_the_record_holds(
    tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine writes the copy (`weights fetch`, here in this process, so that the test's official
    table holds); a failure is said, not raised; a file of one's own gets none."""
    from dataclasses import replace
    from types import SimpleNamespace

    from samples import make_official_like_weights

    from nst_core import cli, weights

    data = tmp_path / "data"
    (data / "weights").mkdir(parents=True)
    official = make_official_like_weights(data / "weights" / "vgg19-test.pth", vgg19_weights)
    digest, size = weights.sha256_of(official), official.stat().st_size
    monkeypatch.setitem(
        weights.OFFICIAL,
        "vgg19",
        replace(weights.OFFICIAL["vgg19"], filename=official.name, sha256=digest, size=size),
    )
    runs: list[tuple[str, ...]] = []

    def engine_here(python: Path, data_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
        runs.append(arguments)
        monkeypatch.setenv("NST_DATA_DIR", str(data_dir))
        return subprocess.CompletedProcess(arguments, cli.main(list(arguments)), "", "")

    monkeypatch.setattr(steps, "run_engine", engine_here)
    install = SimpleNamespace(
        weights=plan.WeightsPlan("keep", str(official), official),
        data_dir=data,
        engine=SimpleNamespace(python=Path(sys.executable)),
    )
    manifest = steps.Manifest(data / MANIFEST)
    assert steps.set_up_weights(install.weights, data, manifest, steps.Changes()) is None  # verified
    changes = steps.Changes()
    steps.make_features_file(install, manifest, changes)  # type: ignore[arg-type]
    copy = official.with_name("vgg19-test.features.pt")
    assert runs == [("weights", "fetch", "--model", "vgg19", "--dir", str(official.parent))]
    assert weights.verified_features(official, data / weights.STAMP_NAME) == copy
    assert str(copy) in manifest.data["files"]  # uninstall removes it
    assert changes.done == [f"wrote and verified {copy}, the engine's quicker start"]

    again = steps.Changes()
    steps.make_features_file(install, manifest, again)  # type: ignore[arg-type]
    assert len(runs) == 1 and again.done == []
    assert f"{copy} present and verified" in capsys.readouterr().out

    copy.unlink()
    note = f"note: Cannot write {copy} (No space left on device): free some disk space.\n"
    monkeypatch.setattr(
        steps, "run_engine", lambda *a: subprocess.CompletedProcess(a, 0, str(official), note)
    )
    steps.make_features_file(install, manifest, steps.Changes())  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert f"the engine reads the whole weights file: Cannot write {copy} (No space left" in out

    own = SimpleNamespace(**{**vars(install), "weights": plan.WeightsPlan("reference", "x", vgg19_weights)})
    monkeypatch.setattr(steps, "run_engine", lambda *a: pytest.fail("the engine ran for a file of one's own"))
    steps.make_features_file(own, manifest, steps.Changes())  # type: ignore[arg-type]
