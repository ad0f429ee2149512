"""What the real-GIMP tests share (imported as a module): the GIMP versions and their chroots, the cases
of the one GIMP run per version (see batch_neural_style.py), install.py into a fresh profile, and
readers of the run's manifest and layer dumps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fake_engine import FAKE_ENGINE
from PIL import Image
from samples import make_content_image, make_style_image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLUGIN_SOURCE = REPO / "plug-ins" / "neural_style"
INSTALLED = Path("plug-ins") / "neural_style"  # inside the profile
# The GIMP versions tested: the Debian suite that ships each, and its chroot (see make_chroot.sh).
GIMPS = {
    "3.0": ("trixie", Path(os.environ.get("GIMP3_ROOT", "/var/tmp/gimp3-root"))),
    "3.2": ("forky", Path(os.environ.get("GIMP32_ROOT", "/var/tmp/gimp32-root"))),
}
CANVAS = [64, 48]
# Four iterations: L-BFGS's first steps are tiny, so two barely move an unresized layer's pixels.
ENGINE_ARGS = {
    "preset": "balanced",
    "strength": 1.0,
    "keep-colors": "off",
    "style-scale": 1.0,
    "size": 32,
    "iterations": 4,
    "seed": 0,
    "device": "cpu",
}
# The same settings under the engine's option names, for the run-job comparison.
ENGINE_OPTIONS = {name.replace("-", "_"): value for name, value in ENGINE_ARGS.items()}
STYLED = " (Neural Style: style)"
# An animation as GIMP's GIF loader names its frames, bottom layer first.
FRAMES = ["Frame 1 (100ms) (combine)", "Frame 2 (200ms) (replace)", "Frame 3 (100ms)"]
FRAMES_STYLED = [
    "Frame 1 styled (100ms) (combine)",
    "Frame 2 styled (200ms) (replace)",
    "Frame 3 styled (100ms)",
]
FRAME_SIZE = 48


@dataclass(frozen=True)
class Chroot:
    version: str  # GIMP's major.minor, which also names its profile folder
    suite: str
    root: Path

    def build(self, extra_packages: str = "") -> subprocess.CompletedProcess:
        """make_chroot.sh: builds the chroot, or only adds missing packages to it."""
        env = dict(os.environ, SUITE=self.suite, EXTRA_PACKAGES=extra_packages)
        return subprocess.run([HERE / "make_chroot.sh", self.root], capture_output=True, text=True, env=env)

    def package_version(self) -> str:
        """The upstream version of the chroot's gimp package, e.g. 3.0.4."""
        version = subprocess.run(
            ["chroot", str(self.root), "dpkg-query", "-W", "-f=${Version}", "gimp"],
            capture_output=True,
            text=True,
        ).stdout
        return version.split(":")[-1].split("-")[0]


def write_inputs(work: Path) -> dict[str, str]:
    opaque = make_content_image(48, 32)
    transparent = make_content_image(40, 24).convert("RGBA")
    alpha = np.tile(np.linspace(0, 255, 40).round().astype(np.uint8), (24, 1))
    transparent.putalpha(Image.fromarray(alpha, "L"))
    paths = {name: work / f"{name}.png" for name in ("opaque", "transparent", "style")}
    opaque.save(paths["opaque"])
    transparent.save(paths["transparent"])
    make_style_image(40, 40).save(paths["style"])
    # A partly transparent style, and a second, other one (a layer's alpha must be read as a file's).
    rgba = make_style_image(36, 30, seed=4).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(60, 255, 36).round().astype(np.uint8), (30, 1)), "L"))
    paths["style_rgba"] = work / "style-rgba.png"
    rgba.save(paths["style_rgba"])
    paths["style2"] = work / "style2.png"
    Image.fromarray(255 - np.asarray(make_style_image(32, 32, seed=9))).rotate(90).save(paths["style2"])
    for index in range(len(FRAMES)):  # a square moving right over a gradient
        frame = np.asarray(make_content_image(FRAME_SIZE, FRAME_SIZE).convert("RGBA")).copy()
        frame[14:30, 6 + 8 * index : 22 + 8 * index, :3] = (240, 210, 40)
        paths[f"frame{index}"] = work / f"frame{index}.png"
        Image.fromarray(frame, "RGBA").save(paths[f"frame{index}"])
    return {name: str(path) for name, path in paths.items()}


def python_binds() -> set[str]:
    """The folders the engine's Python (this one) needs inside a chroot: its prefixes and every folder on
    its path, which a venv's .pth file may extend with another environment's site-packages."""
    return {sys.prefix, sys.base_prefix, *(entry for entry in sys.path if entry and os.path.isdir(entry))}


