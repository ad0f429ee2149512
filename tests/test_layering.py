"""The architecture as docs/architecture.md draws it, held against every import of the code (lazy imports
inside functions included): no circle, no private name taken from another module, no product module
importing a benchmark, imports only downwards through the engine's layers, and the torch-free modules
torch-free."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from layering import circles, importers_of, private_imports, reachable, read_graph, third_party

REPO = Path(__file__).resolve().parents[1]

# The engine's layers, top to bottom (docs/architecture.md). A module imports only from its own layer or
# the ones below; a new module must be placed here.
ENGINE_LAYERS: list[tuple[str, set[str]]] = [
    ("front ends", {"__main__", "cli", "option_flags"}),
    (
        "protocol and many runs",
        {
            "job",
            "cancel",
            "output",
            "service",
            "wire",
            "client",
            "batch",
            "frames",
            "cluster",
            "ray_executor",
        },
    ),
    ("the engine's entry, plan and estimate", {"run", "previews", "plan", "speed"}),
    ("one scale's optimisation", {"balance", "optimize", "objective", "tiling", "memory", "stylecache"}),
    (
        "features, formulas and pixels",
        {"network", "losses", "regions", "colors", "images", "weights"},
    ),
    (
        "base",
        {
            "__init__",
            "options",
            "validate",
            "presets",
            "paintings",
            "readable",
            "errors",
            "events",
            "paths",
            "devices",
        },
    ),
]

# Modules that stay importable without torch or numpy, with all they import: what the plug-ins, the
# installer and the CLI's --help stand on.
TORCH_FREE_ENGINE = {"options", "validate", "presets", "paintings", "readable", "errors", "events", "paths"}
HEAVY = {"torch", "torchvision", "numpy", "PIL"}


@pytest.fixture(scope="module")
def graph():
    return read_graph(REPO)


def engine_name(module: str) -> str | None:
    if module == "nst_core":
        return "__init__"
    if module.startswith("nst_core.") and not module.startswith("nst_core.bench"):
        return module.removeprefix("nst_core.")
    return None


def test_no_import_circle(graph) -> None:
    assert circles(graph.edges()) == []


def test_no_private_name_taken_across_modules(graph) -> None:
    assert private_imports(graph) == []


def test_no_product_module_imports_a_benchmark(graph) -> None:
    benchmarks = {m for m in graph.modules if m == "nst_core.bench" or m.startswith("nst_core.bench.")}
    product = {m: targets for m, targets in importers_of(graph, benchmarks).items() if m not in benchmarks}
    assert product == {}


def test_every_engine_module_has_a_layer(graph) -> None:
    placed = set().union(*(members for _, members in ENGINE_LAYERS))
    engine = {engine_name(m) for m in graph.modules} - {None}
    assert engine - placed == set(), "place the new module in ENGINE_LAYERS and docs/architecture.md"


def test_engine_imports_go_down(graph) -> None:
    rank = {name: depth for depth, (_, members) in enumerate(ENGINE_LAYERS) for name in members}
    upward = []
    for imp in graph.imports:
        source, target = engine_name(imp.importer), engine_name(imp.target)
        if source is None or target is None or target == "__init__":
            continue  # a submodule's package is loaded first anyway
        if rank[target] < rank[source]:
            upward.append(f"{imp.importer} (line {imp.line}) -> {imp.target}")
    assert upward == []


def test_torch_free_modules(graph) -> None:
    edges = graph.edges()
    heavy = {}
    plugin_side = {
        m for m, p in graph.modules.items() if "plug-ins" in p.parts or m.startswith("nst_install")
    }
    engine_light = {f"nst_core.{m}" for m in TORCH_FREE_ENGINE}
    for module in sorted(plugin_side | engine_light | {"install"}):
        for part in {module} | reachable(edges, module):
            found = third_party(graph.modules[part]) & HEAVY
            if found:
                heavy[module] = f"{part} imports {sorted(found)}"
    assert heavy == {}


def test_checks_find_what_they_look_for(tmp_path: Path) -> None:
    """The checks themselves on a made-up tree: a lazy circle, a private name, a benchmark import."""
    core = tmp_path / "nst_core"
    (core / "bench").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "run.py": "from .job import check\n",
        "job.py": "def f():\n    from .run import go\n    from . import plan\n    return plan._hidden\n",
        "plan.py": "from .options import _secret\nfrom .bench import jobs\n",
        "options.py": "_secret = 1\n",
        "bench/__init__.py": "",
        "bench/jobs.py": "",
    }
    for name, text in files.items():
        (core / name).write_text(textwrap.dedent(text))
    made = read_graph(tmp_path)
    assert circles(made.edges()) == [["nst_core.job", "nst_core.run"]]
    assert sorted(private_imports(made)) == [
        "nst_core.job (line 4) uses nst_core.plan._hidden",
        "nst_core.plan (line 1) takes _secret from nst_core.options",
    ]
    assert importers_of(made, {"nst_core.bench.jobs"}) == {"nst_core.plan": {"nst_core.bench.jobs"}}
