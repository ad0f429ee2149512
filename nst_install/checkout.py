"""What the installer takes from the checkout it runs from: the project's metadata (pyproject.toml),
nst_core's standard-library modules (the data folder, the official weights and their downloader) and
the plug-ins' bridge, service client and common module, which the self-test runs as GIMP does."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plug-ins"
for _folder in (REPO, PLUGINS / "neural_style"):
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

import nst_bridge  # noqa: E402
import nst_common  # noqa: E402
import nst_service  # noqa: E402

from nst_core import paths, weights  # noqa: E402
from nst_core.errors import NstError  # noqa: E402

__all__ = [
    "REPO",
    "PLUGINS",
    "NstError",
    "Project",
    "nst_bridge",
    "nst_common",
    "nst_service",
    "paths",
    "project",
    "requirement_name",
    "weights",
]

# pip's names for what the engine imports, where they differ.
IMPORT_NAMES = {"pillow": "PIL", "opencv-python-headless": "cv2"}


def requirement_name(specifier: str) -> str:
    """'torch' of the pip specifier 'torch>=2.14,<2.15'."""
    return re.split(r"[<>=!~ ]", specifier, maxsplit=1)[0]


@dataclass(frozen=True)
class Project:
    name: str
    min_python: tuple[int, int]  # requires-python
    requirements: tuple[str, ...]  # the engine's dependencies, as pip specifiers (torch's tested range)

    def requirement(self, name: str) -> str:
        """The specifier of one dependency, e.g. 'torch>=2.14,<2.15'."""
        return next(r for r in self.requirements if requirement_name(r) == name)

    @property
    def modules(self) -> tuple[tuple[str, str], ...]:
        """(module, distribution) of each dependency: what the engine's Python must import."""
        names = (requirement_name(r) for r in self.requirements)
        return tuple((IMPORT_NAMES.get(name, name), name) for name in names)

    @property
    def imports(self) -> tuple[str, ...]:
        return tuple(module for module, _dist in self.modules)


@functools.cache
def project() -> Project:
    """pyproject.toml's name, requires-python and dependencies (the installer runs before any TOML
    reader can be installed, and tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    name = re.search(r'^name\s*=\s*"([^"]+)"', text, re.M)
    python = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', text, re.M)
    dependencies = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S)
    assert name and python and dependencies, "pyproject.toml lacks name, requires-python or dependencies"
    requirements = tuple(re.findall(r'"([^"]+)"', dependencies.group(1)))
    return Project(name.group(1), (int(python.group(1)), int(python.group(2))), requirements)
