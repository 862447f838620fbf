"""Segmentation metrics (confusion matrix, mIoU, pixel accuracy) against hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from evaluation.segmentation_metrics import (class_iou, confusion_matrix, mean_class_accuracy, mean_iou,
                                             pixel_accuracy, segmentation_scores)

# 3 classes, 2x4 image, 255 = ignore.
TARGET = np.array([[0, 0, 1, 255],
                   [1, 2, 2, 255]])
PRED = np.array([[0, 1, 1, 2],
                 [1, 2, 0, 0]])


def test_confusion_matrix_by_hand():
    # Labelled pixels (target, pred): (0,0) (0,1) (1,1) (1,1) (2,2) (2,0); the two ignored are not counted.
    expected = np.array([[1, 1, 0],
                         [0, 2, 0],
                         [1, 0, 1]])
    got = confusion_matrix(PRED, TARGET, num_classes=3)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(confusion_matrix(torch.tensor(PRED), torch.tensor(TARGET, dtype=torch.uint8), 3),
                                  expected)


def test_scores_by_hand():
    cm = confusion_matrix(PRED, TARGET, 3)
    # Pixel accuracy: 4 correct of 6 labelled.
    assert pixel_accuracy(cm) == pytest.approx(100 * 4 / 6)
    # IoU: class 0 tp 1, fp 1 (row 2), fn 1 -> 1/3; class 1 tp 2, fp 1, fn 0 -> 2/3; class 2 tp 1, fp 0, fn 1 -> 1/2.
    np.testing.assert_allclose(class_iou(cm), [100 / 3, 200 / 3, 50])
    assert mean_iou(cm) == pytest.approx((100 / 3 + 200 / 3 + 50) / 3)
    # Recall: 1/2, 2/2, 1/2.
    assert mean_class_accuracy(cm) == pytest.approx(100 * (0.5 + 1 + 0.5) / 3)
    scores = segmentation_scores(cm)
    assert scores["labelled_pixels"] == 6 and scores["miou"] == pytest.approx(mean_iou(cm))


def test_ignored_pixels_never_count_whatever_is_predicted_there():
    target = TARGET.copy()
    for pred_value in (0, 1, 2):
        pred = PRED.copy()
        pred[target == 255] = pred_value
        np.testing.assert_array_equal(confusion_matrix(pred, target, 3), confusion_matrix(PRED, TARGET, 3))
    # Everything ignored: nothing counted, scores undefined rather than 0 or 100.
    cm = confusion_matrix(PRED, np.full_like(TARGET, 255), 3)
    assert cm.sum() == 0 and math.isnan(pixel_accuracy(cm)) and math.isnan(mean_iou(cm))


def test_a_class_absent_and_never_predicted_is_left_out_of_the_mean():
    target = np.array([[0, 0, 1]])
    pred = np.array([[0, 1, 1]])
    iou = class_iou(confusion_matrix(pred, target, 4))
    np.testing.assert_allclose(iou[:2], [50, 50])
    assert np.isnan(iou[2:]).all()
    assert mean_iou(confusion_matrix(pred, target, 4)) == pytest.approx(50)
    # A class predicted but absent from the ground truth scores 0 and does count.
    pred_fp = np.array([[0, 3, 1]])
    assert class_iou(confusion_matrix(pred_fp, target, 4))[3] == 0
    assert mean_iou(confusion_matrix(pred_fp, target, 4)) == pytest.approx((50 + 100 + 0) / 3)


def test_sums_over_parts_equal_the_whole_exactly():
    # Workers each count their images; the total is their sum, in any order, with no rounding.
    rng = np.random.default_rng(0)
    target = rng.integers(0, 6, size=(10, 13, 17))
    target[rng.uniform(size=target.shape) < 0.2] = 255
    pred = rng.integers(0, 5, size=target.shape)
    whole = confusion_matrix(pred, target, 5 + 1)
    parts = [confusion_matrix(pred[i:i + 3], target[i:i + 3], 6) for i in range(0, 10, 3)]
    np.testing.assert_array_equal(sum(reversed(parts)), whole)
    assert whole.sum() == int((target != 255).sum())
    assert pixel_accuracy(whole) == pytest.approx(100 * np.mean(pred[target != 255] == target[target != 255]))


def test_bad_inputs_raise_with_reasons():
    with pytest.raises(ValueError, match="shapes differ"):
        confusion_matrix(PRED[:, :3], TARGET, 3)
    with pytest.raises(ValueError, match=r"target holds class ids outside 0..1 \(found 0..2"):
        confusion_matrix(np.minimum(PRED, 1), TARGET, 2)
    with pytest.raises(ValueError, match=r"pred holds class ids outside 0..2"):
        confusion_matrix(PRED + 1, TARGET, 3)
    with pytest.raises(ValueError, match="integer class ids"):
        confusion_matrix(PRED.astype(np.float32), TARGET, 3)
