"""The loss terms, each written once.

Normalisation (why the same weights work at any size, for VGG16 and VGG19, max or average
pooling, and for both style losses): every feature statistic is a mean over positions, and
every content and style term is a *relative* squared error, divided by the squared size of
its own target. A term therefore reads "fraction of the target still wrong": about 1 when
unrelated, 0 when matched, whatever the image size, channel count or activation scale.

- content:  |F - P|^2 / |P|^2                        (F, P: C x HW features of image, content)
- gram:     |G - A|^2 / |A|^2, G = F F^T / (H W)     (the Gram divided by the position count)
- w2:       W2^2 / tr(S_s) with the Gaussian fits (mu, Sigma = S - mu mu^T, S = F F^T / HW; the
            style's Sigma_s gets + eps I so its square root is well defined):
            W2^2 = |mu - mu_s|^2 + tr(Sigma) + tr(Sigma_s) - 2 tr((Sigma_s^1/2 Sigma Sigma_s^1/2)^1/2)
            The last trace is the nuclear norm of B = Sigma_s^1/2 (F - mu) / sqrt(HW), taken as
            tr((B B^T)^1/2) or tr((B^T B)^1/2), whichever matrix is smaller: at coarse scales the
            deep layers have fewer positions than channels, and this is what keeps w2 cheap there.
            tr(M^1/2) comes from one symmetric eigendecomposition with the analytic gradient
            (1/2) M^-1/2 (zero on M's null space): exact, and about 10x cheaper on a CPU than the
            differentiated Newton-Schulz iterations it replaced (docs/performance.md).
- tv:       mean squared difference of neighbouring pixels (pixels in [0, 1]).

Layer weights are normalised to sum 1, so a layer list of any length keeps the balance.
Several styles blend by the weighted average of their statistics (A, or mu and S), or with masks
each keeps its own and is matched by the statistics under its mask (`LayerSums` with weights,
regions.py).
All statistics are computed in float32 even when the network runs in half precision.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

EPS = 1e-8
COVARIANCE_EPS = 1e-5  # keeps Sigma positive definite for the square roots (relative to its trace / C)
# Eigenvalues below this fraction of the largest count as zero in the gradient: M's entries carry
# float32 rounding of about 1e-7 of its largest eigenvalue, summed over many positions, so smaller
# ones are noise (dead channels make true zeros), and their inverse square roots made the gradient
# depend on the order of the sums: by 0.3% between a tiled and a whole evaluation at 1e-9, 0.01%
# at 1e-5 (measured on 400 x 368 and 640 x 480 images, tests/test_tiling.py).
NULL_EIGENVALUE = 1e-5


def _positions(features: torch.Tensor) -> torch.Tensor:
    """1 x C x H x W -> HW x C in float32: a view, no copy, of a channels_last float32 map."""
    return features.movedim(1, -1).reshape(-1, features.shape[1]).float()


def _as_features(grad: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """An HW x C gradient back in the shape of `features`, in the channels_last layout."""
    _, channels, height, width = features.shape
    return grad.view(1, height, width, channels).movedim(-1, 1).to(features.dtype)


def relative_error(value: torch.Tensor, target: torch.Tensor, target_norm: torch.Tensor) -> torch.Tensor:
    return (value - target).pow(2).sum() / target_norm


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.float()
    return relative_error(features.float(), target, target.pow(2).sum() + EPS)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Channel second moments F F^T / (H W)."""
    x = _positions(features)
    return x.T @ x / x.shape[0]


def moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean per channel and the second moment S = F F^T / HW (what a w2 target blends)."""
    x = _positions(features)
    return x.mean(dim=0), x.T @ x / x.shape[0]


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean() + dy.pow(2).mean()


class _GramLoss(torch.autograd.Function):
    """|G - A|^2 / |A|^2 with the gradient written out: 4 X D / (N |A|^2), D = G - A (symmetric).

    One matrix product forward and one backward; autograd's chain costs a third product and
    several full-size element-wise passes.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        features: torch.Tensor,
        target: torch.Tensor,
        norm: torch.Tensor,
    ) -> torch.Tensor:
        difference = gram(features) - target
        if ctx.needs_input_grad[0]:
            positions = features.shape[-2] * features.shape[-1]
            ctx.save_for_backward(features, difference * (4 / (positions * norm)))
        return difference.pow(2).sum() / norm

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        features, scaled_difference = ctx.saved_tensors
        return _as_features(_positions(features) @ (scaled_difference * grad), features), None, None