def plan_cases(inputs: dict[str, str], work: Path, config_path: Path) -> list[dict]:
    args = ENGINE_ARGS | {"style-file": inputs["style"]}
    opaque = {"png": inputs["opaque"], "name": "Opaque", "offsets": [8, 6]}
    broken_python = work / "broken-python"
    broken_python.write_text("#!/bin/sh\necho 'engine exploded' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    corrupt = work / "corrupt-weights.pth"
    corrupt.write_bytes(b"this is not a weights file")
    config = json.loads(config_path.read_text())
    repeat_style = work / "repeat-style.png"
    shutil.copyfile(inputs["style"], repeat_style)
    return [
        # The first run starts the warm engine service, the second uses it.
        {"name": "cold", "canvas": CANVAS, "args": args, "layers": [opaque]},
        {"name": "warm", "canvas": CANVAS, "args": args, "layers": [opaque]},
        *timing_cases(args, opaque, config),
        {
            "name": "served_cancel",
            "canvas": CANVAS,
            "args": args | {"iterations": 100000, "size": 64},
            "layers": [opaque],
            "kill_plugin": "service",
        },
        {
            "name": "painting_kept",
            "canvas": CANVAS,
            "args": args | {"keep-on-cancel": True},
            "layers": [opaque],
            "kill_plugin": True,
            "kill_after": 2.0,  # seconds of painting: several snapshots
            "engine_config": painter_config(config, work),
        },
        {
            "name": "cancelled",
            "canvas": CANVAS,
            "args": args | {"iterations": 100000, "size": 64},
            "layers": [opaque],
            "kill_plugin": True,
            "engine_config": config | {"service": False},  # the child process's own cancel
        },
        {
            "name": "two_layers",
            "canvas": CANVAS,
            "args": args,
            "layers": [
                {"png": inputs["opaque"], "name": "Opaque", "offsets": [0, 0]},
                {"png": inputs["transparent"], "name": "Partly transparent", "offsets": [20, 18]},
            ],
        },
        {
            "name": "rect_selection",
            "canvas": CANVAS,
            "args": args,
            "layers": [opaque],
            "select": [[14, 10, 24, 16], "rect"],
        },
        {
            "name": "ellipse_selection",
            "canvas": CANVAS,
            "args": args,
            "layers": [opaque],
            "select": [[10, 8, 30, 20], "ellipse"],
        },
        {"name": "gray", "canvas": CANVAS, "args": args, "layers": [opaque], "convert": "gray"},
        {"name": "deep", "canvas": CANVAS, "args": args, "layers": [opaque], "convert": "U16_NON_LINEAR"},
        {
            "name": "missing_style",
            "canvas": CANVAS,
            "layers": [opaque],
            "args": args | {"style-file": str(work / "no-such-style.jpg")},
        },
        # Filters > Repeat after the style file of the last run was deleted.
        {
            "name": "repeat_missing_style",
            "canvas": CANVAS,
            "layers": [opaque],
            "args": args | {"style-file": str(repeat_style)},
            "repeat_after_deleting": str(repeat_style),
        },
        {
            "name": "broken_python",
            "canvas": CANVAS,
            "args": args,
            "layers": [opaque],
            "engine_config": config | {"python": str(broken_python)},
        },
        {
            "name": "corrupt_weights",
            "canvas": CANVAS,
            "args": args,
            "layers": [opaque],
            "engine_config": config | {"weights": str(corrupt)},
        },
        # A bundled painting as the style (the file given too: the source decides), and as the second.
        {
            "name": "painting",
            "canvas": CANVAS,
            "layers": [opaque],
            "args": args | {"style-source": "painting", "style-painting": "the-scream"},
        },
        {
            "name": "second_painting",
            "canvas": CANVAS,
            "layers": [opaque],
            "args": args | {"style2-source": "painting", "style2-painting": "shipwreck"},
        },
        *frames_cases(inputs, args, config, corrupt),
        *style_and_region_cases(inputs, args, opaque),
        # Without a config the choices hold only their fallbacks, so call with those.
        {
            "name": "not_installed",
            "canvas": CANVAS,
            "layers": [opaque],
            "engine_config": {"version": 1},
            "args": args | {"device": "auto"},
        },
    ]


def timing_cases(args: dict, opaque: dict, config: dict) -> list[dict]:
    """With NST_TIMING_LOG set: On Cancel: keep the picture so far on the real engine, long enough for
    snapshots, in a child process (cold) and on the warm service; the time from OK to the first live
    layer goes in the case's result."""
    if not os.environ.get("NST_TIMING_LOG"):
        return []
    live = {"canvas": CANVAS, "args": args | {"keep-on-cancel": True, "size": 64, "iterations": 150}}
    return [
        live | {"name": "live_cold", "layers": [opaque], "engine_config": config | {"service": False}},
        live | {"name": "live_warm", "layers": [opaque]},
    ]


ELLIPSE = [[14, 10, 30, 20], "ellipse"]  # inside the Opaque layer (48 x 32 at 8, 6)


def painter_config(config: dict, work: Path) -> dict:
    """The plug-in's config for the scripted stand-in engine (tests/fake_engine.py) painting on until it
    is stopped or killed, in the child process: snapshots every 0.3 s, each the inverted layer plus
    the snapshot's number (the first at half the width)."""
    painter = work / "painter"
    setup = f"import os\nos.environ['FAKE_LOG'] = {str(work)!r}\nos.environ['FAKE_MODE'] = 'paint'\n"
    painter.write_text(f"#!{sys.executable}\n{setup}{FAKE_ENGINE}")
    painter.chmod(0o755)
    engine = dict(config["engine"], features=[*config["engine"]["features"], "snapshots", "stop"])
    return config | {"python": str(painter), "service": False, "engine": engine}


def style_and_region_cases(inputs: dict[str, str], args: dict, opaque: dict) -> list[dict]:
    """A layer of another open image as the style (8 and 16-bit) against its file, and the regions:
    inside a feathered selection, the same from a channel, two styles split, and what cannot be."""
    layer_args = {name: value for name, value in args.items() if name != "style-file"}
    one = {"canvas": CANVAS, "layers": [opaque]}
    region = one | {"select": ELLIPSE, "feather": 6}
    return [
        one | {"name": "style_file_rgba", "args": args | {"style-file": inputs["style_rgba"]}},
        one
        | {
            "name": "style_layer_rgba",
            "args": layer_args | {"style-layer": "@style"},
            "style_images": {"@style": {"png": inputs["style_rgba"], "name": "Brush strokes"}},
        },
        one
        | {
            "name": "style_layer_deep",
            "args": layer_args | {"style-layer": "@style"},
            "style_images": {"@style": {"png": inputs["style_rgba"], "convert": "U16_NON_LINEAR"}},
        },
        region | {"name": "region_inside", "args": args | {"region": "inside"}},
        region
        | {
            "name": "region_channel",
            "args": args | {"region": "inside", "region-channel": "@channel"},
            "selection_to_channel": True,
        },
        one
        | {
            "name": "region_split",
            "args": args | {"region": "split", "style2-file": inputs["style2"], "style2-blend": 0.5},
            "select": [[8, 6, 24, 32], "rect"],  # the layer's left half
            "feather": 4,
        },
        region | {"name": "region_split_one_style", "args": args | {"region": "split"}},
        one | {"name": "region_empty", "args": args | {"region": "inside"}},
    ]


def frames_cases(inputs: dict[str, str], args: dict, config: dict, corrupt: Path) -> list[dict]:
    """Layers are animation frames: three frames (on the warm engine service, as the installed config
    asks), the same scaled from a smaller working size inside a selection, one layer alone, a failing
    engine, and GIMP's Cancel of the child process and of the service's job."""
    layers = [
        {"png": inputs[f"frame{index}"], "name": name, "offsets": [0, 0]} for index, name in enumerate(FRAMES)
    ]
    frames = {
        "canvas": [FRAME_SIZE, FRAME_SIZE],
        "layers": layers,
        "args": args | {"frames": True, "size": 48},
    }
    return [
        frames | {"name": "frames"},
        frames
        | {
            "name": "frames_scaled",
            "args": frames["args"] | {"size": 32},
            "select": [[4, 4, 40, 40], "rect"],
        },
        frames | {"name": "frames_one_layer", "layers": layers[:1]},
        frames | {"name": "frames_region", "args": frames["args"] | {"region": "inside"}, "select": ELLIPSE},
        frames | {"name": "frames_failed", "engine_config": config | {"weights": str(corrupt)}},
        frames
        | {
            "name": "frames_cancelled",
            "args": frames["args"] | {"iterations": 100000},
            "kill_plugin": True,
            "engine_config": config | {"service": False},  # the child process's own cancel
        },
        frames
        | {
            "name": "frames_kept_on_cancel",
            "args": frames["args"] | {"iterations": 60},
            "kill_plugin": "first_frame",
            "engine_config": config | {"service": False},  # frames come one by one from the child
        },
        frames
        | {
            "name": "frames_served_kept_on_cancel",
            "args": frames["args"] | {"iterations": 60},
            "kill_plugin": "frame_shown",  # on the warm service: its frames come one by one too
        },
        frames
        | {
            "name": "frames_served_cancel",
            "args": frames["args"] | {"iterations": 100000},
            "kill_plugin": "service",
        },
    ]


# What install.py must not take from the caller's environment: the test chooses every path.
INSTALL_CLEARED = (
    "NST_DATA_DIR",
    "NST_WEIGHTS",
    "NST_ENGINE_PYTHON",
    "NST_PLUGIN_CONFIG",
    "PYTHONPATH",
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "TORCH_HOME",
)


def install_plugin(work: Path, weights: Path, version: str) -> Path:
    """`install.py --gimp-dir` into a fresh profile of this GIMP version; the profile folder. The
    installer reads the version from the folder's name, GIMP/3.0 or GIMP/3.2."""
    import nst_core

    if Path(nst_core.__file__).resolve().parent != REPO / "nst_core":
        pytest.fail(
            "This Python's nst_core is not this checkout's: pip install -e . from the checkout "
            "(install.py would otherwise install into the test environment).",
            pytrace=False,
        )
    profile = work / "GIMP" / version
    profile.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in INSTALL_CLEARED}
    env["NST_DATA_DIR"] = str(work / "data")  # the install record goes there, not in the user's folder
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "install.py"),
            "--engine-python",
            sys.executable,
            "--weights",
            str(weights),
            "--gimp-dir",
            str(profile),
            "--skip-self-test",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
        timeout=600,
    )
    if done.returncode != 0:
        pytest.fail(
            f"install.py failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}",
            pytrace=False,
        )
    return profile


