"""Metric depth (DPT Tables 2 and 3): the metrics against a direct numpy evaluation of their formulas, their
additive form, and the protocols' crops, depth ranges, clipping and median scaling on hand-made arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.compare import METRIC_PAPER_ROWS
from evaluation.crops import EIGEN_NYU_CROP, GARG_CROP, kb_crop_box, paste
from evaluation.metric_protocol import (METRIC_PROTOCOLS, clip_prediction, evaluate_metric_depth,
                                        get_metric_protocol, metric_valid_mask)
from evaluation.metrics import DEPTH_METRICS, depth_metric_sums, depth_metrics, depth_metrics_from_sums
from evaluation.protocol import PROTOCOLS, valid_mask


def reference(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Each image's metrics from the formulas on its valid pixels, averaged over the images that have one."""
    rows = []
    for p, g, m in zip(pred.reshape(-1, *pred.shape[-2:]), gt.reshape(-1, *gt.shape[-2:]),
                       mask.reshape(-1, *mask.shape[-2:])):
        if not m.any():
            continue
        p, g = p[m].astype(np.float64), g[m].astype(np.float64)
        ratio = np.maximum(p / g, g / p)
        e = np.log(p) - np.log(g)
        rows.append({
            "d1": np.mean(ratio < 1.25), "d2": np.mean(ratio < 1.25 ** 2), "d3": np.mean(ratio < 1.25 ** 3),
            "abs_rel": np.mean(np.abs(g - p) / g), "sq_rel": np.mean((g - p) ** 2 / g),
            "rmse": np.sqrt(np.mean((g - p) ** 2)), "rmse_log": np.sqrt(np.mean(e ** 2)),
            "log10": np.mean(np.abs(np.log10(p) - np.log10(g))),
            "silog": 100 * np.sqrt(np.mean(e ** 2) - np.mean(e) ** 2),
        })
    return {k: float(np.mean([r[k] for r in rows])) for k in DEPTH_METRICS}


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


# --------------------------------------------------------------------------- crops


def test_eigen_crop_is_btss_pixels_on_nyu_frames_and_the_zero_shot_nyu_protocol_uses_it():
    assert EIGEN_NYU_CROP.box(480, 640) == (45, 471, 41, 601)  # BTS eval_mask[45:471, 41:601]
    inside = EIGEN_NYU_CROP.mask(480, 640)
    assert inside.sum() == 426 * 560 and inside[45, 41] and not inside[44, 41] and not inside[45, 601]
    every = np.ones((480, 640), bool)
    np.testing.assert_array_equal(valid_mask(np.full((480, 640), 5.0), every, PROTOCOLS["nyu"]), inside)


def test_garg_crop_truncates_like_bts_and_lies_inside_the_kitti_benchmark_crop():
    # 0.40810811 * 375 = 153.04, 0.99189189 * 375 = 371.96, 0.03594771 * 1242 = 44.65, 0.96405229 * 1242 = 1197.35
    assert GARG_CROP.box(375, 1242) == (153, 371, 44, 1197)  # int(): 371 and 44, where round() gives 372 and 45
    assert kb_crop_box(375, 1242) == (23, 375, 13, 1229)
    for height, width in ((370, 1224), (374, 1238), (375, 1242), (376, 1241)):  # KITTI raw frame sizes
        top, bottom, left, right = kb_crop_box(height, width)
        assert (bottom - top, right - left) == (352, 1216)
        garg = GARG_CROP.box(height, width)
        assert top <= garg[0] and garg[1] <= bottom and left <= garg[2] and garg[3] <= right
    with pytest.raises(ValueError, match="smaller than 352x1216"):
        kb_crop_box(350, 1242)
    pasted = paste(np.full((352, 1216), 7.0), kb_crop_box(375, 1242), (375, 1242))
    assert pasted[23:, 13:1229].min() == 7.0 and pasted.sum() == 7.0 * 352 * 1216


# --------------------------------------------------------------------------- protocols


def test_protocols_as_data():
    nyu, kitti = METRIC_PROTOCOLS["nyu_metric"], METRIC_PROTOCOLS["kitti_metric"]
    assert (nyu.expected_images, nyu.min_depth, nyu.max_depth, nyu.crop, nyu.input_crop, nyu.align) == (
        654, 1e-3, 10.0, EIGEN_NYU_CROP, None, "none")
    assert (kitti.min_depth, kitti.max_depth, kitti.crop, kitti.input_crop, kitti.align) == (
        1e-3, 80.0, GARG_CROP, "kb", "none")
    assert nyu.metric_key("abs_rel") == "metric_depth/nyu_metric_abs_rel"
    median = get_metric_protocol("kitti_metric", align="median")
    assert median.align == "median" and median.metric_key("rmse") == "metric_depth/kitti_metric_median_rmse"
    with pytest.raises(ValueError, match="unknown metric depth benchmark 'nyu2'"):
        get_metric_protocol("nyu2")
    with pytest.raises(ValueError, match="align must be one of"):
        get_metric_protocol("nyu_metric", align="least_squares")


