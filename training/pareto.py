"""Multi-objective optimisation of the per-source losses (Sener & Koltun, NeurIPS 2018), as MiDaS used it.

Each training step has one loss per source present in the batch. Instead of their plain mean, the update
follows the min-norm point of the convex hull of the per-source gradients on the shared parameters:

    alpha* = argmin_{alpha in simplex} || sum_k alpha_k g_k ||^2

which is a direction that does not increase any source's loss to first order (a Pareto-stationary point
has alpha* with zero norm). The problem only needs the Gram matrix ``G_ij = <g_i, g_j>``; it is solved by
Frank-Wolfe with exact line search (Sener & Koltun, Algorithm 2), starting from the best pair (solved in
closed form, their Algorithm 1).

:func:`pareto_combine` does it for one training step: per-source gradients by ``torch.autograd.grad``
(no ``.grad`` is touched, so DDP's hooks stay quiet), averaged across DDP ranks weighted by each rank's
sample count per source, so that every rank solves the same problem and gets the same weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _min_norm_pair(g11: float, g12: float, g22: float) -> tuple[float, float]:
    """argmin_{a in [0,1]} |a v1 + (1-a) v2|^2 -> (a, value), from the Gram entries (Algorithm 1)."""
    if g12 >= g11:
        return 1.0, g11
    if g12 >= g22:
        return 0.0, g22
    a = (g22 - g12) / (g11 + g22 - 2 * g12)
    return a, a * a * g11 + 2 * a * (1 - a) * g12 + (1 - a) * (1 - a) * g22


def min_norm_weights(gram: torch.Tensor, iterations: int = 250, tolerance: float = 1e-10) -> torch.Tensor:
    """Weights ``[K]`` on the simplex minimising ``w^T G w`` for a Gram matrix ``G [K, K]`` (float64 inside)."""
    gram = gram.detach().to(torch.float64).cpu()
    k = gram.shape[0]
    if gram.shape != (k, k) or k == 0:
        raise ValueError(f"gram must be a non-empty square matrix, got {list(gram.shape)}")
    if k == 1:
        return torch.ones(1, dtype=torch.float64)
    # Start from the best pair's closed-form solution.
    best = None
    for i in range(k):
        for j in range(i + 1, k):
            a, value = _min_norm_pair(gram[i, i].item(), gram[i, j].item(), gram[j, j].item())
            if best is None or value < best[0]:
                best = (value, i, j, a)
    _, i, j, a = best
    weights = torch.zeros(k, dtype=torch.float64)
    weights[i], weights[j] = a, 1 - a
    for _ in range(iterations):
        # Frank-Wolfe: the vertex that most decreases the objective, then exact line search towards it.
        t = int(torch.argmin(gram @ weights))
        v1v1 = weights @ gram @ weights
        v1v2 = weights @ gram[:, t]
        v2v2 = gram[t, t]
        gamma, _ = _min_norm_pair(v1v1.item(), v1v2.item(), v2v2.item())
        new = gamma * weights
        new[t] += 1 - gamma
        if (new - weights).abs().sum() < tolerance:
            weights = new
            break
        weights = new
    return weights


def _flat_grad(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def pareto_combine(
    losses: torch.Tensor, counts: torch.Tensor, params: list[torch.nn.Parameter]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine per-source losses of one step into the loss to back-propagate, with min-norm weights.

    losses: ``[K]`` this rank's loss per source (0 for a source with no sample here); counts: ``[K]`` this
    rank's sample count per source; params: the shared parameters. Returns ``(loss, weights [K])``.

    The global per-source gradient is ``g_k = sum_r n_kr g_kr / N_k``. DDP averages the gradient of the
    returned loss over R ranks, so each rank weights its source-k loss by ``alpha_k R n_kr / N_k``.
    """
    k = losses.shape[0]
    numel = sum(p.numel() for p in params)
    # Each rank's gradient sum for source k (count-weighted mean); a source absent here contributes 0.
    grads = torch.stack([
        _flat_grad(losses[i], params) * counts[i] if counts[i] > 0 else params[0].new_zeros(numel)
        for i in range(k)
    ])
    totals = counts.to(grads.device, torch.float64)
    world = 1
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        dist.all_reduce(grads)
        dist.all_reduce(totals)
    totals = totals.cpu()
    idx = torch.nonzero(totals > 0).flatten()
    g = grads[idx.to(grads.device)].double() / totals[idx].to(grads.device)[:, None]
    weights = torch.zeros(k, dtype=torch.float64)
    weights[idx] = min_norm_weights(g @ g.T)
    scale = weights * world * counts.cpu().double() / totals.clamp(min=1)
    return (scale.to(losses.device, losses.dtype) * losses).sum(), weights