@dataclass(frozen=True)
class GramTarget:
    gram: torch.Tensor
    norm: torch.Tensor  # |A|^2, computed once

    def loss(self, features: torch.Tensor) -> torch.Tensor:
        return _GramLoss.apply(features, self.gram, self.norm)


def _style_covariance(mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    eye = torch.eye(len(mean), device=mean.device, dtype=mean.dtype)
    cov = second - torch.outer(mean, mean)
    return cov + eye * (COVARIANCE_EPS * cov.diagonal().mean().clamp_min(EPS))


def _eigh64(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and vectors in float64, on the CPU where the device has no float64 eigh (MPS)."""
    work = matrix.detach()
    work = work.cpu() if work.device.type == "mps" else work
    # One thread: LAPACK's eigh on these small matrices is a long chain of short parallel
    # regions, and with another program on the cores each of their barriers can wait a whole
    # time slice (measured on 2 busy cores: seconds instead of 0.04 s at 512 x 512).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(work.double())
    finally:
        torch.set_num_threads(threads)


@functools.cache
def _eigh_workers(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(count, thread_name_prefix="eigh")


def _eigh64_all(matrices: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`_eigh64` of each matrix. On the CPU they run side by side, one single-threaded LAPACK call
    per core, largest first: 45 instead of 76 ms per iteration at 512 px on 2 cores."""
    workers = min(len(matrices), torch.get_num_threads())
    if workers < 2 or matrices[0].device.type != "cpu":
        return [_eigh64(m) for m in matrices]
    pool = _eigh_workers(workers)
    largest_first = sorted(range(len(matrices)), key=lambda i: -matrices[i].shape[0])
    futures = {i: pool.submit(_eigh64, matrices[i]) for i in largest_first}
    return [futures[i].result() for i in range(len(matrices))]


def sqrtm_eigh(matrix: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (exact, not differentiated)."""
    values, vectors = _eigh64(matrix)
    return ((vectors * values.clamp_min(0).sqrt()) @ vectors.T).to(matrix.device, matrix.dtype)


def _trace_sqrt_and_gradient(
    decomposition: tuple[torch.Tensor, torch.Tensor], like: torch.Tensor, want_gradient: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """tr(M^1/2) of a symmetric positive semi-definite M, from its float64 eigendecomposition, and if
    wanted its gradient (1/2) M^-1/2, taken as zero on M's null space (so the gradient through
    M = B B^T is the nuclear norm's U V^T); both on the device and in the dtype of `like`."""
    values, vectors = decomposition
    # The null space is left out of the value too: hundreds of noise eigenvalues of 1e-7 would add
    # their square roots (3e-4 each), and the value would disagree with its gradient.
    live = values > values.max().clamp_min(0) * NULL_EIGENVALUE
    trace = torch.where(live, values.clamp_min(0).sqrt(), torch.zeros_like(values)).sum()
    trace = trace.to(like.device, like.dtype)
    if not want_gradient:
        return trace, None
    half_inverse_root = torch.where(live, 0.5 * values.clamp_min(EPS).rsqrt(), torch.zeros_like(values))
    gradient = (vectors * half_inverse_root) @ vectors.T
    return trace, gradient.to(like.device, like.dtype)


@dataclass(frozen=True)
class W2Target:
    mean: torch.Tensor
    cov_sqrt: torch.Tensor  # Sigma_s^1/2, once per scale
    cov_trace: torch.Tensor
    norm: torch.Tensor  # tr(S_s) = |mu_s|^2 + tr(Sigma_s)

    def loss(self, features: torch.Tensor) -> torch.Tensor:
        return _W2Loss.apply((self,), (1.0,), features)


def _covariance(x: torch.Tensor, mean: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The covariance of the N x C features `x` with mean `mean`, taken about `shift` (the style's
    mean, near the image's): in float32, S / N - m m^T about 0 cancels a large mean's digits away,
    and the square roots of the result's small eigenvalues made the gradient change by 0.3% with
    the order of the sums (measured, tiled against whole)."""
    centred = x - shift
    offset = mean - shift
    return centred.T @ centred / x.shape[0] - torch.outer(offset, offset)


def _w2_dense_coefficients(
    target: W2Target, weight: float, mean: torch.Tensor, g: torch.Tensor, n: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, v) with d loss / dX = X M + 1 v^T for the N x C features X (see `_W2Loss`): K scaled, and
    ((m - m_s) - K m) scaled, with K = I - 2 R G R and the scale 2 weight / (N norm)."""
    root = target.cov_sqrt
    scale = 2 * weight / (n * target.norm)
    k = torch.eye(len(mean), device=mean.device, dtype=mean.dtype) - 2 * root @ g @ root
    return k * scale, ((mean - target.mean) - k @ mean) * scale


class _W2Loss(torch.autograd.Function):
    """sum over layers of weight W2^2 / tr(S_s) (see the module docstring), the gradient written out.

    All style layers go through one call so that their eigendecompositions run side by side.
    Per layer, with X the N x C features, m their mean, R = Sigma_s^1/2, Sigma = X^T X / N - m m^T:
    - C <= N: cross = tr((R Sigma R)^1/2), and with G = (1/2) (R Sigma R)^-1/2, K = I - 2 R G R,
      d loss / dX = 2 / (N norm) (X K + 1 ((m - m_s) - K m)^T): one product each way, as Gram.
    - C > N (deep layers at coarse scales): B = (X - m) R / sqrt(N), cross = tr((B B^T)^1/2), an
      N x N problem, and with G' = (1/2) (B B^T)^-1/2,
      d loss / dX = 2 / (N norm) (X - m_s - 2 sqrt(N) G' B R).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        targets: tuple[W2Target, ...],
        weights: tuple[float, ...],
        *features: torch.Tensor,
    ) -> torch.Tensor:
        xs = [_positions(f) for f in features]
        means = [x.mean(dim=0) for x in xs]
        dense = [x.shape[1] <= x.shape[0] for x in xs]
        covs: list[torch.Tensor | None] = []
        bs: list[torch.Tensor | None] = []
        matrices = []
        for x, mean, is_dense, target in zip(xs, means, dense, targets, strict=True):
            root = target.cov_sqrt
            if is_dense:
                cov = _covariance(x, mean, target.mean)
                covs.append(cov)
                bs.append(None)
                matrices.append(root @ cov @ root)
            else:
                b = (x - mean) @ root / x.shape[0] ** 0.5
                covs.append(None)
                bs.append(b)
                matrices.append(b @ b.T)
        decompositions = _eigh64_all(matrices)
        total = xs[0].new_zeros(())
        ctx.dense = dense
        saved: list[torch.Tensor] = []
        for i, (x, mean, target, weight) in enumerate(zip(xs, means, targets, weights, strict=True)):
            want = ctx.needs_input_grad[2 + i]
            cross, g = _trace_sqrt_and_gradient(decompositions[i], matrices[i], want)
            n = x.shape[0]
            cov, b = covs[i], bs[i]
            cov_trace = cov.trace() if cov is not None else (x - mean).pow(2).sum() / n
            distance = (mean - target.mean).pow(2).sum() + cov_trace + target.cov_trace - 2 * cross
            total = total + distance * (weight / target.norm)
            if not want:
                saved += [x.new_zeros(()), x.new_zeros(())]
                continue
            assert g is not None
            if b is None:
                saved += list(_w2_dense_coefficients(target, weight, mean, g, n))
            else:
                scale = 2 * weight / (n * target.norm)
                saved += [scale, target.mean + 2 * n**0.5 * (g @ b @ target.cov_sqrt)]
        ctx.save_for_backward(*features, *saved)
        return total

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        tensors = ctx.saved_tensors
        layers = len(ctx.dense)
        grads: list[torch.Tensor | None] = []
        for i, features in enumerate(tensors[:layers]):
            if not ctx.needs_input_grad[2 + i]:
                grads.append(None)
                continue
            first, second = tensors[layers + 2 * i], tensors[layers + 2 * i + 1]
            x = _positions(features)
            if ctx.dense[i]:  # first = scale K, second = scale ((m - m_s) - K m)
                result = torch.addmm(second * grad, x, first * grad)
            else:  # first = scale, second = m_s + 2 sqrt(N) G' B R
                result = (x - second) * (first * grad)
            grads.append(_as_features(result, features))
        return (None, None, *grads)


StyleTarget = GramTarget | W2Target


class _KnownGradient(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        value: torch.Tensor,
        gradients: tuple[torch.Tensor, ...],
        *features: torch.Tensor,
    ) -> torch.Tensor:
        ctx.gradients = gradients  # type: ignore[attr-defined]
        return value.clone()

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        # Scaled in place: the gradients are this node's own, and a copy of each would add the
        # features' size to the backward pass's peak.
        gradients = ctx.gradients  # type: ignore[attr-defined]
        del ctx.gradients  # type: ignore[attr-defined]
        return (None, None, *(g.mul_(grad.to(g.dtype)) for g in gradients))


def with_gradient(
    value: torch.Tensor, gradients: Sequence[torch.Tensor], features: Sequence[torch.Tensor]
) -> torch.Tensor:
    """`value` joined to the graph of `features` with its gradients known already (one per feature
    tensor, handed over: they are scaled in place), so one backward pass serves it and the other terms.
    Why not `torch.autograd.backward(features, gradients)`: given tensor gradients, torch imports its
    symbolic-shapes machinery (sympy: 0.3 s and 35 MiB in the middle of a process's first tiled job)."""
    return _KnownGradient.apply(value, tuple(gradients), *features)


def style_statistics(features: torch.Tensor, kind: str) -> tuple[torch.Tensor, ...]:
    """What a style contributes to a blend at one layer: (G,) for gram, (mu, S) for w2."""
    if kind == "gram":
        return (gram(features),)
    return moments(features)


def blend_statistics(
    per_style: Sequence[tuple[torch.Tensor, ...]], weights: Sequence[float]
) -> tuple[torch.Tensor, ...]:
    total = float(sum(weights))
    return tuple(
        sum(w / total * stats[i] for w, stats in zip(weights, per_style, strict=True))  # type: ignore[misc]
        for i in range(len(per_style[0]))
    )


def style_target(statistics: tuple[torch.Tensor, ...], kind: str) -> StyleTarget:
    if kind == "gram":
        (g,) = statistics
        return GramTarget(g, g.pow(2).sum() + EPS)
    mean, second = statistics
    cov = _style_covariance(mean, second)
    return W2Target(mean, sqrtm_eigh(cov), cov.trace(), second.trace() + EPS)


def style_loss(
    targets: Mapping[str, StyleTarget], features: Mapping[str, torch.Tensor], weights: Mapping[str, float]
) -> torch.Tensor:
    """The style term: the layers' losses with weights normalised to sum 1 (as `weighted_sum`), all
    W2 layers in one call so that their eigendecompositions run side by side."""
    share = shares(weights, targets)
    w2 = [name for name, target in targets.items() if isinstance(target, W2Target)]
    terms = [target.loss(features[name]) * share[name] for name, target in targets.items() if name not in w2]
    if w2:
        w2_targets = tuple(targets[name] for name in w2)
        w2_shares = tuple(share[name] for name in w2)
        terms.append(_W2Loss.apply(w2_targets, w2_shares, *(features[name] for name in w2)))
    return sum(terms)  # type: ignore[return-value]


def shares(weights: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    """Each named layer's weight divided by their sum (all 0 when the sum is not positive)."""
    names = list(names)
    total = sum(weights[name] for name in names)
    return {name: weights[name] / total if total > 0 else 0.0 for name in names}


def weighted_sum(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """Sum of layer terms with weights normalised to sum 1."""
    total = sum(weights[name] for name in terms)
    if total <= 0:
        return sum(terms.values()) * 0.0  # type: ignore[return-value]
    return sum(terms[name] * (weights[name] / total) for name in terms)  # type: ignore[return-value]


# ---- the style term from whole-image statistics gathered piece by piece (tiling.py) ----------


@dataclass
class LayerSums:
    """Sums over the positions of one layer's features, added piece by piece: what its whole-image
    statistics (Gram, or mean and covariance) need. Taken about `shift` when one is given, for the
    covariance's precision (see `_covariance`)."""

    shift: torch.Tensor | None = None
    count: int | torch.Tensor = 0  # positions, or with weights their sum
    total: torch.Tensor | None = None  # sum of X - shift over positions (C)
    second: torch.Tensor | None = None  # (X - shift)^T (X - shift) (C x C)

    def add(self, features: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Add 1 x C x H x W features, each position counted once or (regions.py) by its weight in the
        1 x 1 x H x W `weights`: the sums of a guided Gram, or of a weighted mean and covariance."""
        x = _positions(features)
        if self.shift is not None:
            x = x - self.shift
        if weights is None:
            weighted, count = x, x.shape[0]
        else:
            w = weights.reshape(-1, 1).float()
            weighted, count = x * w, w.sum()
        total, second = weighted.sum(dim=0), weighted.T @ x
        self.count = self.count + count
        self.total = total if self.total is None else self.total + total
        self.second = second if self.second is None else self.second + second

    def statistics(self, kind: str) -> tuple[torch.Tensor, ...]:
        """`style_statistics` of the features summed: (G,) for gram, (mu, S) for w2."""
        assert self.total is not None and self.second is not None and self.shift is None
        if kind == "gram":
            return (self.second / self.count,)
        return self.total / self.count, self.second / self.count

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.total is not None and self.second is not None
        offset = self.total / self.count
        covariance = self.second / self.count - torch.outer(offset, offset)
        return offset if self.shift is None else offset + self.shift, covariance


@dataclass(frozen=True)
class FeatureGradient:
    """The style term's gradient at one layer, d loss / dX = X M + 1 v^T for the N x C features X:
    linear per position once the whole image's statistics are known, so each piece's backward pass
    starts from its own features alone."""

    matrix: torch.Tensor
    offset: torch.Tensor | None = None

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        x = _positions(features)
        grad = x @ self.matrix if self.offset is None else torch.addmm(self.offset, x, self.matrix)
        return _as_features(grad.contiguous(), features)


def sums_for(targets: Mapping[str, StyleTarget]) -> dict[str, LayerSums]:
    """Empty sums for an image's features under `targets`: W2's about the style's mean."""
    return {n: LayerSums(t.mean if isinstance(t, W2Target) else None) for n, t in targets.items()}


def style_loss_from_sums(
    targets: Mapping[str, StyleTarget], sums: Mapping[str, LayerSums], weights: Mapping[str, float]
) -> tuple[torch.Tensor, dict[str, FeatureGradient]]:
    """`style_loss` of an image whose features' sums are `sums`, and its gradient per layer: the same
    formulas as the whole-image losses (the dense W2 form: pieces are only needed for large images,
    whose deep layers have more positions than channels)."""
    share = shares(weights, targets)
    loss: torch.Tensor | None = None
    gradients: dict[str, FeatureGradient] = {}
    w2: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name, target in targets.items():
        layer = sums[name]
        assert layer.second is not None and layer.total is not None
        n = layer.count
        if isinstance(target, GramTarget):
            difference = layer.second / n - target.gram
            term = difference.pow(2).sum() / target.norm * share[name]
            gradients[name] = FeatureGradient(difference * (4 * share[name] / (n * target.norm)))
            loss = term if loss is None else loss + term
        else:
            w2.append((name, *layer.mean_and_covariance()))
    matrices = [targets[name].cov_sqrt @ cov @ targets[name].cov_sqrt for name, _, cov in w2]  # type: ignore[union-attr]
    for (name, mean, cov), matrix, decomposition in zip(w2, matrices, _eigh64_all(matrices), strict=True):
        target = targets[name]
        assert isinstance(target, W2Target)
        cross, g = _trace_sqrt_and_gradient(decomposition, matrix, True)
        assert g is not None
        distance = (mean - target.mean).pow(2).sum() + cov.trace() + target.cov_trace - 2 * cross
        term = distance * (share[name] / target.norm)
        gradients[name] = FeatureGradient(
            *_w2_dense_coefficients(target, share[name], mean, g, sums[name].count)
        )
        loss = term if loss is None else loss + term
    assert loss is not None
    return loss, gradients
