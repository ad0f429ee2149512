"""The GIMP 3 plug-in in a real GIMP, end to end: GIMP 3.0 (Debian trixie) and GIMP 3.2 (Debian
forky), each headless in its own chroot.

For each version one GIMP run covers every case (see batch_neural_style.py); the tests below
check its manifest. The plug-in is installed by install.py into the profile folder that GIMP then
uses; the engine is this test environment's own Python (`--engine-python`), made visible
inside the chroot by bind mounts, with the random test weights. Needs root (chroot, mount
namespaces); each chroot is built on first use (tests/gimp/make_chroot.sh, about 70-120 s).
Set NST_SKIP_GIMP=1 to skip these tests on a machine without root, NST_GIMP_VERSIONS=3.2 (or 3.0)
to test one version only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from samples import make_content_image, make_style_image

from nst_core.options import describe

pytestmark = pytest.mark.gimp

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


@pytest.fixture(scope="module", params=list(GIMPS), ids=lambda version: f"gimp{version}")
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
        {
            "name": "served_cancel",
            "canvas": CANVAS,
            "args": args | {"iterations": 100000, "size": 64},
            "layers": [opaque],
            "kill_plugin": "service",
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
        *frames_cases(inputs, args, config | {"weights": str(corrupt)}),
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


ELLIPSE = [[14, 10, 30, 20], "ellipse"]  # inside the Opaque layer (48 x 32 at 8, 6)


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


def frames_cases(inputs: dict[str, str], args: dict, corrupt_config: dict) -> list[dict]:
    """Layers are animation frames: three frames, the same scaled from a smaller working size inside a
    selection, one layer alone, a failing engine, and GIMP's Cancel."""
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
        frames | {"name": "frames_failed", "engine_config": corrupt_config},
        frames
        | {"name": "frames_cancelled", "args": frames["args"] | {"iterations": 100000}, "kill_plugin": True},
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


@pytest.fixture(scope="module")
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
    binds = {sys.prefix, sys.base_prefix, str(REPO), str(work), str(vgg19_weights.parent)}
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


def test_gimp_ran_the_version_of_its_chroot(gimp: dict) -> None:
    """The 3.2 run really ran GIMP 3.2 (3.2.6 in forky when written), the 3.0 run 3.0 (3.0.4)."""
    ran = gimp["manifest"]["gimp_version"]
    assert ran.startswith(gimp["version"] + ".") and ran == gimp["package_version"]
    print(f"GIMP {ran}")


def test_install_py_placed_the_plugin_and_its_config(gimp: dict, vgg19_weights: Path) -> None:
    folder = gimp["profile"] / INSTALLED
    for source in PLUGIN_SOURCE.glob("*.py"):  # the plug-in and every module beside it
        assert (folder / source.name).read_bytes() == source.read_bytes()
    assert os.access(folder / "neural_style.py", os.X_OK)
    config = gimp["config"]
    assert Path(config["python"]) == Path(sys.executable).absolute()
    assert Path(config["weights"]) == vgg19_weights and "flatpak" not in config  # found at run time
    assert config["engine"] == json.loads(json.dumps(describe()))


def test_gimp_registered_the_installed_plugin(gimp: dict) -> None:
    manifest = gimp["manifest"]
    assert manifest["registered"], gimp["log"][-3000:]
    # GIMP records where each procedure came from in the profile's pluginrc (${gimp_dir} = the profile).
    pluginrc = (gimp["profile"] / "pluginrc").read_bytes().decode("utf-8", "replace")  # icons are binary
    plugins = {entry.split('"')[1]: entry for entry in pluginrc.split("(plug-in-def ")[1:]}
    installed = "${gimp_dir}/" + (INSTALLED / "neural_style.py").as_posix()
    assert '(proc-def "python-fu-neural-style"' in plugins[installed]
    assert [path for path, entry in plugins.items() if "python-fu-neural-style" in entry] == [installed]
    registration = manifest["registration"]
    assert registration["menu_label"] == "Neural _Style..."
    assert registration["menu_paths"] == ["<Image>/Filters"]
    assert registration["image_types"] == "RGB*, GRAY*"
    assert registration["presets"] == list(gimp["config"]["engine"]["user_presets"])
    for argument in (
        "style-file",
        "style2-file",
        "style2-blend",
        "preset",
        "strength",
        "keep-colors",
        "style-scale",
        "size",
        "iterations",
        "seed",
        "device",
        "frames",
    ):
        assert argument in registration["arguments"]
    assert registration["return_values"] == ["new-image"]


