"""The GIMP 2.10 plug-in on a real Python 2.7, as GIMP 2.10 runs it: end to end, on the warm engine,
killed mid-run, and finding the bridge and config where install.py puts them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from drive_plugin import load_plugin, new_image, pattern, plugin_args
from gimp2_harness import (
    BRIDGE,
    BRIDGE_MODULES,
    HERE,
    PLUGIN,
    channel,
    engine_config,
    run_on_python27,
    write_spec,
)
from servers import pid_alive, wait_until


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killing_the_plugin_stops_the_engine(config_file, style_file, tmp_path: Path, how) -> None:
    marker = tmp_path / "progress.txt"
    spec = write_spec(
        tmp_path,
        style=style_file,
        width=40,
        height=30,
        layer_type=1,
        iterations=100000,
        marker=str(marker),
        report=str(tmp_path / "report.json"),
    )
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(private_tmp))  # where the bridge makes its run folder
    plugin = subprocess.Popen([sys.executable, str(HERE / "drive_plugin.py"), str(spec)], env=env)
    try:
        # Wait until the engine is optimising, as when a user cancels a long run.
        def working() -> bool:
            return marker.exists() and len(marker.read_text().split()) > 2

        assert wait_until(lambda: working() or plugin.poll() is not None, 120) and working(), (
            "the engine never got to work: " + (tmp_path / "report.json").read_text()
            if plugin.poll() is not None
            else "no progress within 2 minutes"
        )
        engines = children_of(plugin.pid)
        assert len(engines) == 1 and pid_alive(engines[0])
        os.kill(plugin.pid, how)
        # SIGTERM: the bridge kills the engine, removes its folder and exits as killed by the signal.
        assert plugin.wait(timeout=30) == (128 + how if how == signal.SIGTERM else -how)
        assert wait_until(lambda: not pid_alive(engines[0]), 20), "the engine outlived the plug-in"
    finally:
        if plugin.poll() is None:
            plugin.kill()
    assert not (tmp_path / "report.json").exists()
    if how == signal.SIGTERM:
        assert list(private_tmp.iterdir()) == []


# Installed layouts and GIMP 2.10's own Python


@pytest.mark.parametrize("flat", [False, True], ids=["own-folder", "loose-file"])
def test_finds_bridge_and_config_where_the_installer_puts_them(
    gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flat: bool
) -> None:
    plugins = tmp_path / "plug-ins"
    support = plugins / "neural_style_gimp2"
    support.mkdir(parents=True)
    shutil.copy(PLUGIN, (plugins if flat else support) / PLUGIN.name)
    for module in BRIDGE_MODULES:
        shutil.copy(module, support / module.name)
    config = engine_config(None)
    config["engine"]["presets"][0]["label"] = "Renamed by the installed config"
    config["engine"]["user_presets"] = [config["engine"]["presets"][0]["name"]]
    (support / "nst_config.json").write_text(json.dumps(config), encoding="utf-8")
    monkeypatch.delenv("NST_PLUGIN_CONFIG", raising=False)
    for module in BRIDGE_MODULES:
        monkeypatch.delitem(sys.modules, module.stem, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != BRIDGE.parent])

    plugin = load_plugin(str((plugins if flat else support) / PLUGIN.name))

    for module in (
        plugin.nst_bridge,
        plugin.nst_bridge.nst_service,
        plugin.nst_bridge.nst_tiff,
        plugin.nst_common,
    ):
        assert Path(module.__file__).resolve().parent == support.resolve()
    params = {param[1]: param for param in gimpfu.registered["python-fu-neural-style"]["params"]}
    assert params["preset"][4] == ["Renamed by the installed config"]


@pytest.mark.parametrize("missing", ["nst_service.py", "nst_common.py", "nst_tiff.py"])
def test_a_module_missing_beside_the_bridge_is_one_line_to_reinstall(
    gimpfu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style_file: str, missing: str
) -> None:
    """The bridge imports its modules when the plug-in loads: one left out of a copied folder is the
    plug-in's one line, before any run, not an error in the middle of one."""
    support = tmp_path / "plug-ins" / "neural_style_gimp2"
    support.mkdir(parents=True)
    shutil.copy(PLUGIN, support / PLUGIN.name)
    for module in BRIDGE_MODULES:
        if module.name != missing:
            shutil.copy(module, support / module.name)
    (support / "nst_config.json").write_text(json.dumps(engine_config(None)), encoding="utf-8")
    monkeypatch.delenv("NST_PLUGIN_CONFIG", raising=False)
    for module in BRIDGE_MODULES:
        monkeypatch.delitem(sys.modules, module.stem, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p).resolve() != BRIDGE.parent])
    plugin = load_plugin(str(support / PLUGIN.name))

    image, layer = new_image(gimpfu, 40, 30, gimpfu.RGB_IMAGE)
    plugin.neural_style(image, layer, *plugin_args(style_file))
    assert gimpfu.messages == [
        "Neural Style: Neural Style is incompletely installed (nst_bridge.py or nst_service.py or "
        "nst_common.py or nst_tiff.py is missing beside neural_style_gimp2.py): run install.py again."
    ]
    assert image.layers == [layer] and image.open_undo_groups == 0


def test_runs_end_to_end_on_python27(config_file, style_file, tmp_path: Path) -> None:
    report = run_on_python27(
        tmp_path, style=style_file, width=24, height=20, layer_type=3, offsets=[4, 6], iterations=2
    )
    assert report["python"] == [2, 7] and report["messages"] == [] and report["open_undo_groups"] == 0
    result, source = report["layers"][0], report["layers"][1]
    assert result["name"] == "Photo (Neural Style: Starry night)"
    assert (result["width"], result["height"], result["offsets"]) == (24, 20, [4, 6])
    pixels = base64.b64decode(result["pixels"])
    assert base64.b64decode(source["pixels"]) == pattern(24, 20, 2)
    assert len(pixels) == 24 * 20 * 2 and channel(pixels, 2, 1) == channel(pattern(24, 20, 2), 2, 1)


def test_runs_on_the_warm_engine_on_python27(config_file, style_file, tmp_path: Path) -> None:
    """Installed, the plug-in starts the engine service on its first run; the second run uses it."""
    sys.path.insert(0, str(BRIDGE.parent))
    import nst_service

    data = tmp_path / "data"
    config = json.loads(config_file.read_text()) | {"service": True, "data_dir": str(data)}
    config_file.write_text(json.dumps(config))
    state = data / nst_service.SERVICE_FOLDER / nst_service.STATE_NAME
    pids, layers = [], []
    try:
        for run in range(2):
            report = run_on_python27(
                tmp_path,
                f"report-{run}.json",
                style=style_file,
                width=24,
                height=20,
                layer_type=1,
                iterations=2,
            )
            assert report["messages"] == []
            layers.append(report["layers"][0]["pixels"])
            pids.append(json.loads(state.read_text())["pid"])
    finally:
        nst_service.stop_local_service(str(data))
    assert pids[0] == pids[1] and layers[0] == layers[1]
