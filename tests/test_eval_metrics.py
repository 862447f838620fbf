"""Metrics and the per-image protocol against hand computations on small arrays (alignment: test_alignment.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation import metrics
from evaluation.metrics import abs_rel, cap_and_invert, delta_error, whdr
from evaluation.protocol import PROTOCOLS, BenchmarkProtocol, MetricSums, evaluate_dense, evaluate_pairs, valid_mask


def test_abs_rel_by_hand():
    pred = np.array([[1.0, 3.0], [5.0, 100.0]])
    gt = np.array([[2.0, 2.0], [4.0, -1.0]])
    mask = np.array([[True, True], [True, False]])
    # |1-2|/2 = 0.5, |3-2|/2 = 0.5, |5-4|/4 = 0.25 -> mean 1.25 / 3
    assert abs_rel(pred, gt, mask) == pytest.approx(1.25 / 3)
    assert abs_rel(torch.tensor(pred), torch.tensor(gt), torch.tensor(mask)) == pytest.approx(1.25 / 3)


def test_delta_error_by_hand_is_a_percentage_of_errors():
    gt = np.array([1.0, 1.0, 1.0, 1.0, 2.0])
    pred = np.array([1.2, 1.3, 0.7, 1.25, 0.0])
    mask = np.array([True, True, True, True, False])
    # ratios 1.2 (ok), 1.3 (bad), 1/0.7=1.43 (bad), 1.25 (ok: not > 1.25) -> 2 of 4
    assert delta_error(pred, gt, mask) == pytest.approx(50.0)
    assert delta_error(pred, gt, mask, threshold=1.5) == pytest.approx(0.0)
    mask[4] = True  # a zero predicted depth is always an error
    assert delta_error(pred, gt, mask) == pytest.approx(60.0)


def test_metrics_reject_empty_masks_and_bad_ground_truth():
    with pytest.raises(ValueError, match="no valid pixels"):
        abs_rel(np.ones(3), np.ones(3), np.zeros(3, bool))
    with pytest.raises(ValueError, match="> 0"):
        delta_error(np.ones(2), np.array([1.0, 0.0]), np.ones(2, bool))


def test_whdr_by_hand():
    disp = np.array([[1.0, 2.0], [3.0, 3.0]])
    pairs = np.array([
        [0, 1, 0, 0, +1],  # disp 2 vs 1: point 1 closer -> agrees
        [0, 0, 1, 0, +1],  # 1 vs 3: predicted farther -> disagrees
        [1, 0, 0, 0, -1],  # 3 vs 1: predicted closer, annotated farther -> disagrees
        [1, 0, 1, 1, +1],  # tie -> disagrees
    ])
    assert whdr(disp, pairs) == pytest.approx(75.0)
    assert whdr(7.0 * disp, pairs) == pytest.approx(75.0)  # invariant to a positive scale
    with pytest.raises(ValueError, match="outside"):
        whdr(disp, np.array([[2, 0, 0, 0, 1]]))
    with pytest.raises(ValueError, match="relation"):
        whdr(disp, np.array([[0, 0, 0, 1, 0]]))


def test_cap_and_invert():
    depth = cap_and_invert(np.array([2.0, 0.05, 0.0, -1.0]), max_depth=10.0)
    np.testing.assert_allclose(depth, [0.5, 10.0, 10.0, 10.0])
    uncapped = cap_and_invert(np.array([0.5, -1.0]), None)
    assert uncapped[0] == 2.0 and math.isinf(uncapped[1])


def test_metrics_module_exports_public_names():
    for name in ("align_scale_shift", "abs_rel", "delta_error", "whdr"):
        assert callable(getattr(metrics, name))


def _protocol(**kw) -> BenchmarkProtocol:
    base = dict(name="t", title="T", metric="abs_rel", split="x", expected_images=1)
    return BenchmarkProtocol(**{**base, **kw})


def test_evaluate_dense_recovers_affine_disparity_exactly():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 8.0, size=(6, 5))
    pred = 3.0 * (1.0 / gt) - 0.02  # a perfect prediction up to scale and shift
    result = evaluate_dense(pred, gt, np.ones_like(gt, bool), _protocol(max_depth=10.0))
    assert result.value == pytest.approx(0.0, abs=1e-12)
    assert result.scale == pytest.approx(1 / 3) and result.shift == pytest.approx(0.02 / 3)


def test_evaluate_dense_honours_cap_invalid_pixels_range_and_crop():
    gt = np.array([[1.0, 2.0, 25.0], [np.nan, 4.0, 0.0]])
    valid = np.array([[True, True, True], [True, True, False]])
    pred = 1.0 / np.where(np.isfinite(gt) & (gt > 0), gt, 1.0)
    pred[0, 2] = 1.0 / 100.0  # predicted 100 m: capped to 20 m, within 1.25 of the true 25 m
    pred[1, 2] = 1e6  # an invalid pixel holding a wild value changes nothing
    capped = _protocol(metric="delta_error", max_depth=20.0, align="none")
    assert evaluate_dense(pred, gt, valid, capped).value == pytest.approx(0.0)
    uncapped = _protocol(metric="delta_error", max_depth=None, align="none")
    assert evaluate_dense(pred, gt, valid, uncapped).value == pytest.approx(25.0)  # 100 vs 25 m: 1 of 4
    ranged = _protocol(metric="delta_error", align="none", max_valid_depth=10.0)
    result = evaluate_dense(pred, gt, valid, ranged)
    assert result.valid_pixels == 3 and result.value == pytest.approx(0.0)  # 25 m leaves the mask
    cropped = _protocol(metric="abs_rel", align="none", crop=(0, 0.5, 0, 2 / 3))
    result = evaluate_dense(pred, gt, valid, cropped)
    assert result.valid_pixels == 2 and result.value == pytest.approx(0.0)
    empty = evaluate_dense(pred, gt, np.zeros_like(valid), capped)
    assert math.isnan(empty.value) and empty.reason


def test_evaluate_dense_rejects_size_mismatch():
    with pytest.raises(ValueError, match="differ in size"):
        evaluate_dense(np.ones((2, 3)), np.ones((3, 2)), np.ones((3, 2), bool), _protocol())


def test_metric_sums_reduce_by_sums_not_means():
    a, b = MetricSums(), MetricSums()
    a.add(10.0, 1.0)
    b.add(0.0, 3.0)  # e.g. WHDR over 3 pairs
    b.skipped += 1
    total = a + b
    assert total.value == pytest.approx(10.0 / 4)  # not the mean of the two means (5.0)
    assert total.images == 2 and total.skipped == 1
    assert evaluate_pairs(np.array([[1.0, 2.0]]), np.array([[0, 1, 0, 0, 1]])).weight == 1.0


def test_protocol_table_matches_the_issue():
    assert {p.name: (p.metric, p.max_depth, p.expected_images) for p in PROTOCOLS.values()} == {
        "diw": ("whdr", None, 74441), "eth3d": ("abs_rel", 72.0, 454), "sintel": ("abs_rel", 72.0, 1064),
        "kitti": ("delta_error", 80.0, 161), "nyu": ("delta_error", 10.0, 654), "tum": ("delta_error", 10.0, 1815),
    }
    assert len({p.metric_key for p in PROTOCOLS.values()}) == 6
    nyu = np.ones((480, 640), bool)
    kept = valid_mask(np.ones((480, 640)), nyu, PROTOCOLS["nyu"])
    assert kept.sum() == (471 - 45) * (601 - 41) and kept[45, 41] and not kept[44, 41] and not kept[45, 601]
