"""ingest.conversion.to_disparity: the single kind -> disparity rule, on known values."""

import numpy as np
import pytest

from ingest.conversion import InvalidTarget, TargetKind, to_disparity


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
    with pytest.raises(InvalidTarget, match=f"1 valid pixels are {message}"):
        to_disparity(target, np.array([[True, True]]), "metric_depth")
    # The same value outside the valid mask is the source's invalid code and is simply ignored.
    disp, ok = to_disparity(target, np.array([[True, False]]), "metric_depth")
    assert ok.tolist() == [[True, False]] and disp[0, 1] == 0


def test_unknown_kind_and_shape():
    with pytest.raises(ValueError):
        to_disparity(np.ones((2, 2)), np.ones((2, 2), bool), "depthish")
    with pytest.raises(InvalidTarget, match="must be one"):
        to_disparity(np.ones((2, 2)), np.ones((2, 3), bool), "metric_depth")
