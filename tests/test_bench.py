"""The benchmark: its FLOP count against torch's own counter, and its output format."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nst_core import network, optimize, speed
from nst_core.bench import iteration
from nst_core.network import build_network
from nst_core.options import Options, resolve

ENGINE = Path(__file__).resolve().parents[1] / "nst_core"


def engine_imports(path: Path) -> set[str]:
    """The dotted names of what the top-level engine module `path` imports, lazy imports included."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "nst_core" if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names |= {module} if node.module else {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_no_product_module_imports_a_benchmark() -> None:
    """The benchmarks use the engine, never the other way: `calibrate` and the tests need none of them."""
    found = {
        path.name: name
        for path in sorted(ENGINE.glob("*.py"))
        for name in engine_imports(path)
        if name.startswith("nst_core.bench")
    }
    assert found == {}


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_flop_count_matches_what_torch_counts_for_one_iteration(style_loss: str, vgg19_weights: Path) -> None:
    settings = resolve(Options(style_loss=style_loss, multiscale=False))
    network = build_network(
        settings.model, vgg19_weights, settings.content_layers + settings.style_layers, settings.pooling
    )
    content, style = speed.synthetic_images(40, 32, torch.device("cpu"))
    objective = optimize.build_objective(network, optimize.ScaleInputs(content, [style]), settings, None)
    image = content.clone().requires_grad_(True)
    with FlopCounterMode(display=False) as counter:
        objective(image)[0].backward()
    counted = iteration.iteration_flops(settings, 40, 32)
    assert counted.total == pytest.approx(counter.get_total_flops(), rel=0.01)
    assert counted.style > 0 and counted.conv > counted.style


def test_floor_uses_both_rates() -> None:
    flops = iteration.IterationFlops(conv=4e9, style=1e9)
    assert flops.floor_seconds(iteration.Rates(conv=2e9, matmul=1e9)) == pytest.approx(3.0)


def test_probes_are_timed_over_as_long_as_a_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe's block of calls lasts about as long as the steps' (the best of short windows would
    catch bursts that no step-long window sustains), and at least one call."""

    def step() -> None: ...
    def quick() -> None: ...
    def slow() -> None: ...

    seconds = {step: 0.5, quick: 0.02, slow: 4.0}
    called: list[str] = []
    monkeypatch.setattr(iteration, "best_time", lambda fn, device, repeats=5: seconds[fn])
    probes = {"quick": iteration.Probe(quick, 1e9, "conv"), "slow": iteration.Probe(slow, 1e9, "matmul")}
    counts = iteration.matched_counts(
        {"engine": step, "textbook": lambda: called.append("textbook")}, probes, torch.device("cpu"), 3
    )
    assert counts == {"engine": 3, "textbook": 3, "quick": 75, "slow": 1}
    assert called == ["textbook"]  # every step is warmed up before it is timed


def test_time_steps_reports_seconds_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(100))
    monkeypatch.setattr(iteration.time, "perf_counter", lambda: float(next(clock)))
    calls: list[str] = []
    seconds = iteration.time_steps(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        {"a": 2, "b": 4},
        torch.device("cpu"),
        repeats=2,
    )
    assert calls == ["a"] * 2 + ["b"] * 4 + ["a"] * 2 + ["b"] * 4  # they take turns
    assert seconds == {"a": 0.5, "b": 0.25}  # one tick of the clock per block, over its calls


def test_bench_prints_json_lines(vgg19_weights: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nst_core.bench",
            "--sizes",
            "32",
            "--iterations",
            "1",
            "--repeats",
            "1",
            "--rate-side",
            "32",
            "--style-loss",
            "gram",
            "--weights",
            str(vgg19_weights),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    rates, sizes = rows[0], rows[1:]
    assert rates["conv_gflops"] > 0 and rates["matmul_gflops"] > 0
    assert [r["size"] for r in sizes] == [32]
    for row in sizes:
        for key in ("device", "dtype", "seconds_per_iteration", "floor_seconds", "ratio_to_floor"):
            assert key in row
        assert row["seconds_per_iteration"] > 0 and row["floor_seconds"] > 0
        ratio = row["seconds_per_iteration"] / row["floor_seconds"]
        assert row["ratio_to_floor"] == pytest.approx(ratio, rel=0.05)
        assert row["baseline_seconds_per_iteration"] > 0


def test_time_to_quality_races_for_the_same_time_and_judges_alike(vgg19_weights: Path) -> None:
    rows = iteration.time_to_quality("fast", vgg19_weights, torch.device("cpu"), 48, match_limit=3)
    assert [r["race"] for r in rows] == [
        "fast (coarse to fine)",
        "single-scale L-BFGS, same time",
        "single-scale L-BFGS, to the same total loss",
    ]
    preset, same_time, matched = rows
    assert preset["seconds"] == same_time["seconds"] > 0
    assert int(str(same_time["detail"]).split()[0]) >= 1
    for row in rows:
        assert row["content_loss"] > 0 and row["style_loss_w2"] > 0 and row["style_loss_gram"] > 0
        assert row["total_loss"] >= row["content_loss"] + row["style_loss_w2"]  # plus the TV term
    # The last row runs on from the same-time row until it matches the preset, or gives up at 3x.
    assert same_time["seconds"] <= matched["seconds"] <= 3.5 * same_time["seconds"] + 1
    if "not reached" in str(matched["detail"]):
        assert matched["total_loss"] > preset["total_loss"]
    else:
        assert matched["total_loss"] <= preset["total_loss"] + 1e-4


def test_the_cold_start_benchmark_reads_both_ways_in_fresh_processes(
    tmp_path: Path, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a small file made official as the benchmark makes its 548 MB one: the whole file without the
    table's entry, its copy with it, the same tensors both ways."""
    from dataclasses import replace

    from samples import make_official_like_weights

    from nst_core import network, weights
    from nst_core.bench import load

    data = tmp_path / "data"
    monkeypatch.setenv("NST_DATA_DIR", str(data))
    full = make_official_like_weights(tmp_path / load.FULL_NAME, vgg19_weights)
    entry = {"filename": full.name, "sha256": weights.sha256_of(full), "size": full.stat().st_size}
    monkeypatch.setitem(weights.OFFICIAL, "vgg19", replace(weights.OFFICIAL["vgg19"], **entry))
    weights.verify(full, "vgg19")
    copy = network.ensure_features_copy(full)
    assert copy is not None
    whole = load.measure(full, None, data, [])
    mapped = load.measure(full, entry, data, [])
    assert (whole["read"], mapped["read"]) == (str(full), str(copy))
    assert whole["digest"] == mapped["digest"]
    assert all(run[key] > 0 for run in (whole, mapped) for key in ("load_s", "process_s", "peak_mib"))


