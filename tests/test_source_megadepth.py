"""MegaDepth adapter: <scene>/dense*/imgs/*.jpg + depths/*.h5 (dataset `depth`), 0 invalid, unknown scale."""

import numpy as np
import pytest

from ingest.assemble import RejectedSample, assemble_sample
from ingest.formats.h5 import write_h5
from tests.adapter_tools import H, W, adapter, encode, rgb, round_trip, write_tree


def depth(seed: int) -> np.ndarray:
    d = np.linspace(0.5, 40.0, H * W, dtype=np.float32).reshape(H, W) * (1 + seed)
    d[:, 0] = 0  # no MVS depth
    return d


@pytest.fixture
def megadepth_root(storage_root):
    root = f"{storage_root}/md"
    nan_depth = depth(0)
    nan_depth[3, 3] = np.nan
    write_tree(root, {
        "MegaDepth_v1/0001/dense0/imgs/1234_a.jpg": encode(rgb(0), "JPEG"),
        "MegaDepth_v1/0001/dense0/depths/1234_a.h5": write_h5({"depth": depth(0)}),
        "MegaDepth_v1/0001/dense1/imgs/77_b.jpg": encode(rgb(1), "JPEG"),
        "MegaDepth_v1/0001/dense1/depths/77_b.h5": write_h5({"depth": depth(1)}),
        "MegaDepth_v1/0042/dense0/imgs/9_c.jpg": encode(rgb(2), "JPEG"),
        "MegaDepth_v1/0042/dense0/depths/9_c.h5": write_h5({"disparity": depth(2)}),  # wrong dataset name
        "MegaDepth_v1/0042/dense0/imgs/10_d.jpg": encode(rgb(3), "JPEG"),
        "MegaDepth_v1/0042/dense0/depths/10_d.h5": write_h5({"depth": nan_depth}),
        "MegaDepth_v1/0042/dense0/imgs/11_e.jpg": encode(rgb(3), "JPEG")[:200],  # truncated JPEG
        "MegaDepth_v1/0042/dense0/depths/11_e.h5": write_h5({"depth": depth(3)}),
    })
    return root


def test_listing_and_conversion(megadepth_root, storage_root):
    source = adapter("megadepth", megadepth_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["MegaDepth_v1/0001/dense0/1234_a", "MegaDepth_v1/0001/dense1/77_b",
                                    "MegaDepth_v1/0042/dense0/10_d", "MegaDepth_v1/0042/dense0/11_e",
                                    "MegaDepth_v1/0042/dense0/9_c"]
    assert [r.group for r in refs] == ["MegaDepth_v1/0001"] * 2 + ["MegaDepth_v1/0042"] * 3

    sample = assemble_sample(source, refs[1], "train")
    d = depth(1).astype(np.float64)
    valid = d > 0
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_allclose(sample.disparity[valid], 1 / d[valid], rtol=1e-6)
    assert sample.meta["kind"] == "relative_depth" and sample.rgb_format == "jpg"
    round_trip(source, refs[:2], f"{storage_root}/out")


def test_bad_inputs_have_reasons(megadepth_root):
    source = adapter("megadepth", megadepth_root)
    refs = {r.id.rsplit("/", 1)[-1]: r for r in source.list_samples()}
    with pytest.raises(RejectedSample, match=r"depths/9_c.h5: unknown H5 layout: no dataset 'depth' \(has: disparity\)"):
        assemble_sample(source, refs["9_c"], "train")
    with pytest.raises(RejectedSample, match="1 valid pixels are NaN or Inf"):
        assemble_sample(source, refs["10_d"], "train")
    with pytest.raises(RejectedSample, match=r"imgs/11_e.jpg: unreadable or truncated image"):
        assemble_sample(source, refs["11_e"], "train")
