"""The installer's Python version guard (install.py on Python 2.7 and 3.9) and its choice of torch
build (CUDA, ROCm, Apple Silicon, CPU) and of the venv's Python, as units."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from installs import (
    CLEARED_ENV,
    INSTALL,
    REPO,
    explain,
    fake_smi,
    install_args,
    install_namespace,
    listing,
    make_profiles,
    run_install,
)
from interpreters import python27, python39

from nst_install import engine, errors, plan, torch_build
from nst_install.checkout import project

pytestmark = pytest.mark.usefixtures("engine_python_has_this_checkout")


# -- the Python version guard -------------------------------------------------------------------------

# What Python 2.7 must parse: install.py and what it imports before its version check.
GUARD_FILES = (INSTALL, REPO / "nst_install/__init__.py", REPO / "nst_install/errors.py")


def test_too_old_python_gets_a_message(tmp_path: Path) -> None:
    """Python 2.7 is the oldest that must get the one line (a `python install.py` on an old system):
    it runs here for real, with every other Python older than 3.9 this machine has."""
    result = run_install(tmp_path, "--dry-run", NST_INSTALL_PYTHON_VERSION="3.5")
    assert result.returncode == errors.EXIT_OLD_PYTHON
    assert "needs Python 3.9 or newer and this is Python 3.5" in result.stderr
    assert "Traceback" not in result.stderr
    pythons = list(dict.fromkeys([python27(), *old_pythons()]))
    for python in pythons:
        real = subprocess.run([python, str(INSTALL)], capture_output=True, text=True, cwd=tmp_path)
        assert real.returncode == errors.EXIT_OLD_PYTHON, f"{python}: {real.stderr}"
        assert "needs Python 3.9 or newer" in real.stderr and len(real.stderr.splitlines()) == 1
    assert not list((REPO / "nst_install").glob("*.pyc")), "an old Python left its bytecode in the checkout"


def old_pythons() -> list[str]:
    """Interpreters older than 3.9 on PATH or managed by pyenv, those that actually run."""
    names = ("python2.7", "python2", "python3.5", "python3.6", "python3.7", "python3.8")
    candidates = [shutil.which(name) for name in names]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        if root:
            old = ("2.", "3.5", "3.6", "3.7", "3.8")
            candidates += sorted(
                str(p) for p in Path(root).glob("versions/*/bin/python") if p.parts[-3].startswith(old)
            )
    return [
        path
        for path in dict.fromkeys(candidates)
        if path and subprocess.run([path, "-c", "pass"], capture_output=True).returncode == 0
    ]


def test_the_installer_runs_on_python_3_9(tmp_path: Path, vgg19_weights: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, ".config/GIMP/3.0")
    environ = {k: v for k, v in os.environ.items() if k not in CLEARED_ENV} | {"HOME": str(home)}
    argv = [python39(), str(INSTALL), *install_args(vgg19_weights, "--dry-run")]
    done = subprocess.run(argv, capture_output=True, text=True, env=environ, cwd=home, timeout=300)
    assert done.returncode == 0, explain(done)
    assert "Dry run: nothing was changed" in done.stdout and "GIMP 3.0: plug-in into" in done.stdout


@pytest.mark.parametrize("path", GUARD_FILES, ids=lambda p: p.name)
def test_the_guard_compiles_on_python_2_7(path: Path) -> None:
    check = "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')"
    done = subprocess.run([python27(), "-c", check, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", sorted((REPO / "nst_install").glob("*.py")), ids=lambda p: p.name)
def test_the_installer_is_stdlib_and_python_3_9(path: Path) -> None:
    """It runs before any environment exists, possibly on Python 3.9 (macOS's python3)."""
    source = path.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    ours = ("nst_bridge", "nst_common", "nst_service", "nst_core")  # the plug-ins' stdlib modules, and ours
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name.split(".")[0] in (*sys.stdlib_module_names, *ours) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            assert node.module.split(".")[0] in (*sys.stdlib_module_names, *ours)
    if path not in GUARD_FILES:
        assert "from __future__ import annotations" in source  # annotations may use X | Y on 3.9


# -- the torch build, as a unit ---------------------------------------------------------------------


RTX_4090 = "NVIDIA GeForce RTX 4090, 8.9, 580.65"
GTX_1080 = "NVIDIA GeForce GTX 1080, 6.1, 580.65"
RTX_5090 = "NVIDIA GeForce RTX 5090, 12.0, 570.86"
TESLA_K80 = "Tesla K80, 3.7, 470.82"


def choose(tmp_path: Path, requested: str = "auto", system: str = "linux") -> torch_build.TorchBuild:
    return torch_build.choose_torch(system, "x86_64", requested, {"PATH": str(tmp_path)}, tmp_path / "root")


@pytest.mark.parametrize(
    ("cuda", "gpus", "index"),
    [
        ("13.0", [RTX_4090], "cu130"),
        ("13.2", [RTX_4090], "cu132"),
        ("12.9", [RTX_4090], "cu126"),  # torch 2.14 has no cu128: a 12.x driver runs cu126
        ("12.4", [RTX_4090], "cu126"),  # the driver's major release, by minor-version compatibility
        ("13.0", [GTX_1080], "cu126"),  # Pascal: cu130 has no kernels for it ("no kernel image")
        ("13.0", [GTX_1080, RTX_4090], "cu126"),  # one build for every GPU
        ("13.0", [], "cu130"),  # an old driver that cannot say the compute capability
    ],
)
def test_the_cuda_build_follows_the_gpu_and_the_driver(
    tmp_path: Path, cuda: str, gpus: list, index: str
) -> None:
    fake_smi(tmp_path, cuda, *gpus)
    build = choose(tmp_path)
    assert (build.kind, build.index_url) == ("cuda", "https://download.pytorch.org/whl/" + index)
    assert f"CUDA {cuda}" in build.reason


@pytest.mark.parametrize(
    ("cuda", "gpu", "why"),
    [
        ("12.8", RTX_5090, "the builds for this GPU need CUDA 13 or newer: update the NVIDIA driver"),
        ("11.4", TESLA_K80, "no PyTorch 2.14 build has kernels for compute capability 3.7"),
        ("11.4", RTX_4090, "the driver supports CUDA 11.4 and the builds for this GPU need CUDA 12"),
    ],
)
def test_a_gpu_without_a_build_gets_the_cpu_one_and_says_why(tmp_path: Path, cuda: str, gpu: str, why: str):
    fake_smi(tmp_path, cuda, gpu)
    build = choose(tmp_path)
    assert build.kind == "cpu" and why in build.reason
    with pytest.raises(errors.InstallError, match="No CUDA torch for this GPU: ") as info:
        choose(tmp_path, "cuda")
    assert why in str(info.value)


def test_no_gpu_picks_the_cpu_index(tmp_path: Path) -> None:
    for system in ("linux", "windows"):
        build = choose(tmp_path, system=system)
        assert (build.kind, build.index_url) == ("cpu", "https://download.pytorch.org/whl/cpu")


def amd_gpu(root: Path, *versions: int) -> None:
    """What the amdgpu kernel driver shows, without any ROCm installed: /dev/kfd and the KFD topology."""
    (root / "dev").mkdir(parents=True, exist_ok=True)
    (root / "dev/kfd").write_text("")
    for node, version in enumerate((0, *versions)):  # node 0: the CPU
        folder = root / f"sys/class/kfd/kfd/topology/nodes/{node}"
        folder.mkdir(parents=True)
        (folder / "properties").write_text(
            f"cpu_cores_count 0\ngfx_target_version {version}\nvendor_id 4098\n"
        )


def test_rocm_needs_only_the_kernel_driver_and_a_gpu_it_has_kernels_for(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert choose(tmp_path).kind == "cpu"  # no /dev/kfd
    amd_gpu(root, 110000)  # gfx1100: a Radeon RX 7900
    build = choose(tmp_path)
    assert (build.kind, build.index_url) == ("rocm", "https://download.pytorch.org/whl/rocm7.2")
    assert "gfx1100" in build.reason and not (root / "opt/rocm").exists()
    assert choose(tmp_path, system="windows").kind == "cpu"
    other = tmp_path / "other"
    other.mkdir()
    amd_gpu(other / "root", 90012)  # gfx90c: a Ryzen APU's graphics, not in the build
    build = choose(other)
    assert build.kind == "cpu" and "gfx90c has no kernels in PyTorch's ROCm build" in build.reason
    assert choose(other, "rocm").kind == "rocm"


def test_apple_silicon_intel_macs_rosetta_and_overrides(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path)}
    apple = torch_build.choose_torch("macos", "arm64", "auto", env)
    assert (apple.kind, apple.index_url, apple.pins) == ("mps", None, ())
    sysctl = tmp_path / "sysctl"
    sysctl.write_text("#!/bin/sh\necho 0\n")  # a real Intel Mac: not translated
    sysctl.chmod(0o755)
    intel = torch_build.choose_torch("macos", "x86_64", "auto", env)
    assert (intel.kind, intel.index_url, intel.max_python) == ("cpu", None, (3, 12))
    assert intel.requirement("torch", "torch>=2.14,<2.15") == "torch==2.2.2"
    assert intel.requirement("numpy", "numpy>=1.23") == "numpy>=1.23,<2"  # 2.2.2 fails on NumPy 2
    assert intel.requirement("pillow", "pillow>=9") == "pillow>=9"
    sysctl.write_text("#!/bin/sh\necho 1\n")  # an Intel Python under Rosetta 2 on Apple Silicon
    with pytest.raises(errors.InstallError, match="under Rosetta 2") as info:
        torch_build.choose_torch("macos", "x86_64", "auto", env)
    assert "arch -arm64" in str(info.value) and info.value.code == errors.EXIT_OLD_PYTHON
    fake_smi(tmp_path, "13.0", RTX_4090)
    assert choose(tmp_path, "cpu").kind == "cpu"
    with pytest.raises(errors.InstallError, match="macOS"):
        torch_build.choose_torch("macos", "arm64", "cuda", env)


def test_the_build_table_is_for_the_tested_torch() -> None:
    """Moving pyproject.toml to another torch release must come with a look at the build table."""
    major, minor = torch_build.TESTED_TORCH
    assert torch_build.satisfies(f"{major}.{minor}.0", project().requirement("torch"))
    assert not torch_build.satisfies(f"{major}.{minor + 1}.0", project().requirement("torch"))


def test_the_venv_python_fits_the_build_and_is_never_the_stores(tmp_path: Path) -> None:
    python312 = tmp_path / "python3.12"
    python312.write_text("#!/bin/sh\n")
    python312.chmod(0o755)
    env = {"PATH": str(tmp_path)}
    assert engine.base_python(env, (3, 13), "/usr/bin/python3.13", (3, 12)) == str(python312)
    assert engine.base_python(env, (3, 12), "/usr/bin/python3.12", (3, 12)) == "/usr/bin/python3.12"
    with pytest.raises(errors.InstallError, match="at most 3.12"):
        engine.base_python({"PATH": str(tmp_path / "none")}, (3, 13), "/usr/bin/python3.13", (3, 12))
    store = (
        r"C:\Users\me\AppData\Local\Microsoft\WindowsApps\PythonSoftwareFoundation.Python.3.12_x\python.exe"
    )
    assert engine.store_python(store) and not engine.store_python(r"C:\Program Files\Python312\python.exe")
    aliases = tmp_path / "WindowsApps"  # where the Store's python3.12 alias lies on PATH: passed over
    aliases.mkdir()
    python312.rename(aliases / "python3.12")
    with pytest.raises(errors.InstallError, match="none was found"):
        engine.base_python({"PATH": str(aliases)}, (3, 9), "/usr/bin/python3.9")


def test_a_store_python_is_refused_before_anything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    make_profiles(home, "AppData/Roaming/GIMP/3.0")
    store = (
        r"C:\Program Files\WindowsApps\PythonSoftwareFoundation.Python.3.12_x64__qbz5n2kfra8p0\python3.12.exe"
    )
    args = install_namespace(platform="windows")
    before = listing(home)
    with pytest.raises(errors.InstallError) as info:
        plan.make_plan(args, {"HOME": str(home), "APPDATA": str(home / "AppData/Roaming")}, executable=store)
    assert info.value.code == errors.EXIT_OLD_PYTHON and "\n" not in str(info.value)
    assert str(info.value).startswith(f"This Python ({store}) is the Microsoft Store's")
    assert "python.org" in str(info.value) and listing(home) == before


def test_tested_torch_releases() -> None:
    """The venv gets the releases the project is tested with: pyproject.toml's range, which holds the
    test environment's pins, and a torch outside it is replaced."""
    pins = dict(
        line.split("==") for line in (REPO / "tests/requirements.txt").read_text().split() if "==" in line
    )
    for name in ("torch", "torchvision"):
        assert torch_build.satisfies(pins[name], project().requirement(name)), (
            pins[name],
            project().requirements,
        )
    assert torch_build.satisfies("2.14.1+cu128", "torch>=2.14,<2.15")
    assert not torch_build.satisfies("2.15.0", "torch>=2.14,<2.15")
    assert not torch_build.satisfies("2.13.9", "torch>=2.14,<2.15")
    assert torch_build.satisfies("0.29.1", "torchvision==0.29.1") and not torch_build.satisfies(
        "0.29", "x==0.29.1"
    )
    build = torch_build.TorchBuild("cpu", None, "test")
    probe = {"torch": {"version": "2.14.1"}, "torchvision": {"version": "0.29.1"}}
    assert engine.torch_fits(probe, build)
    assert not engine.torch_fits(
        {**probe, "torch": {"version": "2.16.0"}}, build
    )  # a newer one is not trusted
