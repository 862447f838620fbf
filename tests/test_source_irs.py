"""IRS adapter: <category>/<scene>/l_*.png + d_*.exr disparity (OpenEXR), split from lists/*.list."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.exr import write_exr
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def disparity(seed: int) -> np.ndarray:
    d = np.linspace(0.5, 90.0, H * W, dtype=np.float32).reshape(H, W) + seed
    d[1, 1] = np.inf  # a non-finite value: invalid
    return d


@pytest.fixture
def irs_root(storage_root):
    root = f"{storage_root}/irs"
    files = {
        "lists/IRSDataset_TRAIN.list": b"IRSDataset/Home/ArchVizInterior03Data/l_1.png "
                                       b"IRSDataset/Home/ArchVizInterior03Data/r_1.png "
                                       b"IRSDataset/Home/ArchVizInterior03Data/d_1.exr\n",
        "lists/IRSDataset_TEST.list": b"IRSDataset/Store/SupermarketData/l_7.png x y\n",
    }
    for scene, n, seed in [("Home/ArchVizInterior03Data", 1, 0), ("Home/ArchVizInterior03Data", 2, 1),
                           ("Store/SupermarketData", 7, 2)]:
        # IRS left images may carry an alpha channel (the authors' loader drops it): seed 1 has one.
        left = rgb(seed) if seed != 1 else np.dstack([rgb(seed), np.full((H, W), 255, np.uint8)])
        files[f"IRSDataset/{scene}/l_{n}.png"] = encode(left)
        files[f"IRSDataset/{scene}/r_{n}.png"] = encode(rgb(seed))  # not read
        d = disparity(seed)
        files[f"IRSDataset/{scene}/d_{n}.exr"] = write_exr({"Y": d} if seed != 1 else {"R": d, "G": d, "B": d})
    files["IRSDataset/Home/ArchVizInterior03Data_Night/l_1.png"] = encode(rgb(5))  # lighting variant
    files["IRSDataset/Home/ArchVizInterior03Data_Night/d_1.exr"] = write_exr({"Y": disparity(5)})
    files["IRSDataset/Office/Meeting01/l_3.png"] = encode(rgb(3))
    files["IRSDataset/Office/Meeting01/d_3.exr"] = write_exr({"R": disparity(3), "G": disparity(3) * 2})
    files["IRSDataset/Office/Meeting01/l_4.png"] = encode(rgb(4))  # no disparity
    write_files(root, files)
    return root


def test_listing_and_conversion(irs_root, storage_root):
    source = adapter("irs", irs_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == ["IRSDataset/Home/ArchVizInterior03Data/1", "IRSDataset/Home/ArchVizInterior03Data/2",
                                    "IRSDataset/Home/ArchVizInterior03Data_Night/1",
                                    "IRSDataset/Office/Meeting01/3", "IRSDataset/Office/Meeting01/4",
                                    "IRSDataset/Store/SupermarketData/7"]
    # The night rendering of the same room shares its group.
    assert [r.group for r in refs] == ["IRSDataset/Home/ArchVizInterior03Data"] * 3 + [
        "IRSDataset/Office/Meeting01"] * 2 + ["IRSDataset/Store/SupermarketData"]
    assert [r.split for r in refs] == ["train", None, None, None, None, "test"]

    for ref, seed in [(refs[0], 0), (refs[1], 1)]:
        sample = assemble_sample(source, ref, "train")
        d = disparity(seed)
        valid = np.isfinite(d)
        np.testing.assert_array_equal(sample.mask, valid)
        np.testing.assert_array_equal(sample.disparity[valid], d[valid])  # pixels, kept as is
        assert sample.disparity[1, 1] == 0
        np.testing.assert_array_equal(sample.rgb, rgb(seed))  # RGBA -> RGB, re-encoded losslessly
    assert sample.meta["fx"] == 480.0
    round_trip(source, [refs[0], refs[1], refs[5]], f"{storage_root}/out")


def test_bad_inputs_have_reasons(irs_root):
    source = adapter("irs", irs_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"Meeting01/d_3.exr: unknown EXR layout: expected one channel, found G, R"):
        assemble_sample(source, refs[3], "train")
    with pytest.raises(BadInput, match=r"Meeting01/d_4.exr: target missing"):
        assemble_sample(source, refs[4], "train")
