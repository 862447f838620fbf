"""MegaDepth adapter: <scene>/dense*/imgs/*.jpg + depths/*.h5 (dataset `depth`), 0 invalid, unknown scale."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.h5 import write_h5
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def depth(seed: int) -> np.ndarray:
    """Column 0 has no depth; the other 88 pixels hold (1, 2, ..., 88) * (1 + seed)."""
    d = np.zeros((H, W), np.float32)
    d[:, 1:] = np.arange(1, 89, dtype=np.float32).reshape(H, W - 1) * (1 + seed)
    return d


@pytest.fixture
def megadepth_root(storage_root):
    root = f"{storage_root}/md"
    nan_depth = depth(0)
    nan_depth[3, 3] = np.nan
    ordinal = np.full((H, W), -1.0, np.float32)  # an ordinal-only image: -1 everywhere but labelled parts
    ordinal[:4] = 1.0
    write_files(root, {
        "MegaDepth_v1/0001/dense0/imgs/1234_a.jpg": encode(rgb(0), "JPEG"),
        "MegaDepth_v1/0001/dense0/depths/1234_a.h5": write_h5({"depth": depth(0)}),
        "MegaDepth_v1/0001/dense1/imgs/77_b.jpg": encode(rgb(1), "JPEG"),
        "MegaDepth_v1/0001/dense1/depths/77_b.h5": write_h5({"depth": depth(1)}),
        "MegaDepth_v1/0042/dense0/imgs/9_c.jpg": encode(rgb(2), "JPEG"),
        "MegaDepth_v1/0042/dense0/depths/9_c.h5": write_h5({"disparity": depth(2)}),  # wrong dataset name
        "MegaDepth_v1/0042/dense0/imgs/10_d.jpg": encode(rgb(3), "JPEG"),
        "MegaDepth_v1/0042/dense0/depths/10_d.h5": write_h5({"depth": nan_depth}),
        "MegaDepth_v1/0042/dense0/imgs/12_f.jpg": encode(rgb(4), "JPEG"),
        "MegaDepth_v1/0042/dense0/depths/12_f.h5": write_h5({"depth": ordinal}),
        "MegaDepth_v1/0042/dense0/imgs/11_e.jpg": encode(rgb(3), "JPEG")[:200],  # truncated JPEG
        "MegaDepth_v1/0042/dense0/depths/11_e.h5": write_h5({"depth": depth(3)}),
    })
    return root


def test_listing_and_conversion(megadepth_root, storage_root):
    source = adapter("megadepth", megadepth_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["MegaDepth_v1/0001/dense0/1234_a", "MegaDepth_v1/0001/dense1/77_b",
                                    "MegaDepth_v1/0042/dense0/10_d", "MegaDepth_v1/0042/dense0/11_e",
                                    "MegaDepth_v1/0042/dense0/12_f", "MegaDepth_v1/0042/dense0/9_c"]
    assert [r.group for r in refs] == ["MegaDepth_v1/0001"] * 2 + ["MegaDepth_v1/0042"] * 4

    sample = assemble_sample(source, refs[1], "train")
    d = depth(1).astype(np.float64)
    # The authors' outlier rule by hand: of the values k * 2 (k = 1..88), the 98th percentile is
    # 86.26 * 2, which drops k = 87, 88; the 1st percentile of k = 1..86 is 1.85 * 2, which drops k = 1.
    k = d / 2
    valid = (k >= 2) & (k <= 86)
    assert valid.sum() == 85
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_allclose(sample.disparity[valid], 1 / d[valid], rtol=1e-6)
    assert sample.meta["kind"] == "relative_depth" and sample.rgb_format == "jpg"
    round_trip(source, refs[:2], f"{storage_root}/out")


def test_bad_inputs_have_reasons(megadepth_root):
    source = adapter("megadepth", megadepth_root)
    refs = {r.id.rsplit("/", 1)[-1]: r for r in source.list_samples()}
    with pytest.raises(BadInput, match=r"depths/9_c.h5: unknown H5 layout: no dataset 'depth' \(has: disparity\)"):
        assemble_sample(source, refs["9_c"], "train")
    with pytest.raises(BadInput, match="1 valid pixels are NaN or Inf"):
        assemble_sample(source, refs["10_d"], "train")
    with pytest.raises(BadInput, match=r"depths/12_f.h5: ordinal-only MegaDepth target"):
        assemble_sample(source, refs["12_f"], "train")
    with pytest.raises(BadInput, match=r"imgs/11_e.jpg: unreadable or truncated image"):
        assemble_sample(source, refs["11_e"], "train")