def bench_json(module: str, *args: str) -> dict:
    """A benchmark's `--json` row, run as users run it."""
    command = [sys.executable, "-m", f"nst_core.{module}", *args, "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_service_benchmark_times_child_runs_against_warm_served_ones(vgg19_weights: Path) -> None:
    row = bench_json(
        "bench.service",
        "--weights",
        str(vgg19_weights),
        "--runs",
        "2",
        "--iterations",
        "1",
        "--device",
        "cpu",
    )
    assert row["first iteration: child / warm"] == pytest.approx(
        row["child first iteration s"] / row["service warm first iteration s"]
    )
    assert all(value > 0 for value in row.values())


def test_the_service_benchmark_times_a_warm_preview_without_and_with_the_style_cache(
    vgg19_weights: Path,
) -> None:
    small = ["--runs", "1", "--preview-size", "32", "--preview-iterations", "1", "--device", "cpu"]
    row = bench_json("bench.service", "--style-cache", "--weights", str(vgg19_weights), *small)
    for unit in ("s", "CPU s"):
        assert row[f"preview {unit}: no cache / cache"] == pytest.approx(
            row[f"warm preview, no style cache {unit}"] / row[f"warm preview, style cache {unit}"]
        )
    assert all(value > 0 for value in row.values())


def test_the_snapshots_benchmark_weighs_their_cost_against_the_run_and_times_the_first(
    vgg19_weights: Path,
) -> None:
    small = ["--cases", "64", "64:128", "--iterations", "3", "--every", "0.2", "--starts", "1"]
    result = bench_json("bench.snapshots", "--weights", str(vgg19_weights), *small)
    costs, starts = result["costs"], result["starts"]
    assert [row["case"] for row in costs] == ["64 px", "64 px -> 128 px"]
    for row in costs:
        share = 100 * row["snapshots"] * row["snapshot s"] / row["run s"]
        assert row["snapshots % of run"] == pytest.approx(share, rel=0.05, abs=0.05)
    assert starts["first snapshot cold s"] > 0 and starts["first snapshot warm s"] > 0


def test_the_jobs_benchmark_says_in_one_line_that_it_needs_the_test_extra(
    vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nst_core.bench import jobs

    monkeypatch.setitem(sys.modules, "skimage", None)  # as where scikit-image is not installed
    assert jobs.main(["--jobs", "fast:32x24", "--weights", str(vgg19_weights)]) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith("error: ") and "scikit-image" in line and "test extra" in line


def installed_engine(folder: Path) -> Path:
    """The engine's package alone in `folder`, as pip installs it: no checkout around it."""
    import shutil

    shutil.copytree(ENGINE, folder / "nst_core", ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def test_the_service_benchmark_says_in_one_line_what_an_installed_engine_lacks(
    tmp_path: Path, vgg19_weights: Path
) -> None:
    site = installed_engine(tmp_path / "site")
    command = [sys.executable, "-m", "nst_core.bench.service", "--weights", str(vgg19_weights), "--runs", "1"]
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(command, capture_output=True, text=True, cwd=site, env=env, timeout=300)
    assert (done.returncode, done.stdout) == (2, "")
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ") and "nst_bridge.py" in line and "--plugin-dir" in line


def test_the_batch_benchmark_compares_separate_calls_with_one_batch(vgg19_weights: Path) -> None:
    small = ["--pictures", "2", "--size", "32", "--iterations", "1", "--ray-workers", "2"]
    row = bench_json("bench.batch", "--weights", str(vgg19_weights), *small)
    assert row["same bytes"] is True and row["pictures"] == 2
    assert row["separate / batch"] == pytest.approx(row["separate stylize s"] / row["batch s"], rel=0.02)
    assert row["batch / ray"] == pytest.approx(row["batch s"] / row["ray 2 workers s"], rel=0.02)
    assert isinstance(row["ray same bytes as batch"], bool)


def test_the_frames_benchmark_measures_flicker_both_ways_and_plots_it(
    vgg19_weights: Path, tmp_path: Path
) -> None:
    plot = tmp_path / "flicker.png"
    row = bench_json(
        "bench.frames",
        "--weights",
        str(vgg19_weights),
        "--plot",
        str(plot),
        "--frames",
        "4",
        "--size",
        "48",
        "--iterations",
        "3",
        "--joins",
        "2",
        "--overlap",
        "1",
    )
    for kind in ("pan", "zoom"):
        series = row["flicker"][kind]
        assert len(series["independent"]) == len(series["frames"]) == 3
        mean = sum(series["frames"]) / sum(series["independent"])
        assert row[f"{kind} ratio"] == pytest.approx(mean)
    from PIL import Image

    with Image.open(plot) as image:
        assert image.format == "PNG" and image.width > 600
    for label in ("cut", "faded"):  # 4 frames in runs of 2: one join, at the third frame
        assert row[f"joins {label}: largest step"] >= 0 and row[f"joins {label}: mean step inside runs"] >= 0


def test_the_engine_package_carries_the_benchmarks(tmp_path: Path) -> None:
    """The wheel pip builds from the checkout holds every engine module, the benchmarks' package too
    (the installer also takes an engine without them for an outdated one)."""
    import shutil
    import zipfile

    root = ENGINE.parent
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    installed_engine(tmp_path)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*command, "-w", "dist", "."], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        packed = {name for name in archive.namelist() if name.startswith("nst_core/")}
    paintings = {path.relative_to(root).as_posix() for path in (ENGINE / "styles").iterdir()}
    modules = {path.relative_to(root).as_posix() for path in ENGINE.rglob("*.py")}
    assert packed == modules | paintings  # the bundled paintings are the package's only data


def test_random_weights_load_as_torchvision_initialises_them_without_importing_it(tmp_path: Path) -> None:
    """A benchmark's own weights: in the engine's file layout, He-normal over each convolution's outputs
    with zero biases (as torchvision initialises VGG), and made without importing torchvision, whose
    160 MiB would count in a benchmark's peak."""
    code = (
        "import sys; from pathlib import Path; from nst_core.bench.runner import random_weights; "
        "random_weights('vgg16', Path(sys.argv[1])); print('torchvision' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["False"]
    features = network.load_features("vgg16", tmp_path / "vgg16-random.pth")
    convolutions = [layer for layer in features if isinstance(layer, torch.nn.Conv2d)]
    assert len(convolutions) == 13
    for conv in convolutions:
        expected = (2 / (conv.out_channels * 9)) ** 0.5
        assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.1 and not conv.bias.any()


@pytest.mark.parametrize("amx", [True, False])
def test_the_benchmarks_auto_precision_is_what_a_job_runs_in(
    amx: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--precision auto` times the network as a job of the preset runs it (`network.autocast_dtype`):
    bf16 for W2 on a CPU with AMX, else fp32; a precision asked for stays."""
    monkeypatch.setattr(network, "_cpu_has_amx", lambda: amx)
    monkeypatch.setattr(network, "_cpu_has_bf16", lambda: True)
    cpu = torch.device("cpu")
    assert iteration._auto_precision("auto", cpu, "w2") == ("bf16" if amx else "fp32")
    assert iteration._auto_precision("auto", cpu, "gram") == "fp32"
    assert iteration._auto_precision("fp16", cpu, "w2") == "fp16"