def test_depth_range_is_open_on_both_sides_and_the_crop_applies():
    protocol = METRIC_PROTOCOLS["nyu_metric"]
    gt = np.full((480, 640), 5.0)
    cases = {(100, 100): 1e-3, (100, 101): 0.0011, (100, 102): 10.0, (100, 103): 9.999, (100, 104): np.nan,
             (100, 105): 0.0}
    for (y, x), depth in cases.items():
        gt[y, x] = depth
    valid = np.ones_like(gt, bool)
    valid[200, 200] = False  # the reader's own mask
    mask = metric_valid_mask(gt, valid, protocol)
    assert [bool(mask[yx]) for yx in cases] == [False, True, False, True, False, False]
    assert not mask[200, 200] and not mask[44, 300] and not mask[300, 601] and mask[45, 41]
    assert mask.sum() == 426 * 560 - 5


def test_prediction_is_clipped_to_the_range():
    kitti = METRIC_PROTOCOLS["kitti_metric"]
    np.testing.assert_array_equal(clip_prediction(np.array([0.0, 1e-4, 5.0, 200.0, np.inf]), kitti),
                                  [1e-3, 1e-3, 5.0, 80.0, 80.0])


def test_evaluate_one_kitti_frame_by_hand():
    protocol = METRIC_PROTOCOLS["kitti_metric"]
    gt = np.zeros((375, 1242))  # 0 = no lidar point
    valid = np.zeros_like(gt, bool)
    gt[200, 100], gt[300, 600], gt[50, 600], gt[250, 1220] = 70.0, 10.0, 20.0, 30.0  # last two outside Garg
    valid[gt > 0] = True
    pred = np.full_like(gt, np.nan)  # nowhere scored but at the two pixels in the crop
    pred[200, 100], pred[300, 600] = 200.0, 11.0  # 200 m is clipped to 80 m
    sums, scale = evaluate_metric_depth(pred, gt, valid, protocol)
    assert scale == 1.0 and float(sums["images"]) == 1
    got = depth_metrics_from_sums(sums)
    expected = depth_metrics(np.array([[80.0, 11.0]]), np.array([[70.0, 10.0]]), np.ones((1, 2), bool))
    assert got == pytest.approx(expected, rel=1e-12)
    assert got["abs_rel"] == pytest.approx((10 / 70 + 1 / 10) / 2)
    none, _ = evaluate_metric_depth(pred, gt, np.zeros_like(valid), protocol)
    assert (float(none["images"]), float(none["skipped"])) == (0.0, 1.0)


def test_median_scaling_for_relative_models():
    rng = np.random.default_rng(1)
    gt = rng.uniform(1.0, 9.0, size=(480, 640))
    relative = 0.01 * gt  # right up to a scale of 100
    plain, _ = evaluate_metric_depth(relative, gt, np.ones_like(gt, bool), METRIC_PROTOCOLS["nyu_metric"])
    median, scale = evaluate_metric_depth(relative, gt, np.ones_like(gt, bool),
                                          get_metric_protocol("nyu_metric", align="median"))
    assert scale == pytest.approx(100.0)
    assert depth_metrics_from_sums(median)["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_metrics_from_sums(median)["d1"] == 1.0
    assert depth_metrics_from_sums(plain)["d1"] == 0.0  # without alignment: 100 times too near everywhere
    with pytest.raises(ValueError, match="median depth"):
        evaluate_metric_depth(np.full_like(gt, np.inf), gt, np.ones_like(gt, bool),
                              get_metric_protocol("nyu_metric", align="median"))


def test_paper_rows_of_tables_2_and_3():
    assert set(METRIC_PAPER_ROWS) == set(METRIC_PROTOCOLS)
    for rows in METRIC_PAPER_ROWS.values():
        for values in rows.values():
            assert set(values) <= set(DEPTH_METRICS)
    assert METRIC_PAPER_ROWS["nyu_metric"]["DPT-Hybrid"] == {
        "d1": 0.904, "d2": 0.988, "d3": 0.994, "abs_rel": 0.110, "rmse": 0.357, "log10": 0.045}
    assert METRIC_PAPER_ROWS["kitti_metric"]["DPT-Hybrid"] == {
        "d1": 0.959, "d2": 0.995, "d3": 0.999, "abs_rel": 0.062, "rmse": 2.573, "rmse_log": 0.092}
