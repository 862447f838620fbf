"""Min-norm multi-objective weights (Sener & Koltun) on cases with a known solution."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from training.pareto import min_norm_weights, pareto_combine


def _brute_force(gram: np.ndarray) -> np.ndarray:
    """Exact min of w^T G w on the simplex by enumerating supports (KKT on each face); independent of FW."""
    k = gram.shape[0]
    best, best_w = np.inf, None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            sub = gram[np.ix_(support, support)]
            try:
                w_s = np.linalg.solve(sub + 1e-12 * np.eye(size), np.ones(size))
            except np.linalg.LinAlgError:
                continue
            if w_s.sum() <= 0:
                continue
            w_s = w_s / w_s.sum()
            if (w_s < -1e-12).any():
                continue
            w = np.zeros(k)
            w[list(support)] = w_s
            value = w @ gram @ w
            if value < best - 1e-15:
                best, best_w = value, w
    return best_w


def _gram(vectors) -> torch.Tensor:
    v = torch.tensor(vectors, dtype=torch.float64)
    return v @ v.T


def test_two_orthogonal_gradients_of_different_length():
    # |a (1,0) + (1-a) (0,2)|^2 = a^2 + 4 (1-a)^2 is smallest at a = 4/5.
    w = min_norm_weights(_gram([[1.0, 0.0], [0.0, 2.0]]))
    assert w.tolist() == pytest.approx([0.8, 0.2], abs=1e-9)


def test_origin_inside_the_hull_gives_zero_norm():
    w = min_norm_weights(_gram([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3], abs=1e-4)


def test_dominated_direction_takes_the_shortest_vertex():
    w = min_norm_weights(_gram([[1.0, 0.0], [2.0, 0.0], [3.0, 1.0]]))
    assert w.tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_matches_exhaustive_solution_on_random_gradients(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(4, 6)) + rng.normal(size=6)  # a shared component, as real gradients have
    gram = vectors @ vectors.T
    ours = min_norm_weights(torch.from_numpy(gram)).numpy()
    exact = _brute_force(gram)
    assert ours.sum() == pytest.approx(1.0) and (ours >= -1e-12).all()
    assert ours @ gram @ ours == pytest.approx(exact @ gram @ exact, rel=1e-6, abs=1e-10)


def test_pareto_combine_gradient_is_the_min_norm_point_and_descends_every_loss():
    torch.manual_seed(0)
    model = torch.nn.Linear(5, 1)
    params = list(model.parameters())
    x = torch.randn(12, 5)
    y = torch.randn(12, 1)
    source = torch.tensor([0] * 4 + [1] * 6 + [2] * 2)
    per_sample = ((model(x) - y * (1 + source[:, None])) ** 2).mean(1)
    losses = torch.stack([per_sample[source == k].mean() for k in range(3)])
    counts = torch.bincount(source, minlength=3)
    combined, weights = pareto_combine(losses, counts, params)
    direction = torch.cat([g.flatten() for g in torch.autograd.grad(combined, params, retain_graph=True)])
    grads = [torch.cat([g.flatten() for g in torch.autograd.grad(losses[k], params, retain_graph=True)])
             for k in range(3)]
    gram = torch.stack(grads).double() @ torch.stack(grads).double().T
    expected = _brute_force(gram.numpy())
    assert weights.numpy() == pytest.approx(expected, abs=1e-5)
    assert torch.allclose(direction.double(), sum(w * g.double() for w, g in zip(expected, grads)), atol=1e-5)
    for g in grads:  # first-order descent for every source: <d, g_k> >= |d|^2 >= 0
        assert direction @ g >= direction @ direction - 1e-5


def test_absent_source_gets_zero_weight():
    model = torch.nn.Linear(3, 1)
    x = torch.randn(4, 3)
    losses = torch.stack([model(x).pow(2).mean(), torch.zeros(()), (model(x) - 1).pow(2).mean()])
    _, weights = pareto_combine(losses, torch.tensor([2, 0, 2]), list(model.parameters()))
    assert weights[1] == 0 and weights.sum().item() == pytest.approx(1.0)
