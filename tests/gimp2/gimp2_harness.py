"""Paths and the engine config for the GIMP 2.10 plug-in's tests (imported as a module)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGIN = REPO / "plug-ins" / "neural_style_gimp2" / "neural_style_gimp2.py"
BRIDGE = REPO / "plug-ins" / "neural_style" / "nst_bridge.py"
SERVICE = REPO / "plug-ins" / "neural_style" / "nst_service.py"  # the bridge's client of the engine service
COMMON = REPO / "plug-ins" / "neural_style" / "nst_common.py"  # what the bridge and the service client share
BRIDGE_MODULES = (BRIDGE, SERVICE, COMMON)  # what install.py puts beside the plug-in


def engine_config(weights: Path | None) -> dict:
    """What install.py writes: this venv's Python, the weights, the engine's self-description."""
    from nst_core.options import describe

    config = {"version": 1, "python": sys.executable, "engine": describe()}
    if weights is not None:
        config["weights"] = str(weights)
    return config
