"""The metric depth metrics (pipeline.depth_metrics, DPT Tables 2 and 3) against a direct numpy evaluation of their
formulas, for arrays and tensors, one image and a batch; their additive form across workers; bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline.depth_metrics import DEPTH_METRICS, depth_metric_sums, depth_metrics, depth_metrics_from_sums
from tests.helpers.depth_reference import reference


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    gt = rng.uniform(0.5, 10.0, size=(4, 12, 16))
    pred = gt * np.exp(rng.normal(0.0, 0.25, size=gt.shape))  # spreads the ratios across 1.25, 1.25^2, 1.25^3
    mask = rng.uniform(size=gt.shape) > 0.4
    mask[3, :, :8] = False  # images with different numbers of valid pixels
    gt[~mask] = np.nan  # garbage outside the mask must not leak
    pred[~mask] = -1.0
    return pred, gt, mask


def test_depth_metrics_match_the_formulas_for_arrays_tensors_one_image_and_a_batch(batch):
    pred, gt, mask = batch
    expected = reference(pred, gt, mask)
    assert 0 < expected["d1"] < expected["d2"] < expected["d3"] < 1  # the thresholds are all exercised
    for args in ((pred, gt, mask), tuple(torch.tensor(a) for a in (pred, gt, mask)),
                 (pred.astype(np.float32), gt.astype(np.float32), mask)):
        got = depth_metrics(*args)
        assert list(got) == list(DEPTH_METRICS)
        rtol = 1e-10 if args[0].dtype in (np.float64, torch.float64) else 1e-5
        for name in DEPTH_METRICS:
            assert got[name] == pytest.approx(expected[name], rel=rtol), name
    single = depth_metrics(pred[1], gt[1], mask[1])
    assert single == pytest.approx(reference(pred[1:2], gt[1:2], mask[1:2]), rel=1e-10)


def test_depth_metrics_by_hand():
    gt = np.array([[1.0, 2.0], [4.0, 8.0]])
    got = depth_metrics(1.5 * gt, gt, np.ones_like(gt, bool))  # every ratio 1.5: between 1.25 and 1.25^2
    assert (got["d1"], got["d2"], got["d3"]) == (0.0, 1.0, 1.0)
    assert got["abs_rel"] == pytest.approx(0.5)
    assert got["sq_rel"] == pytest.approx(0.25 * gt.mean())
    assert got["rmse"] == pytest.approx(0.5 * math.sqrt((gt ** 2).mean()))
    assert got["rmse_log"] == pytest.approx(math.log(1.5)) and got["log10"] == pytest.approx(math.log10(1.5))
    assert got["silog"] == pytest.approx(0.0, abs=1e-6)  # a global scale error is invisible to SILog


def test_sums_add_up_across_workers_and_average_per_image_not_per_pixel(batch):
    pred, gt, mask = batch
    a, b = depth_metric_sums(pred[:1], gt[:1], mask[:1]), depth_metric_sums(pred[1:], gt[1:], mask[1:])
    whole = depth_metric_sums(pred, gt, mask)
    assert set(whole) == {*DEPTH_METRICS, "images", "skipped"} and float(whole["images"]) == 4
    combined = {k: a[k] + b[k] for k in whole}
    for name in whole:
        assert float(combined[name]) == pytest.approx(float(whole[name]), rel=1e-12), name
    assert depth_metrics_from_sums(combined) == pytest.approx(depth_metrics(pred, gt, mask), rel=1e-12)
    # one valid pixel with AbsRel 1 and three with 0: per image (1 + 0) / 2, not pooled 1 / 4
    gt2 = np.ones((2, 2, 2))
    pred2 = np.ones((2, 2, 2))
    pred2[0, 0, 0] = 2.0
    mask2 = np.array([[[True, False], [False, False]], [[True, True], [True, False]]])
    assert depth_metrics(pred2, gt2, mask2)["abs_rel"] == pytest.approx(0.5)


def test_images_without_valid_pixels_are_skipped_and_bad_inputs_named():
    gt, pred = np.full((2, 3, 3), 2.0), np.full((2, 3, 3), 2.5)
    mask = np.zeros((2, 3, 3), bool)
    mask[1, 1, 1] = True
    sums = depth_metric_sums(pred, gt, mask)
    assert (float(sums["images"]), float(sums["skipped"])) == (1.0, 1.0)
    assert depth_metrics(pred, gt, mask)["abs_rel"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no image with a valid pixel"):
        depth_metrics(pred, gt, np.zeros_like(mask))
    bad = pred.copy()
    bad[1, 1, 1] = 0.0
    with pytest.raises(ValueError, match="predicted depth must be finite and > 0"):
        depth_metrics(bad, gt, mask)
    with pytest.raises(ValueError, match="ground-truth depth must be finite and > 0"):
        depth_metrics(pred, -gt, mask)
    with pytest.raises(ValueError, match="shapes differ"):
        depth_metrics(pred[:, :2], gt, mask)


def test_one_definition_shared_by_evaluation_and_training():
    from evaluation import metrics
    from training.tasks import metric_depth

    assert (metrics.depth_metrics, metrics.depth_metric_sums, metrics.DEPTH_METRICS) == (
        depth_metrics, depth_metric_sums, DEPTH_METRICS)  # re-exported by its public name, not copied
    assert metric_depth.depth_metric_sums is depth_metric_sums
