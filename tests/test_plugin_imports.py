"""How the plug-ins' modules import each other (docs/protocol.md, "The plug-in side"): one way, from the
GIMP glue down to nst_common.py, read from their source with every import counted (those inside
functions too), no private name taken from another module, and no module over 700 lines.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PLUGINS = REPO / "plug-ins"
# Lowest first: a module imports only the plug-in modules of the layers below its own.
LAYERS = (
    ("nst_common", "nst_tiff"),
    ("nst_service",),
    ("nst_bridge",),
    ("nst_estimate", "nst_preview"),
    ("nst_procedure",),
    ("nst_dialog",),
    ("neural_style", "neural_style_gimp2"),
)
LAYER = {name: index for index, names in enumerate(LAYERS) for name in names}
# What GIMP 2.10's Python 2.7 loads too.
GIMP2_SHARED = ("nst_common", "nst_tiff", "nst_service", "nst_bridge")
PY2_STDLIB = ("httplib", "urlparse")  # Python 3's http.client and urllib.parse, as Python 2.7 names them
MAX_LINES = 700
SOURCES = sorted(PLUGINS.glob("*/*.py"))


def imported(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(module, names taken from it) of every import in `tree`, wherever it stands."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def test_every_plugin_module_has_its_layer() -> None:
    assert sorted(path.stem for path in SOURCES) == sorted(LAYER)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_imports_go_down_the_layers_only(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for module, names in imported(tree):
        top = module.split(".")[0]
        if top in LAYER:
            assert LAYER[top] < LAYER[path.stem], f"{path.name} imports {module}, a layer above or beside it"
            private = [name for name in names if name.startswith("_")]
            assert not private, f"{path.name} imports the private {private} of {module}"
        elif path.stem in GIMP2_SHARED:
            assert top in (*sys.stdlib_module_names, *PY2_STDLIB), f"{path.name} imports {module}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_no_private_name_of_another_module_is_used(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in LAYER
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]
    assert not used, f"{path.name} uses {used}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_no_plugin_module_is_over_the_line_limit(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines: split it by what it does"