def case(gimp: dict, name: str) -> dict:
    return gimp["manifest"]["cases"][name]


def pixels(layer: dict, deep: bool = False) -> np.ndarray:
    """A layer's dump as an H x W x C array (u8, or float32 0..1 when deep)."""
    width, height = layer["size"]
    if deep:
        data = np.fromfile(layer["raw"] + ".float", dtype="<f4")
    else:
        data = np.fromfile(layer["raw"], dtype=np.uint8)
    return data.reshape(height, width, layer["channels"])


def layer_named(result: dict, name: str) -> dict:
    return next(layer for layer in result["layers"] if layer["name"] == name)


def assert_styled(result: dict, source_name: str) -> tuple[np.ndarray, np.ndarray]:
    assert result["status"] == "success", result["error"]
    names = [layer["name"] for layer in result["layers"]]
    assert names.index(source_name + STYLED) == names.index(source_name) - 1  # directly above
    source, styled = layer_named(result, source_name), layer_named(result, source_name + STYLED)
    return pixels(source), pixels(styled)


def run_gui(gimp: dict, chroot: Chroot, work: Path, script: str, *arguments: str, env: tuple = ()) -> dict:
    """Run SCRIPT (a tests/gimp/*_inside.sh) in the chroot on a free virtual display, with Xvfb and
    xdotool added to the chroot and GIMP's first-start dialogs turned off in WORK/gimprc:
    `SCRIPT WORK DISPLAY ARGUMENTS...`. GIMP's log (WORK/gimp.log) and the script's stdout and stderr;
    a failed run fails the test."""
    built = chroot.build(extra_packages="xvfb xdotool")
    if built.returncode != 0:
        pytest.fail(
            f"Could not add Xvfb and xdotool to {chroot.root}: {built.stderr.strip()[-800:]}", pytrace=False
        )
    (work / "gimprc").write_text(
        f'(config-version "{gimp["package_version"]}")\n(show-welcome-dialog no)\n(check-updates no)\n'
    )
    display = next(n for n in range(99, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    binds = {*python_binds(), str(REPO), gimp["work"].as_posix(), str(Path(gimp["weights"]).parent)}
    command = [str(HERE / "run_in_gimp.sh"), "--root", str(chroot.root), "--profile", str(gimp["profile"])]
    for path in sorted(binds):
        command += ["--bind", path]
    for variable in env:
        command += ["--env", variable]
    command += ["--timeout", "300", "--cmd", "bash", str(HERE / script), str(work), str(display), *arguments]
    done = subprocess.run(command, capture_output=True, text=True)
    log = (work / "gimp.log").read_text(errors="replace") if (work / "gimp.log").exists() else ""
    if done.returncode != 0:
        pytest.fail(f"The GUI run failed (exit {done.returncode}):\n{done.stderr[-2000:]}\n{log[-3000:]}")
    return {"log": log, "stdout": done.stdout, "stderr": done.stderr}
