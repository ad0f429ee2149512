"""What a GPU runs, exercised on the CPU: mixed precision, and how often an iteration waits for the device.

No GPU is needed: torch autocasts on the CPU too (fp16 and bf16), and what reads values back to
the host is the same code on every device. Random weights: the losses must fall, nothing more.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nst_core import losses, optimize, speed
from nst_core.network import build_network
from nst_core.options import Options, resolve

# aten operators that make the host wait for a GPU: a scalar read (item, float, bool, if on a tensor)
# and those whose output size depends on the values.
WAITING_OPS = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "repeat_interleave")


def _stepper(weights: Path, style_loss: str, autocast: torch.dtype | None) -> optimize.Stepper:
    settings = resolve(Options(preset="fast", multiscale=False, style_loss=style_loss))
    network = build_network(
        settings.model, weights, settings.content_layers + settings.style_layers, settings.pooling
    )
    content, style = speed.synthetic_images(48, 40, torch.device("cpu"))
    objective = optimize.build_objective(network, optimize.ScaleInputs(content, [style]), settings, autocast)
    scale = optimize.loss_scale_for(autocast)
    return optimize.Stepper(content, objective, "lbfgs", settings.learning_rate, scale)


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mixed_precision_runs_the_network_in_half_and_the_rest_in_float32(
    dtype: torch.dtype, style_loss: str, vgg19_weights: Path
) -> None:
    stepper = _stepper(vgg19_weights, style_loss, dtype)
    outputs: set[torch.dtype] = set()
    for module in stepper.objective.network.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(lambda _m, _i, out: outputs.add(out.dtype))
    totals = [stepper.step()["total"] for _ in range(12)]
    assert outputs == {dtype}
    assert stepper.loss_scale == (optimize.FP16_LOSS_SCALE if dtype == torch.float16 else 1.0)
    assert stepper.image.dtype == torch.float32 and stepper.image.grad is not None
    assert stepper.image.grad.dtype == torch.float32 and torch.isfinite(stepper.image.grad).all()
    assert all(torch.isfinite(torch.tensor(totals))) and min(totals[1:]) < 0.8 * totals[0]


class _Waits(TorchDispatchMode):
    """Counts the operators that would make the host wait for a GPU."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func.__name__.split(".")[0] in WAITING_OPS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("style_loss", ["gram", "w2"])
def test_an_iteration_waits_for_the_device_once(
    style_loss: str, vgg19_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One read per iteration, for the progress report and the best iterate; W2 adds one wait per
    style layer (torch's eigh on CUDA reads its status back), counted apart."""
    stepper = _stepper(vgg19_weights, style_loss, None)
    stepper.step()
    reads = []
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(self.shape) or tolist(self))
    decompositions = []
    eigh_all = losses._eigh64_all
    monkeypatch.setattr(losses, "_eigh64_all", lambda ms: decompositions.append(len(ms)) or eigh_all(ms))
    with _Waits() as waits:
        for _ in range(3):
            stepper.step()
    assert waits.count == 0
    assert len(reads) == 3
    layers = len(stepper.objective.style_targets)
    assert decompositions == ([layers] * 3 if style_loss == "w2" else [])
