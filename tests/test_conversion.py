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


def metric_depths() -> dict[str, tuple[np.ndarray, int | None]]:
    """Depths in metres as metric sources store them, with their integer code's scale: every value of a
    16-bit PNG in millimetres (NYUv2's sync dump, DIML) and in 1/256 m (KITTI), and float metres (TartanAir)."""
    codes = np.arange(1, 65536, dtype=np.uint16).reshape(255, 257)
    floats = np.exp(np.random.default_rng(0).uniform(np.log(0.05), np.log(16000.0), codes.shape)).astype(np.float32)
    return {"mm": (codes.astype(np.float32) / np.float32(1000), 1000),
            "kitti": (codes.astype(np.float32) / np.float32(256), 256), "metres": (floats, None)}


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("encoding", ["mm", "kitti", "metres"])
def test_metric_depth_comes_back_as_one_over_the_stored_disparity(dtype, encoding):
    """The metric contract (pipeline.shards): a metric_depth sample's disparity is exactly 1 / depth in 1/metre,
    so 1 / disparity, as stored and read back, is the depth: within float16's 2**-11 for the default dtype,
    within one float32 rounding (the integer codes exactly) for float32."""
    import io

    from ingest.plan import IngestSettings
    from pipeline.shards import DISP_MEMBER, Sample, decode_sample, encode_sample

    assert IngestSettings().disparity_dtype == "float16"  # the default the contract's float16 bound is for
    depth, scale = metric_depths()[encoding]
    disparity, valid = to_disparity(depth, np.ones(depth.shape, bool), "metric_depth")
    meta = {"source": "nyu", "id": "0", "split": "train", "kind": "metric_depth"}
    sample = Sample("nyu-0", np.zeros((*depth.shape, 3), np.uint8), disparity, valid, meta)
    members = encode_sample(sample, dtype)
    assert np.load(io.BytesIO(members[DISP_MEMBER])).dtype == dtype  # stored as asked: it fits float16
    stored = decode_sample({**members, "__key__": "nyu-0"}).disparity
    back = np.float32(1) / stored
    if dtype == "float32":
        np.testing.assert_array_equal(stored, np.float32(1) / depth)  # bitwise: 1 / depth, rounded once
        np.testing.assert_array_max_ulp(back, depth, maxulp=1)  # 1 / (1 / d) rounds twice: d or a neighbour
        if scale:
            codes = np.rint(scale / stored.astype(np.float64))
            np.testing.assert_array_equal(codes, np.arange(1, 65536).reshape(depth.shape))
    else:
        error = np.abs(back.astype(np.float64) / depth - 1)
        assert error.max() <= 2**-11 * (1 + 2**-9)  # float16's rounding, plus two float32 ones
        assert error.max() > 2**-12  # and it is float16's: the bound is nearly reached
