"""The scale- and shift-invariant loss: its defining properties and an independent numpy evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.losses import ScaleAndShiftInvariantLoss, masked_median

KINDS = ("ssitrim", "ssimse")


def _batch(seed: int, b: int = 3, h: int = 17, w: int = 23, valid: float = 0.7):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, h, w, generator=g, dtype=torch.float64) * 3 + 0.1
    prediction = torch.rand(b, h, w, generator=g, dtype=torch.float64) * 2
    mask = torch.rand(b, h, w, generator=g) < valid
    return prediction, target, mask


# --------------------------------------------------------------------------- numpy reference, written from the paper


def _np_normalise(x: np.ndarray) -> np.ndarray:
    t = np.median(x)
    s = np.mean(np.abs(x - t))
    return (x - t) / max(s, 1e-6)


def _np_gradient_term(residual: np.ndarray, mask: np.ndarray, scales: int) -> float:
    """residual, mask [B, H, W]; loops over pixels so that it shares no vectorised code with the module."""
    total = 0.0
    for k in range(scales):
        step = 2**k
        r, m = residual[:, ::step, ::step], mask[:, ::step, ::step]
        grad = 0.0
        for b in range(r.shape[0]):
            for y in range(r.shape[1]):
                for x in range(r.shape[2]):
                    if x + 1 < r.shape[2] and m[b, y, x] and m[b, y, x + 1]:
                        grad += abs(r[b, y, x + 1] - r[b, y, x])
                    if y + 1 < r.shape[1] and m[b, y, x] and m[b, y + 1, x]:
                        grad += abs(r[b, y + 1, x] - r[b, y, x])
        if m.sum():
            total += grad / m.sum()
    return total


def _np_loss(prediction, target, mask, kind: str, alpha: float, scales: int) -> float:
    data_sum, residual = 0.0, np.zeros_like(prediction)
    for b in range(prediction.shape[0]):
        valid = mask[b]
        p, t = prediction[b][valid], target[b][valid]
        if p.size == 0:
            continue
        if kind == "ssitrim":
            r = _np_normalise(p) - _np_normalise(t)
            kept = np.sort(np.abs(r))[: p.size - int(np.floor(0.2 * p.size))]
            data_sum += kept.sum()
        else:
            design = np.stack([p, np.ones_like(p)], axis=1)
            (s, shift), *_ = np.linalg.lstsq(design, t, rcond=None)
            r = s * p + shift - t
            data_sum += (r**2).sum()
        residual[b][valid] = r
    data = data_sum / (2 * mask.sum()) if mask.sum() else 0.0
    return data + alpha * _np_gradient_term(residual, mask, scales)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_direct_numpy_evaluation(kind, seed):
    prediction, target, mask = _batch(seed)
    alpha, scales = 0.5, 3
    ours = ScaleAndShiftInvariantLoss(kind, alpha, scales)(prediction, target, mask).item()
    reference = _np_loss(prediction.numpy(), target.numpy(), mask.numpy(), kind, alpha, scales)
    assert ours == pytest.approx(reference, rel=1e-9, abs=1e-12)
    assert ours > 0.1  # random inputs are far from each other: the comparison is not 0 == 0


@pytest.mark.parametrize("kind", KINDS)
def test_zero_for_positive_affine_transform_of_target(kind):
    _, target, mask = _batch(3)
    loss = ScaleAndShiftInvariantLoss(kind)
    assert loss(2.7 * target + 0.4, target, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert loss(0.01 * target - 5.0, target, mask).item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("kind", KINDS)
def test_invariant_to_scale_and_shift_of_prediction(kind):
    prediction, target, mask = _batch(4)
    loss = ScaleAndShiftInvariantLoss(kind)
    base = loss(prediction, target, mask).item()
    for scale, shift in [(3.0, 0.0), (0.2, -7.0), (11.0, 100.0)]:
        assert loss(scale * prediction + shift, target, mask).item() == pytest.approx(base, rel=1e-9)


def test_ssitrim_is_not_flip_invariant():
    """A negative scale is not an allowed transform: inverted disparity must be penalised."""
    _, target, mask = _batch(5)
    assert ScaleAndShiftInvariantLoss("ssitrim")(-target, target, mask).item() > 0.5


@pytest.mark.parametrize("kind", KINDS)
def test_unchanged_by_values_under_the_mask(kind):
    prediction, target, mask = _batch(6)
    loss = ScaleAndShiftInvariantLoss(kind)
    base = loss(prediction, target, mask).item()
    noise = torch.randn_like(prediction) * 1e3
    changed = loss(torch.where(mask, prediction, noise), torch.where(mask, target, -noise), mask).item()
    assert changed == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_finite_gradients_with_empty_and_degenerate_images(kind):
    prediction, target, mask = _batch(7, b=4)
    mask[1] = False  # no valid pixel
    prediction[2] = 1.5  # a constant prediction
    mask[3] = False
    mask[3, 4, 5] = True  # a single valid pixel
    prediction = prediction.float().requires_grad_(True)
    value = ScaleAndShiftInvariantLoss(kind)(prediction, target.float(), mask)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(prediction.grad).all()
    assert prediction.grad[1].abs().sum() == 0  # the empty image contributes nothing
    assert prediction.grad[0].abs().sum() > 0


@pytest.mark.parametrize("kind", KINDS)
def test_empty_mask_gives_zero_not_nan(kind):
    prediction, target, mask = _batch(8)
    value = ScaleAndShiftInvariantLoss(kind)(prediction, target, torch.zeros_like(mask))
    assert value.item() == 0.0


def test_empty_image_contributes_nothing_to_the_batch():
    prediction, target, mask = _batch(9, b=2)
    loss = ScaleAndShiftInvariantLoss("ssimse")
    alone = loss(prediction[:1], target[:1], mask[:1]).item()
    mask[1] = False
    assert loss(prediction, target, mask).item() == pytest.approx(alone, rel=1e-12)


def test_accepts_channel_dimension_and_checks_inputs():
    prediction, target, mask = _batch(10)
    loss = ScaleAndShiftInvariantLoss()
    flat = loss(prediction, target, mask)
    assert loss(prediction[:, None], target[:, None], mask[:, None]) == flat
    with pytest.raises(TypeError, match="bool"):
        loss(prediction, target, mask.float())
    with pytest.raises(ValueError, match="shapes differ"):
        loss(prediction, target[:, :-1], mask)
    with pytest.raises(ValueError, match="ssitrim"):
        ScaleAndShiftInvariantLoss(kind="l1")


def test_gradient_term_weight_and_trimming():
    prediction, target, mask = _batch(11)
    terms = ScaleAndShiftInvariantLoss("ssitrim", alpha=0.5).terms(prediction, target, mask)
    assert terms["loss"].item() == pytest.approx(terms["data"].item() + 0.5 * terms["grad"].item())
    # Trimming: an outlier on 10% of the pixels does not move the trimmed loss much ...
    outliers = torch.rand(target.shape, generator=torch.Generator().manual_seed(0)) < 0.1
    spiked = torch.where(outliers, target * 1e4, target)
    data = ScaleAndShiftInvariantLoss("ssitrim", alpha=0.0)
    assert data(target, spiked, mask).item() < 0.5
    # ... while the untrimmed least-squares form is dominated by it.
    assert ScaleAndShiftInvariantLoss("ssimse", alpha=0.0)(target, spiked, mask).item() > 1e3


def test_masked_median_matches_numpy_for_even_and_odd_counts():
    x = torch.tensor([[5.0, 1.0, 3.0, 9.0, 7.0], [4.0, 2.0, 8.0, 6.0, 100.0]])
    mask = torch.tensor([[True] * 5, [True, True, True, True, False]])
    assert masked_median(x, mask).tolist() == [5.0, 5.0]