def test_two_selected_layers_get_styled_layers_above_them(gimp: dict) -> None:
    result = case(gimp, "two_layers")
    assert result["status"] == "success", result["error"]
    assert [layer["name"] for layer in result["layers"]] == [
        "Partly transparent" + STYLED,
        "Partly transparent",
        "Opaque" + STYLED,
        "Opaque",
    ]
    for name in ("Opaque", "Partly transparent"):
        source, styled = layer_named(result, name), layer_named(result, name + STYLED)
        assert styled["size"] == source["size"] and styled["offsets"] == source["offsets"]
        before, after = pixels(source), pixels(styled)
        assert np.array_equal(after[..., 3], before[..., 3])  # the source's alpha is kept
        visible = before[..., 3] > 0
        assert np.abs(after[visible][:, :3].astype(int) - before[visible][:, :3]).mean() > 2
    assert layer_named(result, "Partly transparent")["offsets"] == [20, 18]
    assert pixels(layer_named(result, "Partly transparent" + STYLED))[..., 3].min() == 0


def test_rectangular_selection_limits_the_new_layer(gimp: dict) -> None:
    """The new layer covers exactly the selection (nothing visible outside it), opaque and restyled."""
    result = case(gimp, "rect_selection")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["offsets"] == [14, 10] and layer["size"] == [24, 16]
    assert (styled[..., 3] == 255).all()
    original = np.asarray(Image.open(gimp["inputs"]["opaque"]).convert("RGBA"))
    assert np.array_equal(source, original)  # the source layer is untouched
    inside = source[4:20, 6:30]  # the selection in the source layer's coordinates (offset 8, 6)
    assert np.abs(styled[..., :3].astype(int) - inside[..., :3]).mean() > 2


def test_pixels_outside_a_round_selection_stay_transparent(gimp: dict) -> None:
    result = case(gimp, "ellipse_selection")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["offsets"] == [10, 8] and layer["size"] == [30, 20]
    # The ellipse inscribed in the 30 x 20 box: opaque well inside, transparent well outside.
    rows, columns = np.mgrid[0:20, 0:30] + 0.5
    radius = ((columns - 15) / 15) ** 2 + ((rows - 10) / 10) ** 2
    alpha = styled[..., 3]
    assert (alpha[radius < 0.8] == 255).all() and (alpha[radius > 1.25] == 0).all()
    inside = source[2:22, 2:32]  # the ellipse's box in the source layer's coordinates (offset 8, 6)
    visible = radius < 0.8
    assert np.abs(styled[visible][:, :3].astype(int) - inside[visible][:, :3]).mean() > 2


def test_grayscale_image_gets_a_gray_layer(gimp: dict) -> None:
    result = case(gimp, "gray")
    source, styled = assert_styled(result, "Opaque")
    layer = layer_named(result, "Opaque" + STYLED)
    assert layer["gray"] and layer["channels"] == 2 and layer["size"] == [48, 32]
    assert np.abs(styled[..., 0].astype(int) - source[..., 0]).mean() > 2


def test_16_bit_image_goes_through_float_pixels(gimp: dict) -> None:
    result = case(gimp, "deep")
    assert result["status"] == "success", result["error"]
    assert result["image"]["precision"] == "u16-non-linear"
    source = pixels(layer_named(result, "Opaque"), deep=True)
    styled = pixels(layer_named(result, "Opaque" + STYLED), deep=True)
    assert styled.shape == source.shape
    assert np.allclose(styled[..., 3], 1.0)
    assert np.abs(styled[..., :3] - source[..., :3]).mean() > 0.01
    # Not just 8-bit values: a 16-bit result has levels between the 256 steps.
    assert np.abs(styled[..., :3] * 255 - np.round(styled[..., :3] * 255)).max() > 0.01


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing_style", "no-such-style.jpg not found: choose an existing image file"),
        ("repeat_missing_style", "repeat-style.png not found: choose an existing image file"),
        ("broken_python", "engine failed (exit code 3): engine exploded"),
        ("corrupt_weights", "corrupt-weights.pth"),
        ("not_installed", "not installed: run install.py"),
        ("frames_one_layer", "Layers are animation frames needs two or more layers"),
        ("frames_failed", "corrupt-weights.pth"),
        ("frames_region", "Regions are not available for animation frames"),
        ("region_split_one_style", "needs a second style"),
        ("region_empty", "The region is empty"),
    ],
)
def test_failures_return_an_execution_error_and_add_no_layer(gimp: dict, name: str, message: str) -> None:
    """Nor a new image, nor a change that marks the image as changed."""
    result = case(gimp, name)
    assert result["status"] == "execution-error"
    assert message in result["error"] and "\n" not in result["error"]
    assert [layer["name"] for layer in result["layers"]] == result["before"] and not result["dirty"]
    assert result["returned"] is None and result["images"][1] == result["images"][0]


