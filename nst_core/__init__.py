"""GIMP Neural Style engine: neural style transfer (Gatys et al.) on VGG features.

Importing the package is cheap (no torch); the heavy modules load on first use.
"""

__version__ = "0.1.0"

from typing import Any

# Public names and the module that holds each; loaded on first access so that
# `import nst_core` stays cheap (the GIMP side and the CLI's --help never load torch).
_LAZY = {
    "stylize": "run",
    "make_plan": "plan",
    "Plan": "plan",
    "Progress": "optimize",
    "load_image": "images",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
