"""DIML indoor adapter: <scene>/color/*_c.png + depth_filled/*_depth_filled.png, uint16 mm, 0 invalid."""

import numpy as np
import pytest

from ingest.assemble import assemble_sample
from ingest.bad_input import BadInput
from ingest.formats.png import write_png16
from tests.helpers.adapter_tools import H, W, adapter, rgb, round_trip, write_files
from tests.helpers.images import encode


def depth_mm(seed: int) -> np.ndarray:
    mm = (500 + 37 * np.arange(H * W).reshape(H, W) + seed).astype(np.uint16)
    mm[2, 3:6] = 0  # no Kinect measurement
    return mm


@pytest.fixture
def diml_root(storage_root):
    root = f"{storage_root}/DIML"
    files = {}
    for split, scene, name, seed in [("train", "12. Livingroom", "in_k_00_180924_000001", 0),
                                     ("train", "12. Livingroom", "in_k_00_180924_000002", 1),
                                     ("test", "20.Office", "in_k_01_181011_000001", 2)]:
        base = f"indoor/{split}/HR/{scene}"
        files[f"{base}/color/{name}_c.png"] = encode(rgb(seed))
        files[f"{base}/depth_filled/{name}_depth_filled.png"] = write_png16(depth_mm(seed))
    files["indoor/train/HR/12. Livingroom/color/in_k_00_180924_000003_c.png"] = encode(rgb(3))  # no depth
    files["indoor/test/HR/20.Office/depth_filled/in_k_01_181011_000002_depth_filled.png"] = encode(rgb(4))  # 8-bit RGB
    files["indoor/test/HR/20.Office/color/in_k_01_181011_000002_c.png"] = encode(rgb(4))
    write_files(root, files)
    return root


def test_listing_and_conversion(diml_root, storage_root):
    source = adapter("diml", diml_root)
    refs = source.list_samples()
    assert [r.id for r in refs] == [
        "indoor/test/HR/20.Office/in_k_01_181011_000001", "indoor/test/HR/20.Office/in_k_01_181011_000002",
        "indoor/train/HR/12. Livingroom/in_k_00_180924_000001", "indoor/train/HR/12. Livingroom/in_k_00_180924_000002",
        "indoor/train/HR/12. Livingroom/in_k_00_180924_000003"]
    assert [r.group for r in refs] == ["20.Office"] * 2 + ["12. Livingroom"] * 3
    assert [r.split for r in refs] == ["test"] * 2 + ["train"] * 3

    sample = assemble_sample(source, refs[2], "train")
    mm = depth_mm(0).astype(np.float64)
    valid = mm > 0
    np.testing.assert_array_equal(sample.mask, valid)
    np.testing.assert_allclose(sample.disparity[valid], 1000.0 / mm[valid], rtol=1e-6)  # 1 / metres
    assert (sample.disparity[~valid] == 0).all()
    assert sample.meta["kind"] == "metric_depth" and sample.meta["units"] == "metres"
    round_trip(source, [refs[0], refs[2], refs[3]], f"{storage_root}/out")


def test_bad_inputs_have_reasons(diml_root):
    source = adapter("diml", diml_root)
    refs = source.list_samples()
    with pytest.raises(BadInput, match=r"depth_filled/in_k_00_180924_000003_depth_filled.png: target missing"):
        assemble_sample(source, refs[4], "train")
    with pytest.raises(BadInput, match=r"in_k_01_181011_000002_depth_filled.png: expected a 16-bit grayscale PNG"):
        assemble_sample(source, refs[1], "train")