def test_repeat_after_the_style_file_went_says_so_once(gimp: dict) -> None:
    """Filters > Repeat (WITH_LAST_VALS) fails with the last run's style file gone, and the message is
    shown: GIMP 3.0 shows a failing call's message itself; 3.2 not outside interactive runs, so the
    plug-in does, there only. On the console's stderr 3.0 prints "GIMP-Error: Calling error for
    procedure 'python-fu-neural-style':" and the message on the next line, 3.2 "Neural Style-Warning: "
    and the message."""
    result = case(gimp, "repeat_missing_style")
    assert result["first"] == ["success", None]
    assert result["status"] == "execution-error"
    assert result["error"].startswith("Style image ") and "repeat-style.png not found" in result["error"]
    assert gimp["log"].count(result["error"]) == 1, gimp["log"][-3000:]
    at = gimp["log"].index(result["error"])
    start = gimp["log"].rfind("\n", 0, gimp["log"].rfind("\n", 0, at)) + 1  # the line before too
    print(f"GIMP {gimp['version']} showed:\n{gimp['log'][start : gimp['log'].find(chr(10), at)]}")


def test_cancel_kills_the_engine_and_leaves_no_layer_or_files(gimp: dict) -> None:
    """GIMP's Cancel kills the plug-in: its engine must die too, and its folder go at the next run."""
    result = case(gimp, "cancelled")
    killed = result["killed"]
    assert killed.get("engine_pid"), "the engine never started"
    assert killed["engine_died"], "the engine outlived its killed plug-in"
    assert result["status"] != "success"
    assert [layer["name"] for layer in result["layers"]] == result["before"]
    assert os.path.basename(killed["folder"]).startswith("nst-plugin-")
    assert gimp["manifest"]["left_behind"] == []


def test_the_second_run_uses_the_warm_engine_the_first_started(gimp: dict) -> None:
    cold, warm = case(gimp, "cold"), case(gimp, "warm")
    _, first = assert_styled(cold, "Opaque")
    _, second = assert_styled(warm, "Opaque")
    assert cold["service_pid"] and warm["service_pid"] == cold["service_pid"]
    assert np.array_equal(first, second)
    print(f"GIMP, OK to the new layer: cold {cold['seconds']:.2f} s, warm {warm['seconds']:.2f} s")


def test_killing_the_plugin_frees_its_job_on_the_service(gimp: dict) -> None:
    result = case(gimp, "served_cancel")
    assert result["killed"].get("plugin_pid"), "the service never ran the job"
    assert result["killed"]["service_freed"], "the service kept the killed plug-in's job"
    assert result["status"] != "success"
    assert [layer["name"] for layer in result["layers"]] == result["before"]


def test_corrupt_weights_message_comes_from_the_engine(gimp: dict) -> None:
    error = case(gimp, "corrupt_weights")["error"]
    assert "weights" in error.lower() and "Traceback" not in error


