"""ingest.conversion.to_disparity: the single kind -> disparity rule, on known values."""

import numpy as np
import pytest

from ingest.bad_input import BadInput
from ingest.conversion import TargetKind, to_disparity


def test_depth_kinds_invert_and_drop_zero():
    depth = np.array([[2.0, 0.0], [0.5, 4000.0]])
    valid = np.array([[True, True], [False, True]])
    for kind in ("metric_depth", TargetKind.RELATIVE_DEPTH):
        disp, ok = to_disparity(depth, valid, kind)
        assert disp.dtype == np.float32
        np.testing.assert_array_equal(ok, [[True, False], [False, True]])
        np.testing.assert_allclose(disp, [[0.5, 0.0], [0.0, 1 / 4000.0]])  # far sky stays valid, near zero


def test_disparity_kinds_pass_through():
    target = np.array([[3.5, 0.0], [65.7, 7.0]])
    valid = np.array([[True, True], [True, False]])
    for kind in ("stereo_disparity", "inverse_depth"):
        disp, ok = to_disparity(target, valid, kind)
        np.testing.assert_array_equal(ok, valid)  # zero disparity (infinitely far) is a valid value
        np.testing.assert_allclose(disp, [[3.5, 0.0], [65.7, 0.0]])


@pytest.mark.parametrize("value, message", [(np.nan, "NaN or Inf"), (np.inf, "NaN or Inf"), (-1.0, "negative")])
def test_bad_values_inside_valid_raise(value, message):
    target = np.array([[1.0, value]])
    with pytest.raises(BadInput, match=f"1 valid pixels are {message}"):
        to_disparity(target, np.array([[True, True]]), "metric_depth")
    # The same value outside the valid mask is the source's invalid code and is simply ignored.
    disp, ok = to_disparity(target, np.array([[True, False]]), "metric_depth")
    assert ok.tolist() == [[True, False]] and disp[0, 1] == 0


def test_unknown_kind_and_shape():
    with pytest.raises(ValueError):
        to_disparity(np.ones((2, 2)), np.ones((2, 2), bool), "depthish")
    with pytest.raises(BadInput, match="must be one"):
        to_disparity(np.ones((2, 2)), np.ones((2, 3), bool), "metric_depth")


def test_labels_become_uint8_with_ignore():
    from ingest.conversion import to_labels

    classes = np.array([[0, 7, -1], [254, 3, 999]])
    labelled = np.array([[True, True, False], [True, True, False]])
    labels = to_labels(classes, labelled)
    assert labels.dtype == np.uint8
    # By hand: labelled ids as they are, everything else 255 (whatever value it held).
    np.testing.assert_array_equal(labels, [[0, 7, 255], [254, 3, 255]])
    np.testing.assert_array_equal(to_labels(np.array([[2.0, 5.0]]), np.array([[True, True]])), [[2, 5]])


@pytest.mark.parametrize("value, message", [(255, "outside 0..254"), (-1, "outside 0..254"), (300, "outside"),
                                            (2.5, "not integers"), (np.nan, "not integers")])
def test_bad_class_ids_raise(value, message):
    from ingest.conversion import to_labels

    with pytest.raises(BadInput, match=message):
        to_labels(np.array([[1, value]]), np.array([[True, True]]))
    with pytest.raises(BadInput, match="must be one"):
        to_labels(np.ones((2, 2), int), np.ones((2, 3), bool))


def test_labels_are_not_a_depth_target():
    with pytest.raises(ValueError, match="to_labels"):
        to_disparity(np.ones((2, 2)), np.ones((2, 2), bool), TargetKind.SEMANTIC_LABELS)
    assert TargetKind("semantic_labels").is_labels and not TargetKind.SEMANTIC_LABELS.is_depth


def test_depth_is_inverted_in_float32_correctly_rounded():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.05, 200.0, (64, 64)).astype(np.float32)
    disp, ok = to_disparity(depth, np.ones(depth.shape, bool), "metric_depth")
    assert disp.dtype == np.float32 and ok.all()
    np.testing.assert_array_equal(disp, np.float32(1) / depth)  # IEEE division: one correct rounding
    np.testing.assert_array_max_ulp(disp, (1 / depth.astype(np.float64)).astype(np.float32), maxulp=1)
    # A float64 target keeps float64 until the single rounding at the end.
    wide = depth.astype(np.float64) * (1 + 1e-9)
    np.testing.assert_array_equal(to_disparity(wide, ok, "metric_depth")[0], (1 / wide).astype(np.float32))


def test_integer_targets_and_nan_outside_valid():
    raw = np.array([[0, 4, 65535]], np.uint16)  # e.g. a 16-bit PNG read as is
    disp, ok = to_disparity(raw, np.ones(raw.shape, bool), "relative_depth")
    assert ok.tolist() == [[False, True, True]]
    np.testing.assert_array_equal(disp, np.array([[0, 0.25, 1 / 65535]], np.float32))
    target = np.array([[np.nan, -3.0, 2.0]], np.float32)
    disp, ok = to_disparity(target, np.array([[False, False, True]]), "inverse_depth")
    assert ok.tolist() == [[False, False, True]] and disp.tolist() == [[0, 0, 2.0]]
    with pytest.raises(BadInput, match="1 valid pixels are negative"):
        to_disparity(target, np.array([[False, True, True]]), "inverse_depth")
