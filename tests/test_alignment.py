"""The one least-squares scale-and-shift alignment (pipeline/alignment.py) that the ssimse loss and the zero-shot
evaluation share: exact recovery, a hand computation, and the one rule for degenerate images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluation.metrics import align_scale_shift, apply_scale_shift
from pipeline.alignment import solve_scale_shift
from training.losses import ScaleAndShiftInvariantLoss, align_least_squares

def test_known_scale_and_shift_recovered_exactly_numpy_and_torch():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.1, 5.0, size=(3, 7, 9))
    scales, shifts = np.array([2.5, 0.01, 40.0]), np.array([-0.3, 1.7, 0.0])
    target = scales[:, None, None] * pred + shifts[:, None, None]
    mask = rng.uniform(size=pred.shape) > 0.3
    target[~mask] = np.nan  # invalid pixels may hold garbage: they must not leak into the fit
    s, t = align_scale_shift(pred, target, mask)
    np.testing.assert_allclose(s, scales, rtol=1e-10)
    np.testing.assert_allclose(t, shifts, atol=1e-10)
    st, tt = align_scale_shift(torch.tensor(pred, dtype=torch.float32), torch.tensor(target), torch.tensor(mask))
    assert isinstance(st, torch.Tensor) and st.shape == (3,)
    np.testing.assert_allclose(st.numpy(), scales, rtol=1e-5)
    np.testing.assert_allclose(tt.numpy(), shifts, atol=1e-5)


def test_alignment_is_least_squares_by_hand():
    # pred [0, 1, 2], target [1, 2, 4]: normal equations [[5, 3], [3, 3]] [s, t] = [10, 7] -> s=1.5, t=5/6
    s, t = align_scale_shift(np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 2.0, 4.0]]), np.ones((1, 3), bool))
    assert s == pytest.approx(1.5) and t == pytest.approx(5 / 6)


def test_alignment_singular_and_empty_images():
    pred = np.full((2, 2, 2), 3.0)
    target = np.array([[[1.0, 2.0], [3.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    mask = np.array([np.ones((2, 2), bool), np.zeros((2, 2), bool)])
    s, t = align_scale_shift(pred, target, mask)
    assert s[0] == 0 and t[0] == pytest.approx(2.5)  # constant prediction: best constant = mean target
    assert s[1] == 0 and t[1] == 0


def _degenerate_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 [6, 9, 11]: a regular image, then no valid pixel, one valid pixel, a constant prediction, a constant
    target, and a prediction of tiny scale (values about 1e-4: variance far below an absolute threshold like 1e-6)."""
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 9, 11, generator=g, dtype=torch.float64) + 0.5
    target = torch.rand(6, 9, 11, generator=g, dtype=torch.float64) * 2 + 0.1
    mask = torch.rand(6, 9, 11, generator=g) < 0.7
    mask[1] = False
    mask[2] = False
    mask[2, 4, 5] = True
    pred[3] = 1.5
    target[4] = 0.7
    pred[5] = 1e-4 * pred[5]
    target[5] = 2e4 * pred[5] + 0.5
    return pred, target, mask


def test_degenerate_images_one_rule():
    pred, target, mask = _degenerate_batch()
    s, t = align_scale_shift(pred, target, mask)
    assert s[1] == 0 and t[1] == 0  # no valid pixel
    assert s[2] == 0 and t[2] == target[2, 4, 5]  # one valid pixel: the best constant is its value
    assert s[3] == 0 and t[3] == pytest.approx(target[3][mask[3]].mean().item(), rel=1e-12)  # constant prediction
    assert abs(s[4]) < 1e-12 and t[4] == pytest.approx(0.7, rel=1e-12)  # constant target: not singular, s = 0
    # tiny scale: still an exact fit, however small the prediction's own scale (the test is relative)
    assert s[5] == pytest.approx(2e4, rel=1e-9) and t[5] == pytest.approx(0.5, rel=1e-9)


def test_loss_and_evaluation_align_alike():
    """The ssimse loss's aligned prediction is the evaluation's (scale, shift) applied, degenerate images included."""
    pred, target, mask = _degenerate_batch()
    aligned = align_least_squares(pred, target, mask)
    torch.testing.assert_close(aligned, apply_scale_shift(pred, *align_scale_shift(pred, target, mask)), rtol=1e-12,
                               atol=1e-12)


def test_ssimse_is_invariant_to_a_tiny_prediction_scale():
    """A prediction scaled by 1e-4 has a spread far below any absolute threshold; the loss must not call it constant."""
    g = torch.Generator().manual_seed(1)
    pred = torch.rand(2, 17, 23, generator=g, dtype=torch.float64) * 2
    target = torch.rand(2, 17, 23, generator=g, dtype=torch.float64) * 3 + 0.1
    mask = torch.rand(2, 17, 23, generator=g) < 0.7
    loss = ScaleAndShiftInvariantLoss("ssimse")
    assert loss(1e-4 * pred, target, mask).item() == pytest.approx(loss(pred, target, mask).item(), rel=1e-6)


@pytest.mark.parametrize("value", [0.1, 0.3, 0.7, 1.5, 3.3])
def test_a_constant_float32_prediction_is_singular_at_full_size(value):
    """Sums in float64: in float32 the determinant of a 480 x 640 constant image is rounding noise of either sign."""
    pred = torch.full((1, 480, 640), value, dtype=torch.float32)
    target = torch.rand(1, 480, 640, generator=torch.Generator().manual_seed(2))
    s, t = solve_scale_shift(pred, target, torch.ones_like(pred, dtype=torch.bool))
    assert s.item() == 0 and t.item() == pytest.approx(target.double().mean().item(), rel=1e-12)


def test_gradient_flows_through_scale_and_shift_but_not_from_degenerate_images():
    pred, target, mask = _degenerate_batch()
    pred = pred.float().requires_grad_(True)
    aligned = align_least_squares(pred, target.float(), mask)
    assert aligned.dtype == torch.float32  # the prediction's dtype, though the sums are float64
    ((aligned - target.float()) ** 2 * mask).sum().backward()
    grad = pred.grad
    assert torch.isfinite(grad).all()
    assert grad[0].abs().sum() > 0
    assert grad[1].abs().sum() == 0 and grad[2].abs().sum() == 0 and grad[3].abs().sum() == 0  # s = 0: no gradient