def test_result_equals_the_engine_run_directly(gimp: dict) -> None:
    """The plug-in adds nothing to the pixels: same input and options through run-job agree."""
    result = case(gimp, "two_layers")
    source, styled = assert_styled(result, "Opaque")
    work = gimp["work"]
    height, width, channels = source.shape
    source.tofile(work / "direct-content.raw")
    job = {
        "version": 1,
        "content": {
            "raw": "direct-content.raw",
            "width": width,
            "height": height,
            "format": "u8",
            "channels": channels,
        },
        "styles": [{"path": gimp["inputs"]["style"], "weight": 1.0}],
        "options": ENGINE_OPTIONS | {"weights": gimp["weights"]},
        "output": {"raw": "direct-result.raw", "format": "u8"},
    }
    (work / "direct-job.json").write_text(json.dumps(job))
    done = subprocess.run(
        [sys.executable, "-m", "nst_core", "run-job", str(work / "direct-job.json")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    direct = np.fromfile(work / "direct-result.raw", dtype=np.uint8).reshape(source.shape)
    assert np.abs(direct.astype(int) - styled).max() <= 1


# -- the dialog, in GUI GIMP on a virtual display ----------------------------------------------------------

ESTIMATE = re.compile(r"^neural-style estimate: (About \d+ (?:s|min) on the CPU at (\d+)×(\d+) px.*)$", re.M)


@pytest.fixture(scope="module")
def dialog(gimp: dict, chroot: Chroot) -> dict:
    """The plug-in's dialog opened INTERACTIVE (screenshot_dialog_inside.sh), the working size typed into
    it: GIMP's log, with the estimate lines the plug-in prints under NST_DEBUG=1."""
    built = chroot.build(extra_packages="xvfb xdotool")
    if built.returncode != 0:
        pytest.fail(
            f"Could not add Xvfb and xdotool to {chroot.root}: {built.stderr.strip()[-800:]}", pytrace=False
        )
    work = gimp["work"] / "dialog"
    work.mkdir()
    make_content_image(300, 200).save(work / "before.png")
    make_style_image().save(work / "style.png")
    (work / "dialog_args.json").write_text(json.dumps({"preset": "fast", "device": "cpu"}))
    (work / "gimprc").write_text(
        f'(config-version "{gimp["package_version"]}")\n(show-welcome-dialog no)\n(check-updates no)\n'
    )
    display = next(n for n in range(99, 200) if not Path(f"/tmp/.X{n}-lock").exists())
    binds = {
        sys.prefix,
        sys.base_prefix,
        str(REPO),
        gimp["work"].as_posix(),
        str(Path(gimp["weights"]).parent),
    }
    command = [str(HERE / "run_in_gimp.sh"), "--root", str(chroot.root), "--profile", str(gimp["profile"])]
    for path in sorted(binds):
        command += ["--bind", path]
    command += [
        "--env",
        "PREVIEW=1",
        "--timeout",
        "300",
        "--cmd",
        "bash",
        str(HERE / "screenshot_dialog_inside.sh"),
    ]
    done = subprocess.run([*command, str(work), str(display), "96"], capture_output=True, text=True)
    log = (work / "gimp.log").read_text(errors="replace") if (work / "gimp.log").exists() else ""
    if done.returncode != 0:
        pytest.fail(f"The dialog run failed (exit {done.returncode}):\n{done.stderr[-2000:]}\n{log[-2000:]}")
    return {
        "log": log,
        "stdout": done.stdout,
        "stderr": done.stderr,
        "work": work,
        "version": gimp["version"],
    }


def test_dialog_shows_the_time_estimate_and_refreshes_it(dialog: dict) -> None:
    log = dialog["log"]
    estimates = ESTIMATE.findall(log)
    assert len(estimates) == 2, log[-3000:]
    (first, *_), (second, width, height) = estimates
    assert "no time estimate appeared" not in dialog["stderr"]
    assert log.index("neural-style estimate: Estimating the time") < log.index(first)
    # Typed into the dialog: working size 96 for the 300 x 200 layer.
    assert (width, height) == ("96", "64")
    assert second.endswith("(the layer is 300×200 px; the result is scaled up to it)")
    assert "dialog closed: cancel" in dialog["stdout"]
    assert (dialog["work"] / "dialog.png").stat().st_size > 0
    assert (dialog["work"] / "dialog-size.png").stat().st_size > 0


PREVIEW_SHOWN = re.compile(r"^neural-style preview: Preview at (\d+)×(\d+) px", re.M)


def test_the_dialog_previews_the_settings_and_stops_the_preview_when_closed(dialog: dict) -> None:
    """Preview pressed twice (the first starts the engine service, the second uses it) and a third time
    just before Cancel: the dialog closes at once, the preview's engine job and folder go with it."""
    assert "no preview appeared" not in dialog["stderr"], dialog["log"][-3000:]
    times = dict(line.split() for line in (dialog["work"] / "preview-times.txt").read_text().splitlines())
    shown = PREVIEW_SHOWN.findall(dialog["log"])
    assert shown[:2] == [("256", "171"), ("256", "171")]  # the 300 x 200 layer, shrunk to 256 px
    assert "neural-style preview: Preview: starting the engine" in dialog["log"]
    assert re.search(r"^neural-style preview: Preview: scale \d/\d, iteration \d+/\d+, ", dialog["log"], re.M)
    assert float(times["close"]) < 15 and times["left"] == "0"
    assert "dialog closed: cancel" in dialog["stdout"]
    assert (dialog["work"] / "dialog-preview.png").stat().st_size > 0
    print(
        f"GIMP {dialog['version']} preview: first {times['cold']} s, next {times['warm']} s, "
        f"closed in flight in {times['close']} s"
    )


# -- Layers are animation frames ---------------------------------------------------------------------------


def frame_pixels(gimp: dict, index: int) -> np.ndarray:
    return np.asarray(Image.open(gimp["inputs"][f"frame{index}"]).convert("RGBA"))


def assert_source_untouched(gimp: dict, result: dict) -> None:
    """The frames' image as it was: its layers, their pixels, not even marked changed."""
    assert [layer["name"] for layer in result["layers"]] == result["before"] == FRAMES[::-1]
    for index, name in enumerate(FRAMES):
        assert np.array_equal(pixels(layer_named(result, name)), frame_pixels(gimp, index))
    assert not result["dirty"]


def test_frames_go_to_a_new_image_that_plays_them_in_order(gimp: dict) -> None:
    """Playback plays an image's top-level layers from the bottom up, reading each name's timing tags."""
    result = case(gimp, "frames")
    assert result["status"] == "success", result["error"]
    returned = result["returned"]
    assert (
        returned["size"] == result["image"]["size"] and returned["precision"] == result["image"]["precision"]
    )
    assert [layer["name"] for layer in returned["layers"]][::-1] == FRAMES_STYLED
    for index, layer in enumerate(returned["layers"][::-1]):
        assert layer["size"] == [FRAME_SIZE, FRAME_SIZE] and layer["offsets"] == [0, 0]
        styled, source = pixels(layer), frame_pixels(gimp, index)
        assert (styled[..., 3] == 255).all()
        assert np.abs(styled[..., :3].astype(int) - source[..., :3]).mean() > 2
    assert returned["undo_enabled"]
    assert result["images"][1] == result["images"][0] + 1
    assert_source_untouched(gimp, result)
    print(f"GIMP, OK to the new image of 3 frames: {result['seconds']:.1f} s")


def test_frames_equal_the_engines_batch_run_directly(gimp: dict) -> None:
    """The plug-in hands the frames over in frame order and adds nothing: `batch --frames` on the same
    files, with the same options, agrees (a wrong order would start frames 2 and 3 from other frames)."""
    work = gimp["work"] / "direct-frames"
    work.mkdir()
    flags = []
    for name, value in (ENGINE_OPTIONS | {"size": 48, "weights": gimp["weights"]}).items():
        flags += ["--" + name.replace("_", "-"), str(value)]
    inputs = [gimp["inputs"][f"frame{index}"] for index in range(len(FRAMES))]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nst_core",
            "batch",
            *inputs,
            "--style",
            gimp["inputs"]["style"],
            "-o",
            str(work),
        ]
        + ["--format", "tif", "--frames", "--progress", "none", "--style-blend", "1.0", *flags],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    returned = case(gimp, "frames")["returned"]["layers"][::-1]
    for index, layer in enumerate(returned):
        direct = np.asarray(Image.open(work / f"frame{index}.tif").convert("RGBA")).astype(int)
        assert np.abs(direct - pixels(layer)).max() <= 1, f"frame {index + 1}"


def test_frames_at_a_smaller_working_size_are_scaled_to_the_selection(gimp: dict) -> None:
    result = case(gimp, "frames_scaled")
    assert result["status"] == "success", result["error"]
    layers = result["returned"]["layers"][::-1]
    assert [layer["name"] for layer in layers] == FRAMES_STYLED
    for index, layer in enumerate(layers):
        assert layer["size"] == [40, 40] and layer["offsets"] == [4, 4]
        inside = frame_pixels(gimp, index)[4:44, 4:44]
        assert np.abs(pixels(layer)[..., :3].astype(int) - inside[..., :3]).mean() > 2
    assert_source_untouched(gimp, result)


def test_cancelling_frames_kills_the_engine_and_makes_no_image(gimp: dict) -> None:
    result = case(gimp, "frames_cancelled")
    killed = result["killed"]
    assert killed.get("engine_pid"), "the engine never started"
    assert killed["engine_died"], "the engine outlived its killed plug-in"
    assert result["status"] != "success" and result["returned"] is None
    assert result["images"][1] == result["images"][0]
    assert_source_untouched(gimp, result)


# -- a layer as the style, and regions -------------------------------------------------------------------


def new_layer(result: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """The one layer the call added (above Opaque): its description, its pixels and Opaque's."""
    assert result["status"] == "success", result["error"]
    names = [layer["name"] for layer in result["layers"]]
    assert len(names) == 2 and names[1] == "Opaque", names
    added = result["layers"][0]
    return added, pixels(added), pixels(result["layers"][1])


def test_a_layer_of_another_image_is_the_style_its_file_would_be(gimp: dict) -> None:
    """The same partly transparent pixels as a file and as a layer of another open image give the same
    result; a 16-bit copy of that image nearly the same (its pixels go over in float, converted by GIMP
    through premultiplied alpha, and a few steps of L-BFGS carry the last bits' difference on)."""
    by_file, file_pixels, _ = new_layer(case(gimp, "style_file_rgba"))
    by_layer, layer_pixels, _ = new_layer(case(gimp, "style_layer_rgba"))
    assert by_file["name"] == "Opaque (Neural Style: style-rgba)"
    assert by_layer["name"] == "Opaque (Neural Style: Brush strokes)"  # the style layer's name
    assert np.array_equal(layer_pixels, file_pixels)
    _, deep_pixels, _ = new_layer(case(gimp, "style_layer_deep"))
    deep_difference = np.abs(deep_pixels.astype(int) - file_pixels)
    print(
        f"16-bit style layer against its file: mean {deep_difference.mean():.3f}, max {deep_difference.max()}"
    )
    assert deep_difference.mean() < 0.5 and np.percentile(deep_difference, 99) <= 2
    _, other_style, _ = new_layer(case(gimp, "cold"))
    assert not np.array_equal(other_style, file_pixels)  # the style did make the difference
    assert case(gimp, "style_layer_rgba")["images"][0] == case(gimp, "style_layer_rgba")["images"][1]


def ellipse_weight(layer: dict) -> np.ndarray:
    """How far inside ELLIPSE each pixel of `layer` lies: 1 well inside, 0 well outside."""
    (x, y, w, h), _shape = ELLIPSE
    ox, oy = layer["offsets"]
    width, height = layer["size"]
    yy, xx = np.mgrid[0:height, 0:width]
    distance = ((xx + ox + 0.5 - (x + w / 2)) / (w / 2)) ** 2 + ((yy + oy + 0.5 - (y + h / 2)) / (h / 2)) ** 2
    return distance


def test_a_region_paints_inside_the_selection_and_keeps_the_picture_outside(gimp: dict) -> None:
    added, styled, source = new_layer(case(gimp, "region_inside"))
    source_layer = case(gimp, "region_inside")["layers"][1]
    # The whole layer, not the selection's box: the engine blended the edge, nothing was cut.
    assert added["size"] == source_layer["size"] and added["offsets"] == source_layer["offsets"]
    assert (styled[..., 3] == 255).all()
    change = np.abs(styled[..., :3].astype(int) - source[..., :3]).mean(axis=-1)
    distance = ellipse_weight(added)
    inside, outside = change[distance < 0.5].mean(), change[distance > 2.5].mean()
    print(f"region: mean change {inside:.1f} inside, {outside:.1f} far outside")
    assert inside > 3 and inside > 3 * outside


def test_a_channel_as_the_region_is_the_selection_it_was_saved_from(gimp: dict) -> None:
    _, from_selection, _ = new_layer(case(gimp, "region_inside"))
    _, from_channel, _ = new_layer(case(gimp, "region_channel"))
    # The same shares: the selection's linear coverage, the channel's grey as the Channels dialog shows it.
    assert np.array_equal(from_channel, from_selection)


def test_two_styles_split_by_the_selection(gimp: dict) -> None:
    added, styled, source = new_layer(case(gimp, "region_split"))
    assert added["name"] == "Opaque (Neural Style: style + style2)"
    assert added["size"] == [48, 32] and (styled[..., 3] == 255).all()
    change = np.abs(styled[..., :3].astype(int) - source[..., :3])
    assert change[:, :20].mean() > 2 and change[:, 28:].mean() > 2  # both halves styled
    _, inside_only, _ = new_layer(case(gimp, "region_inside"))
    assert not np.array_equal(styled, inside_only)
