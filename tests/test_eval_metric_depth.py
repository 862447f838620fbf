"""Metric depth protocols (DPT Tables 2 and 3): the crops, depth ranges, clipping and median scaling on hand-made
arrays, and the paper's rows. The metrics themselves: tests/test_depth_metrics.py."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.compare import METRIC_PAPER_ROWS
from evaluation.crops import EIGEN_NYU_CROP, GARG_CROP, kb_crop_box, paste
from evaluation.metric_protocol import (METRIC_PROTOCOLS, clip_prediction, evaluate_metric_depth,
                                        get_metric_protocol, metric_valid_mask)
from evaluation.protocol import PROTOCOLS, valid_mask
from pipeline.depth_metrics import DEPTH_METRICS, depth_metrics, depth_metrics_from_sums


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


def test_dpt_eval_finds_the_protocols_and_logs_every_metric_from_the_sums():
    from evaluation.protocol import MetricSums, get_protocol

    for name, protocol in METRIC_PROTOCOLS.items():
        assert get_protocol(name) is protocol and protocol.result_key == f"metric_depth/{name}_abs_rel"
        # the console and dpt compare show the paper's columns: those of its DPT-Hybrid row, in its order
        assert protocol.columns == tuple(METRIC_PAPER_ROWS[name]["DPT-Hybrid"])
    a = MetricSums(depth={k: 1.0 for k in DEPTH_METRICS})
    a.add(1.0, 1.0)
    b = MetricSums(depth={k: float(i) for i, k in enumerate(DEPTH_METRICS)})
    b.add(3.0, 1.0)
    total = a + b
    protocol = METRIC_PROTOCOLS["kitti_metric"]
    assert total.images == 2 and total.value == 2.0  # the mean AbsRel of the two images
    extra = {key: value for key, _, value in protocol.extra_metrics(total)}
    assert set(extra) | {protocol.result_key} == {protocol.metric_key(k) for k in DEPTH_METRICS}
    assert extra["metric_depth/kitti_metric_silog"] == (1.0 + 8.0) / 2
    assert protocol.values(MetricSums(depth=dict.fromkeys(DEPTH_METRICS, 0.0))) == {}  # nothing scored
